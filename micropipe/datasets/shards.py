"""The sharded-dataset API that every dataset kind shares: plan the shards, write one atomically, know whether a
shard already there is complete for the same inputs, check and gather all shards, and write or read the
manifest that marks the dataset complete.

A dataset lives under one URI (a local path or ``s3://bucket/prefix``); each kind keeps its files under its own
prefix there::

    <dataset_uri>/<prefix>/shards/shard-00000<suffix>   one shard: written under a temporary name, renamed when complete
    <dataset_uri>/<prefix>/manifest.json                written last, by the gather step

A :class:`Kind` names a dataset kind's manifest format, shard suffix, prefix and messages; the kind's own
module keeps its file format (HDF5, Parquet, ...) and the *record* inside each shard (provenance, counts,
digests of the inputs) from which :meth:`Kind.is_complete` decides whether a rerun may keep the shard. Item
``i`` of a dataset goes to shard ``i // shard_size``, so shards can be written in any order on any machine.

Every shard gets a checksum file beside it when it is written (``shard-00000<suffix>.sha256``, the SHA-256 of
its bytes in ``sha256sum`` format), and the manifest lists each shard's SHA-256. Neither HDF5 nor Parquet pages
carry a checksum of their own, so this is what tells a shard that was corrupted after it was written from a
good one: a shard whose bytes do not match is moved aside (``<name>.corrupt-<UTC time>``) and computed again
by a rerun, never reused; a gather refuses it. :func:`verify` checks a whole dataset.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from micropipe import provenance, store
from micropipe.params import is_int

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
"""Name of the manifest beside a kind's ``shards/`` folder."""
CHECKSUM_SUFFIX = ".sha256"
"""Suffix of the checksum file written beside every shard (and every gathered file)."""


class ChecksumError(ValueError):
    """A file's bytes do not match the SHA-256 recorded when it was written (``corrupt``), or no checksum was
    recorded, or it was rewritten after the manifest that lists it (not ``corrupt``)."""

    def __init__(self, message: str, corrupt: bool):
        super().__init__(message)
        self.corrupt = corrupt


def checksum_uri(uri: str) -> str:
    """URI of the checksum file of the file at ``uri``."""
    return f"{uri}{CHECKSUM_SUFFIX}"


def publish(uri: str, write: Callable[[Path], Any]) -> str:
    """Call ``write(local_path)``; publish the file at ``uri`` only once it returns (see
    :func:`micropipe.store.staged_output`), then its checksum file beside it; returns the file's SHA-256.

    A stale checksum file is removed first, so a file is never published under an older file's checksum; a
    crash after publishing and before the checksum leaves a file without one, which counts as incomplete.
    """
    store.delete(checksum_uri(uri))
    with store.staged_output(uri) as path:
        write(path)
        digest = provenance.file_sha256(path)
    store.write_text(checksum_uri(uri), f"{digest}  {uri.rsplit('/', 1)[-1]}\n")
    return digest


def recorded_checksum(uri: str) -> str | None:
    """The SHA-256 recorded beside the file at ``uri`` when it was written; None when there is none."""
    try:
        text = store.read_text(checksum_uri(uri))
    except store.KeyNotFoundError:
        return None
    digest = text.split()[0] if text.split() else ""
    return digest if len(digest) == 64 else None


def check_checksum(uri: str, path: Path, expected: str | None = None) -> str:
    """The SHA-256 of ``path`` (the local copy of ``uri``), checked against ``expected`` or else the recorded one.

    Raises
    ------
    ChecksumError
        No checksum was recorded, or the bytes differ from the ones written.
    """
    recorded = recorded_checksum(uri)
    want = expected or recorded
    if want is None:
        raise ChecksumError(f"{uri}: no checksum ({checksum_uri(uri).rsplit('/', 1)[-1]}) was recorded when it was "
                            f"written; expected one beside every shard", corrupt=False)
    have = provenance.file_sha256(path)
    if have == want:
        return have
    if expected is not None and have == recorded:
        raise ChecksumError(f"{uri}: rewritten after its dataset's manifest was written (SHA-256 {have[:12]}..., the "
                            f"manifest lists {want[:12]}...); gather the dataset again", corrupt=False)
    raise ChecksumError(f"{uri}: checksum mismatch: SHA-256 {have[:12]}... of its bytes, {want[:12]}... when it was "
                        f"written; the file was changed or corrupted since", corrupt=True)


def quarantine(uri: str) -> str:
    """Move a corrupted file (and its checksum file) aside to ``<uri>.corrupt-<UTC time>``; returns the new URI."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = f"{uri}.corrupt-{stamp}"
    store.move(uri, target)
    if store.exists(checksum_uri(uri)):
        store.move(checksum_uri(uri), checksum_uri(target))
    log.warning("moved %s aside to %s; it will be computed again", uri, target)
    return target


def plan(n_items: int, shard_size: int, what: str = "n_items") -> list[tuple[int, int]]:
    """Half-open item ranges ``[start, stop)`` of every shard; ``what`` names ``n_items`` in the error.

    Raises
    ------
    ValueError
        ``n_items`` or ``shard_size`` is not a positive integer.
    """
    if not is_int(n_items):
        raise ValueError(f"{what} must be a positive integer, got {n_items!r}")
    if not is_int(shard_size):
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    n_items, shard_size = int(n_items), int(shard_size)
    return [(s, min(s + shard_size, n_items)) for s in range(0, n_items, shard_size)]


def check_collected(collected: Sequence[str], expected: Sequence[str]) -> None:
    """Check the shard URIs a fan-out returned (KFP's ``dsl.Collected`` of its tasks' outputs, in any order) against
    the shards a gather expects: every one there, none unexpected, none twice.

    Raises
    ------
    ValueError
        Naming how many are missing, unexpected and repeated, with the first of each.
    """
    got = [str(u) for u in collected]
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    repeated = len(got) - len(set(got))
    if missing or extra or repeated:
        raise ValueError(f"shards: the fan-out returned {len(got)} shard URI(s) for {len(expected)} shards: "
                         f"{len(missing)} missing ({', '.join(missing[:3])}), {len(extra)} unexpected "
                         f"({', '.join(extra[:3])}), {repeated} repeated")


def field(record: Mapping[str, Any], key: str) -> Any:
    """Value at the dotted ``key`` (``'params.generator'``) of a nested record; None where a level is missing."""
    value: Any = record
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def read_json(uri: str, fmt: str, missing: str) -> dict[str, Any]:
    """A JSON document written by :meth:`Kind.write_manifest` (or an index of the same shape), checked for its
    ``format``.

    Raises
    ------
    micropipe.store.KeyNotFoundError
        Nothing at ``uri``; the message is ``'<uri>: <missing>'``.
    ValueError
        Not JSON, or a document of another format.
    """
    try:
        doc = json.loads(store.read_text(uri))
    except store.KeyNotFoundError:
        raise store.KeyNotFoundError(f"{uri}: {missing}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{uri}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{uri}: field 'format' is {found!r}, expected {fmt!r}")
    return doc


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of sharded dataset: where its files go and what its manifest is called.

    Attributes
    ----------
    format : str
        The manifest's ``format`` field, e.g. ``'micropipe-ve-dataset'``.
    suffix : str
        File suffix of a shard, e.g. ``'.h5'``.
    prefix : str
        Folder under the dataset URI ('' for the dataset's root).
    missing_manifest : str
        What a missing manifest means, for the error message.
    missing_shard : str
        Message for a missing shard, formatted with ``index``, ``uri``, ``n_shards`` and the keywords given to
        :meth:`check_shards`.
    """

    format: str
    suffix: str
    prefix: str = ""
    missing_manifest: str = "no manifest; the dataset is incomplete or was never gathered"
    missing_shard: str = "shard {index} ({uri}) is missing; expected {n_shards} shards"
    format_version: int = 1

    def _path(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def shard_name(self, index: int) -> str:
        """Path of shard ``index`` relative to the dataset URI."""
        return self._path(f"shards/shard-{int(index):05d}{self.suffix}")

    def shard_uri(self, dataset_uri: str, index: int) -> str:
        return store.join(dataset_uri, self.shard_name(index))

    def manifest_uri(self, dataset_uri: str) -> str:
        return store.join(dataset_uri, self._path(MANIFEST))

    def write_shard(self, dataset_uri: str, index: int, write: Callable[[Path], Any]) -> str:
        """Call ``write(local_path)`` and publish the file as shard ``index``, with its checksum, only once it
        returns (:func:`publish`); returns the shard's URI."""
        uri = self.shard_uri(dataset_uri, index)
        publish(uri, write)
        return uri

    def is_complete(self, uri: str, read_record: Callable[[Path], Mapping[str, Any]],
                    expected: Mapping[str, Any]) -> bool:
        """Whether the shard at ``uri`` may be kept instead of computed again.

        Kept when it exists, its bytes match the checksum recorded when it was written, ``read_record(local_path)``
        reads its record (a ``ValueError`` there means an unreadable or incomplete shard) and every dotted key of
        ``expected`` has the expected value in it. A shard whose bytes do not match is moved aside
        (:func:`quarantine`); every other outcome is logged with its reason. All of them return False.
        """
        if not store.exists(uri):
            return False
        with store.local_copy(uri) as path:
            try:
                check_checksum(uri, path)
                record = read_record(path)
            except ChecksumError as e:
                log.warning("%s; computing it again", e)
                if e.corrupt:
                    quarantine(uri)
                return False
            except ValueError as e:
                log.warning("%s is not usable (%s); computing it again", uri, e)
                return False
        for key, want in expected.items():
            have = field(record, key)
            if have != want:
                log.warning("%s: field %r is %s, expected %s; computing it again", uri, key, _short(have),
                            _short(want))
                return False
        return True

    def check_shards(self, dataset_uri: str, n_shards: int, check: Callable[[int, str, Path], dict[str, Any]],
                     **context: Any) -> list[dict[str, Any]]:
        """``check(index, uri, local_path)`` of every shard in index order, after making sure the shard exists
        and its bytes are the ones written; each entry gets the shard's ``sha256`` for the manifest.

        Raises
        ------
        ValueError
            A shard is missing (:attr:`missing_shard`), or what ``check`` raises.
        ChecksumError
            A shard has no checksum or was corrupted since it was written; a corrupted one is moved aside first,
            so that a rerun computes it again.
        """
        entries = []
        for index in range(n_shards):
            uri = self.shard_uri(dataset_uri, index)
            if not store.exists(uri):
                raise ValueError(self.missing_shard.format(index=index, uri=uri, n_shards=n_shards,
                                                           dataset_uri=dataset_uri, **context))
            with store.local_copy(uri) as path:
                try:
                    digest = check_checksum(uri, path)
                except ChecksumError as e:
                    if not e.corrupt:
                        raise
                    raise ChecksumError(f"{e}; moved aside to {quarantine(uri)}: rerun to compute it again",
                                        corrupt=True) from None
                entries.append({**check(index, uri, path), "sha256": digest})
        return entries

    def write_manifest(self, dataset_uri: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Write the manifest (``format``, ``format_version``, ``uri`` and ``fields``); the last write of a
        gather, so a dataset with a manifest is complete."""
        manifest = {"format": self.format, "format_version": self.format_version, "uri": dataset_uri, **fields}
        store.write_text(self.manifest_uri(dataset_uri), json.dumps(manifest, indent=1))
        return manifest

    def load_manifest(self, dataset_uri: str) -> dict[str, Any]:
        """The manifest of a gathered dataset, its ``uri`` set to ``dataset_uri`` (the dataset may have moved).

        Raises
        ------
        micropipe.store.KeyNotFoundError
            No manifest: the dataset is incomplete.
        ValueError
            The manifest is not JSON or of another format.
        """
        manifest = read_json(self.manifest_uri(dataset_uri), self.format, self.missing_manifest)
        manifest["uri"] = dataset_uri
        return manifest


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def verify(dataset_uri: str) -> list[dict[str, str]]:
    """Check every file of a dataset that has a checksum (every shard, every gathered file), and that every shard
    has one; read only (a rerun moves corrupted shards aside and computes them again).

    Returns
    -------
    list of dict
        One per file checked: ``uri``, ``status`` (``ok``, ``corrupt`` or ``no checksum``) and ``message``.
    """
    files = [u for u in store.list_files(dataset_uri) if ".corrupt-" not in u.rsplit("/", 1)[-1]]
    present = set(files)
    checked = sorted({u[:-len(CHECKSUM_SUFFIX)] for u in files if u.endswith(CHECKSUM_SUFFIX)}
                     | {u for u in files if "/shards/" in u and not u.endswith(CHECKSUM_SUFFIX)})
    out = []
    for uri in checked:
        if uri not in present:
            out.append({"uri": uri, "status": "missing", "message": f"{uri}: a checksum is recorded but the file "
                                                                   f"is gone"})
            continue
        with store.local_copy(uri) as path:
            try:
                check_checksum(uri, path)
                out.append({"uri": uri, "status": "ok", "message": ""})
            except ChecksumError as e:
                out.append({"uri": uri, "status": "corrupt" if e.corrupt else "no checksum", "message": str(e)})
    return out
