"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest

from pipelines import _server

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.kfp_api import fake_kfp
    from tests.s3server import MotoS3
except ImportError:  # the `pytest` script, tests/ on sys.path through rootdir-less conftest import
    from kfp_api import fake_kfp
    from s3server import MotoS3


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (``moto_server``) on 127.0.0.1 that checks SigV4 credentials.

    Yields a :class:`tests.s3server.MotoS3` (``endpoint``, ``host``, ``port``, ``access_key``,
    ``secret_key``, ``region``, ``env``, ``client()``, ``make_bucket()``). While the session runs,
    ``MICROPIPE_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``
    point at it and retries are short (``MICROPIPE_S3_RETRIES=2``, ``MICROPIPE_S3_BACKOFF_S=0.01``);
    the previous values are restored and the server is stopped at the end.
    """
    server = MotoS3().start()
    env = {**server.env, "MICROPIPE_S3_RETRIES": "2", "MICROPIPE_S3_BACKOFF_S": "0.01"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def no_kfp_token(monkeypatch, tmp_path):
    """No ``KFP_TOKEN`` and no token files, whatever machine the tests run on."""
    monkeypatch.delenv(_server.TOKEN_ENV, raising=False)
    monkeypatch.setattr(_server, "TOKEN_FILES", ((None, str(tmp_path / "absent")),))


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    """A stand-in for the KFP v2beta1 REST API (:class:`tests.kfp_api.FakeKFP`) on 127.0.0.1.

    Yields ``(server, host)``; the server's ``pipelines``, ``versions``, ``experiments``, ``runs`` and
    ``requests`` lists show what the client did. ``HOME`` points into ``tmp_path`` because kfp.Client
    reads ``~/.config/kfp/context.json``.
    """
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with fake_kfp() as (server, host):
        yield server, host


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from the pipelines as compiled now (tests/test_golden.py)")
