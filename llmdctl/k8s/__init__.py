"""Kubernetes targets: render a profile as validated objects, run it on kind or an existing cluster.

Public face (what the CLI and others use):
- `render(profile, RenderOptions(...)) -> Rendered` — objects in apply order (llmdctl.k8s.render)
- `validate_objects(objects, version) -> list[Problem]` — strict, offline (llmdctl.k8s.validate)
- `up_stack(profile, target, options, console) -> int` — target "kind" or "kube"; options a `K8sOptions`
  or a dict of its fields; 0 on success (llmdctl.k8s.target)
- `down_stack(state=None, console=None) -> int` — removes what `up_stack` recorded (`load_state()`):
  kind deletes the cluster, kube deletes the stack's labelled objects only
- `load_state() -> dict | None` — the recorded Kubernetes stack, None when there is none
The CLI's `up --target kind|kube` enters through `llmdctl.k8s.up.up(target, profile, **options)`.
"""

from __future__ import annotations

from llmdctl.k8s.render import Rendered, RenderError, RenderOptions, render
from llmdctl.k8s.target import K8sOptions, load_state
from llmdctl.k8s.target import down as down_stack
from llmdctl.k8s.target import up as up_stack
from llmdctl.k8s.validate import Problem, validate_objects

__all__ = [
    "K8sOptions",
    "Problem",
    "RenderError",
    "RenderOptions",
    "Rendered",
    "down_stack",
    "load_state",
    "render",
    "up_stack",
    "validate_objects",
]
