"""Build the Nacelle wheel that deploy/ansible installs on every host, reproducibly.

    python scripts/build_wheel.py --out DIR

The same sources give the same bytes (SOURCE_DATE_EPOCH fixes the timestamps in the archive), so
Ansible's copy to the hosts changes, and the services restart, only when the code changed. The
build runs on a copy of what the wheel holds (pyproject.toml, README.md and the packages of
`tool.setuptools.packages.find`), never in the working tree: setuptools' build/ directory there
would carry modules deleted since into the wheel. Prints `changed: PATH` when DIR/NAME.whl was
written, `ok: PATH` when it already held these bytes; sources unchanged since the last build
(their digest is kept beside the wheel) are not built again.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Any fixed time does: 1980-01-01, the earliest a zip archive can record.
SOURCE_DATE_EPOCH = "315532800"


def package_dirs(root: Path) -> list[Path]:
    """Top-level directories the wheel's package patterns (`nacelle*`, ...) match."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        path
        for path in root.iterdir()
        if path.is_dir() and (path / "__init__.py").exists() and any(fnmatch.fnmatch(path.name, p) for p in patterns)
    )


def source_files(root: Path) -> list[Path]:
    """Every file the wheel is built from, relative to `root`."""
    files = [Path("pyproject.toml"), Path("README.md")]
    for package in package_dirs(root):
        files += sorted(
            path.relative_to(root)
            for path in package.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        )
    return files


def digest(root: Path, files: list[Path]) -> str:
    sha = hashlib.sha256()
    for name in files:
        sha.update(f"{name}\0".encode())
        sha.update(hashlib.sha256((root / name).read_bytes()).digest())
    return sha.hexdigest()


def build(root: Path, out: Path) -> tuple[Path, bool]:
    """Build into `out` unless the sources are those of the wheel there; (the wheel, whether
    its bytes changed)."""
    files = source_files(root)
    inputs = digest(root, files)
    stamp = out / ".sources.sha256"
    if stamp.exists():
        recorded, _, name = stamp.read_text().strip().partition(" ")
        if recorded == inputs and (out / name).exists():
            return out / name, False
    with tempfile.TemporaryDirectory(prefix="nacelle-wheel-") as temporary:
        source = Path(temporary) / "src"
        for name in files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
        dist = Path(temporary) / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist, source],
            check=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            stdout=sys.stderr,
        )
        [wheel] = dist.glob("nacelle-*.whl")
        target = out / wheel.name
        changed = not (target.exists() and target.read_bytes() == wheel.read_bytes())
        out.mkdir(parents=True, exist_ok=True)
        if changed:
            shutil.copyfile(wheel, out / f".{wheel.name}.tmp")
            os.replace(out / f".{wheel.name}.tmp", target)
        stamp.write_text(f"{inputs} {wheel.name}\n")
        return target, changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory the wheel goes to")
    args = parser.parse_args()
    wheel, changed = build(ROOT, args.out.resolve())
    print(f"{'changed' if changed else 'ok'}: {wheel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
