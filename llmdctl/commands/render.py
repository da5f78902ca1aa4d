"""`llmdctl render PROFILE`: Kubernetes objects for a profile, validated strictly, to stdout or a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmdctl.commands import fail

_HELP = """Render a profile as Kubernetes objects: model-server Deployments and Services, the router
(Deployment, Service, EndpointPickerConfig ConfigMap, least-privilege ServiceAccount/Role/RoleBinding) and an
InferencePool; with --gateway also llm-d's upstream endpoint picker, a Gateway and an HTTPRoute. With --target
kserve: one KServe LLMInferenceService per pool (P/D: decode in spec, prefill in spec.prefill) with the router
config inline, for a cluster that runs KServe.

Every object is validated strictly before it is written: core kinds against the Kubernetes schemas of
--k8s-version, custom resources (InferencePool, Gateway API, KServe's LLMInferenceService) against their
CRDs with unknown fields rejected. Without -o the objects go to stdout as one YAML stream
(`llmdctl render P | kubectl apply --server-side -f -`). With -o DIR: DIR/manifests/ (numbered files in
apply order), DIR/crds/, and for --target kind also DIR/kind-cluster.yaml, DIR/commands.sh (every command
`llmdctl up --target kind` runs) and DIR/image/ (the image build context)."""
HELP = "\n\n".join(" ".join(par.split()) for par in _HELP.split("\n\n"))  # one flowing paragraph each in --help


def render(
    profile: str = typer.Argument(
        ..., help="Profile name (see `llmdctl profiles list`) or path to a profile YAML file."
    ),
    target: str = typer.Option(
        "kind",
        "--target",
        "-t",
        help="kind (a local kind cluster), kube (an existing cluster) or kserve (LLMInferenceServices for KServe).",
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write files into this folder instead of YAML to stdout."
    ),
    gateway: bool = typer.Option(
        False, "--gateway", help="Also render llm-d's upstream EPP, a Gateway and an HTTPRoute to the InferencePool."
    ),
    gateway_class: str = typer.Option(
        "istio", "--gateway-class", help="gatewayClassName of the Gateway (your implementation's class)."
    ),
    namespace: str = typer.Option("llmd", "--namespace", "-n", help="Namespace of every object."),
    image: Optional[str] = typer.Option(
        None,
        "--image",
        help="llmdctl image (router + simulator) (default: llmdctl:VERSION, built and loaded by `up --target kind`).",
    ),
    gpus: bool = typer.Option(
        False, "--gpus", help="Real vLLM pods on nvidia.com/gpu (kind: NVIDIA passthrough, RuntimeClass nvidia)."
    ),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help="Engine for every pool: sim or vllm."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model: served name for sim, Hugging Face id for vllm."
    ),
    replicas: Optional[int] = typer.Option(None, "--replicas", "-r", help="Replicas of every pool."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Override a profile key, e.g. --set pools.0.replicas=2 (repeatable)."
    ),
    k8s_version: str = typer.Option(
        "1.34", "--k8s-version", help="Kubernetes version whose schemas validate the objects."
    ),
    cluster: str = typer.Option("llmdctl", "--cluster", help="kind cluster name (for --target kind files)."),
    monitoring: bool = typer.Option(
        False,
        "--monitoring",
        help="Also render PodMonitor/ServiceMonitor objects (the cluster runs the Prometheus Operator).",
    ),
    format_: str = typer.Option(
        "raw",
        "--format",
        help="raw (YAML / numbered files), helm (a chart in -o DIR) or kustomize (a kustomization in -o DIR).",
    ),
) -> None:
    from rich.console import Console

    from llmdctl.k8s.render import (
        DEFAULT_IMAGE,
        RenderError,
        RenderOptions,
        dns_label,
        to_yaml,
        write_dir,
    )
    from llmdctl.k8s.render import (
        render as render_stack,
    )
    from llmdctl.k8s.validate import check_version, validate_objects
    from llmdctl.local.stack import StackError, resolve_profile
    from llmdctl.profile import ProfileError

    err = Console(stderr=True)
    if target not in ("kind", "kube", "kserve"):
        raise fail(f"--target: expected kind, kube or kserve, got {target!r}", 2)
    if target == "kserve" and gateway:
        raise fail(
            "--gateway: KServe creates the Gateway route and llm-d's endpoint picker itself; drop --gateway with "
            "--target kserve",
            2,
        )
    if format_ not in ("raw", "helm", "kustomize"):
        raise fail(f"--format: expected raw, helm or kustomize, got {format_!r}", 2)
    if format_ != "raw" and output is None:
        raise fail(f"--format {format_} writes a folder: give -o DIR", 2)
    try:
        version = check_version(k8s_version)
        prof, _ = resolve_profile(profile, engine=engine, model=model, replicas=replicas, sets=set_)
        opts = RenderOptions(
            target=target,
            namespace=namespace,
            image=image or DEFAULT_IMAGE,
            gateway=gateway,  # type: ignore[arg-type]
            gateway_class=gateway_class,
            gpus=gpus,
            engine=engine,
            monitoring=monitoring,
        )
        rendered = render_stack(prof, opts)
    except (ProfileError, StackError, RenderError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    extra = []
    if gpus and target == "kind":
        from llmdctl.k8s.kind import gpu_addons

        extra = gpu_addons()
    problems = validate_objects(rendered.objects + extra, version)
    if problems:
        for p in problems:
            err.print(f"[red]invalid:[/red] {p}", highlight=False)
        raise fail(f"{len(problems)} problem(s) in the rendered objects (a bug in llmdctl's templates; please report)")
    for note in rendered.notes:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if output is None:
        typer.echo(to_yaml(rendered.objects), nl=False)
        err.print(
            f"[green]✓[/green] {len(rendered.objects)} objects for {prof.name}, valid for Kubernetes "
            f"{version.rsplit('.', 1)[0]}",
            highlight=False,
        )
        return
    if format_ != "raw":
        from llmdctl.k8s.packaging import write_helm, write_kustomize
        from llmdctl.profile import profile_to_dict

        try:
            files = (
                write_helm(rendered, profile_to_dict(prof), output)
                if format_ == "helm"
                else write_kustomize(rendered, output)
            )
        except OSError as exc:
            raise fail(f"{exc.filename or output}: {exc.strerror or exc}") from None
        how = f"helm template {rendered.stack} {output}" if format_ == "helm" else f"kubectl kustomize {output}"
        err.print(
            f"[green]✓[/green] {len(rendered.objects)} objects for {prof.name} as a {format_} package in {output}/ "
            f"({how})",
            highlight=False,
        )
        return
    try:
        files = write_dir(rendered, output / "manifests")
        if target == "kind":
            from llmdctl.k8s.kind import KindOptions, write_kind_files

            kopts = KindOptions(cluster=cluster, gpus=gpus, image=opts.image)
            files += write_kind_files(output, kopts, rendered.namespace, dns_label(f"{rendered.stack}-router", 55))
        elif target == "kube":
            import shutil

            from llmdctl.paths import manifests_dir

            (output / "crds").mkdir(parents=True, exist_ok=True)
            for crd in sorted((manifests_dir() / "crds").glob("*.yaml")):
                shutil.copy(crd, output / "crds" / crd.name)
    except OSError as exc:
        raise fail(f"{exc.filename or output}: {exc.strerror or exc}") from None
    err.print(
        f"[green]✓[/green] {len(rendered.objects)} objects for {prof.name}, valid for Kubernetes "
        f"{version.rsplit('.', 1)[0]}, written to {output}/",
        highlight=False,
    )
    if target == "kind":
        err.print(
            f"  run it by hand: cd {output} && ./commands.sh   (or: llmdctl up {profile} --target kind)",
            highlight=False,
        )
    else:
        err.print(
            f"  apply: kubectl apply --server-side --field-manager llmdctl -f {output}/manifests/", highlight=False
        )
        if target == "kserve":
            err.print(
                "  (the cluster runs KServe with the LLMInferenceService v1alpha2 CRD and its llm-d presets)",
                highlight=False,
            )


render.__doc__ = HELP
