"""3D WGAN-GP of seed 001: architecture, initialisation, penalty, training loop, checkpoints and resumption."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from micropipe.models import build
from micropipe.models.checkpoint import load_checkpoint
from micropipe.models.wgan3d import (
    PRESETS,
    Discriminator,
    DiscriminatorConfig,
    EqualizedLinear,
    Generator,
    GeneratorConfig,
    sample,
)
from micropipe.train.wgan import LOSS_LOG, TrainConfig, gradient_penalty, read_loss_log, train

TINY = dict(generator=GeneratorConfig(16, 2), discriminator=DiscriminatorConfig(16, 2))


def _volumes(n=8, size=16, fraction=0.3, seed=0):
    return (np.random.default_rng(seed).random((n, size, size, size)) < fraction).astype(np.uint8)


def _meta_count(module_cls, config):
    with torch.device("meta"):  # counts without the (slow) orthogonal init of 57 M weights
        return sum(p.numel() for p in module_cls(config).parameters())


@pytest.mark.parametrize("size, blocks", [(16, 4), (32, 5), (64, 6)])
def test_output_shapes(size, blocks):
    G = Generator(GeneratorConfig(size, filters=1))
    D = Discriminator(DiscriminatorConfig(size, filters=1))
    assert len(G.blocks) == len(D.blocks) == blocks
    x = G(torch.randn(2, 128))
    assert x.shape == (2, 1, size, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (2,)


@pytest.mark.parametrize("filters, paper_G, paper_D", [(8, 0.3, 0.9), (16, 0.6, 3.5), (32, 1.6, 14.3), (64, 5.5, 57)])
def test_parameter_counts_match_paper(filters, paper_G, paper_D):
    # §4.2 and §4.3: theta_G and theta_D at n_L = 5 for n_f = 8, 16, 32, 64 (two significant digits).
    assert _meta_count(Generator, GeneratorConfig(32, filters)) / 1e6 == pytest.approx(paper_G, rel=0.05)
    assert _meta_count(Discriminator, DiscriminatorConfig(32, filters)) / 1e6 == pytest.approx(paper_D, rel=0.05)


def test_parameter_counts_topologies_and_64():
    g, d = PRESETS["spheres32_constant"]
    assert _meta_count(Discriminator, d) / 1e6 == pytest.approx(3.5, rel=0.05)  # §4.1: both about 3.5 M
    g, d = PRESETS["wpc64"]
    assert _meta_count(Generator, g) / 1e6 == pytest.approx(21, rel=0.05)  # §5
    assert _meta_count(Discriminator, d) / 1e6 == pytest.approx(3.6, rel=0.05)
    assert DiscriminatorConfig(32, 16, "growing").block_filters == (16, 32, 64, 128, 256)
    assert DiscriminatorConfig(32, 120, "constant").block_filters == (120,) * 5
    assert GeneratorConfig(32, 32).block_filters == (256, 128, 64, 32, 32)


@pytest.mark.parametrize("module_cls, config_cls", [(Generator, GeneratorConfig), (Discriminator, DiscriminatorConfig)])
def test_parameter_count_grows_with_width(module_cls, config_cls):
    counts = [_meta_count(module_cls, config_cls(16, filters=f)) for f in (1, 2, 4, 8)]
    assert counts == sorted(set(counts))


def test_mapping_network_has_8_dense_layers_with_lr_multiplier():
    G = Generator(GeneratorConfig(16, 1))
    layers = list(G.mapping.layers)
    assert len(layers) == 8 and all(isinstance(m, EqualizedLinear) and m.lr_mul == 0.1 for m in layers)
    layer = layers[0]
    # The stored parameter's gradient is lr_mul times that of the effective weight ...
    x = torch.randn(4, 128)
    w_eff = layer.effective_weight.detach().requires_grad_(True)
    (x @ w_eff.T).square().sum().backward()
    layer(x).square().sum().backward()  # bias is zero at init, so both losses agree
    torch.testing.assert_close(layer.weight.grad, 0.1 * w_eff.grad)
    # ... so one Nadam step moves the effective weight 0.1 times as far as a plain layer's weight.
    plain = nn.Linear(128, 128)
    with torch.no_grad():
        plain.weight.copy_(layer.effective_weight)
        plain.bias.zero_()
    plain(x).square().sum().backward()
    before = layer.effective_weight.detach().clone()
    for module in (layer, plain):
        torch.optim.NAdam([module.weight], lr=1e-3, eps=1e-12).step()
    ratio = (layer.effective_weight.detach() - before).abs().max() / (plain.weight.detach() - before).abs().max()
    assert ratio.item() == pytest.approx(0.1, rel=1e-3)


def test_orthogonal_init():
    G = Generator(GeneratorConfig(16, 2))
    D = Discriminator(DiscriminatorConfig(16, 2))
    # rows of the weight flattened to (dim 0, rest) are orthonormal wherever dim 0 <= rest
    for weight in (G.blocks[1].up.weight, G.blocks[0].skip.weight, D.blocks[1].conv1.weight,
                   D.blocks[2].conv2.weight, G.mapping.layers[3].effective_weight):
        W = weight.detach().flatten(1)
        assert W.shape[0] <= W.shape[1]
        torch.testing.assert_close(W @ W.T, torch.eye(W.shape[0]), atol=1e-5, rtol=0)
    assert all(m.bias.abs().max() == 0 for m in D.modules() if isinstance(m, nn.Conv3d))


@pytest.mark.parametrize("norm", [0.0, 1.0, 3.0])
def test_gradient_penalty_of_linear_critic(norm):
    # D(x) = <a, x> has |grad D| = |a| everywhere, so L_GP = lambda (|a| - 1)^2.
    critic = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 1, bias=False), nn.Flatten(0))
    with torch.no_grad():
        a = torch.randn(1, 64)
        critic[1].weight.copy_(a / a.norm() * norm)
    real, fake = torch.randn(5, 1, 4, 4, 4), torch.randn(5, 1, 4, 4, 4)
    gp = gradient_penalty(critic, real, fake, torch.rand(5, 1, 1, 1, 1), weight=10.0)
    assert gp.item() == pytest.approx(10 * (norm - 1) ** 2, abs=1e-5)
    gp.backward()
    assert critic[1].weight.grad is not None


def test_training_runs_and_writes_log(tmp_path):
    result = train(_volumes(), tmp_path, **TINY, config=TrainConfig(iterations=3, checkpoint_every=2), device="cpu")
    assert result.step == 3 and [r["step"] for r in result.loss_log] == [1, 2, 3]
    for row in result.loss_log:
        assert all(math.isfinite(v) for v in row.values())
        assert row["loss_d"] == pytest.approx(row["gp"] - row["wasserstein"], rel=1e-5)
        assert 0 <= row["gp"] < 100
    assert read_loss_log(tmp_path / LOSS_LOG) == result.loss_log  # floats round-trip through the CSV
    ckpt = load_checkpoint(result.checkpoint)
    assert {"model", "optimizer", "config", "step", "best_metric", "rng", "scaler", "loss_log"} <= set(ckpt)
    assert ckpt["step"] == 3 and ckpt["config"]["train"]["critic_steps"] == 1
    # standardised binary data at volume fraction p spans [-p/s, (1-p)/s], Eq. (26)
    p = _volumes().mean()
    assert ckpt["config"]["generator"]["value_min"] == pytest.approx(-p / np.sqrt(p * (1 - p)), rel=1e-3)


def test_resume_after_interruption_continues_the_same_run(tmp_path):
    cfg = TrainConfig(iterations=6, checkpoint_every=2, critic_steps=2)
    whole = train(_volumes(), tmp_path / "whole", **TINY, config=cfg, device="cpu")

    def interrupt(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_volumes(), tmp_path / "cut", **TINY, config=cfg, device="cpu", on_step=interrupt)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 4
    resumed = train(_volumes(), tmp_path / "cut", **TINY, config=cfg, device="cpu")
    assert resumed.step == 6 and [r["step"] for r in resumed.loss_log] == list(range(1, 7))
    assert read_loss_log(tmp_path / "cut" / LOSS_LOG) == read_loss_log(tmp_path / "whole" / LOSS_LOG)
    assert resumed.loss_log == whole.loss_log  # bit-identical on the CPU
    for a, b in zip(resumed.generator.state_dict().values(), whole.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # extending a finished run continues its step count and log
    longer = train(_volumes(), tmp_path / "cut", **TINY, config=TrainConfig(iterations=7, checkpoint_every=2,
                                                                               critic_steps=2), device="cpu")
    assert longer.step == 7 and longer.loss_log[:6] == whole.loss_log and len(longer.loss_log) == 7


def test_checkpoint_from_another_architecture(tmp_path):
    train(_volumes(), tmp_path, **TINY, config=TrainConfig(iterations=1), device="cpu")
    with pytest.raises(ValueError, match=r"checkpoint from another architecture.*generator\.filters: 2 .*, 4"):
        train(_volumes(), tmp_path, generator=GeneratorConfig(16, 4), discriminator=TINY["discriminator"],
              config=TrainConfig(iterations=2), device="cpu")
    with pytest.raises(ValueError, match=r"checkpoint from another architecture.*discriminator\.topology"):
        train(_volumes(), tmp_path, generator=TINY["generator"],
              discriminator=DiscriminatorConfig(16, 2, "constant"), config=TrainConfig(iterations=2), device="cpu")
    with pytest.raises(ValueError, match="checkpoint from another architecture.*'wgan3d'"):
        load_checkpoint(tmp_path / "checkpoint.pt", kind="resnet18")


def test_generator_from_checkpoint_and_sample(tmp_path):
    result = train(_volumes(), tmp_path, **TINY, config=TrainConfig(iterations=1), device="cpu")
    G = Generator.from_checkpoint(result.checkpoint)
    config = G.config
    assert config == result.generator.config and not G.training
    z = torch.randn(3, 128)
    torch.testing.assert_close(G(z), result.generator(z))
    a = sample(G, 5, batch=2, rng_seed=7)
    assert a.shape == (5, 16, 16, 16) and a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    assert np.array_equal(a, sample(G, 5, batch=5, rng_seed=7, device="cpu"))
    # threshold is the midpoint of the output range, i.e. the 0.5 level of the unstandardised phases
    z = torch.from_numpy(np.random.default_rng(7).standard_normal((5, 128)).astype(np.float32))
    with torch.no_grad():
        assert np.array_equal(a, (G(z)[:, 0] > 0.5 * (config.value_min + config.value_max)).numpy())
    assert not np.array_equal(a, sample(G, 5, batch=5, rng_seed=7, sigma_pred=10.0))


def test_registry_and_config_validation():
    G = build("wgan3d.generator", filters=1, out_size=64)
    assert isinstance(G, Generator) and G.config.out_size == 64 and len(G.blocks) == 6
    assert build("wgan3d.discriminator", {"in_size": 16, "filters": 1}).config.in_size == 16
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build("nope")
    with pytest.raises(ValueError, match="invalid out_size 48"):
        GeneratorConfig(out_size=48)
    with pytest.raises(ValueError, match="invalid topology 'shrinking'"):
        DiscriminatorConfig(topology="shrinking")
    with pytest.raises(ValueError, match=r"invalid volumes of shape \(2, 8, 8, 8\)"):
        train(np.zeros((2, 8, 8, 8), np.uint8), "unused", **TINY, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for the mixed-precision path")
def test_training_on_cuda_with_mixed_precision(tmp_path):
    result = train(_volumes(), tmp_path, **TINY, config=TrainConfig(iterations=3, checkpoint_every=2), device="cuda")
    assert result.step == 3 and all(math.isfinite(v) for r in result.loss_log for v in r.values())
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["scaler"]["discriminator"]  # GradScaler state saved
    resumed = train(_volumes(), tmp_path, **TINY, config=TrainConfig(iterations=4), device="cpu")
    assert resumed.step == 4  # a CUDA checkpoint resumes on the CPU
