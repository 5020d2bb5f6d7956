"""Golden compiled pipelines: every pipeline x profile compiled now equals its checked-in IR YAML.

The YAML carries each component's function source, so any change to a DAG or a component body shows up in
review as a change to ``tests/golden/``. The golden files leave out the volatile parts (see :func:`comparable`).
Regenerate them after an intended change with ``make golden``, i.e.

    .venv/bin/python -m pytest tests/test_golden.py --update-golden
"""

import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipelines
from pipelines import _kfp

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [(name, profile) for name in pipelines.PIPELINES for profile in _kfp.profile_names()]
UPDATE = "make golden (i.e. .venv/bin/python -m pytest tests/test_golden.py --update-golden)"
DIFF_LINES = 80


def golden_path(name: str, profile: str) -> Path:
    return GOLDEN / f"{name}.{profile}.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, str], str]:
    """Every pipeline compiled with every shipped profile by ``micropipe compile --profile all`` in a fresh
    interpreter without ``MICROPIPE_*_IMAGE`` variables, so the steps get the default images."""
    out = tmp_path_factory.mktemp("compiled")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPIPE_")}
    proc = subprocess.run([sys.executable, "-m", "micropipe", "compile", "--profile", "all", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {(name, profile): (out / (f"{name}.yaml" if profile == "cpu" else f"{name}.{profile}.yaml")).read_text()
            for name, profile in CASES}


def comparable(text: str) -> list[str]:
    """The lines that must match, and what a golden file holds: the compiled YAML without kfp's header comment (a
    summary of the inputs, whose default dicts it prints in an order that changes from one run to the next; the
    inputs themselves are in the spec) and without the ``sdkVersion`` line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return [line for line in lines[start:] if not line.startswith("sdkVersion: ")]


@pytest.mark.parametrize(("name", "profile"), CASES)
def test_compiled_pipeline_matches_golden(compiled, request, name, profile):
    path = golden_path(name, profile)
    fresh = compiled[name, profile]
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(comparable(fresh)) + "\n")
        return
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing; create it with: {UPDATE}", pytrace=False)
    diff = list(difflib.unified_diff(comparable(path.read_text()), comparable(fresh),
                                     fromfile=str(path.relative_to(ROOT)), tofile=f"{name} ({profile}) compiled now",
                                     lineterm=""))
    if diff:
        shown = "\n".join(diff[:DIFF_LINES]) + (f"\n... {len(diff) - DIFF_LINES} more diff lines"
                                                if len(diff) > DIFF_LINES else "")
        pytest.fail(f"{name} compiled with profile {profile} differs from {path.relative_to(ROOT)}:\n{shown}\n\n"
                    f"If the change is intended, regenerate the golden files: {UPDATE}", pytrace=False)


def test_no_stale_golden_files():
    expected = {golden_path(name, profile).name for name, profile in CASES}
    stale = sorted(p.name for p in GOLDEN.glob("*.yaml") if p.name not in expected)
    assert not stale, f"golden files of no pipeline x profile: {', '.join(stale)}; delete them"


def test_comparison_ignores_only_the_header_and_sdk_version():
    a = "# PIPELINE DEFINITION\n# generator: dict [Default: {'a': 1, 'b': 2}]\ncomponents: {}\nsdkVersion: kfp-2.17.3\n"
    b = "# PIPELINE DEFINITION\n# generator: dict [Default: {'b': 2, 'a': 1}]\ncomponents: {}\nsdkVersion: kfp-9.9.9\n"
    assert comparable(a) == comparable(b) == ["components: {}"]
    assert comparable(a.replace("{}", "{x: 1}")) != comparable(a)
