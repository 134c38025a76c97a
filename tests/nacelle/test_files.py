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


def test_a_temporary_file_left_by_a_crash_is_made_afresh_with_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    stale = tmp_path / ".key.pem.tmp"
    stale.write_bytes(b"half a key")
    stale.chmod(0o666)

    write_atomically(path, b"secret", 0o600)

    assert path.read_bytes() == b"secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not stale.exists()


def test_a_write_that_need_not_be_durable_replaces_the_content_too(tmp_path: Path) -> None:
    path = tmp_path / "scoring.json"
    path.write_bytes(b"old")

    write_atomically(path, b"new" * 10_000, durable=False)

    assert path.read_bytes() == b"new" * 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["scoring.json"]
