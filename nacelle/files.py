"""Durable small-file writes shared by the daemons' state directories."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, on disk before returning: a crash leaves the old content or
    the new, never half of it (the temporary file sits next to it, os.replace is atomic)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
