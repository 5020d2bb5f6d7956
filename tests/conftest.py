"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.s3server import MotoS3
except ImportError:  # the `pytest` script, tests/ on sys.path through rootdir-less conftest import
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
