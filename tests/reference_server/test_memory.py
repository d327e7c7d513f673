from __future__ import annotations

import platform
import resource

import pytest

from reference_server.memory import release_free_memory


def _resident_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_memory_goes_back_to_the_os() -> None:
    # Mid-sized blocks come from the heap, not from mmap; with a block still in use above
    # them, freeing them cannot shrink the heap, so they stay resident until trimmed.
    blocks = [bytearray(64 * 1024) for _ in range(2000)]
    for block in blocks:
        block[::4096] = b"\x01" * len(block[::4096])
    pin = bytearray(64 * 1024)
    held = _resident_kb()
    del blocks, block
    assert _resident_kb() > held - 16 * 1024, "freed without a trim: the test proves nothing"
    release_free_memory()
    assert _resident_kb() < held - 64 * 1024  # at least 64 MiB of the 125 MiB came back
    assert len(pin) == 64 * 1024
