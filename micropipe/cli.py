"""`micropipe` command line: run, compile, upload and submit pipelines, and work with VE datasets.

Only this module prints; everything else logs. KFP is imported lazily, so `micropipe data ...`
works without touching the orchestration stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import micropipe
from micropipe import backends

log = logging.getLogger("micropipe")


NUMBER_LISTS = ("--E", "--nu")
"""Options whose value may start with a minus sign (``--E -1e3,1e4``), which argparse would take for an option."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_negative_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's final flush
        return rc
    except BrokenPipeError:
        return _stdout_closed()
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # One clear line for bad input; tracebacks only with --verbose.
        if args.verbose:
            raise
        print(f"micropipe: error: {err}", file=sys.stderr)
        return 2


def _negative_values(argv: list[str]) -> list[str]:
    """``--E -1e3,1e4`` -> ``--E=-1e3,1e4``: a value, then checked as one, not a missing argument."""
    out, k = [], 0
    while k < len(argv):
        if argv[k] in NUMBER_LISTS and k + 1 < len(argv) and re.match(r"-[\d.]", argv[k + 1]):
            out.append(f"{argv[k]}={argv[k + 1]}")
            k += 2
        else:
            out.append(argv[k])
            k += 1
    return out


SIGPIPE_EXIT = 141
"""Exit status when the reader of stdout went away (`micropipe compile | head`): 128 + SIGPIPE, as a shell reports
a program killed by it."""


def _stdout_closed() -> int:
    """Quiet exit after a ``BrokenPipeError``: stdout goes to /dev/null, so the interpreter's final flush of the
    unwritten rest raises nothing (the recipe of the Python docs, "Note on SIGPIPE")."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file descriptor (captured); nothing to silence
        pass
    return SIGPIPE_EXIT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="micropipe", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"micropipe {micropipe.__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(title="commands")

    s = sub.add_parser("list", help="list pipelines and their presets")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run", help="run a pipeline locally with the KFP local runner")
    s.add_argument("pipeline")
    s.add_argument("--preset", default="small", help="preset name (default: small)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,...]",
                   help="override preset arguments; dotted keys reach into dicts: generator.cells=48")
    s.add_argument("--runs-dir", default="runs", help="parent of runs/<pipeline>/<UTC stamp>/ (default: runs)")
    s.add_argument("--dataset-uri", default=None,
                   help="where datasets go (local path or s3://...); default: runs/<pipeline>/data/<digest of the "
                        "arguments>, so a rerun with the same arguments reuses finished outputs")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("compile", help="compile pipelines to KFP IR YAML and print where each step runs")
    s.add_argument("--pipeline", action="append", default=None, help="pipeline name (default: all)")
    s.add_argument("--profile", default="cpu", help="cluster profile name or YAML path, or 'all' (default: cpu)")
    s.add_argument("--out", default="build/pipelines", help="output directory (default: build/pipelines)")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("submit", help="compile a pipeline, upload it as a new version and start a run on a "
                                      "Kubeflow Pipelines server")
    s.add_argument("pipeline")
    s.add_argument("--host", required=True, help="KFP API URL, e.g. https://kubeflow.example/pipeline")
    s.add_argument("--preset", default="small", help="preset name (default: small)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,...]",
                   help="override preset arguments, as for `run`")
    s.add_argument("--profile", default="cpu", help="cluster profile name or YAML path (default: cpu)")
    s.add_argument("--experiment", default="micropipe", help="KFP experiment, created if missing (default: micropipe)")
    _server_arguments(s, "the pipeline, experiment and run")
    s.add_argument("--dry-run", action="store_true",
                   help="compile and print the request (never the token) instead of sending it")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("upload", help="compile pipelines with one profile and upload each as version VERSION to a "
                                      "Kubeflow Pipelines server, skipping versions it has (the Helm chart's Job)")
    s.add_argument("--profile", required=True, help="cluster profile name or YAML path")
    s.add_argument("--host", required=True,
                   help="KFP API URL, e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888")
    s.add_argument("--version", required=True, help="name of the uploaded versions, e.g. 0.1.0-r2")
    s.add_argument("--pipeline", action="append", default=None, help="pipeline to upload (default: all)")
    s.add_argument("--prefix", default="", help="prefix of the pipeline names on the server (default: none)")
    _server_arguments(s, "the pipelines")
    s.set_defaults(func=cmd_upload)

    data = sub.add_parser("data", help="VE datasets: generate, inspect, convert").add_subparsers(title="data commands")
    s = data.add_parser("generate", help="generate a VE dataset without KFP (same code as the pipeline)")
    s.add_argument("out", help="dataset URI: local directory or s3://bucket/prefix")
    s.add_argument("--preset", default="small", help="ve_generation preset to start from (default: small)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,...]")
    s.set_defaults(func=cmd_data_generate)

    s = data.add_parser("info", help="summarise a dataset (manifest) or a shard/VE file")
    s.add_argument("path")
    s.set_defaults(func=cmd_data_info)

    s = data.add_parser("verify", help="check every shard and gathered file of a dataset against the checksum "
                                       "recorded when it was written")
    s.add_argument("dataset", help="dataset URI: local directory or s3://bucket/prefix")
    s.set_defaults(func=cmd_data_verify)

    s = data.add_parser("convert", help="convert one VE between formats (.h5 shard, .dream3d, .vti, .npz)")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--ve-id", dest="ve", default=None, help="VE id inside a shard or dataset (default: the first)")
    s.set_defaults(func=cmd_data_convert)

    s = data.add_parser("report", help="statistics report (HTML + Markdown) of a gathered dataset")
    s.add_argument("dataset")
    s.add_argument("--out", default="ve_report.html")
    s.add_argument("--max-ves", type=int, default=200)
    s.set_defaults(func=cmd_data_report)

    s = sub.add_parser("homogenize", help="effective elastic stiffness of a periodic phase volume (FFT, 6x6)")
    s.add_argument("volume", help="phase labels: .npy, .vti, .tif stack, .dream3d, .npz (local path or s3://)")
    s.add_argument("--E", required=True, type=_floats("E"), metavar="E1,E2,...",
                   help="Young's modulus per phase (label order), any stress unit; C-bar comes out in it")
    s.add_argument("--nu", required=True, type=_floats("nu"), metavar="NU1,NU2,...", help="Poisson's ratio per phase")
    s.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available")
    s.add_argument("--tol", type=float, default=1e-8, help="relative equilibrium residual (default: 1e-8)")
    s.add_argument("--max-iter", type=int, default=5000)
    s.add_argument("--precision", default="mixed", choices=["mixed", "double"],
                   help="CG iterations in float32 refining a float64 solution (default, about 2x faster) or in "
                        "float64; the tolerance holds either way")
    s.add_argument("--threshold", type=float, default=None,
                   help="binarise a grey-value volume: phase 1 where value > THRESHOLD")
    s.add_argument("--mandel", action="store_true", help="print Mandel instead of Voigt notation")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_homogenize)

    s = sub.add_parser("cp", help="crystal plasticity of one grid from DAMASK_grid's own input files")
    s.add_argument("--geom", required=True, help="DAMASK geometry (.vti, cell data 'material': 0-based ids)")
    s.add_argument("--material", required=True, help="DAMASK material.yaml")
    s.add_argument("--load", required=True, help="DAMASK_grid load case (load.yaml)")
    s.add_argument("--numerics", default=None, help="DAMASK numerics.yaml (default: DAMASK's defaults)")
    s.add_argument("--backend", default="builtin", choices=backends.names("cp"),
                   help="built-in spectral solver (default) or DAMASK_grid (needs the binary on PATH)")
    s.add_argument("--device", default=None, choices=["cpu", "cuda"],
                   help="built-in solver only; default: cuda if available")
    s.add_argument("--nprocs", type=int, default=None, help="DAMASK_grid only: MPI processes (default: all cores)")
    s.add_argument("--json", action="store_true", help="machine-readable output (stress in Pa)")
    s.add_argument("--out", default=None, metavar="RESULT.parquet",
                   help="also write the result as a one-row CP results Parquet file (local path or s3://)")
    s.add_argument("--fields", default=None, metavar="OUT.vti",
                   help="built-in solver only: write the local fields of the last converged increment")
    s.set_defaults(func=cmd_cp)

    s = sub.add_parser("predict", help="stress-strain curve of a VE from a trained cp_surrogate predictor")
    s.add_argument("--model", required=True, metavar="PREDICTOR",
                   help="the cp_surrogate pipeline's 'predictor' output (VAE + surrogate in one file; local or s3://)")
    s.add_argument("ve", nargs="+", metavar="VE_FILE",
                   help="VE files: .h5 shard (every VE in it), .dream3d, .vti, .npz, .npy (local path or s3://)")
    s.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available")
    s.add_argument("--json", action="store_true", help="machine-readable output (stress in Pa)")
    s.set_defaults(func=cmd_predict)
    return p


def _floats(field: str):
    def parse(text: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"field '{field}': expected comma-separated numbers, got {text!r}") from None
    return parse


# --------------------------------------------------------------------------------------- pipelines
def _arguments(pipeline: str, preset: str, sets: list[str]) -> dict[str, Any]:
    from pipelines import _kfp

    return _kfp.merge(_kfp.load_preset(pipeline, preset), _kfp.parse_overrides(sets))


def cmd_list(args: argparse.Namespace) -> int:
    import pipelines
    from pipelines import _kfp

    for name in pipelines.PIPELINES:
        module = pipelines.load(name)
        print(f"{name:22s} presets: {', '.join(_kfp.list_presets(name))}")
        print(f"{'':22s} {module.DESCRIPTION}")
    return 0


def _server_arguments(s: argparse.ArgumentParser, namespaced: str) -> None:
    """``--namespace``, ``--out`` and ``--timeout``, shared by ``submit`` and ``upload``."""
    s.add_argument("--namespace", default=None,
                   help=f"Kubeflow profile namespace of {namespaced} (multi-user installs; default: shared)")
    s.add_argument("--out", default="build/pipelines",
                   help="where the compiled packages go (default: build/pipelines)")
    s.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the KFP API's health check before giving up (default: 10)")


def cmd_run(args: argparse.Namespace) -> int:
    import pipelines
    from micropipe import provenance, store
    from micropipe.datasets import lock
    from pipelines import _kfp

    pipelines.load(args.pipeline)  # an unknown name lists the valid ones
    arguments = _arguments(args.pipeline, args.preset, args.set)
    if "dataset_uri" not in arguments:
        arguments["dataset_uri"] = args.dataset_uri or str(_default_dataset_dir(args, arguments))
    arguments = _with_preset(args.pipeline, args.preset, arguments)
    # Everything that can be checked is checked before a run directory, a lock or a VE exists.
    _kfp.validate(args.pipeline, arguments, f"pipeline {args.pipeline}")
    dataset_uri = arguments["dataset_uri"]
    store.check_writable(dataset_uri)
    runs = Path(args.runs_dir) / args.pipeline
    _mark_interrupted(runs)
    with lock.hold(dataset_uri, run=f"{args.pipeline} (preset {args.preset})",
                   arguments_digest=provenance.digest(arguments)):
        removed = store.remove_staging(dataset_uri)
        if removed:
            log.info("removed %d staging file(s) that an interrupted run left in %s", removed, dataset_uri)
        return _run(args, arguments, _kfp.new_run_dir(runs))


def _run(args: argparse.Namespace, arguments: dict[str, Any], run_dir: Path) -> int:
    import os
    import time

    from micropipe import provenance
    from pipelines import _kfp

    record = {**provenance.record(seed=arguments.get("seed"), step=f"run.{args.pipeline}",
                                  params={"preset": args.preset, "arguments": arguments}), "pid": os.getpid()}
    (run_dir / "run.json").write_text(provenance.dumps({**record, "status": "running"}))
    print(f"running {args.pipeline} (preset {args.preset}) -> {_shown(run_dir)}", flush=True)
    console = sys.stdout  # while the run is captured, sys.stdout is its log
    start = time.monotonic()
    try:
        outputs = _kfp.run_local(args.pipeline, arguments, run_dir, verbose=args.verbose,
                                 on_step=None if args.verbose else lambda step: _print_step(step, console),
                                 progress=not args.verbose and sys.stderr.isatty())
    except KeyboardInterrupt:
        (run_dir / "run.json").write_text(provenance.dumps({**record, "status": "interrupted"}))
        raise
    except Exception as err:
        (run_dir / "run.json").write_text(provenance.dumps({**record, "status": "failed", "error": str(err)}))
        _print_failure(err, run_dir / _kfp.LOG_NAME)
        raise RuntimeError(f"pipeline {args.pipeline} failed: {err}") from err
    report = _kfp.save_report(outputs, run_dir)
    paths = {k: getattr(v, "path", None) for k, v in outputs.items()}
    metrics = dict(outputs["metrics"].metadata) if "metrics" in outputs else {}
    (run_dir / "run.json").write_text(provenance.dumps({
        **record, "status": "succeeded", "outputs": paths, "metrics": metrics,
        "report": {k: str(v) for k, v in report.items()}, "log": str(run_dir / _kfp.LOG_NAME)}))
    print(f"{args.pipeline} succeeded in {_duration(time.monotonic() - start)}")
    print()
    if "report" in report:
        print(f"report:  {_shown(report['report'])}" + ("  (Markdown: report.md)" if "summary" in report else ""))
    print(f"log:     {_shown(run_dir / _kfp.LOG_NAME)}")
    print(f"run dir: {_shown(run_dir)}")
    _print_metrics(metrics)
    return 0


def _mark_interrupted(runs: Path) -> None:
    """Mark ``interrupted`` the runs under ``runs`` whose run.json still says ``running`` but whose process on this
    host is gone (killed, or the machine went down), so that no run stays ``running`` forever."""
    import platform

    from micropipe.datasets.lock import pid_alive

    for path in sorted(runs.glob("*/run.json")) if runs.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (record.get("status") == "running" and record.get("host") == platform.node()
                and not pid_alive(record.get("pid", -1))):
            path.write_text(json.dumps({**record, "status": "interrupted"}, indent=1))
            log.warning("run %s was interrupted (its process %s is gone); marked so", path.parent,
                        record.get("pid"))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter, and still opens), else whole."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _print_step(step: Any, out: Any) -> None:
    """One line per finished step of a local run: name, status, time."""
    status = "ok" if step.status == "succeeded" else step.status.upper()
    print(f"  {step.name:32s} {status:6s} {_duration(step.seconds):>10s}", file=out, flush=True)


def _print_failure(err: Exception, log_path: Path) -> None:
    """The failed steps of a local run with the tails of their logs (or the tail of the whole log), and where
    the full log is."""
    from pipelines import _local

    failed = getattr(err, "failed", [])
    if failed:
        tail = failed[0].tail()
        print(f"\nstep {failed[0].name} failed; the last {len(tail)} lines of its log:", file=sys.stderr)
        for line in tail:
            print(f"  | {line}", file=sys.stderr)
    for step in failed[1:]:
        print(f"step {step.name} failed too: {step.error()}", file=sys.stderr)
    if not failed and log_path.is_file():
        lines = log_path.read_text(errors="replace").splitlines()[-_local.TAIL_LINES:]
        print(f"\nthe last {len(lines)} lines of the log:", file=sys.stderr)
        for line in lines:
            print(f"  | {line}", file=sys.stderr)
    if log_path.is_file():
        print(f"full log: {_shown(log_path)}", file=sys.stderr)


def _with_preset(pipeline: str, preset: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with ``preset`` added when the pipeline declares a ``preset`` parameter (it names the preset
    in its report) and ``--set`` gave none; ``run`` and ``submit`` pass the same."""
    from pipelines import _kfp

    if "preset" in _kfp.pipeline_parameters(pipeline) and "preset" not in arguments:
        return {**arguments, "preset": preset}
    return arguments


def _default_dataset_dir(args: argparse.Namespace, arguments: dict[str, Any]) -> Path:
    """``<runs>/<pipeline>/data/<digest of the arguments>``: a rerun with unchanged arguments finds the outputs of
    the earlier run there, and steps skip what is already complete (the local stand-in for KFP's cache)."""
    from micropipe import provenance

    digest = provenance.digest(arguments)[:16]
    return (Path(args.runs_dir) / args.pipeline / "data" / digest).resolve()


def _print_metrics(metrics: dict[str, Any]) -> None:
    if not metrics:
        return
    width = max(len(k) for k in metrics)
    print(f"\n{'metric':{width}s}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for k, v in sorted(metrics.items()):
        print(f"{k:{width}s}  {v:.6g}" if isinstance(v, int | float) else f"{k:{width}s}  {v}")


def cmd_compile(args: argparse.Namespace) -> int:
    import pipelines
    from pipelines import _kfp

    names = args.pipeline or list(pipelines.PIPELINES)
    for name in names:
        pipelines.load(name)  # an unknown name fails before anything is written
    profiles = [_kfp.Profile.load(p) for p in (_kfp.profile_names() if args.profile == "all" else [args.profile])]
    for profile in profiles:
        for name in names:
            path = _kfp.compile_pipeline(name, profile, Path(args.out))
            root = _kfp.default_pipeline_root(path) or "none: the KFP install's default"
            print(f"{path}  (profile {profile.name}, pipeline root {root})")
            _print_placement(_kfp.placement(path))
            print()
    return 0


def _print_placement(rows: list[dict[str, Any]]) -> None:
    """The placement table of one compiled pipeline, as read back from its YAML; '-' where a step has none."""
    def tol(t: dict[str, Any]) -> str:  # "nvidia.com/gpu Exists NoSchedule", "dedicated=gpu Equal NoSchedule"
        key = t.get("key", "*") + (f"={t['value']}" if t.get("value") else "")
        return f"{key} {t.get('operator', 'Equal')} {t.get('effect', '')}".rstrip()

    table = [("step", "class", "image", "cpu req/lim", "mem req/lim", "accelerator", "node selector",
              "tolerations", "secret env")]
    for r in rows:
        acc = r["accelerator"]
        table.append((
            r["step"], r["step_class"] or "-", r["image"].rsplit("/", 1)[-1] or "-",
            f"{r['cpu_request'] or '-'}/{r['cpu_limit'] or '-'}",
            f"{r['memory_request'] or '-'}/{r['memory_limit'] or '-'}",
            f"{acc['type']} x{acc['count']}" if acc else "-",
            ",".join(f"{k}={v}" for k, v in r["node_selector"].items()) or "-",
            ",".join(tol(t) for t in r["tolerations"]) or "-",
            ",".join(r["secrets"]) or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def cmd_submit(args: argparse.Namespace) -> int:
    import pipelines
    from pipelines import _kfp, _server

    module = pipelines.load(args.pipeline)  # unknown name -> the valid ones, before any other work
    host = _server.check_host(args.host)
    profile = _kfp.Profile.load(args.profile)
    arguments = _arguments(args.pipeline, args.preset, args.set)
    stamp = _kfp.utc_stamp()
    if "dataset_uri" not in arguments:
        if not profile.data_root:
            raise ValueError(f"profile {profile.name!r} has no data_root; pass --set dataset_uri=s3://...")
        arguments["dataset_uri"] = f"{profile.data_root.rstrip('/')}/{args.pipeline}/{stamp}"
    arguments = _with_preset(args.pipeline, args.preset, arguments)
    _kfp.validate(args.pipeline, arguments, f"pipeline {args.pipeline}")
    package = _kfp.compile_pipeline(args.pipeline, profile, Path(args.out))
    token, token_source = _server.resolve_token()
    request = {"host": host, "pipeline": module.NAME, "version": f"{micropipe.__version__}-{profile.name}-{stamp}",
               "package": str(package), "profile": profile.name, "pipeline_root": profile.pipeline_root,
               "experiment": args.experiment, "namespace": args.namespace,
               "run_name": f"{args.pipeline}-{args.preset}-{stamp}", "token_source": token_source,
               "arguments": arguments}
    if args.dry_run:
        print(json.dumps(request, indent=1))
        return 0
    client = _server.client(host, token, args.namespace, args.timeout)
    upload = _server.upload_version(client, host, package, module.NAME, request["version"], module.DESCRIPTION,
                                    namespace=args.namespace)
    experiment_id, run_id = _server.start_run(
        client, host, pipeline_id=upload.pipeline_id, version_id=upload.version_id, experiment=args.experiment,
        run_name=request["run_name"], arguments=arguments, pipeline_root=profile.pipeline_root)
    print(f"pipeline {module.NAME} version {request['version']} ({upload.version_id}, {upload.outcome})")
    print(f"submitted run {request['run_name']} ({run_id}) in experiment {args.experiment} ({experiment_id}) "
          f"to {host}")
    return 0


_UPLOADED = {"new pipeline": "new pipeline, version {}", "new version": "new version {}",
             "exists": "version {} exists already, unchanged"}


def cmd_upload(args: argparse.Namespace) -> int:
    from pipelines import _kfp, _server, _upload

    host = _server.check_host(args.host)
    if not args.version.strip():
        raise ValueError(f"--version must not be empty, got {args.version!r}")
    profile = _kfp.Profile.load(args.profile)
    packages = _upload.compile_all(profile, args.pipeline, Path(args.out), args.prefix)
    token, token_source = _server.resolve_token()
    where = f" in namespace {args.namespace}" if args.namespace else ""
    print(f"uploading {len(packages)} pipeline(s) compiled with profile {profile.name} to {host} as version "
          f"{args.version}{where} (token: {token_source})")
    client = _server.client(host, token, args.namespace, args.timeout)
    failed = 0
    for package, result in _upload.upload_all(client, host, packages, args.version, args.namespace):
        if isinstance(result, Exception):
            failed += 1
            print(f"micropipe: error: {result}", file=sys.stderr)
        else:
            print(f"{package.name}: {_UPLOADED[result.outcome].format(args.version)} ({result.version_id})")
    if failed:
        print(f"micropipe: error: {failed} of {len(packages)} pipeline(s) not uploaded", file=sys.stderr)
    return 1 if failed else 0


# -------------------------------------------------------------------------------------------- data
def cmd_data_generate(args: argparse.Namespace) -> int:
    from micropipe.datasets import ve as dataset

    a = _arguments("ve_generation", args.preset, args.set)
    common = {"n_ve": a["n_ve"], "shard_size": a["shard_size"], "generator": a["generator"], "seed": a["seed"],
              "backend": a.get("backend", "builtin")}
    for index in range(len(dataset.shard_ranges(a["n_ve"], a["shard_size"]))):
        print(dataset.write_shard(args.out, index, **common))
    dataset.gather(args.out, **common)
    print(f"dataset: {args.out} ({a['n_ve']} VEs)")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from micropipe import store
    from micropipe.datasets import ve as dataset
    from micropipe.ve import io

    if store.exists(store.join(args.path, dataset.MANIFEST)):
        m = dataset.load_manifest(args.path)
        print(json.dumps({k: m[k] for k in ("uri", "n_ve", "shard_size")} | {
            "n_shards": len(m["shards"]), "provenance": m["provenance"]}, indent=1))
        return 0
    from micropipe.datasets import shards

    with store.local_copy(args.path) as path:
        info = {**io.shard_info(path), "path": str(args.path)}  # the URI given, not a temporary local copy
        try:
            shards.check_checksum(str(args.path), path)
            info["checksum"] = "ok"
        except shards.ChecksumError as e:
            info["checksum"] = str(e) if e.corrupt else "none recorded"
    print(json.dumps(info, indent=1, default=str))
    return 0 if info["checksum"] in ("ok", "none recorded") else 1


def cmd_data_verify(args: argparse.Namespace) -> int:
    from micropipe import store
    from micropipe.datasets import shards

    if not store.exists(args.dataset):
        raise FileNotFoundError(f"{args.dataset}: no dataset there")
    results = shards.verify(args.dataset)
    bad = [r for r in results if r["status"] != "ok"]
    for r in bad:
        print(f"{r['status']:12s} {r['message']}")
    print(f"{args.dataset}: {len(results)} file(s) checked, {len(results) - len(bad)} ok, {len(bad)} not"
          + ("; a rerun with this --dataset-uri moves corrupted shards aside and computes them again" if bad else ""))
    return 1 if bad else 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from micropipe import store
    from micropipe.datasets import ve as dataset
    from micropipe.ve import io

    if store.exists(store.join(args.src, dataset.MANIFEST)):
        items = dataset.iter_ves(dataset.load_manifest(args.src))
        ve_id, ve = next(((i, v) for i, v in items if args.ve in (None, i)), (None, None))
    else:
        with store.local_copy(args.src) as path:
            ves = io.read_shard(path) if Path(path).suffix in (".h5", ".hdf5") else {"ve": io.load(path)}
        ve_id = args.ve or next(iter(ves))
        ve = ves.get(ve_id)
    if ve is None:
        raise ValueError(f"{args.src}: no VE with id {args.ve!r}")
    if not store.is_remote(args.dst):
        io.save(args.dst, ve)  # atomic; .npy also writes its .grains.csv beside it
    elif Path(args.dst).suffix == ".npy":
        raise ValueError(f"{args.dst}: .npy needs a sidecar grain table; use .npz, .dream3d or .vti for s3:// targets")
    else:
        with store.staged_output(args.dst) as tmp:  # same file name, so io.save picks the format by suffix
            io.save(tmp, ve)
    print(f"{args.src}[{ve_id}] -> {args.dst}")
    return 0


def cmd_data_report(args: argparse.Namespace) -> int:
    from micropipe.datasets import ve as dataset
    from micropipe.studies.ve_generation.report import dataset_report

    built = dataset_report(dataset.load_manifest(args.dataset), max_ves=args.max_ves)
    out = Path(args.out)
    built.report.save(out, out.with_suffix(".md"))
    print(f"report: {out}")
    _print_metrics(built.metrics)
    return 0


# -------------------------------------------------------------------------------------- homogenize
def cmd_homogenize(args: argparse.Namespace) -> int:
    import numpy as np

    from micropipe import provenance, store
    from micropipe.device import pick_device
    from micropipe.spectral import elastic

    device = pick_device(args.device)  # before the volume is read: fail fast on a missing GPU
    with store.local_copy(args.volume) as path:
        phases = elastic.load_phases(path, threshold=args.threshold)
    C_phases = elastic.phase_stiffness(phases, args.E, args.nu)
    stiffness = elastic.StiffnessField.from_phases(phases, C_phases, device=device)
    result = elastic.homogenize(stiffness, tol=args.tol, max_iter=args.max_iter, precision=args.precision)
    convention = "Mandel" if args.mandel else "Voigt"
    C = result.C[0] if args.mandel else result.C_voigt()[0]
    fractions = np.bincount(phases.ravel(), minlength=len(C_phases)) / phases.size
    if args.json:
        print(json.dumps({
            "convention": convention, "C": C.tolist(), **result.to_record(0),
            "precision": args.precision, "cells": list(phases.shape),
            "phase_fractions": fractions.tolist(),
            "device": str(device), "provenance": provenance.record(
                seed=None, step="homogenize", params={"volume": args.volume, "E": args.E, "nu": args.nu,
                                                      "tol": args.tol, "precision": args.precision,
                                                      "threshold": args.threshold})}, indent=1))
        return 0
    note = "Mandel (orthonormal, shear x sqrt2)" if args.mandel else "Voigt (tensor components C_ijkl)"
    print(f"effective stiffness, {note}, order 11 22 33 23 13 12, unit of E")
    print(f"volume {args.volume}: {'x'.join(map(str, phases.shape))} voxels, phase fractions "
          f"{', '.join(f'{f:.4f}' for f in fractions)}")
    for row in C:
        print("  " + " ".join(f"{v:12.6g}" for v in row))
    print(f"CG iterations per load case {result.iterations[0].tolist()}, max residual "
          f"{result.residual.max():.2g} (tol {args.tol:g}), device {device}")
    return 0


# ---------------------------------------------------------------------------------------------- cp
def _load_geom(path: str) -> Any:
    import damask

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{path}: geometry file not found")
    if p.suffix != ".vti":
        raise ValueError(f"{path}: expected a DAMASK geometry file (.vti), got suffix {p.suffix!r}")
    from micropipe.ve.io import quiet_vtk

    try:
        with quiet_vtk():
            return damask.GeomGrid.load(p)
    except Exception as e:  # VTK readers raise a variety of errors for bad files
        raise ValueError(f"{path}: not a readable DAMASK geometry: expected VTK image data with cell data "
                         f"'material' ({type(e).__name__}: {e})") from None


def cmd_cp(args: argparse.Namespace) -> int:
    import os
    import tempfile

    import numpy as np

    from micropipe import provenance
    from micropipe.crystal.loadcase import load_loadcase
    from micropipe.crystal.material import load_material
    from micropipe.datasets import cp_results

    if args.backend == "damask" and (args.device or args.fields):
        raise ValueError(f"--{'device' if args.device else 'fields'} applies to the builtin backend only")
    if args.fields and Path(args.fields).suffix != ".vti":
        raise ValueError(f"--fields {args.fields}: expected a .vti file name")
    if args.out and not args.out.endswith(".parquet"):
        raise ValueError(f"--out {args.out}: expected a .parquet file name")
    if args.nprocs is not None and args.nprocs < 1:
        raise ValueError(f"--nprocs must be a positive integer, got {args.nprocs}")
    damask_grid = backends.get("cp", args.backend).require()  # fail fast: before anything is read
    if damask_grid is None:
        from micropipe.device import pick_device

        device = pick_device(args.device)  # fail fast on a missing GPU too
    geom = _load_geom(args.geom)
    material = load_material(args.material)
    loadcase = load_loadcase(args.load)
    numerics = None
    if args.numerics:
        from micropipe.crystal.numerics import load_numerics

        numerics = load_numerics(args.numerics)
    ids = np.asarray(geom.material)
    if ids.size and (ids.min() < 0 or ids.max() >= len(material.materials)):
        raise ValueError(f"{args.geom}: field 'material' holds ids {int(ids.min())}..{int(ids.max())}, but "
                         f"{args.material} defines {len(material.materials)} material entries (ids 0.."
                         f"{len(material.materials) - 1})")

    def progress(done: int, total: int) -> None:
        log.info("increment %d/%d", done, total)

    if damask_grid is None:
        from micropipe.spectral import cp

        (result,) = cp.solve(ids, material, loadcase, size=tuple(geom.size), numerics=numerics, device=device,
                             fields=bool(args.fields), progress=progress)
    else:
        import damask

        config = damask.ConfigMaterial.load(args.material)
        with tempfile.TemporaryDirectory(prefix="micropipe-cp-") as workdir:
            result = damask_grid.solve(ids, config, loadcase, size=tuple(geom.size), numerics=numerics,
                                       workdir=workdir, nprocs=args.nprocs or os.cpu_count() or 1, timeout=None)
    record = provenance.record(seed=None, step="cp", params={
        "geom": args.geom, "material": args.material, "load": args.load, "numerics": args.numerics,
        "backend": args.backend, "device": None if damask_grid else str(device)})
    row = cp_results.result_row(Path(args.geom).stem, result, n_grains=len(np.unique(ids)), cells=ids.shape)
    if args.out:
        cp_results.write_results(cp_results.frame([row]), args.out, record)
    if args.fields:
        _write_fields(args.fields, geom, result.fields or {})
    if args.json:
        print(json.dumps({
            "converged": row["converged"], "reason": row["reason"], "time": row["time"].tolist(),
            "strain_zz": row["strain"].tolist(), "strain": (np.asarray(result.F) - np.eye(3)).tolist(),
            "F": np.asarray(result.F).tolist(), "sigma": np.asarray(result.sigma).tolist(),
            "P": np.asarray(result.P).tolist(), "iterations": row["iterations"].tolist(),
            "cutbacks": row["cutbacks"].tolist(), "wall_time_s": row["wall_time_s"], "backend": row["backend"],
            "cells": list(ids.shape), "size": [float(v) for v in geom.size], "units": {
                "time": "s", "sigma": "Pa (Cauchy, volume average)", "P": "Pa", "strain": "engineering, F - I"},
            "provenance": record}, indent=1))
        return 0 if result.converged else 1
    F, sigma = np.asarray(result.F), np.asarray(result.sigma)
    print(f"{args.geom}: {'x'.join(map(str, ids.shape))} cells, {row['n_grains']} material ids, "
          f"{row['backend']} solver, {row['wall_time_s']:.3g} s")
    print(f"{'inc':>4} {'time/s':>9} {'eps_zz':>10} {'F_zz':>10} {'sigma_xx':>10} {'sigma_yy':>10} "
          f"{'sigma_zz':>10} {'iter':>5} {'cutb':>5}   (sigma: Cauchy, MPa)")
    for n in range(len(F)):
        its = f"{row['iterations'][n - 1]:5d} {row['cutbacks'][n - 1]:5d}" if n else f"{'':>5} {'':>5}"
        print(f"{n:4d} {row['time'][n]:9.4g} {F[n, 2, 2] - 1:10.3e} {F[n, 2, 2]:10.6f} {sigma[n, 0, 0] / 1e6:10.4f} "
              f"{sigma[n, 1, 1] / 1e6:10.4f} {sigma[n, 2, 2] / 1e6:10.4f} {its}")
    if not result.converged:
        print(f"not converged: {result.reason}")
        return 1
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import time

    from micropipe import store
    from micropipe.studies.cp_surrogate.predictor import load_predictor
    from micropipe.ve import io

    with store.local_copy(args.model) as path:
        predictor = load_predictor(path, device=args.device)
    ves, names = [], []
    for src in args.ve:
        with store.local_copy(src) as path:
            found = io.read_shard(path) if Path(path).suffix in (".h5", ".hdf5") else {"": io.load(path)}
        for ve_id, ve in found.items():
            ves.append(ve)
            names.append(f"{src} [{ve_id}]" if ve_id else src)
    start = time.perf_counter()
    stress = predictor.predict(ves, names)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"strain": predictor.strain.tolist(), "unit": "Pa",
                          "curves": [{"ve": n, "sigma_zz": s.tolist()} for n, s in zip(names, stress, strict=True)],
                          "seconds": seconds}, indent=1))
        return 0
    print(f"predicted sigma_zz (MPa) for {len(ves)} VE(s), {seconds:.3g} s including fingerprinting")
    print(f"{'strain':>10s}  " + "  ".join(f"{k:>10d}" for k in range(len(ves))))
    for k, eps in enumerate(predictor.strain):
        print(f"{eps:10.5f}  " + "  ".join(f"{stress[v, k] / 1e6:10.2f}" for v in range(len(ves))))
    for k, n in enumerate(names):
        print(f"[{k}] {n}")
    return 0


def _write_fields(path: str, geom: Any, fields: dict[str, Any]) -> None:
    """Local fields (X, Y, Z, ...) as VTK cell data beside the material ids, written atomically."""
    import damask
    import numpy as np

    from micropipe.store import atomic_path

    def flat(a: np.ndarray) -> np.ndarray:  # VTK image data: x fastest
        a = np.asarray(a)
        return a.transpose(2, 1, 0, *range(3, a.ndim)).reshape(-1, *a.shape[3:])

    vtk = damask.VTK.from_image_data(cells=geom.cells, size=geom.size, origin=geom.origin)
    vtk = vtk.set("material", flat(geom.material))
    for name, value in sorted(fields.items()):
        vtk = vtk.set(name, flat(value))
    with atomic_path(path) as tmp:
        vtk.save(tmp, parallel=False)
