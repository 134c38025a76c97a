"""The `nacelle` command: one subcommand per daemon and tool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from nacelle import __version__
from nacelle.config import ConfigError, load_config
from nacelle.processes import ServiceError

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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        logging.getLogger("nacelle").info("stopped by signal")


def _run_edge(args: argparse.Namespace) -> int:
    from edge_node.config import EdgeConfig
    from edge_node.node import EdgeNode

    node = EdgeNode.from_config(load_config(EdgeConfig, args.config))

    async def main() -> None:
        await _until_signalled(asyncio.ensure_future(node.session.run()))

    asyncio.run(main())
    return 0


def _run_region(args: argparse.Namespace) -> int:
    from regional_aggregator.config import RegionConfig
    from regional_aggregator.daemon import RegionalAggregator

    aggregator = RegionalAggregator.from_config(load_config(RegionConfig, args.config))

    async def main() -> None:
        await _until_signalled(asyncio.ensure_future(aggregator.session.run()))

    asyncio.run(main())
    return 0


def _run_cloud(args: argparse.Namespace) -> int:
    from cloud_core.config import CloudConfig
    from cloud_core.daemon import CloudCore

    core = CloudCore.from_config(load_config(CloudConfig, args.config))
    rounds = 1 if args.once else args.rounds

    async def main() -> None:
        await _until_signalled(asyncio.ensure_future(core.run(max_rounds=rounds)))

    asyncio.run(main())
    return 0


def _run_keys(args: argparse.Namespace) -> int:
    from nacelle.keys import create_fleet, region_names, registry_path, split_turbines

    regions = args.region_names.split(",") if args.region_names else region_names(args.regions)
    create_fleet(args.out, split_turbines(args.turbines, regions))
    print(f"fleet of {args.turbines} nodes in {len(regions)} regions: {registry_path(args.out)}")
    print(f"private keys under {args.out / 'keys'} (mode 0600): move each to its own host")
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from simulate.run import SimulationSettings, run_simulation

    settings = SimulationSettings(
        turbines=args.turbines,
        regions=args.regions,
        nights=args.nights,
        workdir=args.workdir,
        summary_json=args.summary_json,
        epochs=args.epochs,
        windows_per_turbine=args.windows,
        seed=args.seed,
        influx_url=args.influx_url,
        influx_database=args.influx_db,
        evaluate=not args.no_evaluation,
    )
    summary = asyncio.run(run_simulation(settings))
    return 0 if summary["ok"] else 1


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
    cloud.set_defaults(run=_run_cloud)

    keys = commands.add_parser(
        "keys",
        help="Create a fleet's Ed25519 identities and registry.",
        description="Create keys for the cloud, one aggregator per region and every node, plus registry.json.",
    )
    keys.add_argument("--out", type=Path, required=True, help="fleet directory to create")
    keys.add_argument("--turbines", type=_positive_int, required=True, help="number of edge nodes")
    keys.add_argument("--regions", type=_positive_int, default=2, help="number of regions (default 2)")
    keys.add_argument("--region-names", help="comma-separated region names (overrides --regions)")
    keys.set_defaults(run=_run_keys)

    sim = commands.add_parser(
        "simulate",
        help="Simulate a fleet on this machine with real brokers, daemons and InfluxDB.",
        description=(
            "Start mosquitto brokers (one per region, bridged to a cloud broker), an InfluxDB, one "
            "aggregator per region, the cloud core and a fleet of turbines (each its own MQTT client "
            "and key, with its own synthetic vibration), run NIGHTS rounds, print a table per round, "
            "then stop everything."
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
        "--workdir",
        type=Path,
        default=Path("runs/sim"),
        help="where keys, configs, logs and state go; emptied first (default runs/sim)",
    )
    sim.add_argument("--summary-json", type=Path, default=None, help="write the run's summary here")
    sim.add_argument("--influx-url", default=None, help="use this InfluxDB (v1 API) instead of starting one")
    sim.add_argument("--influx-db", default="nacelle", help="database name (default nacelle)")
    sim.add_argument(
        "--no-evaluation",
        action="store_true",
        help="skip the detection evaluation (federated vs local-only vs centralized models)",
    )
    sim.set_defaults(run=_run_simulate)
    return parser


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
