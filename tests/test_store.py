"""micropipe.store against local paths and a real S3-protocol server (moto_server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest
import urllib3

from micropipe import store
from micropipe.store import (
    BucketNotFoundError,
    CredentialsError,
    EndpointUnreachableError,
    KeyNotFoundError,
    StoreError,
)


def _make_tree(root):
    files = {"a.txt": b"alpha", "sub/b.bin": bytes(range(256)), "sub/deeper/c.h5": b"\x89HDF\r\n"}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _no_temp_files(root):
    return not [p for p in root.rglob("*") if ".micropipe-tmp" in p.name]


# --------------------------------------------------------------------------- URIs

@pytest.mark.parametrize(("uri", "remote"), [
    ("s3://bucket/key", True), ("minio://bucket/a/b", True), ("S3://bucket/k", True),
    ("/tmp/x", False), ("file:///tmp/x", False), ("relative/path", False),
])
def test_is_remote(uri, remote):
    assert store.is_remote(uri) is remote


@pytest.mark.parametrize(("base", "parts", "expected"), [
    ("s3://bucket", ("a", "b.h5"), "s3://bucket/a/b.h5"),
    ("s3://bucket/", ("/a/", "b.h5"), "s3://bucket/a/b.h5"),
    ("minio://bucket/run/1/", ("x/y.parquet",), "minio://bucket/run/1/x/y.parquet"),
    ("file:///data/runs", ("a", "b"), "file:///data/runs/a/b"),
    ("/data/runs", ("/a", "b/"), "/data/runs/a/b"),
])
def test_join(base, parts, expected):
    assert store.join(base, *parts) == expected


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="gs"):
        store.read_bytes("gs://bucket/key")


# --------------------------------------------------------------------------- local

@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_local_round_trips(tmp_path, as_uri):
    base = f"file://{tmp_path}" if as_uri else str(tmp_path)
    target = store.join(base, "nested", "dir", "blob.bin")
    store.write_bytes(target, b"\x00\x01payload")
    assert store.read_bytes(target) == b"\x00\x01payload"
    store.write_text(store.join(base, "t.txt"), "grain ids \u00e9")
    assert store.read_text(store.join(base, "t.txt")) == "grain ids \u00e9"

    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    store.put_file(src, store.join(base, "copy", "src.bin"))
    store.get_file(store.join(base, "copy", "src.bin"), tmp_path / "back" / "src.bin")
    assert (tmp_path / "back" / "src.bin").read_bytes() == b"x" * 1000

    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "nested" / "dir" / "blob.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert store.exists(target) and not store.exists(store.join(base, "nope"))
    store.delete(target)
    assert not store.exists(target)
    store.delete(target)  # deleting what is gone is not an error, as in S3
    assert _no_temp_files(tmp_path)


def test_local_dir_round_trip_and_listing(tmp_path):
    files = _make_tree(tmp_path / "src")
    written = store.put_dir(tmp_path / "src", tmp_path / "dst")
    assert written == sorted(str(tmp_path / "dst" / rel) for rel in files)
    assert store.list_files(tmp_path / "dst") == written
    assert store.list_files(f"file://{tmp_path}/dst") == [f"file://{tmp_path}/dst/{rel}" for rel in sorted(files)]
    assert store.list_files(tmp_path / "missing") == []
    store.get_dir(tmp_path / "dst", tmp_path / "back")
    assert _tree(tmp_path / "back") == files
    assert store.delete_prefix(tmp_path / "back") == len(files)
    assert not (tmp_path / "back").exists()


def test_local_missing_raises_key_not_found(tmp_path):
    missing = tmp_path / "absent.h5"
    for call in (lambda: store.read_bytes(missing), lambda: store.get_file(missing, tmp_path / "x"),
                 lambda: store.put_file(missing, tmp_path / "y"), lambda: store.get_dir(tmp_path / "nodir", tmp_path),
                 lambda: store.local_copy(missing).__enter__()):
        with pytest.raises(KeyNotFoundError, match="absent.h5|nodir") as info:
            call()
        assert isinstance(info.value, FileNotFoundError) and "\n" not in str(info.value)


def test_local_copy_of_local_path_is_the_path(tmp_path):
    (tmp_path / "f").write_bytes(b"1")
    with store.local_copy(tmp_path / "f") as path:
        assert path == tmp_path / "f"
    assert (tmp_path / "f").exists()


def test_staged_output_local_file_and_directory(tmp_path):
    with store.staged_output(tmp_path / "out" / "model.pt") as staged:
        assert not (tmp_path / "out" / "model.pt").exists()
        staged.write_bytes(b"weights")
    assert (tmp_path / "out" / "model.pt").read_bytes() == b"weights"

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "old.h5").write_bytes(b"old")
    with store.staged_output(tmp_path / "ds") as staged:
        _make_tree(staged)
    assert set(_tree(tmp_path / "ds")) == {"a.txt", "sub/b.bin", "sub/deeper/c.h5"}  # replaced as a whole
    assert _no_temp_files(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out"]


def test_staged_output_exception_leaves_nothing(tmp_path):
    (tmp_path / "keep.txt").write_bytes(b"previous")
    for target in (tmp_path / "new.bin", tmp_path / "keep.txt"):
        with pytest.raises(ZeroDivisionError), store.staged_output(target) as staged:
            staged.write_bytes(b"half-written")
            raise ZeroDivisionError
    assert not (tmp_path / "new.bin").exists()
    assert (tmp_path / "keep.txt").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # no temp files or dirs left


def test_staged_output_requires_something_written(tmp_path):
    with pytest.raises(StoreError, match="nothing was written"), store.staged_output(tmp_path / "x"):
        pass


def test_failed_local_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def broken_copy(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.shutil, "copyfile", broken_copy)
    (tmp_path / "src").write_bytes(b"1")
    with pytest.raises(OSError, match="disk full"):
        store.put_file(tmp_path / "src", tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# --------------------------------------------------------------------------- retries

def _transient():
    return urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))


def test_retry_helper_retries_transient_errors_with_backoff():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) <= 3:
            raise _transient()
        return "ok"

    assert store.call_with_retries(flaky, what="t", retries=4, backoff_s=0.5, sleep=sleeps.append) == "ok"
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]


def test_retry_helper_gives_up_and_skips_permanent_errors():
    calls = []

    def always(exc):
        calls.append(1)
        raise exc

    with pytest.raises(urllib3.exceptions.ProtocolError):
        store.call_with_retries(lambda: always(_transient()), what="t", retries=2, backoff_s=0, sleep=lambda s: None)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ValueError):
        store.call_with_retries(lambda: always(ValueError("bad")), what="t", retries=5, sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MICROPIPE_S3_RETRIES", "1")
    monkeypatch.setenv("MICROPIPE_S3_BACKOFF_S", "0.25")
    calls, sleeps = [], []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        store.call_with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(_transient()), what="t",
                                sleep=sleeps.append)
    assert len(calls) == 2 and sleeps == [0.25]
    monkeypatch.setenv("MICROPIPE_S3_RETRIES", "many")
    with pytest.raises(ValueError, match="MICROPIPE_S3_RETRIES='many'"):
        store.call_with_retries(lambda: 1, what="t")


class _FakeS3(http.server.BaseHTTPRequestHandler):
    """Answers GETs with the scripted (status, S3 error code) list, then with the object body."""

    script: list = []
    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).requests.append(self.path)
        status, code = type(self).script.pop(0) if type(self).script else (200, None)
        body = b"payload" if status == 200 else (
            f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>scripted</Message></Error>".encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if status == 200 else "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_s3(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeS3)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _FakeS3.script, _FakeS3.requests = [], []
    monkeypatch.setenv("MICROPIPE_S3_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("MICROPIPE_S3_BACKOFF_S", "0.01")
    yield _FakeS3
    server.shutdown()
    server.server_close()


def test_transient_http_errors_are_retried_over_the_wire(fake_s3, monkeypatch):
    monkeypatch.setenv("MICROPIPE_S3_RETRIES", "3")
    fake_s3.script = [(503, "SlowDown"), (500, "InternalError")]
    assert store.read_bytes("s3://bucket/key") == b"payload"
    assert len(fake_s3.requests) == 3

    monkeypatch.setenv("MICROPIPE_S3_RETRIES", "1")
    fake_s3.script, fake_s3.requests[:] = [(503, "SlowDown")] * 5, []
    with pytest.raises(StoreError, match="SlowDown"):
        store.read_bytes("s3://bucket/key")
    assert len(fake_s3.requests) == 2


def test_permanent_http_errors_are_not_retried(fake_s3, monkeypatch):
    monkeypatch.setenv("MICROPIPE_S3_RETRIES", "3")
    fake_s3.script = [(404, "NoSuchKey")]
    with pytest.raises(KeyNotFoundError):
        store.read_bytes("s3://bucket/key")
    assert len(fake_s3.requests) == 1


# --------------------------------------------------------------------------- configuration

def test_missing_endpoint_names_the_variable(monkeypatch):
    monkeypatch.delenv("MICROPIPE_S3_ENDPOINT", raising=False)
    with pytest.raises(StoreError, match="MICROPIPE_S3_ENDPOINT is not set"):
        store.read_bytes("s3://bucket/key")


def test_missing_credentials_name_the_variables(monkeypatch):
    monkeypatch.setenv("MICROPIPE_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    with pytest.raises(CredentialsError, match="AWS_SECRET_ACCESS_KEY not set"):
        store.exists("minio://bucket/key")


def test_invalid_endpoint_is_rejected(monkeypatch):
    monkeypatch.setenv("MICROPIPE_S3_ENDPOINT", "127.0.0.1:9000")
    with pytest.raises(StoreError, match="expected http://host:port"):
        store.read_bytes("s3://bucket/key")


# --------------------------------------------------------------------------- real S3 server

def test_server_listens_on_loopback(s3_server):
    assert s3_server.host == "127.0.0.1" and s3_server.endpoint == f"http://127.0.0.1:{s3_server.port}"
    with socket.create_connection((s3_server.host, s3_server.port), timeout=2) as sock:
        assert sock.getpeername() == ("127.0.0.1", s3_server.port)


@pytest.fixture
def bucket(s3_server):
    return s3_server.make_bucket()


@pytest.mark.parametrize("scheme", ["s3", "minio"])
def test_s3_file_bytes_text_round_trip(bucket, scheme, tmp_path):
    base = f"{scheme}://{bucket}/run-1"
    store.write_bytes(store.join(base, "raw.bin"), b"\x00\xffdata")
    assert store.read_bytes(store.join(base, "raw.bin")) == b"\x00\xffdata"
    store.write_text(store.join(base, "params.json"), '{"seed": 3}')
    assert store.read_text(store.join(base, "params.json")) == '{"seed": 3}'

    (tmp_path / "f.bin").write_bytes(b"file contents")
    store.put_file(tmp_path / "f.bin", store.join(base, "files", "f.bin"))
    store.get_file(store.join(base, "files", "f.bin"), tmp_path / "down" / "f.bin")
    assert (tmp_path / "down" / "f.bin").read_bytes() == b"file contents"
    assert _no_temp_files(tmp_path)

    assert store.exists(store.join(base, "raw.bin"))
    assert store.exists(store.join(base, "files"))  # a prefix with objects under it
    assert not store.exists(store.join(base, "absent"))
    assert store.exists(f"{scheme}://{bucket}")
    store.delete(store.join(base, "raw.bin"))
    assert not store.exists(store.join(base, "raw.bin"))


def test_s3_dir_round_trip_listing_and_delete_prefix(bucket, s3_server, tmp_path):
    files = _make_tree(tmp_path / "src")
    base = f"s3://{bucket}/datasets/ve"
    written = store.put_dir(tmp_path / "src", base)
    assert written == [f"{base}/{rel}" for rel in sorted(files)]
    store.write_bytes(f"s3://{bucket}/datasets/ve2/other.bin", b"not part of ve")  # prefix sibling
    assert store.list_files(base) == written
    assert store.list_files(base + "/") == written
    assert store.list_files(f"s3://{bucket}/datasets/none") == []

    store.get_dir(base, tmp_path / "back")
    assert _tree(tmp_path / "back") == files
    assert store.delete_prefix(base) == len(files)
    assert store.list_files(base) == [] and store.exists(f"s3://{bucket}/datasets/ve2/other.bin")
    with pytest.raises(KeyNotFoundError, match=f"s3://{bucket}/datasets/ve"):
        store.get_dir(base, tmp_path / "again")
    with pytest.raises(ValueError, match="whole bucket"):
        store.delete_prefix(f"s3://{bucket}")


def test_s3_local_copy_of_object_and_prefix(bucket, tmp_path):
    store.write_bytes(f"s3://{bucket}/m/model.pt", b"weights")
    store.write_bytes(f"s3://{bucket}/m/shards/s0.h5", b"s0")
    with store.local_copy(f"s3://{bucket}/m/model.pt") as path:
        assert path.read_bytes() == b"weights" and path.name == "model.pt"
    assert not path.exists()
    with store.local_copy(f"s3://{bucket}/m/shards") as path:
        assert _tree(path) == {"s0.h5": b"s0"}
    assert not path.exists()
    with pytest.raises(KeyNotFoundError), store.local_copy(f"s3://{bucket}/m/none"):
        pass


def test_s3_staged_output(bucket, s3_server):
    uri = f"minio://{bucket}/out/report.html"
    with store.staged_output(uri) as staged:
        staged.write_text("<html></html>")
        assert not store.exists(uri)
    assert store.read_text(uri) == "<html></html>"

    with store.staged_output(f"s3://{bucket}/out/ds") as staged:
        _make_tree(staged)
    assert len(store.list_files(f"s3://{bucket}/out/ds")) == 3

    with pytest.raises(RuntimeError, match="boom"), store.staged_output(f"s3://{bucket}/out/failed.bin") as staged:
        staged.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert not store.exists(f"s3://{bucket}/out/failed.bin")
    names = sorted(o.object_name for o in s3_server.client().list_objects(bucket, recursive=True))
    assert names == ["out/ds/a.txt", "out/ds/sub/b.bin", "out/ds/sub/deeper/c.h5", "out/report.html"]


def test_s3_multipart_round_trip(bucket, s3_server, tmp_path):
    data = np.random.default_rng(20240).bytes(20 * 1000 * 1000)
    (tmp_path / "big.bin").write_bytes(data)
    uri = f"s3://{bucket}/big/big.bin"
    store.put_file(tmp_path / "big.bin", uri)
    etag = s3_server.client().stat_object(bucket, "big/big.bin").etag
    n_parts = -(-len(data) // store.PART_SIZE)
    assert etag.endswith(f"-{n_parts}"), etag  # S3 marks multipart uploads' ETags with '-<parts>'
    store.get_file(uri, tmp_path / "back.bin")
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the four errors, for real

def test_missing_bucket(s3_server, tmp_path):
    for call in (lambda: store.read_bytes("s3://no-such-bucket-mp/key"),
                 lambda: store.write_bytes("s3://no-such-bucket-mp/key", b"1"),
                 lambda: store.exists("s3://no-such-bucket-mp/key"),
                 lambda: store.list_files("s3://no-such-bucket-mp/prefix")):
        with pytest.raises(BucketNotFoundError) as info:
            call()
        message = str(info.value)
        assert "'no-such-bucket-mp'" in message and s3_server.endpoint in message and "\n" not in message


def test_missing_key(bucket, s3_server, tmp_path):
    uri = f"s3://{bucket}/absent/ve.h5"
    for call in (lambda: store.read_bytes(uri), lambda: store.get_file(uri, tmp_path / "x")):
        with pytest.raises(KeyNotFoundError) as info:
            call()
        assert uri in str(info.value) and isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "x").exists() and _no_temp_files(tmp_path)


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_wrong_credentials(bucket, s3_server, monkeypatch, wrong):
    store.write_bytes(f"s3://{bucket}/k", b"1")
    bad_secret = "wrong-secret-do-not-print"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bad_secret)
    if wrong == "key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    for call in (lambda: store.read_bytes(f"s3://{bucket}/k"), lambda: store.exists(f"s3://{bucket}/k"),
                 lambda: store.write_bytes(f"s3://{bucket}/k2", b"1")):
        with pytest.raises(CredentialsError) as info:
            call()
        message = str(info.value)
        assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
        assert bad_secret not in message and s3_server.secret_key not in message
    assert [o.object_name for o in s3_server.client().list_objects(bucket)] == ["k"]


def test_unreachable_endpoint(monkeypatch, caplog):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()  # bound and released: nothing listens there
    monkeypatch.setenv("MICROPIPE_S3_ENDPOINT", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("MICROPIPE_S3_RETRIES", "2")
    monkeypatch.setenv("MICROPIPE_S3_BACKOFF_S", "0.01")
    with caplog.at_level("WARNING", logger="micropipe.store"), pytest.raises(EndpointUnreachableError) as info:
        store.read_bytes("s3://bucket/key")
    assert len([r for r in caplog.records if "Connection refused" in r.getMessage()]) == 2  # 2 retries
    message = str(info.value)
    assert f"http://127.0.0.1:{closed}" in message and "MICROPIPE_S3_ENDPOINT" in message
    assert "3 attempt" in message and "\n" not in message


def test_make_bucket_creates_once_then_reports_existing(s3_server):
    name = f"mk-{os.getpid()}-{abs(hash(s3_server.endpoint)) % 10**6}"
    assert store.make_bucket(f"s3://{name}") is True
    assert store.make_bucket(f"minio://{name}/ignored/key") is False
    assert store.exists(f"s3://{name}")
    with pytest.raises(ValueError, match="s3:// or minio://"):
        store.make_bucket("/tmp/not-a-bucket")
