"""TLS settings of a broker endpoint (nacelle.config.BrokerEndpoint) and the client context built
from them (nacelle.tls): validated at start, errors naming the field."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from edge_node.config import EdgeConfig
from nacelle.config import BrokerEndpoint, ConfigError, load_config, write_config
from nacelle.pki import TlsLayout, ensure_pki
from nacelle.tls import client_context

EDGE = {
    "node_id": "north-t00001",
    "region": "north",
    "registry_path": "/etc/nacelle/registry.json",
    "private_key_path": "/etc/nacelle/north-t00001.pem",
    "data_dir": "/var/lib/nacelle",
}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> TlsLayout:
    layout = TlsLayout(tmp_path_factory.mktemp("tls") / "tls")
    ensure_pki(layout, ["north-t00001", "north-t00002"], {})
    return layout


def _tls(layout: TlsLayout, identity: str = "north-t00001") -> dict[str, str]:
    return {
        "ca_file": str(layout.ca_cert),
        "cert_file": str(layout.cert(identity)),
        "key_file": str(layout.key(identity)),
    }


def _load_error(tmp_path: Path, broker: dict[str, object]) -> str:
    path = tmp_path / "edge.toml"
    write_config(path, {**EDGE, "broker": broker})
    with pytest.raises(ConfigError) as refused:
        load_config(EdgeConfig, path)
    return str(refused.value)


def test_tls_fields_load_from_the_broker_table(tmp_path: Path, layout: TlsLayout) -> None:
    path = tmp_path / "edge.toml"
    write_config(path, {**EDGE, "broker": {"host": "127.0.0.1", "port": 8883, **_tls(layout)}})
    broker = load_config(EdgeConfig, path).broker
    assert broker.tls and broker.cert_file == layout.cert("north-t00001")
    assert not BrokerEndpoint().tls  # plain TCP unless a CA is given


def test_a_tls_file_can_come_from_the_environment(
    tmp_path: Path, layout: TlsLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "edge.toml"
    write_config(path, {**EDGE, "broker": _tls(layout)})
    monkeypatch.setenv("NACELLE_EDGE_BROKER__CERT_FILE", str(layout.cert("north-t00002")))
    monkeypatch.setenv("NACELLE_EDGE_BROKER__KEY_FILE", str(layout.key("north-t00002")))
    assert load_config(EdgeConfig, path).broker.cert_file == layout.cert("north-t00002")


def test_a_missing_tls_file_names_the_field(tmp_path: Path, layout: TlsLayout) -> None:
    message = _load_error(tmp_path, {**_tls(layout), "key_file": str(tmp_path / "nope.key")})
    assert "broker.key_file" in message and "file" in message


def test_half_a_client_certificate_is_refused(tmp_path: Path, layout: TlsLayout) -> None:
    tls = _tls(layout)
    message = _load_error(tmp_path, {"ca_file": tls["ca_file"], "cert_file": tls["cert_file"]})
    assert "cert_file and key_file go together" in message
    message = _load_error(tmp_path, {"cert_file": tls["cert_file"], "key_file": tls["key_file"]})
    assert "cert_file needs ca_file" in message


def test_client_context_verifies_the_broker_and_presents_the_certificate(layout: TlsLayout) -> None:
    context = client_context(BrokerEndpoint(**_tls(layout)))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(BrokerEndpoint()) is None


def test_client_context_names_the_field_of_an_unusable_file(tmp_path: Path, layout: TlsLayout) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"broker\.ca_file"):
        client_context(BrokerEndpoint(ca_file=not_pem))
    # Another identity's key does not fit this certificate.
    mismatched = {**_tls(layout), "key_file": str(layout.key("north-t00002"))}
    with pytest.raises(ConfigError, match=r"broker\.cert_file .* broker\.key_file"):
        client_context(BrokerEndpoint(**mismatched))
