"""Seed 001's study as library steps: two-phase training data, WGAN-GP training with a persistent
checkpoint, and the report that judges generated volumes by p1, p2 and homogenized C11 (eq. 34).

Volume stacks travel between steps as ``.npz`` files with ``volumes`` (N, X, Y, Z) uint8 and ``attrs``
(JSON provenance).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from micropipe import provenance, store
from micropipe.metrics import correlations as corr
from micropipe.params import integral_floats_to_int
from micropipe.report import Report
from micropipe.ve import twophase

log = logging.getLogger(__name__)

SOURCES = ("spheres", "subvolumes")
PAPER = {
    "spheres": {"E_p1": 3.46e-2, "E_p2": 2.44e-2, "E_C11": 3.9e-3, "where": "seed 001 table 3"},
    "subvolumes": {"E_p1": 3.63e-2, "E_p2": 5.12e-2, "E_C11": 3.19e-2, "where": "seed 001 table 4 (µCT)"},
}
"""The paper's best errors, to print beside ours."""


def save_volumes(path: str | Path, volumes: np.ndarray, attrs: dict[str, Any]) -> None:
    """Write a volume stack to ``path`` (any name: KFP artifact paths have no suffix)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, volumes=np.asarray(volumes, dtype=np.uint8), attrs=provenance.dumps(attrs))
    with store.atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


def load_volumes(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``(volumes (N, X, Y, Z) uint8, attrs)`` of a stack written by :func:`save_volumes`."""
    with np.load(path, allow_pickle=False) as z:
        if "volumes" not in z.files:
            raise ValueError(f"{path}: field 'volumes' missing; expected a stack written by save_volumes")
        volumes = z["volumes"]
        attrs = json.loads(str(z["attrs"])) if "attrs" in z.files else {}
    if volumes.ndim != 4:
        raise ValueError(f"{path}: field 'volumes' must have shape (N, X, Y, Z), got {volumes.shape}")
    return volumes, attrs


def make_volumes(source: str, n: int, *, size: int, seed: int, radius: float = 4.0,
                 volume_fraction: float = 0.2, volume_uri: str = "", threshold: float | None = None
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """Training volumes of seed 001: periodic spheres (§5.1) or Latin-hypercube sub-volumes of one large
    volume (§5.2; ``volume_uri`` empty = the built-in synthetic fibre-like volume)."""
    if source not in SOURCES:
        raise ValueError(f"source: unknown data source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "spheres":
        made = twophase.sphere_volumes(n, shape=(size,) * 3, radius=radius, volume_fraction=volume_fraction,
                                       rng_seed=seed)
    else:
        volume = volume_uri or twophase.synthetic_large_volume(rng_seed=seed)
        made = twophase.latin_hypercube_subvolumes(volume, n, size=size, threshold=threshold, rng_seed=seed)
    attrs = provenance.record(seed=seed, step="gan.make_volumes",
                              params={"source": source, "n": n, "size": size, "radius": radius,
                                      "volume_fraction": volume_fraction, "volume_uri": volume_uri,
                                      "threshold": threshold, "made": made.attrs})
    return made.volumes, attrs


def train(volumes: np.ndarray, *, model: str, model_overrides: dict[str, Any], train_config: dict[str, Any],
          checkpoint_uri: str, device: str | None = None):
    """Train (or resume) the WGAN-GP with its checkpoint kept at ``checkpoint_uri`` (path or s3://).

    A rerun with the same ``checkpoint_uri`` continues the run from its last checkpoint.
    """
    from micropipe.models import wgan3d
    from micropipe.train import wgan

    if model not in wgan3d.PRESETS:
        raise ValueError(f"model: unknown preset {model!r}; expected one of {', '.join(wgan3d.PRESETS)}")
    model_overrides = integral_floats_to_int(model_overrides)
    unknown = sorted(set(model_overrides) - {"generator", "discriminator"})
    if unknown:
        raise ValueError(f"model_overrides: unknown key(s) {unknown}; expected 'generator' and/or 'discriminator'")
    gen, disc = wgan3d.PRESETS[model]
    gen = dataclasses.replace(gen, **model_overrides.get("generator", {}))
    disc = dataclasses.replace(disc, **model_overrides.get("discriminator", {}))
    config = wgan.TrainConfig(**integral_floats_to_int(train_config))
    if store.is_remote(checkpoint_uri):
        with tempfile.TemporaryDirectory() as tmp:
            if store.exists(checkpoint_uri):
                store.get_dir(checkpoint_uri, tmp)

            def sync(step: int) -> None:
                if step % config.checkpoint_every == 0:
                    store.put_dir(tmp, checkpoint_uri)

            result = wgan.train(volumes, tmp, gen, disc, config, device=device, on_step=sync)
            store.put_dir(tmp, checkpoint_uri)
            return result
    return wgan.train(volumes, checkpoint_uri, gen, disc, config, device=device)


@dataclasses.dataclass
class BuiltReport:
    report: Report
    summary: dict[str, Any]
    metrics: dict[str, float]


def study_report(real: np.ndarray, generated: np.ndarray, C_real: np.ndarray, C_generated: np.ndarray,
                 loss_log: list[dict[str, float]], *, source: str, attrs: dict[str, Any]) -> BuiltReport:
    """Eq. (34) errors of generated against real volumes, with the floor of real against themselves.

    ``C_real``, ``C_generated``: Voigt stiffness (N, 6, 6) of (a subset of) each stack; C11 = ``[:, 0, 0]``.
    """
    p1_r, p1_g = corr.p1(real), corr.p1(generated)
    r, p2_r = corr.p2_radial(real)
    _, p2_g = corr.p2_radial(generated)
    c11_r, c11_g = C_real[:, 0, 0], C_generated[:, 0, 0]
    errors = {"E_p1": corr.E_p1(p1_g, p1_r), "E_p2": corr.E_p2(p2_g, p2_r), "E_C11": corr.E_C11(c11_g, c11_r)}
    floor = {"E_p1": corr.E_p1(p1_r, p1_r), "E_p2": corr.E_p2(p2_r, p2_r), "E_C11": corr.E_C11(c11_r, c11_r)}
    paper = PAPER[source]
    rows = [{"metric": k, "generated vs training": errors[k], "training vs itself (floor)": floor[k],
             f"paper ({paper['where']})": paper[k]} for k in errors]
    summary = {"errors": errors, "floor": floor, "paper": paper,
               "p1": {"real_mean": float(np.mean(p1_r)), "generated_mean": float(np.mean(p1_g))},
               "C11": {"real_mean": float(np.mean(c11_r)), "generated_mean": float(np.mean(c11_g))},
               "n": {"real": len(real), "generated": len(generated), "real_homogenized": len(C_real),
                     "generated_homogenized": len(C_generated)},
               "iterations": int(loss_log[-1]["step"]) if loss_log else 0}

    rep = Report("GAN homogenization report (seed 001)",
                 subtitle=f"{len(real)} training and {len(generated)} generated volumes of "
                          f"{'×'.join(map(str, real.shape[1:]))} voxels; C11 from {len(C_real)} / "
                          f"{len(C_generated)} of them; {summary['iterations']} training iterations.")
    rep.section("Errors, eq. (34)").table(rows).text(
        "E = mean over samples of |x - mean of training x| / |mean of training x|; the floor is the same "
        "error of the training set itself, the best a generator of its distribution can reach.")
    rep.table([{"quantity": "p1 (volume fraction)", "training": summary["p1"]["real_mean"],
                "generated": summary["p1"]["generated_mean"]},
               {"quantity": "C11 (Voigt)", "training": summary["C11"]["real_mean"],
                "generated": summary["C11"]["generated_mean"]}])
    rep.section("2-point correlation").figure(_p2_figure(r, p2_r, p2_g), "Radial p2(r), mean ± std.")
    rep.section("Mid-plane slices").figure(_slices(real, generated), "z mid-plane: training (top), generated "
                                                                     "(bottom).")
    rep.section("C11").figure(_c11_figure(c11_r, c11_g), "Homogenized C11 of training and generated volumes.")
    if loss_log:
        rep.section("Training").figure(_loss_figure(loss_log), "Wasserstein estimate and gradient penalty.")
    rep.section("Provenance").json(attrs)
    metrics = {**errors, **{f"{k}_floor": v for k, v in floor.items()},
               "p1_generated": summary["p1"]["generated_mean"], "C11_generated": summary["C11"]["generated_mean"]}
    return BuiltReport(rep, summary, {k: float(v) for k, v in metrics.items()})


def _p2_figure(r, p2_r, p2_g):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for curve, label in ((p2_r, "training"), (p2_g, "generated")):
        m, s = curve.mean(axis=0), curve.std(axis=0)
        ax.plot(r, m, label=label)
        ax.fill_between(r, m - s, m + s, alpha=0.25)
    ax.set_xlabel("r (voxels)")
    ax.set_ylabel("p2(r)")
    ax.legend(fontsize=8)
    return fig


def _slices(real, generated, n: int = 4):
    n = min(n, len(real), len(generated))
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5), squeeze=False)
    for row, stack in enumerate((real, generated)):
        for i in range(n):
            axes[row, i].imshow(stack[i][:, :, stack.shape[3] // 2].T, origin="lower", cmap="gray_r",
                                interpolation="nearest")
            axes[row, i].set_axis_off()
    return fig


def _c11_figure(c11_r, c11_g):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(min(c11_r.min(), c11_g.min()), max(c11_r.max(), c11_g.max()) + 1e-12, 25)
    ax.hist(c11_r, bins=bins, alpha=0.6, label="training")
    ax.hist(c11_g, bins=bins, alpha=0.6, label="generated")
    ax.set_xlabel("C11")
    ax.legend(fontsize=8)
    return fig


def _loss_figure(loss_log):
    steps = [row["step"] for row in loss_log]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [row["wasserstein"] for row in loss_log], label="Wasserstein estimate")
    ax.plot(steps, [row["gp"] for row in loss_log], label="gradient penalty")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    return fig
