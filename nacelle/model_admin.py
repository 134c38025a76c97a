"""`nacelle model list | show VERSION | rollback VERSION`: the cloud's model history for
operators, read from the cloud core's state directory (its config file says where)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from nacelle.config import load_config
from nacelle.processes import ServiceError

if TYPE_CHECKING:
    from cloud_core.config import CloudConfig
    from cloud_core.model_store import ModelVersion

_DESCRIPTION = (
    "Every global model version the cloud core stored, with its lineage (round, parent version,\n"
    "participation per region, codec, holdout loss, sha256 of the weights).\n\n"
    "rollback VERSION stores VERSION's weights again as a new, newest version (parent: the current\n"
    "one), signs it with the cloud key and publishes it, retained, to the cloud broker: every node\n"
    "loads it (nodes only accept newer versions, hence a new number). A running cloud core serves\n"
    "it from its next round on; a round open during the rollback closes as 'superseded'."
)


def add_model_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    model = commands.add_parser(
        "model",
        help="List, inspect and roll back global model versions.",
        description=_DESCRIPTION,
        epilog="example: nacelle model rollback 12 --config /etc/nacelle/cloud.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in [("list", "one line per stored version"), ("show", "one version's full record")]:
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, required=True, help="the cloud core's TOML configuration")
        if name == "show":
            sub.add_argument("version", type=int, help="version number (as in `list`)")
    back = actions.add_parser("rollback", help="republish an earlier version as the newest", description=_DESCRIPTION)
    back.add_argument("--config", type=Path, required=True, help="the cloud core's TOML configuration")
    back.add_argument("version", type=int, help="the version whose weights the fleet goes back to")
    back.add_argument("--no-publish", action="store_true", help="store it only; the cloud core publishes it later")
    model.set_defaults(run=run_model)


def run_model(args: argparse.Namespace) -> int:
    import aiomqtt

    from cloud_core.config import CloudConfig
    from cloud_core.lifecycle import format_versions, publish_release, rollback, version_lines
    from cloud_core.model_store import ModelStore
    from learning.model import AutoencoderShape, weight_shapes
    from nacelle.mqtt import PublishRefused
    from wire.registry import FleetRegistry
    from wire.signing import load_private_key

    config = load_config(CloudConfig, args.config)
    store = ModelStore(config.state_dir)
    names = list(weight_shapes(AutoencoderShape(config.model.n_features, config.model.hidden, config.model.latent)))
    if args.action == "list":
        print(format_versions(version_lines(store, names)))
        return 0
    if args.action == "show":
        meta, _ = store.load(args.version, names)
        print(json.dumps(asdict(meta), indent=2))
        return 0
    meta, weights = rollback(store, args.version, names, time.time())
    print(f"stored v{meta.version}: the weights of v{args.version} (replacing v{meta.parent_version} as newest)")
    if not args.no_publish:
        cloud_id = FleetRegistry.load(config.registry_path).cloud.member_id
        key = load_private_key(config.private_key_path)
        try:
            asyncio.run(publish_release(config.broker, meta, weights, cloud_id, key))
        except (aiomqtt.MqttError, PublishRefused) as exc:
            raise ServiceError(
                f"stored v{meta.version} but could not publish it to {config.broker.host}:{config.broker.port} "
                f"({exc}); the cloud core publishes it when its next round opens"
            ) from exc
        print(f"published v{meta.version} (retained) to {config.broker.host}:{config.broker.port}")
    _record_rollback(config, meta)
    return 0


def _record_rollback(config: CloudConfig, meta: ModelVersion) -> None:
    """The rollback's `nacelle_model` point (event=rollback), straight to InfluxDB: the cloud
    core's spool belongs to the running daemon. A failure is reported, the rollback stands."""
    from cloud_core.influx import influx_sender
    from cloud_core.metrics import model_point
    from telemetry import MetricsWriteError

    if config.influx.url is None:
        return
    point = model_point(meta.version, meta.parent_version, meta.round_id, "rollback", None, int(meta.created_at * 1000))
    sender = influx_sender(config.influx)
    try:
        sender.write([point])
        print(f"recorded the rollback in InfluxDB ({config.influx.url})")
    except MetricsWriteError as exc:
        print(f"warning: the rollback is not recorded in InfluxDB: {exc}", file=sys.stderr)
    finally:
        sender.close()
