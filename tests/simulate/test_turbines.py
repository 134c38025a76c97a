"""simulate.turbines: the fleet a benchmark or a study rebuilds is the one `nacelle simulate`
creates — the same node ids, regions and order, so `fleet_profile` indices name the same turbines."""

from __future__ import annotations

from pathlib import Path

import pytest

from nacelle.keys import create_fleet, region_names, split_turbines
from simulate.turbines import fleet_members, fleet_profile


@pytest.mark.parametrize(("turbines", "regions"), [(7, 3), (4, 1)])
def test_members_are_the_registrys_nodes_in_the_simulators_order(tmp_path: Path, turbines: int, regions: int) -> None:
    names = region_names(regions)

    registry = create_fleet(tmp_path / "fleet", split_turbines(turbines, names))

    expected = [
        (member.member_id, member.region, names.index(member.region))
        for member in sorted(registry.nodes.values(), key=lambda m: m.member_id)
    ]
    assert fleet_members(turbines, regions) == expected


def test_profiles_differ_by_turbine_and_fleet_seed_and_follow_the_regions_regime() -> None:
    offshore, onshore = fleet_profile(0, 0, 0), fleet_profile(0, 1, 1)

    assert offshore.regime.name == "offshore" and onshore.regime.name == "onshore"
    assert fleet_profile(0, 0, 0) == offshore
    assert fleet_profile(1, 0, 0) != offshore
