"""The import layers of README's code map, checked on the source (ast, every import, also inside functions).

Lowest first: core (params, provenance, device, store, report) < crystal < ve < spectral < backends < datasets <
models < metrics < train < studies < cli. A module may import its own layer and the layers below it. Nothing in
``micropipe/`` but the CLI imports ``kfp``, ``components`` or ``pipelines``; components never import pipelines.
"""

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = ("core", "crystal", "ve", "spectral", "backends", "datasets", "models", "metrics", "train", "studies", "cli")
"""README "Code map", lowest first."""

CORE = {"micropipe", "micropipe.params", "micropipe.provenance", "micropipe.device", "micropipe.store",
        "micropipe.report"}
TOP = {"micropipe.cli", "micropipe.__main__"}
ORCHESTRATION = ("kfp", "components", "pipelines")


def layer(module: str) -> str:
    """Layer of a ``micropipe`` module (dotted name)."""
    if module in CORE:
        return "core"
    if module in TOP:
        return "cli"
    package = module.split(".")[1]
    if package not in LAYERS:
        raise AssertionError(f"{module}: package {package!r} is in no layer; add it to README's code map and LAYERS")
    return package


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file; ``from micropipe import store`` imports ``micropipe.store``,
    ``from micropipe import __version__`` the package itself."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; the layer test reads absolute ones"
            for alias in node.names:
                sub = root.joinpath(*node.module.split("."), alias.name)
                is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                out.append((node.lineno, f"{node.module}.{alias.name}" if is_module else node.module))
    return out


def layer_of_import(target: str) -> str:
    """Layer of an imported ``micropipe`` module: that of its package (``micropipe.crystal.tensors`` -> crystal)."""
    return layer(".".join(target.split(".")[:2]))


def violations(root: Path) -> list[str]:
    """Every import against the layer order, and every orchestration import from the library or a component."""
    found = []
    for path in sorted((root / "micropipe").rglob("*.py")):
        module = module_name(path, root)
        own = layer(module)
        for line, target in imports(path, root):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top in ORCHESTRATION and own != "cli":
                found.append(f"{where}: library module {module} imports {target}")
            elif top == "micropipe" and LAYERS.index(layer_of_import(target)) > LAYERS.index(own):
                found.append(f"{where}: {module} ({own}) imports {target} ({layer_of_import(target)}), a layer "
                             f"above it")
    for path in sorted((root / "components").rglob("*.py")):
        for line, target in imports(path, root):
            if target.split(".")[0] == "pipelines":
                found.append(f"{path.relative_to(root)}:{line}: component imports {target}")
    return found


def test_every_micropipe_module_has_a_layer():
    for path in (ROOT / "micropipe").rglob("*.py"):
        layer(module_name(path, ROOT))


def test_no_import_runs_up_the_layers():
    assert violations(ROOT) == []


PLANTED = {
    "crystal imports a study": ("micropipe/crystal/planted.py", "from micropipe.studies.cp_dataset import runs\n",
                                "micropipe.crystal.planted (crystal) imports micropipe.studies.cp_dataset"),
    "ve imports datasets, inside a function": ("micropipe/ve/planted.py",
                                               "def f():\n    from micropipe.datasets import ve\n",
                                               "micropipe.ve.planted (ve) imports micropipe.datasets"),
    "models import train": ("micropipe/models/planted.py", "from micropipe import train\n",
                            "imports micropipe.train (train)"),
    "the report kit imports crystal": ("micropipe/report.py",
                                       "import micropipe.store\nfrom micropipe.crystal import LATTICES\n",
                                       "micropipe.report (core) imports micropipe.crystal"),
    "a study imports kfp": ("micropipe/studies/planted.py", "from kfp import dsl\n",
                            "library module micropipe.studies.planted imports kfp"),
    "a dataset imports pipelines": ("micropipe/datasets/planted.py", "import pipelines\n", "imports pipelines"),
    "a component imports pipelines": ("components/planted.py", "def c():\n    from pipelines import _kfp\n",
                                      "component imports pipelines"),
}
"""Upward imports planted into a copy of the tree: (file, text appended, what the one violation must say)."""


@pytest.mark.parametrize("case", PLANTED)
def test_a_planted_upward_import_is_found(tmp_path, case):
    where, planted, expected = PLANTED[case]
    for part in ("micropipe", "components"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / where
    target.write_text((target.read_text() if target.exists() else "") + planted)
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0], found
