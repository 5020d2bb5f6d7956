"""Stress-curve surrogate of seed 003 (§2.4): a one-hidden-layer MLP from a VE's fingerprint to its
min-max scaled ``sigma_zz`` at every strain increment of uniaxial tension along z.

The fingerprint is the mean of the VAE encoder's posterior (DESIGN §4, "fingerprint VEs (encoder mean)"),
so its length is the VAE's latent dimension (256 in the paper). The 21 outputs are the undeformed state
and the 20 increments to 1 % strain; the sigmoid keeps them in ``[0, 1]``, the range of the min-max scaled
training stresses (:class:`micropipe.train.surrogate.MinMaxScaler` maps them to and from Pa).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from micropipe.params import FromDict

KIND = "surrogate"
"""Name of the architecture in checkpoints and in the model registry."""

N_INCREMENTS = 21
"""Outputs of the paper's surrogate: sigma_zz of the undeformed state and of 20 strain increments."""


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"invalid {name} {value!r}; expected a positive integer")
    return int(value)


@dataclass(frozen=True)
class SurrogateConfig(FromDict):
    """Surrogate of seed 003, §2.4.

    in_dim : int
        Fingerprint length: the latent dimension of the VAE whose encoder means are the inputs.
    hidden : int
        Width of the hidden layer (512).
    out_dim : int
        Strain increments predicted, the undeformed state included (21: 20 increments to 1 % strain).
    negative_slope : float
        Slope of the leaky ReLU for negative inputs; the paper names the activation only, 0.01 is PyTorch's
        default.
    """

    in_dim: int
    hidden: int = 512
    out_dim: int = N_INCREMENTS
    negative_slope: float = 0.01

    def __post_init__(self):
        # Coerced so that numpy integers from array shapes become plain ints, which checkpoints loaded
        # with weights_only=True can hold.
        for name in ("in_dim", "hidden", "out_dim"):
            object.__setattr__(self, name, _positive_int(getattr(self, name), name))
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real) or not (math.isfinite(slope) and slope >= 0):
            raise ValueError(f"invalid negative_slope {slope!r}; expected a finite number >= 0")
        object.__setattr__(self, "negative_slope", float(slope))


class Surrogate(nn.Module):
    """Fingerprint -> scaled stress curve: ``sigmoid(W2 lrelu(W1 x + b1) + b2)``.

    Shapes: input (B, in_dim), the fingerprints (VAE encoder means) of B VEs; output (B, out_dim) in
    ``[0, 1]``, min-max scaled volume-averaged ``sigma_zz`` per strain increment (21 values including the
    undeformed state).
    """

    def __init__(self, config: SurrogateConfig):
        super().__init__()
        self.config = config
        self.hidden = nn.Linear(config.in_dim, config.hidden)
        self.act = nn.LeakyReLU(config.negative_slope)
        self.out = nn.Linear(config.hidden, config.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.act(self.hidden(x))))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

