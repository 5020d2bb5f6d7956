"""Backends that drive external binaries (DREAM.3D's PipelineRunner, DAMASK_grid), and the one registry that
says which backends exist for a task, whether each can run here, and fails with one clear line where not.

Two tasks have backends: ``ve`` (making volume elements: the built-in generator or DREAM.3D) and ``cp`` (crystal
plasticity: the built-in spectral solver or DAMASK_grid). The CLI, the library steps and the components all
choose through :func:`get`, so a new backend is one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
from types import ModuleType

log = logging.getLogger(__name__)


class BackendUnavailable(FileNotFoundError):
    """A backend's binary is not installed here (the message says where it was looked for)."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """One way of doing a task.

    Attributes
    ----------
    task : {'ve', 'cp'}
    name : str
        The name users pass (``backend: dream3d``, ``--backend damask``).
    description : str
    module : str or None
        The :mod:`micropipe.backends` module that drives an external binary (it defines ``find_binary()`` and
        ``NOT_FOUND``); None for a built-in backend, which runs everywhere.
    """

    task: str
    name: str
    description: str
    module: str | None = None

    @property
    def builtin(self) -> bool:
        return self.module is None

    def load(self) -> ModuleType | None:
        """The driver module (imported on first use), or None for a built-in backend."""
        return None if self.module is None else importlib.import_module(self.module)

    def available(self) -> bool:
        """Whether the backend can run here (its binary is found)."""
        driver = self.load()
        return driver is None or driver.find_binary() is not None

    def require(self) -> ModuleType | None:
        """:meth:`load`, after checking that the binary is there: fail fast, before any work.

        Raises
        ------
        BackendUnavailable
            The binary is not found; the message says where it was looked for and what to use instead.
        """
        driver = self.load()
        if driver is not None and driver.find_binary() is None:
            raise BackendUnavailable(driver.NOT_FOUND)
        return driver


TASKS = {"ve": "VE generator", "cp": "CP solver"}
"""What each task's backends are called in messages."""

BACKENDS: dict[str, dict[str, Backend]] = {
    "ve": {
        "builtin": Backend("ve", "builtin", "the built-in Laguerre-tessellation generator (micropipe.ve.generator)"),
        "dream3d": Backend("ve", "dream3d", "DREAM.3D's PipelineRunner (the dream3d image)",
                           "micropipe.backends.dream3d"),
    },
    "cp": {
        "builtin": Backend("cp", "builtin", "the built-in spectral solver (micropipe.spectral.cp)"),
        "damask": Backend("cp", "damask", "DAMASK_grid (the damask image)", "micropipe.backends.damask_grid"),
    },
}
"""Every backend by task and name."""


def names(task: str) -> tuple[str, ...]:
    """Backend names of ``task`` (``'ve'`` or ``'cp'``), the built-in one first."""
    return tuple(BACKENDS[task])


def get(task: str, name: str) -> Backend:
    """The backend ``name`` of ``task``; a ``ValueError`` listing the valid names otherwise."""
    if task not in BACKENDS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(BACKENDS)}")
    if name not in BACKENDS[task]:
        raise ValueError(f"backend: unknown {TASKS[task]} {name!r}; expected one of {', '.join(BACKENDS[task])}")
    return BACKENDS[task][name]


def find_executable(name: str, env_var: str) -> str | None:
    """Path of the executable ``name``: ``$env_var`` if set (a path or a name on PATH), else from PATH."""
    if env := os.environ.get(env_var):
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        found = shutil.which(env)
        if found:
            return found
        log.warning("%s=%s is not an executable; looking for %s on PATH", env_var, env, name)
    return shutil.which(name)


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a program's output, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:])
