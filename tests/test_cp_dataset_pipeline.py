"""The cp_dataset pipeline: compiled IR and placement per profile, and a tiny run on the KFP local runner."""

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from micropipe import cli, store
from micropipe.datasets import cp_results
from micropipe.datasets import ve as dataset
from pipelines import _kfp

try:  # `python -m pytest` from the repo root, or the `pytest` script with tests/ on sys.path
    from tests.test_pipelines import dataset_uri, parse_ir, run_dirs
except ImportError:
    from test_pipelines import dataset_uri, parse_ir, run_dirs

TINY = ("n_ve=2,shard_size=1,report_max_ves=2,generator.cells=4,generator.spacing=1.0,generator.esd_mean=2.5,"
        "loadcase.strain=0.001,loadcase.increments=2,batch_size=1")
"""2 VEs of 4^3 in 2 shards; 2 increments of seed 003's size (5e-4) to 0.1 % strain."""


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_compiles_with_cp_runs_on_the_gpu_class(tmp_path, profile):
    path = _kfp.compile_pipeline("cp_dataset", _kfp.Profile.load(profile), tmp_path)
    spec, platform = parse_ir(path)
    assert spec.pipeline_info.name == "cp-dataset"
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    assert {"exec-cp-runs", "exec-gather-cp-results", "exec-cp-report", "exec-generate-ve-shard",
            "exec-gather-ve-dataset", "exec-ve-report"} <= set(executors)
    assert executors["exec-cp-runs"]["container"]["image"].startswith("ghcr.io/micropipe/micropipe-torch")
    gpu = {name for name, ex in executors.items() if "accelerator" in ex["container"].get("resources", {})}
    selectors = {name for name, ex in platform.items() if "nodeSelector" in ex}
    if profile == "gpu":
        assert gpu == selectors == {"exec-cp-runs"}
        assert platform["exec-cp-runs"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert not gpu and not selectors
    # the VE and CP fan-outs: ParallelFors with the profile's parallelism, in sub-DAGs ve-generation and cp-results
    loops = [task for comp in spec.components.values() for task in comp.dag.tasks.values()
             if task.HasField("iterator_policy")]
    assert [t.iterator_policy.parallelism_limit for t in loops] == [_kfp.Profile.load(profile).parallelism] * 2


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    rc = cli.main(["run", "cp_dataset", "--set", TINY, "--runs-dir", str(runs)])
    assert rc == 0
    (run_dir,) = run_dirs(runs / "cp_dataset")
    return run_dir


def test_run_gathers_results_and_reports(local_run):
    record = json.loads((local_run / "run.json").read_text())
    assert record["status"] == "succeeded"
    uri = dataset_uri(local_run)
    df = cp_results.read_results(store.join(uri, cp_results.GATHERED))
    assert df["ve_id"].tolist() == [dataset.ve_id(0), dataset.ve_id(1)]
    assert all(len(s) == 3 for s in df["strain"]) and np.allclose(df["strain"].iloc[0], [0, 5e-4, 1e-3])
    assert df["converged"].all() and (df["backend"] == "builtin").all()
    assert all((np.diff(s) > 0).all() for s in df["stress"]), "tension: sigma_zz rises"
    assert cp_results.load_manifest(uri)["n_ve"] == 2
    for index in (0, 1):
        assert cp_results.shard_complete(store.join(uri, cp_results.shard_results_name(index)), 1)
    results = Path(record["outputs"]["results"])
    assert cp_results.read_results(results)["ve_id"].tolist() == df["ve_id"].tolist()
    html = Path(record["outputs"]["report"]).read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Stress-strain curves" in html
    assert Path(record["outputs"]["ve_report"]).read_text().count("data:image/png;base64,") >= 5
    metrics = record["metrics"]
    assert metrics["n_ves"] == 2 and metrics["n_converged"] == 2
    assert "sigma_zz_MPa_at_0p2pct_mean" not in metrics, "the run stops at 0.1 %"
    assert all(1e6 < s[-1] < 2e7 for s in df["stress"]), "Cu at 0.1 %: several MPa"


def test_gather_checks_the_collected_results_uris(local_run, tmp_path):
    """The fan-in component takes the results URIs the cp_runs tasks returned: one per VE shard, each there."""
    from kfp.dsl import Dataset

    from components.gather_cp_results import gather_cp_results

    uri = dataset_uri(local_run)
    shards = [store.join(uri, cp_results.shard_results_name(i)) for i in (0, 1)]
    out = Dataset(uri=str(tmp_path / "results"))
    for wrong, match in ((shards[:1], r"returned 1 shard URI\(s\) for 2 shards: 1 missing \(.*shard-00001"),
                         ([shards[0], shards[0] + ".gone"], r"1 unexpected \(.*\.gone\)"),
                         ([shards[0], shards[0]], "1 repeated")):
        with pytest.raises(ValueError, match=match):
            gather_cp_results.python_func(dataset_uri=uri, shards=wrong, results=out)
    gather_cp_results.python_func(dataset_uri=uri, shards=shards, results=out)
    assert out.metadata["n_ve"] == 2 and cp_results.read_results(out.path)["ve_id"].tolist() == [
        dataset.ve_id(0), dataset.ve_id(1)]


def test_cp_runs_component_skips_complete_shards(local_run, caplog):
    from components.cp_runs import cp_runs as component

    uri = dataset_uri(local_run)
    out = Path(store.join(uri, cp_results.shard_results_name(1)))
    before = out.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="micropipe.studies.cp_dataset.runs"):
        got = component.python_func(dataset_uri=uri, shard_index=1, material="Cu",
                                    loadcase={"strain": 0.001, "increments": 2.0},
                                    numerics={}, backend="builtin", batch_size=1, device="", threads=1, cells=[])
    assert got == str(out) and out.stat().st_mtime_ns == before
    assert "skipping shard 1" in caplog.text


@pytest.mark.slow
def test_rerun_with_same_dataset_uri_computes_nothing_again(local_run, tmp_path):
    uri = Path(dataset_uri(local_run))
    shards = [Path(store.join(str(uri), cp_results.shard_results_name(i))) for i in (0, 1)]
    before = [p.stat().st_mtime_ns for p in shards]
    shards[0].unlink()
    rc = cli.main(["run", "cp_dataset", "--set", TINY, "--runs-dir", str(tmp_path), "--dataset-uri", str(uri)])
    assert rc == 0
    assert shards[1].stat().st_mtime_ns == before[1], "complete shard skipped"
    assert shards[0].exists(), "missing shard computed again"
    assert cp_results.load_manifest(str(uri))["n_ve"] == 2


def test_solver_threads_follow_the_profile():
    from pipelines.cp_dataset import solver_threads

    assert solver_threads(_kfp.Profile.load("gpu")) == 8  # the gpu step class's cpu_limit
    assert solver_threads(_kfp.Profile(name="local", parallelism=2)) >= 1
    assert solver_threads(_kfp.Profile(name="x", step_classes={"gpu": {"cpu_limit": "1500m"}})) == 1
    assert solver_threads(_kfp.Profile(name="bare")) == 0  # torch's default
