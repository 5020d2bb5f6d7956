"""KFP glue shared by all pipelines: presets, cluster profiles, placement, local runs, compilation.

This is the only place that knows how a profile becomes Kubernetes placement; pipeline modules
call :meth:`Profile.place` on each task with the step's class (``light``, ``cpu`` or ``gpu``).
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import datetime as _dt
import inspect
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, dsl, kubernetes

HERE = Path(__file__).resolve().parent
PRESETS = HERE / "presets"
PROFILES = HERE / "profiles"
STEP_CLASSES = ("light", "cpu", "gpu")


# ----------------------------------------------------------------------------------------- presets
def list_presets(pipeline: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS / pipeline).glob("*.yaml"))


def load_preset(pipeline: str, preset: str) -> dict[str, Any]:
    """Pipeline arguments of a preset (``pipelines/presets/<pipeline>/<preset>.yaml``, key ``arguments``)."""
    path = PRESETS / pipeline / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {preset!r} for pipeline {pipeline!r}; "
                         f"valid presets: {', '.join(list_presets(pipeline)) or '(none)'}")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc.get("arguments"), dict):
        raise ValueError(f"{path}: field 'arguments' must be a mapping of pipeline parameters")
    return doc["arguments"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['n_ve=8', 'generator.cells=48,shard_size=4']`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        for part in _split_top_level(item):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set: expected key=value, got {part!r}")
            node = out
            *parents, leaf = key.strip().split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = yaml.safe_load(value)
    return out


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, so ``axis_ratio=[2,1,1]`` stays whole."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{(" and 1 or 0
        depth -= ch in "]})" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in [*parts, cur] if p.strip()]


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: nested dicts merge, other values from ``over`` replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_arguments(pipeline_func: Any, arguments: dict[str, Any], source: str) -> None:
    """Reject arguments the pipeline does not take, listing the ones it does."""
    params = pipeline_func.component_spec.inputs or {}
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise ValueError(f"{source}: unknown parameter(s) {', '.join(unknown)}; "
                         f"valid parameters: {', '.join(sorted(params))}")


# ---------------------------------------------------------------------------------------- profiles
@dataclasses.dataclass(frozen=True)
class Profile:
    """Cluster profile (``pipelines/profiles/<name>.yaml``): where artifacts go and where steps run."""

    name: str
    pipeline_root: str = ""
    data_root: str = ""
    parallelism: int = 4
    storage_secret: dict[str, Any] | None = None
    step_classes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @staticmethod
    def load(name_or_path: str) -> Profile:
        path = Path(name_or_path)
        if not path.suffix:
            path = PROFILES / f"{name_or_path}.yaml"
        if not path.is_file():
            valid = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
            raise ValueError(f"unknown profile {name_or_path!r}; valid profiles: {valid} (or a path to a YAML file)")
        doc = yaml.safe_load(path.read_text()) or {}
        fields = {f.name for f in dataclasses.fields(Profile)}
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(fields))}")
        classes = doc.get("step_classes") or {}
        bad = sorted(set(classes) - set(STEP_CLASSES))
        if bad:
            raise ValueError(f"{path}: field 'step_classes' has unknown class(es) {', '.join(bad)}; "
                             f"expected {', '.join(STEP_CLASSES)}")
        for cls, spec in classes.items():
            _check_step_class(path, cls, spec)
        return Profile(**{"name": path.stem, **doc})

    def place(self, task: dsl.PipelineTask, step_class: str) -> dsl.PipelineTask:
        """Apply the profile's resources, accelerator, node selector, tolerations and storage secret."""
        if step_class not in STEP_CLASSES:
            raise ValueError(f"unknown step class {step_class!r}; expected one of {', '.join(STEP_CLASSES)}")
        spec = self.step_classes.get(step_class, {})
        for key, setter in (("cpu_request", task.set_cpu_request), ("cpu_limit", task.set_cpu_limit),
                            ("memory_request", task.set_memory_request),
                            ("memory_limit", task.set_memory_limit)):
            if key in spec:
                setter(str(spec[key]))
        if "accelerator_type" in spec:
            task.set_accelerator_type(spec["accelerator_type"])
            task.set_accelerator_limit(int(spec.get("accelerator_limit", 1)))
        for label, value in (spec.get("node_selector") or {}).items():
            kubernetes.add_node_selector(task, label_key=label, label_value=str(value))
        for tol in spec.get("tolerations") or []:
            kubernetes.add_toleration(task, key=tol.get("key"), operator=tol.get("operator", "Equal"),
                                      value=tol.get("value"), effect=tol.get("effect"))
        if self.storage_secret:
            kubernetes.use_secret_as_env(task, secret_name=self.storage_secret["name"],
                                         secret_key_to_env=dict(self.storage_secret["keys"]))
        # Steps write to the store by URI; a cache hit would skip the write for a new run's URI.
        task.set_caching_options(False)
        return task


_STEP_KEYS = {"cpu_request", "cpu_limit", "memory_request", "memory_limit", "accelerator_type",
              "accelerator_limit", "node_selector", "tolerations"}


def _check_step_class(path: Path, cls: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: step_classes.{cls} must be a mapping")
    unknown = sorted(set(spec) - _STEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: step_classes.{cls} has unknown key(s) {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(_STEP_KEYS))}")
    for tol in spec.get("tolerations") or []:
        if not isinstance(tol, dict) or "effect" not in tol:
            raise ValueError(f"{path}: step_classes.{cls}.tolerations entries need at least 'effect', got {tol!r}")


LOCAL = Profile(name="local", parallelism=max(1, os.cpu_count() or 1))
"""Profile of local runs: no placement (the local runner ignores it anyway)."""


# ------------------------------------------------------------------------------------------ compile
def compile_pipeline(pipeline: str, profile: Profile, out_dir: Path) -> Path:
    """Compile ``pipeline`` with ``profile`` to ``out_dir/<pipeline>.yaml`` (``<pipeline>.<profile>.yaml``
    for profiles other than ``cpu``)."""
    from pipelines import load

    module = load(pipeline)
    func = module.build(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if profile.name == "cpu" else f".{profile.name}"
    path = out_dir / f"{pipeline}{suffix}.yaml"
    tmp = path.with_name(f".{path.stem}.tmp.yaml")
    compiler.Compiler().compile(func, str(tmp), pipeline_name=module.NAME)
    os.replace(tmp, path)
    return path


# -------------------------------------------------------------------------------------------- local
def _route_root_through_enhanced_orchestrator() -> None:
    """kfp 2.16.1's local runner uses its loop-capable orchestrator only when the *root* DAG has a loop
    or condition; a sub-DAG with a ``dsl.ParallelFor`` under a plain root fails ("Unknown value type").
    Our fan-in puts the loop in a sub-pipeline (so the gather step can depend on it: ``.after`` on a
    loop crashes the local runner), so route the root through the enhanced orchestrator, which runs
    plain DAGs too. On a cluster none of this applies."""
    from kfp.local.orchestrator import dag_orchestrator, enhanced_dag_orchestrator

    dag_orchestrator.run_dag = enhanced_dag_orchestrator.run_enhanced_dag


def run_local(pipeline: str, arguments: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run ``pipeline`` with the KFP local SubprocessRunner; every artifact lands under ``run_dir``.

    Returns the pipeline's outputs as ``{name: artifact}`` (artifacts have ``.path`` and ``.metadata``).
    """
    from kfp import local

    from pipelines import load

    module = load(pipeline)
    func = module.build(LOCAL)
    check_arguments(func, arguments, f"pipeline {pipeline}")
    # Components run as `python3 -m kfp...` subprocesses: make that python this interpreter's venv.
    venv_bin, path = str(Path(sys.executable).parent), os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != venv_bin:  # not once more per run in a long-lived process
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{path}"
    _route_root_through_enhanced_orchestrator()
    # Local runs use this venv on purpose (use_venv=False, nothing pip-installed); the image named in
    # the components is for clusters, so kfp's "custom base image" warning does not apply here.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    run_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "kfp"),
               raise_on_error=True)
    # kfp's local runner indents its logs by swapping builtins.print; ParallelFor threads race on the
    # swap and can leave it swapped, so restore it ourselves.
    original_print = builtins.print
    try:
        task = func(**arguments)
    finally:
        builtins.print = original_print
    outputs = task.outputs if isinstance(task.outputs, dict) else {"output": task.output}
    return dict(outputs)


def pipeline_parameters(pipeline: str) -> list[str]:
    """Names of the parameters of pipeline ``pipeline``."""
    from pipelines import load

    return list(load(pipeline).build(LOCAL).component_spec.inputs or {})


def default_arguments(pipeline_func: Any) -> dict[str, Any]:
    """Defaults declared in the pipeline signature."""
    sig = inspect.signature(pipeline_func.python_func)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
