"""DREAM.3D backend: the pipeline JSON on its own, the PipelineRunner wrapper (with a stand-in), and a real run."""

from __future__ import annotations

import json
import math
import sys
import textwrap

import damask
import numpy as np
import pytest

from micropipe.backends import dream3d
from micropipe.ve import io, texture
from micropipe.ve.generator import GeneratorConfig

BASE = dict(cells=(5, 6, 7), spacing=0.25, esd_mean=5.78, esd_sigma=0.1, esd_min_cutoff=5.0, esd_max_cutoff=5.0,
            axis_ratio=(1, 1, 1), lattice="cF")
ORDER = ["StatsGeneratorFilter", "InitializeSyntheticVolume", "EstablishShapeTypes", "PackPrimaryPhases",
         "FindNeighbors", "MatchCrystallography", "DataContainerWriter"]


def _write(tmp_path, *, rng_seed=None, bin_step=0.5, **overrides):
    """The pipeline for BASE with ``overrides``, given as the plain generator dict."""
    path = dream3d.write_pipeline_json(tmp_path / "pipeline.json", {**BASE, **overrides},
                                       output_path=tmp_path / "out" / "synthetic.dream3d", rng_seed=rng_seed,
                                       bin_step=bin_step)
    return json.loads(path.read_text())


def _by_name(doc):
    return {doc[str(i)]["Filter_Name"]: doc[str(i)] for i in range(doc["PipelineBuilder"]["Number_Filters"])}


def test_pipeline_structure(tmp_path):
    doc = _write(tmp_path, rng_seed=11)
    assert doc["PipelineBuilder"]["Version"] == 6
    assert doc["PipelineBuilder"]["Number_Filters"] == len(ORDER)
    assert "rng_seed=11" in doc["PipelineBuilder"]["Name"]
    assert set(doc) == {str(i) for i in range(len(ORDER))} | {"PipelineBuilder"}
    assert [doc[str(i)]["Filter_Name"] for i in range(len(ORDER))] == ORDER
    for i in range(len(ORDER)):
        f = doc[str(i)]
        assert f["Filter_Uuid"] == dream3d.FILTER_UUIDS[f["Filter_Name"]]
        assert f["Filter_Enabled"] is True and f["Filter_Human_Label"] and f["FilterVersion"].count(".") == 2
    # every array path points at a data container the pipeline creates
    containers = {dream3d.STATS_DC, dream3d.VOLUME_DC, ""}
    paths = [v for i in range(len(ORDER)) for v in doc[str(i)].values()
             if isinstance(v, dict) and "Data Container Name" in v]
    assert paths and {p["Data Container Name"] for p in paths} <= containers


def test_pipeline_parameters_follow_inputs(tmp_path):
    doc = _by_name(_write(tmp_path, spacing=0.5, lattice="hP"))
    init = doc["InitializeSyntheticVolume"]
    assert init["Dimensions"] == {"x": 5, "y": 6, "z": 7}
    assert init["Resolution"] == init["Spacing"] == {"x": 0.5, "y": 0.5, "z": 0.5}
    assert doc["PackPrimaryPhases"]["PeriodicBoundaries"] == 1
    assert doc["FindNeighbors"]["StoreSurfaceFeatures"] == 1
    out = doc["DataContainerWriter"]["OutputFile"]
    assert out == str((tmp_path / "out" / "synthetic.dream3d").resolve())
    stats = doc["StatsGeneratorFilter"]["StatsDataArray"]["1"]
    mu = math.log(5.78) - 0.1**2 / 2
    assert stats["FeatureSize Distribution"] == {"Average": pytest.approx(mu), "Standard Deviation": 0.1}
    assert stats["Crystal Symmetry"] == 0 and stats["PhaseType"] == "Primary"  # hP -> Hexagonal_High
    assert stats["Feature_Diameter_Info"] == pytest.approx([0.5, math.exp(mu + 0.5), math.exp(mu - 0.5)])
    assert stats["Bin Count"] == len(stats["BinNumber"])
    np.testing.assert_allclose(np.diff(stats["BinNumber"]), 0.5)
    assert stats["ODF-Weights"] == {} and stats["AxisODF-Weights"] == {}  # random texture, equiaxed
    assert _by_name(_write(tmp_path, lattice="cI"))["StatsGeneratorFilter"]["StatsDataArray"]["1"][
        "Crystal Symmetry"] == 1
    stats = _by_name(_write(tmp_path, bin_step=0.25))["StatsGeneratorFilter"]["StatsDataArray"]["1"]
    assert stats["Feature_Diameter_Info"][0] == 0.25
    np.testing.assert_allclose(np.diff(stats["BinNumber"]), 0.25)


def test_pipeline_from_generator_config(tmp_path):
    """A GeneratorConfig and its plain dict (morphology presets included) give the same pipeline."""
    out = tmp_path / "x.dream3d"
    config = GeneratorConfig.from_dict({"cells": 16, "morphology": "small_grains"})
    doc = dream3d.pipeline(config, output_path=out)
    assert doc == dream3d.pipeline({"cells": 16, "morphology": "small_grains"}, output_path=out)
    assert doc == dream3d.pipeline(config.to_dict(), output_path=out)
    named = _by_name(doc)
    stats = named["StatsGeneratorFilter"]["StatsDataArray"]["1"]
    assert dream3d.primary_stats(config) == stats == dream3d.primary_stats(config.to_dict(), bin_step=0.5)
    assert named["InitializeSyntheticVolume"]["Dimensions"] == {"x": 16, "y": 16, "z": 16}
    assert stats["FeatureSize Distribution"]["Average"] == pytest.approx(config.esd_mu)
    assert config.esd_mean == 2.73
    elongated = _by_name(dream3d.pipeline({"morphology": "elongated"}, output_path=out))
    assert elongated["StatsGeneratorFilter"]["StatsDataArray"]["1"]["AxisODF-Weights"]  # (2, 1, 1): rolled preset


def test_statistics_match_dream3d_example(tmp_path):
    """DREAM.3D's ExampleStatsGeneratorPipeline.json: Mu 1, Sigma 0.1, cut-offs 5, bin step 0.5 (equiaxed preset)."""
    doc = _by_name(_write(tmp_path, esd_mean=math.exp(1 + 0.1**2 / 2)))
    stats = doc["StatsGeneratorFilter"]["StatsDataArray"]["1"]
    assert stats["FeatureSize Distribution"]["Average"] == pytest.approx(1.0)
    np.testing.assert_allclose(stats["BinNumber"], [1.6487212181091309, 2.1487212181091309, 2.6487212181091309,
                                                    3.1487212181091309, 3.6487212181091309, 4.1487212181091309],
                               rtol=1e-7)
    np.testing.assert_allclose(stats["Feature_Diameter_Info"], [0.5, 4.4816889762878418, 1.6487212181091309],
                               rtol=1e-7)
    neighbors = stats["FeatureSize Vs Neighbors Distributions"]
    np.testing.assert_allclose(neighbors["Average"], [2.0794415473937988, 2.3025851249694824, 2.4849066734313965,
                                                      2.6390573978424072, 2.7725887298583984, 2.8903717994689941],
                               rtol=1e-7)
    np.testing.assert_allclose(neighbors["Standard Deviation"], [0.4, 0.36666667, 0.33333334, 0.3, 0.26666665,
                                                                 0.23333333], rtol=1e-6)
    b_over_a = stats["FeatureSize Vs B Over A Distributions"]  # example: alpha 15..16, beta 1.25..1.75
    assert all(15 <= a <= 16 for a in b_over_a["Alpha"]) and all(1.25 <= b <= 1.75 for b in b_over_a["Beta"])


@pytest.mark.parametrize(("axis_ratio", "long_axis"), [((2, 1, 1), 0), ((1, 2, 1), 1), ((1, 1, 2), 2)])
def test_elongated_grains(tmp_path, axis_ratio, long_axis):
    stats = _by_name(_write(tmp_path, axis_ratio=axis_ratio, esd_mean=9.54))["StatsGeneratorFilter"][
        "StatsDataArray"]["1"]
    for key in ("FeatureSize Vs B Over A Distributions", "FeatureSize Vs C Over A Distributions"):
        a, b = np.array(stats[key]["Alpha"]), np.array(stats[key]["Beta"])
        np.testing.assert_allclose(a / (a + b), 0.5, atol=0.02)  # mean of the beta distribution = b/a = c/a
    odf = stats["AxisODF-Weights"]
    assert odf["Sigma"] == [3.0] and odf["Weight"] == [pytest.approx(46656 * 0.75 / 64)]  # DREAM.3D rolled preset
    g = damask.Rotation.from_Euler_angles([odf["Euler 1"][0], odf["Euler 2"][0], odf["Euler 3"][0]]).as_matrix()
    np.testing.assert_allclose(np.abs(g[0]), np.eye(3)[long_axis], atol=1e-12)  # ellipsoid a-axis along the long axis


@pytest.mark.parametrize(("override", "match"), [
    ({"lattice": "fcc"}, "lattice must be one of cF, cI, hP, got 'fcc'"),
    ({"cells": (0, 4, 4)}, "cells must be positive integers"),
    ({"cells": (4.5, 4, 4)}, "cells must be integers"),
    ({"esd_sigma": -0.1}, "esd_sigma must be a finite number >= 0"),
    ({"esd_mean": float("nan")}, "esd_mean must be a number"),
    ({"axis_ratio": (1, 1)}, "axis_ratio must be one or three floats"),
    ({"spacing": (0.25, 0.5, 1.0)}, "spacing must be a number"),  # GeneratorConfig: one voxel edge length
    ({"texture": "goss"}, "texture must be 'random'"),
    ({"second_phase_fraction": 0.1}, "second_phase_fraction must be 0"),
    ({"bin_step": 0}, "bin_step must be a finite number > 0"),
    ({"bin_step": float("inf")}, "bin_step must be a finite number > 0"),
])
def test_pipeline_rejects_bad_parameters(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        _write(tmp_path, **override)
    assert not (tmp_path / "pipeline.json").exists()


# --------------------------------------------------------------------------------------------------
# PipelineRunner wrapper, with a stand-in executable
# --------------------------------------------------------------------------------------------------

def _fake_runner(tmp_path, body: str):
    script = tmp_path / "bin" / "PipelineRunner"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


STAND_IN = """
    import json, sys
    import numpy as np
    import h5py
    from micropipe.ve import io
    from micropipe.ve.volume import VolumeElement
    doc = json.load(open(sys.argv[sys.argv.index("-p") + 1]))
    init = next(f for f in doc.values() if f.get("Filter_Name") == "InitializeSyntheticVolume")
    out = next(f for f in doc.values() if f.get("Filter_Name") == "DataContainerWriter")["OutputFile"]
    cells = tuple(init["Dimensions"][a] for a in "xyz")
    g = (np.indices(cells).sum(axis=0) // 3 % 4).astype(np.int32)
    # orientations anywhere in Euler space, as MatchCrystallography leaves them: not reduced to the FZ
    euler = np.random.default_rng(7).uniform(0.0, 1.0, (4, 3)) * np.array([2 * np.pi, np.pi, 2 * np.pi])
    ve = VolumeElement(grain_ids=g, euler=euler, phase=np.zeros(4, np.int32),
                       spacing=np.array([init["Resolution"][a] for a in "xyz"]), lattice="cF")
    io.save_dream3d(out, ve)
    with h5py.File(out, "a") as f:  # as DREAM.3D leaves it: no micropipe metadata
        del f.attrs["micropipe"]
    print("Pipeline Complete")
"""


@pytest.fixture
def no_runner(monkeypatch, tmp_path):
    monkeypatch.delenv(dream3d.RUNNER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_find_binary(monkeypatch, tmp_path, no_runner):
    assert dream3d.find_binary() is None
    script = _fake_runner(tmp_path, "print('hi')\n")
    monkeypatch.setenv("PATH", str(script.parent))
    assert dream3d.find_binary() == str(script)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv(dream3d.RUNNER_ENV, str(script))
    assert dream3d.find_binary() == str(script)


def test_generate_without_runner(tmp_path, no_runner):
    with pytest.raises(FileNotFoundError, match="DREAM.3D PipelineRunner not found on PATH; use the built-in "
                                                "generator or the dream3d image"):
        dream3d.generate({"cells": 8}, 1, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_run_pipeline_failure_and_timeout(monkeypatch, tmp_path):
    (tmp_path / "p.json").write_text("{}")
    script = _fake_runner(tmp_path, "import sys\nprint('line 1')\nprint('Error: filter 3 failed')\nsys.exit(3)\n")
    monkeypatch.setenv(dream3d.RUNNER_ENV, str(script))
    with pytest.raises(RuntimeError, match=r"exit 3(.|\n)*Error: filter 3 failed"):
        dream3d.run_pipeline(tmp_path / "p.json", timeout_s=30)
    _fake_runner(tmp_path, "import time\ntime.sleep(10)\n")
    with pytest.raises(RuntimeError, match="timed out after 0.5 s"):
        dream3d.run_pipeline(tmp_path / "p.json", timeout_s=0.5)
    with pytest.raises(FileNotFoundError, match="pipeline file not found"):
        dream3d.run_pipeline(tmp_path / "missing.json", timeout_s=1)


def test_generate_with_stand_in_runner(monkeypatch, tmp_path):
    monkeypatch.setenv(dream3d.RUNNER_ENV, str(_fake_runner(tmp_path, STAND_IN)))
    ve = dream3d.generate({"cells": (5, 6, 7), "lattice": "cI"}, 42, tmp_path / "work", timeout_s=60)
    assert ve.cells == (5, 6, 7) and ve.N_grains == 4 and ve.lattice == "cI"
    np.testing.assert_allclose(ve.spacing, 0.25)
    assert ve.attrs["generator"] == "dream3d.PipelineRunner" and ve.attrs["seed"] == 42
    assert ve.attrs["params"]["cells"] == [5, 6, 7]
    assert ve.attrs["params"] == GeneratorConfig(cells=(5, 6, 7), lattice="cI").to_dict() | {"bin_step": 0.5}
    assert (tmp_path / "work" / "pipeline.json").is_file()
    io.write_shard(tmp_path / "s.h5", {"ve_0": ve}, provenance={})  # attrs are shard-ready
    # orientations: reduced to the fundamental zone, each the same orientation DREAM.3D wrote
    assert damask.Orientation.from_Euler_angles(phi=ve.euler, lattice="cI").in_FZ.all()
    raw = io.load_dream3d(tmp_path / "work" / "synthetic.dream3d", lattice="cI")
    assert not damask.Orientation.from_Euler_angles(phi=raw.euler, lattice="cI").in_FZ.all()  # the test bites
    np.testing.assert_allclose(texture.misorientation_deg(ve.euler, raw.euler, "cI"), 0.0, atol=1e-3)


@pytest.mark.parametrize("config", [{"cells": (5, 6, 7), "morphology": "small_grains"},
                                    GeneratorConfig.from_dict({"cells": (5, 6, 7), "morphology": "small_grains"})])
def test_generate_takes_the_builtin_generator_config(monkeypatch, tmp_path, config):
    """The generator dict of the built-in generator (morphology presets too) or a GeneratorConfig drives DREAM.3D."""
    monkeypatch.setenv(dream3d.RUNNER_ENV, str(_fake_runner(tmp_path, STAND_IN)))
    ve = dream3d.generate(config, 3, tmp_path / "work", timeout_s=60, bin_step=0.25)
    expected = GeneratorConfig(cells=(5, 6, 7), esd_mean=2.73)
    assert ve.attrs == {"generator": dream3d.GENERATOR_NAME, "params": expected.to_dict() | {"bin_step": 0.25},
                        "seed": 3}
    stats = _by_name(json.loads((tmp_path / "work" / "pipeline.json").read_text()))["StatsGeneratorFilter"][
        "StatsDataArray"]["1"]
    assert stats["FeatureSize Distribution"]["Average"] == pytest.approx(expected.esd_mu)
    assert stats["Feature_Diameter_Info"][0] == 0.25
    assert damask.Orientation.from_Euler_angles(phi=ve.euler, lattice="cF").in_FZ.all()


def test_generate_reports_missing_output(monkeypatch, tmp_path):
    monkeypatch.setenv(dream3d.RUNNER_ENV, str(_fake_runner(tmp_path, "print('nothing written')\n")))
    with pytest.raises(RuntimeError, match="wrote no"):
        dream3d.generate({}, None, tmp_path / "work", timeout_s=30)


@pytest.mark.parametrize(("config", "match"), [
    ({"texture": "brass"}, "texture must be 'random'"),
    (GeneratorConfig(texture="cube"), "texture must be 'random'"),
    ({"second_phase_fraction": 0.2}, "second_phase_fraction must be 0"),
    ({"grains": 10}, r"unknown field\(s\) 'grains'"),
    ({"lattice": "tI"}, "lattice must be one of cF, cI, hP, got 'tI'"),
    ({"morphology": "columnar"}, "morphology must be one of"),
    ({"cells": 0}, "cells must be positive integers"),
])
def test_generate_rejects_bad_config(tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        dream3d.generate(config, 1, tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before anything is written or run


def test_generate_rejects_bad_bin_step(tmp_path):
    with pytest.raises(ValueError, match="bin_step must be a finite number > 0"):
        dream3d.generate({}, 1, tmp_path / "work", bin_step=-0.5)
    assert not (tmp_path / "work").exists()


# --------------------------------------------------------------------------------------------------
# the real thing
# --------------------------------------------------------------------------------------------------

@pytest.mark.dream3d
def test_pipeline_runner_end_to_end(tmp_path):
    if dream3d.find_binary() is None:
        pytest.skip("DREAM.3D PipelineRunner not on PATH")
    ve = dream3d.generate({"cells": (24, 24, 24), "spacing": 0.25, "esd_mean": 2.0}, 0, tmp_path, timeout_s=600)
    assert ve.cells == (24, 24, 24) and ve.lattice == "cF"
    assert ve.N_grains > 5
    assert np.unique(ve.grain_ids).size == ve.N_grains
    np.testing.assert_allclose(ve.spacing, 0.25, rtol=1e-6)
    assert damask.Orientation.from_Euler_angles(phi=ve.euler, lattice="cF").in_FZ.all()
    assert ve.attrs["params"]["esd_mean"] == 2.0 and ve.attrs["params"]["bin_step"] == 0.5
    grid = damask.GeomGrid.load_DREAM3D(tmp_path / "synthetic.dream3d", feature_IDs="FeatureIds")
    assert np.unique(grid.material).size == ve.N_grains
