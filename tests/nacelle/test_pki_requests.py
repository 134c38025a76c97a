"""Keys made on their host, signed on the operator's machine (nacelle.pki ensure_request /
sign_request / ensure_ca, and `nacelle pki ca | request | sign`): idempotent, rotation on request
only, and only the fleet's identities get a certificate."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nacelle.cli import main
from nacelle.keys import create_fleet, ensure_signing_key, public_key_path, registry_path, tls_identities, tls_layout
from nacelle.pki import PkiError, RequestFiles, TlsLayout, ensure_ca, ensure_request, load_certificate, sign_request
from wire.registry import FleetRegistry
from wire.signing import load_private_key, load_public_key_file, public_key_hex


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    directory = tmp_path / "fleet"
    create_fleet(directory, {"north": 2})
    return directory


def _key(path: Path) -> bytes:
    return path.read_bytes()


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_a_request_makes_an_owner_only_key_and_a_csr_for_it(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "tls", "north-t00001")

    changes = ensure_request(files)

    request = x509.load_pem_x509_csr(files.csr.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert len(changes) == 2
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert request.is_signature_valid and request.public_key() == key.public_key()
    assert request.subject.rfc4514_string() == "CN=north-t00001"


def test_a_second_request_keeps_the_key_and_the_csr(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    key, csr = _key(files.key), _key(files.csr)

    changes = ensure_request(files)

    assert changes == [] and _key(files.key) == key and _key(files.csr) == csr


def test_a_lost_csr_is_written_again_for_the_same_key(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    key = _key(files.key)
    files.csr.unlink()

    changes = ensure_request(files)

    assert changes == [f"wrote request {files.csr}"] and _key(files.key) == key
    assert (
        x509.load_pem_x509_csr(files.csr.read_bytes()).public_key()
        == serialization.load_pem_private_key(key, password=None).public_key()
    )


def test_rotate_makes_a_new_key_and_request(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    key, csr = _key(files.key), _key(files.csr)

    changes = ensure_request(files, rotate=True)

    assert changes[0].startswith("rotated key") and _key(files.key) != key and _key(files.csr) != csr
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


def test_renew_within_replaces_the_key_only_when_the_certificate_expires_soon(fleet: Path, tmp_path: Path) -> None:
    layout = tls_layout(fleet)
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    sign_request(layout, files.csr, files.cert, allowed=["north-t00001"])
    expires = load_certificate(files.cert).not_valid_after_utc
    key = _key(files.key)

    far = ensure_request(files, renew_within=datetime.timedelta(days=30))
    near = ensure_request(files, renew_within=datetime.timedelta(days=30), now=expires - datetime.timedelta(days=29))

    assert far == []
    assert near[0].startswith("renewed (certificate expires") and _key(files.key) != key


def test_signing_issues_a_client_certificate_of_the_ca_for_the_requests_key(fleet: Path, tmp_path: Path) -> None:
    layout = tls_layout(fleet)
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    out = tmp_path / "issued.crt"

    issued = sign_request(layout, files.csr, out, allowed=["north-t00001"])

    cert = load_certificate(out)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    cert.verify_directly_issued_by(load_certificate(layout.ca_cert))
    assert issued and _cn(cert) == "north-t00001" and cert.public_key() == key.public_key()
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not list(tmp_path.glob("issued.key"))  # no key is made on the signing side


def test_signing_again_keeps_a_current_certificate_and_reissues_for_a_new_key(fleet: Path, tmp_path: Path) -> None:
    layout = tls_layout(fleet)
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    sign_request(layout, files.csr, files.cert, allowed=["north-t00001"])
    first = _key(files.cert)

    again = sign_request(layout, files.csr, files.cert, allowed=["north-t00001"])
    ensure_request(files, rotate=True)
    rotated = sign_request(layout, files.csr, files.cert, allowed=["north-t00001"])

    assert not again and rotated and _key(files.cert) != first


def test_a_request_for_a_name_the_fleet_does_not_know_is_refused(fleet: Path, tmp_path: Path) -> None:
    files = RequestFiles(tmp_path, "intruder")
    ensure_request(files)

    with pytest.raises(PkiError, match="'intruder' is not an identity of this fleet"):
        sign_request(tls_layout(fleet), files.csr, files.cert, allowed=["north-t00001"])
    assert not files.cert.exists()


def test_a_broker_certificate_names_the_given_hosts_and_is_reissued_for_new_ones(fleet: Path, tmp_path: Path) -> None:
    layout = tls_layout(fleet)
    files = RequestFiles(tmp_path, "region-north")
    ensure_request(files)

    sign_request(layout, files.csr, files.cert, allowed=["region-north"], broker_hosts=["mqtt-north.example"])
    kept = sign_request(layout, files.csr, files.cert, allowed=["region-north"], broker_hosts=["mqtt-north.example"])
    renamed = sign_request(layout, files.csr, files.cert, allowed=["region-north"], broker_hosts=["10.0.0.9"])

    names = load_certificate(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert not kept and renamed
    assert x509.DNSName("localhost") in names and x509.DNSName("mqtt-north.example") not in names
    usage = load_certificate(files.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_a_forged_request_is_refused(fleet: Path, tmp_path: Path) -> None:
    files = RequestFiles(tmp_path, "north-t00001")
    ensure_request(files)
    pem = bytearray(files.csr.read_bytes())
    body = pem.index(b"\n") + 40
    pem[body] = ord("A") if pem[body] != ord("A") else ord("B")
    files.csr.write_bytes(bytes(pem))

    with pytest.raises(PkiError):
        sign_request(tls_layout(fleet), files.csr, files.cert, allowed=["north-t00001"])


def test_ensure_ca_creates_once_and_never_replaces_a_lone_key(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")

    created, again = ensure_ca(layout), ensure_ca(layout)
    layout.ca_cert.unlink()

    assert created and not again
    with pytest.raises(PkiError, match="refusing to replace a CA key"):
        ensure_ca(layout)


def test_a_signing_key_is_made_once_with_its_public_half_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "north-t00001.pem"

    first = ensure_signing_key(path)
    key = _key(path)
    second = ensure_signing_key(path)
    rotated = ensure_signing_key(path, rotate=True)

    assert len(first) == 2 and second == [] and rotated[0].startswith("rotated signing key")
    assert _key(path) != key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_hex(load_public_key_file(public_key_path(path))) == public_key_hex(load_private_key(path))


def test_the_request_sign_and_ca_commands_report_changed_then_ok(
    fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = tmp_path / "host"
    owner = pwd.getpwuid(os.geteuid()).pw_name  # chown to oneself: allowed without root
    request = [
        "pki",
        "request",
        "--identity",
        "north-t00001",
        "--dir",
        str(host / "tls"),
        "--signing-key",
        str(host / "keys" / "north-t00001.pem"),
        "--owner",
        owner,
    ]
    sign = ["pki", "sign", "--fleet", str(fleet), "--csr", str(host / "tls" / "north-t00001.csr")]
    sign += ["--out", str(host / "tls" / "north-t00001.crt")]

    outputs = []
    for argv in (request, request, sign, sign, ["pki", "ca", "--fleet", str(fleet)]):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)

    assert outputs[0].count("changed: ") == 4 and outputs[1].startswith("ok: kept")
    assert outputs[2].startswith("changed: issued") and outputs[3].startswith("ok: ")
    assert outputs[4].startswith("ok: ")


def test_sign_takes_a_manifest_and_refuses_the_whole_of_a_bad_one(
    fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for identity in ("north-t00001", "north-t00002", "region-north"):
        ensure_request(RequestFiles(fleet / "requests", identity))
    manifest = tmp_path / "to-sign.json"
    manifest.write_text(
        json.dumps(
            [
                {"csr": "requests/north-t00001.csr", "out": "issued/north-t00001.crt", "broker": False},
                {"csr": "requests/north-t00002.csr", "out": "issued/north-t00002.crt", "broker": False},
                {"csr": "requests/region-north.csr", "out": "issued/region-north.crt", "broker": True, "hosts": ["b"]},
            ]
        )
    )

    code = main(["pki", "sign", "--fleet", str(fleet), "--manifest", str(manifest)])

    assert code == 0 and capsys.readouterr().out.count("changed: issued") == 3
    assert _cn(load_certificate(fleet / "issued" / "region-north.crt")) == "region-north"
    assert main(["pki", "sign", "--fleet", str(fleet), "--manifest", str(manifest), "--broker"]) == 2


def test_identities_the_signer_accepts_are_the_fleets(fleet: Path) -> None:
    identities = tls_identities(FleetRegistry.load(registry_path(fleet)))

    assert {"cloud", "aggregator-north", "nacelle-bridge-north", "north-t00001"} <= set(identities)
