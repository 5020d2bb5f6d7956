"""`micropipe submit`: the dry-run request, where the token comes from, a server that is not there or
does not answer, and a submit end to end against a small stand-in for the KFP v2beta1 REST API."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import micropipe
from micropipe import cli
from pipelines import _kfp, _server

try:  # `python -m pytest` from the repo root, or the `pytest` script with tests/ on sys.path
    from tests.kfp_api import closed_port, http_server
except ImportError:
    from kfp_api import closed_port, http_server

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "canary-token-5c1e"


# ---------------------------------------------------------------------------------------------- dry run
def test_dry_run_prints_the_request_from_the_gpu_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(_server.TOKEN_ENV, TOKEN)
    rc = cli.main(["submit", "cp_surrogate", "--host", "http://127.0.0.1:1/pipeline/", "--profile", "gpu",
                   "--preset", "paper", "--experiment", "paper-runs", "--set", "seed=7", "--out", str(tmp_path),
                   "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert TOKEN not in out
    request = json.loads(out)
    profile = _kfp.Profile.load("gpu")
    assert request["host"] == "http://127.0.0.1:1/pipeline"
    assert request["pipeline_root"] == profile.pipeline_root
    assert request["token_source"] == "env KFP_TOKEN"
    assert request["experiment"] == "paper-runs" and request["pipeline"] == "cp-surrogate"
    assert request["version"].startswith("0.") and "-gpu-" in request["version"]
    # cp_surrogate declares a 'preset' parameter: submit passes it as `run` does (the report names it).
    expected = {**_kfp.load_preset("cp_surrogate", "paper"), "seed": 7, "preset": "paper"}
    assert {k: v for k, v in request["arguments"].items() if k != "dataset_uri"} == expected
    assert request["arguments"]["dataset_uri"].startswith(f"{profile.data_root}/cp_surrogate/")
    package = Path(request["package"])
    assert package == tmp_path / "cp_surrogate.gpu.yaml"
    assert {r["step"] for r in _kfp.placement(package) if r["accelerator"]} >= {"train-vae", "cp-runs"}


@pytest.mark.parametrize(("pipeline", "sets", "preset"), [
    ("gan_homogenization", [], None),  # no 'preset' parameter: none is sent
    ("cp_surrogate", [], "small"),
    ("cp_surrogate", ["--set", "preset=my-label"], "my-label"),  # an explicit value wins
])
def test_dry_run_passes_the_preset_to_pipelines_that_take_one(tmp_path, no_kfp_token, capsys, pipeline, sets,
                                                               preset):
    rc = cli.main(["submit", pipeline, "--host", "http://h", *sets, "--out", str(tmp_path), "--dry-run"])
    arguments = json.loads(capsys.readouterr().out)["arguments"]
    assert rc == 0
    assert arguments.get("preset") == preset
    assert ("preset" in arguments) == ("preset" in _kfp.pipeline_parameters(pipeline))


def test_dry_run_rejects_bad_arguments_before_compiling(tmp_path, capsys):
    rc = cli.main(["submit", "ve_generation", "--host", "http://h", "--set", "n_vee=3", "--out", str(tmp_path),
                   "--dry-run"])
    assert rc == 2 and "unknown parameter(s) n_vee" in capsys.readouterr().err
    assert cli.main(["submit", "nope", "--host", "http://h", "--dry-run"]) == 2
    assert "valid pipelines: ve_generation" in capsys.readouterr().err
    assert cli.main(["submit", "ve_generation", "--host", "http://h", "--profile", "nope", "--dry-run"]) == 2
    assert "valid profiles: cpu, gpu" in capsys.readouterr().err
    assert cli.main(["submit", "ve_generation", "--host", "kubeflow.example:8888", "--dry-run"]) == 2
    assert "--host must be an http:// or https:// URL" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ token
def test_token_precedence(tmp_path):
    projected, account = tmp_path / "kubeflow-token", tmp_path / "sa-token"
    files = (("KF_PIPELINES_SA_TOKEN_PATH", str(projected)), (None, str(account)))
    assert _server.resolve_token({}, files) == (None, "none")
    account.write_text("sa-token\n")
    assert _server.resolve_token({}, files) == ("sa-token", f"file {account}")
    projected.write_text("projected\n")
    assert _server.resolve_token({}, files) == ("projected", f"file {projected}")
    moved = tmp_path / "moved-token"
    moved.write_text("moved")
    assert _server.resolve_token({"KF_PIPELINES_SA_TOKEN_PATH": str(moved)}, files) == ("moved", f"file {moved}")
    assert _server.resolve_token({"KFP_TOKEN": "from-env"}, files) == ("from-env", "env KFP_TOKEN")
    assert _server.resolve_token({"KFP_TOKEN": "  "}, files)[1] == f"file {projected}", "blank env is skipped"
    projected.write_text("")
    assert _server.resolve_token({}, files)[1] == f"file {account}", "empty file is skipped"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_token_file_is_an_error(tmp_path):
    path = tmp_path / "token"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(RuntimeError, match=f"token file {path} exists but cannot be read"):
        _server.resolve_token({}, ((None, str(path)),))


# --------------------------------------------------------------------------------------- bad servers
def test_closed_port_gives_one_line_and_no_traceback(tmp_path):
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if k != _server.TOKEN_ENV}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "micropipe", "submit", "ve_generation", "--host",
                           f"http://127.0.0.1:{port}", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"micropipe: error: cannot reach KFP API at http://127.0.0.1:{port}: Connection refused"]
    assert time.monotonic() - start < 60


@contextlib.contextmanager
def silent_server(hold_s: float = 5.0):
    """A TCP server on 127.0.0.1 that accepts connections and never answers; it stops itself after
    ``hold_s`` seconds at the latest."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        deadline = time.monotonic() + hold_s
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                held.append(sock.accept()[0])
        for conn in held:
            conn.close()
        sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)


def test_server_that_never_answers_times_out(tmp_path, no_kfp_token, capsys):
    with silent_server() as host:
        start = time.monotonic()
        rc = cli.main(["submit", "ve_generation", "--host", host, "--timeout", "1", "--out", str(tmp_path)])
        elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == f"micropipe: error: cannot reach KFP API at {host}: no answer within 1 s"
    assert elapsed < 4


def fixed_status(code: int, headers: dict[str, str] | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.mark.parametrize(("code", "headers", "message"), [
    (401, None, "refused the request (401 Unauthorized): set KFP_TOKEN"),
    (302, {"Location": "https://login.example/dex/auth"}, "redirects to https://login.example/dex/auth (302)"),
    (404, None, "no KFP API at {host} (/apis/v2beta1/healthz answered 404)"),
    (503, None, "is not healthy: /apis/v2beta1/healthz answered 503"),
])
def test_server_that_answers_wrongly_is_named(tmp_path, no_kfp_token, capsys, code, headers, message):
    with http_server(fixed_status(code, headers)) as (_, host):
        rc = cli.main(["submit", "ve_generation", "--host", host, "--timeout", "5", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert message.format(host=host) in err


# ------------------------------------------------------------------------------- against a fake KFP API
def test_submit_uploads_a_version_and_starts_a_run(tmp_path, monkeypatch, capsys, kfp_api):
    server, host = kfp_api
    monkeypatch.setenv(_server.TOKEN_ENV, TOKEN)
    stamps = iter(["20250101T000000Z", "20250101T000001Z"])
    monkeypatch.setattr(_kfp, "utc_stamp", lambda: next(stamps))
    argv = ["submit", "gan_homogenization", "--host", host, "--profile", "gpu", "--experiment", "gan",
            "--namespace", "team-a", "--set", "seed=3", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert TOKEN not in first + second

    # One pipeline in the namespace, named as in the IR; each submit adds its own version to it.
    assert [(p["display_name"], p["namespace"]) for p in server.pipelines] == [("gan-homogenization", "team-a")]
    assert [v["pipeline_version_id"] for v in server.versions] == ["p1-v1", "p1-v2"]
    assert [v["display_name"] for v in server.versions] == [
        f"{micropipe.__version__}-gpu-20250101T00000{i}Z" for i in (0, 1)]
    uploads = [r for r in server.requests if r["path"] == "/apis/v2beta1/pipelines/upload_version"]
    package = (tmp_path / "gan_homogenization.gpu.yaml").read_text()
    assert len(uploads) == 2 and all(r["body"]["uploadfile"] == package for r in uploads), \
        "the compiled package is what goes up"
    # The experiment is created once in the namespace, then found by name.
    assert [(e["display_name"], e["namespace"]) for e in server.experiments] == [("gan", "team-a")]
    # Each run points at the version just uploaded, with the profile's pipeline root and the arguments.
    assert len(server.runs) == 2
    for run, version in zip(server.runs, ("p1-v1", "p1-v2"), strict=True):
        assert run["experiment_id"] == "e1"
        assert run["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": version}
        config = run["runtime_config"]
        assert config["pipeline_root"] == _kfp.Profile.load("gpu").pipeline_root
        assert config["parameters"]["seed"] == 3
        assert config["parameters"]["dataset_uri"].startswith("s3://micropipe/datasets/gan_homogenization/")
    assert "(p1-v1, new pipeline)" in first and "(p1-v2, new version)" in second
    assert "submitted run gan_homogenization-small-20250101T000001Z (r2)" in second
    assert {r["auth"] for r in server.requests} == {f"Bearer {TOKEN}"}


def test_api_refusal_is_one_line(tmp_path, monkeypatch, capsys, kfp_api, no_kfp_token):
    """A server that is up but refuses an upload (e.g. no permission) gives one line naming what failed."""
    server, host = kfp_api

    def refuse(self) -> None:
        self._record()
        self._reply({"error": "denied", "code": 7, "message": "user is not allowed to create pipelines"}, 403)

    monkeypatch.setattr(server.RequestHandlerClass, "do_POST", refuse)
    rc = cli.main(["submit", "ve_generation", "--host", host, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert (f"KFP API at {host} refused to create pipeline 've-generation': 403 Forbidden: "
            "user is not allowed to create pipelines") in err


def test_makefile_submit_passes_experiment_namespace_and_dry_run():
    """`make submit ... EXPERIMENT=x NAMESPACE=y DRY_RUN=1` reaches the CLI as --experiment x --namespace y
    --dry-run, and parses there."""
    proc = subprocess.run(["make", "-n", "-o", ".venv/.micropipe-installed", "submit", "PIPELINE=ve_generation",
                           "KFP_HOST=http://h", "EXPERIMENT=trial", "NAMESPACE=team-a", "DRY_RUN=1", "PROFILE=gpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(next(ln for ln in proc.stdout.splitlines() if "micropipe submit " in ln))
    line = " ".join(argv)
    assert "--experiment trial" in line and "--dry-run" in line and "--profile gpu" in line
    args = cli._parser().parse_args(argv[argv.index("submit"):])
    assert (args.namespace, args.experiment, args.dry_run) == ("team-a", "trial", True)
    plain = subprocess.run(["make", "-n", "-o", ".venv/.micropipe-installed", "submit", "PIPELINE=ve_generation",
                            "KFP_HOST=http://h"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--dry-run" not in plain.stdout and "--namespace" not in plain.stdout
    usage = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "NAMESPACE=" in usage

