"""Every pipeline compiles with every profile; placement comes from the profile; YAML parses back."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import dsl
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

import pipelines
from components import component
from micropipe import cli
from pipelines import _kfp

PROFILES = _kfp.profile_names()
ROOT = Path(__file__).resolve().parents[1]


def run_dirs(parent: Path) -> list[Path]:
    """The run directories `micropipe run` made under ``runs/<pipeline>/`` (not its ``data/``), oldest first."""
    return sorted(p for p in parent.iterdir() if p.name != "data")


def dataset_uri(run_dir: Path) -> str:
    """The dataset URI a `micropipe run` used (recorded in its run.json)."""
    import json

    return json.loads((run_dir / "run.json").read_text())["params"]["arguments"]["dataset_uri"]


def parse_ir(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, dict]:
    """Load compiled YAML back through kfp's pipeline-spec protobuf (strict: unknown fields fail).

    The platform document's executors are ``Struct``s in ``PlatformSpec``, so each is also parsed into
    kfp-kubernetes' ``KubernetesExecutorConfig`` to check the Kubernetes fields themselves.
    """
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = {}
    if len(docs) > 1:
        json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
        platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for config in platform.values():
            json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
    return spec, platform


def write_profile(tmp_path: Path, name: str = "custom", base: str = "gpu", **changes) -> Path:
    """A copy of profile ``base`` with top-level ``changes`` (``None`` deletes the key), as ``<name>.yaml``."""
    doc = yaml.safe_load((_kfp.PROFILES / f"{base}.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_profiles_cover_cpu_and_gpu():
    assert {"cpu", "gpu"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", pipelines.PIPELINES)
def test_every_pipeline_compiles(tmp_path, name, profile):
    prof = _kfp.Profile.load(profile)
    path = _kfp.compile_pipeline(name, prof, tmp_path)
    spec, platform = parse_ir(path)
    assert spec.pipeline_info.name == pipelines.load(name).NAME
    assert spec.deployment_spec
    # The profile's pipeline root is in the package, so a run started from the KFP UI uses it too.
    assert prof.pipeline_root and spec.default_pipeline_root == prof.pipeline_root
    assert _kfp.default_pipeline_root(path) == prof.pipeline_root
    text = path.read_text()
    assert "pip install" not in text, "components must not pip-install at run time"
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left"


@pytest.mark.parametrize("name", pipelines.PIPELINES)
def test_every_fan_out_is_gathered_by_data(tmp_path, name):
    """Each ParallelFor's outputs feed (``dsl.Collected``) a task of the same DAG: the fan-in is wired by data."""
    spec, _ = parse_ir(_kfp.compile_pipeline(name, _kfp.Profile.load("cpu"), tmp_path))
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.WhichOneof("implementation") == "dag")]
    loops = 0
    for dag in dags:
        for loop, task in dag.tasks.items():
            if not task.WhichOneof("iterator"):
                continue
            loops += 1
            consumers = [n for n, t in dag.tasks.items() for p in t.inputs.parameters.values()
                         if p.task_output_parameter.producer_task == loop]
            assert consumers, f"{name}: nothing takes the outputs of {loop}"
    assert loops == {"ve_generation": 1, "cp_dataset": 2, "cp_surrogate": 2, "gan_homogenization": 0}[name]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", pipelines.PIPELINES)
def test_placement_read_back_matches_the_profile(tmp_path, name, profile):
    """GPU steps carry the profile's accelerator, node selector and tolerations; other steps none of them."""
    prof = _kfp.Profile.load(profile)
    path = _kfp.compile_pipeline(name, prof, tmp_path)
    spec, _ = parse_ir(path)
    rows = _kfp.placement(path)
    assert {r["executor"] for r in rows} == set(spec.deployment_spec.fields["executors"].struct_value.fields)
    for row in rows:
        cls = row["step_class"]
        assert cls in _kfp.STEP_CLASSES, row["step"]
        want = prof.step_classes[cls]
        assert (row["cpu_request"], row["cpu_limit"]) == (str(want["cpu_request"]), str(want["cpu_limit"]))
        assert (row["memory_request"], row["memory_limit"]) == (want["memory_request"], want["memory_limit"])
        if "accelerator_type" in want:
            assert row["accelerator"] == {"type": want["accelerator_type"], "count": want["accelerator_limit"]}
        else:
            assert row["accelerator"] is None, row["step"]
        assert row["node_selector"] == {k: str(v) for k, v in (want.get("node_selector") or {}).items()}
        assert row["tolerations"] == [{"operator": "Equal", **t} for t in want.get("tolerations") or []]
        if cls == "gpu":
            assert "micropipe-torch" in row["image"], row["step"]
    placed = [r["step"] for r in rows if r["accelerator"] or r["node_selector"] or r["tolerations"]]
    if profile == "gpu":
        assert placed == [r["step"] for r in rows if r["step_class"] == "gpu"]
        assert bool(placed) == (name != "ve_generation"), "every pipeline but ve_generation has GPU steps"
    if profile == "cpu":
        assert not placed


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", pipelines.PIPELINES)
def test_secrets_referenced_never_inlined(tmp_path, monkeypatch, name, profile):
    """Every step gets the storage secret by name; credential values in the compiling shell never reach
    the YAML, and no container sets the credential variables itself."""
    canaries = {"AWS_ACCESS_KEY_ID": "AKIACANARY0123456789", "AWS_SECRET_ACCESS_KEY": "canary-secret-Zq81x",
                "MICROPIPE_S3_ENDPOINT": "http://canary-endpoint.invalid:9000", "KFP_TOKEN": "canary-token-77f"}
    for key, value in canaries.items():
        monkeypatch.setenv(key, value)
    prof = _kfp.Profile.load(profile)
    path = _kfp.compile_pipeline(name, prof, tmp_path)
    text = path.read_text()
    for value in [*canaries.values(), "testing"]:  # 'testing': moto's default credentials
        assert value not in text
    secret_env = set(prof.storage_secret["keys"].values())
    spec, _ = parse_ir(path)
    for executor, body in json_format.MessageToDict(spec.deployment_spec)["executors"].items():
        inlined = {e["name"] for e in body["container"].get("env", [])} & secret_env
        assert not inlined, f"{executor} sets {inlined} in the container spec"
    for row in _kfp.placement(path):
        assert row["secrets"] == {prof.storage_secret["name"]: prof.storage_secret["keys"]}, row["step"]


def test_compile_prints_placement_table(tmp_path, capsys):
    """`micropipe compile --profile gpu` (what `make compile PROFILE=gpu` runs) shows, for every GPU step,
    the accelerator, node selector and toleration, and '-' for them on every other step."""
    assert cli.main(["compile", "--profile", "gpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    gpu = _kfp.Profile.load("gpu").step_classes["gpu"]
    selector = ",".join(f"{k}={v}" for k, v in gpu["node_selector"].items())
    toleration = "{key} {operator} {effect}".format(**gpu["tolerations"][0])
    written = sorted(tmp_path.glob("*.gpu.yaml"))
    assert len(written) == len(pipelines.PIPELINES)
    for path in written:
        assert str(path) in out
        for row in _kfp.placement(path):
            line = next(ln for ln in out.splitlines() if ln.split()[:2] == [row["step"], row["step_class"]])
            cells = line.split()
            if row["step_class"] == "gpu":
                assert f"{gpu['accelerator_type']} x{gpu['accelerator_limit']}" in line
                assert selector in cells and toleration in line
            else:
                assert "nvidia" not in line and cells[5:8] == ["-", "-", "-"], line


def test_profile_without_pipeline_root_leaves_the_install_default(tmp_path, capsys):
    """A profile built in code with no pipeline root (files must name one) writes no defaultPipelineRoot, and
    the compile header says so instead of naming a root the package does not carry."""
    prof = dataclasses.replace(_kfp.Profile.load("cpu"), pipeline_root="")
    path = _kfp.compile_pipeline("gan_homogenization", prof, tmp_path)
    assert "defaultPipelineRoot" not in path.read_text()
    assert _kfp.default_pipeline_root(path) == ""
    assert parse_ir(path)[0].default_pipeline_root == ""
    assert cli.main(["compile", "--pipeline", "gan_homogenization", "--profile", "gpu", "--out", str(tmp_path)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    gpu = _kfp.Profile.load("gpu")
    assert header == f"{tmp_path / 'gan_homogenization.gpu.yaml'}  (profile gpu, pipeline root {gpu.pipeline_root})"


def test_image_variables_at_compile_time_set_the_step_images(tmp_path):
    """MICROPIPE_BASE_IMAGE / MICROPIPE_TORCH_IMAGE (what the chart's componentImages become) are read when
    components is imported, so compile in a fresh interpreter with them set: CPU steps get the base image,
    GPU-capable steps the torch image, and the package defaults appear nowhere."""
    base = "registry.example.org/ml/micropipe-base:test-1"
    torch = "registry.example.org/ml/micropipe-torch@sha256:" + "c" * 64
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPIPE_")}
    env.update(MICROPIPE_BASE_IMAGE=base, MICROPIPE_TORCH_IMAGE=torch)
    proc = subprocess.run([sys.executable, "-m", "micropipe", "compile", "--pipeline", "gan_homogenization",
                           "--profile", "gpu", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "gan_homogenization.gpu.yaml"
    rows = _kfp.placement(path)
    assert {r["image"] for r in rows if r["step_class"] == "gpu"} == {torch}
    assert {r["image"] for r in rows} == {base, torch}
    assert "ghcr.io/micropipe" not in path.read_text()
    assert "micropipe-torch@sha256:" in proc.stdout, "the placement table shows the image compiled in"


@pytest.mark.parametrize("unbuffered", [False, True], ids=["flush-at-exit", "print"])
def test_closed_pipe_ends_quietly(tmp_path, unbuffered):
    """`micropipe compile | head` once head has gone: exit 141 (128 + SIGPIPE, as a shell reports it), no
    traceback. The reading end is closed before the command starts, so the first write fails, whether that is
    a print (-u) or the flush of buffered output."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, *(["-u"] if unbuffered else []), "-m", "micropipe", "compile",
                               "--pipeline", "gan_homogenization", "--out", str(tmp_path)],
                              cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert proc.returncode == cli.SIGPIPE_EXIT == 141, proc.stderr
    for noise in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert noise not in proc.stderr, proc.stderr


def test_compile_rejects_unknown_names_before_writing(tmp_path, capsys):
    assert cli.main(["compile", "--pipeline", "nope", "--out", str(tmp_path)]) == 2
    assert "valid pipelines: ve_generation" in capsys.readouterr().err
    assert cli.main(["compile", "--profile", "nope", "--out", str(tmp_path)]) == 2
    assert "valid profiles: cpu, gpu" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@component
def probe_cpu_step() -> int:
    return 1


@component
def probe_gpu_step(x: int) -> int:
    return x


def _placement_pipeline(profile):
    @dsl.pipeline(name="placement-probe")
    def probe():
        a = profile.place(probe_cpu_step(), "cpu")
        profile.place(probe_gpu_step(x=a.output), "gpu")

    return probe


def test_gpu_profile_placesprobe_gpu_steps_only(tmp_path):
    from kfp import compiler

    path = tmp_path / "probe.yaml"
    compiler.Compiler().compile(_placement_pipeline(_kfp.Profile.load("gpu")), str(path))
    spec, platform = parse_ir(path)
    containers = {name: ex["container"]
                  for name, ex in json_format.MessageToDict(spec.deployment_spec)["executors"].items()}
    gpu, cpu = containers["exec-probe-gpu-step"], containers["exec-probe-cpu-step"]
    assert gpu["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert gpu["resources"]["accelerator"]["resourceCount"] == "1"
    assert "accelerator" not in cpu["resources"]
    assert platform["exec-probe-gpu-step"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert platform["exec-probe-gpu-step"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nodeSelector" not in platform["exec-probe-cpu-step"]
    assert "tolerations" not in platform["exec-probe-cpu-step"]


def test_cpu_profile_gives_no_accelerators(tmp_path):
    from kfp import compiler

    path = tmp_path / "probe.yaml"
    compiler.Compiler().compile(_placement_pipeline(_kfp.Profile.load("cpu")), str(path))
    text = path.read_text()
    assert "accelerator" not in text and "nodeSelector" not in text and "tolerations" not in text


def test_unknown_profile_and_preset_list_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid profiles: .*cpu.*gpu"):
        _kfp.Profile.load("nope")
    with pytest.raises(ValueError, match="valid presets: .*paper.*small"):
        _kfp.load_preset("ve_generation", "nope")
    with pytest.raises(ValueError, match="valid pipelines: ve_generation"):
        pipelines.load("nope")


def test_bad_profile_field_is_named(tmp_path):
    gpu = yaml.safe_load((_kfp.PROFILES / "gpu.yaml").read_text())["step_classes"]
    bad = write_profile(tmp_path, "bad", step_classes={**gpu, "gpu": {**gpu["gpu"], "accelerators": 2}})
    with pytest.raises(ValueError, match=r"bad.yaml: step_classes.gpu has unknown key\(s\) accelerators"):
        _kfp.Profile.load(str(bad))


def _gpu_class(**changes):
    doc = yaml.safe_load((_kfp.PROFILES / "gpu.yaml").read_text())["step_classes"]
    doc["gpu"] = {k: v for k, v in {**doc["gpu"], **changes}.items() if v is not None}
    return doc


BAD_PROFILES = {
    "missing pipeline_root": ({"pipeline_root": None}, r"missing required field\(s\) pipeline_root"),
    "missing step_classes": ({"step_classes": None}, r"missing required field\(s\) step_classes"),
    "missing gpu class": ({"step_classes": {"light": {}, "cpu": {}}}, r"'step_classes' is missing class\(es\) gpu"),
    "local pipeline_root": ({"pipeline_root": "/tmp/artifacts"}, r"'pipeline_root' must be an object-store URI"),
    "empty bucket": ({"data_root": "s3://"}, r"'data_root' must be an object-store URI"),
    "parallelism 0": ({"parallelism": 0}, r"'parallelism' must be a positive integer"),
    "type without limit": ({"step_classes": _gpu_class(accelerator_limit=None)},
                           r"step_classes.gpu: accelerator_type and accelerator_limit go together"),
    "limit without type": ({"step_classes": _gpu_class(accelerator_type=None)},
                           r"step_classes.gpu: accelerator_type and accelerator_limit go together"),
    "fractional gpu": ({"step_classes": _gpu_class(accelerator_limit=0.5)},
                       r"step_classes.gpu.accelerator_limit must be a positive integer"),
    "memory unit": ({"step_classes": _gpu_class(memory_limit="64GB")},
                    r"step_classes.gpu.memory_limit must be a memory quantity"),
    "cpu unit": ({"step_classes": _gpu_class(cpu_request="8 cores")},
                 r"step_classes.gpu.cpu_request must be a CPU quantity"),
    "toleration effect": ({"step_classes": _gpu_class(tolerations=[{"key": "a", "effect": "NoRun"}])},
                          r"step_classes.gpu.tolerations\[0\].effect must be one of"),
    "toleration not a list": ({"step_classes": _gpu_class(tolerations={"key": "a", "effect": "NoSchedule"})},
                              r"step_classes.gpu.tolerations must be a list"),
    "exists with value": ({"step_classes": _gpu_class(tolerations=[{"key": "a", "operator": "Exists", "value": "b",
                                                                    "effect": "NoSchedule"}])},
                          r"tolerations\[0\]: operator Exists takes no value"),
    "secret without keys": ({"storage_secret": {"name": "s3"}}, r"'storage_secret' must be a mapping with exactly"),
    "secret env name": ({"storage_secret": {"name": "s3", "keys": {"secretkey": "AWS SECRET"}}},
                        r"'storage_secret'.keys.secretkey must be an env var name"),
}


@pytest.mark.parametrize("case", BAD_PROFILES)
def test_bad_profile_names_file_and_key(tmp_path, case):
    changes, message = BAD_PROFILES[case]
    path = write_profile(tmp_path, "mine", **changes)
    with pytest.raises(ValueError, match=message) as err:
        _kfp.Profile.load(str(path))
    assert str(err.value).startswith(f"{path}: ")


def test_profile_not_a_mapping_or_not_yaml(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list.yaml: expected a mapping of profile fields"):
        _kfp.Profile.load(str(tmp_path / "list.yaml"))
    (tmp_path / "broken.yaml").write_text("pipeline_root: [\n")
    with pytest.raises(ValueError, match=r"broken.yaml: not valid YAML"):
        _kfp.Profile.load(str(tmp_path / "broken.yaml"))


def test_profile_from_a_path_compiles_with_an_empty_step_class(tmp_path):
    """A copied profile with `gpu:` left empty is valid: GPU steps get default placement."""
    path = write_profile(tmp_path, "laptop-cluster", base="cpu",
                         step_classes={"light": None, "cpu": {"cpu_limit": "2"}, "gpu": None})
    prof = _kfp.Profile.load(str(path))
    assert prof.name == "laptop-cluster" and prof.step_classes["gpu"] == {}
    out = _kfp.compile_pipeline("gan_homogenization", prof, tmp_path / "out")
    assert out.name == "gan_homogenization.laptop-cluster.yaml"
    rows = _kfp.placement(out)
    assert {r["cpu_limit"] for r in rows if r["step_class"] == "cpu"} == {"2"}
    assert not any(r["accelerator"] or r["cpu_limit"] for r in rows if r["step_class"] == "gpu")


def test_unquoted_boolean_node_selector_is_a_lowercase_label(tmp_path):
    gpu = yaml.safe_load((_kfp.PROFILES / "gpu.yaml").read_text())["step_classes"]
    path = tmp_path / "bool.yaml"
    path.write_text(yaml.safe_dump({"pipeline_root": "s3://b/root", "step_classes": {
        **gpu, "gpu": {**gpu["gpu"], "node_selector": {"nvidia.com/gpu.present": True}}}}))
    out = _kfp.compile_pipeline("gan_homogenization", _kfp.Profile.load(str(path)), tmp_path)
    assert {r["node_selector"].get("nvidia.com/gpu.present") for r in _kfp.placement(out)} == {"true", None}


def test_overrides_parse_nested_and_lists():
    got = _kfp.parse_overrides(["n_ve=8,generator.cells=48", "generator.axis_ratio=[2,1,1]"])
    assert got == {"n_ve": 8, "generator": {"cells": 48, "axis_ratio": [2, 1, 1]}}
    merged = _kfp.merge({"n_ve": 2, "generator": {"cells": 32, "lattice": "cF"}}, got)
    assert merged["generator"] == {"cells": 48, "lattice": "cF", "axis_ratio": [2, 1, 1]}
    with pytest.raises(ValueError, match="expected key=value"):
        _kfp.parse_overrides(["n_ve"])


@pytest.mark.parametrize("name", pipelines.PIPELINES)
def test_presets_only_use_pipeline_parameters(name):
    func = pipelines.load(name).build(_kfp.LOCAL)
    for preset in _kfp.list_presets(name):
        _kfp.check_arguments(func, _kfp.load_preset(name, preset), f"{name}/{preset}")
    assert {"small", "paper"} <= set(_kfp.list_presets(name))


def test_gan_pipeline_gpu_steps_from_profile(tmp_path):
    path = _kfp.compile_pipeline("gan_homogenization", _kfp.Profile.load("gpu"), tmp_path)
    spec, platform = parse_ir(path)
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    gpu = {name for name, ex in executors.items() if "accelerator" in ex["container"].get("resources", {})}
    assert gpu == {"exec-train-wgan", "exec-sample-wgan", "exec-homogenize-volumes",
                   "exec-homogenize-volumes-2"}
    for name in executors:
        has_selector = "nodeSelector" in platform.get(name, {})
        assert has_selector == (name in gpu), name
