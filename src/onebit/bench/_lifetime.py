"""What one ``onebit bench`` owns for its life: its output folder (an exclusive lock) and its pool workers.

* **The folder.** :class:`OutputLock` holds ``fcntl.flock(LOCK_EX)`` on ``OUT/.lock`` while the suite
  runs and writes its pid there, so a second benchmark on the same folder stops at once with one line
  naming the running one (two would otherwise train every run twice and time each other's load). The
  kernel drops the lock when the holder dies, even by ``kill -9``: a stale ``.lock`` file never blocks.
  A folder that cannot be created or written (read-only, full, a file in the way) is reported as one
  :class:`OutputFolderError` naming it, before any training.
* **The workers.** A ``ProcessPoolExecutor``'s workers block on their call queue forever once the
  coordinating process is gone (they hold both ends of its pipes), so a killed benchmark left them
  running. :func:`die_with_parent`, the pool's initializer, ties each worker's life to its parent:
  on Linux the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, through ctypes),
  elsewhere — or if prctl is unavailable — a daemon thread that waits on the parent's sentinel
  (``multiprocessing.parent_process()``) or polls ``os.getppid()`` and exits the worker when the
  parent is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import OnebitError

__all__ = ["OutputLock", "OutputLockedError", "OutputFolderError", "die_with_parent", "LOCK_FILE"]

LOCK_FILE = ".lock"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class OutputLockedError(OnebitError, RuntimeError):
    """Another ``onebit bench`` is running on the same output folder."""


class OutputFolderError(OnebitError, OSError):
    """The output folder cannot be created or written (read-only, full, a file in the way)."""


def output_folder_error(folder: Path, err: Exception) -> OutputFolderError:
    """One line naming the folder, the OS's (or SQLite's) reason and the fix."""
    reason = (err.strerror if isinstance(err, OSError) else None) or str(err) or type(err).__name__
    filename = getattr(err, "filename", None)
    return OutputFolderError(
        f"cannot write to the output folder {folder} ({reason}"
        + (f": {filename}" if filename and str(filename) != str(folder) else "")
        + "); pass a writable folder with free space as --out"
    )


class OutputLock:
    """An exclusive lock on ``folder`` (``folder/.lock``) for a ``with`` block; raises
    :class:`OutputLockedError` naming the holder's pid when another process holds it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise output_folder_error(self.folder, err) from None
        try:
            self._acquire(fd)
            os.ftruncate(fd, 0)
            pid = f"{os.getpid()}\n".encode()
            if os.write(fd, pid) != len(pid):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            raise output_folder_error(self.folder, err) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _acquire(self, fd: int) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the folder is not locked there
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLockedError(
                f"{self.folder} is in use by another `onebit bench` (pid {holder}); wait for it to finish, "
                "stop it, or pass another --out"
            ) from None

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # (the file stays: removing it would race a waiting locker)
            os.close(self._fd)  # releases the lock
            self._fd = None


# --------------------------------------------------------------------------------------------------
# Pool workers die with the benchmark
# --------------------------------------------------------------------------------------------------
def die_with_parent(parent_pid: int, death_signal: bool = True) -> None:
    """Pool-worker initializer: this process ends when ``parent_pid`` (the benchmark) ends, however it
    ends. ``death_signal=False`` skips the Linux signal and uses the portable watchdog (for tests)."""
    if not (death_signal and _parent_death_signal()):
        watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _parent_death_signal() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent thread exits; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, interval: float = 0.5) -> threading.Thread:
    """Start a daemon thread that exits this process once ``parent_pid`` is gone: it waits on the
    multiprocessing parent sentinel where there is one (spawned workers), else polls ``os.getppid()``."""
    import multiprocessing as mp

    parent = mp.parent_process()

    def watch() -> None:
        if parent is not None and parent.pid == parent_pid:
            parent.join()  # returns when the parent's end of the sentinel pipe closes: it died
        else:
            while os.getppid() == parent_pid:
                time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="onebit-parent-watchdog", daemon=True)
    thread.start()
    return thread
