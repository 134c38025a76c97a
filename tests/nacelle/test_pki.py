"""The fleet PKI (nacelle.pki, nacelle keys / nacelle pki): who gets a certificate, what is in it,
how its key is stored, and that nothing existing is ever replaced."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

from nacelle.cli import main
from nacelle.keys import (
    OBSERVER_ID,
    PROBE_ID,
    create_fleet,
    ensure_fleet_pki,
    registry_path,
    tls_identities,
    tls_layout,
)
from nacelle.pki import PkiError, TlsLayout, ensure_pki, load_certificate
from wire.registry import FleetRegistry

FLEET = {"north": 2, "south": 1}
NODES = ["north-t00001", "north-t00002", "south-t00001"]


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "fleet"
    create_fleet(directory, FLEET, broker_hosts={"region-north": ["mqtt-north.example.com", "10.0.0.7"]})
    return directory


@pytest.fixture(scope="module")
def layout(fleet_dir: Path) -> TlsLayout:
    return tls_layout(fleet_dir)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _store(layout: TlsLayout) -> Store:
    return Store([load_certificate(layout.ca_cert)])


def test_every_identity_of_the_fleet_has_a_client_certificate(fleet_dir: Path, layout: TlsLayout) -> None:
    registry = FleetRegistry.load(registry_path(fleet_dir))
    expected = {
        "cloud",
        "aggregator-north",
        "aggregator-south",
        "nacelle-bridge-north",
        "nacelle-bridge-south",
        PROBE_ID,
        OBSERVER_ID,
        *NODES,
    }
    assert set(tls_identities(registry)) == expected
    for identity in expected:
        cert = load_certificate(layout.cert(identity))
        assert _cn(cert) == identity  # the broker's username for the ACL
        assert cert.issuer == load_certificate(layout.ca_cert).subject
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_client_certificates_verify_against_the_fleet_ca(layout: TlsLayout) -> None:
    # Web PKI rules but for the SAN, which client certificates do without: the identity is the
    # CN, as mosquitto reads it.
    leaf_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(_store(layout))
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_client_verifier()
    )
    for identity in ("north-t00001", "nacelle-bridge-south", "cloud"):
        verified = verifier.verify(load_certificate(layout.cert(identity)), [])
        assert verified.chain[-1] == load_certificate(layout.ca_cert)


def test_broker_certificates_name_loopback_and_the_given_hosts(layout: TlsLayout) -> None:
    store = _store(layout)
    north = load_certificate(layout.broker_cert("region-north"))
    names = north.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "mqtt-north.example.com"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    ]
    for subject in (DNSName("mqtt-north.example.com"), IPAddress(ipaddress.ip_address("127.0.0.1"))):
        PolicyBuilder().store(store).build_server_verifier(subject).verify(north, [])
    # Host names given for one broker are not in another's certificate.
    cloud = load_certificate(layout.broker_cert("cloud"))
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(DNSName("mqtt-north.example.com")).verify(cloud, [])


def test_the_ca_signs_leaves_only(layout: TlsLayout) -> None:
    ca = load_certificate(layout.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    leaf = load_certificate(layout.cert("north-t00001"))
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_private_keys_are_owner_only_and_match_their_certificates(layout: TlsLayout) -> None:
    pairs = [(layout.ca_key, layout.ca_cert), (layout.broker_key("cloud"), layout.broker_cert("cloud"))]
    pairs += [(layout.key(identity), layout.cert(identity)) for identity in ("north-t00001", "aggregator-south")]
    for key_file, cert_file in pairs:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert key.public_key() == load_certificate(cert_file).public_key()
    assert stat.S_IMODE(layout.root.stat().st_mode) == 0o700
    assert not list(layout.root.rglob(".*.tmp"))


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_keys_are_0600_whatever_the_umask(tmp_path: Path, permissive_umask: None) -> None:
    layout = TlsLayout(tmp_path / "tls")
    ensure_pki(layout, ["n1"], {})
    assert stat.S_IMODE(layout.key("n1").stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.ca_key.stat().st_mode) == 0o600


def test_a_second_run_replaces_nothing_and_issues_only_what_is_missing(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")
    first = ensure_pki(layout, ["n1", "n2"], {"cloud": ()})
    assert first.ca_created and len(first.issued) == 3
    before = {path: path.read_bytes() for path in layout.root.rglob("*") if path.is_file()}

    again = ensure_pki(layout, ["n1", "n2"], {"cloud": ()})
    assert (again.ca_created, again.issued, again.kept) == (False, [], 3)

    more = ensure_pki(layout, ["n1", "n2", "n3"], {"cloud": ()})
    assert (more.ca_created, more.issued, more.kept) == (False, ["client n3"], 3)
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was replaced"
    ca = load_certificate(layout.ca_cert)
    load_certificate(layout.cert("n3")).verify_directly_issued_by(ca)


def test_issuing_needs_the_ca_key_but_checking_does_not(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")
    ensure_pki(layout, ["n1"], {})
    offline = tmp_path / "ca.key.offline"
    layout.ca_key.rename(offline)

    assert ensure_pki(layout, ["n1"], {}).issued == []  # nothing missing: no key needed
    with pytest.raises(PkiError, match=r"ca\.key is missing"):
        ensure_pki(layout, ["n1", "n2"], {})
    assert not layout.cert("n2").exists()


def test_a_ca_key_without_its_certificate_is_never_replaced(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")
    ensure_pki(layout, [], {})
    key = layout.ca_key.read_bytes()
    layout.ca_cert.unlink()
    with pytest.raises(PkiError, match="refusing to replace a CA key"):
        ensure_pki(layout, ["n1"], {})
    assert layout.ca_key.read_bytes() == key


def test_a_ca_key_that_is_not_the_cas_is_refused(tmp_path: Path) -> None:
    layout, other = TlsLayout(tmp_path / "a"), TlsLayout(tmp_path / "b")
    ensure_pki(layout, [], {})
    ensure_pki(other, [], {})
    layout.ca_key.write_bytes(other.ca_key.read_bytes())
    with pytest.raises(PkiError, match="not the key of"):
        ensure_pki(layout, ["n1"], {})


def test_new_host_names_for_an_existing_broker_certificate_are_refused(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")
    ensure_pki(layout, [], {"cloud": ["mqtt.example.com"]})
    ensure_pki(layout, [], {"cloud": ["mqtt.example.com"]})  # the same names: fine
    with pytest.raises(PkiError, match=r"without \['mqtt2.example.com'\]"):
        ensure_pki(layout, [], {"cloud": ["mqtt2.example.com"]})


@pytest.mark.parametrize("host", ["", "a b", "http://x", "user@host"])
def test_bad_host_names_are_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(PkiError, match="host name"):
        ensure_pki(TlsLayout(tmp_path / "tls"), [], {"cloud": [host]})
    assert not (tmp_path / "tls").exists()  # refused before anything was written


def test_identities_must_be_unique_and_usable_as_names(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="used twice"):
        ensure_pki(TlsLayout(tmp_path / "tls"), ["n1", "n1"], {})
    with pytest.raises(ValueError, match="identity"):
        ensure_pki(TlsLayout(tmp_path / "tls"), ["../escape"], {})


def test_host_names_for_unknown_brokers_are_refused(fleet_dir: Path) -> None:
    registry = FleetRegistry.load(registry_path(fleet_dir))
    with pytest.raises(ValueError, match="unknown brokers"):
        ensure_fleet_pki(fleet_dir, registry, {"region-east": ["x.example"]})


def test_keys_and_pki_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet"
    assert main(["keys", "--out", str(fleet), "--turbines", "2", "--broker-host", "cloud=mqtt.example.com"]) == 0
    assert "TLS" in capsys.readouterr().out
    cloud = load_certificate(tls_layout(fleet).broker_cert("cloud"))
    names = cloud.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.example.com" in names.get_values_for_type(x509.DNSName)

    assert main(["pki", "--fleet", str(fleet)]) == 0
    assert "certificates issued: 0" in capsys.readouterr().out

    # A fleet from before TLS: `nacelle pki` completes it.
    for path in sorted(tls_layout(fleet).root.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert main(["pki", "--fleet", str(fleet)]) == 0
    assert "created the fleet CA" in capsys.readouterr().out
    assert tls_layout(fleet).cert("offshore-t00001").exists()


def test_pki_help_explains_the_layout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pki", "--help"])
    out = capsys.readouterr().out
    for text in ("tls/ca.crt", "0600", "never replaced", "--broker-host", "CN"):
        assert text in out
