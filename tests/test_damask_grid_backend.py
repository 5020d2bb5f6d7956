"""DAMASK_grid backend: the input writers read back through damask, numerics.yaml, the .sta parser, the runner
(with a stand-in executable), and a real run on a reference case when DAMASK_grid is installed.

No DADF5 file is made here: damask's Python library reads them but only DAMASK_grid writes them, so
:func:`read_result` is exercised by the end-to-end test alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

import damask
import numpy as np
import pytest
import yaml

from micropipe.backends import damask_grid as dg
from micropipe.crystal import loadcase, material, shipped_material
from micropipe.crystal import numerics as num
from micropipe.crystal.numerics import Numerics, load_numerics, numerics_from_config, save_numerics

REFS = Path(__file__).parents[1] / ".." / "shared" / "refs" / "damask"
needs_refs = pytest.mark.skipif(not (REFS / "a_Cu_cube_8").is_dir(), reason=f"reference DAMASK runs not in {REFS}")

QUATS = damask.Rotation.from_Euler_angles([[0.0, 0.0, 0.0], [90.0, 45.0, 0.0], [10.0, 20.0, 30.0]],
                                          degrees=True).quaternion


@pytest.fixture(scope="module")
def cu():
    return material.load_phase(shipped_material("Cu"))


@pytest.fixture
def config(cu):
    return material.material_config({"Cu": cu}, QUATS, "Cu")


def _ids(shape=(3, 4, 5), n=3):
    return (np.arange(np.prod(shape)) % n).reshape(shape)


def _get(doc, key_path):
    for k in key_path:
        doc = doc[k]
    return doc


# --------------------------------------------------------------------------------------------------
# writing a case
# --------------------------------------------------------------------------------------------------

def test_write_case_reads_back_through_damask(tmp_path, config):
    ids = _ids()
    lc = loadcase.uniaxial_tension_z(strain=0.02, rate=2e-3, increments=8, f_out=2)
    num = Numerics(eps_rel_div=1e-5, N_iter_max=80)
    paths = dg.write_case(tmp_path / "case", ids, (1.0, 2.0, 2.5), config, lc, num)
    assert {k: p.name for k, p in paths.items()} == {"geom": "geom.vti", "material": "material.yaml",
                                                     "load": "load.yaml", "numerics": "numerics.yaml"}

    grid = damask.GeomGrid.load(paths["geom"])
    np.testing.assert_array_equal(grid.cells, (3, 4, 5))
    np.testing.assert_allclose(grid.size, (1.0, 2.0, 2.5))
    np.testing.assert_array_equal(grid.material, ids)

    mat = damask.ConfigMaterial.load(paths["material"])
    assert len(mat["material"]) == 3 and set(mat["phase"]) == {"Cu"}
    O = np.array([m["constituents"][0]["O"] for m in mat["material"]])
    np.testing.assert_allclose(O, QUATS, atol=1e-12)
    assert {"F", "P"} <= set(mat["phase"]["Cu"]["mechanical"]["output"])
    assert material.material_from_config(mat).phases["Cu"].plastic == material.load_phase(
        shipped_material("Cu")).plastic

    load = damask.LoadcaseGrid.load(paths["load"])
    assert load["solver"] == {"mechanical": "spectral_basic"}
    (step,) = load["loadstep"]
    mech = step["boundary_conditions"]["mechanical"]
    assert mech["dot_F"] == [["x", 0.0, 0.0], [0.0, "x", 0.0], [0.0, 0.0, 2e-3]]
    assert mech["P"] == [[0.0, "x", "x"], ["x", 0.0, "x"], ["x", "x", "x"]]
    assert step["discretization"] == {"t": 10.0, "N": 8} and step["f_out"] == 2
    assert loadcase.load_loadcase(paths["load"]).steps[0].N == 8

    doc = damask.YAML.load(paths["numerics"])
    assert _get(doc, ("solver", "grid", "mechanical", "eps_rel_div(P)")) == 1e-5
    assert _get(doc, ("solver", "grid", "mechanical", "N_iter_max")) == 80
    assert _get(doc, ("solver", "grid", "N_cutback_max")) == Numerics.N_cutback_max
    assert load_numerics(paths["numerics"]) == num


def test_write_case_takes_material_and_mapping_without_changing_them(tmp_path, config):
    """A Material and a plain dict give the same material.yaml; F and P are added to a copy only."""
    as_dict = yaml.safe_load(repr(config))  # plain dicts and lists, as a user would write them
    del as_dict["phase"]["Cu"]["mechanical"]["output"]
    dg.write_case(tmp_path / "a", _ids(), (1, 1, 1), as_dict, loadcase.uniaxial_tension_z())
    assert "output" not in as_dict["phase"]["Cu"]["mechanical"]
    written = damask.ConfigMaterial.load(tmp_path / "a" / dg.MATERIAL)
    assert written["phase"]["Cu"]["mechanical"]["output"] == ["F", "P"]

    dg.write_case(tmp_path / "b", _ids(), (1, 1, 1), material.material_from_config(config),
                  loadcase.uniaxial_tension_z())
    from_material = damask.ConfigMaterial.load(tmp_path / "b" / dg.MATERIAL)
    np.testing.assert_allclose([m["constituents"][0]["O"] for m in from_material["material"]], QUATS, atol=1e-12)
    assert from_material["homogenization"] == config["homogenization"]


def test_write_case_without_numerics_removes_a_stale_file(tmp_path, config):
    case = tmp_path / "case"
    dg.write_case(case, _ids(), (1, 1, 1), config, loadcase.uniaxial_tension_z(), Numerics())
    assert (case / dg.NUMERICS).is_file()
    paths = dg.write_case(case, _ids(), (1, 1, 1), config, loadcase.uniaxial_tension_z())
    assert "numerics" not in paths and not (case / dg.NUMERICS).exists()
    assert "--numerics" not in dg.command(case, binary="DAMASK_grid")


def test_write_case_rejects_ids_without_material_entry(tmp_path, config):
    ids = _ids(n=5)  # ids 0..4, entries 0..2
    with pytest.raises(ValueError, match=r"material\.yaml: material id\(s\) \[3, 4\] .* 3 entries"):
        dg.write_case(tmp_path, ids, (1, 1, 1), config, loadcase.uniaxial_tension_z())
    with pytest.raises(ValueError, match=r"\[-1\]"):
        dg.write_case(tmp_path, -_ids(n=2), (1, 1, 1), config, loadcase.uniaxial_tension_z())
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(("ids", "size", "match"), [
    (np.zeros((2, 2)), (1, 1, 1), r"material_ids: .*shape \(X, Y, Z\)"),
    (np.zeros((2, 2, 2)), (1, 1, 1), r"material_ids: .*integer"),
    (np.zeros((2, 2, 2), int), (1, 0, 1), r"size: expected 3 positive"),
    (np.zeros((2, 2, 2), int), (1, 1), r"size: expected 3 positive"),
])
def test_write_case_rejects_bad_grid(tmp_path, config, ids, size, match):
    with pytest.raises(ValueError, match=match):
        dg.write_case(tmp_path, ids, size, config, loadcase.uniaxial_tension_z())


def test_write_case_rejects_bad_material_config(tmp_path, config):
    bad = yaml.safe_load(repr(config))
    bad["material"][1]["constituents"][0]["phase"] = "Al"
    with pytest.raises(ValueError, match=r"material\.yaml: material entry 1, constituent 0: 'phase' must name"):
        dg.write_case(tmp_path, _ids(), (1, 1, 1), bad, loadcase.uniaxial_tension_z())
    with pytest.raises(ValueError, match=r"material\.yaml: missing or empty top-level key 'homogenization'"):
        dg.write_case(tmp_path, _ids(), (1, 1, 1), {"phase": bad["phase"], "material": bad["material"]},
                      loadcase.uniaxial_tension_z())


# --------------------------------------------------------------------------------------------------
# numerics.yaml
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("numerics", [Numerics(), Numerics(eps_abs_div=2e-3, eps_rel_div=1e-4, eps_abs_P=10.0,
                                                           eps_rel_P=1e-3, N_iter_min=2, N_iter_max=100,
                                                           N_cutback_max=0, N_staggered_iter_max=5,
                                                           N_iter_Lp_max=30, eps_rel_Lp=1e-6, eps_abs_Lp=1e-8,
                                                           eps_rel_state=1e-6, N_ramp=3)])
def test_numerics_round_trip_in_damask_layout(tmp_path, numerics):
    path = save_numerics(numerics, tmp_path / "numerics.yaml")
    assert load_numerics(path) == numerics
    doc = damask.YAML.load(path)
    values = {k: _get(doc, p) for k, p in num.PATHS_3X.items()} | doc["micropipe"]
    assert values == dataclasses.asdict(numerics)
    assert set(doc["micropipe"]) == set(num.BUILTIN_ONLY)
    assert set(doc) == {"solver", "phase", "micropipe"} and set(doc["solver"]) == {"grid"}


def _write(tmp_path, text):
    path = tmp_path / "numerics.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_numerics_reads_damask_3x_file_and_warns_about_unused_keys(tmp_path, caplog):
    path = _write(tmp_path, """\
        solver:
          grid:
            N_staggered_iter_max: 10
            N_cutback_max: 3
            mechanical:
              N_iter_min: 1
              N_iter_max: 100
              eps_abs_div(P): 1.0e-4
              eps_rel_div(P): 5.0e-4
              eps_abs_P: 1.0e3
              eps_rel_P: 1.0e-3
              update_gamma: false
            FFT:
              memory_efficient: true
        phase:
          mechanical:
            eps_rel_state: 1.0e-6
            N_iter_state_max: 10
            plastic:
              eps_rel_Lp: 1.0e-6
              eps_abs_Lp: 1.0e-8
              N_iter_Lp_max: 40
        """)
    with caplog.at_level(logging.WARNING, logger="micropipe.crystal.numerics"):
        n = load_numerics(path)
    assert n == Numerics(eps_abs_div=1e-4, eps_rel_div=5e-4, eps_abs_P=1e3, eps_rel_P=1e-3, N_iter_min=1,
                         N_iter_max=100, N_cutback_max=3, N_staggered_iter_max=10, N_iter_Lp_max=40,
                         eps_rel_Lp=1e-6, eps_abs_Lp=1e-8, eps_rel_state=1e-6)
    warned = {r.getMessage() for r in caplog.records}
    for key in ("solver/grid/N_staggered_iter_max", "solver/grid/mechanical/update_gamma",
                "solver/grid/FFT/memory_efficient"):
        assert f"{path}: key {key} is not a micropipe numerics setting; ignored" in warned
    assert len(warned) == 3


def test_numerics_maps_old_names_and_micropipe_key(tmp_path):
    path = _write(tmp_path, """\
        grid:
          eps_div_atol: 1.0e-3
          eps_div_rtol: 1e-4
          eps_stress_atol: 100.0
          eps_stress_rtol: 0.01
          itmin: 2
          itmax: 250
          maxCutBack: 5
        crystallite:
          nState: 12
          nStress: 35
          rtol_Stress: 1.0e-7
          atol_Stress: 1.0e-9
          rtol_State: 1.0e-7
        micropipe:
          eps_abs_Lp: 1.0e-9
        """)
    n = load_numerics(path)
    assert n == Numerics(eps_abs_div=1e-3, eps_rel_div=1e-4, eps_abs_P=100.0, eps_rel_P=0.01, N_iter_min=2,
                         N_iter_max=250, N_cutback_max=5, N_staggered_iter_max=12, N_iter_Lp_max=35,
                         eps_rel_Lp=1e-7, eps_abs_Lp=1e-9, eps_rel_state=1e-7)
    fields = {f.name for f in dataclasses.fields(Numerics)}
    assert set(num.PATHS_3_0_ALPHA) == set(num.PATHS_3X) == fields - set(num.BUILTIN_ONLY)
    assert numerics_from_config({"micropipe": {"eps_rel_state": 1e-5, "N_iter_Lp_max": 9, "N_ramp": 1}}) == Numerics(
        eps_rel_state=1e-5, N_iter_Lp_max=9, N_ramp=1)


@pytest.mark.parametrize(("text", "match"), [
    ("solver: {grid: {mechanical: {N_iter_max: 2.5}}}",
     r"solver/grid/mechanical/N_iter_max \(field N_iter_max\) must be an integer >= 2, got 2\.5"),
    ("solver: {grid: {mechanical: {N_iter_max: true}}}", r"N_iter_max .*must be an integer >= 2, got True"),
    ("solver: {grid: {N_cutback_max: -1}}", r"solver/grid/N_cutback_max .*integer >= 0, got -1"),
    ("solver: {grid: {mechanical: {eps_rel_P: 0}}}",
     r"solver/grid/mechanical/eps_rel_P \(field eps_rel_P\) must be a positive finite number, got 0"),
    ("grid: {eps_div_atol: -1.0e-4}", r"grid/eps_div_atol \(field eps_abs_div\) must be a positive"),
    ("micropipe: {eps_abs_Lp: tiny}", r"micropipe/eps_abs_Lp .*positive finite number, got 'tiny'"),
    ("micropipe: {N_ramp: 0}", r"micropipe/N_ramp \(field N_ramp\) must be an integer >= 1, got 0"),
    ("phase: {mechanical: {plastic: {eps_rel_Lp: .nan}}}", r"phase/mechanical/plastic/eps_rel_Lp .*positive finite"),
    ("solver: {grid: {mechanical: {N_iter_min: 50, N_iter_max: 40}}}",
     r"N_iter_min = 50 exceeds N_iter_max = 40; expected N_iter_min <= N_iter_max"),
    ("solver: {grid: {N_cutback_max: 3}}\ngrid: {maxCutBack: 4}",
     r"grid/maxCutBack = 4 contradicts solver/grid/N_cutback_max = 3"),
    ("solver: [grid]", r"solver must be a mapping"),
    ("- 1\n- 2", r"expected a mapping at the top level"),
    ("solver: {grid: [", r"not readable as YAML"),
])
def test_numerics_rejects_bad_values_naming_file_and_key(tmp_path, text, match):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ValueError, match=match) as e:
        load_numerics(path)
    assert str(e.value).startswith(str(path))


def test_numerics_edge_cases(tmp_path):
    assert load_numerics(_write(tmp_path, "")) == Numerics()
    assert load_numerics(_write(tmp_path, "solver:\n  grid:\n")) == Numerics()
    same = "solver: {grid: {N_cutback_max: 3}}\ngrid: {maxCutBack: 3}\n"
    assert load_numerics(_write(tmp_path, same)).N_cutback_max == 3
    with pytest.raises(FileNotFoundError, match="numerics file not found"):
        load_numerics(tmp_path / "missing.yaml")
    with pytest.raises(TypeError, match="expected a Numerics"):
        save_numerics({"N_iter_max": 3}, tmp_path / "x.yaml")


# --------------------------------------------------------------------------------------------------
# the .sta convergence file and output increments
# --------------------------------------------------------------------------------------------------

@needs_refs
def test_sta_of_reference_runs():
    lc = loadcase.load_loadcase(REFS / "a_Cu_cube_8" / "load.yaml")
    out = dg.output_increments(lc)
    assert out == list(range(21))

    single = dg.load_sta(REFS / "a_Cu_cube_8" / "convergence.sta")
    np.testing.assert_array_equal(single.increment, np.arange(1, 21))
    np.testing.assert_allclose(single.time, 0.5 * np.arange(1, 21))
    assert single.converged.all() and not single.cutback_level.any()
    iterations, cutbacks = single.per_output(out)
    np.testing.assert_array_equal(iterations, np.ones(20, int))
    np.testing.assert_array_equal(cutbacks, np.zeros(20, int))

    poly = dg.load_sta(REFS / "c_Cu_poly20_16" / "convergence.sta")
    assert poly.increment.size == 21 and list(poly.increment[:3]) == [1, 1, 2]  # increment 1 cut back once
    np.testing.assert_allclose(poly.time[:3], [0.25, 0.5, 1.0])
    iterations, cutbacks = poly.per_output(out)
    assert iterations[0] == 49 + 30 and cutbacks[0] == 1 and iterations[1] == 35 and iterations[-1] == 6
    assert not cutbacks[1:].any() and iterations.sum() == poly.iterations.sum()


def test_sta_older_layout_and_coarser_output(tmp_path):
    path = tmp_path / "job.sta"
    path.write_text("Increment Time CutbackLevel Converged IterationsNeeded\n"
                    "  1  0.5  0 T  3\n  2  0.75  1 T  7\n  2  1.0  1 T  5\n  3  1.5  0 T  4\n  4  2.0  0 T  2\n")
    sta = dg.load_sta(path)
    iterations, cutbacks = sta.per_output([0, 2, 4])
    np.testing.assert_array_equal(iterations, [15, 6])
    np.testing.assert_array_equal(cutbacks, [1, 0])


@pytest.mark.parametrize(("text", "match"), [
    ("Inc Time\n1 0.5\n", r"line 1: expected the header Increment Time CutbackLevel Converged IterationsNeeded"),
    ("Increment Time CutbackLevel Converged IterationsNeeded\n 1 0.5 0 yes 3\n", r"line 2: expected 5 columns"),
    ("Increment Time CutbackLevel Converged IterationsNeeded\n 1 0.5 0 T\n", r"line 2: .* got '1 0.5 0 T'"),
])
def test_sta_rejects_malformed_files(tmp_path, text, match):
    path = tmp_path / "job.sta"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        dg.load_sta(path)
    assert str(e.value).startswith(str(path))


def test_output_increments_follow_f_out_per_step():
    step = loadcase.uniaxial_tension_z(increments=4, f_out=2).steps[0]
    lc = loadcase.Loadcase(steps=(step, dataclasses.replace(step, N=3)))
    assert dg.output_increments(lc) == [0, 2, 4, 6]  # increment 3 of step 2 (7 overall) is not written


# --------------------------------------------------------------------------------------------------
# running, with a stand-in executable
# --------------------------------------------------------------------------------------------------

STAND_IN = """\
import json, os, sys, time
args = sys.argv[1:]
json.dump({"argv": args, "cwd": os.getcwd()}, open("argv.json", "w"))
print("stand-in DAMASK_grid", " ".join(args))
mode = os.environ.get("STAND_IN_MODE", "ok")
if mode == "fail":
    print("ERROR 950: increment did not converge", file=sys.stderr)
    sys.exit(3)
if mode == "sleep":
    time.sleep(30)
if mode == "ok":
    open(args[args.index("--jobname") + 1] + ".hdf5", "w").close()  # an empty placeholder, never read
"""


def _stand_in(tmp_path, name="DAMASK_grid"):
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\n" + STAND_IN)
    script.chmod(0o755)
    return script


@pytest.fixture
def no_binary(monkeypatch, tmp_path):
    monkeypatch.delenv(dg.BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_find_binary(monkeypatch, tmp_path, no_binary):
    assert dg.find_binary() is None and not dg.available()
    script = _stand_in(tmp_path)
    monkeypatch.setenv("PATH", str(script.parent))
    assert dg.find_binary() == str(script)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv(dg.BINARY_ENV, str(script))
    assert dg.find_binary() == str(script)
    monkeypatch.setenv(dg.BINARY_ENV, str(tmp_path / "nowhere"))
    assert dg.find_binary() is None


def test_without_binary_nothing_is_written(tmp_path, config, no_binary):
    with pytest.raises(dg.BackendUnavailable, match="DAMASK_grid not found on PATH"):
        dg.solve(_ids(), config, loadcase.uniaxial_tension_z(), workdir=tmp_path / "case")
    assert not (tmp_path / "case").exists()
    with pytest.raises(FileNotFoundError, match="DAMASK_grid not found"):
        dg.run(tmp_path)


def test_run_command_line_log_and_result(monkeypatch, tmp_path, config):
    monkeypatch.setenv(dg.BINARY_ENV, str(_stand_in(tmp_path)))
    case = tmp_path / "case"
    dg.write_case(case, _ids(), (1, 1, 1), config, loadcase.uniaxial_tension_z(), Numerics())
    (case / "vol.hdf5").write_text("stale")
    (case / "vol.sta").write_text("stale")
    result = dg.run(case, jobname="vol")
    assert result == case.resolve() / "vol.hdf5" and result.stat().st_size == 0
    assert not (case / "vol.sta").exists()
    called = json.loads((case / "argv.json").read_text())
    assert called["cwd"] == str(case.resolve())
    assert called["argv"] == ["--load", "load.yaml", "--geom", "geom.vti", "--material", "material.yaml",
                              "--numerics", "numerics.yaml", "--jobname", "vol"]
    assert "stand-in DAMASK_grid --load" in (case / dg.LOG).read_text()


def test_command_uses_mpiexec_for_several_processes(monkeypatch, tmp_path, caplog):
    mpiexec = _stand_in(tmp_path, "mpiexec")
    monkeypatch.setenv("PATH", str(mpiexec.parent))
    cmd = dg.command(tmp_path, binary="/opt/DAMASK_grid", nprocs=4)
    assert cmd[:4] == [str(mpiexec), "-n", "4", "/opt/DAMASK_grid"] and cmd[-2:] == ["--jobname", dg.JOBNAME]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="micropipe.backends.damask_grid"):
        assert dg.command(tmp_path, binary="/opt/DAMASK_grid", nprocs=4)[0] == "/opt/DAMASK_grid"
    assert "mpiexec is not on PATH" in caplog.text
    with pytest.raises(ValueError, match="nprocs: expected a positive integer"):
        dg.command(tmp_path, binary="x", nprocs=0)
    with pytest.raises(ValueError, match="jobname: expected a file name stem"):
        dg.command(tmp_path, binary="x", jobname="a/b")


def test_run_failure_and_timeout_name_the_log(monkeypatch, tmp_path, config):
    monkeypatch.setenv(dg.BINARY_ENV, str(_stand_in(tmp_path)))
    case = tmp_path / "case"
    dg.write_case(case, _ids(), (1, 1, 1), config, loadcase.uniaxial_tension_z())
    monkeypatch.setenv("STAND_IN_MODE", "fail")
    with pytest.raises(dg.DamaskGridError, match=r"(?s)failed \(exit 3\) .*DAMASK_grid\.log:\n.*ERROR 950") as e:
        dg.run(case)
    assert e.value.returncode == 3 and e.value.result is None and e.value.log.is_file()
    with pytest.raises(RuntimeError, match="DAMASK_grid failed"):  # solve keeps the case and re-raises
        dg.solve(_ids(), config, loadcase.uniaxial_tension_z(), workdir=case)
    assert (case / dg.GEOM).is_file()

    monkeypatch.setenv("STAND_IN_MODE", "sleep")
    start = time.perf_counter()
    with pytest.raises(dg.DamaskGridError, match=r"timed out after 0\.5 s .*DAMASK_grid\.log") as e:
        dg.run(case, timeout=0.5)
    assert e.value.returncode is None and time.perf_counter() - start < 10

    monkeypatch.setenv("STAND_IN_MODE", "silent")
    with pytest.raises(dg.DamaskGridError, match=r"finished but wrote no .*micropipe\.hdf5"):
        dg.run(case)
    os.remove(case / dg.LOAD)
    with pytest.raises(FileNotFoundError, match=r"load\.yaml: DAMASK_grid input not found"):
        dg.run(case)


# --------------------------------------------------------------------------------------------------
# a real run
# --------------------------------------------------------------------------------------------------

@pytest.mark.damask_grid
def test_damask_grid_runs_reference_case(tmp_path):
    if dg.find_binary() is None:
        pytest.skip(f"DAMASK_grid not on PATH (nor ${dg.BINARY_ENV}); runs in the damask image")
    ref = REFS / "a_Cu_cube_8"
    if not ref.is_dir():
        pytest.skip(f"reference case {ref} not available")
    grid = damask.GeomGrid.load(ref / "geom.vti")
    lc = loadcase.load_loadcase(ref / "load.yaml")
    res = dg.solve(grid.material, damask.ConfigMaterial.load(ref / "material.yaml"), lc, size=grid.size,
                   workdir=tmp_path / "case", timeout=600)
    assert res.converged, res.reason
    assert res.backend == "damask_grid" and res.iterations.shape == (20,) and res.wall_time > 0
    curve = np.genfromtxt(ref / "curve.csv", delimiter=",", names=True)
    np.testing.assert_allclose(res.time, curve["time_s"], atol=1e-9)
    np.testing.assert_allclose(res.F[:, 2, 2], curve["F_zz"], rtol=1e-6)
    np.testing.assert_allclose(res.sigma[1:, 2, 2], curve["sigma_zz_Pa"][1:], rtol=0.01)
    np.testing.assert_allclose(res.P[1:, 2, 2], curve["P_zz_Pa"][1:], rtol=0.01)
    assert np.abs(res.sigma[1:, 0, 0]).max() < 1e-3 * res.sigma[-1, 2, 2]  # stress-free lateral faces
