"""Rendered mosquitto.conf text and limit validation; no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

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
from wire.topics import GLOBAL_FILTER, RegionTopics


def _settings(limits: BrokerLimits = DEFAULT_LIMITS) -> BrokerSettings:
    return BrokerSettings(
        port=18831,
        data_dir=Path("/srv/nacelle/north/data"),
        log_path=Path("/srv/nacelle/north/mosquitto.log"),
        limits=limits,
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_regional_config_bridges_to_the_cloud_broker() -> None:
    bridge = BridgeSettings(region="north", cloud_host="10.0.0.5", cloud_port=18830)
    lines = _lines(render_regional_config(_settings(), bridge))
    north = RegionTopics("north")

    for expected in (
        "listener 18831 127.0.0.1",
        "allow_anonymous true",
        "connection nacelle-bridge-north",
        "clientid nacelle-bridge-north",
        "address 10.0.0.5:18830",
        "bridge_protocol_version mqttv311",
        "try_private true",
        "cleansession false",
        "restart_timeout 1 10",
        "persistence true",
        "persistence_location /srv/nacelle/north/data/",
        "log_dest file /srv/nacelle/north/mosquitto.log",
    ):
        assert expected in lines
    topic_lines = [line for line in lines if line.startswith("topic ")]
    assert topic_lines == [
        f"topic {GLOBAL_FILTER} in 1",
        f"topic {north.partial} out 1",
        f"topic {north.alert_filter} out 1",
    ]
    # mosquitto reads a single type per log_type line.
    assert [line for line in lines if line.startswith("log_type")] == [
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]


def test_regional_config_bridges_only_its_own_region() -> None:
    bridge = BridgeSettings(region="north", cloud_host="127.0.0.1", cloud_port=18830)
    text = render_regional_config(_settings(), bridge)
    assert "/region/south/" not in text
    assert "/update" not in text
    assert "/status" not in text


def test_cloud_config_has_no_bridge_but_the_same_limits() -> None:
    text = render_cloud_config(_settings())
    lines = _lines(text)
    assert not any(line.startswith(("connection ", "address ", "topic ")) for line in lines)
    assert "max_queued_messages 100000" in lines
    assert "allow_anonymous true" in lines  # no security given: plain TCP on loopback


def test_limits_are_rendered() -> None:
    limits = BrokerLimits(
        max_queued_messages=5000,
        max_inflight_messages=7,
        max_packet_size=65_536,
        persistent_client_expiration="2w",
        autosave_interval_s=30,
    )
    bridge = BridgeSettings(region="north", cloud_host="127.0.0.1", cloud_port=18830)
    lines = _lines(render_regional_config(_settings(limits), bridge))
    for expected in (
        "max_queued_messages 5000",
        "max_inflight_messages 7",
        "max_packet_size 65536",
        "persistent_client_expiration 2w",
        "autosave_interval 30",
        "set_tcp_nodelay true",
    ):
        assert expected in lines


def test_user_line_only_when_given() -> None:
    assert "user " not in render_cloud_config(_settings())
    settings = BrokerSettings(port=1883, data_dir=Path("/d"), log_path=Path("/l"), user="nacelle")
    assert "user nacelle" in _lines(render_cloud_config(settings))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_queued_messages", 0),
        ("max_inflight_messages", 0),
        ("max_packet_size", 19),
        ("max_packet_size", 300_000_000),
        ("persistent_client_expiration", "14 days"),
        ("persistent_client_expiration", "0d"),
        ("autosave_interval_s", -1),
    ],
)
def test_invalid_limits_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BrokerLimits(**{field: value})  # type: ignore[arg-type]


def test_values_that_would_break_the_config_file_are_refused() -> None:
    with pytest.raises(ValueError, match="data_dir"):
        BrokerSettings(port=1883, data_dir=Path("/my data"), log_path=Path("/l"))
    with pytest.raises(ValueError, match="host"):
        BrokerSettings(port=1883, data_dir=Path("/d"), log_path=Path("/l"), host="a\nlistener 1")
    with pytest.raises(ValueError, match="region"):
        BridgeSettings(region="north/#", cloud_host="127.0.0.1", cloud_port=18830)
    with pytest.raises(ValueError, match="port"):
        BrokerSettings(port=0, data_dir=Path("/d"), log_path=Path("/l"))


SECURITY = ListenerSecurity(
    cafile=Path("/srv/fleet/tls/ca.crt"),
    certfile=Path("/srv/fleet/tls/brokers/region-north.crt"),
    keyfile=Path("/srv/fleet/tls/brokers/region-north.key"),
    acl_file=Path("/srv/nacelle/north/acl"),
)


def test_tls_listener_requires_client_certificates_and_applies_the_acl() -> None:
    settings = BrokerSettings(port=8883, data_dir=Path("/d"), log_path=Path("/l"), security=SECURITY)
    lines = _lines(render_cloud_config(settings))
    listener = lines.index("listener 8883 127.0.0.1")
    # Listener options must follow their listener line.
    assert lines[listener + 1 : listener + 10] == [
        "cafile /srv/fleet/tls/ca.crt",
        "certfile /srv/fleet/tls/brokers/region-north.crt",
        "keyfile /srv/fleet/tls/brokers/region-north.key",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "acl_file /srv/nacelle/north/acl",
        "persistence true",
    ]
    assert "allow_anonymous true" not in lines


def test_bridge_authenticates_with_its_own_certificate() -> None:
    tls = BridgeTls(
        cafile=Path("/f/tls/ca.crt"),
        certfile=Path("/f/tls/nacelle-bridge-north.crt"),
        keyfile=Path("/f/tls/nacelle-bridge-north.key"),
    )
    bridge = BridgeSettings(region="north", cloud_host="10.0.0.5", cloud_port=8883, tls=tls)
    settings = BrokerSettings(port=8884, data_dir=Path("/d"), log_path=Path("/l"), security=SECURITY)
    lines = _lines(render_regional_config(settings, bridge))
    connection = lines.index("connection nacelle-bridge-north")
    bridge_lines = lines[connection:]
    for expected in (
        "bridge_cafile /f/tls/ca.crt",
        "bridge_certfile /f/tls/nacelle-bridge-north.crt",
        "bridge_keyfile /f/tls/nacelle-bridge-north.key",
        "bridge_tls_version tlsv1.2",
    ):
        assert expected in bridge_lines
    # The cloud broker's certificate must name the host dialled.
    assert not any(line.startswith("bridge_insecure") for line in lines)
    assert bridge.connection_name == "nacelle-bridge-north"


def test_bridge_without_tls_renders_no_tls_lines() -> None:
    bridge = BridgeSettings(region="north", cloud_host="127.0.0.1", cloud_port=18830)
    assert "bridge_" not in render_regional_config(_settings(), bridge).replace("bridge_protocol_version", "")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "broker.example.com", "::"])
def test_plain_tcp_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="security is required"):
        BrokerSettings(port=1883, data_dir=Path("/d"), log_path=Path("/l"), host=host)
    # With TLS and an ACL any address is fine.
    BrokerSettings(port=1883, data_dir=Path("/d"), log_path=Path("/l"), host=host, security=SECURITY)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_plain_tcp_is_allowed_on_loopback(host: str) -> None:
    BrokerSettings(port=1883, data_dir=Path("/d"), log_path=Path("/l"), host=host)


def test_tls_settings_that_would_break_the_config_file_are_refused() -> None:
    with pytest.raises(ValueError, match="tls_version"):
        ListenerSecurity(
            cafile=Path("/c"), certfile=Path("/c"), keyfile=Path("/k"), acl_file=Path("/a"), tls_version="tlsv1.1"
        )
    with pytest.raises(ValueError, match="keyfile"):
        ListenerSecurity(cafile=Path("/c"), certfile=Path("/c"), keyfile=Path("/my key"), acl_file=Path("/a"))
    with pytest.raises(ValueError, match="certfile"):
        BridgeTls(cafile=Path("/c"), certfile=Path("/c\nbridge_insecure true"), keyfile=Path("/k"))
