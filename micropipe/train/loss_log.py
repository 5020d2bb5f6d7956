"""Loss logs of the training loops: one CSV row per step or epoch, rewritten atomically after each."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path


def write(path: str | Path, rows: list[dict[str, float]], fields: Sequence[str]) -> None:
    """Write ``rows`` with columns ``fields`` to ``path``; readers see the old file or the complete new one."""
    from micropipe.store import atomic_path

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def read(path: str | Path, counter: str) -> list[dict[str, float]]:
    """Rows of a loss log: column ``counter`` (``step``, ``epoch``) as int, the others as float."""
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == counter else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]
