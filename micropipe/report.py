"""Run reports: sections of text, tables and matplotlib figures, rendered to one self-contained HTML
file (figures embedded as PNG data URIs, so the Kubeflow UI's Visualizations tab shows it whole) and
to Markdown (figures left out, tables kept)."""

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
        return self.code(json.dumps(obj, indent=1, default=str))

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
