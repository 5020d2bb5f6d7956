"""KFP glue shared by all pipelines: presets, cluster profiles, placement, local runs, compilation.

This is the only place that knows how a profile becomes Kubernetes placement; pipeline modules
call :meth:`Profile.place` on each task with the step's class (``light``, ``cpu`` or ``gpu``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, dsl, kubernetes

from pipelines import _local

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
            try:
                node[leaf] = yaml.safe_load(value)
            except yaml.YAMLError as err:
                problem = str(getattr(err, "problem", None) or err).splitlines()[0]
                raise ValueError(f"--set {part.strip()}: the value is not valid YAML ({problem}); quote it, or "
                                 f"close its brackets") from None
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
    """Cluster profile (``pipelines/profiles/<name>.yaml``): where artifacts go and where steps run.

    Required keys: ``pipeline_root`` (``minio://`` or ``s3://``) and ``step_classes`` with an entry for
    each of ``light``, ``cpu`` and ``gpu`` (an empty mapping is allowed; a missing one would silently
    leave that class of steps unplaced). ``data_root``, ``parallelism`` and ``storage_secret`` are optional.
    """

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
            raise ValueError(f"unknown profile {name_or_path!r}; valid profiles: {', '.join(profile_names())} "
                             f"(or a path to a YAML file)")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a mapping of profile fields, got {type(doc).__name__}")
        _check_profile(path, doc)
        classes = {cls: spec or {} for cls, spec in doc["step_classes"].items()}  # `gpu:` alone is allowed
        return Profile(**{"name": path.stem, **doc, "step_classes": classes})

    def place(self, task: dsl.PipelineTask, step_class: str) -> dsl.PipelineTask:
        """Apply the profile's resources, accelerator, node selector, tolerations and storage secret.

        The step class also goes on the pod as label ``micropipe/step-class``, so the compiled YAML (and
        ``kubectl get pods -l micropipe/step-class=gpu``) says which class a step was placed as.
        """
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
            task.set_accelerator_limit(int(spec["accelerator_limit"]))
        for label, value in (spec.get("node_selector") or {}).items():
            # An unquoted YAML `true` must become the label value "true", not "True".
            value = str(value).lower() if isinstance(value, bool) else str(value)
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        for tol in spec.get("tolerations") or []:
            kubernetes.add_toleration(task, key=tol.get("key"), operator=tol.get("operator", "Equal"),
                                      value=tol.get("value"), effect=tol.get("effect"))
        if self.storage_secret:
            kubernetes.use_secret_as_env(task, secret_name=self.storage_secret["name"],
                                         secret_key_to_env=dict(self.storage_secret["keys"]))
        kubernetes.add_pod_label(task, label_key=STEP_CLASS_LABEL, label_value=step_class)
        # Steps write to the store by URI; a cache hit would skip the write for a new run's URI.
        task.set_caching_options(False)
        return task


STEP_CLASS_LABEL = "micropipe/step-class"
"""Pod label that records a step's class in the compiled YAML."""

_PROFILE_REQUIRED = ("pipeline_root", "step_classes")
_ROOT_SCHEMES = ("minio://", "s3://")
_STEP_KEYS = {"cpu_request", "cpu_limit", "memory_request", "memory_limit", "accelerator_type",
              "accelerator_limit", "node_selector", "tolerations"}
# The same patterns kfp's PipelineTask.set_cpu_*/set_memory_* accept, checked here to name the file and key.
_CPU = re.compile(r"([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect"}
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def profile_names() -> list[str]:
    """Names of the profiles shipped in ``pipelines/profiles/``."""
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def _check_profile(path: Path, doc: dict[str, Any]) -> None:
    """Raise a ``ValueError`` naming ``path`` and the key for anything :meth:`Profile.place` could not use."""
    fields = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(doc) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(fields))}")
    missing = [k for k in _PROFILE_REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"{path}: missing required field(s) {', '.join(missing)}")
    for key in ("pipeline_root", "data_root"):
        value = doc.get(key)
        if key in doc and not (isinstance(value, str) and value.startswith(_ROOT_SCHEMES)
                               and value.partition("://")[2].strip("/")):
            raise ValueError(f"{path}: field '{key}' must be an object-store URI starting with "
                             f"{' or '.join(_ROOT_SCHEMES)}, got {value!r}")
    if "parallelism" in doc and not (isinstance(doc["parallelism"], int) and not isinstance(doc["parallelism"], bool)
                                     and doc["parallelism"] >= 1):
        raise ValueError(f"{path}: field 'parallelism' must be a positive integer, got {doc['parallelism']!r}")
    if doc.get("storage_secret") is not None:
        _check_storage_secret(path, doc["storage_secret"])
    classes = doc["step_classes"]
    if not isinstance(classes, dict):
        raise ValueError(f"{path}: field 'step_classes' must be a mapping of {', '.join(STEP_CLASSES)}")
    bad = sorted(set(classes) - set(STEP_CLASSES))
    if bad:
        raise ValueError(f"{path}: field 'step_classes' has unknown class(es) {', '.join(bad)}; "
                         f"expected {', '.join(STEP_CLASSES)}")
    missing = [c for c in STEP_CLASSES if c not in classes]
    if missing:
        raise ValueError(f"{path}: field 'step_classes' is missing class(es) {', '.join(missing)} "
                         f"(use an empty mapping for default placement)")
    for cls, spec in classes.items():
        _check_step_class(path, cls, spec)


def _check_storage_secret(path: Path, secret: Any) -> None:
    where = f"{path}: field 'storage_secret'"
    if not isinstance(secret, dict) or set(secret) != {"name", "keys"}:
        raise ValueError(f"{where} must be a mapping with exactly 'name' and 'keys', got {secret!r}")
    if not (isinstance(secret["name"], str) and _DNS_NAME.match(secret["name"])):
        raise ValueError(f"{where}.name must be a Kubernetes secret name, got {secret['name']!r}")
    keys = secret["keys"]
    if not isinstance(keys, dict) or not keys:
        raise ValueError(f"{where}.keys must map secret keys to env var names, got {keys!r}")
    for key, env in keys.items():
        if not (isinstance(key, str) and isinstance(env, str) and _ENV_NAME.match(env)):
            raise ValueError(f"{where}.keys.{key} must be an env var name, got {env!r}")


def _check_step_class(path: Path, cls: str, spec: Any) -> None:
    where = f"{path}: step_classes.{cls}"
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a mapping")
    unknown = sorted(set(spec) - _STEP_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(_STEP_KEYS))}")
    for key in ("cpu_request", "cpu_limit"):
        if key in spec and not _CPU.match(str(spec[key])):
            raise ValueError(f"{where}.{key} must be a CPU quantity such as 2 or 500m, got {spec[key]!r}")
    for key in ("memory_request", "memory_limit"):
        if key in spec and not _MEMORY.match(str(spec[key])):
            raise ValueError(f"{where}.{key} must be a memory quantity such as 4G or 512Mi, got {spec[key]!r}")
    if ("accelerator_type" in spec) != ("accelerator_limit" in spec):
        raise ValueError(f"{where}: accelerator_type and accelerator_limit go together; "
                         f"only {'accelerator_type' if 'accelerator_type' in spec else 'accelerator_limit'} given")
    if "accelerator_type" in spec:
        if not (isinstance(spec["accelerator_type"], str) and spec["accelerator_type"]):
            raise ValueError(f"{where}.accelerator_type must be a resource name such as nvidia.com/gpu, "
                             f"got {spec['accelerator_type']!r}")
        limit = spec["accelerator_limit"]
        if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
            raise ValueError(f"{where}.accelerator_limit must be a positive integer, got {limit!r}")
    selector = spec.get("node_selector") or {}
    if not isinstance(selector, dict) or not all(isinstance(k, str) and isinstance(v, str | int | bool)
                                                 for k, v in selector.items()):
        raise ValueError(f"{where}.node_selector must map label keys to values, got {selector!r}")
    tolerations = spec.get("tolerations") or []
    if not isinstance(tolerations, list):
        raise ValueError(f"{where}.tolerations must be a list, got {tolerations!r}")
    for i, tol in enumerate(tolerations):
        at = f"{where}.tolerations[{i}]"
        if not isinstance(tol, dict) or not set(tol) <= _TOLERATION_KEYS or "effect" not in tol:
            raise ValueError(f"{at} must be a mapping of {', '.join(sorted(_TOLERATION_KEYS))} "
                             f"with at least 'effect', got {tol!r}")
        if tol["effect"] not in _EFFECTS:
            raise ValueError(f"{at}.effect must be one of {', '.join(_EFFECTS)}, got {tol['effect']!r}")
        operator = tol.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            raise ValueError(f"{at}.operator must be Equal or Exists, got {operator!r}")
        if operator == "Exists" and tol.get("value") is not None:
            raise ValueError(f"{at}: operator Exists takes no value, got {tol['value']!r}")
        if operator == "Equal" and not tol.get("key"):
            raise ValueError(f"{at}: operator Equal needs a 'key'")


LOCAL = Profile(name="local", parallelism=max(1, os.cpu_count() or 1))
"""Profile of local runs: no placement (the local runner ignores it anyway)."""


# ------------------------------------------------------------------------------------------ compile
def compile_pipeline(pipeline: str, profile: Profile, out_dir: Path) -> Path:
    """Compile ``pipeline`` with ``profile`` to ``out_dir/<pipeline>.yaml`` (``<pipeline>.<profile>.yaml``
    for profiles other than ``cpu``).

    The profile's ``pipeline_root`` is the package's ``defaultPipelineRoot`` (each pipeline passes it to
    ``dsl.pipeline``), so a run started from the KFP UI keeps its artifacts there too.
    """
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


def default_pipeline_root(path: Path) -> str:
    """The ``defaultPipelineRoot`` of the compiled pipeline at ``path`` ('' if it has none): where KFP keeps the
    artifacts of a run started without a pipeline root of its own, e.g. from the UI."""
    spec = next(d for d in yaml.safe_load_all(Path(path).read_text()) if d)
    return spec.get("defaultPipelineRoot", "")


def placement(path: Path) -> list[dict[str, Any]]:
    """Where each step of a compiled pipeline runs, read back from the IR YAML at ``path`` (not from the
    profile), so what it reports is what the cluster gets.

    Returns one dict per executor, sorted by step name, with ``step`` (the executor's name without
    ``exec-``; unique, unlike task names in sub-DAGs), ``executor``, ``tasks`` (names of the tasks that
    run it), ``step_class`` (pod label ``micropipe/step-class``, '' if absent), ``image``,
    ``cpu_request``, ``cpu_limit``, ``memory_request``, ``memory_limit`` ('' if unset), ``accelerator``
    (``{'type', 'count'}`` or ``None``), ``node_selector`` (label -> value), ``tolerations`` (list of
    Kubernetes toleration dicts) and ``secrets`` (``{secret name: {secret key: env var}}``).
    """
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    spec = docs[0]
    platform = next((d["platforms"]["kubernetes"]["deploymentSpec"]["executors"] for d in docs[1:]
                     if "platforms" in d), {})
    components = spec.get("components", {})
    tasks: dict[str, list[str]] = {}
    for dag in [spec["root"].get("dag", {})] + [c["dag"] for c in components.values() if "dag" in c]:
        for task_name, task in dag.get("tasks", {}).items():
            executor = components.get(task["componentRef"]["name"], {}).get("executorLabel")
            if executor:
                tasks.setdefault(executor, []).append(task_name)
    rows = []
    for executor, body in spec["deploymentSpec"]["executors"].items():
        container = body.get("container", {})
        res = container.get("resources", {})
        acc = res.get("accelerator")
        k8s = platform.get(executor, {})
        rows.append({
            "step": executor.removeprefix("exec-"),
            "executor": executor,
            "tasks": sorted(tasks.get(executor, [])),
            "step_class": k8s.get("podMetadata", {}).get("labels", {}).get(STEP_CLASS_LABEL, ""),
            "image": container.get("image", ""),
            "cpu_request": res.get("resourceCpuRequest", ""), "cpu_limit": res.get("resourceCpuLimit", ""),
            "memory_request": res.get("resourceMemoryRequest", ""),
            "memory_limit": res.get("resourceMemoryLimit", ""),
            "accelerator": {"type": acc.get("resourceType", acc.get("type", "")),
                            "count": int(acc.get("resourceCount", acc.get("count", 0)))} if acc else None,
            "node_selector": dict(k8s.get("nodeSelector", {}).get("labels", {})),
            "tolerations": list(k8s.get("tolerations", [])),
            "secrets": {ref["secretName"]: {kv["secretKey"]: kv["envVar"] for kv in ref.get("keyToEnv", [])}
                        for ref in k8s.get("secretAsEnv", [])},
        })
    return sorted(rows, key=lambda r: r["step"])


# -------------------------------------------------------------------------------------------- local
LOG_NAME = "kfp.log"
"""The local runner's full log, in the run directory."""


def run_local(pipeline: str, arguments: dict[str, Any], run_dir: Path, *, verbose: bool = False,
              on_step: Callable[[_local.Step], None] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run ``pipeline`` with the KFP local SubprocessRunner; every artifact lands under ``run_dir``.

    Everything the runner writes (its messages and every task's output) goes to ``run_dir/kfp.log``, with
    ``verbose`` to the console as well; ``on_step`` is called with each :class:`pipelines._local.Step` as it
    ends and ``progress`` shows the running steps on stderr (see :func:`pipelines._local.capture`).

    Returns the pipeline's outputs as ``{name: artifact}`` (artifacts have ``.path`` and ``.metadata``).

    Raises
    ------
    pipelines._local.PipelineFailed
        The run failed; it names the failed steps, which hold the tails of their logs.
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
    # Local runs use this venv on purpose (use_venv=False, nothing pip-installed); the image named in
    # the components is for clusters, so kfp's "custom base image" warning does not apply here.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    run_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "kfp"),
               raise_on_error=True)
    log_path = run_dir / LOG_NAME
    with _local.capture(log_path, verbose=verbose, on_step=on_step, progress=progress) as steps:
        try:
            task = func(**arguments)
        except Exception as err:
            failed = steps.failed()
            what = f"step {failed[0].name} failed: {failed[0].error()}" if failed else _local.plain(str(err))
            raise _local.PipelineFailed(what, failed, log_path) from err
    outputs = task.outputs if isinstance(task.outputs, dict) else {"output": task.output}
    return dict(outputs)


def validate(pipeline: str, arguments: dict[str, Any], source: str) -> None:
    """Before anything runs: unknown parameters, then every value as the pipeline's steps will read it (its study's
    ``check_arguments``, defaults filled in); one ``ValueError`` naming the parameter."""
    import importlib

    from pipelines import load

    func = load(pipeline).build(LOCAL)
    check_arguments(func, arguments, source)
    importlib.import_module(f"micropipe.studies.{pipeline}").check_arguments({**default_arguments(func),
                                                                              **arguments})


def new_run_dir(parent: Path) -> Path:
    """Create and return a run directory under ``parent`` that no other run has: ``<UTC stamp>``, else
    ``<UTC stamp>-2``, ``-3``... (two runs started in the same second each get their own)."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    for k in range(1, 1000):
        path = parent / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir()
            return path.resolve()
        except FileExistsError:
            continue
    raise RuntimeError(f"{parent}: no free run directory for {stamp}")


def save_report(outputs: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """Copy a run's ``report`` (HTML) and ``summary`` (Markdown) outputs to ``run_dir/report.html`` and
    ``run_dir/report.md``, where a browser and an editor open them (KFP's artifact files have no suffix);
    returns ``{output name: copy}`` for those the pipeline has."""
    copies = {}
    for name, file_name in (("report", "report.html"), ("summary", "report.md")):
        source = getattr(outputs.get(name), "path", None)
        if source and Path(source).is_file():
            copies[name] = run_dir / file_name
            shutil.copyfile(source, copies[name])
    return copies


def pipeline_parameters(pipeline: str) -> list[str]:
    """Names of the parameters of pipeline ``pipeline``."""
    from pipelines import load

    return list(load(pipeline).build(LOCAL).component_spec.inputs or {})


def default_arguments(pipeline_func: Any) -> dict[str, Any]:
    """Defaults declared in the pipeline signature (as the compiled component spec holds them)."""
    return {k: spec.default for k, spec in (pipeline_func.component_spec.inputs or {}).items() if spec.optional}


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
