"""The ve_generation pipeline end to end on the KFP local runner, and the CLI around it."""

import builtins
import contextlib
import json
import logging
import re
import sys
from io import StringIO
from pathlib import Path

import h5py
import numpy as np
import pytest

from micropipe import cli
from micropipe.datasets import ve as dataset
from micropipe.ve import io
from micropipe.ve.generator import GeneratorConfig, generate, ve_seed

try:  # `python -m pytest` from the repo root, or the `pytest` script with tests/ on sys.path
    from tests.test_pipelines import dataset_uri, run_dirs
except ImportError:
    from test_pipelines import dataset_uri, run_dirs

TINY = "n_ve=5,shard_size=2,report_max_ves=5,generator.cells=16,generator.spacing=1.0,generator.esd_mean=5.0"


@pytest.fixture(scope="module")
def console_run(tmp_path_factory):
    """``micropipe run`` of the tiny preset: its run directory and what it printed on stdout and stderr."""
    runs = tmp_path_factory.mktemp("runs")
    out, err = StringIO(), StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["run", "ve_generation", "--preset", "small", "--set", TINY, "--runs-dir", str(runs)])
    assert rc == 0, err.getvalue()
    (run_dir,) = run_dirs(runs / "ve_generation")
    return run_dir, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def local_run(console_run):
    return console_run[0]


STEPS = ("plan-shards", "generate-ve-shard [0]", "generate-ve-shard [1]", "generate-ve-shard [2]",
         "gather-ve-dataset", "ve-report")


def test_run_prints_one_line_per_step_and_a_report_that_opens(console_run):
    run_dir, out, err = console_run
    lines = out.splitlines()
    assert len(lines) < 40, out
    for noise in ("executor_input", "KFP Executor", "{", "\x1b["):
        assert noise not in out + err, f"{noise!r} on the console:\n{out}{err}"
    steps = [line.split() for line in lines if line.startswith("  ")]
    assert sorted(" ".join(s[:-3]) for s in steps) == sorted(STEPS), out
    assert all(s[-3] == "ok" and s[-1] == "s" and float(s[-2]) > 0 for s in steps), out
    (report,) = [line.split()[1] for line in lines if line.startswith("report:")]
    assert Path(report) == run_dir / "report.html" and Path(report).read_text().lstrip().lower().startswith(
        ("<!doctype html", "<html"))
    assert (run_dir / "report.md").read_text().startswith("#")
    (log,) = [line.split()[1] for line in lines if line.startswith("log:")]
    text = Path(log).read_text()
    assert Path(log) == run_dir / "kfp.log" and "\x1b[" not in text
    for step in ("plan-shards", "generate-ve-shard", "gather-ve-dataset", "ve-report"):
        assert f"Executing task '{step}'" in text and f"Task '{step}' finished with status SUCCESS" in text
    assert "Got executor_input" in text and "gathered 3 shards (5 VEs)" in text
    assert "Pipeline 've-generation' finished with status SUCCESS" in text
    record = json.loads((run_dir / "run.json").read_text())
    assert record["report"] == {"report": str(run_dir / "report.html"), "summary": str(run_dir / "report.md")}


def test_failed_step_is_named_with_the_tail_of_its_log(tmp_path, capsys):
    streams = sys.stdout, sys.stderr, builtins.print
    # a fault only the task finds (the DREAM.3D binary lives in its image); bad values stop before launch
    rc = cli.main(["run", "ve_generation", "--set", TINY + ",backend=dream3d", "--runs-dir", str(tmp_path)])
    assert rc == 2
    out, err = capsys.readouterr()
    assert (sys.stdout, sys.stderr, builtins.print) == streams, "streams and print restored"
    assert not [h for h in logging.getLogger().handlers if type(getattr(h, "stream", None)).__name__ == "_LineWriter"]
    assert re.search(r"^  generate-ve-shard \[\d\] +FAILED ", out, re.M), out
    assert "ve-report" not in out and len(out.splitlines()) < 10
    (run_dir,) = run_dirs(tmp_path / "ve_generation")
    header = re.search(r"^step (generate-ve-shard \[\d\]) failed; the last (\d+) lines of its log:$", err, re.M)
    assert header and 10 <= int(header[2]) <= 30, err
    tail = err[header.end():].splitlines()[1:int(header[2]) + 1]
    assert all(line.startswith("  | ") for line in tail), err
    assert "BackendUnavailable: DREAM.3D PipelineRunner not found" in tail[-1]
    assert f"full log: {run_dir / 'kfp.log'}" in err
    assert f"pipeline ve_generation failed: step {header[1]}" in err
    assert "Traceback (most recent call last)" in (run_dir / "kfp.log").read_text()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "report.html").exists()


def test_run_writes_report_metrics_and_provenance(local_run, capsys):
    record = json.loads((local_run / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert record["version"] and record["git_commit"] and record["seed"] == 0
    html = open(record["outputs"]["report"]).read()
    assert html.count("data:image/png;base64,") >= 5, "report must embed its plots"
    for heading in ("Grain size", "Axis ratios", "Pole figure", "Mid-plane slices", "Measured vs target"):
        assert heading in html
    assert record["metrics"]["n_ve"] == 5
    assert record["metrics"]["grains_per_ve_mean"] > 1


def test_run_dataset_is_complete_and_deterministic(local_run):
    manifest = dataset.load_manifest(dataset_uri(local_run))
    assert manifest["n_ve"] == 5 and len(manifest["shards"]) == 3
    ves = dict(dataset.iter_ves(manifest))
    assert list(ves) == [dataset.ve_id(i) for i in range(5)]
    # VE 3 regenerated on its own, outside KFP, is byte-identical.
    config = GeneratorConfig.from_dict({"cells": 16, "spacing": 1.0, "esd_mean": 5.0, "esd_sigma": 0.1,
                                        "lattice": "cF", "texture": "random"})
    again = generate(config, rng_seed=ve_seed(0, 3))
    assert again.grain_ids.tobytes() == ves[dataset.ve_id(3)].grain_ids.tobytes()
    assert again.euler.tobytes() == ves[dataset.ve_id(3)].euler.tobytes()
    with h5py.File(Path(dataset_uri(local_run)) / "shards" / "shard-00001.h5") as f:
        prov = json.loads(f.attrs["provenance"])
    assert prov["seed"] == 0 and prov["params"]["ve_range"] == [2, 4]


def test_gather_refuses_missing_shard(tmp_path):
    gen = {"cells": 8, "spacing": 1.0, "esd_mean": 4.0}
    dataset.write_shard(str(tmp_path), 0, n_ve=4, shard_size=2, generator=gen, seed=1)
    with pytest.raises(ValueError, match="shard 1 .* is missing"):
        dataset.gather(str(tmp_path), n_ve=4, shard_size=2, generator=gen, seed=1)
    assert not (tmp_path / dataset.MANIFEST).exists()


def test_gather_checks_the_collected_shard_uris(tmp_path):
    """The fan-in component takes the URIs the shard tasks returned: exactly the dataset's shards, any order."""
    from kfp.dsl import Dataset

    from components.gather_ve_dataset import gather_ve_dataset

    common = {"n_ve": 4, "shard_size": 2, "generator": {"cells": 8, "spacing": 1.0, "esd_mean": 4.0}, "seed": 1}
    uri = str(tmp_path / "ds")
    shards = [dataset.write_shard(uri, i, **common) for i in (0, 1)]
    out = Dataset(uri=str(tmp_path / "manifest"))
    for wrong in (shards[:1], [shards[0], shards[0]], [shards[0], str(tmp_path / "other" / "shard-00001.h6")]):
        with pytest.raises(ValueError, match=r"shards: the fan-out returned \d shard URI\(s\) for 2 shards"):
            gather_ve_dataset.python_func(dataset_uri=uri, backend="builtin", shards=wrong, dataset=out, **common)
    gather_ve_dataset.python_func(dataset_uri=uri, backend="builtin", shards=shards[::-1], dataset=out, **common)
    assert json.loads(Path(out.path).read_text())["n_ve"] == 4 and out.metadata["n_shards"] == 2


def test_unknown_pipeline_lists_valid_ones(capsys):
    assert cli.main(["run", "nope"]) == 2
    assert "valid pipelines: ve_generation" in capsys.readouterr().err


def test_unknown_preset_and_parameter_are_named(tmp_path, capsys):
    assert cli.main(["run", "ve_generation", "--preset", "huge", "--runs-dir", str(tmp_path)]) == 2
    assert "valid presets: edge_cases, paper, paper_validation, small" in capsys.readouterr().err
    assert cli.main(["run", "ve_generation", "--set", "n_vee=3", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown parameter(s) n_vee" in capsys.readouterr().err


def test_data_generate_and_convert(tmp_path, capsys):
    out = tmp_path / "ds"
    assert cli.main(["data", "generate", str(out), "--set", TINY]) == 0
    assert cli.main(["data", "info", str(out)]) == 0
    assert '"n_ve": 5' in capsys.readouterr().out
    dst = tmp_path / "ve.dream3d"
    assert cli.main(["data", "convert", str(out), str(dst), "--ve-id", dataset.ve_id(2)]) == 0
    back = io.load(dst)
    ve2 = dict(dataset.iter_ves(dataset.load_manifest(str(out))))[dataset.ve_id(2)]
    assert np.array_equal(back.grain_ids, ve2.grain_ids)


def test_run_with_dataset_in_s3(s3_server, tmp_path):
    """The whole pipeline with its dataset in a real S3 server on 127.0.0.1: shards and manifest land there."""
    from micropipe import store

    bucket = s3_server.make_bucket()
    uri = f"s3://{bucket}/datasets/tiny"
    rc = cli.main(["run", "ve_generation", "--set", TINY, "--runs-dir", str(tmp_path), "--dataset-uri", uri])
    assert rc == 0
    names = [u.rsplit("/", 1)[-1] for u in store.list_files(uri)]
    shards = [f"shard-0000{i}.h5" for i in range(3)]
    assert names == ["manifest.json", *sorted(shards + [f"{s}.sha256" for s in shards])]  # each with its checksum
    assert not store.exists(f"{uri}/.micropipe-lock.json"), "the run released its lock on S3"
    assert dataset.load_manifest(uri)["n_ve"] == 5
    (run_dir,) = run_dirs(tmp_path / "ve_generation")
    assert not (run_dir / "dataset").exists(), "the dataset went to S3, not into the run directory"


def test_dream3d_backend_without_binary_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("DREAM3D_PIPELINE_RUNNER", raising=False)
    with pytest.raises(FileNotFoundError, match="PipelineRunner not found"):
        dataset.write_shard(str(tmp_path), 0, n_ve=1, shard_size=1, generator={"cells": 8, "spacing": 1.0,
                                                                               "esd_mean": 4.0},
                            seed=0, backend="dream3d")
    assert not list(tmp_path.rglob("*.h5")), "nothing half-written"
    with pytest.raises(ValueError, match="backend: unknown VE generator 'neper'"):
        dataset.write_shard(str(tmp_path), 0, n_ve=1, shard_size=1, generator={}, seed=0, backend="neper")
