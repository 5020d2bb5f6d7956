"""The report kit every study uses: a :class:`Report` of sections with text, tables and matplotlib figures,
rendered to one self-contained HTML file (figures embedded as PNG data URIs, so the Kubeflow UI's
Visualizations tab shows it whole) and to Markdown (figures left out, tables kept); the :class:`BuiltReport`
a study returns with its metrics; the figures studies share (curves with a cap, slice panels, loss curves,
histograms); and the table that puts a run's numbers beside the paper's (:func:`paper_rows`)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless, in pods and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%}
.ok{color:#0a6b0a;font-weight:bold}.bad{color:#b00;font-weight:bold}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def compact_json(obj: Any, indent: int = 1) -> str:
    """JSON with mappings indented and every list whose items are all scalars on one line."""
    def scalar(v: Any) -> bool:
        return v is None or isinstance(v, str | int | float | bool)

    def fmt(v: Any, level: int) -> str:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(v, Mapping):
            if not v:
                return "{}"
            items = [f"{inner}{json.dumps(str(k))}: {fmt(x, level + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(v, list | tuple):
            if all(scalar(x) for x in v):
                return json.dumps(list(v), default=str)
            return "[\n" + ",\n".join(f"{inner}{fmt(x, level + 1)}" for x in v) + f"\n{pad}]"
        return json.dumps(v, default=str)

    return fmt(json.loads(json.dumps(obj, default=str)), 0)


def figure_png(fig: matplotlib.figure.Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def fmt(value: Any) -> str:
    """Compact text of a table cell: 4 significant digits for floats."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    """A report under construction.

    Examples
    --------
    >>> r = Report('ve_generation', subtitle='small preset')
    >>> r.section('Grain sizes').text('...').table([{'a': 1}]).figure(fig, 'caption')  # doctest: +SKIP
    >>> r.save_html('report.html')  # doctest: +SKIP
    """

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Report:
        self.sections.append(Section(title))
        return self

    def _add(self, kind: str, payload: Any) -> Report:
        if not self.sections:
            self.section("")
        self.sections[-1].blocks.append((kind, payload))
        return self

    def text(self, text: str) -> Report:
        return self._add("text", text)

    def table(self, rows: Sequence[Mapping[str, Any]], caption: str = "") -> Report:
        return self._add("table", (list(rows), caption))

    def figure(self, fig: matplotlib.figure.Figure, caption: str = "") -> Report:
        return self._add("figure", (figure_png(fig), caption))

    def code(self, text: str) -> Report:
        return self._add("code", text)

    def json(self, obj: Any) -> Report:
        """``obj`` as JSON, lists of numbers or strings on one line (a 3x3 matrix as three lines, not twelve)."""
        return self.code(compact_json(obj))

    def to_html(self) -> str:
        out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
               f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        if self.subtitle:
            out.append(f"<p>{html.escape(self.subtitle)}</p>")
        for sec in self.sections:
            if sec.title:
                out.append(f"<h2>{html.escape(sec.title)}</h2>")
            for kind, payload in sec.blocks:
                if kind == "text":
                    out.append(f"<p>{html.escape(payload)}</p>")
                elif kind == "code":
                    out.append(f"<pre>{html.escape(payload)}</pre>")
                elif kind == "figure":
                    png, caption = payload
                    data = base64.b64encode(png).decode()
                    out.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                               f"<figcaption>{html.escape(caption)}</figcaption></figure>")
                elif kind == "table":
                    out.append(_html_table(*payload))
        out.append("</body></html>")
        return "\n".join(out)

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        if self.subtitle:
            out += [self.subtitle, ""]
        for sec in self.sections:
            if sec.title:
                out += [f"## {sec.title}", ""]
            for kind, payload in sec.blocks:
                if kind == "text":
                    out += [payload, ""]
                elif kind == "code":
                    out += ["```", payload, "```", ""]
                elif kind == "figure":
                    out += [f"*Figure: {payload[1]} (in the HTML report)*", ""]
                elif kind == "table":
                    out += [_md_table(*payload), ""]
        return "\n".join(out)

    def save(self, html_path: str | os.PathLike, markdown_path: str | os.PathLike) -> None:
        """Write the report as HTML to ``html_path`` and as Markdown to ``markdown_path`` (local files)."""
        Path(html_path).write_text(self.to_html())
        Path(markdown_path).write_text(self.to_markdown())

    @property
    def n_figures(self) -> int:
        return sum(kind == "figure" for sec in self.sections for kind, _ in sec.blocks)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    return cols


def _html_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    cols = _columns(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def _md_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    cols = _columns(rows)
    lines = ([f"*{caption}*", ""] if caption else []) + [
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ built reports
@dataclass
class BuiltReport:
    """A study's report and the numbers behind it, as every study's ``build_report`` returns it.

    Attributes
    ----------
    report : Report
    metrics : dict
        Scalar metrics (KFP's Metrics artifact, the CLI's table).
    summary : dict
        Everything measured, JSON-ready (a study's ``statistics`` output).
    """

    report: Report
    metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self, html_path: str | os.PathLike, markdown_path: str | os.PathLike) -> None:
        """Write the report as HTML and Markdown (local files, e.g. KFP output artifact paths)."""
        self.report.save(html_path, markdown_path)

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``report.html``, ``report.md``, ``metrics.json`` and ``summary.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.save(out / "report.html", out / "report.md")
        (out / "metrics.json").write_text(json.dumps(self.metrics, indent=1))
        (out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str))
        return out

    def log_metrics(self, sink: Any) -> None:
        """``sink.log_metric(name, value)`` for every metric (KFP's ``Output[Metrics]`` has that method)."""
        for name, value in self.metrics.items():
            sink.log_metric(name, value)


def paper_rows(rows: Sequence[Sequence[Any]], columns: Sequence[str] = ("this run", "paper"),
               key: str = "metric") -> list[dict[str, Any]]:
    """Table rows that put this run's numbers beside the paper's: ``(name, value, ..., paper value)`` tuples
    become ``{key: name, columns[0]: value, ...}``; '' where a study has no value to give."""
    out = []
    for row in rows:
        if len(row) != len(columns) + 1:
            raise ValueError(f"paper_rows: row {row!r} has {len(row) - 1} values, expected {len(columns)} "
                             f"({', '.join(columns)})")
        out.append({key: row[0], **dict(zip(columns, row[1:], strict=True))})
    return out


# ------------------------------------------------------------------------------------------------ figures
def curves_figure(x: Sequence[Any], y: Sequence[Any], ok: Sequence[bool] | None = None, *, max_curves: int = 1000,
                  xlabel: str = "", ylabel: str = "", what: str = "converged",
                  failed: str = "not converged") -> matplotlib.figure.Figure:
    """Many curves on one axis: each faint (the first ``max_curves`` good ones at most: drawing 50,000 lines adds
    nothing to the picture but minutes), the mean ± one standard deviation of the good ones bold, bad ones dashed
    red. Curves may differ in length; the mean is taken on the longest good curve's x where each curve reaches.

    Parameters
    ----------
    x, y : sequences of 1-D arrays
        One curve each, in the units to show.
    ok : sequence of bool, optional
        Which curves are good (default all); bad ones are always drawn and counted in the legend.
    what, failed : str
        Legend words for the good and the bad curves.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [np.asarray(v, float) for v in x]
    y = [np.asarray(v, float) for v in y]
    good = np.ones(len(x), bool) if ok is None else np.asarray(ok, bool)
    alpha = max(0.05, min(0.5, 8.0 / max(len(x), 1)))
    shown = np.zeros(len(x), bool)
    shown[np.flatnonzero(good)[:max_curves]] = True
    shown |= ~good
    for k in np.flatnonzero(shown):
        if good[k]:
            ax.plot(x[k], y[k], color="C0", lw=0.7, alpha=alpha)
        else:
            ax.plot(x[k], y[k], color="C3", lw=0.8, ls="--", alpha=min(1.0, 2 * alpha))
    if (~good).any():
        ax.plot([], [], color="C3", ls="--", label=f"{int((~good).sum())} {failed}")
    if good.any():
        grid = max((x[k] for k in np.flatnonzero(good)), key=len)
        curves = np.array([np.interp(grid, x[k], y[k], right=np.nan) for k in np.flatnonzero(good)])
        mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        ax.fill_between(grid, mean - std, mean + std, color="C0", alpha=0.25, lw=0, label="± 1 std")
        ax.plot(grid, mean, color="k", lw=2, label=f"mean of {int(good.sum())} {what}")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig


def image_grid(images: Sequence[Sequence[Any]], *, row_labels: Sequence[str] = (), col_titles: Sequence[str] = (),
               cmap: str | None = None, panel: tuple[float, float] = (2.4, 2.4), ticks: bool = False,
               xlabel: str = "", ylabel: str = "") -> matplotlib.figure.Figure:
    """Slice panels: ``images[row][col]`` are 2-D arrays indexed (x, y) (grey or colour-mapped with ``cmap``) or
    (x, y, 3) RGB in [0, 1], drawn with x to the right and y up, nearest-neighbour, one voxel one pixel.

    Rows and columns may be labelled; ``xlabel``/``ylabel`` label the axes of the first panel of each row and
    column (voxels); overlays go on ``fig.axes`` afterwards (row-major).
    """
    n_rows, n_cols = len(images), max(len(r) for r in images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel[0] * n_cols, panel[1] * n_rows), squeeze=False)
    for r, row in enumerate(images):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(row):
                ax.set_axis_off()
                continue
            img = np.asarray(row[c])
            img = np.swapaxes(img, 0, 1)  # (x, y) -> rows are y
            ax.imshow(np.clip(img, 0, 1) if img.ndim == 3 else img, origin="lower", interpolation="nearest",
                      cmap=cmap)
            if not ticks:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == n_rows - 1 and xlabel:
                ax.set_xlabel(xlabel)
            if c == 0 and (row_labels or ylabel):
                ax.set_ylabel(row_labels[r] if row_labels else ylabel)
            if r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
    return fig


def loss_figure(x: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[float]]], *, xlabel: str = "epoch",
                ylabel: str = "", log: bool | None = None, panel: tuple[float, float] = (6.0, 3.2)
                ) -> matplotlib.figure.Figure:
    """Training curves: one panel per ``panels`` entry (its key is the title), one line per series in it.

    ``log``: log scale on y; None chooses it per panel when every value there is positive.
    """
    n = max(1, len(panels))
    width = panel[0] if n == 1 else 3.25 * n
    fig, axes = plt.subplots(1, n, figsize=(width, panel[1]), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=False):
        values = [np.asarray(v, float) for v in series.values()]
        for label, v in zip(series, values, strict=True):
            ax.plot(x, v, label=label)
        positive = all(np.all(v > 0) for v in values)
        ax.set_yscale("log" if (positive if log is None else log) else "linear")
        if title:
            ax.set_title(title)
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    if n > 1:
        fig.tight_layout()
    return fig


def histogram_figure(samples: Mapping[str, Sequence[float]], *, bins: Any = 30, xlabel: str = "", ylabel: str = "",
                     marks: Mapping[str, float] | None = None, density: bool = False,
                     figsize: tuple[float, float] = (6.0, 3.2)) -> matplotlib.figure.Figure:
    """Overlaid histograms of ``samples`` ({label: values}) on shared bins, with dashed vertical ``marks``
    ({label: x}, e.g. a target or a mean). A single unlabelled sample gets no legend entry of its own."""
    fig, ax = plt.subplots(figsize=figsize)
    values = {k: np.asarray(v, float) for k, v in samples.items()}
    if np.ndim(bins) == 0 and len(values) > 1:
        both = np.concatenate(list(values.values()))
        bins = np.linspace(both.min(), both.max() + 1e-12, int(bins) + 1)
    for label, v in values.items():
        ax.hist(v, bins=bins, alpha=0.6 if len(values) > 1 else 0.7, density=density, label=label or None)
    for k, (label, at) in enumerate((marks or {}).items()):
        ax.axvline(at, color="k" if k == 0 else f"C{k + 2}", ls="--", label=label or None)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig
