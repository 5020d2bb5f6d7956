"""Artifact and dataset store: one API for local paths and ``s3://`` / ``minio://`` object storage.

A location is either a local path (plain, or ``file://``) or an object URI ``s3://bucket/key``;
``minio://bucket/key`` (KFP's pipeline-root scheme) means the same thing. Remote locations go
through the ``minio`` client, configured only from the environment (on a cluster the variables
come from a Kubernetes secret):

``MICROPIPE_S3_ENDPOINT``
    ``http://host:port`` or ``https://host:port``; the scheme decides TLS. Required for remote URIs.
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
    Credentials. Required for remote URIs.
``AWS_REGION``
    Optional, default ``us-east-1``.
``MICROPIPE_S3_RETRIES``, ``MICROPIPE_S3_BACKOFF_S``
    Retries after the first attempt (default 4) and the first backoff delay in seconds (default 0.5,
    doubled after each retry). Only transient failures are retried.

Writes become visible only when complete: local files are written to a temporary name in the
destination directory and renamed into place; objects are one PUT or one multipart upload, which
S3 publishes atomically. Failures raise one of the :class:`StoreError` subclasses below with a
one-line message naming what failed, where, and what was expected.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

__all__ = [
    "BucketNotFoundError",
    "CredentialsError",
    "EndpointUnreachableError",
    "KeyNotFoundError",
    "StoreError",
    "call_with_retries",
    "delete",
    "delete_prefix",
    "exists",
    "get_dir",
    "get_file",
    "is_remote",
    "is_transient",
    "join",
    "list_files",
    "local_copy",
    "put_dir",
    "put_file",
    "read_bytes",
    "read_text",
    "staged_output",
    "write_bytes",
    "write_text",
]

log = logging.getLogger(__name__)

ENV_ENDPOINT = "MICROPIPE_S3_ENDPOINT"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_REGION = "AWS_REGION"
ENV_RETRIES = "MICROPIPE_S3_RETRIES"
ENV_BACKOFF = "MICROPIPE_S3_BACKOFF_S"

DEFAULT_REGION = "us-east-1"
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
REMOTE_SCHEMES = ("s3", "minio")

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
"""Multipart part size; objects larger than this are uploaded in parts (S3 minimum: 5 MiB)."""
_MAX_PARTS = 10_000  # S3 limit on parts per upload
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0
_CHUNK = MiB
_TMP_SUFFIX = ".micropipe-tmp"  # marks in-progress local writes; never listed

_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable"})
_CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "InvalidClientTokenId", "TokenRefreshRequired",
})
_NETWORK_ERRORS = (
    urllib3.exceptions.TimeoutError,  # includes NewConnectionError (refused, DNS) and read timeouts
    urllib3.exceptions.ProtocolError,  # connection reset, truncated body
    ConnectionError,
    TimeoutError,
)

T = TypeVar("T")


class StoreError(RuntimeError):
    """A store operation failed; the message names what, where and what was expected."""


class BucketNotFoundError(StoreError):
    """The bucket of an ``s3://`` / ``minio://`` URI does not exist at the endpoint."""


class CredentialsError(StoreError):
    """The endpoint rejected the credentials (or they are not set)."""


class EndpointUnreachableError(StoreError):
    """No S3 server answered at ``MICROPIPE_S3_ENDPOINT`` (after the retries)."""


class KeyNotFoundError(StoreError, FileNotFoundError):
    """No object / file at the URI."""


# --------------------------------------------------------------------------- locations

@dataclass(frozen=True)
class _Remote:
    scheme: str
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"

    def with_key(self, key: str) -> _Remote:
        return _Remote(self.scheme, self.bucket, key)

    @property
    def dir_prefix(self) -> str:
        """Key prefix of the 'directory' this URI names ('' for the bucket root)."""
        key = self.key.strip("/")
        return f"{key}/" if key else ""


@dataclass(frozen=True)
class _Local:
    path: Path
    file_uri: bool  # given as file://, so listings answer with file:// URIs

    def __str__(self) -> str:
        return self.uri(self.path)

    def uri(self, path: Path) -> str:
        return f"file://{path.absolute().as_posix()}" if self.file_uri else str(path)


def _split_scheme(uri: str) -> tuple[str, str]:
    scheme, sep, rest = uri.partition("://")
    return (scheme.lower(), rest) if sep and scheme.isidentifier() else ("", uri)


def _parse(uri: str | os.PathLike[str]) -> _Remote | _Local:
    text = os.fspath(uri)
    if not isinstance(text, str) or not text:
        raise ValueError(f"invalid location {uri!r}; expected a path or an s3:// / minio:// / file:// URI")
    scheme, rest = _split_scheme(text)
    if scheme in REMOTE_SCHEMES:
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"invalid URI {text!r}: no bucket; expected {scheme}://bucket/key")
        return _Remote(scheme, bucket, key.lstrip("/"))
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        return _Local(Path(rest), file_uri=True)
    if scheme:
        raise ValueError(f"unsupported URI scheme {scheme!r} in {text!r}; "
                         "expected a local path or a file://, s3:// or minio:// URI")
    return _Local(Path(text), file_uri=False)


def _require_key(loc: _Remote) -> None:
    if not loc.key or loc.key.endswith("/"):
        raise ValueError(f"invalid object URI {str(loc)!r}: expected {loc.scheme}://bucket/key naming an object")


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names object storage (``s3://`` or ``minio://``) rather than a local path."""
    return _split_scheme(os.fspath(uri))[0] in REMOTE_SCHEMES


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path components onto a local path or an object URI.

    Parts are joined with ``/`` for URIs and the OS separator for plain paths; leading and trailing
    slashes of each part are dropped, so a part never restarts from the root.

    Parameters
    ----------
    base : str or os.PathLike
        Local path, ``file://``, ``s3://`` or ``minio://`` URI.
    *parts : str
        Components to append, e.g. ``'shards'``, ``'shard_0000.h5'`` or ``'a/b.h5'``.

    Returns
    -------
    str
        The joined location, of the same kind as ``base``.
    """
    clean = [p.strip("/") for p in map(os.fspath, parts) if p.strip("/")]
    loc = _parse(base)
    if isinstance(loc, _Remote):
        return str(loc.with_key("/".join(k for k in (loc.key.strip("/"), *clean) if k)))
    if loc.file_uri:
        return f"file://{PurePosixPath(loc.path, *clean).as_posix()}"
    return str(Path(loc.path, *clean))


# --------------------------------------------------------------------------- retries

def _env_number(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name}={raw!r} is invalid; expected a non-negative {kind.__name__}")
    return value


def _retries() -> int:
    return int(_env_number(ENV_RETRIES, DEFAULT_RETRIES, int))


def _backoff_s() -> float:
    return float(_env_number(ENV_BACKOFF, DEFAULT_BACKOFF_S, float))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: connection errors, timeouts, HTTP 500/502/503/504, S3 throttling.

    Parameters
    ----------
    exc : BaseException
        Error raised by the ``minio`` client, ``urllib3`` or the socket layer.
    """
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", None)
        return exc.code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
    if isinstance(exc, ServerError):
        return exc.status_code in _TRANSIENT_STATUS
    if isinstance(exc, InvalidResponseError):  # e.g. a proxy's HTML 502 page
        return getattr(exc, "_code", None) in _TRANSIENT_STATUS
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return exc.reason is not None and is_transient(exc.reason)
    if isinstance(exc, urllib3.exceptions.SSLError):  # certificate problems do not heal by waiting
        return False
    return isinstance(exc, _NETWORK_ERRORS)


def call_with_retries(func: Callable[[], T], *, what: str, retries: int | None = None,
                      backoff_s: float | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``func`` and retry it with exponential backoff while it fails transiently.

    Parameters
    ----------
    func : callable
        Zero-argument callable; it must be safe to repeat (start the request from scratch).
    what : str
        What is being done, for the log, e.g. ``'upload s3://bucket/key'``.
    retries : int, optional
        Retries after the first attempt; default ``MICROPIPE_S3_RETRIES`` (4).
    backoff_s : float, optional
        Delay before the first retry in s, doubled each time and capped at 30 s;
        default ``MICROPIPE_S3_BACKOFF_S`` (0.5).
    sleep : callable, optional
        Waits the given number of seconds (tests pass a recorder).

    Returns
    -------
    object
        What ``func`` returned.

    Raises
    ------
    Exception
        The first non-transient error, or the last transient one once the retries are spent.
    """
    retries = _retries() if retries is None else retries
    backoff_s = _backoff_s() if backoff_s is None else backoff_s
    attempt = 0
    while True:
        try:
            return func()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            delay = min(backoff_s * 2**attempt, MAX_BACKOFF_S)
            attempt += 1
            log.warning("%s failed transiently (%s); retry %d/%d in %.2f s",
                        what, _one_line(exc), attempt, retries, delay)
            sleep(delay)


# --------------------------------------------------------------------------- S3 client

@dataclass(frozen=True)
class _S3Config:
    endpoint: str
    secure: bool
    host: str
    region: str
    access_key: str
    secret_key: str = field(repr=False)


def _config(loc: _Remote) -> _S3Config:
    endpoint = os.environ.get(ENV_ENDPOINT, "").strip()
    if not endpoint:
        raise StoreError(f"{ENV_ENDPOINT} is not set; it is needed for s3:// and minio:// URIs such as "
                         f"{loc} (expected e.g. http://127.0.0.1:9000 or https://minio.example:9000)")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or "@" in parts.netloc:
        raise StoreError(f"{ENV_ENDPOINT}={endpoint!r} is invalid; expected http://host:port or "
                         "https://host:port with no path and no credentials")
    missing = [name for name in (ENV_ACCESS_KEY, ENV_SECRET_KEY) if not os.environ.get(name)]
    if missing:
        raise CredentialsError(f"{' and '.join(missing)} not set; needed for {loc} at {endpoint} "
                               "(expected the storage secret's keys in the environment)")
    return _S3Config(endpoint=endpoint.rstrip("/"), secure=parts.scheme == "https", host=parts.netloc,
                     region=os.environ.get(ENV_REGION) or DEFAULT_REGION,
                     access_key=os.environ[ENV_ACCESS_KEY], secret_key=os.environ[ENV_SECRET_KEY])


@functools.lru_cache(maxsize=8)
def _client(cfg: _S3Config) -> Minio:
    # urllib3 retries off: call_with_retries is the one loop in charge, and a dead endpoint
    # fails after a bounded, configurable number of attempts.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        retries=False,
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    # The region is given so that the client never asks the server for a bucket's location.
    return Minio(cfg.host, access_key=cfg.access_key, secret_key=cfg.secret_key, secure=cfg.secure,
                 region=cfg.region, http_client=http)


def _masked(key: str) -> str:
    return f"{key[:4]}...{key[-2:]}" if len(key) > 8 else "***"


def _one_line(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else (getattr(exc, "message", None) or str(exc) or type(exc).__name__)
    return " ".join(str(text).split())


def _bucket_missing(loc: _Remote, cfg: _S3Config) -> BucketNotFoundError:
    return BucketNotFoundError(f"bucket {loc.bucket!r} does not exist at {cfg.endpoint} (needed for {loc}); "
                               "expected an existing bucket: create it or fix the URI")


def _key_missing(loc: _Remote, cfg: _S3Config) -> KeyNotFoundError:
    return KeyNotFoundError(f"{loc} not found: no object {loc.key!r} in bucket {loc.bucket!r} at "
                            f"{cfg.endpoint}; expected an existing object (check the URI and that the "
                            "step producing it finished)")


def _translate(exc: Exception, loc: _Remote, cfg: _S3Config, what: str) -> StoreError:
    if isinstance(exc, S3Error):
        if exc.code == "NoSuchBucket":
            return _bucket_missing(loc, cfg)
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return _key_missing(loc, cfg)
        if exc.code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"{what} {loc} refused by {cfg.endpoint} ({exc.code}) for access key "
                f"{_masked(cfg.access_key)}; check {ENV_ACCESS_KEY} and {ENV_SECRET_KEY} (and the bucket "
                "policy): expected credentials valid for this endpoint")
        return StoreError(f"{what} {loc} failed at {cfg.endpoint} with S3 error {exc.code}: "
                          f"{_one_line(exc)}")
    attempts = _retries() + 1
    if isinstance(exc, MinioException):  # ServerError / InvalidResponseError: not an S3 answer
        return StoreError(f"{what} {loc} failed at {cfg.endpoint} after {attempts} attempt(s): "
                          f"{_one_line(exc)}; expected an S3-compatible server")
    if isinstance(exc, urllib3.exceptions.SSLError):
        return EndpointUnreachableError(
            f"TLS with S3 endpoint {cfg.endpoint} (from {ENV_ENDPOINT}) failed for {loc}: {_one_line(exc)}; "
            "expected a certificate trusted by SSL_CERT_FILE or certifi, or an http:// endpoint")
    return EndpointUnreachableError(
        f"S3 endpoint {cfg.endpoint} (from {ENV_ENDPOINT}) unreachable for {what} {loc} after "
        f"{attempts} attempt(s) ({_one_line(exc).split('): ', 1)[-1]}); expected a running S3/MinIO server there")


def _s3(loc: _Remote, what: str, func: Callable[[Minio], T]) -> T:
    """Run ``func(client)`` with retries and turn client errors into :class:`StoreError` subclasses."""
    cfg = _config(loc)
    client = _client(cfg)
    try:
        return call_with_retries(lambda: func(client), what=f"{what} {loc}")
    except (MinioException, urllib3.exceptions.HTTPError, *_NETWORK_ERRORS) as exc:
        raise _translate(exc, loc, cfg, what) from exc


def _part_size(size: int) -> int:
    # Very large objects need bigger parts to stay within S3's 10,000-part limit.
    return max(PART_SIZE, math.ceil(size / _MAX_PARTS / MiB) * MiB)


def _stat_exists(client: Minio, loc: _Remote) -> bool:
    try:
        client.stat_object(loc.bucket, loc.key)
    except S3Error as exc:
        # A HEAD answer has no body, so a missing bucket also reads as NoSuchKey; callers check.
        if exc.code == "NoSuchKey":
            return False
        raise
    return True


def _download(client: Minio, loc: _Remote, dest: Path) -> None:
    response = client.get_object(loc.bucket, loc.key)
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
            for chunk in response.stream(_CHUNK):
                fh.write(chunk)
    finally:
        response.close()
        response.release_conn()


def _read_object(client: Minio, loc: _Remote) -> bytes:
    response = client.get_object(loc.bucket, loc.key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _remote_listing(loc: _Remote) -> list[tuple[str, str]]:
    prefix = loc.dir_prefix
    names = _s3(loc, "list", lambda c: [o.object_name for o in c.list_objects(loc.bucket, prefix=prefix,
                                                                             recursive=True)])
    # Keys ending in '/' are folder markers some tools create, not files.
    return sorted((str(loc.with_key(n)), n[len(prefix):]) for n in names if n and not n.endswith("/"))


# --------------------------------------------------------------------------- local helpers

@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside local file ``dest``; on success it is fsynced and renamed onto ``dest``,
    on error removed, so ``dest`` is either absent, the old file, or complete.

    The temporary name is hidden, marked (listings skip it) and keeps the suffix of ``dest``, so writers
    that choose a format by suffix (VTK, numpy) work on it. Parent directories are created.
    """
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}{dest.suffix}")
    # Not mkstemp: its 0600 would stick to the published file; 0o666 & ~umask is what open() gives.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _local_missing(loc: _Local, expected: str = "an existing file") -> KeyNotFoundError:
    where = "" if loc.path.is_absolute() else f" (local path {loc.path.absolute()})"
    return KeyNotFoundError(f"{loc} not found{where}; expected {expected}")


def _local_listing(loc: _Local) -> list[tuple[str, str]]:
    root = loc.path
    if not root.is_dir():
        return []
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(_TMP_SUFFIX in part for part in rel.parts):
            out.append((loc.uri(path), rel.as_posix()))
    return sorted(out, key=lambda item: item[1])


def _listing(uri: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(full URI, path relative to ``uri`` with '/') for every file under the directory ``uri``."""
    loc = _parse(uri)
    return _remote_listing(loc) if isinstance(loc, _Remote) else _local_listing(loc)


def _safe_relative(rel: str, uri: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise StoreError(f"refusing to download {uri}: its key escapes the target directory; "
                         "expected a relative key below the prefix")
    return path


def _replace_dir(src: Path, dest: Path) -> None:
    """Move directory ``src`` onto ``dest`` (same filesystem), replacing whatever ``dest`` was."""
    if not dest.exists() and not dest.is_symlink():
        os.replace(src, dest)
        return
    # rename() cannot replace a non-empty directory: move the old one aside first.
    trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", suffix=_TMP_SUFFIX, dir=dest.parent))
    os.replace(dest, trash / dest.name)
    os.replace(src, dest)
    shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- files and bytes

def put_file(local_path: str | os.PathLike[str], uri: str | os.PathLike[str]) -> str:
    """Copy a local file to ``uri``, which appears only once complete.

    Parameters
    ----------
    local_path : str or os.PathLike
        Existing local file.
    uri : str or os.PathLike
        Destination: local path, ``file://``, ``s3://`` or ``minio://`` URI naming a file/object.
        Local parent directories are created.

    Returns
    -------
    str
        ``uri`` as a string.
    """
    src = Path(local_path)
    loc = _parse(uri)
    if not src.is_file():
        raise _local_missing(_Local(src, False), f"a file to copy to {loc}")
    if isinstance(loc, _Remote):
        _require_key(loc)
        size = src.stat().st_size
        log.debug("upload %s -> %s (%d bytes)", src, loc, size)
        _s3(loc, "upload to", lambda c: c.fput_object(loc.bucket, loc.key, str(src), part_size=_part_size(size)))
    else:
        with atomic_path(loc.path) as tmp:
            shutil.copyfile(src, tmp)
    return str(loc)


def get_file(uri: str | os.PathLike[str], local_path: str | os.PathLike[str]) -> Path:
    """Copy the file/object at ``uri`` to ``local_path`` (written under a temporary name, then renamed).

    Parameters
    ----------
    uri : str or os.PathLike
        Source: local path, ``file://``, ``s3://`` or ``minio://`` URI naming a file/object.
    local_path : str or os.PathLike
        Destination file; parent directories are created.

    Returns
    -------
    pathlib.Path
        ``local_path``.

    Raises
    ------
    KeyNotFoundError
        Nothing at ``uri``.
    """
    dest = Path(local_path)
    loc = _parse(uri)
    if isinstance(loc, _Remote):
        _require_key(loc)
        log.debug("download %s -> %s", loc, dest)
        _s3(loc, "download", lambda c: _download(c, loc, dest))
    else:
        if not loc.path.is_file():
            raise _local_missing(loc)
        with atomic_path(dest) as tmp:
            shutil.copyfile(loc.path, tmp)
    return dest


def write_bytes(uri: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``uri`` in one complete write (see :func:`put_file`). Returns ``uri``."""
    loc = _parse(uri)
    data = bytes(data)
    if isinstance(loc, _Remote):
        _require_key(loc)
        _s3(loc, "write", lambda c: c.put_object(loc.bucket, loc.key, io.BytesIO(data), len(data),
                                                 part_size=_part_size(len(data))))
    else:
        with atomic_path(loc.path) as tmp:
            tmp.write_bytes(data)
    return str(loc)


def create_exclusive(uri: str | os.PathLike[str], data: bytes) -> bool:
    """Write ``data`` to ``uri`` only if nothing is there yet, in one atomic step; returns whether it was written.

    Two writers racing for the same ``uri`` cannot both win: locally the complete file is hard-linked into place
    (``link`` fails when the name exists); on S3 the PUT carries ``If-None-Match: *`` (a conditional write, which
    AWS S3 and MinIO honour), so the server refuses the second one with 412.
    """
    loc = _parse(uri)
    data = bytes(data)
    if isinstance(loc, _Local):
        loc.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = loc.path.with_name(f".{loc.path.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        try:
            tmp.write_bytes(data)
            os.link(tmp, loc.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
    _require_key(loc)

    def put(client: Minio) -> bool:
        try:  # minio's public put_object turns unknown headers into metadata; its _put_object sends them as given
            client._put_object(loc.bucket, loc.key, data, headers={"If-None-Match": "*",
                                                                   "Content-Length": str(len(data))})
            return True
        except S3Error as exc:
            if exc.code == "PreconditionFailed":
                return False
            raise

    return _s3(loc, "create", put)


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """Contents of the file/object at ``uri``; :class:`KeyNotFoundError` when there is none."""
    loc = _parse(uri)
    if isinstance(loc, _Remote):
        _require_key(loc)
        return _s3(loc, "read", lambda c: _read_object(c, loc))
    try:
        return loc.path.read_bytes()
    except FileNotFoundError as exc:
        raise _local_missing(loc) from exc


def write_text(uri: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> str:
    """Write ``text`` to ``uri`` (see :func:`write_bytes`). Returns ``uri``."""
    return write_bytes(uri, text.encode(encoding))


def read_text(uri: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """Text of the file/object at ``uri`` (see :func:`read_bytes`)."""
    return read_bytes(uri).decode(encoding)


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an existing file/object or a non-empty directory/prefix.

    For a bare ``s3://bucket`` this is whether the bucket exists; otherwise a missing bucket raises
    :class:`BucketNotFoundError`, since that is a configuration error rather than a missing file.
    """
    loc = _parse(uri)
    if isinstance(loc, _Local):
        return loc.path.exists()
    if not loc.key.strip("/"):
        return _s3(loc, "check bucket of", lambda c: c.bucket_exists(loc.bucket))
    if loc.key.endswith("/") or not _s3(loc, "stat", lambda c: _stat_exists(c, loc)):
        prefix = loc.dir_prefix
        return _s3(loc, "list", lambda c: next(iter(c.list_objects(loc.bucket, prefix=prefix, recursive=True)), None)) \
            is not None
    return True


def check_writable(uri: str | os.PathLike[str]) -> None:
    """Fail fast, before any work, where ``uri`` cannot be written: on S3 an unreachable endpoint, wrong credentials
    or a missing bucket (each one :class:`StoreError` line, after the usual retries); locally a path that is a file
    or whose first existing parent is not a writable directory."""
    loc = _parse(uri)
    if isinstance(loc, _Remote):
        if not _s3(loc, "check bucket of", lambda c: c.bucket_exists(loc.bucket)):
            raise _bucket_missing(loc, _config(loc))
        return
    path = loc.path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{loc}: is a file; expected a directory for the dataset")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{loc}: {parent} is not a writable directory; expected a place the dataset can be written")


def remove_staging(uri: str | os.PathLike[str]) -> int:
    """Remove the temporary files and folders that interrupted writers left under the local directory ``uri``
    (their names carry the staging mark); returns how many. Call it only while no one else writes there (the
    dataset's lock is held). S3 has no staging: an upload is complete or absent."""
    loc = _parse(uri)
    if isinstance(loc, _Remote) or not loc.path.is_dir():
        return 0
    stale = [p for p in loc.path.rglob(f"*{_TMP_SUFFIX}*") if _TMP_SUFFIX in p.name]
    for p in sorted(stale, key=lambda p: len(p.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


def list_files(uri_prefix: str | os.PathLike[str]) -> list[str]:
    """Every file under a directory / key prefix, recursively, as sorted full URIs (or paths).

    ``uri_prefix`` is taken as a directory: ``s3://b/data`` lists ``s3://b/data/...`` but not
    ``s3://b/data2/...``. A missing directory or empty prefix gives ``[]``; a missing bucket raises
    :class:`BucketNotFoundError`. Local in-progress temporary files are not listed.
    """
    return [full for full, _ in _listing(uri_prefix)]


def delete(uri: str | os.PathLike[str]) -> None:
    """Delete one file/object; nothing happens when it does not exist (as in S3).

    Directories / prefixes are deleted with :func:`delete_prefix`.
    """
    loc = _parse(uri)
    if isinstance(loc, _Remote):
        _require_key(loc)
        _s3(loc, "delete", lambda c: c.remove_object(loc.bucket, loc.key))
        return
    if loc.path.is_dir():
        raise IsADirectoryError(f"{loc} is a directory; use delete_prefix to delete a directory")
    loc.path.unlink(missing_ok=True)


def move(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> str:
    """Move one file/object from ``src`` to ``dest`` (same store; an existing ``dest`` is replaced); returns ``dest``.

    Locally a rename; on S3 a server-side copy, then the source is deleted.
    """
    a, b = _parse(src), _parse(dest)
    if isinstance(a, _Remote) != isinstance(b, _Remote):
        raise ValueError(f"move: {src} and {dest} are in different stores; expected both local or both remote")
    if isinstance(a, _Local):
        if not a.path.is_file():
            raise _local_missing(a)
        b.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(a.path, b.path)
        return str(b)
    _require_key(a)
    _require_key(b)
    _s3(b, "copy to", lambda c: c.copy_object(b.bucket, b.key, CopySource(a.bucket, a.key)))
    _s3(a, "delete", lambda c: c.remove_object(a.bucket, a.key))
    return str(b)


def delete_prefix(uri: str | os.PathLike[str]) -> int:
    """Delete every file under a directory / key prefix; returns how many were deleted.

    A bucket root is refused (``ValueError``) so that a typo cannot empty a bucket.
    """
    loc = _parse(uri)
    if isinstance(loc, _Local):
        count = len(_local_listing(loc))
        if loc.path.is_dir():
            shutil.rmtree(loc.path)
        return count
    if not loc.dir_prefix:
        raise ValueError(f"refusing to delete the whole bucket {str(loc)!r}; expected a prefix below it")
    keys = [loc.dir_prefix + rel for _, rel in _remote_listing(loc)]

    def remove(client: Minio) -> None:
        errors = list(client.remove_objects(loc.bucket, [DeleteObject(k) for k in keys]))
        if errors:
            raise StoreError(f"deleting {len(errors)} object(s) under {loc} failed, first: "
                             f"{errors[0].name} ({errors[0].code}); expected all deletable")

    if keys:
        _s3(loc, "delete under", remove)
    return len(keys)


def make_bucket(uri: str) -> bool:
    """Create the bucket of ``uri`` (``s3://bucket`` or ``minio://bucket``, any key ignored) if it is missing.

    Returns whether it was created. Setting up storage is the one place that creates buckets (the
    Helm chart's MinIO bucket Job); everything else treats a missing bucket as a configuration error.
    """
    loc = _parse(uri)
    if isinstance(loc, _Local):
        raise ValueError(f"make_bucket needs an s3:// or minio:// URI, got {uri!r}")

    def create(client: Minio) -> bool:
        if client.bucket_exists(loc.bucket):
            return False
        try:
            client.make_bucket(loc.bucket)
        except S3Error as exc:  # a concurrent creator with the same credentials won the race
            if exc.code != "BucketAlreadyOwnedByYou":
                raise
            return False
        return True

    return _s3(loc, "create bucket", create)


# --------------------------------------------------------------------------- directories

def put_dir(local_dir: str | os.PathLike[str], uri: str | os.PathLike[str], *, max_workers: int = 4) -> list[str]:
    """Copy every file under ``local_dir`` to the directory / prefix ``uri``, keeping the layout.

    Each file appears complete on its own (see :func:`put_file`); files already under ``uri`` that are
    not in ``local_dir`` are kept. Use :func:`staged_output` to replace a local directory as a whole.

    Parameters
    ----------
    local_dir : str or os.PathLike
        Existing local directory.
    uri : str or os.PathLike
        Destination directory / prefix.
    max_workers : int, optional
        Files copied concurrently.

    Returns
    -------
    list of str
        Destination URIs, sorted.
    """
    src = _Local(Path(local_dir), False)
    if not src.path.is_dir():
        raise _local_missing(src, f"a directory to copy to {uri}")
    pairs = [(src.path / rel, join(uri, rel)) for _, rel in _local_listing(src)]
    if not pairs:
        log.warning("put_dir: %s has no files; nothing copied to %s", src.path, uri)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return sorted(pool.map(lambda pair: put_file(*pair), pairs))


def get_dir(uri: str | os.PathLike[str], local_dir: str | os.PathLike[str], *, max_workers: int = 4) -> Path:
    """Copy every file under the directory / prefix ``uri`` into ``local_dir``, keeping the layout.

    Parameters
    ----------
    uri : str or os.PathLike
        Source directory / prefix.
    local_dir : str or os.PathLike
        Destination directory (created).
    max_workers : int, optional
        Files copied concurrently.

    Returns
    -------
    pathlib.Path
        ``local_dir``.

    Raises
    ------
    KeyNotFoundError
        No file under ``uri``.
    """
    dest = Path(local_dir)
    listing = _listing(uri)
    if not listing:
        raise KeyNotFoundError(f"no files under {_parse(uri)}; expected a directory / prefix holding a dataset")
    dest.mkdir(parents=True, exist_ok=True)
    jobs = [(full, dest.joinpath(*_safe_relative(rel, full).parts)) for full, rel in listing]
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        list(pool.map(lambda job: get_file(*job), jobs))
    log.debug("downloaded %d file(s) from %s to %s", len(jobs), uri, dest)
    return dest


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a local path holding the contents of ``uri``, for reading.

    Local locations are yielded as they are. A remote object is downloaded to a temporary file, a
    remote prefix (dataset) to a temporary directory; either is removed on exit.

    Raises
    ------
    KeyNotFoundError
        Nothing at ``uri``.
    """
    loc = _parse(uri)
    if isinstance(loc, _Local):
        if not loc.path.exists():
            raise _local_missing(loc, "an existing file or directory")
        yield loc.path
        return
    tmpdir = Path(tempfile.mkdtemp(prefix="micropipe-"))
    try:
        target = tmpdir / (PurePosixPath(loc.key).name or loc.bucket)
        _fetch(loc, target)
        yield target
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _fetch(loc: _Remote, target: Path) -> None:
    """Download an object to the file ``target``, or else a prefix to the directory ``target``."""
    if loc.key and not loc.key.endswith("/"):
        try:
            get_file(str(loc), target)
            return
        except KeyNotFoundError:
            if not _remote_listing(loc):
                raise
    get_dir(str(loc), target)


@contextlib.contextmanager
def staged_output(uri: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary local path to write a file or directory into; publish it at ``uri`` on success.

    On a clean exit whatever was written at the yielded path (one file, or a directory tree) is moved
    into place locally (rename on the same filesystem; an existing directory is replaced) or uploaded
    (:func:`put_file` / :func:`put_dir`). On an exception it is discarded and nothing appears at ``uri``.

    Raises
    ------
    StoreError
        The block exited cleanly without creating the yielded path.
    """
    loc = _parse(uri)
    if isinstance(loc, _Local):
        loc.path.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{loc.path.name}.", suffix=_TMP_SUFFIX, dir=loc.path.parent))
    else:
        tmpdir = Path(tempfile.mkdtemp(prefix="micropipe-"))
    staged = tmpdir / (loc.path.name if isinstance(loc, _Local) else PurePosixPath(loc.key).name or "output")
    try:
        yield staged
        if not staged.exists():
            raise StoreError(f"nothing was written to the staged path {staged} for {loc}; "
                             "expected a file or directory there")
        if isinstance(loc, _Remote):
            put_dir(staged, str(loc)) if staged.is_dir() else put_file(staged, str(loc))
        elif staged.is_dir():
            _replace_dir(staged, loc.path)
        else:
            os.replace(staged, loc.path)
        log.debug("published %s", loc)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
