"""One writer per dataset: a lock object under the dataset URI, held while a run writes there.

Two runs on one ``--dataset-uri`` would otherwise interleave their shards and each report the other's data. The
lock is ``<dataset_uri>/.micropipe-lock.json``, created atomically (:func:`micropipe.store.create_exclusive`: a
hard link locally, a conditional PUT on S3) and holding who took it (run, host, pid, start, arguments digest) and
a heartbeat that the holder refreshes. A lock is stale, and taken over with a warning, when its holder's process
is gone (same host) or its heartbeat is older than :data:`STALE_S` (another host); otherwise the second run
stops with one line that names the first.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import secrets
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from micropipe import store

log = logging.getLogger(__name__)

LOCK = ".micropipe-lock.json"
"""Name of the lock object under a dataset URI."""
HEARTBEAT_S = 30.0
"""Seconds between the holder's heartbeats."""
STALE_S = float(os.environ.get("MICROPIPE_LOCK_STALE_S", 600))
"""A lock whose heartbeat is older than this (s) is stale when its holder runs on another host."""


class DatasetLocked(RuntimeError):
    """Another live run holds the dataset's lock; the message names it."""


def lock_uri(dataset_uri: str) -> str:
    return store.join(dataset_uri, LOCK)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def stale(holder: Mapping[str, Any], now: _dt.datetime | None = None) -> str | None:
    """Why the lock of ``holder`` no longer protects anything (its process is gone, its heartbeat stopped), or None
    while it does."""
    if holder.get("host") == platform.node() and holder.get("pid") is not None and not pid_alive(holder["pid"]):
        return f"its process {holder['pid']} on this host is gone"
    try:
        beat = _dt.datetime.fromisoformat(str(holder.get("heartbeat_utc")))
    except ValueError:
        return "it has no readable heartbeat"
    age = ((now or _now()) - beat).total_seconds()
    return f"its last heartbeat was {age:.0f} s ago (> {STALE_S:g} s)" if age > STALE_S else None


def read(dataset_uri: str) -> dict[str, Any] | None:
    """The holder of the dataset's lock, or None when nobody holds it."""
    try:
        return json.loads(store.read_text(lock_uri(dataset_uri)))
    except store.KeyNotFoundError:
        return None
    except json.JSONDecodeError:
        return {}


def describe(holder: Mapping[str, Any]) -> str:
    return (f"run {holder.get('run', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
            f"{holder.get('started_utc', '?')})")


@contextlib.contextmanager
def hold(dataset_uri: str, *, run: str, arguments_digest: str = "") -> Iterator[dict[str, Any]]:
    """Hold the lock of ``dataset_uri`` for the duration of the block, refreshing its heartbeat.

    Raises
    ------
    DatasetLocked
        A live run holds it: the message names that run and what to do.
    """
    uri = lock_uri(dataset_uri)
    stamp = _now().isoformat()
    me = {"run": run, "host": platform.node(), "pid": os.getpid(), "started_utc": stamp, "heartbeat_utc": stamp,
          "arguments_digest": arguments_digest, "token": secrets.token_hex(8)}
    while not store.create_exclusive(uri, json.dumps(me).encode()):
        holder = read(dataset_uri)
        if holder is None:
            continue  # released in between
        if holder.get("token") == me["token"]:
            break  # our own write, answered as a conflict after a retry
        why = stale(holder)
        if why is None:
            same = " with the same arguments" if holder.get("arguments_digest") == arguments_digest else \
                " with other arguments"
            raise DatasetLocked(f"{dataset_uri} is being written by {describe(holder)}{same}; wait for it to finish, "
                                f"or pass another --dataset-uri")
        log.warning("taking over the lock of %s from %s: %s", dataset_uri, describe(holder), why)
        store.delete(uri)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                if (read(dataset_uri) or {}).get("token") != me["token"]:
                    log.warning("the lock of %s was taken over; this run no longer holds it", dataset_uri)
                    return
                store.write_text(uri, json.dumps({**me, "heartbeat_utc": _now().isoformat()}))
            except store.StoreError as e:  # the store may be briefly unreachable; the next beat tries again
                log.warning("could not refresh the lock of %s: %s", dataset_uri, e)

    beat = threading.Thread(target=heartbeat, name="micropipe-lock-heartbeat", daemon=True)
    beat.start()
    try:
        yield me
    finally:
        stop.set()
        beat.join(timeout=5)
        if (read(dataset_uri) or {}).get("token") == me["token"]:
            store.delete(uri)
