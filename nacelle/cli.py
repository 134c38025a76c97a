"""The `nacelle` command: one subcommand per daemon and tool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from nacelle import __version__
from nacelle.broker_admin import add_broker_parser
from nacelle.config import ConfigError, load_config
from nacelle.model_admin import add_model_parser
from nacelle.pki_admin import add_pki_actions
from nacelle.processes import ServiceError
from wire.registry import NodeStatus

EPILOG = "Every daemon reads one TOML file; NACELLE_<DAEMON>_<FIELD> environment variables override it."


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiomqtt/paho log every packet at DEBUG: too much even when debugging Nacelle itself.
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def _until_signalled(main: asyncio.Future) -> None:
    from nacelle.mqtt import PublishRefused

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        logging.getLogger("nacelle").info("stopped by signal")
    except PublishRefused as exc:  # retrying cannot help a daemon its broker will not hear
        raise ServiceError(f"{exc}; does the broker's ACL grant the identity of this daemon's certificate?") from exc


def _run_edge(args: argparse.Namespace) -> int:
    from edge_node.config import EdgeConfig
    from edge_node.node import EdgeNode

    node = EdgeNode.from_config(load_config(EdgeConfig, args.config))

    async def main() -> None:
        await _until_signalled(asyncio.ensure_future(node.run()))

    asyncio.run(main())
    return 0


def _run_region(args: argparse.Namespace) -> int:
    from regional_aggregator.config import RegionConfig
    from regional_aggregator.daemon import RegionalAggregator

    aggregator = RegionalAggregator.from_config(load_config(RegionConfig, args.config))

    async def main() -> None:
        await _until_signalled(asyncio.ensure_future(aggregator.run()))

    asyncio.run(main())
    return 0


def _run_cloud(args: argparse.Namespace) -> int:
    from cloud_core.config import CloudConfig
    from cloud_core.daemon import CloudCore

    core = CloudCore.from_config(load_config(CloudConfig, args.config))
    rounds = 1 if args.once else args.rounds

    async def main() -> None:
        await _until_signalled(asyncio.ensure_future(core.run(max_rounds=rounds, resume_schedule=args.resume_schedule)))

    asyncio.run(main())
    return 0


def _run_edge_health(args: argparse.Namespace) -> int:
    from edge_node.config import EdgeConfig
    from edge_node.health import check

    health = asyncio.run(check(load_config(EdgeConfig, args.config), timeout_s=args.timeout))
    print(("healthy: " if health.healthy else "unhealthy: ") + health.message)
    return 0 if health.healthy else 1


def _run_keys(args: argparse.Namespace) -> int:
    from nacelle.keys import create_fleet, region_names, registry_path, split_turbines

    regions = args.region_names.split(",") if args.region_names else region_names(args.regions)
    create_fleet(args.out, split_turbines(args.turbines, regions), _broker_hosts(args.broker_host))
    print(f"fleet of {args.turbines} nodes in {len(regions)} regions: {registry_path(args.out)}")
    print(f"private keys under {args.out / 'keys'} (mode 0600): move each to its own host")
    print(f"TLS: CA {args.out / 'tls' / 'ca.crt'}, certificates and keys (0600) under {args.out / 'tls'}")
    return 0


def _run_pki(args: argparse.Namespace) -> int:
    from nacelle.keys import ensure_fleet_pki, registry_path
    from wire.registry import FleetRegistry

    if args.fleet is None:
        raise ValueError("--fleet DIR is required (or an action: ca, request, sign; see nacelle pki --help)")
    registry = FleetRegistry.load(registry_path(args.fleet))
    report = ensure_fleet_pki(args.fleet, registry, _broker_hosts(args.broker_host))
    created = "created the fleet CA; " if report.ca_created else ""
    print(f"{created}certificates issued: {len(report.issued)}, kept: {report.kept} (under {args.fleet / 'tls'})")
    return 0


def _broker_host(text: str) -> tuple[str, str]:
    broker, sep, host = text.partition("=")
    if not sep or not broker or not host:
        raise argparse.ArgumentTypeError(f"expected BROKER=HOST (e.g. region-offshore=mqtt.example), got {text!r}")
    return broker, host


def _broker_hosts(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    hosts: dict[str, list[str]] = {}
    for broker, host in pairs:
        hosts.setdefault(broker, []).append(host)
    return hosts


def _add_broker_host_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker-host",
        type=_broker_host,
        action="append",
        default=[],
        metavar="BROKER=HOST",
        help=(
            "a name or IP clients dial a broker by, written into its server certificate besides 127.0.0.1 "
            "and localhost; BROKER is cloud or region-REGION; repeatable"
        ),
    )


_PKI_TEXT = (
    "TLS for MQTT: the fleet CA (tls/ca.crt; its key tls/ca.key, 0600, is needed only to issue\n"
    "certificates: keep it offline afterwards), one server certificate per broker\n"
    "(tls/brokers/cloud.crt, tls/brokers/region-REGION.crt) and one client certificate per identity\n"
    "(tls/ID.crt and tls/ID.key, 0600): every node, every aggregator, the cloud, the bridge of each\n"
    "region (nacelle-bridge-REGION), nacelle-probe and nacelle-observer. A certificate's CN is the\n"
    "identity the brokers' ACLs know. ECDSA P-256; an existing CA or certificate is never replaced."
)


def _run_registry(args: argparse.Namespace) -> int:
    from nacelle.registry_admin import format_nodes, select_nodes, set_status
    from wire.registry import FleetRegistry

    if args.action == "add":
        return _run_registry_add(args)
    if args.action == "list":
        registry = FleetRegistry.load(args.registry)
        status = NodeStatus(args.status) if args.status else None
        print(format_nodes(select_nodes(registry, status=status, region=args.region)))
        return 0
    status = NodeStatus.SUSPENDED if args.action == "suspend" else NodeStatus.ACTIVE
    change = set_status(args.registry, args.nodes, status, reason=getattr(args, "reason", ""))
    for node_id in change.changed:
        print(f"{node_id}: {status.value}")
    for node in change.unchanged:
        print(f"{node.member_id}: already {status.value}" + (f" since {node.changed_at}" if node.changed_at else ""))
    if change.changed:
        # In production each host holds its own copy: the aggregators' copies are the ones that matter.
        print(
            f"wrote {args.registry}: a regional aggregator reading this file applies it when it opens its "
            "next round; copy it to aggregator hosts that keep their own"
        )
    return 0


def _run_registry_add(args: argparse.Namespace) -> int:
    from nacelle.registry_admin import MemberKey, enrol_members, read_manifest, read_public_key
    from wire.registry import Enrolment, MemberRole

    if (args.manifest is None) == (args.member is None):
        raise ValueError("give either MEMBER with --public-key, or --manifest FILE")
    if args.manifest is not None:
        if args.public_key is not None or args.region is not None or args.role != MemberRole.NODE.value:
            raise ValueError("--public-key, --region and --role describe one MEMBER; a manifest holds them itself")
        members = read_manifest(args.manifest)
    else:
        if args.public_key is None:
            raise ValueError("--public-key FILE is required with MEMBER")
        role = MemberRole(args.role)
        if role is not MemberRole.CLOUD and not args.region:
            raise ValueError(f"a {role.value} needs --region")
        members = [MemberKey(args.member, role, read_public_key(args.public_key), args.region or "")]
    for member, outcome in enrol_members(args.registry, members, replace=args.replace):
        where = f" of {member.region}" if member.region else ""
        if outcome is Enrolment.UNCHANGED:
            print(f"ok: {member.role.value} {member.member_id}{where} enrolled with this key")
        else:
            print(f"changed: {outcome.value} {member.role.value} {member.member_id}{where}")
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from simulate.run import SimulationSettings, run_simulation

    # A shell starts background jobs (`nohup ... &`) with SIGINT ignored, and Python then leaves
    # it ignored: `kill -INT` must still stop the fleet cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.live_interval is not None and not args.keep_running:
        raise ValueError("--live-interval applies only with --keep-running")
    settings = SimulationSettings(
        turbines=args.turbines,
        regions=args.regions,
        nights=args.nights,
        workdir=args.workdir,
        node_dir=args.node_dir,
        summary_json=args.summary_json,
        epochs=args.epochs,
        windows_per_turbine=args.windows,
        seed=args.seed,
        **_influx_settings(args),
        evaluate=not args.no_evaluation,
        keep_running=args.keep_running,
        incidents=args.incidents,
        live_interval_s=args.live_interval or SimulationSettings.live_interval_s,
        faulty_share=args.faulty_turbines,
        live_windows=args.live_windows,
    )
    summary = asyncio.run(run_simulation(settings))
    return 0 if summary["ok"] else 1


def _influx_settings(args: argparse.Namespace) -> dict[str, object]:
    """The InfluxDB options as SimulationSettings fields; the v2 token from a file or INFLUX_TOKEN,
    the v1 password from a file or INFLUX_PASSWORD."""
    v2 = args.influx_org is not None or args.influx_bucket is not None or args.influx_token_file is not None
    if v2 and args.influx_db is not None:
        raise ValueError("--influx-db is for the v1 API; the v2 API takes --influx-org and --influx-bucket")
    token = None
    if v2 and args.influx_token_file is None:
        token = os.environ.get("INFLUX_TOKEN") or None
    password = None
    if args.influx_user is not None and args.influx_password_file is None:
        password = os.environ.get("INFLUX_PASSWORD") or None
    return {
        "influx_url": args.influx_url,
        "influx_database": args.influx_db or "nacelle",
        "influx_user": args.influx_user,
        "influx_password_file": args.influx_password_file,
        "influx_password": password,
        "influx_org": args.influx_org,
        "influx_bucket": args.influx_bucket,
        "influx_token_file": args.influx_token_file,
        "influx_token": token,
    }


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nacelle",
        description="Federated anomaly detection for machine fleets over MQTT.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"nacelle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def daemon(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=example)
        sub.add_argument("--config", type=Path, required=True, help="TOML configuration file")
        return sub

    daemon(
        "edge",
        "Run an edge node: train on local windows when a round opens, publish a signed update.",
        "example: nacelle edge --config /etc/nacelle/edge.toml   (env: NACELLE_EDGE_BROKER__HOST=...)",
    ).set_defaults(run=_run_edge)
    daemon(
        "region",
        "Run a regional aggregator: verify updates, stream FedAvg, publish the region's partial.",
        "example: nacelle region --config /etc/nacelle/region.toml   (env: NACELLE_REGION_...)",
    ).set_defaults(run=_run_region)
    cloud = daemon(
        "cloud",
        "Run the cloud core: open rounds, merge partials, sign and publish global models.",
        "example: nacelle cloud --config /etc/nacelle/cloud.toml --once   (env: NACELLE_CLOUD_...)",
    )
    once = cloud.add_mutually_exclusive_group()
    once.add_argument("--once", action="store_true", help="run one round now, then exit")
    once.add_argument("--rounds", type=_positive_int, default=None, metavar="N", help="run N rounds, then exit")
    cloud.add_argument(
        "--resume-schedule",
        action="store_true",
        help=(
            "open the first round schedule.interval_s after the last one in the round log, not at start "
            "(a restart keeps the cadence); a round left open is resumed at once either way"
        ),
    )
    cloud.set_defaults(run=_run_cloud)

    keys = commands.add_parser(
        "keys",
        help="Create a fleet's Ed25519 identities, registry and TLS certificates.",
        description=(
            "Create signing keys for the cloud, one aggregator per region and every node\n"
            "(keys/ID.pem, 0600), registry.json, and the fleet's TLS PKI.\n\n" + _PKI_TEXT + "\n"
            "An existing tls/ca.crt in --out is reused. A directory with a registry is refused."
        ),
        epilog="example: nacelle keys --out fleet/ --turbines 50 --regions 2 --broker-host cloud=mqtt.example.com",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument("--out", type=Path, required=True, help="fleet directory to create")
    keys.add_argument("--turbines", type=_positive_int, required=True, help="number of edge nodes")
    keys.add_argument("--regions", type=_positive_int, default=2, help="number of regions (default 2)")
    keys.add_argument("--region-names", help="comma-separated region names (overrides --regions)")
    _add_broker_host_option(keys)
    keys.set_defaults(run=_run_keys)
    pki = commands.add_parser(
        "pki",
        help="Issue the TLS certificates a fleet directory lacks (CA, brokers, clients).",
        description=(
            "With an ACTION, keys are made on their own host and only requests travel: `ca` creates the\n"
            "fleet CA, `request` (on a host) makes its key and certificate request, `sign` (where the CA\n"
            "key is) signs it; `nacelle pki ACTION --help` for each. deploy/ansible uses these.\n\n"
            "Without ACTION (--fleet DIR): complete the TLS PKI of a fleet directory made by `nacelle\n"
            "keys`: create the CA if tls/ca.crt does not exist, then issue a certificate for every broker\n"
            "and identity of registry.json that has none. Nothing existing is replaced: running it again issues\n"
            "nothing, and after adding nodes to the registry it issues only theirs. To replace the CA,\n"
            "move tls/ away first (every certificate must then be issued and distributed again).\n\n" + _PKI_TEXT
        ),
        epilog="example: nacelle pki --fleet fleet/ --broker-host region-offshore=mqtt-offshore.example.com",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pki.add_argument("--fleet", type=Path, help="fleet directory (with registry.json)")
    _add_broker_host_option(pki)
    pki.set_defaults(run=_run_pki)
    add_pki_actions(pki)
    _add_registry_parser(commands)
    add_model_parser(commands)
    add_broker_parser(commands)
    health = commands.add_parser(
        "edge-health",
        help="Exit 0 once this edge node is online and runs the fleet's current model.",
        description=(
            "Connect to the node's regional broker with the node's own configuration (certificate,\n"
            "registry) and read two retained messages, signatures verified: the node's status and the\n"
            "cloud's global model. Healthy (exit 0) when the status is online at the model's version;\n"
            "otherwise wait for it up to --timeout, then exit 1 saying why (offline, never connected,\n"
            "an older model, no model on the broker). The node's own session is not disturbed."
        ),
        epilog="example: nacelle edge-health --config /etc/nacelle/edge.toml --timeout 120",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    health.add_argument("--config", type=Path, required=True, help="the edge node's TOML configuration")
    health.add_argument(
        "--timeout", type=_positive_float, default=120.0, metavar="SECONDS", help="how long to wait (default 120)"
    )
    health.set_defaults(run=_run_edge_health)

    sim = commands.add_parser(
        "simulate",
        help="Simulate a fleet on this machine with real brokers, daemons and InfluxDB.",
        description=(
            "Start mosquitto brokers (one per region, bridged to a cloud broker), an InfluxDB, one "
            "aggregator per region, the cloud core and a fleet of turbines (each its own MQTT client "
            "and key, with its own synthetic vibration), run NIGHTS rounds, print a table per round, "
            "then stop everything (or, with --keep-running, leave it all running until Ctrl-C)."
        ),
        epilog="example: nacelle simulate --turbines 200 --regions 2 --nights 2 --summary-json runs/summary.json",
    )
    sim.add_argument("--turbines", type=_positive_int, default=200, help="fleet size (default 200)")
    sim.add_argument("--regions", type=_positive_int, default=2, help="number of regions (default 2)")
    sim.add_argument("--nights", type=_positive_int, default=2, help="rounds to run (default 2)")
    sim.add_argument("--epochs", type=_positive_int, default=5, help="local epochs per round (default 5)")
    sim.add_argument("--windows", type=_positive_int, default=256, help="feature windows per turbine (default 256)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the synthetic fleet (default 0)")
    sim.add_argument(
        "--faulty-turbines",
        type=_share,
        default=0.05,
        metavar="SHARE",
        help="share of turbines that develop a fault during the run, e.g. 0.05 (default; 0: none)",
    )
    sim.add_argument(
        "--live-windows",
        type=_positive_int,
        default=8,
        metavar="N",
        help="windows each turbine records every night, scores and may alert on (default 8)",
    )
    sim.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/sim"),
        help="where keys, configs, logs and state go; emptied first (default runs/sim)",
    )
    sim.add_argument(
        "--node-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "the turbines' buffers and state (default WORKDIR/nodes), emptied first; a memory-backed "
            "directory such as /dev/shm/nacelle-nodes keeps thousands of turbines' flushes off the one "
            "disk they would share (each real turbine has its own)"
        ),
    )
    sim.add_argument("--summary-json", type=Path, default=None, help="write the run's summary here")
    influx = sim.add_argument_group(
        "an existing InfluxDB",
        "By default the simulator starts its own InfluxDB 1.x. With --influx-url the cloud core writes to that "
        "server instead: the v1 API (/write) into --influx-db (as --influx-user, with a password read from "
        "--influx-password-file or the INFLUX_PASSWORD environment variable, when the server has "
        "authentication on), or, with --influx-org and --influx-bucket, the v2 API (/api/v2/write) with a "
        "token read from --influx-token-file or the INFLUX_TOKEN environment variable (secrets never from "
        "the command line, where ps shows them; never printed).",
    )
    influx.add_argument("--influx-url", default=None, metavar="URL", help="e.g. http://influx.example:8086")
    influx.add_argument("--influx-db", default=None, metavar="NAME", help="v1: an existing database (default nacelle)")
    influx.add_argument("--influx-user", default=None, metavar="NAME", help="v1: user, with authentication on")
    influx.add_argument(
        "--influx-password-file", type=Path, default=None, metavar="PATH", help="v1: file with the user's password"
    )
    influx.add_argument("--influx-org", default=None, metavar="ORG", help="v2: organization")
    influx.add_argument("--influx-bucket", default=None, metavar="BUCKET", help="v2: bucket")
    influx.add_argument("--influx-token-file", type=Path, default=None, metavar="PATH", help="v2: file with the token")
    sim.add_argument(
        "--no-evaluation",
        action="store_true",
        help="skip the detection evaluation (federated vs local-only vs centralized models)",
    )
    sim.add_argument(
        "--incidents",
        action="store_true",
        help=(
            "stage what on-call engineers meet (needs 4+ nights): a suspended turbine that keeps sending, "
            "an update signed with the wrong key, a storm night that fails quorum, an operator rollback; "
            "to see the dashboards and alert rules work"
        ),
    )
    sim.add_argument(
        "--keep-running",
        action="store_true",
        help=(
            "after the last night (and the summary), leave brokers, InfluxDB, aggregators, cloud core and "
            "turbines running, write WORKDIR/fleet.json (brokers, ports, keys, node ids, pids) and wait for "
            "Ctrl-C or SIGTERM, then stop everything"
        ),
    )
    sim.add_argument(
        "--live-interval",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="with --keep-running: the cloud core opens a round every SECONDS after the last night (default 600)",
    )
    sim.set_defaults(run=_run_simulate)
    return parser


def _add_registry_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    registry = commands.add_parser(
        "registry",
        help="List the fleet's nodes; suspend or reactivate nodes; enrol members' public keys.",
        description=(
            "Read or change node status in a fleet registry file. A suspended node keeps its key,\n"
            "but its updates are refused (reason suspended_sender) and its region no longer waits\n"
            "for it. The file is rewritten atomically; unknown node ids change nothing. `add` enrols\n"
            "the public signing keys that hosts made for themselves (nacelle pki request)."
        ),
        epilog=(
            "examples:\n"
            "  nacelle registry add offshore-t00007 --region offshore --public-key offshore-t00007.pub "
            "--registry fleet/registry.json\n"
            "  nacelle registry list --registry fleet/registry.json --status suspended\n"
            "  nacelle registry suspend offshore-t00007 --reason 'gearbox replaced' --registry fleet/registry.json\n"
            "  nacelle registry activate offshore-t00007 --registry fleet/registry.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        type=Path,
        required=True,
        metavar="PATH",
        help="the fleet registry file (registry.json of `nacelle keys --out`, or the one the daemons read)",
    )
    actions = registry.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="print node id, region, status, since when and why",
        description="Print every node (id order) with its region, status and the time and reason of its last change.",
    )
    listing.add_argument("--status", choices=[s.value for s in NodeStatus], help="only nodes with this status")
    listing.add_argument("--region", help="only nodes of this region")
    suspend = actions.add_parser(
        "suspend",
        parents=[common],
        help="refuse the updates of NODE...",
        description="Suspend nodes: aggregators refuse their updates from the next round they open.",
    )
    suspend.add_argument("nodes", nargs="+", metavar="NODE", help="node id")
    suspend.add_argument("--reason", default="", help="why, recorded in the registry entry and shown by `list`")
    activate = actions.add_parser(
        "activate",
        parents=[common],
        help="accept the updates of NODE... again",
        description="Reactivate suspended nodes; their reason is cleared.",
    )
    activate.add_argument("nodes", nargs="+", metavar="NODE", help="node id")
    add = actions.add_parser(
        "add",
        parents=[common],
        help="enrol MEMBER's public signing key (or every member of --manifest)",
        description=(
            "Enrol public signing keys: a node of --region (the default role), a region's aggregator\n"
            "(--role aggregator, id aggregator-REGION) or the cloud (--role cloud; creates the registry\n"
            "file if there is none). The same key again changes nothing. Another key (or region) for a\n"
            "member already enrolled is refused unless --replace: that is a key rotation or a\n"
            "re-imaged host, and every host verifying the member's messages needs the new registry.\n"
            "--manifest enrols a JSON list of {id, role, region, public_key_file} at once, all or nothing."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("member", nargs="?", metavar="MEMBER", help="member id: node id, aggregator-REGION or cloud")
    add.add_argument("--role", choices=["node", "aggregator", "cloud"], default="node", help="default node")
    add.add_argument("--region", help="the member's region (nodes and aggregators)")
    add.add_argument("--public-key", type=Path, metavar="FILE", help="its public key: PEM (ID.pub) or hex")
    add.add_argument("--manifest", type=Path, metavar="FILE", help="enrol every member listed in this JSON file")
    add.add_argument("--replace", action="store_true", help="accept another key or region for enrolled members")
    registry.set_defaults(run=_run_registry)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.run(args))
    except (ConfigError, ValueError) as exc:
        print(f"nacelle {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ServiceError, FileExistsError) as exc:
        print(f"nacelle {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
