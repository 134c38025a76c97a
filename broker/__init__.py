"""Mosquitto brokers of a Nacelle fleet: rendered configuration (cloud broker, regional brokers
bridged to it, TLS listeners and ACLs) and a launcher for local processes used by the simulator
and the tests."""

from broker.acl import PROBE_PREFIX, render_acl
from broker.config import (
    DEFAULT_LIMITS,
    BridgeSettings,
    BridgeTls,
    BrokerLimits,
    BrokerSettings,
    ListenerSecurity,
    render_cloud_config,
    render_regional_config,
)
from broker.launcher import (
    FleetBrokers,
    FleetSecurity,
    Role,
    RunningBroker,
    start_broker,
    start_fleet_brokers,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PROBE_PREFIX",
    "BridgeSettings",
    "BridgeTls",
    "BrokerLimits",
    "BrokerSettings",
    "FleetBrokers",
    "FleetSecurity",
    "ListenerSecurity",
    "Role",
    "RunningBroker",
    "render_acl",
    "render_cloud_config",
    "render_regional_config",
    "start_broker",
    "start_fleet_brokers",
]
