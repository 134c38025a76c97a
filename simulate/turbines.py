"""The turbines of a simulated fleet: node ids and regions in the order `nacelle simulate`
numbers them, and each turbine's vibration profile. Pure: no keys or files are made here, so
benchmarks and studies can rebuild the simulator's fleet without creating it."""

from __future__ import annotations

from typing import NamedTuple

from nacelle.keys import node_id, region_names, split_turbines
from simulate.vibration import TurbineProfile, turbine_profile


class FleetMember(NamedTuple):
    node_id: str
    region: str
    region_index: int  # which wind regime the region has (simulate.vibration.REGIMES, cycled)


def fleet_members(turbines: int, regions: int) -> list[FleetMember]:
    """Every turbine in node id order, the order the simulator gives `fleet_profile` indices in."""
    names = region_names(regions)
    return sorted(
        FleetMember(node_id(region, i), region, names.index(region))
        for region, count in split_turbines(turbines, names).items()
        for i in range(1, count + 1)
    )


def fleet_profile(fleet_seed: int, index: int, region_index: int) -> TurbineProfile:
    """The vibration profile of the `index`-th turbine (in node id order) of a simulated fleet."""
    return turbine_profile(fleet_seed * 1_000_003 + index, region_index)
