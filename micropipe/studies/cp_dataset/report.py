"""The cp_dataset report: stress-strain curves, convergence, iterations and wall time of a CP results frame, with
the scalar metrics the pipeline logs."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from micropipe.report import BuiltReport, Report, curves_figure, histogram_figure

log = logging.getLogger(__name__)

STRAIN_POINTS = (0.002, 0.01)
"""Engineering strains at which the report and metrics give the mean sigma_zz."""
MAX_CURVES = 1000
"""Converged curves drawn one by one in the report (all go into the mean and spread)."""


def stress_at(df: pd.DataFrame, strain: float) -> np.ndarray:
    """sigma_zz (Pa) of every converged VE at engineering strain ``strain`` (linear interpolation), shape (n,).

    VEs that did not reach ``strain`` are left out.
    """
    out = [np.interp(strain, s, t) for s, t, ok in zip(df["strain"], df["stress"], df["converged"], strict=True)
           if ok and len(s) > 1 and s[-1] >= strain * (1 - 1e-9)]
    return np.asarray(out, float)


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts, stresses at :data:`STRAIN_POINTS`, wall times and iterations of a results frame."""
    ok = df["converged"].to_numpy(bool)
    wall = df["wall_time_s"].to_numpy(float)
    its = [np.asarray(v) for v in df["iterations"]]
    summary: dict[str, Any] = {
        "n_ve": int(len(df)), "n_converged": int(ok.sum()), "n_failed": int((~ok).sum()),
        "backends": sorted(set(df["backend"])),
        "reasons": df.loc[~ok, "reason"].value_counts().to_dict(),
        "wall_time_s": {"mean": _mean(wall), "min": _min(wall), "max": _max(wall), "total": float(wall.sum())},
        "iterations_per_increment_mean": _mean(np.concatenate(its)) if its else None,
        "cutbacks_total": int(sum(np.asarray(v).sum() for v in df["cutbacks"])),
        "n_grains_mean": _mean(df["n_grains"].to_numpy(float)),
        "stress_at": {},
    }
    for e in STRAIN_POINTS:
        s = stress_at(df, e)
        summary["stress_at"][f"{e:g}"] = {"n": int(s.size), "mean_MPa": _mean(s / 1e6), "std_MPa": _std(s / 1e6),
                                          "min_MPa": _min(s / 1e6), "max_MPa": _max(s / 1e6)}
    return summary


def _mean(a: np.ndarray) -> float | None:
    return float(np.mean(a)) if np.size(a) else None


def _std(a: np.ndarray) -> float | None:
    return float(np.std(a)) if np.size(a) else None


def _min(a: np.ndarray) -> float | None:
    return float(np.min(a)) if np.size(a) else None


def _max(a: np.ndarray) -> float | None:
    return float(np.max(a)) if np.size(a) else None


def metrics_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics for KFP's Metrics artifact and the CLI table (stresses in MPa)."""
    m: dict[str, float] = {"n_ves": summary["n_ve"], "n_converged": summary["n_converged"],
                           "n_failed": summary["n_failed"]}
    for key, name in (("0.002", "sigma_zz_MPa_at_0p2pct_mean"), ("0.01", "sigma_zz_MPa_at_1pct_mean")):
        at = summary["stress_at"][key]
        if at["mean_MPa"] is not None:
            m[name] = at["mean_MPa"]
            m[name.replace("_mean", "_std")] = at["std_MPa"]
    if summary["wall_time_s"]["mean"] is not None:
        m["wall_time_s_mean"] = summary["wall_time_s"]["mean"]
    if summary["iterations_per_increment_mean"] is not None:
        m["iterations_per_increment_mean"] = summary["iterations_per_increment_mean"]
    return m


def build_report(df: pd.DataFrame, *, provenance: Mapping[str, Any] | None = None, source: str = "",
                 max_failures: int = 50) -> BuiltReport:
    """The CP dataset report: stress-strain curves, convergence, wall time, iterations.

    Parameters
    ----------
    df : pandas.DataFrame
        CP results (:func:`read_results` / :func:`gather`).
    provenance : mapping, optional
        Provenance of the results (default: ``df.attrs['micropipe']['provenance']`` when there).
    source : str
        Where the results are, for the subtitle.
    max_failures : int
        Non-converged VEs listed one by one.
    """
    if not len(df):
        raise ValueError("CP results: no rows to report on")
    prov = dict(provenance or df.attrs.get("micropipe", {}).get("provenance") or {})
    params = prov.get("params", {})
    summary = summarize(df)
    phase = next(iter(params.get("phase", {"?": None})))
    cells = "×".join(map(str, np.asarray(df["cells"].iloc[0]).tolist()))
    r = Report("CP dataset report",
               subtitle=f"{summary['n_ve']} VEs of {cells} voxels (about {summary['n_grains_mean']:.0f} grains), "
                        f"phase {phase}, {', '.join(summary['backends'])} solver"
                        + (f", results at {source}" if source else "")
                        + (f". micropipe {prov.get('version')}, commit {prov.get('git_commit')}" if prov else "")
                        + ".")
    r.section("Summary").table(_summary_rows(summary))
    r.section("Stress-strain curves").figure(
        stress_strain_figure(df), "Volume-averaged Cauchy σ_zz against engineering strain ε_zz: each VE faint (the "
        f"first {MAX_CURVES} at most), the mean ± one standard deviation across converged VEs bold; non-converged runs "
        "dashed red up to their last converged increment.")
    r.section("Convergence").table(_convergence_rows(summary))
    failed = df.loc[~df["converged"].to_numpy(bool)]
    if len(failed):
        r.table([{"ve_id": row.ve_id, "increments completed": int(row.n_increments), "reason": row.reason}
                 for row in failed.head(max_failures).itertuples()],
                f"Non-converged VEs (first {min(len(failed), max_failures)} of {len(failed)}); they stay in the "
                "results with converged = false.")
    r.figure(_iterations_figure(df), "Global iterations per increment (mean and range over VEs) and cutbacks "
                                     "per increment (summed over VEs).")
    r.section("Wall time").figure(_wall_time_figure(df), f"Wall time per VE; mean "
                                  f"{summary['wall_time_s']['mean']:.3g} s.")
    if params:
        r.section("Parameters").json(params)
    if prov:
        r.section("Provenance").json({k: v for k, v in prov.items() if k != "params"})
    return BuiltReport(report=r, metrics=metrics_of(summary), summary=summary)


def report(df: pd.DataFrame, out_dir: str | os.PathLike, **kwargs: Any) -> BuiltReport:
    """Build the report (:func:`build_report`) and write ``report.html``, ``report.md``, ``metrics.json`` and
    ``summary.json`` to ``out_dir``."""
    built = build_report(df, **kwargs)
    built.write(out_dir)
    log.info("wrote CP report to %s", out_dir)
    return built


def _summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"quantity": "VEs", "value": summary["n_ve"], "note": ""},
        {"quantity": "converged", "value": summary["n_converged"],
         "note": f"{summary['n_converged'] / summary['n_ve']:.1%}"},
    ]
    for key, at in summary["stress_at"].items():
        rows.append({"quantity": f"σ_zz at ε_zz = {float(key):.1%} (MPa)", "value": at["mean_MPa"],
                     "note": "" if at["mean_MPa"] is None else
                     f"± {at['std_MPa']:.3g} (std), range {at['min_MPa']:.4g} … {at['max_MPa']:.4g}, "
                     f"{at['n']} VEs"})
    wall = summary["wall_time_s"]
    rows.append({"quantity": "wall time per VE (s)", "value": wall["mean"],
                 "note": f"range {wall['min']:.3g} … {wall['max']:.3g}, total {wall['total']:.4g}"})
    rows.append({"quantity": "global iterations per increment", "value": summary["iterations_per_increment_mean"],
                 "note": f"{summary['cutbacks_total']} cutbacks in all"})
    return rows


def _convergence_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [{"outcome": "converged", "VEs": summary["n_converged"]}]
    rows += [{"outcome": f"not converged: {reason or '(no reason given)'}", "VEs": n}
             for reason, n in sorted(summary["reasons"].items(), key=lambda kv: -kv[1])[:20]]
    if len(summary["reasons"]) > 20:
        rows.append({"outcome": f"not converged: {len(summary['reasons']) - 20} further reasons",
                     "VEs": sum(sorted(summary["reasons"].values(), reverse=True)[20:])})
    return rows


def stress_strain_figure(df: pd.DataFrame) -> Any:
    """sigma_zz (MPa) against engineering strain (%) of every run of a CP results frame (:func:`curves_figure`:
    the first :data:`MAX_CURVES` converged runs drawn, all in the mean; non-converged runs dashed)."""
    return curves_figure([100 * np.asarray(s) for s in df["strain"]], [np.asarray(t) / 1e6 for t in df["stress"]],
                         df["converged"].to_numpy(bool), max_curves=MAX_CURVES, what="converged VEs",
                         xlabel="engineering strain ε_zz (%)", ylabel="Cauchy stress σ_zz (MPa)")


def _iterations_figure(df: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    n = max((len(v) for v in df["iterations"]), default=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    if n:
        its = np.full((len(df), n), np.nan)
        cuts = np.zeros(n)
        for k, (i, c) in enumerate(zip(df["iterations"], df["cutbacks"], strict=True)):
            its[k, :len(i)] = i
            cuts[:len(c)] += c
        x = np.arange(1, n + 1)
        a.fill_between(x, np.nanmin(its, axis=0), np.nanmax(its, axis=0), alpha=0.3, lw=0)
        a.plot(x, np.nanmean(its, axis=0), "o-", ms=3)
        if cuts.any():
            b.bar(x, cuts, color="C1")
            b.set_ylim(0, None)
            b.yaxis.get_major_locator().set_params(integer=True)
    if not n or not cuts.any():  # an empty panel with a +-0.04 axis said nothing
        b.text(0.5, 0.5, "no cutbacks", ha="center", va="center", transform=b.transAxes)
        b.set_yticks([])
    a.set_xlabel("increment")
    a.set_ylabel("global iterations")
    b.set_xlabel("increment")
    b.set_ylabel("cutbacks (all VEs)")
    return fig


def _wall_time_figure(df: pd.DataFrame) -> Any:
    wall = df["wall_time_s"].to_numpy(float)
    return histogram_figure({"": wall}, bins=min(30, max(5, len(wall) // 2)), xlabel="wall time per VE (s)",
                            ylabel="VEs", marks={f"mean {wall.mean():.3g} s": wall.mean()}, figsize=(6, 3))
