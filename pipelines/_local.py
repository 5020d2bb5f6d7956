"""Local runs, readable: the KFP local runner's logs go to a file, each step is reported as it finishes.

kfp 2.17.3's local runner writes everything through this process's Python streams: its own messages through
``logging`` handlers it makes on ``sys.stdout`` while a task runs (and the root logger's handlers otherwise),
and each task's subprocess output line by line through ``print``, which it swaps for an indenting one while
the task runs; ``dsl.ParallelFor`` iterations run in threads. :func:`capture` therefore swaps ``sys.stdout``,
``sys.stderr`` and the root logger's handlers for one writer that appends whole lines to the log file (colour
codes stripped), and restores all of them, ``builtins.print`` included, afterwards. Both of kfp's orchestrators
run every task through ``task_executor.execute_single_task`` in the thread that streams its output, so a thin
wrapper around it gives each step its name, loop iteration, status, time and its own lines.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import dataclasses
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

TAIL_LINES = 30
"""Lines of a failed step's log shown on the console."""

_KEEP = 400
"""Lines of each step's log kept in memory for its tail (its full log is in the log file)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Unavailable|Locked|Failed)\b.*:")
# kfp's own lines (its MillisecondFormatter) and separators: not part of a task's output. Threads racing on kfp's
# indenting print can indent them too.
_KFP_LINE = re.compile(r"^\s*(\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - |-{20,}$)")
_EXECUTOR_PREFIX = re.compile(r"^\[KFP Executor [^\]]*\]:\s*")
_EXECUTOR_OWN = re.compile(r"(Looking for component|Loading KFP component|Got executor_input|Wrote executor output)")
_ITERATION = re.compile(r"-iteration-(\d+)")


def plain(text: str) -> str:
    """``text`` without terminal colour codes (kfp colours task names and statuses in its messages)."""
    return _ANSI.sub("", text)


@dataclasses.dataclass
class Step:
    """One task of a local run: ``name`` is the task's name plus ``[i]`` for iteration ``i`` of a loop."""

    name: str
    started: float
    status: str = "running"
    """``running``, ``succeeded`` or ``failed``."""
    seconds: float = 0.0
    lines: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=_KEEP))

    def error(self) -> str:
        """The error the task ended with: the last ``SomeError: message`` line it printed (a traceback's last
        line), else its last line."""
        tail = self.tail(_KEEP)
        found = next((line.strip() for line in reversed(tail) if _ERROR_LINE.match(line.strip())), None)
        return found or (tail[-1].strip() if tail else "")

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` lines the task itself printed (kfp's own lines and trailing blanks left out),
        with the indentation kfp added removed."""
        own = [line for line in self.lines if not _KFP_LINE.match(line)]
        while own and not own[-1].strip():
            own.pop()
        own = own[-n:]
        indent = min((len(line) - len(line.lstrip()) for line in own if line.strip()), default=0)
        return [line[indent:] for line in own]

    def last_line(self) -> str:
        """The task's latest log message (a CP increment, a training epoch) without the KFP executor's prefix and
        other than the executor's own messages, for a progress display; '' before there is one."""
        for line in reversed(self.lines):
            prefix = _EXECUTOR_PREFIX.match(line.strip())
            if prefix:
                message = line.strip()[prefix.end():]
                if not _EXECUTOR_OWN.match(message):
                    return message
        return ""


class PipelineFailed(RuntimeError):
    """A local run failed; ``failed`` are the steps that failed (in the order they ended), ``log_path`` the log."""

    def __init__(self, message: str, failed: list[Step], log_path: Path):
        super().__init__(message)
        self.failed = failed
        self.log_path = log_path


class _LineWriter(io.TextIOBase):
    """A text stream that writes whole lines to ``file`` (colour codes stripped) and to the current step of the
    writing thread; with ``echo`` also everything, unchanged, there."""

    def __init__(self, file: TextIO, steps: _Steps, echo: TextIO | None):
        super().__init__()
        self._file, self._steps, self._echo = file, steps, echo
        self._partial: dict[int, str] = {}
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._echo is not None:
            self._echo.write(text)
        tid = threading.get_ident()
        with self._lock:
            *lines, self._partial[tid] = (self._partial.get(tid, "") + text).split("\n")
            step = self._steps.current.get(tid)
            for line in lines:
                line = _ANSI.sub("", line)
                self._file.write(line + "\n")
                if step is not None:
                    step.lines.append(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()
        if self._echo is not None:
            self._echo.flush()

    def finish(self) -> None:
        """Write what any thread left without a final newline."""
        with self._lock:
            for rest in self._partial.values():
                if rest:
                    self._file.write(_ANSI.sub("", rest) + "\n")
            self._partial.clear()
        self.flush()


class _Steps:
    """The steps of one run, updated from kfp's task threads."""

    def __init__(self, on_step: Callable[[Step], None] | None, progress: _Progress | None):
        self.all: list[Step] = []
        """Every step, in the order they started."""
        self.ended: list[Step] = []
        self.current: dict[int, Step] = {}
        self._on_step, self._progress = on_step, progress
        self._lock = threading.Lock()

    def wrap(self, execute: Callable[..., Any]) -> Callable[..., Any]:
        from kfp.local import status

        def execute_single_task(*args: Any, **kwargs: Any) -> Any:
            iterations = _ITERATION.findall(str(kwargs.get("pipeline_resource_name", "")))
            name = str(kwargs.get("task_name", "?")) + (f" [{', '.join(iterations)}]" if iterations else "")
            step = Step(name=name, started=time.monotonic())
            tid = threading.get_ident()
            with self._lock:
                self.all.append(step)
                self.current[tid] = step
            result = None
            try:
                result = execute(*args, **kwargs)
                return result
            finally:
                ok = isinstance(result, tuple) and len(result) == 2 and result[1] == status.Status.SUCCESS
                self._end(step, tid, "succeeded" if ok else "failed")

        return execute_single_task

    def _end(self, step: Step, tid: int, outcome: str) -> None:
        with self._lock:
            step.status, step.seconds = outcome, time.monotonic() - step.started
            self.current.pop(tid, None)
            self.ended.append(step)
        if self._on_step is not None:
            if self._progress is not None:
                with self._progress.paused():
                    self._on_step(step)
            else:
                self._on_step(step)

    def running(self) -> list[Step]:
        with self._lock:
            return [s for s in self.all if s.status == "running"]

    def failed(self) -> list[Step]:
        """The failed steps in the order they ended."""
        with self._lock:
            return [s for s in self.ended if s.status == "failed"]


class _Progress:
    """A one-line display of the running steps on a terminal (tqdm), refreshed twice a second: their names, how
    long they have run, and the latest line of the first one's log (a CP increment, a training epoch)."""

    def __init__(self, stream: TextIO):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=None, bar_format="{desc}", file=stream, leave=False, dynamic_ncols=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._steps: _Steps | None = None
        self._thread = threading.Thread(target=self._run, name="micropipe-progress", daemon=True)

    def start(self, steps: _Steps) -> None:
        self._steps = steps
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            running = self._steps.running() if self._steps else []
            if not running:
                continue
            now = time.monotonic()
            names = ", ".join(f"{s.name} {_clock(now - s.started)}" for s in running)
            last = running[0].last_line()
            with self._lock:
                self._bar.set_description_str(f"  running: {names}" + (f" | {last}" if last else ""), refresh=True)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Clear the line while something else is printed; the next refresh draws it again."""
        with self._lock:
            self._bar.clear()
            yield

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._bar.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


@contextlib.contextmanager
def capture(log_path: Path, *, verbose: bool = False, on_step: Callable[[Step], None] | None = None,
            progress: bool = False) -> Iterator[_Steps]:
    """Send everything the KFP local runner writes in this block to ``log_path``; call ``on_step`` as each
    step ends.

    Parameters
    ----------
    log_path : pathlib.Path
        The log file (created; KFP's messages and every task's output, without colour codes).
    verbose : bool
        Also stream everything to the console, unchanged (as kfp prints it without this).
    on_step : callable, optional
        Called with each :class:`Step` as it ends, from the thread that ran it. ``sys.stdout`` is the log
        then: to reach the console, write to the stream that was ``sys.stdout`` before.
    progress : bool
        Show the running steps on a line of ``sys.stderr`` (for a terminal, never for a log).

    Yields the run's steps (``.all``, ``.failed()``).
    """
    from kfp.local.orchestrator import task_executor

    out, err, print_ = sys.stdout, sys.stderr, builtins.print
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    display = _Progress(err) if progress and not verbose else None
    steps = _Steps(on_step, display)
    execute = task_executor.execute_single_task
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8", buffering=1) as file:
        writer = _LineWriter(file, steps, out if verbose else None)
        handler = logging.StreamHandler(writer)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        sys.stdout = sys.stderr = writer
        root.handlers[:] = [handler]
        task_executor.execute_single_task = steps.wrap(execute)
        if display is not None:
            display.start(steps)
        try:
            yield steps
        finally:
            task_executor.execute_single_task = execute
            if display is not None:
                display.close()
            writer.finish()
            sys.stdout, sys.stderr = out, err
            # kfp swaps builtins.print and the root logger's handlers per task; threads of a ParallelFor race on
            # the swaps and can leave them swapped.
            builtins.print = print_
            root.handlers[:] = handlers
            root.setLevel(level)
