"""3D residual WGAN-GP of seed 001 (gan_homogenization): StyleGAN-like mapping network, residual
transposed-convolution generator, residual convolutional critic with average pooling.

Choices the paper leaves open, and how the parameter counts of §4.2, §4.3 and §5 decide them
(``Generator(...).n_params()`` reproduces 0.3/0.6/1.6/5.5 M and 21 M; the critic 0.9/3.5/14.3/57 M and 3.6 M):

* Generator block ``l = 1..n`` has ``n_f^G * 2**max(n - 1 - l, 0)`` filters (Fig. 1: at most
  ``n_f^G * 2**(n - 2)``, ``n_f^G`` in the last two blocks). Its first transposed convolution, from the
  1x1x1 ``w``, has a 2x2x2 kernel: a 3x3x3 one would give 6.8 M instead of 5.5 M at ``n_f^G = 64``.
* The 1x1x1 residual of ``w`` in Eq. (24) is broadcast over the block's volume. A literal strided 1x1x1
  transposed convolution of a 1x1x1 input (TensorFlow, ``padding='same'``) would write ``w`` into one
  corner voxel and zeros elsewhere; broadcasting has the same parameters and reaches every voxel.
* Critic block ``l`` has two 3x3x3 convolutions (leaky ReLU between them) and a 1x1x1 residual, Eq. (28);
  ``'growing'`` doubles the filters every block from ``n_f^D``, ``'constant'`` keeps ``n_f^D``.
* Output layer Eq. (25): a 3x3x3 convolution to one channel and ``(tanh(x) + 1) / 2 * (max - min) + min``.
  The printed ``tanh(x + 1) (max - min) / 2 + min`` does not stay within ``[min, max]``, which the text says
  it must.

The learning-rate multiplier of the mapping network is StyleGAN's equalized-learning-rate trick: a stored
parameter ``p`` is used as ``W = lr_mul * p`` and initialised as ``W0 / lr_mul``. Then ``dL/dp = lr_mul *
dL/dW``, and with an Adam-type optimizer (scale-invariant up to its epsilon) each step moves ``p`` by
about ``lr`` and so ``W`` by about ``lr_mul * lr``: the paper's ``alpha_map = 0.1 alpha_G`` without a
separate optimizer parameter group.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from micropipe.params import FromDict, positive_int

log = logging.getLogger(__name__)

KIND = "wgan3d"
"""Name of the architecture in checkpoints and in the model registry."""

TOPOLOGIES = ("growing", "constant")


def _n_blocks(size: int, what: str) -> int:
    if not isinstance(size, int) or size < 4 or size & (size - 1):
        raise ValueError(f"invalid {what} {size!r}; expected a power of two >= 4 (32 for spheres, 64 for µCT)")
    return int(math.log2(size))


@dataclass(frozen=True)
class GeneratorConfig(FromDict):
    """Generator G of Eq. (23).

    out_size : int
        Edge length of the cubic output volume in voxels; ``log2(out_size)`` upsampling blocks
        (32 -> 5 blocks as in §4, 64 -> 6 blocks as in §5).
    filters : int
        ``n_f^G``, filters of the last transposed-convolution block (paper 8-64; 32 in §4.1, 64 in §4.5, §5).
    z_dim, w_dim : int
        ``d_Z``, ``d_W`` (128).
    mapping_layers : int
        ``n_L^w`` dense layers of the mapping network (8).
    mapping_lr_mul : float
        Learning-rate multiplier of the mapping network (0.1).
    leaky_slope : float
        ``gamma`` of the leaky ReLU, Eq. (22) (0.2).
    value_min, value_max : float
        ``lambda_min``, ``lambda_max`` of Eq. (26): the voxel range of the (standardised) training data,
        set by the training loop. Binary data standardised at volume fraction 0.5 gives -1, 1.
    """

    out_size: int = 32
    filters: int = 32
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.1
    leaky_slope: float = 0.2
    value_min: float = -1.0
    value_max: float = 1.0

    def __post_init__(self):
        _n_blocks(self.out_size, "out_size")
        for name in ("filters", "z_dim", "w_dim", "mapping_layers"):
            positive_int(getattr(self, name), name)
        if not self.mapping_lr_mul > 0:
            raise ValueError(f"invalid mapping_lr_mul {self.mapping_lr_mul!r}; expected > 0")
        if not self.value_max > self.value_min:
            raise ValueError(f"invalid value range [{self.value_min}, {self.value_max}]; expected min < max")

    @property
    def n_blocks(self) -> int:
        return _n_blocks(self.out_size, "out_size")

    @property
    def block_filters(self) -> tuple[int, ...]:
        """Filters of blocks 1..n: ``filters * 2**max(n - 1 - l, 0)``, e.g. 8, 4, 2, 1, 1 x filters for n = 5."""
        n = self.n_blocks
        return tuple(self.filters * 2 ** max(n - 1 - l, 0) for l in range(1, n + 1))


@dataclass(frozen=True)
class DiscriminatorConfig(FromDict):
    """Discriminator (critic) D of Eq. (27).

    in_size : int
        Edge length of the cubic input volume; ``log2(in_size)`` blocks, each halving it by average pooling.
    filters : int
        ``n_f^D``, filters of the first block (paper 8-64; 16 growing vs 120 constant in §4.1).
    topology : {'growing', 'constant'}
        Filters of block ``l``: ``filters * 2**(l - 1)`` (growing, the better one in Table 2) or ``filters``.
    leaky_slope : float
        ``gamma`` of Eq. (22) (0.2).
    """

    in_size: int = 32
    filters: int = 16
    topology: Literal["growing", "constant"] = "growing"
    leaky_slope: float = 0.2

    def __post_init__(self):
        _n_blocks(self.in_size, "in_size")
        positive_int(self.filters, "filters")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"invalid topology {self.topology!r}; expected one of {TOPOLOGIES}")

    @property
    def n_blocks(self) -> int:
        return _n_blocks(self.in_size, "in_size")

    @property
    def block_filters(self) -> tuple[int, ...]:
        n = self.n_blocks
        if self.topology == "constant":
            return (self.filters,) * n
        return tuple(self.filters * 2 ** (l - 1) for l in range(1, n + 1))


PRESETS: dict[str, tuple[GeneratorConfig, DiscriminatorConfig]] = {
    # §4.1, Table 2: the growing critic that won (about 1 h for 1e5 iterations on an RTX 3090).
    "spheres32": (GeneratorConfig(32, 32), DiscriminatorConfig(32, 16, "growing")),
    "spheres32_constant": (GeneratorConfig(32, 32), DiscriminatorConfig(32, 120, "constant")),
    # §4.5, best model: n_f^G = n_f^D = 64.
    "spheres32_best": (GeneratorConfig(32, 64), DiscriminatorConfig(32, 64, "growing")),
    # §5, WPC µCT sub-volumes: one more block each.
    "wpc64": (GeneratorConfig(64, 64), DiscriminatorConfig(64, 8, "growing")),
    # Narrow but complete model that trains on two CPU cores in minutes.
    "small": (GeneratorConfig(32, 4), DiscriminatorConfig(32, 4, "growing")),
}
"""Named (generator, discriminator) configs; the paper's widths at 32^3 and 64^3, and a small one."""


def _orthogonal_(module: nn.Module) -> None:
    """Orthogonal init [61] of every weight (flattened to (dim 0, rest)), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class EqualizedLinear(nn.Module):
    """Dense layer with a learning-rate multiplier: ``y = x @ (lr_mul * p).T + lr_mul * b``.

    The stored ``weight`` ``p`` is initialised orthogonally divided by ``lr_mul``, so the effective
    weight starts orthogonal and an Adam-type step moves it ``lr_mul`` times as far as a plain layer's.

    Shapes: input (B, in_features), output (B, out_features).
    """

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0):
        super().__init__()
        self.lr_mul = float(lr_mul)
        w = torch.empty(out_features, in_features)
        nn.init.orthogonal_(w)
        self.weight = nn.Parameter(w / self.lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))

    @property
    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, lr_mul={self.lr_mul}"


class MappingNetwork(nn.Module):
    """N_map of Eq. (21): ``n_L^w`` dense layers with leaky ReLU, z (B, d_Z) -> w (B, d_W)."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int, lr_mul: float, slope: float):
        super().__init__()
        dims = [z_dim] + [w_dim] * n_layers
        self.layers = nn.ModuleList(EqualizedLinear(a, b, lr_mul) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.slope = slope

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            z = F.leaky_relu(layer(z), self.slope)
        return z


class ResConvTBlock(nn.Module):
    """N_ResConvT of Eq. (24): ``lrelu(proj(w) + convT(x))``, doubling the edge length.

    Shapes: x (B, C_in, s, s, s), w (B, d_W) -> (B, C_out, 2s, 2s, 2s).
    """

    def __init__(self, c_in: int, c_out: int, w_dim: int, slope: float, first: bool):
        super().__init__()
        # From the 1x1x1 w a 2x2x2 kernel is all a stride-2 transposed convolution can use.
        self.up = (nn.ConvTranspose3d(c_in, c_out, 2, stride=2) if first else
                   nn.ConvTranspose3d(c_in, c_out, 3, stride=2, padding=1, output_padding=1))
        self.skip = nn.Conv3d(w_dim, c_out, 1)
        self.slope = slope

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.up(x) + self.skip(w[:, :, None, None, None]), self.slope)


class Generator(nn.Module):
    """G of Eq. (23): z (B, d_Z) -> volume (B, 1, S, S, S) in ``[value_min, value_max]``."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        c = config
        self.mapping = MappingNetwork(c.z_dim, c.w_dim, c.mapping_layers, c.mapping_lr_mul, c.leaky_slope)
        chans = (c.w_dim, *c.block_filters)
        self.blocks = nn.ModuleList(ResConvTBlock(a, b, c.w_dim, c.leaky_slope, first=(i == 0))
                                    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True)))
        self.out = nn.Conv3d(chans[-1], 1, 3, padding=1)
        _orthogonal_(self.blocks)
        _orthogonal_(self.out)

    @property
    def threshold(self) -> float:
        """Output value between the two phases: the midpoint of ``[value_min, value_max]``."""
        return 0.5 * (self.config.value_min + self.config.value_max)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        x = w[:, :, None, None, None]
        for block in self.blocks:
            x = block(x, w)
        lo, hi = self.config.value_min, self.config.value_max
        return (torch.tanh(self.out(x)) + 1) * (0.5 * (hi - lo)) + lo

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = "cpu") -> Generator:
        """The generator of a WGAN checkpoint (:func:`micropipe.train.wgan.train`), rebuilt from the config stored
        in it, in eval mode (``generator.config`` is that config). Needs neither the training loop nor the critic.
        """
        from micropipe.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, kind=KIND)
        generator = cls(GeneratorConfig.from_dict(ckpt["config"]["generator"]))
        generator.load_state_dict(ckpt["model"]["generator"])
        if device is not None:
            from micropipe.device import pick_device
            generator = generator.to(pick_device(str(device)))
        log.info("loaded %s generator (%s, %d parameters) from %s at step %d",
                 KIND, generator.config, generator.n_params(), path, ckpt["step"])
        return generator.eval()

class ResConvBlock(nn.Module):
    """N_ResConv of Eq. (28): ``lrelu(avgpool(conv3(lrelu(conv3(x))) + conv1(x)))``, halving the edge length.

    Shapes: (B, C_in, s, s, s) -> (B, C_out, s/2, s/2, s/2).
    """

    def __init__(self, c_in: int, c_out: int, slope: float):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv3d(c_in, c_out, 1)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(x), self.slope))
        return F.leaky_relu(F.avg_pool3d(h + self.skip(x), 2), self.slope)


class Discriminator(nn.Module):
    """Critic D of Eq. (27): volume (B, 1, S, S, S) -> score (B,), linear output (no sigmoid: Wasserstein)."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        chans = (1, *config.block_filters)
        self.blocks = nn.Sequential(*(ResConvBlock(a, b, config.leaky_slope)
                                      for a, b in zip(chans[:-1], chans[1:], strict=True)))
        self.head = nn.Linear(chans[-1], 1)  # log2(S) poolings leave 1x1x1
        _orthogonal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).flatten(1)).squeeze(1)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def sample(generator: Generator, n: int, batch: int = 8, rng_seed: int | None = None,
           device: str | torch.device | None = None, sigma_pred: float = 1.0) -> np.ndarray:
    """Binary volumes from a generator, phase 1 where the output exceeds the midpoint of its range.

    The output layer Eq. (25) maps to ``[value_min, value_max]`` of the standardised data, so the
    midpoint is the 0.5 level of the original 0/1 voxels.

    Parameters
    ----------
    generator : Generator
        Not modified; copied when ``device`` differs from its own.
    n, batch : int
        Number of volumes, and how many go through the network at once (does not change the result).
    rng_seed : int or None
        Seed of ``np.random.default_rng`` that draws ``z``, shape (n, d_Z).
    device : str, torch.device or None
        None runs on the generator's device.
    sigma_pred : float
        Standard deviation of ``z`` at prediction, §4.4: larger than the training 1 gives more variety
        with large critics (§4.5 uses 10).

    Returns
    -------
    volumes : numpy.ndarray, shape (n, S, S, S), uint8
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"invalid n {n!r}; expected a non-negative integer")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"invalid batch {batch!r}; expected a positive integer")
    if not sigma_pred > 0:
        raise ValueError(f"invalid sigma_pred {sigma_pred!r}; expected > 0")
    own = next(generator.parameters()).device
    if device is not None:
        from micropipe.device import pick_device
        device = pick_device(str(device))
        if device != own:
            import copy
            generator = copy.deepcopy(generator).to(device)
    else:
        device = own
    z = np.random.default_rng(rng_seed).standard_normal((n, generator.config.z_dim)) * sigma_pred
    z = torch.from_numpy(z.astype(np.float32))
    s = generator.config.out_size
    out = np.empty((n, s, s, s), np.uint8)
    for i in range(0, n, batch):
        v = generator(z[i:i + batch].to(device))[:, 0]
        out[i:i + batch] = (v > generator.threshold).to(torch.uint8).cpu().numpy()
    return out
