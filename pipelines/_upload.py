"""Compile the pipelines with one cluster profile and upload each as one named version to a Kubeflow
Pipelines API: ``micropipe upload``, which the Helm chart's hook Job runs after every install, upgrade
and rollback (with version ``<chart version>-r<release revision>``).

The server side, token included, is :mod:`pipelines._server`, shared with ``micropipe submit``: a
pipeline the server lacks is created, a version it has already is left as it is (so a retried Job
neither fails nor duplicates).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pipelines import _kfp, _server

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Package:
    """A compiled pipeline and the name it gets on the server."""

    pipeline: str
    """micropipe's name of the pipeline, e.g. ``ve_generation``."""
    path: Path
    name: str
    """Name on the server: the prefix and the pipeline's ``NAME``, e.g. ``team-a-ve-generation``."""
    description: str


def compile_all(profile: _kfp.Profile, names: Sequence[str] | None = None, out: Path = Path("build/pipelines"),
                prefix: str = "") -> list[Package]:
    """Compile pipelines ``names`` (default: all) with ``profile`` into ``out``.

    An unknown name is a ``ValueError`` listing the valid ones, raised before anything is compiled.
    """
    import pipelines

    modules = {name: pipelines.load(name) for name in (names or pipelines.PIPELINES)}
    return [Package(pipeline=name, path=_kfp.compile_pipeline(name, profile, out), name=f"{prefix}{module.NAME}",
                    description=module.DESCRIPTION) for name, module in modules.items()]


def upload_all(kfp_client: Any, host: str, packages: Iterable[Package], version: str,
               namespace: str | None = None) -> Iterator[tuple[Package, _server.Upload | Exception]]:
    """Upload each package as version ``version`` (:func:`pipelines._server.upload_version`), yielding it
    with what happened as soon as it is done.

    A package the server refuses yields the error (a ``RuntimeError`` or ``ValueError`` with one line to
    print) instead of stopping the others, so one run reports every pipeline.
    """
    for package in packages:
        try:
            result: _server.Upload | Exception = _server.upload_version(
                kfp_client, host, package.path, package.name, version, package.description, namespace=namespace)
        except (RuntimeError, ValueError) as err:
            log.debug("upload of %s failed", package.name, exc_info=True)
            result = err
        yield package, result
