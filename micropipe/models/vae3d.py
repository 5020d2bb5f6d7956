"""3D ResNet variational autoencoder of seed 003 (§2.2): Euler-angle VEs (3, N, N, N) -> fingerprint mu (256,).

Encoder: stem convolution, four layers of residual blocks (Table 3: ResNet12/18/34 have 1,1,1,1 / 2,2,2,2 /
3,4,6,3 blocks), a stride-2 convolution between consecutive layers, then flatten -> dense ``hidden`` (8192,
§3.1) -> dense heads ``mu`` and ``ln(sigma^2)`` of size ``latent_dim`` (256, §3.1.1). The decoder mirrors it
with transposed convolutions and ends in a sigmoid, since the inputs are Euler angles divided by
(2 pi, pi, 2 pi) (§2.1) and the reconstruction loss is a binary cross-entropy.

Choices the paper leaves open:

* Widths ``(64, 128, 256, 512)`` (torchvision's ResNet) and a stride-2 3x3x3 stem. At 64^3 ResNet18 is
  about 120 GFLOP per VE forward, 365 GFLOP forward + backward, and 365 GFLOP x 99 VE/s (the paper's rate
  per A100: 200 epochs of 1e5 VEs in 28 h on two A100s) = 36 TFLOP/s: a plausible float32/TF32 rate
  for 3D convolutions on an A100. A stride-1 stem would need 8 times that, so the paper cannot have used
  one at these widths. ResNet's 7x7x7 stem with max pooling is left out: it costs 13 times a 3x3x3
  kernel and pools away grains only a few voxels across.
* The downsampling between layers is a separate 3x3x3 stride-2 convolution (+ BN + ReLU), as §2.2.2
  describes ("a separate convolution layer for downsampling"), not torchvision's strided first block.
* The decoder has as many residual blocks per layer as the encoder and upsamples with 4x4x4 stride-2
  transposed convolutions: every output voxel then receives the same number (8) of kernel taps, which
  avoids the checkerboard of a 3x3x3 stride-2 transposed kernel.
* At the paper's scale the encoder's final feature volume is 512 x 4^3 = 32768 values, so the dense layers
  flatten -> 8192 and 8192 -> flatten hold 2 x 268 M of ResNet18's 634 M parameters (fine on one GPU:
  ~10 GB with Adam's state); the convolutions hold 57 / 95 / 156 M in ResNet12 / 18 / 34. (With widths
  16-128 the flattened features are 128 x 4^3 = 8192 themselves, another reading of "a hidden layer of
  size 8192"; ``channels`` selects it.)

``PRESETS['small']`` is a narrow ResNet18 on 16^3 (channels 8-64, hidden 256, latent 32, stride-1 stem,
1.7 M parameters) for tests and CPU runs: ~50 VE/s on two CPU cores, an epoch of 500 VEs in ~10 s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from micropipe.params import FromDict, is_int, positive_int

log = logging.getLogger(__name__)

KIND = "vae3d"
"""Name of the architecture in checkpoints and in the model registry."""

BLOCKS: dict[int, tuple[int, int, int, int]] = {12: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Residual blocks per layer of ResNet12/18/34, seed 003 Table 3."""


@dataclass(frozen=True)
class VAEConfig(FromDict):
    """Architecture of :class:`VAE3D`.

    depth : {12, 18, 34}
        ResNet depth; residual blocks per layer from Table 3 (:data:`BLOCKS`). The paper selects 18.
    size : int
        Edge ``N`` of the cubic input, in voxels (64 in the paper); a multiple of ``8 * stem_stride``.
    in_channels : int
        Channels per voxel (3 normalised Bunge Euler angles).
    channels : tuple of 4 int
        Widths of the four residual layers.
    stem_stride : {1, 2}
        Stride of the first convolution; the three downsamplings follow, so the encoder's final feature
        volume has edge ``size / (8 * stem_stride)``.
    hidden : int
        Dense layer between the flattened features and ``mu``, ``ln(sigma^2)`` (8192, §3.1); the decoder
        has one of the same size.
    latent_dim : int
        ``|z|``, length of the fingerprint (256, §3.1.1).
    stats_head : bool
        Not in seed 003 (default False): an auxiliary linear read-out ``mu -> (C,)`` that predicts the VE's
        per-channel mean (standardised over the training set, :meth:`VAE3D.channel_stats`). Trained only
        through ``TrainConfig.stats_weight``; it makes the encoder keep VE-level texture averages in ``mu``
        when a short run would otherwise learn other features first (see the ``small`` preset of
        ``cp_surrogate``). The decoder does not see it.
    """

    depth: int = 18
    size: int = 64
    in_channels: int = 3
    channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_stride: int = 2
    hidden: int = 8192
    latent_dim: int = 256
    stats_head: bool = False

    def __post_init__(self):
        if isinstance(self.channels, list):  # as stored in a checkpoint
            object.__setattr__(self, "channels", tuple(self.channels))
        if self.depth not in BLOCKS or isinstance(self.depth, bool):
            raise ValueError(f"invalid depth {self.depth!r}; expected one of {tuple(BLOCKS)} (seed Table 3)")
        if self.stem_stride not in (1, 2) or isinstance(self.stem_stride, bool):
            raise ValueError(f"invalid stem_stride {self.stem_stride!r}; expected 1 or 2")
        for name in ("in_channels", "hidden", "latent_dim"):
            positive_int(getattr(self, name), name)
        if (not isinstance(self.channels, tuple) or len(self.channels) != 4
                or not all(is_int(c) for c in self.channels)):
            raise ValueError(f"invalid channels {self.channels!r}; expected 4 positive integers, one per layer")
        if not isinstance(self.stats_head, bool):
            raise ValueError(f"invalid stats_head {self.stats_head!r}; expected true or false")
        step = 8 * self.stem_stride
        if not is_int(self.size) or self.size % step:
            raise ValueError(f"invalid size {self.size!r}; expected a positive multiple of {step} "
                             f"(stem stride {self.stem_stride} x 3 downsamplings by 2)")


    @property
    def blocks(self) -> tuple[int, int, int, int]:
        """Residual blocks in each of the four layers (Table 3)."""
        return BLOCKS[self.depth]

    @property
    def feature_size(self) -> int:
        """Edge of the encoder's final feature volume: ``size / (8 * stem_stride)``."""
        return self.size // (8 * self.stem_stride)

    @property
    def feature_shape(self) -> tuple[int, int, int, int]:
        """Shape (C, n, n, n) of the encoder's last residual layer output, per sample."""
        n = self.feature_size
        return (self.channels[-1], n, n, n)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape (C, N, N, N) of one VE."""
        return (self.in_channels, self.size, self.size, self.size)


PRESETS: dict[str, VAEConfig] = {
    # §3.1.2: the three depths at the paper's scale (64^3, hidden 8192, |z| = 256); ResNet18 was selected.
    "resnet12": VAEConfig(depth=12),
    "resnet18": VAEConfig(depth=18),
    "resnet34": VAEConfig(depth=34),
    # Narrow but complete ResNet18 for two CPU cores: 16^3, 64 x 2^3 = 512 features -> 256 -> |z| = 32.
    "small": VAEConfig(depth=18, size=16, channels=(8, 16, 32, 64), stem_stride=1, hidden=256, latent_dim=32),
}
"""Named configs: the paper's three depths and a small one."""


def _conv_bn_relu(conv: nn.Module, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """§2.2.2: ``relu(x + bn(conv3(relu(bn(conv3(x))))))``; shape (B, C, s, s, s) kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


def _layer(channels: int, n_blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels) for _ in range(n_blocks)))


class Encoder(nn.Module):
    """VE (B, C_in, N, N, N) -> ``mu``, ``ln(sigma^2)``, each (B, latent_dim)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c = config.channels
        self.stem = _conv_bn_relu(nn.Conv3d(config.in_channels, c[0], 3, stride=config.stem_stride, padding=1,
                                            bias=False), c[0])
        self.layers = nn.ModuleList(_layer(ch, n) for ch, n in zip(c, config.blocks, strict=True))
        self.down = nn.ModuleList(_conv_bn_relu(nn.Conv3d(a, b, 3, stride=2, padding=1, bias=False), b)
                                  for a, b in zip(c[:-1], c[1:], strict=True))
        n_features = c[-1] * config.feature_size ** 3
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(n_features, config.hidden), nn.ReLU(inplace=True))
        self.mu = nn.Linear(config.hidden, config.latent_dim)
        self.logvar = nn.Linear(config.hidden, config.latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last residual layer, shape (B, *config.feature_shape)."""
        x = self.stem(x)
        for i, layer in enumerate(self.layers):
            if i:
                x = self.down[i - 1](x)
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dense(self.features(x))
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """Latent ``z`` (B, latent_dim) -> reconstruction (B, C_in, N, N, N) in (0, 1), float32."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c = config.channels
        self.feature_shape = config.feature_shape
        self.dense = nn.Sequential(nn.Linear(config.latent_dim, config.hidden), nn.ReLU(inplace=True),
                                   nn.Linear(config.hidden, c[-1] * config.feature_size ** 3), nn.ReLU(inplace=True))
        # layers[i] mirrors encoder layer 3 - i; up[i] leads from layers[i] to layers[i + 1]
        self.layers = nn.ModuleList(_layer(ch, n) for ch, n in zip(c[::-1], config.blocks[::-1], strict=True))
        self.up = nn.ModuleList(_conv_bn_relu(nn.ConvTranspose3d(a, b, 4, stride=2, padding=1, bias=False), b)
                                for a, b in zip(c[:0:-1], c[-2::-1], strict=True))
        self.head = (nn.ConvTranspose3d(c[0], config.in_channels, 4, stride=2, padding=1) if config.stem_stride == 2
                     else nn.Conv3d(c[0], config.in_channels, 3, padding=1))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output, shape (B, C_in, N, N, N)."""
        x = self.dense(z).view(-1, *self.feature_shape)
        for i, layer in enumerate(self.layers):
            if i:
                x = self.up[i - 1](x)
            x = layer(x)
        return self.head(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # float32 sigmoid: under bfloat16 autocast 1 - x_hat would round to 0 for x_hat > 0.996
        return torch.sigmoid(self.logits(z).float())


class VAE3D(nn.Module):
    """ResNet3D VAE of seed 003, §2.2.2.

    Shapes: VEs ``x`` (B, C, N, N, N), dimensionless values in [0, 1] (Euler angles / (2 pi, pi, 2 pi));
    ``mu``, ``logvar`` = ln(sigma^2) and ``z`` (B, latent_dim); reconstructions (B, C, N, N, N) in (0, 1).
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.stats_head:
            self.stats = nn.Linear(config.latent_dim, config.in_channels)
            # per-channel mean and std over the training VEs of the VE-level channel means; set by training
            self.register_buffer("stats_mean", torch.zeros(config.in_channels))
            self.register_buffer("stats_std", torch.ones(config.in_channels))

    @staticmethod
    def channel_means(x: torch.Tensor) -> torch.Tensor:
        """Each VE's per-channel mean, ``x`` (B, C, N, N, N) -> (B, C), float32: what the auxiliary head predicts,
        before standardisation."""
        return x.float().mean(dim=(2, 3, 4))

    def channel_stats(self, x: torch.Tensor) -> torch.Tensor:
        """Target of the auxiliary head: :meth:`channel_means` standardised with ``stats_mean`` and
        ``stats_std``; ``x`` (B, C, N, N, N) -> (B, C), float32."""
        return (self.channel_means(x) - self.stats_mean) / self.stats_std

    def predict_stats(self, mu: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's estimate of :meth:`channel_stats` from the fingerprint ``mu`` (B, latent_dim)
        -> (B, C), float32."""
        return self.stats(mu.float())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mu``, ``logvar`` of q(z|x), each (B, latent_dim); ``mu`` is the fingerprint (§2.2.1)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, C, N, N, N) in (0, 1), float32, of latents ``z`` (B, latent_dim)."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) eps``, ``eps ~ N(0, 1)`` (§2.2.1), shape of ``mu``.

        ``eps`` is drawn in float32 from ``generator`` on that generator's device (the CPU one of a
        training run keeps the stream the same on every device), then moved to ``mu``'s device.
        """
        if generator is None:
            eps = torch.randn(mu.shape, device=mu.device, dtype=torch.float32)
        else:
            eps = torch.randn(mu.shape, generator=generator, device=generator.device, dtype=torch.float32)
        eps = eps.to(mu.device, non_blocking=True)
        return mu.float() + torch.exp(0.5 * logvar.float()) * eps

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_hat, mu, logvar)`` with ``x_hat`` decoded from a sample ``z`` of q(z|x)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, generator)), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction ``decode(mu)``, (B, C, N, N, N)."""
        return self.decode(self.encode(x)[0])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_checkpoint(cls, source: str | Path | Mapping[str, Any], device: str | torch.device | None = None
                        ) -> VAE3D:
        """The VAE of a checkpoint (``best.pt`` or ``checkpoint.pt`` of :func:`micropipe.train.vae.train`), rebuilt
        from its stored config, in eval mode; ``model.config`` is that config.

        ``source`` may also be a checkpoint already read with :func:`~micropipe.models.checkpoint.load_checkpoint`
        (2.5 GB at paper scale: read it once when its other fields are needed too). ``device`` as
        :func:`micropipe.device.pick_device` (None: CUDA when available). Needs no training code.
        """
        from micropipe.device import pick_device
        from micropipe.models.checkpoint import load_checkpoint

        loaded = isinstance(source, Mapping)
        ckpt = load_checkpoint(source, kind=KIND)
        model = cls(VAEConfig.from_dict(ckpt["config"]["model"]))
        model.load_state_dict(ckpt["model"])
        model.to(pick_device(None if device is None else str(device)))
        log.info("loaded %s (%s, %d parameters) from %s at epoch %d", KIND, model.config, model.n_params(),
                 "a loaded checkpoint" if loaded else source, ckpt["step"])
        return model.eval()


class ArrayDataset(Dataset):
    """VEs of an array of shape (n, C, N, N, N) (numpy, memmap or h5py dataset), one float32 tensor per item."""

    def __init__(self, volumes: Any):
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.volumes[i], dtype=np.float32))


def _item(item: Any) -> torch.Tensor:
    """A dataset item as a float tensor: the item itself, or the first element of a tuple (x, label, ...)."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    return torch.as_tensor(item, dtype=torch.float32)


def _collate(items: list[Any]) -> torch.Tensor:
    return torch.stack([_item(it) for it in items])


def as_dataset(data: Any, config: VAEConfig, what: str) -> Dataset:
    """``data`` as a Dataset of (C, N, N, N) items; arrays are checked whole, datasets by their first item."""
    shape = config.input_shape
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        if data.ndim != 5 or data.shape[1:] != shape or len(data) < 1:
            raise ValueError(f"invalid {what} of shape {data.shape}; expected (n, {', '.join(map(str, shape))})")
        if not np.issubdtype(data.dtype, np.floating):
            raise ValueError(f"invalid {what} dtype {data.dtype}; expected float32 values in [0, 1]")
        lo, hi = float(data.min()), float(data.max())
        if not (0 <= lo and hi <= 1):
            raise ValueError(f"invalid {what} values in [{lo}, {hi}]; expected [0, 1] (Euler angles / (2 pi, pi, "
                             f"2 pi))")
        return ArrayDataset(data)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise ValueError(f"invalid {what} of type {type(data).__name__}; expected a torch Dataset or an array")
    if len(data) < 1:
        raise ValueError(f"invalid {what}: empty dataset")
    first = tuple(_item(data[0]).shape)
    if first != shape:
        raise ValueError(f"invalid {what} item of shape {first}; expected {shape}")
    return data


def data_loader(dataset: Dataset, batch_size: int, order: list[int] | None, num_workers: int,
            device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=order, shuffle=False, num_workers=num_workers,
                      collate_fn=_collate, pin_memory=device.type == "cuda")


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


@torch.no_grad()
def _apply(model: VAE3D, data: Any, fn: Callable[[VAE3D, torch.Tensor], torch.Tensor], out_shape: tuple[int, ...],
           batch_size: int, device: str | torch.device | None, amp: bool, num_workers: int) -> np.ndarray:
    from micropipe.device import pick_device
    positive_int(batch_size, "batch_size")
    dataset = as_dataset(data, model.config, "data")
    own = next(model.parameters()).device
    device = own if device is None else pick_device(str(device))
    if device != own:
        import copy
        model = copy.deepcopy(model).to(device)
    was_training = model.training
    model.eval()
    amp_dtype = None
    if amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    out = np.empty((len(dataset), *out_shape), np.float32)
    i = 0
    try:
        for x in data_loader(dataset, batch_size, None, num_workers, device):
            with autocast(device, amp_dtype):
                y = fn(model, x.to(device, non_blocking=True))
            out[i:i + len(x)] = y.float().cpu().numpy()
            i += len(x)
    finally:
        model.train(was_training)
    return out


def encode_mean(model: VAE3D, data: Any, batch_size: int = 32, device: str | torch.device | None = None,
                amp: bool = True, num_workers: int = 0) -> np.ndarray:
    """Fingerprints: the encoder mean ``mu`` of each VE (§2.2.1), BatchNorm in eval mode, no sampling.

    Parameters
    ----------
    model : VAE3D
        Not modified (a copy moves when ``device`` differs from its own).
    data : Dataset or array_like, shape (n, C, N, N, N)
        As ``train_data`` of :func:`micropipe.train.vae.train`.
    batch_size : int
        VEs per forward pass (does not change the result beyond floating-point rounding).
    device : str, torch.device or None
        None runs on the model's device.
    amp : bool
        bfloat16 (float16 without bf16 support) autocast on CUDA: ~3 significant digits; False for float32.

    Returns
    -------
    mu : numpy.ndarray, shape (n, latent_dim), float32
    """
    return _apply(model, data, lambda m, x: m.encode(x)[0], (model.config.latent_dim,), batch_size, device, amp,
                  num_workers)


def reconstruct(model: VAE3D, data: Any, batch_size: int = 32, device: str | torch.device | None = None,
                amp: bool = True, num_workers: int = 0) -> np.ndarray:
    """Deterministic reconstructions ``decode(mu)``, values in (0, 1), as :func:`encode_mean`.

    Returns
    -------
    x_hat : numpy.ndarray, shape (n, C, N, N, N), float32
    """
    return _apply(model, data, VAE3D.reconstruct, model.config.input_shape, batch_size, device, amp,
                  num_workers)
