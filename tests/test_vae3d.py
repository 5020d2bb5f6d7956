"""ResNet3D VAE of seed 003: architecture (Table 3), loss terms by hand, training loop, resumption, fingerprints."""

import logging
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from micropipe.models.checkpoint import load_checkpoint
from micropipe.models.vae3d import BLOCKS, PRESETS, VAE3D, ResidualBlock, VAEConfig, encode_mean, reconstruct
from micropipe.train.vae import (
    BEST,
    CHECKPOINT,
    LOG_FIELDS,
    LOSS_LOG,
    LOSS_TERMS,
    STOP_EPOCHS,
    STOP_PATIENCE,
    TrainConfig,
    read_loss_log,
    train,
    vae_loss,
)

TINY = VAEConfig(depth=12, size=8, channels=(2, 4, 4, 8), stem_stride=1, hidden=16, latent_dim=4)
LOSS_COLUMNS = [f for f in LOG_FIELDS if f not in ("wall_s", "ve_per_s")]  # timings differ between runs


def _volumes(n=8, size=8, seed=0):
    """Smooth VEs in [0, 1]: random per-channel planes ``a + b x + c y`` (learnable by a tiny VAE)."""
    rng = np.random.default_rng(seed)
    g = np.linspace(0, 1, size, dtype=np.float32)
    coef = rng.random((n, 3, 3), dtype=np.float32)
    v = coef[..., 0, None, None, None] * 0.5 + coef[..., 1, None, None, None] * g[:, None, None] * 0.25 \
        + coef[..., 2, None, None, None] * g[None, :, None] * 0.25
    return np.broadcast_to(v, (n, 3, size, size, size)).astype(np.float32)


class _LazyVEs(Dataset):
    """Items (x, index) built on access, as a reader of VE shards would."""

    def __init__(self, volumes):
        self.volumes = volumes

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, i):
        return self.volumes[i].copy(), i


def _losses(rows):
    return [{k: r[k] for k in LOSS_COLUMNS} for r in rows]


@pytest.mark.parametrize("depth", [12, 18, 34])
@pytest.mark.parametrize("stem_stride", [1, 2])
def test_shapes_blocks_and_range(depth, stem_stride):
    config = VAEConfig(depth=depth, size=16, channels=(2, 4, 4, 8), stem_stride=stem_stride, hidden=16, latent_dim=5)
    model = VAE3D(config)
    # Table 3, in the encoder and mirrored in the decoder
    assert config.blocks == BLOCKS[depth] == {12: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    assert [len(layer) for layer in model.encoder.layers] == list(config.blocks)
    assert [len(layer) for layer in model.decoder.layers] == list(config.blocks[::-1])
    assert all(isinstance(b, ResidualBlock) for layer in model.encoder.layers for b in layer)
    x = torch.rand(3, 3, 16, 16, 16)
    n = 16 // (8 * stem_stride)
    assert config.feature_size == n and model.encoder.features(x).shape == (3, 8, n, n, n)
    x_hat, mu, logvar = model(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and x_hat.dtype == torch.float32
    assert mu.shape == logvar.shape == (3, 5)
    assert 0 < x_hat.min() and x_hat.max() < 1  # sigmoid output


def test_paper_presets():
    assert PRESETS["resnet18"] == VAEConfig()
    c = VAEConfig()
    assert (c.depth, c.size, c.in_channels, c.hidden, c.latent_dim) == (18, 64, 3, 8192, 256)
    assert c.feature_shape == (512, 4, 4, 4)  # 64 / (2 stem x 2^3 downsamplings)
    with torch.device("meta"):  # no memory for 634 M parameters
        model = VAE3D(c)
    F = 512 * 4 ** 3
    dense = (F * 8192 + 8192) + 2 * (8192 * 256 + 256) + (256 * 8192 + 8192) + (8192 * F + F)  # enc, heads, dec
    assert sum(p.numel() for n, p in model.named_parameters() if "dense" in n or n.startswith("encoder.mu")
               or n.startswith("encoder.logvar")) == dense
    assert model.n_params() == pytest.approx(634e6, rel=0.01)
    small = VAE3D(PRESETS["small"])
    assert small(torch.rand(2, 3, 16, 16, 16))[0].shape == (2, 3, 16, 16, 16)


@pytest.mark.parametrize("field, value, message", [
    ("depth", 50, "invalid depth 50"),
    ("size", 12, "invalid size 12; expected a positive multiple of 8"),
    ("size", 24, "invalid size 24; expected a positive multiple of 16"),  # with stem_stride 2
    ("stem_stride", 3, "invalid stem_stride 3"),
    ("channels", (2, 4, 8), r"invalid channels \(2, 4, 8\)"),
    ("channels", (2, 4, 0, 8), r"invalid channels \(2, 4, 0, 8\)"),
    ("hidden", 0, "invalid hidden 0"),
    ("latent_dim", 2.5, "invalid latent_dim 2.5"),
    ("in_channels", -1, "invalid in_channels -1"),
    ("stats_head", "yes", "invalid stats_head 'yes'"),
])
def test_invalid_config(field, value, message):
    d = {**TINY.to_dict(), field: value}
    if field == "size" and value == 24:
        d["stem_stride"] = 2
    with pytest.raises(ValueError, match=message):
        VAEConfig.from_dict(d)


def test_config_dict_round_trip():
    d = TINY.to_dict()
    assert VAEConfig.from_dict({**d, "channels": list(d["channels"])}) == TINY  # as torch.load returns it
    with pytest.raises(ValueError, match=r"unknown VAEConfig field\(s\) \['width'\]"):
        VAEConfig.from_dict({**d, "width": 3})


def test_vae_loss_by_hand():
    # one 2x2x2 single-channel VE; numbers chosen so every term is easy to write down
    x = np.array([0, 1, 0.5, 0.25, 1, 0, 0.75, 0.5]).reshape(1, 1, 2, 2, 2)
    x_hat = np.array([0.5, 0.5, 0.5, 0.5, 0.9, 0.1, 0.8, 0.2]).reshape(1, 1, 2, 2, 2)
    bce = -np.mean(x * np.log(x_hat) + (1 - x) * np.log(1 - x_hat))
    diff = np.fft.fftn(x, axes=(-3, -2, -1)) - np.fft.fftn(x_hat, axes=(-3, -2, -1))
    spectral = np.mean(diff.real ** 2 + diff.imag ** 2)
    mu, logvar = np.array([[0.5, -1.0]]), np.array([[0.0, math.log(2.0)]])
    kl = -0.5 * ((1 + 0 - 0.25 - 1) + (1 + math.log(2) - 1 - 2))  # = (2.25 - ln 2) / 2
    t = lambda a: torch.tensor(a, dtype=torch.float32)
    out = vae_loss(t(x), t(x_hat), t(mu), t(logvar), alpha=0.9, kl_weight=0.01)
    assert set(out) == set(LOSS_TERMS) and all(v.dtype == torch.float32 and v.ndim == 0 for v in out.values())
    assert out["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert out["spectral"].item() == pytest.approx(spectral, rel=1e-6)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-6) == pytest.approx(0.7784264, rel=1e-6)
    assert out["total"].item() == pytest.approx(0.9 * bce + 0.1 * spectral + 0.01 * kl, rel=1e-6)
    default = vae_loss(t(x), t(x_hat), t(mu), t(logvar))
    assert default["total"].item() == pytest.approx(0.999 * bce + 0.001 * spectral + kl / 8, rel=1e-6)  # C N^3 = 8
    # KL is summed over the latent and averaged over the batch; zero at the prior
    assert vae_loss(t(x), t(x_hat), torch.zeros(1, 2), torch.zeros(1, 2))["kl"].item() == 0
    two = vae_loss(t(x).repeat(2, 1, 1, 1, 1), t(x_hat).repeat(2, 1, 1, 1, 1), t(mu).repeat(2, 1),
                   t(logvar).repeat(2, 1), alpha=0.9, kl_weight=0.01)
    for k in LOSS_TERMS:
        assert two[k].item() == pytest.approx(out[k].item(), rel=1e-6)


def test_stats_term_by_hand():
    x, x_hat = torch.full((2, 3, 2, 2, 2), 0.5), torch.full((2, 3, 2, 2, 2), 0.5)
    z = torch.zeros(2, 4)
    pred, target = torch.tensor([[1.0, 0, 0], [0, 0, 2]]), torch.tensor([[0.0, 0, 0], [0, 0, -1]])
    plain = vae_loss(x, x_hat, z, z)
    assert plain["stats"].item() == 0  # no head: seed 003's loss
    out = vae_loss(x, x_hat, z, z, stats=(pred, target), stats_weight=0.5)
    assert out["stats"].item() == pytest.approx((1 + 9) / 6)  # mean over B C values
    assert out["total"].item() == pytest.approx(plain["total"].item() + 0.5 * 10 / 6)
    # a head without weight only logs its error
    assert vae_loss(x, x_hat, z, z, stats=(pred, target))["total"].item() == plain["total"].item()
    with pytest.raises(ValueError, match="invalid stats_weight -1"):
        vae_loss(x, x_hat, z, z, stats=(pred, target), stats_weight=-1)


def test_stats_head_learns_the_channel_means(tmp_path):
    # planes a + b x + c y per channel: VE means differ, so the head has something to predict
    data = _volumes(16, seed=3)
    config = VAEConfig.from_dict({**TINY.to_dict(), "stats_head": True})
    with pytest.raises(ValueError, match="invalid stats_weight 1.0 for a model without the auxiliary head"):
        train(data[:12], data[12:], tmp_path / "no_head", TINY, TrainConfig(epochs=1, batch_size=4, stats_weight=1.0),
              device="cpu")
    result = train(data[:12], data[12:], tmp_path, config, TrainConfig(epochs=8, batch_size=4, lr=1e-2,
                                                                       stats_weight=10.0), device="cpu")
    means = data[:12].mean(axis=(2, 3, 4), dtype=np.float64)
    np.testing.assert_allclose(result.model.stats_mean.numpy(), means.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.model.stats_std.numpy(), means.std(0), rtol=1e-4)
    log = result.loss_log
    assert log[-1]["train_stats"] < 0.8 * log[0]["train_stats"]  # the head is trained
    # the buffers travel with the weights: a reloaded model predicts the same standardised means
    model = VAE3D.from_checkpoint(tmp_path / BEST, device="cpu")
    assert model.config.stats_head and torch.equal(model.stats_std, result.model.stats_std)
    x = torch.from_numpy(data[12:])
    with torch.no_grad():
        target = model.channel_stats(x)
        want = (data[12:].mean(axis=(2, 3, 4), dtype=np.float64) - means.mean(0)) / means.std(0)
        torch.testing.assert_close(target, torch.from_numpy(want.astype(np.float32)), rtol=1e-4, atol=1e-4)
        err = (model.predict_stats(model.encode(x)[0]) - target).square().mean().item()
    assert err == pytest.approx(log[result.best_epoch - 1]["val_stats"], rel=1e-4)
    # the seed's architecture has no head, and a checkpoint with one is another architecture
    assert not hasattr(VAE3D(TINY), "stats")
    with pytest.raises(ValueError, match=r"checkpoint from another architecture.*model\.stats_head"):
        train(data[:12], None, tmp_path, TINY, TrainConfig(epochs=9, batch_size=4, lr=1e-2), device="cpu")


@pytest.mark.parametrize("shape", [(2, 3, 5, 5, 5), (1, 3, 8, 8, 8), (2, 1, 4, 6, 3)])
def test_spectral_term_is_n3_times_mse(shape):
    # Parseval: mean over coefficients of |F(d)|^2 with an unnormalised forward FFT = N^3 mean(d^2)
    g = torch.Generator().manual_seed(1)
    x, x_hat = torch.rand(shape, generator=g), torch.rand(shape, generator=g).clamp(0.01, 0.99)
    z = torch.zeros(shape[0], 2)
    spectral = vae_loss(x, x_hat, z, z)["spectral"].item()
    assert spectral == pytest.approx(math.prod(shape[2:]) * torch.mean((x - x_hat) ** 2).item(), rel=1e-5)
    # in float32 even from bfloat16 reconstructions
    low = vae_loss(x, x_hat.bfloat16(), z, z)
    assert all(v.dtype == torch.float32 for v in low.values())


def test_reparameterization_and_reconstruction():
    model = VAE3D(TINY).eval()
    x = torch.from_numpy(_volumes(3))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        a = model(x, torch.Generator().manual_seed(5))
        b = model(x, torch.Generator().manual_seed(5))
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(model.reparameterize(mu, logvar, torch.Generator().manual_seed(5)),
                                   mu + torch.exp(0.5 * logvar) * eps, rtol=0, atol=0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], mu) and torch.equal(a[2], logvar)
        # no noise at sigma -> 0: the sample is the mean, and reconstruct() is decode(mu)
        torch.testing.assert_close(model.reparameterize(mu, torch.full_like(logvar, -200.0)), mu, rtol=0, atol=0)
        torch.testing.assert_close(model.reconstruct(x), model.decode(mu), rtol=0, atol=0)


def test_training_decreases_loss_and_writes_outputs(tmp_path):
    data = _volumes(16)
    cfg = TrainConfig(epochs=6, batch_size=4, lr=3e-3)
    result = train(data[:12], _LazyVEs(data[12:]), tmp_path, TINY, cfg, device="cpu", data={"lattice": "cF"})
    log = result.loss_log
    assert result.epoch == 6 and [r["epoch"] for r in log] == list(range(1, 7))
    assert result.stopped_reason == STOP_EPOCHS
    # the BCE is bounded below by the entropy of the non-binary targets (~0.65 here); the N^3 MSE is not
    assert log[-1]["train_total"] < log[0]["train_total"] - 0.05 and log[-1]["val_total"] < log[0]["val_total"]
    assert log[-1]["train_spectral"] < 0.6 * log[0]["train_spectral"]
    for r in log:
        assert all(math.isfinite(v) for v in r.values()) and r["ve_per_s"] > 0
        assert r["train_total"] > cfg.alpha * r["train_bce"]
    best = min(log, key=lambda r: r["val_total"])
    assert (result.best_epoch, result.best_val) == (best["epoch"], best["val_total"])
    assert read_loss_log(tmp_path / LOSS_LOG) == log  # floats round-trip through the CSV
    ckpt = load_checkpoint(tmp_path / CHECKPOINT, kind="vae3d", config={"model": TINY})
    assert {"model", "optimizer", "config", "step", "best_metric", "rng", "scaler", "loss_log",
            "provenance"} <= set(ckpt)
    assert ckpt["step"] == 6 and ckpt["config"]["train"]["lr"] == 3e-3
    best_ckpt = load_checkpoint(tmp_path / BEST)
    assert ckpt["data"] == best_ckpt["data"] == result.data == {"lattice": "cF", "n_train": 12, "n_val": 4}
    assert (result.checkpoint_path, result.best_path, result.loss_log_path) == (tmp_path / CHECKPOINT,
                                                                                 tmp_path / BEST, tmp_path / LOSS_LOG)
    assert best_ckpt["step"] == result.best_epoch and best_ckpt["best_metric"] == result.best_val
    for k, v in result.model.state_dict().items():  # the result holds the best weights
        assert torch.equal(v, best_ckpt["model"][k])


def test_early_stopping(tmp_path):
    # trained on all-zero VEs the decoder drifts to 0, so the validation loss on all-one VEs only grows
    zeros, ones = np.zeros((8, 3, 8, 8, 8), np.float32), np.ones((4, 3, 8, 8, 8), np.float32)
    result = train(zeros, ones, tmp_path, TINY, TrainConfig(epochs=20, batch_size=4, lr=1e-2, patience=2),
                   device="cpu")
    assert result.stopped_reason == STOP_PATIENCE
    assert result.best_epoch == 1 and result.epoch == 3 and len(result.loss_log) == 3
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3  # saved at the stop, not only every n epochs
    again = train(zeros, ones, tmp_path, TINY, TrainConfig(epochs=20, batch_size=4, lr=1e-2, patience=2),
                  device="cpu", progress=lambda row: pytest.fail("a stopped run must not train"))
    assert again.stopped_reason == STOP_PATIENCE and again.epoch == 3


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    data = _volumes(12)
    cfg = TrainConfig(epochs=4, batch_size=4, lr=3e-3, checkpoint_every=2)
    whole = train(data[:8], data[8:], tmp_path / "whole", TINY, cfg, device="cpu")

    def interrupt(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data[:8], data[8:], tmp_path / "cut", TINY, cfg, device="cpu", progress=interrupt)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 2
    resumed = train(data[:8], data[8:], tmp_path / "cut", TINY, cfg, device="cpu")
    assert resumed.epoch == 4 and (resumed.best_epoch, resumed.best_val) == (whole.best_epoch, whole.best_val)
    assert _losses(resumed.loss_log) == _losses(whole.loss_log)  # bit-identical on the CPU
    assert _losses(read_loss_log(tmp_path / "cut" / LOSS_LOG)) == _losses(whole.loss_log)
    for name in (CHECKPOINT, BEST):
        a, b = load_checkpoint(tmp_path / "cut" / name), load_checkpoint(tmp_path / "whole" / name)
        assert a["step"] == b["step"]
        for k in b["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)
    # a finished run does no work; more epochs continue its log
    again = train(data[:8], data[8:], tmp_path / "cut", TINY, cfg, device="cpu",
                  progress=lambda row: pytest.fail("a finished run must not train"))
    assert again.epoch == 4 and _losses(again.loss_log) == _losses(whole.loss_log)
    longer = train(data[:8], data[8:], tmp_path / "cut", TINY, TrainConfig(**{**cfg.to_dict(), "epochs": 5}),
                   device="cpu")
    assert longer.epoch == 5 and _losses(longer.loss_log[:4]) == _losses(whole.loss_log)


def test_checkpoint_from_another_architecture(tmp_path, caplog):
    data = _volumes(4)
    train(data, None, tmp_path, TINY, TrainConfig(epochs=1, batch_size=2), device="cpu")
    wider = VAEConfig.from_dict({**TINY.to_dict(), "channels": (2, 4, 8, 8)})
    with pytest.raises(ValueError, match=r"checkpoint from another architecture.*model\.channels"):
        train(data, None, tmp_path, wider, TrainConfig(epochs=2, batch_size=2), device="cpu")
    with pytest.raises(ValueError, match=r"checkpoint from another architecture.*model\.depth: 12 .*, 18"):
        train(data, None, tmp_path, VAEConfig.from_dict({**TINY.to_dict(), "depth": 18}),
              TrainConfig(epochs=2, batch_size=2), device="cpu")
    with pytest.raises(ValueError, match="checkpoint from another architecture.*'vae3d'"):
        load_checkpoint(tmp_path / CHECKPOINT, kind="wgan3d")
    # other training settings or data resume, with a warning
    with caplog.at_level(logging.WARNING, logger="micropipe.train.vae"):
        assert train(data[:3], None, tmp_path, TINY, TrainConfig(epochs=2, batch_size=2, lr=1e-4),
                     device="cpu").epoch == 2
    assert "changed train settings (lr: 1e-05 in the checkpoint, 0.0001 requested)" in caplog.text
    assert "changed data settings (n_train: 4 in the checkpoint, 3 requested)" in caplog.text
    # resume=False starts afresh with the new architecture
    assert train(data, None, tmp_path, wider, TrainConfig(epochs=1, batch_size=2), device="cpu",
                 resume=False).config == wider


def test_vae_from_checkpoint_and_fingerprints(tmp_path):
    data = _volumes(10)
    result = train(data[:6], data[6:], tmp_path, TINY, TrainConfig(epochs=2, batch_size=3, lr=3e-3), device="cpu")
    model = VAE3D.from_checkpoint(tmp_path / BEST, device="cpu")
    assert model.config == TINY and not model.training and isinstance(model, VAE3D)
    x = torch.from_numpy(data)
    with torch.no_grad():
        mu_ref = result.model.eval().encode(x)[0].numpy()
        rec_ref = result.model.reconstruct(x).numpy()
    mu = encode_mean(model, data, batch_size=4)
    assert mu.shape == (10, 4) and mu.dtype == np.float32
    np.testing.assert_array_equal(mu, encode_mean(model, data, batch_size=4))  # deterministic
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encode_mean(model, _LazyVEs(data), batch_size=10, device="cpu"), mu_ref, rtol=1e-5,
                               atol=1e-6)
    rec = reconstruct(model, data, batch_size=3)
    assert rec.shape == data.shape and rec.dtype == np.float32
    np.testing.assert_allclose(rec, rec_ref, rtol=1e-5, atol=1e-6)
    assert VAE3D.from_checkpoint(tmp_path / CHECKPOINT, device="cpu").config == TINY  # the latest state loads too
    again = VAE3D.from_checkpoint(load_checkpoint(tmp_path / BEST), device="cpu")  # a checkpoint read once, reused
    np.testing.assert_array_equal(encode_mean(again, data, batch_size=4), mu)
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 2


def test_invalid_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"invalid train_data of shape \(2, 3, 16, 16, 16\); expected \(n, 3, 8"):
        train(np.zeros((2, 3, 16, 16, 16), np.float32), None, tmp_path, TINY, device="cpu")
    bad = _volumes(2)
    bad[1, 2, 3, 4, 5] = 2.0
    with pytest.raises(ValueError, match=r"invalid val_data values in \[0.\d+, 2.0\]; expected \[0, 1\]"):
        train(_volumes(2), bad, tmp_path, TINY, device="cpu")
    with pytest.raises(ValueError, match=r"invalid train_data item of shape \(3, 4, 4, 4\)"):
        train(_LazyVEs(np.zeros((2, 3, 4, 4, 4), np.float32)), None, tmp_path, TINY, device="cpu")
    with pytest.raises(ValueError, match="invalid batch_size 1 .*BatchNorm"):
        train(_volumes(4), None, tmp_path, TINY, TrainConfig(batch_size=1), device="cpu")
    for field, value in (("epochs", -1), ("batch_size", 0), ("lr", 0.0), ("alpha", 1.5), ("patience", 0),
                         ("amp_dtype", "float8"), ("kl_weight", -1.0), ("stats_weight", -0.1)):
        with pytest.raises(ValueError, match=f"invalid {field} {value!r}"):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="invalid alpha 2"):
        vae_loss(torch.zeros(1, 1, 2, 2, 2), torch.full((1, 1, 2, 2, 2), 0.5), torch.zeros(1, 1), torch.zeros(1, 1),
                 alpha=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for the mixed-precision path")
@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_training_on_cuda_with_mixed_precision(tmp_path, amp_dtype):
    data = _volumes(12)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, amp_dtype=amp_dtype)
    result = train(data[:8], data[8:], tmp_path, TINY, cfg, device="cuda")
    assert result.epoch == 3 and all(math.isfinite(v) for r in result.loss_log for v in r.values())
    assert bool(load_checkpoint(tmp_path / CHECKPOINT)["scaler"]) == (amp_dtype == "float16")
    mu = encode_mean(result.model, data)
    np.testing.assert_allclose(mu, encode_mean(result.model, data, amp=False), rtol=0.05, atol=0.05)
    resumed = train(data[:8], data[8:], tmp_path, TINY, TrainConfig(**{**cfg.to_dict(), "epochs": 4}), device="cpu")
    assert resumed.epoch == 4  # a CUDA checkpoint resumes on the CPU
