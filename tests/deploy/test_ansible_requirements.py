"""deploy/ansible installs pinned requirements (roles/nacelle/files/requirements.txt, written by
scripts/lock_requirements.py): they must pin every runtime dependency of pyproject.toml except
torch, within its range, and the roles' torch must be pyproject's."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "ansible" / "roles" / "nacelle" / "files" / "requirements.txt"
DEFAULTS = REPO / "deploy" / "ansible" / "roles" / "nacelle" / "defaults" / "main.yml"


def _dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def _pins() -> dict[str, str]:
    lines = [line.strip() for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    pins = {}
    for line in lines:
        name, _, version = line.partition("==")
        assert version, f"{line!r} is not pinned (name==version)"
        pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_dependency_but_torch_is_pinned_within_its_range() -> None:
    pins = _pins()
    dependencies = _dependencies()

    missing = sorted(set(dependencies) - {"torch"} - set(pins))
    outside = sorted(name for name, r in dependencies.items() if name in pins and pins[name] not in r.specifier)
    assert missing == [], f"not in {LOCK.name}: {missing} (run scripts/lock_requirements.py)"
    assert outside == [], f"pinned outside pyproject's range: {outside} (run scripts/lock_requirements.py)"
    assert "torch" not in pins  # installed on its own, from nacelle_torch_requirement


def test_the_roles_install_pyprojects_torch() -> None:
    defaults = yaml.safe_load(DEFAULTS.read_text())

    assert Requirement(defaults["nacelle_torch_requirement"]) == _dependencies()["torch"]
