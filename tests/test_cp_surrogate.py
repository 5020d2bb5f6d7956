"""Seed 003's study pieces: VE sets, phi4, clustering accuracy, fingerprints, the surrogate's data, the predictor."""

import json
import logging

import damask
import numpy as np
import pandas as pd
import pytest
import torch

from micropipe import cli
from micropipe.datasets import fingerprints, ve_tensors
from micropipe.datasets import ve as dataset
from micropipe.datasets import ve_sets as sets
from micropipe.metrics import latent
from micropipe.metrics.misorientation import mean_phi4, phi4
from micropipe.models import surrogate as surrogate_model
from micropipe.models.vae3d import VAE3D, VAEConfig, encode_mean
from micropipe.studies.cp_surrogate import fingerprints as fingerprints_step
from micropipe.studies.cp_surrogate import predictor
from micropipe.studies.cp_surrogate import surrogate as surrogate_step
from micropipe.train import surrogate as sur
from micropipe.train import vae
from micropipe.ve import io, stats
from micropipe.ve.generator import GeneratorConfig, generate

BASE = {"cells": 8, "spacing": 1.0, "esd_mean": 4.0, "esd_sigma": 0.1, "lattice": "hP"}
TINY_VAE = VAEConfig(depth=12, size=8, channels=(2, 2, 4, 4), stem_stride=1, hidden=8, latent_dim=4)


# ----------------------------------------------------------------------------------------------- phi4
@pytest.mark.parametrize("lattice", ["cF", "hP"])
def test_phi4_is_zero_for_symmetry_equivalent_orientations(lattice):
    rng = np.random.default_rng(0)
    euler = damask.Rotation.from_random(5, rng_seed=rng).as_Euler_angles()
    equivalents = damask.Orientation.from_Euler_angles(phi=euler, lattice=lattice).equivalent.as_Euler_angles()
    assert equivalents.shape[0] == (24 if lattice == "cF" else 12)
    values = phi4(np.broadcast_to(euler, equivalents.shape), equivalents, lattice)
    assert np.max(values) < 1e-9


def test_phi4_of_a_rotation_about_z_is_one_minus_cos_half_angle():
    omega = np.radians(10.0)
    value = phi4(np.array([0.3, 0.2, 0.1]), np.array([0.3 + omega, 0.2, 0.1]), "cF")
    assert value == pytest.approx(1.0 - np.cos(omega / 2), rel=1e-9)
    assert phi4(np.zeros(3), np.zeros(3), "hP") == pytest.approx(0.0, abs=1e-12)


def test_mean_phi4_of_network_tensors():
    ve = generate(GeneratorConfig.from_dict(BASE), 1)
    x = ve_tensors.ve_tensor(ve, "hP")[None]
    assert mean_phi4(x, x, "hP") == pytest.approx([0.0], abs=1e-9)
    noisy = np.clip(x + 0.01, 0, 1)  # 3.6 deg on phi1 and phi2, 1.8 deg on Phi: at most 9 deg in all
    assert 1e-4 < mean_phi4(x, noisy, "hP")[0] < 1 - np.cos(np.radians(9.0) / 2)
    with pytest.raises(ValueError, match=r"expected equal shapes \(n, 3, X, Y, Z\)"):
        mean_phi4(x, x[:, :2], "hP")


def test_clustering_accuracy_matches_clusters_to_classes():
    truth = [0, 0, 1, 1, 2, 2]
    assert latent.clustering_accuracy(truth, [2, 2, 0, 0, 1, 1]) == 1.0
    assert latent.clustering_accuracy(truth, [0, 1, 1, 1, 2, 2]) == pytest.approx(5 / 6)


# ----------------------------------------------------------------------------------------------- sets
def test_sets_config_edge_cases_follow_the_seed_ratios():
    config = sets.SetsConfig.from_dict({"n_train": 4, "n_validation": 2, "n_edge": 2, "n_cp": 3, "shard_size": 2},
                                       BASE, seed=5)
    assert config.names == sets.SET_NAMES
    assert config.generator_of("large_grains").esd_mean == pytest.approx(4.0 * 12.24 / 5.78)
    assert config.generator_of("small_grains").esd_mean == pytest.approx(4.0 * 2.73 / 5.78)
    assert config.generator_of("elongated").axis_ratio == (2.0, 1.0, 1.0)
    goss = config.generator_of("goss")
    assert (goss.texture, goss.spread_deg, goss.texture_sampling, goss.lattice) == ("goss", 2.0, "euler", "hP")
    assert len({config.seed_of(n) for n in config.names}) == len(config.names)
    assert config.items()[:3] == ["train/0", "train/1", "validation/0"] and len(config.items()) == 2 + 1 + 7 + 2
    assert "large_grains" not in sets.SetsConfig.from_dict({"n_edge": 0}, BASE, 0).names


@pytest.mark.parametrize("bad, match", [
    ({"n_train": 0}, "field 'n_train' must be an integer >= 1"),
    ({"n_tran": 3}, r"unknown field\(s\) n_tran"),
])
def test_sets_config_rejects_bad_fields(bad, match):
    with pytest.raises(ValueError, match=match):
        sets.SetsConfig.from_dict(bad, BASE, 0)
    with pytest.raises(ValueError, match="generator.texture' must be 'random'"):
        sets.SetsConfig.from_dict({}, {**BASE, "texture": "goss"}, 0)


def test_set_shards_are_not_generated_twice(tmp_path, caplog):
    config = sets.SetsConfig.from_dict({"n_train": 2, "n_validation": 1, "n_edge": 0, "n_cp": 0, "shard_size": 2},
                                       BASE, seed=1)
    uris = [sets.write_set_shard(str(tmp_path), item, config) for item in config.items()]
    mtime = (tmp_path / "sets/train/shards/shard-00000.h5").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert sets.write_set_shard(str(tmp_path), "train/0", config) == uris[0]
    assert "not generated again" in caplog.text
    assert (tmp_path / "sets/train/shards/shard-00000.h5").stat().st_mtime_ns == mtime
    index = sets.gather(str(tmp_path), config)
    assert index["lattice"] == "hP" and {k: v["n_ve"] for k, v in index["sets"].items()} == {"train": 2,
                                                                                            "validation": 1}
    with pytest.raises(ValueError, match="expected '<set>/<shard index>'"):
        sets.write_set_shard(str(tmp_path), "cp/0", config)


def test_gather_ve_sets_checks_the_collected_shard_uris(tmp_path):
    """The fan-in component takes the URIs its loop tasks returned; each set must have got all of its shards."""
    from kfp.dsl import Dataset

    from components.gather_ve_sets import gather_ve_sets

    spec = {"n_train": 3, "n_validation": 1, "n_edge": 0, "n_cp": 1, "shard_size": 2}
    config = sets.SetsConfig.from_dict(spec, BASE, seed=1)
    uris = [sets.write_set_shard(str(tmp_path), item, config) for item in config.items()]
    assert len(uris) == 4

    def gather(shards):
        return gather_ve_sets.python_func(dataset_uri=str(tmp_path), sets=spec, generator=BASE, seed=1,
                                          backend="builtin", shards=shards, index=Dataset(uri=str(tmp_path / "ix")))

    for wrong in (uris[1:], uris + uris[:1], [u.replace("/train/", "/validation/") for u in uris]):
        with pytest.raises(ValueError, match="shards: the fan-out returned"):
            gather(wrong)
    assert gather(uris[::-1]).cp_uri == sets.set_uri(str(tmp_path), "cp")


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    config = sets.SetsConfig.from_dict({"n_train": 4, "n_validation": 2, "n_edge": 0, "n_cp": 3, "shard_size": 4},
                                       BASE, seed=2)
    for item in config.items():
        sets.write_set_shard(str(root), item, config)
    sets.gather(str(root), config)
    return str(root)


def test_ve_set_tensors_are_the_network_inputs(family):
    data = ve_tensors.VESetTensors(sets.set_uri(family, "train"), "hP")
    manifest = dataset.load_manifest(sets.set_uri(family, "train"))
    (ve_id, ve), *_ = dataset.iter_ves(manifest)
    assert data.ids[0] == ve_id and len(data) == 4
    np.testing.assert_array_equal(data[0], ve_tensors.ve_tensor(ve, "hP"))
    assert data[0].shape == (3, 8, 8, 8) and data[0].dtype == np.float32 and 0 <= data[0].min() <= data[0].max() <= 1
    with pytest.raises(ValueError, match="field 'lattice' is 'hP', but the VAE was trained on the 'cF' "
                                         "fundamental zone"):
        ve_tensors.VESetTensors(sets.set_uri(family, "train"), "cF")


# ---------------------------------------------------------------------------------- VAE and fingerprints
@pytest.fixture(scope="module")
def vae_run(family, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("vae")
    x = ve_tensors.VESetTensors(sets.set_uri(family, "train"), "hP")
    return vae.train(x, None, out, TINY_VAE, vae.TrainConfig(epochs=1, batch_size=2), data={"lattice": "hP"})


def test_fingerprints_round_trip_with_provenance(family, vae_run, tmp_path):
    uris = {k: sets.set_uri(family, k) for k in ("train", "cp")}
    df = fingerprints_step.fingerprint_sets(VAE3D.from_checkpoint(vae_run.best_path), "hP", uris)
    assert df["set"].tolist() == ["train"] * 4 + ["cp"] * 3 and len(df["fingerprint"].iloc[0]) == 4
    path = tmp_path / "f.parquet"
    written = fingerprints.write_fingerprints(df, path, vae_path=vae_run.best_path, lattice="hP")
    back, meta = fingerprints.read_fingerprints(path)
    assert written == meta
    assert meta["dim"] == 4 and meta["lattice"] == "hP" and len(meta["provenance"]["params"]["vae_sha256"]) == 64
    np.testing.assert_array_equal(np.stack(back["fingerprint"]), np.stack(df["fingerprint"]))
    ids, X = fingerprints.matrix(back, "cp")
    x = ve_tensors.VESetTensors(uris["cp"], "hP").array()
    np.testing.assert_allclose(X, encode_mean(vae_run.model, x), rtol=1e-5, atol=1e-6)
    _, T = fingerprints.matrix(back, "cp", "texture")
    x_cp = ve_tensors.VESetTensors(uris["cp"], "hP")
    np.testing.assert_allclose(T, stats.texture_descriptors(x_cp.grain_ids, x_cp.euler, "hP"), rtol=1e-6)
    assert meta["texture_descriptors"] == list(stats.TEXTURE_DESCRIPTORS)
    # files without descriptors (written before they existed) still read; the probe then has nothing to say
    old = tmp_path / "old.parquet"
    fingerprints.write_fingerprints(df.drop(columns="texture"), old, vae_path=vae_run.best_path, lattice="hP")
    old_df, old_meta = fingerprints.read_fingerprints(old)
    assert "texture" not in old_df and "texture_descriptors" not in old_meta
    assert latent.fingerprint_probe(old_df) == {}
    with pytest.raises(ValueError, match="no rows of set 'validation'"):
        fingerprints.matrix(back, "validation")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="bad.parquet: not a readable Parquet file"):
        fingerprints.read_fingerprints(tmp_path / "bad.parquet")


def test_fingerprint_step_covers_every_set_of_a_family_or_one_dataset(family, vae_run, tmp_path):
    df, meta = fingerprints_step.fingerprint(vae_run.best_path, family, tmp_path / "all.parquet")
    assert sorted(set(df["set"])) == sorted(sets.load_index(family)["sets"]) and meta["lattice"] == "hP"
    back, _ = fingerprints.read_fingerprints(tmp_path / "all.parquet")
    assert back["ve_id"].tolist() == df["ve_id"].tolist()
    one, _ = fingerprints_step.fingerprint(vae_run.best_path, sets.set_uri(family, "cp"), tmp_path / "cp.parquet")
    assert set(one["set"]) == {"dataset"} and len(one) == 3
    np.testing.assert_array_equal(np.stack(one["fingerprint"]), np.stack(df[df["set"] == "cp"]["fingerprint"]))


def _euler_norm(*deg):
    return np.radians(np.asarray(deg, float)).reshape(-1, 3) / np.array([2 * np.pi, np.pi, 2 * np.pi])


@pytest.mark.parametrize(("lattice", "euler_deg", "cos2", "m_max"), [
    ("hP", (0, 0, 0), 1.0, 0.0),                       # c axis along z: no resolved shear on the basal plane
    ("hP", (0, 90, 0), 0.0, 0.0),                      # c axis normal to z: basal plane parallel to the load
    ("hP", (0, 45, 90), 0.5, 0.5),                     # basal plane at 45 deg, an <a> direction in the plane of z
    ("hP", (0, 45, 0), 0.5, np.sqrt(3.0) / 4.0),       # ... a <10-10> there instead: the <a> at 30 deg, 0.5 cos 30
    ("cF", (0, 0, 0), 1.0, 1.0 / np.sqrt(6.0)),        # cube orientation: 8 {111}<110> systems at 1/sqrt(6)
    ("cI", (0, 0, 0), 1.0, 1.0 / np.sqrt(6.0)),        # cube orientation: {110}<111> likewise
])
def test_texture_descriptors_closed_forms(lattice, euler_deg, cos2, m_max):
    T = stats.texture_descriptors(np.zeros((1, 2, 2, 2), int), _euler_norm(*euler_deg)[None], lattice)
    np.testing.assert_allclose(T[0], [*_euler_norm(*euler_deg)[0], cos2, m_max], atol=1e-6)


def test_texture_descriptors_are_volume_averages():
    ids = np.zeros((1, 4, 2, 2), int)
    ids[0, 0] = 1  # grain 1: a quarter of the voxels
    euler = np.concatenate([_euler_norm(0, 0, 0), _euler_norm(0, 45, 90)])[None]
    T = stats.texture_descriptors(ids, euler, "hP")
    np.testing.assert_allclose(T[0, 3:], [0.75 * 1.0 + 0.25 * 0.5, 0.25 * 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="lattice 'tI'"):
        stats.texture_descriptors(ids, euler, "tI")


def test_probe_and_texture_reference_recover_what_is_there():
    rng = np.random.default_rng(0)
    T = rng.uniform(size=(160, 5)).astype(np.float32)
    noise = rng.normal(size=(160, 6)).astype(np.float32)
    # fingerprint = descriptor 3 (cos2_Phi) linearly mixed into noise; descriptor 4 absent
    X = np.column_stack([noise, 2.0 * T[:, 3] + 0.1 * noise[:, 0], T[:, :3]])
    df = pd.DataFrame({"set": ["train"] * 128 + ["validation"] * 32, "ve_id": [f"v{i}" for i in range(160)],
                       "fingerprint": list(X), "texture": list(T)})
    probe = latent.fingerprint_probe(df)
    assert probe["n_fit"] == 128 and probe["n_score"] == 32
    assert probe["r2"]["cos2_Phi"] > 0.95 and probe["r2"]["mean_phi1"] > 0.95
    assert probe["r2"]["schmid_max_z"] < 0.2
    # stress curves linear in the Schmid descriptor: the reference recovers them (measured 1.3e-4 MPa against
    # the baseline's 16 MPa)
    Y = 1e6 * (50.0 + 100.0 * T[:, 4:5] * np.linspace(0.2, 1.0, 21))
    ref = surrogate_step.texture_reference(T[:128], Y[:128], T[128:], Y[128:])
    assert ref["descriptors"] == list(stats.TEXTURE_DESCRIPTORS) and len(ref["mae_MPa_per_increment"]) == 21
    assert ref["mae_MPa"] < 1e-3 * np.abs(Y[128:] - Y[:128].mean(0)).mean() / 1e6


def _results(ids, stress, converged):
    return pd.DataFrame({"ve_id": ids, "converged": converged, "reason": ["" if c else "increment 3: residual"
                                                                          for c in converged],
                         "stress": list(stress), "strain": [np.linspace(0, 0.01, len(s)) for s in stress]})


def test_surrogate_data_lists_excluded_runs_and_rejects_bad_tables():
    fp = pd.DataFrame({"set": "cp", "ve_id": ["a", "b", "c"], "fingerprint": list(np.eye(3, dtype=np.float32))})
    curves = [np.linspace(0, 1e8, 21)] * 3
    data = surrogate_step.surrogate_data(fp, _results(["a", "b", "c"], curves, [True, False, True]))
    assert data["ids"] == ["a", "c"] and data["Y"].shape == (2, 21) and data["X"].shape == (2, 3)
    assert data["excluded"] == [{"ve_id": "b", "reason": "not converged: increment 3: residual"}]
    with pytest.raises(ValueError, match="none of the 3 runs converged"):
        surrogate_step.surrogate_data(fp, _results(["a", "b", "c"], curves, [False] * 3))
    nan = [c.copy() for c in curves]
    nan[2][7] = np.nan
    with pytest.raises(ValueError, match=r"VE c is marked converged but its stress has NaN/inf at output\(s\) \[7\]"):
        surrogate_step.surrogate_data(fp, _results(["a", "b", "c"], nan, [True] * 3))
    with pytest.raises(ValueError, match=r"no fingerprint for converged CP run\(s\) \['d'\]"):
        surrogate_step.surrogate_data(fp, _results(["a", "d"], curves[:2], [True, True]))
    with pytest.raises(ValueError, match=r"converged curves have \[11, 21\] values"):
        surrogate_step.surrogate_data(fp, _results(["a", "c"], [curves[0], curves[1][:11]], [True, True]))


# ------------------------------------------------------------------------------------------ predictor
def _surrogate(tmp_path, in_dim):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(8, in_dim)), np.cumsum(rng.uniform(1e6, 5e6, size=(8, 21)), axis=1)
    result = sur.fit(X[:6], Y[:6], X[6:], Y[6:], sur.TrainConfig(epochs=3, lr=1e-3))
    return surrogate_model.save_surrogate(tmp_path / f"sur{in_dim}.pt", result, fingerprint_dim=in_dim, lattice="hP")


def test_predictor_chains_vae_and_surrogate_and_rejects_bad_input(family, vae_run, tmp_path, capsys):
    sur_path = _surrogate(tmp_path, 4)
    strain = np.linspace(0, 0.01, 21)
    path = predictor.save_predictor(tmp_path / "predictor.pt", vae_run.best_path, sur_path, strain=strain)
    loaded = predictor.load_predictor(path)
    manifest = dataset.load_manifest(sets.set_uri(family, "cp"))
    ves = [ve for _, ve in dataset.iter_ves(manifest)]
    model, scaler, _ = surrogate_model.load_surrogate(sur_path)
    expected = surrogate_model.predict(model, scaler, encode_mean(vae_run.model, np.stack([ve_tensors.ve_tensor(v, "hP")
                                                                                   for v in ves])))
    np.testing.assert_allclose(loaded.predict(ves), expected, rtol=1e-5)

    ve_file = io.save_npz(tmp_path / "ve.npz", ves[0])
    assert cli.main(["predict", "--model", str(path), str(ve_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["unit"] == "Pa" and np.allclose(out["strain"], strain)
    np.testing.assert_allclose(out["curves"][0]["sigma_zz"], expected[0], rtol=1e-5)
    assert cli.main(["predict", "--model", str(path), str(ve_file)]) == 0
    assert "predicted sigma_zz (MPa)" in capsys.readouterr().out

    with pytest.raises(ValueError, match="takes fingerprints of dimension 5, but the VAE .* dimension 4"):
        predictor.save_predictor(tmp_path / "p2.pt", vae_run.best_path, _surrogate(tmp_path, 5), strain=strain)
    cubic = generate(GeneratorConfig.from_dict({**BASE, "lattice": "cF"}), 3)
    with pytest.raises(ValueError, match="VE x: field 'lattice' is 'cF', but the VAE was trained on the 'hP'"):
        loaded.predict([cubic], ["VE x"])
    big = generate(GeneratorConfig.from_dict({**BASE, "cells": 16}), 3)
    with pytest.raises(ValueError, match=r"cells \(16, 16, 16\), but the VAE takes \(8, 8, 8\)"):
        loaded.predict([big])
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert cli.main(["predict", "--model", str(vae_run.best_path), str(ve_file)]) == 2
    assert "not a micropipe.predictor/1 file" in capsys.readouterr().err
