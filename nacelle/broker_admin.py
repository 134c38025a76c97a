"""`nacelle broker render`: write a broker host's mosquitto.conf and ACL from the fleet registry
(broker.deploy), only when their text changed, saying which changed: a changed mosquitto.conf
needs a broker restart, a changed acl only a SIGHUP (mosquitto re-reads its acl_file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nacelle.keys import OBSERVER_ID

# broker.deploy is imported by the command itself: it pulls in the broker launcher and paho,
# which every other `nacelle` command would otherwise pay for at start.


def add_broker_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    broker = commands.add_parser(
        "broker",
        help="Render a broker host's mosquitto.conf and ACL from the fleet registry.",
        description="Configuration files of the fleet's mosquitto brokers on their hosts.",
    )
    actions = broker.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render",
        help="write OUT/mosquitto.conf and OUT/acl when they change",
        description=(
            "Render the cloud broker's (no --region) or a regional broker's mosquitto.conf and acl\n"
            "into --out: TLS with client certificates of the fleet CA, the ACL from the registry (the\n"
            "region's nodes and aggregator; on the cloud broker the cloud and the bridges; observers\n"
            "everywhere), persistence, limits and, for a region, the bridge to the cloud broker.\n"
            "A file is written only when its text changed; each written file is printed as\n"
            "`changed: PATH` (mosquitto.conf: restart the broker; acl: SIGHUP is enough)."
        ),
        epilog=(
            "example: nacelle broker render --registry /etc/nacelle/registry.json --out /etc/nacelle/mosquitto/"
            "region-offshore --region offshore --port 8883 --data-dir /var/lib/nacelle/mosquitto/region-offshore "
            "--log-file /var/log/nacelle/mosquitto-region-offshore.log --cafile ... --certfile ... --keyfile ... "
            "--cloud-host mqtt.example.com --cloud-port 8883 --bridge-certfile ... --bridge-keyfile ..."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument("--registry", type=Path, required=True, help="the fleet registry")
    render.add_argument("--out", type=Path, required=True, help="directory of mosquitto.conf and acl")
    render.add_argument("--region", help="a regional broker of this region (default: the cloud broker)")
    render.add_argument("--port", type=int, required=True, help="TLS listener port, e.g. 8883")
    render.add_argument("--listen", default="0.0.0.0", help="listen address (default 0.0.0.0: every interface)")
    render.add_argument("--data-dir", type=Path, required=True, help="mosquitto's persistence directory")
    render.add_argument("--log-file", type=Path, required=True, help="mosquitto's log file")
    render.add_argument("--user", help="the user mosquitto drops to when started as root (default: mosquitto)")
    render.add_argument("--cafile", type=Path, required=True, help="the fleet CA certificate")
    render.add_argument("--certfile", type=Path, required=True, help="this broker's server certificate")
    render.add_argument("--keyfile", type=Path, required=True, help="its key")
    render.add_argument("--cloud-host", help="regional: the cloud broker's host (named in its certificate)")
    render.add_argument("--cloud-port", type=int, help="regional: the cloud broker's port")
    render.add_argument("--bridge-certfile", type=Path, help="regional: the bridge's client certificate")
    render.add_argument("--bridge-keyfile", type=Path, help="regional: its key")
    render.add_argument(
        "--observer",
        action="append",
        metavar="ID",
        help=f"a monitoring identity that may read rounds, models, statuses, partials, alerts (default {OBSERVER_ID})",
    )
    render.set_defaults(run=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    from broker.deploy import ACL_NAME, CONFIG_NAME, BridgeUplink, BrokerHost, render_broker_files, write_changed
    from wire.registry import FleetRegistry

    bridge = [args.cloud_host, args.cloud_port, args.bridge_certfile, args.bridge_keyfile]
    if args.region is None and any(value is not None for value in bridge):
        raise ValueError("--cloud-host, --cloud-port and --bridge-* are for a regional broker: give --region")
    if args.region is not None and any(value is None for value in bridge):
        raise ValueError("a regional broker needs --cloud-host, --cloud-port, --bridge-certfile and --bridge-keyfile")
    host = BrokerHost(
        config_dir=args.out.absolute(),
        port=args.port,
        data_dir=args.data_dir.absolute(),
        log_path=args.log_file.absolute(),
        cafile=args.cafile.absolute(),
        certfile=args.certfile.absolute(),
        keyfile=args.keyfile.absolute(),
        region=args.region,
        uplink=None
        if args.region is None
        else BridgeUplink(
            args.cloud_host, args.cloud_port, args.bridge_certfile.absolute(), args.bridge_keyfile.absolute()
        ),
        listen=args.listen,
        user=args.user,
        observers=tuple(args.observer) if args.observer else (OBSERVER_ID,),
    )
    written = write_changed(render_broker_files(host, FleetRegistry.load(args.registry)))
    for path in written:
        print(f"changed: {path}")
    if not written:
        print(f"ok: {args.out / CONFIG_NAME} and {args.out / ACL_NAME} are current")
    return 0
