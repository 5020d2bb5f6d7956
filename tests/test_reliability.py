"""Data integrity and clear failures: checksummed shards, one writer per dataset, clean-up after a kill, and
parameters checked before anything runs. Each test plants the fault it is about."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from micropipe import cli, store
from micropipe.datasets import cp_results, lock, shards
from micropipe.datasets import ve as dataset
from micropipe.datasets import ve_sets as sets
from micropipe.studies.cp_dataset import runs

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = {"cells": 4, "spacing": 1.0, "esd_mean": 2.5}
LOADCASE = {"strain": 0.001, "increments": 2}
TINY_VE = ("n_ve=2,shard_size=1,report_max_ves=2,generator.cells=4,generator.spacing=1.0,"
           "generator.esd_mean=2.5")


def flip_bit(path: Path, offset: int | None = None) -> int:
    """Flip one bit in the middle of the file (its data pages, not the footer); returns the byte offset."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    return offset


@pytest.fixture
def cp_dataset_dir(tmp_path):
    uri = str(tmp_path / "ds")
    for index in range(2):
        dataset.write_shard(uri, index, n_ve=2, shard_size=1, generator=GENERATOR, seed=3)
    dataset.gather(uri, n_ve=2, shard_size=1, generator=GENERATOR, seed=3)
    for index in range(2):
        runs.write_shard(uri, index, material="Cu", loadcase=LOADCASE, progress=False)
    return uri


def test_every_shard_has_its_checksum_and_the_manifest_lists_it(cp_dataset_dir):
    manifest = dataset.load_manifest(cp_dataset_dir)
    for shard in manifest["shards"]:
        uri = store.join(cp_dataset_dir, shard["path"])
        assert shards.recorded_checksum(uri) == shard["sha256"]
    gathered = cp_results.gather(cp_dataset_dir)
    cp_manifest = cp_results.load_manifest(cp_dataset_dir)
    assert [s["sha256"] for s in cp_manifest["shards"]] == [
        shards.recorded_checksum(store.join(cp_dataset_dir, cp_results.shard_results_name(i))) for i in (0, 1)]
    assert cp_manifest["results_sha256"] == shards.recorded_checksum(store.join(cp_dataset_dir, cp_results.GATHERED))
    assert len(gathered) == 2
    assert all(r["status"] == "ok" for r in shards.verify(cp_dataset_dir))


def test_a_bit_flip_in_a_cp_shard_is_found_moved_aside_and_recomputed_identically(cp_dataset_dir, caplog):
    """The fault of issue 22: one flipped bit in a CP shard's data pages used to be reused silently."""
    shard = Path(cp_dataset_dir) / cp_results.shard_results_name(0)
    before = cp_results.read_results(shard)
    flip_bit(shard)
    assert cp_results.results_metadata(shard)["complete"]  # the footer still says complete: not enough
    bad = [r for r in shards.verify(cp_dataset_dir) if r["status"] != "ok"]
    assert [(r["status"], Path(r["uri"]).name) for r in bad] == [("corrupt", "shard-00000.parquet")]
    assert cli.main(["data", "verify", cp_dataset_dir]) == 1

    with caplog.at_level("WARNING"):
        runs.write_shard(cp_dataset_dir, 0, material="Cu", loadcase=LOADCASE, progress=False)
    assert "checksum mismatch" in caplog.text and "moved" in caplog.text
    after = cp_results.read_results(shard)
    for column in ("stress", "strain", "sigma", "F"):
        for a, b in zip(before[column], after[column], strict=True):
            np.testing.assert_array_equal(a, b)  # recomputed, identical
    assert len(list(shard.parent.glob("shard-00000.parquet.corrupt-*Z"))) == 1  # with its checksum file beside it
    assert cli.main(["data", "verify", cp_dataset_dir]) == 0


def test_gather_refuses_a_corrupted_shard_and_moves_it_aside(cp_dataset_dir):
    shard = Path(cp_dataset_dir) / cp_results.shard_results_name(1)
    flip_bit(shard)
    with pytest.raises(shards.ChecksumError, match=r"shard-00001.parquet: checksum mismatch.*moved aside.*rerun"):
        cp_results.gather(cp_dataset_dir)
    assert not shard.exists()  # a rerun of the CP step computes it again
    runs.write_shard(cp_dataset_dir, 1, material="Cu", loadcase=LOADCASE, progress=False)
    assert len(cp_results.gather(cp_dataset_dir)) == 2


def test_a_bit_flip_in_a_ve_set_shard_is_regenerated_with_the_same_ves(tmp_path, caplog):
    config = sets.SetsConfig.from_dict({"n_train": 2, "n_validation": 1, "n_edge": 0, "n_cp": 0, "shard_size": 2},
                                       {**GENERATOR, "lattice": "hP"}, seed=5)
    uri = sets.write_set_shard(str(tmp_path), "train/0", config)
    before = dataset.io.read_shard(uri)
    flip_bit(Path(uri))
    with caplog.at_level("WARNING"):
        again = sets.write_set_shard(str(tmp_path), "train/0", config)
    assert again == uri and "checksum mismatch" in caplog.text
    after = dataset.io.read_shard(uri)
    for ve_id, ve in before.items():
        np.testing.assert_array_equal(ve.grain_ids, after[ve_id].grain_ids)
        np.testing.assert_array_equal(ve.euler, after[ve_id].euler)


def test_a_shard_without_checksum_is_computed_again(cp_dataset_dir):
    shard = store.join(cp_dataset_dir, cp_results.shard_results_name(0))
    store.delete(shards.checksum_uri(shard))
    assert not cp_results.shard_complete(shard)
    assert [r["status"] for r in shards.verify(cp_dataset_dir) if r["uri"] == shard] == ["no checksum"]


# --------------------------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_with_a_line_naming_the_first(tmp_path):
    uri = str(tmp_path / "ds")
    with lock.hold(uri, run="ve_generation (preset small)", arguments_digest="a") as me:
        with pytest.raises(lock.DatasetLocked, match=r"is being written by run ve_generation \(preset small\) "
                                                     rf"\(pid {os.getpid()} on .*\) with other arguments"):
            with lock.hold(uri, run="other", arguments_digest="b"):
                pass
        assert lock.read(uri)["token"] == me["token"]
    assert lock.read(uri) is None  # released


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    uri = str(tmp_path / "ds")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    holder = {"run": "killed", "host": os.uname().nodename, "pid": int(dead.stdout), "started_utc": "2026-01-01",
              "heartbeat_utc": "2026-01-01T00:00:00+00:00", "token": "x"}
    store.write_text(lock.lock_uri(uri), json.dumps(holder))
    with caplog.at_level("WARNING"), lock.hold(uri, run="next"):
        assert lock.read(uri)["run"] == "next"
    assert "taking over the lock" in caplog.text and "is gone" in caplog.text


def test_exclusive_create_on_s3(s3_server):
    uri = f"{s3_server}/locks/one.json"
    assert store.create_exclusive(uri, b"first")
    assert not store.create_exclusive(uri, b"second")
    assert store.read_bytes(uri) == b"first"


def test_two_runs_on_one_dataset_the_second_is_refused_without_a_run_dir(tmp_path, capsys):
    data = str(tmp_path / "data")
    with lock.hold(data, run="ve_generation (preset small)", arguments_digest="seed0"):
        rc = cli.main(["run", "ve_generation", "--runs-dir", str(tmp_path / "runs"), "--dataset-uri", data,
                       "--set", f"{TINY_VE},seed=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is being written by run ve_generation (preset small)" in err[0]
    assert not (tmp_path / "runs" / "ve_generation").exists() or not any((tmp_path / "runs" / "ve_generation")
                                                                         .iterdir())


def test_run_dirs_of_the_same_second_are_distinct(tmp_path):
    from pipelines import _kfp

    made = {_kfp.new_run_dir(tmp_path) for _ in range(3)}
    assert len(made) == 3 and all(p.is_dir() for p in made)


def test_sigkill_mid_write_leaves_no_ghost_after_the_next_run(tmp_path, capsys):
    """A run killed while it holds the lock and stages a shard: the next run on that dataset takes over the lock,
    removes the staging files, marks the dead run interrupted, and finishes."""
    data, runs_dir = tmp_path / "data", tmp_path / "runs"
    ghost = runs_dir / "ve_generation" / "20260101T000000Z"
    ghost.mkdir(parents=True)
    script = textwrap.dedent(f"""
        import json, os, platform, signal
        from micropipe import store
        from micropipe.datasets import lock
        with lock.hold({str(data)!r}, run="ve_generation (preset small)"):
            open({str(ghost / 'run.json')!r}, "w").write(json.dumps(
                {{"status": "running", "pid": os.getpid(), "host": platform.node()}}))
            with store.staged_output({str(data / 'shards' / 'shard-00000.h5')!r}) as path:
                path.write_bytes(b"half a shard")
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    assert list(data.rglob("*.micropipe-tmp*")) and lock.read(str(data)) is not None
    assert cli.main(["run", "ve_generation", "--runs-dir", str(runs_dir), "--dataset-uri", str(data),
                     "--set", TINY_VE]) == 0
    assert not list(data.rglob("*.micropipe-tmp*")) and lock.read(str(data)) is None
    assert json.loads((ghost / "run.json").read_text())["status"] == "interrupted"


# ------------------------------------------------------------------------------- checked before launch
@pytest.mark.parametrize(("override", "expected"), [
    ("generator.cells=abc", "cells"),
    ("generator.cells=0", "cells"),
    ("generator.foo=1", "foo"),
    ("n_ve=-1", "n_ve must be a positive integer, got -1"),
    ("generator.axis_ratio=[2,1", "--set generator.axis_ratio=[2,1: the value is not valid YAML"),
    ("foo=1", "unknown parameter(s) foo"),
    ("backend=dream4d", "unknown VE generator 'dream4d'"),
])
def test_bad_parameters_are_one_line_before_anything_runs(tmp_path, capsys, override, expected):
    runs_dir = tmp_path / "runs"
    rc = cli.main(["run", "ve_generation", "--runs-dir", str(runs_dir), "--dataset-uri", str(tmp_path / "d"),
                   "--set", override])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and expected in lines[0] and "\x1b[" not in err, err
    assert not runs_dir.exists() and not (tmp_path / "d").exists()  # no run dir, no data, no lock


@pytest.mark.parametrize(("pipeline", "override", "expected"), [
    ("cp_dataset", "material=Mg", "material: phase 'Mg' has lattice 'hP', but generator.lattice is 'cF'"),
    ("cp_dataset", "cp_cells=[4,4]", "cells: expected 3 positive integers"),
    ("cp_dataset", "loadcase.strains=0.1", "loadcase: unknown key(s) strains"),
    ("cp_surrogate", "vae.depth=13", "vae: invalid depth 13"),
    ("cp_surrogate", "surrogate_train.epochs=0", "surrogate_train: invalid epochs 0"),
    ("cp_surrogate", "train_fraction=1.5", "invalid train_fraction 1.5"),
    ("gan_homogenization", "model_overrides.generator.filterz=8", "model_overrides.generator: unknown"),
    ("gan_homogenization", "size=64", "size: 64, but model 'small' generates volumes of 32^3"),
    ("gan_homogenization", "nu=[0.4]", "E, nu: 2 and 1 values"),
])
def test_each_pipeline_checks_its_parameters_before_launch(tmp_path, capsys, pipeline, override, expected):
    rc = cli.main(["run", pipeline, "--runs-dir", str(tmp_path / "runs"), "--dataset-uri", str(tmp_path / "d"),
                   "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "runs").exists()


def test_every_preset_passes_the_checks():
    from pipelines import PIPELINES, _kfp

    for name in PIPELINES:
        for preset in _kfp.list_presets(name):
            arguments = {"dataset_uri": "/tmp/x", **_kfp.load_preset(name, preset)}
            _kfp.validate(name, cli._with_preset(name, preset, arguments), f"{name}/{preset}")


def test_an_unwritable_store_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc = cli.main(["run", "ve_generation", "--runs-dir", str(tmp_path / "runs"), "--dataset-uri",
                   str(blocker / "ds"), "--set", TINY_VE])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is not a writable directory" in err[0]


def test_a_failing_step_is_named_with_its_error_in_the_last_line_and_in_run_json(tmp_path, capsys, monkeypatch):
    """A fault only a task can find (here: the DREAM.3D backend, whose binary lives in its image) ends in one last
    line naming the step and the error, without colour codes, and run.json says the same."""
    monkeypatch.delenv("DREAM3D_PIPELINE_RUNNER", raising=False)
    runs_dir = tmp_path / "runs"
    rc = cli.main(["run", "ve_generation", "--runs-dir", str(runs_dir), "--dataset-uri", str(tmp_path / "d"),
                   "--set", f"{TINY_VE},backend=dream3d"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "\x1b[" not in err
    assert last.startswith("micropipe: error: pipeline ve_generation failed: step generate-ve-shard") and \
        "DREAM.3D PipelineRunner not found" in last, last
    (run,) = runs_dir.glob("ve_generation/*/run.json")
    record = json.loads(run.read_text())
    assert record["status"] == "failed" and "DREAM.3D PipelineRunner not found" in record["error"]
