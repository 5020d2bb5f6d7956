"""`micropipe upload` (pipelines._upload, the Helm chart's upload Job) against a stand-in for the KFP v2beta1
REST API: new pipelines, new versions, a rerun that uploads nothing, namespaces, and its errors."""

from __future__ import annotations

import pytest

from micropipe import cli

try:  # `python -m pytest` from the repo root, or the `pytest` script with tests/ on sys.path
    from tests.kfp_api import closed_port
except ImportError:
    from kfp_api import closed_port


def _upload(host: str, out, version: str, *extra: str) -> list[str]:
    return ["upload", "--profile", "gpu", "--host", host, "--version", version, "--pipeline", "ve_generation",
            "--pipeline", "gan_homogenization", "--out", str(out), *extra]


def _said(out: str) -> list[str]:
    """What micropipe printed, without kfp.Client's own "Pipeline details: <link>" lines."""
    return [line for line in out.splitlines() if not line.startswith("Pipeline details:")]


def test_upload_creates_then_versions_and_a_rerun_uploads_nothing(tmp_path, capsys, kfp_api, no_kfp_token):
    server, host = kfp_api
    # A shared pipeline of the same name: the namespaced upload must neither see nor touch it.
    server.pipelines.append({"pipeline_id": "shared", "display_name": "lab-ve-generation"})
    argv = _upload(host, tmp_path, "0.1.0-r1", "--prefix", "lab-", "--namespace", "team-a")

    assert cli.main(argv) == 0
    first = _said(capsys.readouterr().out)
    created = server.pipelines[1:]
    assert [(p["display_name"], p["namespace"]) for p in created] == [
        ("lab-ve-generation", "team-a"), ("lab-gan-homogenization", "team-a")]
    assert created[0]["description"].startswith("Periodic polycrystalline volume elements")
    assert [(v["pipeline_id"], v["display_name"]) for v in server.versions] == [
        (created[0]["pipeline_id"], "0.1.0-r1"), (created[1]["pipeline_id"], "0.1.0-r1")]
    uploaded = [r["body"]["uploadfile"] for r in server.requests if r["path"].endswith("/upload_version")]
    assert uploaded == [(tmp_path / f"{n}.gpu.yaml").read_text() for n in ("ve_generation", "gan_homogenization")]
    assert first[0].startswith(f"uploading 2 pipeline(s) compiled with profile gpu to {host} as version 0.1.0-r1 "
                               "in namespace team-a (token: none)")
    assert first[1:] == ["lab-ve-generation: new pipeline, version 0.1.0-r1 (p2-v1)",
                          "lab-gan-homogenization: new pipeline, version 0.1.0-r1 (p3-v1)"]

    # The same version again (a retried Job): looked up, nothing created or uploaded.
    posts = sum(r["method"] == "POST" for r in server.requests)
    assert cli.main(argv) == 0
    assert _said(capsys.readouterr().out)[-2:] == [
        "lab-ve-generation: version 0.1.0-r1 exists already, unchanged (p2-v1)",
        "lab-gan-homogenization: version 0.1.0-r1 exists already, unchanged (p3-v1)"]
    assert sum(r["method"] == "POST" for r in server.requests) == posts
    assert len(server.pipelines) == 3 and len(server.versions) == 2

    # The next revision: a new version of each existing pipeline, no new pipeline.
    assert cli.main([*argv[:6], "0.1.0-r2", *argv[7:]]) == 0
    assert _said(capsys.readouterr().out)[-2:] == ["lab-ve-generation: new version 0.1.0-r2 (p2-v2)",
                                                         "lab-gan-homogenization: new version 0.1.0-r2 (p3-v2)"]
    assert len(server.pipelines) == 3
    assert [v["display_name"] for v in server.versions if v["pipeline_id"] == "p2"] == ["0.1.0-r1", "0.1.0-r2"]
    lists = [r["query"] for r in server.requests if r["path"] == "/apis/v2beta1/pipelines" and r["method"] == "GET"]
    assert lists and all(q["namespace"] == "team-a" for q in lists)


def test_upload_reports_every_pipeline_then_fails(tmp_path, capsys, kfp_api, no_kfp_token):
    """One pipeline the server cannot take (two of that name) does not stop the others; the exit code says so."""
    server, host = kfp_api
    server.pipelines += [{"pipeline_id": f"dup{i}", "display_name": "ve-generation"} for i in (1, 2)]
    assert cli.main(_upload(host, tmp_path, "0.1.0-r1")) == 1
    captured = capsys.readouterr()
    assert _said(captured.out)[-1] == "gan-homogenization: new pipeline, version 0.1.0-r1 (p3-v1)"
    assert captured.err.splitlines() == [
        f"micropipe: error: KFP API at {host} has several pipelines named 've-generation'; expected at most one",
        "micropipe: error: 1 of 2 pipeline(s) not uploaded"]
    assert [v["pipeline_id"] for v in server.versions] == ["p3"]


def test_unreachable_api_is_one_line_after_compiling(tmp_path, capsys, no_kfp_token):
    port = closed_port()
    assert cli.main(_upload(f"http://127.0.0.1:{port}", tmp_path, "0.1.0-r1", "--timeout", "5")) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"micropipe: error: cannot reach KFP API at http://127.0.0.1:{port}: Connection refused"
    assert (tmp_path / "ve_generation.gpu.yaml").is_file()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--pipeline", "nope", "unknown pipeline 'nope'"),
    ("--profile", "/no/such.yaml", "unknown profile '/no/such.yaml'"),
    ("--version", " ", "--version must not be empty"),
    ("--host", "ml-pipeline:8888", "--host must be an http:// or https:// URL"),
])
def test_bad_arguments_fail_before_compiling(tmp_path, capsys, option, value, message):
    options = {"--profile": "cpu", "--host": "http://127.0.0.1:9", "--version": "0.1.0-r1",
               "--pipeline": "ve_generation", "--out": str(tmp_path / "out"), option: value}
    assert cli.main(["upload", *(x for item in options.items() for x in item)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
