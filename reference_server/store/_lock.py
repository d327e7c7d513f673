"""The lock that keeps two server processes off one state directory.

flock, not a pid file: the kernel drops the lock when its holder dies, kill -9 included,
so a crashed server never leaves a stale lock behind, and the file's content (the holder's
pid) is only there to name the holder in the error message.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from reference_server.store.errors import StoreLocked


def acquire(directory: Path) -> int:
    """Lock `directory` for this process; the lock's file descriptor, to pass to release."""
    path = directory / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StoreLocked(directory, f"pid {holder}" if holder else "") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def release(fd: int) -> None:
    # Closing the descriptor drops the flock.
    os.close(fd)
