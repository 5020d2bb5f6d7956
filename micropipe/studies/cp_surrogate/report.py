"""The cp_surrogate report: every figure and number of seed 003's study, each beside the paper's value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from micropipe.datasets.ve_sets import EDGE_CASES, TEXTURE_EDGE_CASES
from micropipe.report import BuiltReport, Report, image_grid, loss_figure, paper_rows
from micropipe.studies.cp_dataset.report import stress_strain_figure
from micropipe.train.vae import read_loss_log

PAPER = {
    "phi4_train": 0.008, "phi4_test": 0.009, "clustering_accuracy": 0.965,
    "surrogate_mse_train": 2.9e-4, "surrogate_mse_test": 9.3e-4, "surrogate_mae_MPa": 2.75,
    "surrogate_mae_MPa_std": 0.46, "inference_s_per_ve": 1e-4,
}
"""Seed 003's numbers (ResNet18, 64^3, 100k training VEs; surrogate on 40,000 / 8,401 Mg runs), for the report."""

PAPER_PHI4 = {"train": 0.008, "validation": 0.009, "large_grains": 0.006, "small_grains": 0.072,
              "elongated": 0.009, "brass": 6e-3, "copper": 6e-3, "cube": 9e-4, "goss": 7e-4}
"""Seed 003's mean misorientation of reconstructions (§3.2, tables 5 and 6; train/test for ResNet18)."""

N_CURVES = 4
"""Test VEs whose predicted and true curves are drawn."""


def build_report(*, index: Mapping[str, Any], loss_log_path: str | Path, analysis: Mapping[str, Any],
                 results: pd.DataFrame, evaluation: Mapping[str, Any], preset: str = "") -> BuiltReport:
    """Assemble the report from the pipeline's artifacts.

    Parameters
    ----------
    index : the VE sets' ``sets.json``; loss_log_path : the VAE's loss log CSV; analysis :
    :func:`~micropipe.studies.cp_surrogate.analysis.analyze`'s
    record; results : CP results of the CP set; evaluation : :func:`~micropipe.studies.cp_surrogate.surrogate.
    fit_and_save`'s record; preset : its name.
    """
    loss = read_loss_log(loss_log_path)
    ev_train, ev_test = evaluation["evaluation"]["train"], evaluation["evaluation"]["test"]
    phi4 = analysis["phi4"]
    clustering = analysis.get("clustering", {})
    n_conv, n_runs = int(results["converged"].sum()), len(results)
    sets = index["sets"]
    first = next(iter(sets.values()))["generator"]

    metrics = {
        "phi4_train": phi4["train"]["mean"], "phi4_validation": phi4["validation"]["mean"],
        **{f"phi4_{k}": phi4[k]["mean"] for k in EDGE_CASES if k in phi4},
        "vae_epochs": float(loss[-1]["epoch"]) if loss else 0.0,
        "vae_val_loss": float(min(r["val_total"] for r in loss)) if loss else float("nan"),
        "cp_runs": float(n_runs), "cp_converged": float(n_conv),
        "surrogate_mse_train": ev_train["mse"], "surrogate_mse_test": ev_test["mse"],
        "surrogate_mae_MPa_test": ev_test["mae_MPa"], "surrogate_mae_MPa_std_test": ev_test["mae_MPa_std"],
        "baseline_mae_MPa_test": ev_test["baseline_mae_MPa"], "baseline_mse_test": ev_test["baseline_mse"],
        "mae_ratio_test": ev_test["mae_ratio"], "skill_test": ev_test["skill"],
        **({"mae_ratio_test_ci95_low": ev_test["mae_ratio_ci95"][0],
            "mae_ratio_test_ci95_high": ev_test["mae_ratio_ci95"][1]} if "mae_ratio_ci95" in ev_test else {}),
        "inference_s_per_ve": ev_test["inference_s_per_ve"],
    }
    if "accuracy" in clustering:
        metrics["clustering_accuracy"] = clustering["accuracy"]
    reference = evaluation.get("texture_reference")
    if reference:
        metrics["texture_reference_mae_MPa_test"] = reference["mae_MPa"]
    probe = analysis.get("probe") or {}
    for name, r2 in probe.get("r2", {}).items():
        if r2 is not None:
            metrics[f"probe_r2_{name}"] = r2

    rep = Report("CP surrogate report (seed 003)",
                 subtitle=f"preset {preset or '(arguments)'}: VEs of {'×'.join(map(str, first['cells']))} voxels "
                          f"({index['lattice']} fundamental zone), {sets['train']['n_ve']} training VEs, "
                          f"{n_runs} CP runs ({n_conv} converged), surrogate on {len(evaluation['split']['train'])} "
                          f"/ {len(evaluation['split']['test'])} train/test VEs.")
    vae_info = analysis.get("vae") or {}
    stats_weight = (float((vae_info.get("train") or {}).get("stats_weight") or 0.0)
                    if (vae_info.get("model") or {}).get("stats_head") else 0.0)
    ratio = ev_test["mae_ratio"]
    verdict = (f"{ratio:.2f}x lower than the baseline's" if ratio >= 1 else
               f"no better than the baseline (the baseline's is {1 / ratio:.2f}x lower)")
    if "mae_ratio_ci95" in ev_test:
        lo, hi = ev_test["mae_ratio_ci95"]
        where = ", entirely above 1" if lo > 1 else ", reaching down to 1 or below" if ratio > 1 else ""
        verdict += (f" (ratio {ratio:.2f}, 95 % bootstrap interval over the {ev_test['n']} test VEs {lo:.2f} to "
                    f"{hi:.2f}{where})")
    rep.section("Summary").text(
        f"On the test split the surrogate's mean absolute error is {ev_test['mae_MPa']:.3g} MPa against "
        f"{ev_test['baseline_mae_MPa']:.3g} MPa for the trivial baseline (the training-mean curve for every VE): "
        f"{verdict}; MSE skill 1 - MSE/MSE_baseline = {ev_test['skill']:.2f}."
        + (" The fingerprints come from a VAE with an auxiliary head, a deviation from seed 003 (see 'VAE "
           "training')." if stats_weight > 0 else ""))
    if reference:
        rep.text(f"Reference (not seed 003's method): ridge regression on five texture descriptors of each VE "
                 f"(volume averages of the Euler channels, of cos² Phi and of the largest basal/primary Schmid "
                 f"factor for tension along z), same split: {reference['mae_MPa']:.3g} MPa. It shows how much of "
                 f"the CP response texture explains with this many runs; a surrogate that does worse than it is "
                 f"limited by what its fingerprints encode (see 'What the fingerprints encode') or by the number "
                 f"of runs, not by the CP data.")
    rep.table(_metric_rows(metrics, phi4, clustering), "Every metric beside seed 003's (paper: ResNet18, 64³ VEs, "
                                                       "100k training VEs, 40,000 / 8,401 CP runs).")

    rep.section("VAE training")
    if stats_weight > 0:
        rep.text(f"Deviation from seed 003: this VAE has an auxiliary linear head from the fingerprint mu to each "
                 f"VE's mean of each of the three normalised Euler angles (standardised over the training VEs), with "
                 f"weight {stats_weight:g} in the loss ('stats'). Without it, a run this short learns the "
                 f"VE-averaged phi1 and phi2 but not Phi, the angle that decides Mg's response to tension along z, "
                 f"and the surrogate cannot beat the baseline. The decoder and the reconstruction loss are the seed's.")
    if loss:
        rep.figure(_loss_figure(loss), "Loss per epoch: total (negative ELBO per input element), BCE, spectral "
                                       "(FFT MSE) and KL terms"
                                       f"{', and the auxiliary head (stats)' if stats_weight > 0 else ''}; "
                                       "training and validation.")
    rep.section("Reconstructions").figure(_slices_figure(analysis["examples"]),
                                          "Mid-plane z slices of one VE per set: normalised Euler angles "
                                          "(phi1, Phi, phi2) as RGB; input (top) and reconstruction (bottom).")
    rep.table([{"set": k, "VEs": v["n"], "mean phi4": v["mean"], "std": v["std"],
                "paper": PAPER_PHI4.get(k, "")} for k, v in phi4.items()],
              "phi4 = 1 - cos(omega/2), omega the disorientation between input and reconstruction (seed 003's "
              "1 - |q1·q2| with the closest symmetry equivalent), mean over voxels, then over VEs; random "
              "orientation pairs give 0.148 (hexagonal) and 0.067 (cubic).")

    rep.section("Latent space").figure(_pca_figure(analysis["pca"]),
                                       "Fingerprints projected on the first two principal components (fitted on "
                                       "the training set), by set.")
    if analysis.get("tsne"):
        rep.figure(_scatter_figure(analysis["tsne"], "t-SNE 1", "t-SNE 2"),
                   "t-SNE (scikit-learn) of the fingerprints of every set together, by set.")
    if probe:
        rep.table([{"descriptor": name, f"R² ({probe['score_set']})": r2 if r2 is not None else "undefined"}
                   for name, r2 in probe["r2"].items()],
                  f"What the fingerprints encode: ridge regression from the fingerprints of the {probe['fit_set']} "
                  f"set ({probe['n_fit']} VEs) to each texture descriptor, R² on the {probe['score_set']} set "
                  f"({probe['n_score']} VEs). mean_phi1/Phi/phi2: volume averages of the normalised Euler "
                  f"channels; cos2_Phi: alignment of the c axis ([001] for cubic) with the load axis z; "
                  f"schmid_max_z: volume average of each grain's largest primary-family Schmid factor for tension "
                  f"along z. Near 1: a linear read-out recovers it; near 0: the fingerprint does not carry it.")
    if clustering:
        rep.text(f"Spectral clustering of the textured edge cases ({', '.join(clustering['classes'])}) on the "
                 f"{clustering['features']}: accuracy {clustering['accuracy']:.3f} over {clustering['n']} VEs "
                 f"(paper: {PAPER['clustering_accuracy']}).")
        rep.table(_confusion_rows(clustering), "Confusion: true texture (rows) against cluster (columns, matched).")

    rep.section("Crystal plasticity").figure(stress_strain_figure(results),
                                             "sigma_zz against strain of every CP run of the CP set (converged ones "
                                             "faint, non-converged dashed), and the mean ± one standard deviation.")
    rep.text(f"{n_conv} of {n_runs} runs converged. Non-converged runs are excluded from the surrogate, listed "
             f"below.")
    if evaluation["excluded"]:
        rep.table(evaluation["excluded"], "Excluded runs.")

    rep.section("Surrogate")
    rep.figure(_parity_figure(evaluation), "Parity of predicted against true sigma_zz, every increment of every test "
                                           "VE.")
    rep.figure(_curves_figure(evaluation), f"Predicted (dashed) and true (solid) curves of {N_CURVES} test VEs; "
                                           "the baseline is the training-mean curve.")
    rep.figure(_mae_figure(evaluation), "Mean absolute error per strain increment on the test split (band: std over "
                                        "VEs): surrogate, baseline and, when present, the texture-descriptor "
                                        "reference.")
    rep.figure(_history_figure(evaluation["history"]),
               f"Surrogate MSE (scaled stress) per epoch; the weights of epoch {evaluation['best_epoch']} (lowest "
               f"validation MSE) are kept. The validation VEs are held out of the training split; the test split "
               f"only scores the final model.")
    rep.section("Provenance").json({"index": {k: index[k] for k in ("lattice", "seed")},
                                    "sets": {k: {"n_ve": v["n_ve"], "generator": v["generator"]}
                                             for k, v in sets.items()},
                                    "surrogate": evaluation.get("provenance", {})})
    return BuiltReport(report=rep, metrics={k: float(v) for k, v in metrics.items()})


def _metric_rows(metrics: Mapping[str, float], phi4: Mapping[str, Any], clustering: Mapping[str, Any]
                 ) -> list[dict[str, Any]]:
    rows = [
        ("phi4 train (mean misorientation)", metrics["phi4_train"], PAPER["phi4_train"]),
        ("phi4 validation", metrics["phi4_validation"], PAPER["phi4_test"]),
        ("clustering accuracy (textures)", metrics.get("clustering_accuracy", ""), PAPER["clustering_accuracy"]),
        ("surrogate MSE train (scaled)", metrics["surrogate_mse_train"], PAPER["surrogate_mse_train"]),
        ("surrogate MSE test (scaled)", metrics["surrogate_mse_test"], PAPER["surrogate_mse_test"]),
        ("surrogate MAE test (MPa)", metrics["surrogate_mae_MPa_test"], PAPER["surrogate_mae_MPa"]),
        ("  ± std over increments (MPa)", metrics["surrogate_mae_MPa_std_test"], PAPER["surrogate_mae_MPa_std"]),
        ("baseline MAE test (MPa)", metrics["baseline_mae_MPa_test"], ""),
        ("baseline MAE / surrogate MAE", metrics["mae_ratio_test"], ""),
        ("  95 % bootstrap interval over test VEs",
         (f"{metrics['mae_ratio_test_ci95_low']:.3g} to {metrics['mae_ratio_test_ci95_high']:.3g}"
          if "mae_ratio_test_ci95_low" in metrics else ""), ""),
        ("texture-descriptor ridge MAE test (MPa, reference)", metrics.get("texture_reference_mae_MPa_test", ""), ""),
        ("inference time per VE (s)", metrics["inference_s_per_ve"], PAPER["inference_s_per_ve"]),
        ("CP runs converged", f"{int(metrics['cp_converged'])} / {int(metrics['cp_runs'])}", "48,401 / 50,000"),
    ]
    return paper_rows(rows)


def _confusion_rows(clustering: Mapping[str, Any]) -> list[dict[str, Any]]:
    from scipy.optimize import linear_sum_assignment

    t, p = np.asarray(clustering["labels_true"]), np.asarray(clustering["labels_pred"])
    classes = clustering["classes"]
    counts = np.array([[np.sum((t == c) & (p == k)) for k in range(len(classes))] for c in range(len(classes))])
    _, cols = linear_sum_assignment(-counts)
    return [{"texture": name, **{classes[c]: int(counts[r, cols[c]]) for c in range(len(classes))}}
            for r, name in enumerate(classes)]


def _loss_figure(loss: list[dict[str, float]]):
    terms = ["total", "bce", "spectral", "kl"]
    if any(r.get("train_stats", 0) > 0 for r in loss):
        terms.append("stats")
    return loss_figure([r["epoch"] for r in loss],
                       {term: {"train": [r[f"train_{term}"] for r in loss],
                               "validation": [r[f"val_{term}"] for r in loss]} for term in terms})


def _slices_figure(examples: Mapping[str, Any]):
    names = list(examples)
    return image_grid([[np.moveaxis(np.asarray(examples[n][key]), 0, -1) for n in names]
                       for key in ("input", "reconstruction")],
                      row_labels=("input", "reconstruction"), col_titles=names, panel=(1.7, 1.8))


def _pca_figure(pca: Mapping[str, Any]):
    fig = _scatter_figure(pca["coords"], "PC 1", "PC 2")
    evr = pca["explained_variance_ratio"]
    fig.axes[0].set_title(f"morphology (explained variance {sum(evr[:2]):.2f} in 2 PCs)", fontsize=9)
    return fig


def _scatter_figure(coords_by_set: Mapping[str, Any], xlabel: str, ylabel: str):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    coords = {k: np.asarray(v) for k, v in coords_by_set.items()}
    for ax, group in zip(axes, (("train", "validation", "large_grains", "small_grains", "elongated", "cp"),
                                ("train", *TEXTURE_EDGE_CASES)), strict=True):
        for name in group:
            if name in coords and coords[name].shape[1] >= 2:
                c = coords[name]
                kw = {"s": 6, "alpha": 0.3, "color": "0.6"} if name == "train" else {"s": 12}
                ax.scatter(c[:, 0], c[:, 1], label=name, **kw)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, markerscale=1.5)
    axes[0].set_title("morphology", fontsize=9)
    axes[1].set_title("texture", fontsize=9)
    return fig


def _parity_figure(evaluation: Mapping[str, Any]):
    y, p = np.asarray(evaluation["test_true_Pa"]) / 1e6, np.asarray(evaluation["test_pred_Pa"]) / 1e6
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.scatter(y.ravel(), p.ravel(), s=5, c=np.tile(np.arange(y.shape[1]), len(y)), cmap="viridis")
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("CP sigma_zz (MPa)")
    ax.set_ylabel("surrogate sigma_zz (MPa)")
    return fig


def _curves_figure(evaluation: Mapping[str, Any]):
    y, p = np.asarray(evaluation["test_true_Pa"]) / 1e6, np.asarray(evaluation["test_pred_Pa"]) / 1e6
    strain = np.asarray(evaluation["strain"]) * 100
    fig, ax = plt.subplots(figsize=(6, 3.8))
    # the lowest, highest and two middle test curves: the seed's Fig. 9b shows extremes and typical VEs
    order = np.argsort(y[:, -1])
    picks = sorted(set(order[np.linspace(0, len(order) - 1, min(N_CURVES, len(order))).astype(int)].tolist()))
    for k, i in enumerate(picks):
        ax.plot(strain, y[i], color=f"C{k}", label=evaluation["split"]["test"][i])
        ax.plot(strain, p[i], color=f"C{k}", ls="--")
    ax.plot(strain, np.asarray(evaluation["baseline_curve_Pa"]) / 1e6, color="k", lw=0.8, ls=":", label="baseline")
    ax.set_xlabel("strain (%)")
    ax.set_ylabel("sigma_zz (MPa)")
    ax.legend(fontsize=7)
    return fig


def _mae_figure(evaluation: Mapping[str, Any]):
    ev = evaluation["evaluation"]["test"]
    k = np.arange(len(ev["mae_MPa_per_increment"]))
    m, s = np.asarray(ev["mae_MPa_per_increment"]), np.asarray(ev["abs_err_MPa_std_per_increment"])
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(k, m, label=f"surrogate ({ev['mae_MPa']:.2f} MPa)")
    ax.fill_between(k, np.maximum(m - s, 0), m + s, alpha=0.25)
    ax.plot(k, ev["baseline_mae_MPa_per_increment"], label=f"baseline ({ev['baseline_mae_MPa']:.2f} MPa)")
    reference = evaluation.get("texture_reference")
    if reference:
        ax.plot(k, reference["mae_MPa_per_increment"], ls="--",
                label=f"texture-descriptor ridge, reference ({reference['mae_MPa']:.2f} MPa)")
    ax.set_xlabel("increment")
    ax.set_ylabel("mean |error| (MPa)")
    ax.legend(fontsize=8)
    return fig


def _history_figure(history: list[Mapping[str, float]]):
    return loss_figure([h["epoch"] for h in history],
                       {"": {"train": [h["mse_train"] for h in history],
                             "validation (part of train)": [h["mse_val"] for h in history]}},
                       ylabel="MSE (scaled)", log=True)
