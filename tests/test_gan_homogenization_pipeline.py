"""gan_homogenization end to end on the KFP local runner (tiny sizes), including resume of training."""

import json

import numpy as np
import pytest

from micropipe import cli
from micropipe.datasets import volumes
from micropipe.studies.gan_homogenization import steps as gan_steps
from micropipe.train.wgan import read_loss_log

TINY = ("n_train=8,size=16,radius=2.0,model_overrides={generator: {out_size: 16}, discriminator: {in_size: 16}},"
        "n_samples=4,n_homogenize=2")


def _run(runs, dataset_uri, iterations):
    sets = TINY + f",train_config={{iterations: {iterations}, checkpoint_every: 1, log_every: 1}}"
    assert cli.main(["run", "gan_homogenization", "--set", sets, "--runs-dir", str(runs),
                     "--dataset-uri", str(dataset_uri)]) == 0
    return json.loads(sorted((runs / "gan_homogenization").glob("*/run.json"))[-1].read_text())


def test_run_reports_errors_and_resumes_training(tmp_path):
    ckpt = tmp_path / "checkpoints"
    first = _run(tmp_path / "runs1", ckpt, iterations=2)
    assert first["status"] == "succeeded"
    html = open(first["outputs"]["report"]).read()
    for heading in ("Errors, eq. (34)", "2-point correlation", "Mid-plane slices", "C11", "Training"):
        assert heading in html
    assert html.count("data:image/png;base64,") >= 4
    for name in ("E_p1", "E_p2", "E_C11", "E_p1_floor", "E_p2_floor", "E_C11_floor"):
        assert np.isfinite(first["metrics"][name])
    # Rerun with the same checkpoint location and more iterations: training continues from step 2.
    second = _run(tmp_path / "runs2", ckpt, iterations=3)
    log = read_loss_log(ckpt / "loss_log.csv")
    assert [row["step"] for row in log] == [1, 2, 3]
    assert second["metrics"]["E_p1_floor"] == pytest.approx(first["metrics"]["E_p1_floor"])


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="source: unknown data source 'cubes'"):
        gan_steps.make_volumes("cubes", 2, size=16, seed=0)
    with pytest.raises(ValueError, match="model: unknown preset 'huge'"):
        gan_steps.train(np.zeros((2, 16, 16, 16), np.uint8), model="huge", model_overrides={}, train_config={},
                 checkpoint_uri=str(tmp_path))
    with pytest.raises(ValueError, match="field 'volumes' missing"):
        np.savez(tmp_path / "x.npz", other=np.zeros(3))
        volumes.load_volumes(tmp_path / "x.npz")


def test_volume_stack_round_trip_and_integral_floats(tmp_path):
    from micropipe.params import integral_floats_to_int

    v, attrs = gan_steps.make_volumes("spheres", 3, size=16, seed=4, radius=2.0)
    volumes.save_volumes(tmp_path / "artifact", v, attrs)  # KFP artifact paths have no suffix
    back, attrs_back = volumes.load_volumes(tmp_path / "artifact")
    assert np.array_equal(back, v) and attrs_back["seed"] == 4
    assert integral_floats_to_int({"a": [16.0, 0.5], "b": {"c": 3.0}}) == {"a": [16, 0.5], "b": {"c": 3}}
