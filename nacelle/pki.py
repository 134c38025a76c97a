"""The fleet's X.509 PKI for MQTT transport security: one CA, a server certificate per broker and
a client certificate per identity, whose common name (CN) is what the brokers' ACLs know it by.

Layout under a fleet directory (`TlsLayout`):
    tls/ca.crt                  the fleet CA: every broker and client trusts it (distribute it)
    tls/ca.key                  the CA's key, 0600; only `nacelle pki` needs it: keep it offline
    tls/{identity}.crt, .key    client certificate and key of a node, aggregator, the cloud, a bridge
    tls/brokers/{broker}.crt, .key   server certificates, SAN 127.0.0.1, localhost and given names

Keys are ECDSA P-256: fast to make (10,000 in seconds) and supported by every TLS 1.2 stack,
including mosquitto's. An existing CA is never replaced and an existing certificate never
reissued: `ensure_pki` only adds what is missing, so running it again is safe.

Two ways to issue. `ensure_pki` makes keys and certificates together in the fleet directory
(`nacelle keys`, the simulator, tests). For real hosts, private keys never leave the host that
uses them: the host makes its key and a certificate signing request (`ensure_request`, `nacelle
pki request`), the operator's machine signs the request with the CA (`sign_request`, `nacelle pki
sign`: only for identities of the registry) and sends the certificate back (deploy/ansible).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nacelle.files import write_atomically
from wire.topics import check_identifier

# Long enough that no CA rotation is needed during a turbine's service contract.
CA_VALIDITY = datetime.timedelta(days=10 * 365)
# Nothing rotates certificates automatically yet: a gateway must not lose its link in the
# middle of a maintenance cycle because a short-lived certificate expired.
LEAF_VALIDITY = datetime.timedelta(days=5 * 365)
# Clients reach local brokers (simulator, tests) by either name.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
# Certificates are valid from a little before now: a clock a few minutes behind must not refuse them.
_BACKDATE = datetime.timedelta(minutes=5)
# What a leaf certificate may certify: our own keys are P-256; a host may bring RSA.
LeafPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class PkiError(ValueError):
    """A PKI directory that cannot be used or completed; the message names the file."""


@dataclass(frozen=True)
class TlsLayout:
    """Where the files of a fleet's PKI are."""

    root: Path

    @classmethod
    def of_fleet(cls, fleet_dir: Path) -> TlsLayout:
        return cls(fleet_dir / "tls")

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def cert(self, identity: str) -> Path:
        return self.root / f"{check_identifier('identity', identity)}.crt"

    def key(self, identity: str) -> Path:
        return self.root / f"{check_identifier('identity', identity)}.key"

    def broker_cert(self, broker: str) -> Path:
        return self.root / "brokers" / f"{check_identifier('broker', broker)}.crt"

    def broker_key(self, broker: str) -> Path:
        return self.root / "brokers" / f"{check_identifier('broker', broker)}.key"


@dataclass(frozen=True)
class PkiReport:
    """What `ensure_pki` did."""

    ca_created: bool
    issued: list[str] = field(default_factory=list)  # "client {id}" / "broker {name}"
    kept: int = 0


def ensure_pki(
    layout: TlsLayout,
    identities: Iterable[str],
    brokers: Mapping[str, Sequence[str]],
    *,
    ca_name: str = "Nacelle fleet CA",
) -> PkiReport:
    """Create the CA if there is none, then a client certificate for every identity and a server
    certificate for every broker (name → extra DNS names or IPs) that has none yet.

    Existing files are kept, never replaced; the CA key is needed only when something is missing.
    """
    identities = list(identities)
    duplicates = sorted(identity for identity, count in Counter(identities).items() if count > 1)
    if duplicates:
        raise PkiError(f"identities used twice: {duplicates}")
    for hosts in brokers.values():
        for host in hosts:
            _general_name(host)  # a bad name fails before anything is written
    missing_clients = [i for i in identities if not layout.cert(i).exists()]
    missing_brokers = {b: hosts for b, hosts in brokers.items() if not layout.broker_cert(b).exists()}
    for broker, hosts in brokers.items():
        if broker not in missing_brokers and hosts:
            _check_names(layout.broker_cert(broker), [*LOOPBACK_HOSTS, *hosts])
    kept = len(identities) - len(missing_clients) + len(brokers) - len(missing_brokers)

    ca_created = False
    if not layout.ca_cert.exists():
        if layout.ca_key.exists():
            raise PkiError(f"{layout.ca_key} exists without {layout.ca_cert}; refusing to replace a CA key")
        ca_key, ca_cert = create_ca(layout, ca_name)
        ca_created = True
    elif missing_clients or missing_brokers:
        ca_key, ca_cert = load_ca(layout)
    else:
        return PkiReport(ca_created=False, kept=kept)

    issued = []
    for broker, hosts in missing_brokers.items():
        issue_server(layout, broker, [*LOOPBACK_HOSTS, *hosts], ca_key, ca_cert)
        issued.append(f"broker {broker}")
    for identity in missing_clients:
        issue_client(layout, identity, ca_key, ca_cert)
        issued.append(f"client {identity}")
    return PkiReport(ca_created=ca_created, issued=issued, kept=kept)


def create_ca(layout: TlsLayout, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(subject, subject, key.public_key(), CA_VALIDITY)
        # path_length 0: the CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(layout.ca_key, key)
    _write_cert(layout.ca_cert, cert)
    return key, cert


def load_ca(layout: TlsLayout) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert = load_certificate(layout.ca_cert)
    if not layout.ca_key.exists():
        raise PkiError(
            f"{layout.ca_key} is missing: certificates can only be issued where the CA key is "
            "(copy it back from where it is kept offline)"
        )
    try:
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load CA key {layout.ca_key}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise PkiError(f"{layout.ca_key} is not the key of {layout.ca_cert}")
    return key, cert


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load certificate {path}: {exc}") from exc


def issue_client(
    layout: TlsLayout, identity: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.Certificate:
    """A client certificate whose CN is `identity`: mosquitto's `use_identity_as_username`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = client_certificate(identity, key.public_key(), ca_key, ca_cert)
    _write_key(layout.key(identity), key)
    _write_cert(layout.cert(identity), cert)
    return cert


def issue_server(
    layout: TlsLayout,
    broker: str,
    hosts: Sequence[str],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> x509.Certificate:
    """A broker's certificate; clients check that the host they dial is among `hosts`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = server_certificate(broker, hosts, key.public_key(), ca_key, ca_cert)
    _write_key(layout.broker_key(broker), key)
    _write_cert(layout.broker_cert(broker), cert)
    return cert


def client_certificate(
    identity: str, public_key: LeafPublicKey, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_identifier("identity", identity))])
    return (
        _leaf_builder(subject, public_key, ca_key, ca_cert)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def server_certificate(
    broker: str,
    hosts: Sequence[str],
    public_key: LeafPublicKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> x509.Certificate:
    if not hosts:
        raise PkiError(f"broker {broker!r} needs at least one host name")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_identifier("broker", broker))])
    names = [_general_name(host) for host in dict.fromkeys(hosts)]
    return (
        _leaf_builder(subject, public_key, ca_key, ca_cert)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


# -- keys made on their host: requests and signing ------------------------------------------


def ensure_ca(layout: TlsLayout, name: str = "Nacelle fleet CA") -> bool:
    """Create the fleet CA unless it exists; True when it was created. A CA key without its
    certificate is refused, never replaced."""
    if layout.ca_cert.exists():
        load_certificate(layout.ca_cert)  # its key may be offline: signing asks for it
        return False
    if layout.ca_key.exists():
        raise PkiError(f"{layout.ca_key} exists without {layout.ca_cert}; refusing to replace a CA key")
    create_ca(layout, name)
    return True


@dataclass(frozen=True)
class RequestFiles:
    """A host's TLS files for one identity, in one directory: its key (0600), the request for
    the CA, and the certificate once it came back."""

    directory: Path
    identity: str

    @property
    def key(self) -> Path:
        return self.directory / f"{check_identifier('identity', self.identity)}.key"

    @property
    def csr(self) -> Path:
        return self.directory / f"{self.identity}.csr"

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.identity}.crt"


def ensure_request(
    files: RequestFiles,
    *,
    rotate: bool = False,
    renew_within: datetime.timedelta | None = None,
    now: datetime.datetime | None = None,
) -> list[str]:
    """Make the identity's key unless it exists, and a signing request (CN: the identity) for it
    unless one for this key is there. A new key replaces the old one when `rotate`, or when
    `renew_within` is given and the certificate beside it expires within that time. Returns
    what was done (empty: nothing changed); the certificate is never touched here."""
    changes = []
    key = _load_private_key(files.key) if files.key.exists() else None
    why_new = "created" if key is None else ("rotated" if rotate else _expiring(files.cert, renew_within, now))
    if why_new:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(files.key, key)
        changes.append(f"{why_new} key {files.key}")
    assert key is not None
    if why_new or not _request_matches(files.csr, files.identity, key.public_key()):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, files.identity)])
        request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        _write_new(files.csr, request.public_bytes(serialization.Encoding.PEM), 0o644)
        changes.append(f"wrote request {files.csr}")
    return changes


def _expiring(cert_path: Path, renew_within: datetime.timedelta | None, now: datetime.datetime | None) -> str:
    if renew_within is None or not cert_path.exists():
        return ""
    expires = load_certificate(cert_path).not_valid_after_utc
    left = expires - (now or datetime.datetime.now(datetime.UTC))
    return f"renewed (certificate expires {expires:%Y-%m-%d})" if left < renew_within else ""


def _request_matches(path: Path, identity: str, public_key: LeafPublicKey) -> bool:
    if not path.exists():
        return False
    try:
        request = x509.load_pem_x509_csr(path.read_bytes())
    except ValueError:
        return False
    return _common_name(request.subject) == identity and request.public_key() == public_key


def load_request(path: Path) -> x509.CertificateSigningRequest:
    """A signing request whose signature is its key's (the host holds the key it asks for)."""
    try:
        request = x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load certificate request {path}: {exc}") from exc
    if not request.is_signature_valid:
        raise PkiError(f"{path}: the request is not signed by the key it asks a certificate for")
    return request


def sign_request(
    layout: TlsLayout,
    request_path: Path,
    out: Path,
    *,
    allowed: Collection[str],
    broker_hosts: Sequence[str] | None = None,
    now: datetime.datetime | None = None,
) -> bool:
    """Sign a host's request with the fleet CA into `out` (the certificate only: the key stays
    on the host). Its CN must be in `allowed`: identities of the registry, or, for a broker's
    certificate (`broker_hosts`: the names clients dial besides loopback), broker names. A
    valid certificate of the CA for the same name and key (and the same host names) already at
    `out` is kept: returns False; True when a certificate was issued."""
    request = load_request(request_path)
    name = _common_name(request.subject)
    if name not in allowed:
        kind = "a broker" if broker_hosts is not None else "an identity"
        raise PkiError(f"{request_path}: CN {name!r} is not {kind} of this fleet; known: {', '.join(sorted(allowed))}")
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise PkiError(f"{request_path}: only EC and RSA keys are signed, got {type(public_key).__name__}")
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
        raise PkiError(f"{request_path}: RSA keys need at least 2048 bits, got {public_key.key_size}")
    hosts = None if broker_hosts is None else [*LOOPBACK_HOSTS, *broker_hosts]
    ca_cert = load_certificate(layout.ca_cert)
    if out.exists() and _current(load_certificate(out), ca_cert, name, public_key, hosts, now):
        return False
    ca_key, ca_cert = load_ca(layout)
    cert = (
        client_certificate(name, public_key, ca_key, ca_cert)
        if hosts is None
        else server_certificate(name, hosts, public_key, ca_key, ca_cert)
    )
    _write_new(out, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _current(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    name: str,
    public_key: LeafPublicKey,
    hosts: Sequence[str] | None,
    now: datetime.datetime | None,
) -> bool:
    """Whether `cert` is what signing would issue now: the CA's, for this name and key, valid,
    a client certificate or a server one with exactly these host names."""
    moment = now or datetime.datetime.now(datetime.UTC)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if _common_name(cert.subject) != name or cert.public_key() != public_key or cert.not_valid_after_utc <= moment:
        return False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if hosts is None:
        return ExtendedKeyUsageOID.CLIENT_AUTH in usage
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usage and set(names) == {_general_name(host) for host in hosts}


def _common_name(name: x509.Name) -> str:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attributes[0].value) if attributes else ""


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load TLS key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC private key (nacelle pki request makes P-256 keys)")
    return key


def _check_names(path: Path, hosts: Sequence[str]) -> None:
    """Host names asked for a broker whose certificate exists must be in it: silently keeping
    the old names would leave clients failing to verify the broker later."""
    names = load_certificate(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    absent = [host for host in hosts if _general_name(host) not in names]
    if absent:
        raise PkiError(f"{path} exists without {absent}; to reissue it with them, remove it and its key first")


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c.isspace() or c in "/:@" for c in host):
        raise PkiError(f"not a host name or IP address: {host!r}")
    return x509.DNSName(host)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: LeafPublicKey, validity: datetime.timedelta
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
    )


def _leaf_builder(
    subject: x509.Name, public_key: LeafPublicKey, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.CertificateBuilder:
    # AKI and SKI: strict verifiers (Python 3.13's default context among them) require them.
    return (
        _builder(subject, ca_cert.subject, public_key, LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_new(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_new(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, data, mode)
