"""Stress-curve surrogate of seed 003: model, scaling, validation, fitting, checkpoints, scores and split."""

import sys

import numpy as np
import pytest
import torch

from micropipe.models.checkpoint import load_checkpoint
from micropipe.models.surrogate import (
    KIND,
    N_INCREMENTS,
    MinMaxScaler,
    Surrogate,
    SurrogateConfig,
    load_surrogate,
    predict,
    save_surrogate,
)
from micropipe.train.surrogate import FitResult, TrainConfig, bootstrap_ratio_interval, evaluate, fit, split

E_MG = 45e9  # Young's modulus of magnesium, Pa
STRAIN = np.linspace(0.0, 0.01, N_INCREMENTS)  # seed 003: 20 increments to 1 %


def _curves(X, seed=0):
    """Bilinear sigma_zz(eps), Pa: elastic ``E eps`` up to yield, then ``s0 + h (eps - eps_y)``.

    Yield stress and hardening depend nonlinearly on three projections of the fingerprint.
    """
    rng = np.random.default_rng(seed)
    a, b, c = rng.standard_normal((3, X.shape[1])) / np.sqrt(X.shape[1])
    s0 = 80e6 + 20e6 * np.tanh(X @ a) + 5e6 * (X @ b) ** 2 / 2  # 55-110 MPa: yield at increment 3-5
    h = 1e9 * (1 + 0.8 / (1 + np.exp(-2 * (X @ c))))
    eps_y = s0 / E_MG
    eps = STRAIN[None, :]
    return np.where(eps < eps_y[:, None], E_MG * eps, s0[:, None] + h[:, None] * (eps - eps_y[:, None]))


def _data(n, d=8, seed=0):
    X = np.random.default_rng(seed + 100).standard_normal((n, d))
    return X, _curves(X)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """A 21-output MLP gains nothing from intra-op threads; on a busy 2-core machine they cost 10-100x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = TrainConfig(epochs=300, batch_size=64, lr=1e-3, weight_decay=0.0, seed=0)


@pytest.fixture(scope="module")
def fitted():
    X, Y = _data(800)
    return fit(X[:500], Y[:500], X[500:600], Y[500:600], FAST, model_config=SurrogateConfig(8, hidden=128),
               device="cpu", progress=False), X[600:], Y[600:]


# ----------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("in_dim, hidden, batch", [(1, 1, 1), (8, 16, 5), (256, 512, 3)])
def test_shapes_and_output_range(in_dim, hidden, batch):
    model = Surrogate(SurrogateConfig(in_dim, hidden=hidden))
    y = model(1e3 * torch.randn(batch, in_dim))  # far outside the data: still inside [0, 1]
    assert y.shape == (batch, N_INCREMENTS)
    assert ((y >= 0) & (y <= 1)).all()
    assert model.n_params() == (in_dim + 1) * hidden + (hidden + 1) * N_INCREMENTS


def test_paper_architecture():
    m = Surrogate(SurrogateConfig(256))
    assert (m.hidden.in_features, m.hidden.out_features, m.out.out_features) == (256, 512, 21)
    assert isinstance(m.act, torch.nn.LeakyReLU)


@pytest.mark.parametrize("kw", [dict(in_dim=0), dict(in_dim=2.5), dict(in_dim=4, hidden=-1), dict(in_dim=True),
                                dict(in_dim=4, out_dim=0), dict(in_dim=4, negative_slope=-0.1),
                                dict(in_dim=4, negative_slope=float("nan"))])
def test_invalid_model_config(kw):
    with pytest.raises(ValueError, match="invalid"):
        SurrogateConfig(**kw)


def test_model_config_round_trip():
    c = SurrogateConfig(np.int64(16), hidden=32)
    assert type(c.in_dim) is int and SurrogateConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown"):
        SurrogateConfig.from_dict({**c.to_dict(), "depth": 2})


@pytest.mark.parametrize("kw", [dict(epochs=0), dict(batch_size=0), dict(lr=0.0), dict(lr=float("inf")),
                                dict(weight_decay=-1.0), dict(patience=0), dict(log_every=0), dict(seed=-1),
                                dict(epochs=1.5)])
def test_invalid_train_config(kw):
    with pytest.raises(ValueError, match="invalid"):
        TrainConfig(**kw)


def test_train_config_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.weight_decay, c.patience) == (10_000, 128, 1e-5, 1e-5, None)


# ----------------------------------------------------------------------------------------------- scaler


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scaler_round_trip(seed):
    Y = _curves(np.random.default_rng(seed).standard_normal((20, 4)), seed)
    s = MinMaxScaler.fit(Y)
    Ys = s.transform(Y)
    assert Ys.min() == 0 and Ys.max() == 1  # one global range: exactly [0, 1] on the fitted table
    np.testing.assert_allclose(s.inverse(Ys), Y, rtol=0, atol=1e-6)  # Pa
    np.testing.assert_allclose(s.transform(s.inverse(Ys)), Ys, rtol=0, atol=1e-15)
    assert (Ys[:, 0] == 0).all()  # the undeformed state: zero stress maps to lo


def test_scaler_rejects_bad_input():
    with pytest.raises(ValueError, match="lo < hi"):
        MinMaxScaler.fit(np.zeros((3, 21)))
    with pytest.raises(ValueError, match="lo < hi"):
        MinMaxScaler(2.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        MinMaxScaler(float("nan"), 1.0)
    with pytest.raises(ValueError, match=r"row 1, column 2"):
        MinMaxScaler.fit([[0.0, 1.0, 2.0], [0.0, 1.0, np.inf]])
    with pytest.raises(ValueError, match="non-finite"):
        MinMaxScaler(0.0, 1.0).inverse([0.5, np.nan])
    s = MinMaxScaler(np.float64(0.0), np.float32(1e8))
    assert type(s.lo) is float and MinMaxScaler.from_dict(s.to_dict()) == s


def test_scaler_fitted_on_training_split_only():
    X, Y = _data(40)
    Y_val = Y[30:] * 2  # validation stresses beyond the training range must not move it
    r = fit(X[:30], Y[:30], X[30:], Y_val, TrainConfig(epochs=1), device="cpu", progress=False)
    assert (r.scaler.lo, r.scaler.hi) == (Y[:30].min(), Y[:30].max())
    assert r.scaler.hi < Y_val.max()
    np.testing.assert_allclose(r.train_mean_curve, Y[:30].mean(axis=0))


# ------------------------------------------------------------------------------------------ validation


def test_nan_in_stress_table_names_row_and_column():
    X, Y = _data(20)
    Y[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"Y_train .*row 3, column 7") as err:
        fit(X[:15], Y[:15], X[15:], Y[15:], TrainConfig(epochs=1), device="cpu")
    assert "strain increment 7" in str(err.value)
    Y[3, 7] = 0.0
    X[17, 2] = -np.inf
    with pytest.raises(ValueError, match=r"X_val .*row 2, column 2"):  # row within X_val
        fit(X[:15], Y[:15], X[15:], Y[15:], TrainConfig(epochs=1), device="cpu")


@pytest.mark.parametrize("case, match", [
    ("rows", "X_train has 10 rows but Y_train has 9"),
    ("val_columns", "X_val has 5 columns; expected 8"),
    ("y_columns", "Y_val has 20 columns; expected 21"),
    ("empty", "empty training set"),
    ("empty_val", "empty validation set"),
    ("1d", "expected a 2D array"),
    ("ragged", "equal-length rows"),
    ("model_config", "in_dim 4"),
])
def test_fit_rejects_inconsistent_input(case, match):
    X, Y = _data(15)
    Xt, Yt, Xv, Yv, mc = X[:10], Y[:10], X[10:], Y[10:], None
    if case == "rows":
        Yt = Yt[:9]
    elif case == "val_columns":
        Xv = Xv[:, :5]
    elif case == "y_columns":
        Yv = Yv[:, :20]
    elif case == "empty":
        Xt, Yt = Xt[:0], Yt[:0]
    elif case == "empty_val":
        Xv, Yv = Xv[:0], Yv[:0]
    elif case == "1d":
        Yt = Yt[:, 0]
    elif case == "ragged":  # a run that stopped early, left in the table
        Yt = [list(y) for y in Yt]
        Yt[4] = Yt[4][:12]
    elif case == "model_config":
        mc = SurrogateConfig(4)
    with pytest.raises(ValueError, match=match):
        fit(Xt, Yt, Xv, Yv, TrainConfig(epochs=1), model_config=mc, device="cpu")


def test_fingerprint_dimension_mismatch(fitted):
    r, X, _ = fitted
    with pytest.raises(ValueError, match="fingerprint dimension 5 does not match the surrogate's input dimension 8"):
        predict(r.model, r.scaler, X[:, :5])
    with pytest.raises(ValueError, match=r"^vae_run_7/fingerprints.npy: fingerprint dimension 9"):
        predict(r.model, r.scaler, np.c_[X, X[:, :1]], source="vae_run_7/fingerprints.npy")


# ---------------------------------------------------------------------------------------------- fitting


def test_fit_beats_training_mean_on_held_out_data(fitted):
    r, X_test, Y_test = fitted
    assert isinstance(r, FitResult) and r.fingerprint_dim == 8 and (r.n_train, r.n_val) == (500, 100)
    assert len(r.history) == FAST.epochs and r.history[-1]["epoch"] == FAST.epochs
    assert r.best_mse_val == min(h["mse_val"] for h in r.history)
    assert r.history[-1]["mse_train"] < 0.05 * r.history[0]["mse_train"]
    m = evaluate(r.model, r.scaler, X_test, Y_test, baseline_curve=r.train_mean_curve)
    assert m["skill"] > 0.9, m
    assert m["mae_ratio"] > 3, m
    assert m["mae_MPa"] < 2.5, m  # curves span about 0-120 MPa
    # Elastic increments are the same for every VE: no spread for the baseline to miss.
    assert m["baseline_mae_MPa_per_increment"][0] == 0
    pred = predict(r.model, r.scaler, X_test)
    assert pred.shape == Y_test.shape and pred.dtype == np.float64
    np.testing.assert_allclose(pred, predict(r.model, r.scaler, X_test, batch_size=7), rtol=1e-5)  # float32


def test_training_is_reproducible_on_cpu():
    X, Y = _data(120)
    cfg = TrainConfig(epochs=15, batch_size=32, lr=1e-3, seed=3)
    a, b = (fit(X[:100], Y[:100], X[100:], Y[100:], cfg, model_config=SurrogateConfig(8, hidden=32),
                device="cpu", progress=False) for _ in range(2))
    assert a.history == b.history and a.best_epoch == b.best_epoch
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    c = fit(X[:100], Y[:100], X[100:], Y[100:], TrainConfig(epochs=15, batch_size=32, lr=1e-3, seed=4),
            model_config=SurrogateConfig(8, hidden=32), device="cpu", progress=False)
    assert c.history != a.history


def test_early_stopping_keeps_best_weights():
    X, Y = _data(60)
    # A learning rate this large makes the validation MSE stop improving within a few epochs.
    r = fit(X[:40], Y[:40], X[40:], Y[40:], TrainConfig(epochs=500, lr=0.3, batch_size=8, patience=5),
            model_config=SurrogateConfig(8, hidden=16), device="cpu", progress=False)
    assert r.stopped_early and len(r.history) == r.best_epoch + 5
    m = evaluate(r.model, r.scaler, X[40:], Y[40:], baseline_curve=r.train_mean_curve, timing_repeats=1)
    assert m["mse"] == pytest.approx(r.best_mse_val, rel=1e-5)


# ------------------------------------------------------------------------------------------ checkpoints


def test_save_load_round_trip(fitted, tmp_path, monkeypatch):
    r, X, _ = fitted
    path = save_surrogate(tmp_path / "surrogate.pt", r, fingerprint_dim=8, lattice="hP",
                          extra={"val_ids": np.arange(3), "vae": "run-1"})
    model, scaler, meta = load_surrogate(path, device="cpu")
    assert not model.training and scaler == r.scaler and model.config == r.model_config
    np.testing.assert_array_equal(predict(model, scaler, X), predict(r.model, r.scaler, X))
    assert meta["fingerprint_dim"] == 8 and meta["lattice"] == "hP" and meta["best_epoch"] == r.best_epoch
    assert meta["history"] == r.history and TrainConfig.from_dict(meta["train"]) == r.train_config
    assert meta["extra"] == {"val_ids": [0, 1, 2], "vae": "run-1"}
    np.testing.assert_array_equal(meta["train_mean_curve"], r.train_mean_curve)
    assert meta["provenance"]["seed"] == FAST.seed

    # Rebuild with the model module and the checkpoint reader alone: the training module cannot be imported.
    monkeypatch.setitem(sys.modules, "micropipe.train.surrogate", None)
    ckpt = load_checkpoint(path, kind=KIND)
    rebuilt = Surrogate(SurrogateConfig.from_dict(ckpt["config"]["model"]))
    rebuilt.load_state_dict(ckpt["model"])
    with torch.no_grad():
        x = torch.from_numpy(X[:10].astype(np.float32))
        assert torch.equal(rebuilt.eval()(x), r.model(x))
    assert ckpt["config"]["scaler"] == {"lo": r.scaler.lo, "hi": r.scaler.hi}


def test_save_model_and_scaler(tmp_path):
    model, scaler = Surrogate(SurrogateConfig(4, hidden=8)), MinMaxScaler(0.0, 2e8)
    path = save_surrogate(tmp_path / "s.pt", (model, scaler))
    loaded, s, meta = load_surrogate(path, device="cpu")
    assert s == scaler and meta["train"] is None and meta["lattice"] is None and meta["train_mean_curve"] is None
    x = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_array_equal(predict(loaded, s, x), predict(model, scaler, x))
    with pytest.raises(ValueError, match="fingerprint_dim 5 does not match"):
        save_surrogate(tmp_path / "t.pt", (model, scaler), fingerprint_dim=5)
    with pytest.raises(ValueError, match="invalid lattice"):
        save_surrogate(tmp_path / "t.pt", (model, scaler), lattice="hexagonal")
    with pytest.raises(ValueError, match="cannot store a object"):
        save_surrogate(tmp_path / "t.pt", (model, scaler), extra={"x": object()})


# ------------------------------------------------------------------------------------------------ scores


def test_evaluate_by_hand():
    """Constant prediction 50 MPa (sigmoid(0) of a zero output layer, range 0-100 MPa), 2 VEs x 3 increments."""
    model = Surrogate(SurrogateConfig(1, hidden=2, out_dim=3))
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    scaler = MinMaxScaler(0.0, 100e6)
    Y = np.array([[0.0, 50.0, 100.0], [0.0, 60.0, 80.0]]) * 1e6
    m = evaluate(model, scaler, [[1.0], [-2.0]], Y, baseline_curve=[0.0, 55e6, 90e6], timing_repeats=2)
    # |y - y^| in MPa: [[50, 0, 50], [50, 10, 30]]
    np.testing.assert_allclose(m["mae_MPa_per_increment"], [50, 5, 40])
    np.testing.assert_allclose(m["abs_err_MPa_std_per_increment"], [0, 5, 10])
    assert m["mae_MPa"] == pytest.approx(95 / 3)
    assert m["mae_MPa_std"] == pytest.approx(np.std([50, 5, 40]))
    assert m["mae_MPa_std_over_ves"] == pytest.approx(np.std([100 / 3, 30]))
    assert m["mse"] == pytest.approx((0.25 + 0 + 0.25 + 0.25 + 0.01 + 0.09) / 6)
    # baseline errors [[0, 5, 10], [0, 5, 10]] MPa
    np.testing.assert_allclose(m["baseline_mae_MPa_per_increment"], [0, 5, 10])
    assert m["baseline_mae_MPa"] == pytest.approx(5)
    assert m["baseline_mse"] == pytest.approx((0.0025 + 0.01) * 2 / 6)
    assert m["mae_ratio"] == pytest.approx(5 / (95 / 3))
    assert m["skill"] == pytest.approx(1 - m["mse"] / m["baseline_mse"])
    assert m["n"] == 2 and 0 < m["inference_s_per_ve"] < 1 and 0 < m["latency_s_single_ve"] < 1
    # per-VE mean errors: baseline [5, 5], model [100/3, 30]; resamples of 2 VEs give ratios 0.15 to 0.1667
    lo, hi = m["mae_ratio_ci95"]
    assert 5 / (100 / 3) <= lo <= m["mae_ratio"] <= hi <= 5 / 30


def test_bootstrap_ratio_interval():
    rng = np.random.default_rng(3)
    base = rng.uniform(1, 10, 40)
    assert bootstrap_ratio_interval(base, base / 2) == pytest.approx([2.0, 2.0])  # the same ratio for every VE
    other = rng.uniform(1, 10, 40)
    lo, hi = bootstrap_ratio_interval(base, other)
    assert lo < base.mean() / other.mean() < hi and 0.5 < lo < hi < 2  # two draws of one distribution
    assert bootstrap_ratio_interval(base, base, seed=1) == pytest.approx([1.0, 1.0])
    assert bootstrap_ratio_interval([1.0, 2.0], [0.0, 0.0]) == [float("inf"), float("inf")]
    with pytest.raises(ValueError, match="paired 1D samples"):
        bootstrap_ratio_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="invalid level 1.5"):
        bootstrap_ratio_interval([1.0], [1.0], level=1.5)


def test_evaluate_rejects_bad_baseline(fitted):
    r, X, Y = fitted
    with pytest.raises(ValueError, match=r"baseline_curve has shape \(20,\)"):
        evaluate(r.model, r.scaler, X, Y, baseline_curve=r.train_mean_curve[:20])


# ------------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize("n, kw, n_train", [(48_401, dict(n_train=40_000), 40_000), (10, {}, 8),
                                            (2, {}, 1), (7, dict(train_fraction=0.5), 4), (5, dict(n_train=1), 1)])
def test_split_deterministic_and_disjoint(n, kw, n_train):
    ids = np.array([f"ve-{i:05d}" for i in range(n)])
    train, val = split(ids, **kw)
    assert len(train) == n_train and len(val) == n - n_train
    assert not set(train) & set(val) and set(train) | set(val) == set(ids)
    again = split(list(ids), **kw)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(val, again[1])
    if n > 10:
        assert not np.array_equal(train, split(ids, rng_seed=1, **kw)[0])
        assert list(train) == sorted(train)  # in the order of ids


@pytest.mark.parametrize("ids, kw, match", [([], {}, "at least 2"), (["a"], {}, "at least 2"),
                                            (["a", "b", "a"], {}, "duplicate"), (range(5), dict(n_train=5), "n_train"),
                                            (range(5), dict(train_fraction=1.0), "train_fraction")])
def test_split_rejects(ids, kw, match):
    with pytest.raises(ValueError, match=match):
        split(list(ids), **kw)
