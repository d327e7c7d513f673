"""Small file-system helpers with the durability steps spelled out.

A rename is atomic but not durable on its own: after a power loss the directory may still
name the old file (or none). Each helper therefore fsyncs the file before the rename that
publishes it, and the directory after, which is the sequence POSIX file systems need for a
new name to survive a crash with its contents.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Read size for streaming: large enough for throughput, small enough that memory does not
#: depend on the blob size.
STREAM_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create a directory and its missing parents, each made durable in its parent."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return  # created meanwhile by another thread, which made it durable
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of `data` at `offset` (a single pwrite may write less than asked)."""
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], offset + done)


def hash_file(path: Path) -> tuple[bytes, int]:
    """SHA-256 and length of a file, read in fixed-size pieces into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(STREAM_CHUNK)
    view = memoryview(buffer)
    total = 0
    with path.open("rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
            total += count
    return digest.digest(), total


def size_or_none(path: Path) -> int | None:
    """The size of a file, or None when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
