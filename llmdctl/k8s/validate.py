"""Strict validation of rendered objects against the real schemas, offline.

- Core kinds: `kubernetes-validate`'s schemas (it ships the OpenAPI-derived JSON schemas of each Kubernetes release) in
  strict mode — without strict, a misspelled field such as `imagePullPolcy` passes silently.
- Custom resources (InferencePool, Gateway, HTTPRoute, GatewayClass; KServe's LLMInferenceService): the
  `openAPIV3Schema` of their CRDs in `manifests/crds/` (KServe's in `manifests/crds/kserve/`), made strict
  the way the API server prunes (every object schema that lists properties rejects others unless it says
  `x-kubernetes-preserve-unknown-fields`), checked with `jsonschema`; their `metadata` is checked against
  ObjectMeta from the same Kubernetes release.
- What the API server adds on top of schemas and would reject at apply time: object names (DNS-1123), label
  keys and values, a Deployment selector that does not match its pod template, duplicate InferencePool
  target ports (a CEL rule in the CRD that jsonschema cannot evaluate).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from llmdctl.paths import manifests_dir

DEFAULT_K8S_VERSION = "1.34.0"  # what current kind node images run; any version kubernetes-validate ships works
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL_KINDS = {"Namespace", "Service"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 11k lines: libyaml parses them 10x faster


@dataclass(frozen=True)
class Problem:
    """One reason the API server would refuse an object: which object, where in it, and what is wrong."""

    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.kind}/{self.name}{where}: {self.message}"


class ValidationFailed(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


def supported_versions() -> list[str]:
    return sorted(set(kv_utils.all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))


def check_version(version: str) -> str:
    """A version kubernetes-validate has schemas for, as MAJOR.MINOR.PATCH; ValueError naming the choices."""
    v = version.lstrip("v")
    parts = v.split(".")
    if len(parts) == 2:
        v += ".0"
    known = supported_versions()
    match = [k for k in known if k.rsplit(".", 1)[0] == v.rsplit(".", 1)[0]]
    if not match:
        raise ValueError(
            f"--k8s-version {version}: no schemas for it; expected one of "
            f"{', '.join(k.rsplit('.', 1)[0] for k in known)}"
        )
    return match[0]


# -- CRDs ------------------------------------------------------------------------------------------------


def crds_dir() -> Path:
    return manifests_dir() / "crds"


# Groups whose CRDs sit in a subfolder of the CRD folder: KServe's LLMInferenceService CRD is 2.7 MB (a full
# PodSpec per workload), so it is parsed only when an object of its group is validated, and the folder that
# `up`/`render -o` install (the top level) stays the Gateway API + Inference Extension set.
GROUP_FOLDERS = {"serving.kserve.io": "kserve"}


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def crds_for(api_version: str, crds: Path | None = None) -> Path:
    """The folder holding the CRD of `api_version`'s group (under `crds`, default the shipped folder)."""
    base = crds or crds_dir()
    folder = GROUP_FOLDERS.get(_group(api_version))
    return base / folder if folder else base


def load_crds(directory: Path | None = None) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((directory or crds_dir()).glob("*.yaml")):
        docs += [d for d in yaml.load_all(path.read_text(), Loader=_LOADER) if d]
    return docs


def strict_schema(schema: Any) -> Any:
    """A copy of an openAPIV3Schema where unknown fields fail, as the API server's pruning would drop them."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@lru_cache(maxsize=None)
def _crd_index(directory: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD in `directory`."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in load_crds(Path(directory)):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                index[(f"{group}/{version['name']}", kind)] = strict_schema(version["schema"]["openAPIV3Schema"])
    return index


@lru_cache(maxsize=None)
def _object_meta_validator(version: str) -> jsonschema.Validator:
    defs = _definitions(version)
    registry = Resource.from_contents(defs) @ Registry()
    # _definitions.json carries its own $id (/api/_definitions.json); refer to ObjectMeta through it.
    ref = f"{defs.get('$id', '/api/_definitions.json')}#/$defs/{_OBJECT_META}"
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validate_custom(obj: dict[str, Any], version: str = DEFAULT_K8S_VERSION, crds: Path | None = None) -> list[Problem]:
    kind, name = obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?")
    schema = _crd_index(str(crds_for(obj.get("apiVersion", ""), crds))).get((obj.get("apiVersion", ""), kind))
    if schema is None:
        return [Problem(kind, name, "apiVersion", f"no CRD serves {obj.get('apiVersion')} {kind}")]
    problems = []
    body = {k: v for k, v in obj.items() if k != "metadata"}
    for err in sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=lambda e: list(e.path)):
        problems.append(Problem(kind, name, _path(err.path), err.message))
    meta_validator = _object_meta_validator(check_version(version))
    for err in meta_validator.iter_errors(obj.get("metadata") or {}):
        problems.append(Problem(kind, name, _path(["metadata", *err.path]), err.message))
    return problems


# -- core kinds ------------------------------------------------------------------------------------------


def is_custom(obj: dict[str, Any], crds: Path | None = None) -> bool:
    group = _group(obj.get("apiVersion", ""))
    return group in GROUP_FOLDERS or any(_group(av) == group for av, _ in _crd_index(str(crds or crds_dir())))


@lru_cache(maxsize=None)
def _definitions(version: str) -> Any:
    return kv_utils.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)


@lru_cache(maxsize=None)
def _core_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    """kubernetes-validate's strict schema for (apiVersion, kind) with its definitions, compiled once.

    The same files and the same resolution as `kubernetes_validate.validate(..., strict=True)`, which
    re-reads a 1.5 MB definitions file on every call; cached, a stack validates in milliseconds.
    """
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(
            f"kubernetes-json-schema/v{version}-local-strict/{kind.lower()}-{api}.json", version
        )
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(schema) @ (Resource.from_contents(_definitions(version)) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_core(obj: dict[str, Any], version: str = DEFAULT_K8S_VERSION) -> list[Problem]:
    kind, name = obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?")
    version = check_version(version)
    validator = _core_validator(version, obj.get("apiVersion", ""), kind)
    if validator is None:
        return [
            Problem(
                kind,
                name,
                "apiVersion",
                f"Kubernetes {version.rsplit('.', 1)[0]} has no schema for {obj.get('apiVersion')} {kind}",
            )
        ]
    return [
        Problem(kind, name, _path(err.path), err.message)
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
    ]


# -- what the API server checks besides schemas ----------------------------------------------------------


def _check_labels(labels: Any, where: str, kind: str, name: str) -> list[Problem]:
    problems = []
    for key, value in (labels or {}).items():
        prefix, _, short = key.rpartition("/")
        if (
            (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
            or len(short) > 63
            or not _LABEL_NAME.match(short)
        ):
            problems.append(Problem(kind, name, where, f"label key {key!r} is not a valid qualified name"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(
                Problem(
                    kind,
                    name,
                    where,
                    f"label {key}={value!r}: a value must be <= 63 characters of [A-Za-z0-9_.-], alphanumeric at both "
                    "ends",
                )
            )
    return problems


def semantic_checks(obj: dict[str, Any]) -> list[Problem]:
    kind = obj.get("kind", "?")
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?")
    problems = []
    pattern, limit = (_DNS_LABEL, 63) if kind in _DNS_LABEL_KINDS else (_DNS_SUBDOMAIN, 253)
    if not isinstance(name, str) or len(name) > limit or not pattern.match(name):
        problems.append(
            Problem(
                kind,
                str(name),
                "metadata.name",
                f"{name!r} is not a valid DNS-1123 {'label' if limit == 63 else 'subdomain'}",
            )
        )
    problems += _check_labels(meta.get("labels"), "metadata.labels", kind, name)
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    if kind in ("Deployment", "DaemonSet", "StatefulSet"):
        pod_labels = (template.get("metadata") or {}).get("labels") or {}
        problems += _check_labels(pod_labels, "spec.template.metadata.labels", kind, name)
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        if any(pod_labels.get(k) != v for k, v in wanted.items()):
            problems.append(Problem(kind, name, "spec.selector", "selector does not match the pod template's labels"))
        if kind == "Deployment" and len(name) > 47:
            problems.append(
                Problem(
                    kind, name, "metadata.name", "longer than 47 characters: pod names (name-hash-suffix) would pass 63"
                )
            )
    if kind == "LLMInferenceService":  # the CRD's CEL rule on spec and spec.prefill
        for where, part in (("spec", spec), ("spec.prefill", spec.get("prefill") or {})):
            if "replicas" in part and "scaling" in part:
                problems.append(Problem(kind, name, where, "replicas and scaling are mutually exclusive"))
    if kind == "InferencePool":
        numbers = [p.get("number") for p in spec.get("targetPorts") or []]
        if len(numbers) != len(set(numbers)):
            problems.append(Problem(kind, name, "spec.targetPorts", "port number must be unique"))
        problems += _check_labels(
            (spec.get("selector") or {}).get("matchLabels"), "spec.selector.matchLabels", kind, name
        )
    return problems


def validate_object(obj: dict[str, Any], version: str = DEFAULT_K8S_VERSION, crds: Path | None = None) -> list[Problem]:
    """Every problem the API server of `version` would report for `obj` (empty: it would accept it)."""
    if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
        return [Problem("?", "?", "", "not a Kubernetes object (no apiVersion/kind)")]
    if obj["apiVersion"] == "monitoring.coreos.com/v1":  # the Prometheus Operator's kinds: see monitoring.py
        from llmdctl.k8s.monitoring import SCHEMA

        kind, name = obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?")
        body = {k: v for k, v in obj.items() if k != "metadata"}
        problems = [
            Problem(kind, name, _path(e.path), e.message) for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(body)
        ]
        problems += [
            Problem(kind, name, _path(["metadata", *e.path]), e.message)
            for e in _object_meta_validator(check_version(version)).iter_errors(obj.get("metadata") or {})
        ]
        return problems
    problems = validate_custom(obj, version, crds) if is_custom(obj, crds) else validate_core(obj, version)
    return problems + semantic_checks(obj)


def validate_objects(
    objects: Iterable[dict[str, Any]], version: str = DEFAULT_K8S_VERSION, crds: Path | None = None
) -> list[Problem]:
    problems: list[Problem] = []
    for obj in objects:
        problems += validate_object(obj, version, crds)
    return problems


def ensure_valid(objects: Iterable[dict[str, Any]], version: str = DEFAULT_K8S_VERSION) -> None:
    problems = validate_objects(objects, version)
    if problems:
        raise ValidationFailed(problems)
