"""The cp_surrogate pipeline: compiled IR with GPU placement, and a tiny run (twice) on the KFP local runner."""

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from micropipe import cli, store
from micropipe.datasets import cp_results, fingerprints
from micropipe.datasets import ve_sets as sets
from pipelines import _kfp

try:  # `python -m pytest` from the repo root, or the `pytest` script with tests/ on sys.path
    from tests.test_pipelines import parse_ir, run_dirs
except ImportError:
    from test_pipelines import parse_ir, run_dirs

TINY = ("generator.cells=8,generator.spacing=1.0,generator.esd_mean=4.0,sets.n_train=16,sets.n_validation=8,"
        "sets.n_edge=4,sets.n_cp=4,sets.shard_size=8,vae.channels=[2,4,4,8],vae.hidden=16,vae.latent_dim=8,"
        "vae_train.epochs=2,vae_train.batch_size=4,cp_cells=[4,4,4],loadcase.strain=0.001,loadcase.increments=2,"
        "surrogate_train.epochs=20,n_reconstruct=2,batch_size=4")
"""8^3 VEs: 16 training, 8 validation, 4 per edge case, 4 CP runs on 4^3 to 0.1 % in 2 increments."""

GPU_STEPS = {"exec-train-vae", "exec-fingerprint", "exec-analyze-vae", "exec-fit-surrogate", "exec-cp-runs"}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_compiles_with_gpu_placement_from_the_profile(tmp_path, profile):
    path = _kfp.compile_pipeline("cp_surrogate", _kfp.Profile.load(profile), tmp_path)
    spec, platform = parse_ir(path)
    assert spec.pipeline_info.name == "cp-surrogate"
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    gpu = {name for name, ex in executors.items() if "accelerator" in ex["container"].get("resources", {})}
    selectors = {name for name, ex in platform.items() if "nodeSelector" in ex}
    for name in GPU_STEPS:
        assert executors[name]["container"]["image"].startswith("ghcr.io/micropipe/micropipe-torch"), name
    if profile == "gpu":
        assert gpu == selectors == GPU_STEPS
        assert all(platform[name]["tolerations"][0]["key"] == "nvidia.com/gpu" for name in GPU_STEPS)
    else:
        assert not gpu and not selectors
    dags = [spec.root.dag, *(comp.dag for comp in spec.components.values())]
    loops = [task for dag in dags for task in dag.tasks.values() if task.HasField("iterator_policy")]
    assert len(loops) == 2, "two fan-outs: VE set shards and CP shards"


REUSED = ("sets/train/shards/shard-00000.h5", "sets/cp/cp/shards/shard-00000.parquet", "vae/checkpoint.pt",
          "vae/best.pt")
"""Outputs of the first run that the second one must find complete and leave untouched."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny preset twice with one dataset URI: the second run reuses what the first computed."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    mtimes = []
    for _ in range(2):
        rc = cli.main(["run", "cp_surrogate", "--set", TINY, "--runs-dir", str(root), "--dataset-uri", str(data)])
        assert rc == 0
        mtimes.append({name: (data / name).stat().st_mtime_ns for name in REUSED})
    first, second = run_dirs(root / "cp_surrogate")
    return {"first": first, "second": second, "data": data, "mtimes": mtimes}


def test_run_reports_every_figure_and_metric(runs):
    record = json.loads((runs["first"] / "run.json").read_text())
    assert record["status"] == "succeeded"
    html = Path(record["outputs"]["report"]).read_text()
    for heading in ("VAE training", "Reconstructions", "Latent space", "Crystal plasticity", "Surrogate",
                    "Spectral clustering", "phi4", "baseline"):
        assert heading in html, heading
    assert html.count("data:image/png;base64,") >= 9  # losses, slices, PCA, t-SNE, CP, parity, curves, MAE, history
    assert "Deviation from seed 003: this VAE has an auxiliary linear head" in html  # the small preset's, stated
    metrics = record["metrics"]
    for key in ("phi4_train", "phi4_validation", "phi4_goss", "clustering_accuracy", "surrogate_mse_test",
                "surrogate_mae_MPa_test", "baseline_mae_MPa_test", "mae_ratio_test", "inference_s_per_ve"):
        assert np.isfinite(metrics[key]), key
    assert metrics["cp_runs"] == 4 and metrics["cp_converged"] == 4
    assert 0 <= metrics["phi4_train"] <= 1 and 0.25 <= metrics["clustering_accuracy"] <= 1


def test_run_writes_fingerprints_results_and_a_working_predictor(runs, capsys):
    record = json.loads((runs["first"] / "run.json").read_text())
    df, meta = fingerprints.read_fingerprints(record["outputs"]["fingerprints"])
    assert meta["lattice"] == "hP" and meta["dim"] == 8
    assert df.groupby("set").size().to_dict() == {"train": 16, "validation": 8, "cp": 4,
                                                  **{k: 4 for k in sets.EDGE_CASES}}
    results = cp_results.read_results(record["outputs"]["cp_results"])
    assert results["converged"].all() and all(len(s) == 3 for s in results["stress"])
    assert all(tuple(c) == (4, 4, 4) for c in results["cells"]), "CP solved on the resampled grid"
    shard = store.join(str(runs["data"]), "sets", "cp", "shards", "shard-00000.h5")
    assert cli.main(["predict", "--model", record["outputs"]["predictor"], shard, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["curves"]) == 4 and len(out["strain"]) == 3
    assert all(np.all(np.isfinite(c["sigma_zz"])) for c in out["curves"])


def test_rerun_reuses_finished_outputs(runs):
    second = json.loads((runs["second"] / "run.json").read_text())
    assert second["status"] == "succeeded"
    first = json.loads((runs["first"] / "run.json").read_text())
    assert second["metrics"]["cp_converged"] == first["metrics"]["cp_converged"]
    # the VAE run was finished: the second run loads it instead of training again, so the same fingerprints
    a, _ = fingerprints.read_fingerprints(first["outputs"]["fingerprints"])
    b, _ = fingerprints.read_fingerprints(second["outputs"]["fingerprints"])
    np.testing.assert_array_equal(np.stack(a["fingerprint"]), np.stack(b["fingerprint"]))
    assert runs["mtimes"][1] == runs["mtimes"][0], "VE shards, CP shards and the VAE run were not recomputed"
