"""CP runs over VE datasets: Parquet results, resume, gather, report, and `micropipe cp` on DAMASK's inputs.

Most tests replace the built-in solver by a fast stand-in (``fake_solver``) so that they check the plumbing;
``test_cli_on_damask_reference`` and the pipeline tests run the real solver.
"""

import json
from pathlib import Path

import damask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from micropipe import cli, provenance, store
from micropipe.crystal.loadcase import uniaxial_tension_z
from micropipe.datasets import cp_results
from micropipe.datasets import ve as dataset
from micropipe.spectral import cp
from micropipe.studies.cp_dataset import inputs, runs
from micropipe.studies.cp_dataset import report as cp_report

REFS = Path(__file__).resolve().parents[2] / "shared" / "refs" / "damask"
GENERATOR = {"cells": 8, "spacing": 1.0, "esd_mean": 4.0}
CU = inputs.resolve_phase("Cu")


def make_dataset(root, n_ve=5, shard_size=5, generator=GENERATOR, seed=1):
    uri = str(root)
    for index in range(len(dataset.shard_ranges(n_ve, shard_size))):
        dataset.write_shard(uri, index, n_ve=n_ve, shard_size=shard_size, generator=generator, seed=seed)
    dataset.gather(uri, n_ve=n_ve, shard_size=shard_size, generator=generator, seed=seed)
    return uri


def fake_result(n_grains, loadcase, *, converged=True, stop=None):
    """A linear-hardening curve whose slope depends on the grain count: distinct per VE, exact to check."""
    step = loadcase.steps[0]
    n = step.N if stop is None else stop
    t = np.linspace(0.0, step.t, step.N + 1)[:n + 1]
    eps = step.deformation[2, 2] * t
    F = np.broadcast_to(np.eye(3), (n + 1, 3, 3)).copy()
    F[:, 2, 2] += eps
    F[:, 0, 0] -= 0.5 * eps
    F[:, 1, 1] -= 0.5 * eps
    sigma = np.zeros((n + 1, 3, 3))
    sigma[:, 2, 2] = 1e9 * (1.0 + 0.01 * n_grains) * eps
    sigma[:, 0, 1] = sigma[:, 1, 0] = 1e3 * eps
    return cp.CPResult(converged=converged, reason="" if converged else f"increment {n + 1}: residual too large",
                       time=t, F=F, P=sigma.copy(), sigma=sigma, iterations=np.full(n, 3), cutbacks=np.zeros(n, int),
                       wall_time=0.25, backend="builtin")


@pytest.fixture
def fake_solver(monkeypatch):
    """Stand-in for cp.solve_orientations; records batch sizes. VEs named (by index, see ``ve_key``) in
    ``fail`` do not converge, those in ``explode`` make the solver raise."""
    calls = {"batches": [], "fail": set(), "explode": set()}

    def solve_orientations(phase, grain_ids, O, loadcase, **kwargs):
        assert phase.lattice == "cF" and O.shape[:1] == grain_ids.shape[:1] and O.shape[2] == 4
        assert np.allclose(np.linalg.norm(O, axis=-1), 1.0)
        calls["batches"].append(len(grain_ids))
        keys = [_key(q) for q in O[:, 0]]
        if any(k in calls["explode"] for k in keys):
            raise RuntimeError("NaN in the stress update")
        if kwargs.get("progress"):
            kwargs["progress"](loadcase.steps[0].N, loadcase.steps[0].N)
        return [fake_result(len(np.unique(g)), loadcase, converged=k not in calls["fail"],
                            stop=2 if k in calls["fail"] else None) for g, k in zip(grain_ids, keys, strict=True)]

    monkeypatch.setattr(cp, "solve_orientations", solve_orientations)
    return calls


def _key(q):
    return tuple(np.round(np.asarray(q, float), 9))


def ve_key(uri, index):
    """Identifies VE ``index`` of a dataset inside the fake solver: the quaternion of its first grain."""
    ves = dict(dataset.iter_ves(dataset.load_manifest(uri)))
    return _key(runs.quaternions(ves[dataset.ve_id(index)].euler)[0])


def grain_counts(uri):
    return [ve.N_grains for _, ve in dataset.iter_ves(dataset.load_manifest(uri))]


# ----------------------------------------------------------------------------------------- parquet
def test_results_round_trip_with_schema_and_provenance(tmp_path, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=3)
    out = runs.write_shard(uri, 0, material="Cu", progress=False)
    assert out == str(tmp_path / "ds" / "cp" / "shards" / "shard-00000.parquet")
    df = cp_results.read_results(out)
    assert list(df.columns) == list(cp_results.COLUMNS)
    assert df["ve_id"].tolist() == [dataset.ve_id(i) for i in range(3)]
    row = df.iloc[0]
    assert len(row.strain) == len(row.stress) == len(row.time) == 21 and row.n_increments == 20
    assert row.sigma.shape == (21, 6) and row.F.shape == (21, 9)
    assert np.isclose(row.strain[-1], 0.01) and row.strain[0] == 0.0
    assert np.allclose(row.stress, row.sigma[:, 2]) and np.allclose(row.sigma[:, 5], 1e3 * row.strain)  # Voigt 12
    assert np.allclose(row.F[:, 8], 1 + row.strain) and row.iterations.dtype == np.int64
    assert row.cells.tolist() == [8, 8, 8] and row.n_grains == grain_counts(uri)[0]

    table = pq.read_table(out)
    assert table.schema.field("sigma").type == pa.list_(pa.list_(pa.float64(), 6))
    meta = df.attrs["micropipe"]
    assert meta["complete"] is True and meta["n_ve"] == 3 and meta["format"] == cp_results.RESULTS_FORMAT
    prov = meta["provenance"]
    assert prov["step"] == "cp.write_shard" and prov["seed"] == 1 and prov["git_commit"]
    assert prov["params"]["backend"] == "builtin" and "Cu" in prov["params"]["phase"]
    assert prov["params"]["loadcase"]["steps"][0]["N"] == 20

    again = tmp_path / "again.parquet"
    cp_results.write_results(df, again, meta["provenance"])
    back = cp_results.read_results(again)
    for column in cp_results.COLUMNS:
        for a, b in zip(df[column], back[column], strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b)), column


def test_write_is_atomic(tmp_path, monkeypatch, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=2)
    df = cp_results.read_results(runs.write_shard(uri, 0, progress=False))
    target = tmp_path / "out" / "r.parquet"

    def broken(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        cp_results.write_results(df, target, provenance.record(seed=None, params={}, step="test"))
    assert not target.exists() and store.list_files(tmp_path / "out") == []
    assert not cp_results.shard_complete(target)


def test_foreign_or_incomplete_parquet_is_refused(tmp_path):
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"ve_id": ["a"]}).to_parquet(plain)
    with pytest.raises(ValueError, match="plain.parquet: schema metadata 'micropipe' is missing"):
        cp_results.read_results(plain)
    assert not cp_results.shard_complete(plain)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ValueError, match="junk.parquet: not a readable Parquet file"):
        cp_results.read_results(junk)
    incomplete = tmp_path / "incomplete.parquet"
    table = cp_results._table(cp_results.frame([]))
    pq.write_table(table.replace_schema_metadata({b"micropipe": json.dumps(
        {"format": cp_results.RESULTS_FORMAT, "n_ve": 0}).encode()}), incomplete)
    with pytest.raises(ValueError, match="field 'complete' is not true"):
        cp_results.read_results(incomplete)


# ------------------------------------------------------------------------------------------ solving
def test_run_shard_batches_and_keeps_failures(tmp_path, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=5)
    fake_solver["fail"] = {ve_key(uri, 1)}
    fake_solver["explode"] = {ve_key(uri, 3)}
    df = runs.run_shard(tmp_path / "ds" / "shards" / "shard-00000.h5", CU, uniaxial_tension_z(), batch_size=2,
                           progress=False)
    assert df["ve_id"].tolist() == [dataset.ve_id(i) for i in range(5)]
    assert df["converged"].tolist() == [True, False, True, False, True]
    bad = df.iloc[1]
    assert "residual too large" in bad.reason and len(bad.stress) == 3 and bad.n_increments == 2
    boom = df.iloc[3]
    assert boom.reason == "solver error: RuntimeError: NaN in the stress update" and boom.n_increments == 0
    # the batch (2, 3) raised and was solved in halves; VE 2 still converged
    assert fake_solver["batches"] == [2, 2, 1, 1, 1]
    assert df["reason"][df["converged"]].eq("").all()


def test_lattice_mismatch_and_bad_inputs_are_named(tmp_path, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=1)
    with pytest.raises(ValueError, match=r"shard-00000.h5 \[ve_0000000\]: field 'lattice' is 'cF', but material "
                                         r"phase 'Mg' has lattice 'hP'"):
        runs.write_shard(uri, 0, material="Mg")
    with pytest.raises(ValueError, match="shard_index must lie in"):
        runs.write_shard(uri, 3)
    with pytest.raises(ValueError, match="backend: unknown CP solver 'abaqus'"):
        runs.write_shard(uri, 0, backend="abaqus")
    with pytest.raises(FileNotFoundError, match="material: 'Ti' is neither a shipped material"):
        inputs.resolve_phase("Ti")
    with pytest.raises(ValueError, match="loadcase: unknown key"):
        inputs.resolve_loadcase({"strian": 0.02})
    with pytest.raises(ValueError, match="numerics: unknown key"):
        inputs.resolve_numerics({"N_iter_max": 10, "tol": 1})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        runs.run_shard(tmp_path / "ds" / "shards" / "shard-00000.h5", CU, uniaxial_tension_z(), batch_size=0)


def test_inputs_as_they_arrive_from_kfp():
    """Dict parameters cross KFP as JSON with every number a double; whole numbers come back as int."""
    lc = inputs.resolve_loadcase({"increments": 4.0, "strain": 0.002})
    assert lc.steps[0].N == 4 and np.isclose(lc.steps[0].t, 2.0)
    assert inputs.resolve_loadcase({}).steps[0].N == 20
    assert inputs.resolve_numerics({"N_iter_max": 80.0, "eps_rel_div": 1e-5}).N_iter_max == 80
    assert inputs.resolve_numerics({}) is None
    yaml_text = Path(inputs.shipped_material("Cu")).read_text()
    assert inputs.resolve_phase(yaml_text) == CU


def test_damask_backend_without_binary_fails_clearly(tmp_path, monkeypatch, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=1)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("MICROPIPE_DAMASK_GRID", raising=False)
    with pytest.raises(FileNotFoundError, match="DAMASK_grid not found"):
        runs.write_shard(uri, 0, backend="damask")
    assert not store.exists(store.join(uri, "cp"))


# ------------------------------------------------------------------------------------ resume, gather
def test_rerun_skips_complete_shards_only(tmp_path, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=4, shard_size=2)
    first = runs.write_shard(uri, 0, progress=False)
    assert fake_solver["batches"] == [2]
    before = Path(first).stat().st_mtime_ns
    assert runs.write_shard(uri, 0, progress=False) == first
    assert fake_solver["batches"] == [2] and Path(first).stat().st_mtime_ns == before, "complete shard skipped"
    assert cp_results.shard_complete(first, 2) and not cp_results.shard_complete(first, 3)
    runs.write_shard(uri, 0, loadcase={"increments": 4}, progress=False)
    assert fake_solver["batches"] == [2, 2], "other parameters: computed again"
    assert len(cp_results.read_results(first).stress.iloc[0]) == 5
    runs.write_shard(uri, 0, loadcase={"increments": 4}, progress=False, force=True)
    assert fake_solver["batches"] == [2, 2, 2]
    dataset.write_shard(uri, 0, n_ve=4, shard_size=2, generator=GENERATOR, seed=2)  # other VEs, same ids
    with pytest.raises(ValueError, match="rewritten after its dataset's manifest was written.*gather the dataset"):
        runs.write_shard(uri, 0, loadcase={"increments": 4}, progress=False)  # VEs the manifest does not know
    dataset.gather(uri, n_ve=4, shard_size=2, generator=GENERATOR, seed=2)
    runs.write_shard(uri, 0, loadcase={"increments": 4}, progress=False)
    assert fake_solver["batches"] == [2, 2, 2, 2], "the VE shard changed: computed again"


def test_gather_writes_results_and_manifest(tmp_path, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=5, shard_size=2)
    for index in (0, 1):
        runs.write_shard(uri, index, progress=False)
    with pytest.raises(ValueError, match=r"CP results of shard 2 .* are missing"):
        cp_results.gather(uri)
    assert not (tmp_path / "ds" / cp_results.MANIFEST).exists()
    runs.write_shard(uri, 2, loadcase={"increments": 4}, progress=False)
    with pytest.raises(ValueError, match="computed with different parameters"):
        cp_results.gather(uri)
    runs.write_shard(uri, 2, progress=False)
    df = cp_results.gather(uri)
    assert df["ve_id"].tolist() == [dataset.ve_id(i) for i in range(5)]
    back = cp_results.read_results(store.join(uri, cp_results.GATHERED))
    assert back["ve_id"].tolist() == df["ve_id"].tolist()
    assert back.attrs["micropipe"]["provenance"]["step"] == "cp.gather"
    manifest = cp_results.load_manifest(uri)
    assert manifest["n_ve"] == 5 and manifest["n_converged"] == 5 and len(manifest["shards"]) == 3
    assert manifest["provenance"]["params"]["backend"] == "builtin"


def test_report_writes_files(tmp_path, fake_solver):
    uri = make_dataset(tmp_path / "ds", n_ve=4)
    fake_solver["fail"] = {ve_key(uri, 2)}
    runs.write_shard(uri, 0, progress=False)
    df = cp_results.gather(uri)
    built = cp_report.report(df, tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    for heading in ("Stress-strain curves", "Convergence", "Wall time", "Non-converged VEs", "Provenance"):
        assert heading in html
    assert "Stress-strain curves" in (tmp_path / "report" / "report.md").read_text()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics == built.metrics
    assert metrics["n_ves"] == 4 and metrics["n_converged"] == 3 and metrics["n_failed"] == 1
    ok = df[df["converged"]]
    expected = np.mean([1e9 * (1 + 0.01 * g) * 0.01 for g in ok["n_grains"]]) / 1e6
    assert np.isclose(metrics["sigma_zz_MPa_at_1pct_mean"], expected)
    assert np.isclose(metrics["wall_time_s_mean"], 0.25)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_cp_bad_input_gives_one_line(tmp_path, capsys):
    case = REFS / "a_Cu_cube_8"
    args = ["cp", "--geom", str(tmp_path / "none.vti"), "--material", "m.yaml", "--load", "l.yaml"]
    assert cli.main(args) == 2
    assert "none.vti: geometry file not found" in capsys.readouterr().err
    if not case.is_dir():
        pytest.skip(f"DAMASK reference cases not found at {REFS}")
    bad = tmp_path / "material.yaml"
    bad.write_text("".join(line for line in (case / "material.yaml").read_text().splitlines(keepends=True)
                           if "xi_0_sl:" not in line))
    assert cli.main(["cp", "--geom", str(case / "geom.vti"), "--material", str(bad), "--load",
                     str(case / "load.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("micropipe: error:") and "material.yaml" in err and "xi_0_sl" in err
    assert len(err.strip().splitlines()) == 1
    numerics = tmp_path / "numerics.yaml"
    numerics.write_text("solver:\n  grid:\n    N_cutback_max: -1\n")
    assert cli.main(["cp", "--geom", str(case / "geom.vti"), "--material", str(case / "material.yaml"),
                     "--load", str(case / "load.yaml"), "--numerics", str(numerics)]) == 2
    err = capsys.readouterr().err
    assert "numerics.yaml" in err and "N_cutback_max" in err and len(err.strip().splitlines()) == 1
    geom = tmp_path / "geom.vti"
    damask.GeomGrid(np.arange(8).reshape(2, 2, 2), np.ones(3)).save(geom)
    assert cli.main(["cp", "--geom", str(geom), "--material", str(case / "material.yaml"),
                     "--load", str(case / "load.yaml")]) == 2
    assert "field 'material' holds ids 0..7, but" in capsys.readouterr().err
    assert cli.main(["cp", "--geom", str(case / "geom.vti"), "--material", str(case / "material.yaml"),
                     "--load", str(case / "load.yaml"), "--backend", "damask", "--fields", "f.vti"]) == 2
    assert "--fields applies to the builtin backend only" in capsys.readouterr().err


def test_cli_cp_damask_backend_absent(tmp_path, monkeypatch, capsys):
    case = REFS / "a_Cu_cube_8"
    if not case.is_dir():
        pytest.skip(f"DAMASK reference cases not found at {REFS}")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("MICROPIPE_DAMASK_GRID", raising=False)
    assert cli.main(["cp", "--geom", str(case / "geom.vti"), "--material", str(case / "material.yaml"),
                     "--load", str(case / "load.yaml"), "--backend", "damask"]) == 2
    assert "DAMASK_grid not found" in capsys.readouterr().err


def test_cli_on_damask_reference(tmp_path, capsys):
    """`micropipe cp` on DAMASK_grid's own input files, unchanged: the curve matches DAMASK's."""
    case = REFS / "a_Cu_cube_8"
    if not case.is_dir():
        pytest.skip(f"DAMASK reference cases not found at {REFS}")
    out, fields = tmp_path / "r.parquet", tmp_path / "fields.vti"
    rc = cli.main(["cp", "--geom", str(case / "geom.vti"), "--material", str(case / "material.yaml"),
                   "--load", str(case / "load.yaml"), "--json", "--out", str(out), "--fields", str(fields)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    ref = pd.read_csv(case / "curve.csv")
    assert res["converged"] and res["reason"] == "" and len(res["time"]) == len(ref) == 21
    assert np.allclose(res["strain_zz"], ref["eng_strain_zz"], atol=1e-9)
    sigma = np.array(res["sigma"])
    assert sigma.shape == (21, 3, 3) and np.array(res["F"]).shape == (21, 3, 3)
    assert np.allclose(sigma[1:, 2, 2], ref["sigma_zz_Pa"][1:], rtol=0.03)
    assert np.allclose(sigma[:, 0, 0], 0, atol=1e3)  # P_xx = 0 prescribed
    df = cp_results.read_results(out)
    assert df["ve_id"].tolist() == ["geom"] and np.allclose(df.stress.iloc[0], sigma[:, 2, 2])
    assert df.attrs["micropipe"]["provenance"]["step"] == "cp"
    vtk = damask.VTK.load(fields)
    assert "material" in vtk.labels["Cell Data"]
    assert np.allclose(vtk.get("F").reshape(-1, 3, 3)[:, 2, 2], 1.01, atol=1e-3)
