"""The gan_homogenization report: generated volumes judged against the training volumes by p1, p2 and the
homogenized C11 (seed 001 eq. 34), beside the paper's best errors and the floor of the training set itself."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from micropipe.metrics import correlations as corr
from micropipe.report import BuiltReport, Report, histogram_figure, image_grid, loss_figure, paper_rows

log = logging.getLogger(__name__)

PAPER = {
    "spheres": {"E_p1": 3.46e-2, "E_p2": 2.44e-2, "E_C11": 3.9e-3, "where": "seed 001 table 3"},
    "subvolumes": {"E_p1": 3.63e-2, "E_p2": 5.12e-2, "E_C11": 3.19e-2, "where": "seed 001 table 4 (µCT)"},
}
"""The paper's best errors, to print beside ours."""


def build_report(real: np.ndarray, generated: np.ndarray, C_real: np.ndarray, C_generated: np.ndarray,
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
    rows = paper_rows([(k, errors[k], floor[k], paper[k]) for k in errors],
                      ("generated vs training", "training vs itself (floor)", f"paper ({paper['where']})"))
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
    return BuiltReport(report=rep, metrics={k: float(v) for k, v in metrics.items()}, summary=summary)


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
    return image_grid([[stack[i][:, :, stack.shape[3] // 2] for i in range(n)] for stack in (real, generated)],
                      row_labels=("training", "generated"), cmap="gray_r", panel=(2.4, 2.5))


def _c11_figure(c11_r, c11_g):
    return histogram_figure({"training": c11_r, "generated": c11_g}, bins=24, xlabel="C11")


def _loss_figure(loss_log):
    return loss_figure([row["step"] for row in loss_log],
                       {"": {"Wasserstein estimate": [row["wasserstein"] for row in loss_log],
                             "gradient penalty": [row["gp"] for row in loss_log]}},
                       xlabel="iteration", log=False)
