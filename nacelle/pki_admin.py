"""`nacelle pki ca | request | sign`: a fleet's certificates without private keys travelling.

    operator's machine                         each host
    nacelle pki ca --fleet DIR                 nacelle pki request --identity ID --dir /etc/nacelle/tls
      (the CA, once)                             (its TLS key, 0600, and ID.csr; with --signing-key,
                                                  its Ed25519 key and ID.pub)
    nacelle registry add ... (the .pub files) ◀── ID.csr, ID.pub
    nacelle pki sign --fleet DIR --csr ID.csr
      --out ID.crt                            ──▶ ID.crt

Every command is idempotent and says what it did, one line each: `changed: ...` when it changed
a file, `ok: ...` when there was nothing to do (deploy/ansible reads the `changed:` lines).
"""

from __future__ import annotations

import argparse
import datetime
import grp
import json
import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nacelle.keys import broker_names, ensure_signing_key, public_key_path, registry_path, tls_identities, tls_layout
from nacelle.pki import RequestFiles, ensure_ca, ensure_request, sign_request
from wire.registry import FleetRegistry

_DAYS = 24 * 3600


def _days(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more days, got {text}")
    return value


def add_pki_actions(pki: argparse.ArgumentParser) -> None:
    """The `ca`, `request` and `sign` actions under `nacelle pki` (which alone completes a fleet
    directory, `nacelle pki --fleet DIR`)."""
    actions = pki.add_subparsers(dest="action", required=False, metavar="ACTION")
    ca = actions.add_parser(
        "ca",
        help="create the fleet CA (tls/ca.crt, tls/ca.key) unless it exists",
        description="Create the fleet CA in DIR/tls unless tls/ca.crt exists; an existing CA is never replaced.",
    )
    ca.add_argument("--fleet", type=Path, required=True, help="fleet directory (created if missing)")
    ca.set_defaults(run=_run_ca)

    request = actions.add_parser(
        "request",
        help="on a host: make its TLS key and a certificate request (and its signing key)",
        description=(
            "Make DIR/ID.key (P-256, 0600) unless it exists and DIR/ID.csr, a certificate request with\n"
            "CN ID, unless one for that key is there. With --signing-key, also the Ed25519 key that signs\n"
            "the member's messages (0600) and its public half beside it (PATH with .pub, PEM) for\n"
            "`nacelle registry add`. Existing keys are kept unless asked to rotate them."
        ),
        epilog=(
            "example: nacelle pki request --identity offshore-t00001 --dir /etc/nacelle/tls "
            "--signing-key /etc/nacelle/keys/offshore-t00001.pem"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    request.add_argument("--identity", required=True, help="certificate CN: node id, aggregator-REGION, cloud, ...")
    request.add_argument("--dir", type=Path, required=True, help="where ID.key, ID.csr (and later ID.crt) are")
    request.add_argument("--signing-key", type=Path, metavar="PATH", help="the member's Ed25519 signing key")
    request.add_argument("--rotate", action="store_true", help="make a new TLS key (and request) even if one exists")
    request.add_argument(
        "--renew-within",
        type=_days,
        metavar="DAYS",
        help="make a new TLS key when DIR/ID.crt expires within DAYS days",
    )
    request.add_argument(
        "--owner",
        metavar="USER[:GROUP]",
        help="give the keys and their directories to the user that reads them (the daemon's); run as root",
    )
    request.add_argument(
        "--rotate-signing-key",
        action="store_true",
        help="make a new signing key (enrol it with `nacelle registry add --replace`)",
    )
    request.set_defaults(run=_run_request)

    sign = actions.add_parser(
        "sign",
        help="on the operator's machine: sign a host's request with the fleet CA",
        description=(
            "Sign a certificate request with the fleet CA (tls/ca.key must be there) into --out. The\n"
            "request's CN must be an identity of the fleet's registry (a node, aggregator-REGION, cloud,\n"
            "nacelle-bridge-REGION, nacelle-observer, nacelle-probe) or, with --broker, a broker\n"
            "(cloud, region-REGION), whose certificate names --host besides 127.0.0.1 and localhost.\n"
            "A valid certificate of the CA for the same name, key and hosts already at --out is kept."
        ),
        epilog="example: nacelle pki sign --fleet fleet/ --csr offshore-t00001.csr --out fleet/tls/offshore-t00001.crt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("--fleet", type=Path, required=True, help="fleet directory (tls/ca.*, registry.json)")
    sign.add_argument("--csr", type=Path, help="the host's request")
    sign.add_argument("--out", type=Path, help="where the certificate goes")
    sign.add_argument(
        "--manifest",
        type=Path,
        help=(
            'sign every request of this JSON list of {"csr", "out", "broker": true|false, "hosts": [...]} '
            "(paths relative to the fleet directory; - reads it from standard input) instead of --csr and --out"
        ),
    )
    sign.add_argument("--broker", action="store_true", help="a broker's server certificate")
    sign.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="with --broker: a name or IP clients dial the broker by; repeatable",
    )
    sign.set_defaults(run=_run_sign)


def _report(changes: list[str], unchanged: str) -> None:
    for change in changes:
        print(f"changed: {change}")
    if not changes:
        print(f"ok: {unchanged}")


def _run_ca(args: argparse.Namespace) -> int:
    layout = tls_layout(args.fleet)
    created = ensure_ca(layout)
    _report([f"created the fleet CA {layout.ca_cert}"] if created else [], f"{layout.ca_cert} exists")
    return 0


def _run_request(args: argparse.Namespace) -> int:
    files = RequestFiles(args.dir, args.identity)
    renew = None if args.renew_within is None else datetime.timedelta(days=args.renew_within)
    changes = ensure_request(files, rotate=args.rotate, renew_within=renew)
    if args.signing_key is not None:
        changes += ensure_signing_key(args.signing_key, rotate=args.rotate_signing_key)
    elif args.rotate_signing_key:
        raise ValueError("--rotate-signing-key needs --signing-key")
    if args.owner:
        keys = [files.key, *([args.signing_key] if args.signing_key is not None else [])]
        changes += give_to([*dict.fromkeys(key.parent for key in keys), *keys], args.owner)
    kept = f"{files.key} and {files.csr}" + (f", {public_key_path(args.signing_key)}" if args.signing_key else "")
    _report(changes, f"kept {kept}")
    return 0


def give_to(paths: Sequence[Path], owner: str) -> list[str]:
    """chown `paths` to USER[:GROUP] (the user's group when none is given) where they differ."""
    user, _, group = owner.partition(":")
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError as exc:
        raise ValueError(f"--owner {owner}: no such user or group") from exc
    changes = []
    for path in paths:
        status = path.stat()
        if (status.st_uid, status.st_gid) != (entry.pw_uid, gid):
            os.chown(path, entry.pw_uid, gid)
            changes.append(f"gave {path} to {owner}")
    return changes


def _run_sign(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        if args.csr or args.out or args.broker or args.host:
            raise ValueError("--manifest lists the requests itself: no --csr, --out, --broker or --host with it")
        requests = read_sign_manifest(args.manifest, args.fleet)
    elif args.csr is None or args.out is None:
        raise ValueError("give --csr and --out, or --manifest")
    elif args.host and not args.broker:
        raise ValueError("--host names a broker's host: it needs --broker")
    else:
        requests = [SignRequest(args.csr, args.out, args.host if args.broker else None)]
    registry = FleetRegistry.load(registry_path(args.fleet))
    layout = tls_layout(args.fleet)
    clients, brokers = tls_identities(registry), broker_names(registry)
    for request in requests:
        allowed = clients if request.broker_hosts is None else brokers
        issued = sign_request(layout, request.csr, request.out, allowed=allowed, broker_hosts=request.broker_hosts)
        _report([f"issued {request.out}"] if issued else [], f"{request.out} is current")
    return 0


@dataclass(frozen=True)
class SignRequest:
    csr: Path
    out: Path
    broker_hosts: list[str] | None  # None: a client certificate


def read_sign_manifest(path: Path, fleet: Path) -> list[SignRequest]:
    """Requests to sign from a JSON list of {"csr", "out", "broker", "hosts"}, paths relative to
    `fleet` (deploy/ansible writes one for every host it signs for)."""
    try:
        entries = json.loads(sys.stdin.read() if str(path) == "-" else path.read_text())
        return [
            SignRequest(
                fleet / entry["csr"],
                fleet / entry["out"],
                [str(host) for host in entry.get("hosts", [])] if entry.get("broker") else None,
            )
            for entry in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read signing manifest {path}: {exc!r}") from exc
