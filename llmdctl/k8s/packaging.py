"""`render --format helm|kustomize`: the raw render packaged for the tools operators deploy with.

Both hold exactly the objects of the raw render, so `helm template` / `kustomize build` give what `render`
gives. The chart is deliberately minimal and value-driven: `values.yaml` carries the profile it came from
(`profile`, for reference and diffing) and the objects (`objects`); its one template prints every object
(`range .Values.objects` / `toYaml`). Change the stack by re-rendering from the profile (the objects are
llmdctl's validated output), or override `objects` in a values file for a one-off patch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmdctl import __version__
from llmdctl.k8s.render import Rendered, write_dir

CHART_TEMPLATE = """{{- range .Values.objects }}
---
{{ toYaml . }}
{{- end }}
"""


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=10_000)


def write_helm(rendered: Rendered, profile: dict[str, Any], out: Path) -> list[Path]:
    """A Helm chart at `out` (Chart.yaml, values.yaml, templates/objects.yaml)."""
    (out / "templates").mkdir(parents=True, exist_ok=True)
    chart = {
        "apiVersion": "v2",
        "name": rendered.stack,
        "description": f"llmdctl stack {rendered.stack} (rendered from its profile by llmdctl {__version__})",
        "type": "application",
        "version": "0.1.0",
        "appVersion": __version__,
    }
    files = {
        out / "Chart.yaml": _dump(chart),
        out / "values.yaml": _dump({"profile": profile, "objects": rendered.objects}),
        out / "templates" / "objects.yaml": CHART_TEMPLATE,
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def write_kustomize(rendered: Rendered, out: Path) -> list[Path]:
    """A kustomization at `out` whose resources are the numbered manifests (apply order kept)."""
    files = write_dir(rendered, out / "manifests")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"manifests/{p.name}" for p in files],
    }
    path = out / "kustomization.yaml"
    path.write_text(_dump(kustomization))
    return [*files, path]
