"""The run directory: its file names, reading its records, and its one-writer lock.

A run directory holds ``config.toml``, ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (the last state),
``selected.pt`` (the state at the epoch of best validation accuracy, with a validation split), ``summary.json`` and,
while a process trains into it, ``run.lock``.

**One writer.** :class:`RunDirLock` holds an exclusive advisory lock (``fcntl.flock``) on ``run.lock`` for the whole
run, and writes into it who holds it: process id, host, start time and command. A second ``sparsesnn train`` (fresh
or ``--resume``) into a held directory is refused with :class:`RunDirBusyError`, which names that process. The kernel
releases a lock when its process dies, however it dies (SIGKILL included), so a lock cannot outlive its holder on
this host; what a killed holder leaves is the record in ``run.lock``: the next writer finds it with the lock free,
warns that the directory was left by a process that is gone (and whether that pid is still alive, e.g. reused), and
takes over. A clean exit empties the record. The file itself is never deleted: deleting a lock file lets two
processes hold locks on two different files of the same name. ``flock`` is per host: on a network file system
shared by several hosts it may not exclude a writer on another host (the record still names it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sparsesnn.core.errors import CheckpointError

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
SELECTED_FILE = "selected.pt"  # the state at the epoch of best validation accuracy (data.validation_samples > 0)
LOCK_FILE = "run.lock"
TENSORBOARD_DIR = "tb"
#: what ``sparsesnn train`` writes into a run directory (besides ``run.lock``): a fresh run refuses a directory that
#: holds any of them unless asked to set them aside (:func:`set_aside`)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_FILE, SELECTED_FILE, TENSORBOARD_DIR)
#: the folder :func:`set_aside` moves a previous run's files into: ``previous-<YYYYmmdd-HHMMSS>``
PREVIOUS_PREFIX = "previous-"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run: its ``config.toml`` and a ``metrics.jsonl`` (possibly still empty)."""
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).exists()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl``, in order (blank lines skipped); a line that is not JSON is an error
    naming the file and the line."""
    path = run_dir / METRICS_FILE
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise CheckpointError(f"{path}: line {i + 1} is not JSON") from None
    return records


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` (written when a run finishes), or None where there is none yet or it does not read."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def run_files_in(run_dir: Path, exports: tuple[str, ...] = ()) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir``, then of the files there whose name starts with
    ``model`` and ends with one of ``exports`` (a previous run's model exports)."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if exports and run_dir.is_dir():
        present += sorted(
            p.name for p in run_dir.iterdir() if p.is_file() and p.name.startswith("model") and p.name.endswith(exports)
        )
    return present


def set_aside(run_dir: Path, exports: tuple[str, ...] = ()) -> Path | None:
    """Move what a previous run (or the user) left in ``run_dir`` (:func:`run_files_in`) into a new folder
    ``run_dir/previous-<time>/``; returns that folder, or None when there was nothing to move. Nothing is deleted, and
    ``run.lock`` stays where it is (a lock file is never moved or deleted: see the module docstring)."""
    names = run_files_in(run_dir, exports)
    if not names:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir / f"{PREVIOUS_PREFIX}{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = run_dir / f"{PREVIOUS_PREFIX}{stamp}-{n}"
    target.mkdir()
    for name in names:
        os.replace(run_dir / name, target / name)
    return target


class RunDirBusyError(CheckpointError):
    """Another process is training into this run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _command_line() -> str:
    """This process's command, short: ``sparsesnn train ...`` for the command line however it was started."""
    if not sys.argv or not sys.argv[0]:
        return "python"
    program = Path(sys.argv[0])
    name = "sparsesnn" if program.name == "__main__.py" and program.parent.name == "sparsesnn" else program.name
    return " ".join([name, *sys.argv[1:]])


def describe_holder(holder: dict[str, Any]) -> str:
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    command = holder.get("command") or "?"
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {when}: {command})"


class RunDirLock:
    """The exclusive writer lock of one run directory, held from :meth:`acquire` to :meth:`release` (or the end of
    a ``with`` block). Not reentrant: one holder per process and directory."""

    def __init__(self, run_dir: str | Path, name: str = LOCK_FILE) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / name  # a sweep directory's lock is its own file (sweep.LOCK_FILE)
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> RunDirLock:
        """Take the lock or raise :class:`RunDirBusyError` naming its holder; warn when taking over from a holder
        that died without releasing it."""
        if self._handle is not None:
            raise RuntimeError(f"{self.path}: this lock is already held by this object")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory lock; the record still names the writer
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._read(handle)
                handle.close()
                raise self._busy(holder) from None
        previous = self._read(handle)
        if previous:
            pid = previous.get("pid")
            same_host = previous.get("host") == socket.gethostname()
            state = (
                "a process with that id is running now, a reused id"
                if same_host and isinstance(pid, int) and _pid_alive(pid)
                else "no longer running"
            )
            warnings.warn(
                f"{self.path}: left by {describe_holder(previous)}, which ended without releasing it ({state}: "
                "killed or crashed); taking the run directory over",
                UserWarning,
                stacklevel=3,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": _command_line(),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Empty the record and let go of the lock (a no-op when not held)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        finally:
            handle.close()  # closing the file releases the flock

    def check_free(self) -> None:
        """Raise :class:`RunDirBusyError` when another writer holds the directory now: a check for a clear message
        before any work (it writes nothing; :meth:`acquire` is what excludes)."""
        if not self.path.is_file():
            return
        try:
            import fcntl
        except ImportError:
            return
        with open(self.path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise self._busy(self._read(handle)) from None
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def holder(self) -> dict[str, Any] | None:
        """The record of the process holding the lock now (another process, or this one through another object),
        or None when it is free. Writes nothing."""
        if not self.path.is_file():
            return None
        try:
            self.check_free()
        except RunDirBusyError:
            with open(self.path, encoding="utf-8") as handle:
                return self._read(handle) or {"pid": "?"}
        return None

    def _busy(self, holder: dict[str, Any]) -> RunDirBusyError:
        if self.path.name != LOCK_FILE:  # another directory's lock (a sweep's): its owner words the advice
            return RunDirBusyError(f"{self.path} is held by {describe_holder(holder)}")
        return RunDirBusyError(
            f"{self.run_dir} is being written by {describe_holder(holder)}; a second writer would mix the two runs' "
            "metrics and checkpoints. Wait for it to finish, stop it (it checkpoints on Ctrl-C or SIGTERM, then "
            "continue with --resume), or train into another --run-dir"
        )

    @staticmethod
    def _read(handle: IO[str]) -> dict[str, Any]:
        handle.seek(0)
        text = handle.read().strip()
        if not text:
            return {}
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            return {"pid": "?", "command": f"an unreadable record: {text[:80]!r}"}
        return record if isinstance(record, dict) else {}

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
