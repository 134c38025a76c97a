"""Mosquitto brokers of a Nacelle fleet: rendered configuration (cloud broker, regional brokers
bridged to it) and a launcher for local processes used by the simulator and the tests."""

from broker.config import (
    DEFAULT_LIMITS,
    BridgeSettings,
    BrokerLimits,
    BrokerSettings,
    render_cloud_config,
    render_regional_config,
)
from broker.launcher import (
    PROBE_PREFIX,
    FleetBrokers,
    Role,
    RunningBroker,
    start_broker,
    start_fleet_brokers,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PROBE_PREFIX",
    "BridgeSettings",
    "BrokerLimits",
    "BrokerSettings",
    "FleetBrokers",
    "Role",
    "RunningBroker",
    "render_cloud_config",
    "render_regional_config",
    "start_broker",
    "start_fleet_brokers",
]
