"""A real S3-protocol server for tests: ``moto_server`` on 127.0.0.1 with signature checking on.

moto accepts any credentials unless IAM authentication is enabled. :meth:`MotoS3.start` therefore
creates an IAM user with an ``s3:*`` policy and an access key while authentication is still off,
then switches it on through moto's ``/moto-api/reset-auth`` (the runtime form of
``INITIAL_NO_AUTH_ACTION_COUNT``). From then on every S3 request is SigV4-verified: a wrong
secret gets ``SignatureDoesNotMatch``, an unknown key ``InvalidAccessKeyId``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from minio import Minio

HOST = "127.0.0.1"
REGION = "us-east-1"
START_TIMEOUT_S = 15.0
_IAM_NS = {"iam": "https://iam.amazonaws.com/doc/2010-05-08/"}


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux: SIGTERM the server if pytest itself is killed and atexit never runs.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_DEATHSIG


@dataclass
class MotoS3:
    """A running ``moto_server`` plus the IAM credentials it accepts."""

    host: str = HOST
    port: int = 0
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    region: str = REGION
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _log: Path | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point ``micropipe.store`` at this server."""
        return {"MICROPIPE_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> MotoS3:
        exe = Path(sys.executable).with_name("moto_server")
        if not exe.exists():
            raise RuntimeError(f"{exe} not found; install the dev extras (moto[server])")
        fd, log_name = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
        self._log = Path(log_name)
        self.port = free_port(self.host)
        env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
        self._proc = subprocess.Popen([str(exe), "-H", self.host, "-p", str(self.port)], stdout=fd,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        os.close(fd)
        atexit.register(self.stop)
        self._wait_ready()
        self._create_credentials()
        self._post("/moto-api/reset-auth", b"0")  # authenticate every request from now on
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._log is not None:
            self._log.unlink(missing_ok=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} within {START_TIMEOUT_S} s: "
                           f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------ moto / IAM
    def _post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        request = urllib.request.Request(f"{self.endpoint}{path}", data=body, method="POST",
                                         headers={"Content-Type": "text/plain", **(headers or {})})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def _iam(self, action: str, **params: str) -> ET.Element:
        # Authentication is still off, so the request needs no valid signature; the credential
        # scope in the header is only what routes it to moto's IAM service.
        body = urllib.parse.urlencode({"Action": action, "Version": "2010-05-08", **params}).encode()
        auth = "AWS4-HMAC-SHA256 Credential=setup/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, " \
               "Signature=0"
        xml = self._post("/", body, {"Content-Type": "application/x-www-form-urlencoded",
                                     "Authorization": auth})
        return ET.fromstring(xml)

    def _create_credentials(self) -> None:
        user = "micropipe-tests"
        self._iam("CreateUser", UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        self._iam("PutUserPolicy", UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(policy))
        key = self._iam("CreateAccessKey", UserName=user).find(".//iam:AccessKey", _IAM_NS)
        self.access_key = key.findtext("iam:AccessKeyId", namespaces=_IAM_NS)
        self.secret_key = key.findtext("iam:SecretAccessKey", namespaces=_IAM_NS)

    # ------------------------------------------------------------------ helpers for tests
    def client(self) -> Minio:
        """A ``minio`` client with the valid credentials (for test setup, not through the store)."""
        return Minio(f"{self.host}:{self.port}", access_key=self.access_key, secret_key=self.secret_key,
                     secure=False, region=self.region)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or f"mp-test-{uuid.uuid4().hex[:12]}"
        self.client().make_bucket(name)
        return name
