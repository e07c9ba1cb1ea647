"""Direct I/O (O_DIRECT): disk reads and writes that bypass the page cache.

A backup reads each block of a disk once and a restore writes it once: caching either only
costs the CPU the page cache's per-page work (which, for multi-GiB streams, rivalled
decompression and varied tenfold with memory pressure; bench/README.md) and evicts pages other
programs use. Direct I/O needs offsets, lengths and memory aligned to the device's block size:
callers use ``aligned_buffer`` and fall back to ordinary I/O for what is not aligned, or when
the filesystem refuses (EINVAL).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import platform

ALIGN = 4096  # covers devices with 512-byte and 4 KiB logical blocks
MIN_DIRECT = 64 * 1024  # smaller files: not worth a second open


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


_SYS_CACHESTAT = 451 if platform.machine() in ("x86_64", "aarch64") else None
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
except OSError:
    _libc = None


def cached_share(fd: int, offset: int, length: int) -> float | None:
    """The share of ``[offset, offset + length)`` of a file in the page cache, without reading
    it (cachestat(2), Linux 6.5+); None where that cannot be told."""
    if _SYS_CACHESTAT is None or _libc is None or length <= 0:
        return None
    stat = _CacheStat()
    if _libc.syscall(
        _SYS_CACHESTAT, fd, ctypes.byref(_Range(offset, length)), ctypes.byref(stat), 0
    ):
        return None
    return min(stat.nr_cache * mmap.PAGESIZE / length, 1.0)


def aligned_buffer(size: int) -> memoryview:
    """Page-aligned memory (an anonymous mmap), as direct I/O needs."""
    return memoryview(mmap.mmap(-1, size))


def open_direct(path: str, flags: int) -> int | None:
    """A second descriptor of ``path`` with O_DIRECT, or None where that is not supported."""
    try:
        return os.open(path, flags | os.O_DIRECT)
    except OSError:  # EINVAL: no direct I/O on this filesystem (tmpfs before Linux 6.6, ...)
        return None


def is_aligned(buffer: memoryview) -> bool:
    """True if ``buffer`` starts at an aligned address (read-only buffers are never used)."""
    if buffer.readonly or not buffer.contiguous:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer)) % ALIGN == 0


def read_whole(path: str | os.PathLike[str], buffer: memoryview) -> int | None:
    """Read the file ``path`` into ``buffer`` with direct I/O; its size, or None where direct
    I/O cannot be used, the file does not fit, or it is in the page cache already (the caller
    then reads it the ordinary way: a copy from the cache is cheaper than the disk)."""
    if not is_aligned(buffer):
        return None
    fd = open_direct(os.fspath(path), os.O_RDONLY)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        rounded = -(-size // ALIGN) * ALIGN
        if size < MIN_DIRECT or rounded > len(buffer):
            return None
        if (cached_share(fd, 0, size) or 0.0) >= 0.5:
            return None
        done = 0
        while done < size:
            got = os.preadv(fd, [buffer[done:rounded]], done)
            if not got or got % ALIGN:
                done += got
                break
            done += got
        return done if done == size else None
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return None
    finally:
        os.close(fd)
