"""DAMASK material.yaml and load.yaml: reading the reference inputs, validation messages, write/read round trips."""

from __future__ import annotations

import copy
from pathlib import Path

import damask
import numpy as np
import pytest
import yaml

from micropipe.crystal import MATERIALS, loadcase, material, shipped_material

REFS = Path(__file__).resolve().parents[2] / "shared" / "refs" / "damask"
if not REFS.is_dir():
    REFS = Path("/work/shared/refs/damask")
CASES = sorted(p.name for p in REFS.glob("*_Cu_*")) if REFS.is_dir() else []
needs_refs = pytest.mark.skipif(not CASES, reason="reference DAMASK inputs not available")


@needs_refs
@pytest.mark.parametrize("case", CASES)
def test_reads_reference_material(case):
    m = material.load_material(REFS / case / "material.yaml")
    cu = m.phases["Cu"]
    assert cu.lattice == "cF" and cu.c_a is None and cu.plastic.N_sl == (12,)
    assert cu.elastic.C_11 == 168.9e9 and cu.elastic.temperature["T_ref"] == 293.15
    assert cu.plastic.xi_0_sl == (1.6e6,) and cu.plastic.h_sl_sl[2] == 5.123
    assert cu.plastic.per_system("xi_inf_sl").shape == (12,)
    assert cu.schmid_slip().shape == (12, 3, 3)
    O = m.orientations()
    np.testing.assert_allclose(np.linalg.norm(O, axis=1), 1.0)
    assert len(m.materials) == (1 if case.startswith("a_") else 20)


@needs_refs
@pytest.mark.parametrize("case", CASES)
def test_reads_reference_loadcase_equal_to_uniaxial_tension(case):
    lc = loadcase.load_loadcase(REFS / case / "load.yaml")
    ref, mine = lc.steps[0], loadcase.uniaxial_tension_z().steps[0]
    assert lc.solver == "spectral_basic" and len(lc.steps) == 1
    np.testing.assert_array_equal(ref.deformation, mine.deformation)
    np.testing.assert_array_equal(ref.stress, mine.stress)
    assert (ref.t, ref.N, ref.f_out) == (mine.t, mine.N, mine.f_out) == (10.0, 20, 1)


def test_uniaxial_tension_components():
    s = loadcase.uniaxial_tension_z(strain=0.02, rate=1e-2, increments=8).steps[0]
    assert s.deformation_key == "dot_F" and s.stress_key == "P"
    assert s.deformation[2, 2] == 1e-2 and s.t == pytest.approx(2.0) and s.N == 8
    mask = s.deformation_mask
    np.testing.assert_array_equal(mask, ~np.eye(3, dtype=bool) | np.diag([False, False, True]))
    np.testing.assert_array_equal(mask ^ ~np.isnan(s.stress), True)  # exactly one condition per component
    assert s.stress[0, 0] == s.stress[1, 1] == 0.0


def test_loadcase_round_trip_through_damask(tmp_path):
    lc = loadcase.uniaxial_tension_z()
    path = loadcase.save_loadcase(lc, tmp_path / "load.yaml")
    back = loadcase.load_loadcase(path)
    np.testing.assert_array_equal(back.steps[0].deformation, lc.steps[0].deformation)
    raw = damask.LoadcaseGrid.load(path)
    assert raw["loadstep"][0]["boundary_conditions"]["mechanical"]["dot_F"][0][0] == "x"
    assert raw["solver"] == {"mechanical": "spectral_basic"}


def _load_dict():
    return {"solver": {"mechanical": "spectral_basic"},
            "loadstep": [{"boundary_conditions": {"mechanical": {
                "dot_F": [["x", 0, 0], [0, "x", 0], [0, 0, 1e-3]],
                "P": [[0, "x", "x"], ["x", 0, "x"], ["x", "x", "x"]]}},
                "discretization": {"t": 10, "N": 20}, "f_out": 1}]}


def _edit(d, path, value):
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


BC = ("loadstep", 0, "boundary_conditions", "mechanical")


@pytest.mark.parametrize(("path", "value", "match"), [
    (BC + ("P",), [[0, 0, "x"], ["x", 0, "x"], ["x", "x", "x"]], r"loadstep 0: component\(s\) \[\(1, 2\)\] "
                                                                  "prescribed in both dot_F and P"),
    (BC + ("P",), [["x", "x", "x"], ["x", 0, "x"], ["x", "x", "x"]], r"\[\(1, 1\)\] prescribed in neither"),
    (("loadstep", 0, "discretization", "t"), 0, "discretization/t must be a positive"),
    (("loadstep", 0, "discretization", "t"), -1.5, "discretization/t must be a positive"),
    (("loadstep", 0, "discretization", "N"), 0, "discretization/N must be a positive integer"),
    (("loadstep", 0, "discretization", "N"), 2.5, "discretization/N must be a positive integer"),
    (BC + ("dot_F",), KeyError, "give exactly one of dot_F, F, L"),
    (BC + ("R",), [1, 0, 0, 0], "unsupported boundary condition.*R"),
    (BC + ("P",), [[0, "x"], ["x", 0]], "P must be a 3x3 list"),
    (("solver", "mechanical"), "spectral_magic", "solver/mechanical 'spectral_magic' unknown"),
])
def test_bad_loadcase_messages(tmp_path, path, value, match):
    p = tmp_path / "load.yaml"
    p.write_text(yaml.safe_dump(_edit(_load_dict(), path, value)))
    with pytest.raises(ValueError, match=match) as err:
        loadcase.load_loadcase(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize("name", MATERIALS)
def test_shipped_materials_are_valid(name):
    ph = material.load_phase(shipped_material(name))
    assert ph.name == name and ph.lattice == {"Cu": "cF", "Mg": "hP", "Fe": "cI"}[name]
    assert np.linalg.eigvalsh(ph.stiffness(notation="mandel")).min() > 0
    H = ph.plastic.interaction(ph.lattice)
    assert H.shape == (ph.plastic.sum_N_sl,) * 2 and (H > 0).all()  # no unused (-1) type is selected
    if ph.plastic.sum_N_tw:
        for kind in ("tw-tw", "tw-sl", "sl-tw"):
            assert (ph.plastic.interaction(ph.lattice, kind) > 0).all()


def test_shipped_mg_parameters():
    mg = material.load_phase(shipped_material("Mg")).plastic
    assert mg.N_sl == (3, 3, 6, 0, 6) and mg.N_tw == (6, 0, 6)
    np.testing.assert_array_equal(mg.per_system("xi_0_sl")[:3], 10e6)
    assert mg.per_system("h_0_tw-sl").shape == (12,) and mg.per_system("f_sat_sl-tw").shape == (18,)


@needs_refs
def test_cu_shipped_equals_reference():
    ref = material.load_material(REFS / CASES[0] / "material.yaml").phases["Cu"]
    cu = material.load_phase(shipped_material("Cu"))
    assert cu.elastic == ref.elastic and cu.plastic == ref.plastic


def test_material_round_trip(tmp_path):
    cu = material.load_phase(shipped_material("Cu"))
    O = damask.Rotation.from_random(shape=5, rng_seed=0)
    path = material.save_material(tmp_path / "material.yaml", {"Cu": cu}, O, "Cu")
    back = material.load_material(path)
    assert back.phases["Cu"].plastic == cu.plastic and back.phases["Cu"].elastic == cu.elastic
    np.testing.assert_allclose(back.orientations(), O.quaternion)
    assert back.phase_names() == ["Cu"] * 5
    raw = damask.ConfigMaterial.load(path)
    assert raw.is_complete and raw.is_valid and len(raw["material"]) == 5


def test_material_two_phases_round_trip(tmp_path):
    phases = {n: material.load_phase(shipped_material(n)) for n in ("Cu", "Mg")}
    O = damask.Rotation.from_random(shape=3, rng_seed=2)
    path = material.save_material(tmp_path / "m.yaml", phases, O, ["Cu", "Mg", "Cu"])
    back = material.load_material(path)
    assert back.phase_names() == ["Cu", "Mg", "Cu"] and back.phases["Mg"].c_a == pytest.approx(1.6235)
    assert damask.ConfigMaterial.load(path).is_valid


def _material_dict():
    cfg = yaml.safe_load(shipped_material("Cu").read_text())
    cfg["homogenization"] = {"SX": {"N_constituents": 1, "mechanical": {"type": "pass"}}}
    cfg["material"] = [{"constituents": [{"phase": "Cu", "O": [1.0, 0, 0, 0], "v": 1.0}], "homogenization": "SX"}]
    return cfg


PL = ("phase", "Cu", "mechanical", "plastic")
EL = ("phase", "Cu", "mechanical", "elastic")


@pytest.mark.parametrize(("path", "value", "match"), [
    (PL + ("xi_0_sl",), KeyError, r"phase 'Cu': mechanical/plastic: missing key 'xi_0_sl'"),
    (PL + ("h_0_sl-sl",), KeyError, r"phase 'Cu': mechanical/plastic: missing key 'h_0_sl-sl'"),
    (EL + ("C_44",), KeyError, r"phase 'Cu': mechanical/elastic: missing key 'C_44'"),
    (("phase", "Cu", "lattice"), "cX", r"phase 'Cu': unknown lattice 'cX'"),
    (("phase", "Cu", "lattice"), KeyError, r"phase 'Cu': missing key 'lattice'"),
    (PL + ("xi_0_sl",), [1e6, 2e6], r"phase 'Cu'.*xi_0_sl has 2 entries, expected 1"),
    (PL + ("N_sl",), [12, 6], r"phase 'Cu'.*xi_0_sl has 1 entries, expected 2"),
    (PL + ("N_sl",), [13], r"phase 'Cu'.*N_sl: family 1 has 13"),
    (PL + ("h_sl-sl",), [1, 1, 1], r"phase 'Cu'.*h_sl-sl: 3 values"),
    (PL + ("xi_0_sl",), [-1.0], r"phase 'Cu'.*xi_0_sl must be > 0"),
    (PL + ("type",), "dislotwin", r"phase 'Cu'.*type 'dislotwin' not supported"),
    (EL + ("C_12",), 300e9, r"phase 'Cu'.*not positive definite"),
    (("phase", "Cu", "c/a"), 1.6, r"phase 'Cu': key 'c/a' given for cubic"),
    (("material", 0, "constituents", 0, "phase"), "Al", r"material entry 0, constituent 0: unknown phase 'Al'"),
    (("material", 0, "homogenization"), "Taylor", r"material entry 0: unknown homogenization 'Taylor'"),
    (("material", 0, "constituents", 0, "O"), [1.0, 1.0, 0, 0], r"material entry 0, constituent 0: O must be a unit"),
    (("homogenization",), KeyError, r"missing top-level key 'homogenization'"),
])
def test_bad_material_messages(tmp_path, path, value, match):
    p = tmp_path / "material.yaml"
    p.write_text(yaml.safe_dump(_edit(_material_dict(), path, value)))
    with pytest.raises(ValueError, match=match) as err:
        material.load_material(p)
    assert str(p) in str(err.value)


def test_hexagonal_phase_needs_c_a(tmp_path):
    cfg = yaml.safe_load(shipped_material("Mg").read_text())
    del cfg["phase"]["Mg"]["c/a"]
    p = tmp_path / "Mg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"phase 'Mg': missing key 'c/a'"):
        material.load_phase(p)
    cfg = yaml.safe_load(shipped_material("Mg").read_text())
    del cfg["phase"]["Mg"]["mechanical"]["plastic"]["h_tw-sl"]
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"phase 'Mg': mechanical/plastic: missing key 'h_tw-sl'"):
        material.load_phase(p)


def test_scalar_parameters_accepted_as_newer_damask_writes_them(tmp_path):
    cfg = _material_dict()
    pl = cfg["phase"]["Cu"]["mechanical"]["plastic"]
    pl.update({"n_sl": 20, "a_sl": 0.6, "dot_gamma_0_sl": 3e-3, "h_0_sl-sl": 3.5e8})
    p = tmp_path / "material.yaml"
    p.write_text(yaml.safe_dump(cfg))
    ref = material.load_phase(shipped_material("Cu")).plastic
    assert material.load_material(p).phases["Cu"].plastic == ref
    assert copy.deepcopy(ref) == ref


def test_missing_files():
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        material.load_material("nowhere.yaml")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        loadcase.load_loadcase("nowhere.yaml")
