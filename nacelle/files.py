"""Durable small-file writes shared by the daemons' state directories, keys and configs."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o666, *, durable: bool = True) -> None:
    """Replace `path` with `data`, on disk before returning: a crash leaves the old content or
    the new, never half of it (the temporary file sits next to it, os.replace is atomic). The
    temporary file is created afresh with `mode` (less the umask), so a key is never readable by
    others, not even for a moment. `durable=False` skips the fsync: still never half a file
    after the process crashes, but a power cut may lose the newest content (an edge node's
    state files, rewritten several times a round, never were fsynced)."""
    temporary = f"{path.parent}/.{path.name}.tmp"  # plain os calls: a simulated fleet makes tens of thousands a round
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(temporary, flags, mode)
    except FileExistsError:  # left by a crash, maybe with another mode: made afresh
        os.unlink(temporary)
        fd = os.open(temporary, flags, mode)
    try:
        unwritten = memoryview(data)
        while unwritten:
            unwritten = unwritten[os.write(fd, unwritten) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
