"""Backends that drive external binaries (DREAM.3D's PipelineRunner, DAMASK_grid): shared helpers."""

from __future__ import annotations

import logging
import os
import shutil

log = logging.getLogger(__name__)


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
