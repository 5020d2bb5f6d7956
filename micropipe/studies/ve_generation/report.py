"""The statistics report of a VE dataset: what was made, measured against what was asked for."""

from __future__ import annotations

import logging
from typing import Any

import damask
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

from micropipe.datasets import ve as dataset
from micropipe.report import BuiltReport, Report, histogram_figure, image_grid
from micropipe.ve import stats
from micropipe.ve.generator import GeneratorConfig
from micropipe.ve.volume import VolumeElement

log = logging.getLogger(__name__)

N_SLICES = 4
"""VEs shown as mid-plane slices."""


def dataset_report(manifest: dict[str, Any], max_ves: int = 200) -> BuiltReport:
    """Measure up to ``max_ves`` VEs of a gathered dataset and build the report.

    Parameters
    ----------
    manifest : dict
        From :func:`micropipe.datasets.ve.gather` / :func:`~micropipe.datasets.ve.load_manifest`.
    max_ves : int
        VEs measured (the first ones by id); the report says how many of how many.
    """
    if max_ves < 1:
        raise ValueError(f"max_ves must be >= 1, got {max_ves}")
    prov = manifest["provenance"]
    config = GeneratorConfig.from_dict(prov["params"]["generator"])
    ves = [ve for _, ve in dataset.iter_ves(manifest, limit=max_ves)]
    log.info("measuring %d of %d VEs", len(ves), manifest["n_ve"])
    measured = [stats.measure(ve, config) for ve in ves]
    summary = stats.summarize(ves, config, measured)
    per_grain = [m["grains"] for m in measured]

    r = Report("VE dataset report",
               subtitle=f"{manifest['n_ve']} VEs of {'×'.join(map(str, config.cells))} voxels in "
                        f"{len(manifest['shards'])} shards at {manifest['uri']}; statistics over "
                        f"{len(ves)} VEs. micropipe {prov['version']}, commit {prov['git_commit']}, "
                        f"seed {prov['seed']}.")
    r.section("Measured vs target").table(comparison_rows(summary, config))
    r.section("Grain size").figure(_esd_figure(per_grain, config),
                                   "Equivalent-sphere diameter of every grain against the target log-normal "
                                   "(truncated at the cut-offs).")
    r.figure(_grain_count_figure(ves, config), "Grains per VE; dashed: box volume / mean target grain volume.")
    r.section("Axis ratios").figure(_axis_figure(per_grain, config),
                                    "Extent of each grain along x, y, z (square root of the second moment, "
                                    "periodic unwrapping) over the geometric mean of its three extents; "
                                    "grains that wrap around the box are left out. Dashed: target.")
    r.section("Pole figure").figure(_pole_figure(ves, config),
                                    "Stereographic projection (sample z up) of the poles of every grain.")
    r.section("Misorientation").figure(_misorientation_figure(measured, config),
                                       "Left: disorientation across grain boundaries against random "
                                       "(Mackenzie) pairs. Right: misorientation of each grain to the ideal "
                                       "texture component (textured sets only).")
    r.section("Mid-plane slices").figure(_slices_figure(ves[:N_SLICES], config),
                                         "z mid-plane of the first VEs, inverse-pole-figure colour of the "
                                         "sample z direction.")
    r.section("Generator parameters").json(config.to_dict())
    r.section("Provenance").json(prov)
    return BuiltReport(report=r, metrics=metrics_of(summary, manifest), summary=summary)


def comparison_rows(summary: dict[str, Any], config: GeneratorConfig) -> list[dict[str, Any]]:
    """Rows of the measured-vs-target table."""
    g, esd, ar = summary["grains"], summary["esd"], summary["axis_ratio"]
    rows = [
        {"quantity": "grains per VE", "target": g["expected"], "measured": g["mean"],
         "note": f"min {g['min']}, max {g['max']}; target = box volume / mean grain volume"},
        {"quantity": "mean ESD (length units)", "target": esd["target_mean"], "measured": esd["measured_mean"],
         "note": f"relative error {esd['relative_error']:+.2%}"},
        {"quantity": "σ of ln ESD", "target": summary["sigma_ln_esd"]["target"],
         "measured": summary["sigma_ln_esd"]["measured"], "note": ""},
    ]
    for i, axis in enumerate("xyz"):
        whole = ar["measured"][i] if ar["measured"] is not None else None
        rows.append({"quantity": f"axis ratio {axis} (second moments)", "target": ar["target"][i],
                     "measured": whole, "note": f"mean intercept: {ar['measured_intercept'][i]:.3g}"})
    if "texture" in summary:
        tx = summary["texture"]
        rows.append({"quantity": f"grains within {tx['threshold_deg']:g}° of {tx['name']}", "target": 0.95,
                     "measured": tx["fraction_within"],
                     "note": f"mean misorientation {tx['mean_misorientation_deg']:.2f}°, worst VE "
                             f"{tx['min_fraction_within_per_ve']:.2f}"})
    if "second_phase_fraction" in summary:
        rows.append({"quantity": "phase-1 volume fraction", "target": summary["second_phase_fraction"]["target"],
                     "measured": summary["second_phase_fraction"]["measured_mean"], "note": ""})
    mdf = summary["mdf"]
    rows.append({"quantity": "mean boundary disorientation (°)", "target": mdf["random_reference_mean_deg"],
                 "measured": mdf["mean_deg"],
                 "note": f"{mdf['pairs']} boundaries; target: random (Mackenzie) pairs"
                 + ("" if config.texture == "random" else ", for reference only")})
    return rows


def metrics_of(summary: dict[str, Any], manifest: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics for KFP's Metrics artifact and the CLI table."""
    m = {
        "n_ve": int(manifest["n_ve"]),
        "n_ve_measured": int(summary["n_ve"]),
        "grains_per_ve_mean": summary["grains"]["mean"],
        "grains_per_ve_target": summary["grains"]["expected"],
        "esd_mean_measured": summary["esd"]["measured_mean"],
        "esd_mean_target": summary["esd"]["target_mean"],
        "esd_mean_rel_error": summary["esd"]["relative_error"],
        "sigma_ln_esd_measured": summary["sigma_ln_esd"]["measured"],
    }
    if summary["mdf"]["mean_deg"] is not None:
        m["mdf_mean_deg"] = summary["mdf"]["mean_deg"]
    if "texture" in summary:
        m["texture_fraction_within_3_spread"] = summary["texture"]["fraction_within"]
    return m


# --------------------------------------------------------------------------------------------- figures
def _esd_figure(per_grain: list[dict[str, Any]], config: GeneratorConfig):
    esd = np.concatenate([g["esd"] for g in per_grain])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    lo, hi = config.esd_bounds
    bins = np.linspace(min(lo, esd.min()), max(hi, esd.max()), 30)
    ax.hist(esd, bins=bins, density=True, alpha=0.6, label=f"measured ({esd.size} grains)")
    x = np.linspace(bins[0], bins[-1], 400)
    ax.plot(x, stats.esd_pdf(config, x), "k-", label=f"target: mean {config.esd_mean:g}, σ {config.esd_sigma:g}")
    ax.set_xlabel("equivalent-sphere diameter (length units)")
    ax.set_ylabel("probability density")
    ax.legend(fontsize=8)
    return fig


def _grain_count_figure(ves: list[VolumeElement], config: GeneratorConfig):
    counts = np.array([ve.N_grains for ve in ves])
    return histogram_figure({"": counts}, bins=np.arange(counts.min() - 0.5, counts.max() + 1.5),
                            xlabel="grains per VE", ylabel="VEs", marks={"": config.expected_grains},
                            figsize=(6, 3))


def _axis_figure(per_grain: list[dict[str, Any]], config: GeneratorConfig):
    extent = np.concatenate([g["extent_std"] for g in per_grain])
    whole = ~np.concatenate([g["spans_box"] for g in per_grain]).any(axis=1)
    ratios = extent[whole] / np.exp(np.log(extent[whole]).mean(axis=1, keepdims=True))
    target = np.asarray(config.axis_ratio) / np.prod(config.axis_ratio) ** (1 / 3)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    if not len(ratios):
        ax.text(0.5, 0.5, "every grain wraps around the box:\nno second-moment extents", ha="center",
                va="center", transform=ax.transAxes)
        return fig
    bins = np.linspace(0, max(2.0, float(ratios.max())), 40)
    for i, (axis, color) in enumerate(zip("xyz", ("C0", "C1", "C2"), strict=True)):
        ax.hist(ratios[:, i], bins=bins, histtype="step", color=color, label=axis)
        ax.axvline(target[i], color=color, ls="--")
    ax.set_xlabel("grain extent along axis / geometric mean of its three extents")
    ax.set_ylabel("grains")
    ax.legend(fontsize=8)
    return fig


def _stereographic(v: np.ndarray) -> np.ndarray:
    v = np.where(v[..., 2:3] < 0, -v, v)  # upper hemisphere
    return v[..., :2] / (1.0 + v[..., 2:3])


def _pole_figure(ves: list[VolumeElement], config: GeneratorConfig):
    euler = np.concatenate([ve.euler for ve in ves])
    weights = np.concatenate([np.bincount(ve.grain_ids.ravel(), minlength=ve.N_grains) for ve in ves])
    ori = damask.Orientation.from_Euler_angles(phi=euler, lattice=config.lattice)
    if config.lattice == "hP":
        families = {"{0001}": ("hkil", [0, 0, 0, 1]), "{10-10}": ("hkil", [1, 0, -1, 0])}
    else:
        families = {"{100}": ("hkl", [1, 0, 0]), "{111}": ("hkl", [1, 1, 1])}
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, (label, (key, hkl)) in zip(axes, families.items(), strict=True):
        # Lab-frame normals of all symmetric equivalents, shape (N_sym, G, 3); duplicates overlap.
        poles = ori.to_frame(**{key: np.asarray(hkl)}, with_symmetry=True)
        xy = _stereographic(poles).reshape(-1, 2)
        w = np.broadcast_to(weights, poles.shape[:-1]).ravel()
        ax.scatter(xy[:, 0], xy[:, 1], s=4 + 30 * w / w.max(), alpha=0.5, lw=0)
        ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k"))
        ax.set_title(f"{label} poles")
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.set_aspect("equal")
        ax.set_axis_off()  # a unit disk: its axes are the sample's, not scales
        ax.annotate("X", (1.08, 0), ha="left", va="center")
        ax.annotate("Y", (0, 1.08), ha="center", va="bottom")
    return fig


def _misorientation_figure(measured: list[dict[str, Any]], config: GeneratorConfig):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    mdf = np.concatenate([m["mdf"] for m in measured])
    ref = stats.random_mdf_reference(config.lattice, n=stats.MACKENZIE_SAMPLES, rng_seed=0)
    bins = np.linspace(0, max(mdf.max(initial=0), ref.max()) + 1, 40)
    axes[0].hist(ref, bins=bins, density=True, histtype="step", color="k", label="random pairs")
    if mdf.size:
        axes[0].hist(mdf, bins=bins, density=True, alpha=0.6, label=f"boundaries ({mdf.size})")
    axes[0].set_xlabel("disorientation angle (°)")
    axes[0].legend(fontsize=8)
    if config.texture != "random":
        mis = np.concatenate([m["texture"]["misorientation_deg"] for m in measured])
        axes[1].hist(mis, bins=30, alpha=0.7)
        axes[1].axvline(3 * config.spread_deg, color="k", ls="--", label=f"3 × {config.spread_deg:g}°")
        axes[1].set_xlabel(f"misorientation to ideal {config.texture} (°)")
        axes[1].legend(fontsize=8)
    else:
        axes[1].text(0.5, 0.5, "random texture:\nno ideal component", ha="center", va="center")
        axes[1].set_axis_off()
    return fig


def _slices_figure(ves: list[VolumeElement], config: GeneratorConfig):
    mids = [ve.cells[2] // 2 for ve in ves]
    ids = [ve.grain_ids[:, :, z] for ve, z in zip(ves, mids, strict=True)]
    colors = [damask.Orientation.from_Euler_angles(phi=ve.euler, lattice=ve.lattice).IPF_color([0, 0, 1])[i]
              for ve, i in zip(ves, ids, strict=True)]
    fig = image_grid([colors], col_titles=[f"{ve.N_grains} grains, z = {z}" for ve, z in zip(ves, mids, strict=True)],
                     panel=(3.2, 3.4), ticks=True, xlabel="x (voxels)", ylabel="y (voxels)")
    for ax, i in zip(fig.axes, ids, strict=True):
        ax.add_collection(LineCollection(_boundary_segments(i), colors="k", linewidths=0.6))
    _ipf_key(fig.add_axes((0.93, 0.2, 0.2, 0.6)), ves[0].lattice)
    return fig


IPF_CORNERS = {"cF": {"001": (0, 0, 1), "101": (1, 0, 1), "111": (1, 1, 1)},
               "cI": {"001": (0, 0, 1), "101": (1, 0, 1), "111": (1, 1, 1)},
               "hP": {"0001": (0, 0, 1), "2-1-10": (1, 0, 0), "10-10": (3 ** 0.5, 1, 0)}}
"""Corners of DAMASK's standard triangle (red, green, blue) as Cartesian crystal directions."""


def _ipf_key(ax: Any, lattice: str, n: int = 160) -> None:
    """The inverse-pole-figure colour key of ``lattice``: every crystal direction of the standard triangle in
    stereographic projection, coloured as DAMASK colours the sample direction that is parallel to it."""
    corners = {label: _stereographic(np.asarray(d, float) / np.linalg.norm(d))
               for label, d in IPF_CORNERS[lattice].items()}
    (x0, y0), (x1, y1) = np.min(list(corners.values()), axis=0), np.max(list(corners.values()), axis=0)
    x, y = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    r2 = x ** 2 + y ** 2
    v = np.stack([2 * x, 2 * y, 1 - r2], axis=-1) / (1 + r2)[..., None]  # inverse stereographic projection
    identity = damask.Orientation.from_quaternion(q=np.tile([1.0, 0.0, 0.0, 0.0], (n * n, 1)), lattice=lattice)
    rgb = identity.IPF_color(v.reshape(-1, 3), in_SST=False).reshape(n, n, 3)
    ax.imshow(np.dstack([rgb, rgb.any(axis=-1).astype(float)]), origin="lower", extent=(x0, x1, y0, y1))
    for label, (cx, cy) in corners.items():
        ax.annotate(f"[{label}]", (cx, cy), fontsize=7, ha="center", va="top" if cy == y0 else "bottom")
    pad = 0.15 * (x1 - x0)
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(y0 - pad, y1 + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"IPF key ({lattice}),\nsample z", fontsize=8)


def _boundary_segments(ids: np.ndarray) -> np.ndarray:
    """Line segments between voxels of different grains in a 2D slice (x, y), shape (S, 2, 2)."""
    i, j = np.nonzero(ids[:-1, :] != ids[1:, :])
    vertical = np.stack([np.stack([i + 0.5, j - 0.5], -1), np.stack([i + 0.5, j + 0.5], -1)], 1)
    i, j = np.nonzero(ids[:, :-1] != ids[:, 1:])
    horizontal = np.stack([np.stack([i - 0.5, j + 0.5], -1), np.stack([i + 0.5, j + 0.5], -1)], 1)
    return np.concatenate([vertical, horizontal])
