"""Every pipeline compiles with every profile; placement comes from the profile; YAML parses back."""

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import dsl
from kfp.pipeline_spec import pipeline_spec_pb2

import pipelines
from components import component
from pipelines import _kfp

PROFILES = sorted(p.stem for p in _kfp.PROFILES.glob("*.yaml"))


def run_dirs(parent: Path) -> list[Path]:
    """The run directories `micropipe run` made under ``runs/<pipeline>/`` (not its ``data/``), oldest first."""
    return sorted(p for p in parent.iterdir() if p.name != "data")


def dataset_uri(run_dir: Path) -> str:
    """The dataset URI a `micropipe run` used (recorded in its run.json)."""
    import json

    return json.loads((run_dir / "run.json").read_text())["params"]["arguments"]["dataset_uri"]


def parse_ir(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, dict]:
    """Load compiled YAML back through kfp's pipeline-spec protobuf (strict: unknown fields fail)."""
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = {}
    if len(docs) > 1:
        json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
        platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return spec, platform


def test_profiles_cover_cpu_and_gpu():
    assert {"cpu", "gpu"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", pipelines.PIPELINES)
def test_every_pipeline_compiles(tmp_path, name, profile):
    path = _kfp.compile_pipeline(name, _kfp.Profile.load(profile), tmp_path)
    spec, platform = parse_ir(path)
    assert spec.pipeline_info.name == pipelines.load(name).NAME
    assert spec.deployment_spec
    text = path.read_text()
    assert "pip install" not in text, "components must not pip-install at run time"
    # Storage credentials are referenced by secret name, never inlined.
    assert "AWS_SECRET_ACCESS_KEY" in text
    for executor in platform.values():
        for ref in executor.get("secretAsEnv", []):
            assert ref["secretName"] == _kfp.Profile.load(profile).storage_secret["name"]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left"


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
    bad = tmp_path / "bad.yaml"
    bad.write_text("step_classes:\n  gpu:\n    accelerators: 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: step_classes.gpu has unknown key\(s\) accelerators"):
        _kfp.Profile.load(str(bad))


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
