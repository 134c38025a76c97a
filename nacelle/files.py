"""Durable small-file writes shared by the daemons' state directories, keys and configs."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Replace `path` with `data`, on disk before returning: a crash leaves the old content or
    the new, never half of it (the temporary file sits next to it, os.replace is atomic). The
    temporary file is created afresh with `mode` (less the umask), so a key is never readable by
    others, not even for a moment."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
