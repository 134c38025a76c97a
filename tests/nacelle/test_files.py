"""nacelle.files.write_atomically: the new content replaces the old whole, and no temporary
file is left behind."""

from __future__ import annotations

from pathlib import Path

from nacelle.files import write_atomically


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    write_atomically(path, b"new")

    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_creates_a_missing_file(tmp_path: Path) -> None:
    write_atomically(tmp_path / "fresh", b"x")

    assert (tmp_path / "fresh").read_bytes() == b"x"
