"""`nacelle simulate --incidents`: the nights an on-call engineer dreads, on a schedule, so the
dashboards and alert rules can be seen doing their job on a simulated fleet. Each incident goes
through the product's own paths (registry file, MQTT, daemons, model store, and the InfluxDB
point `nacelle model rollback` writes):

- after night 1: the operator suspends one turbine, which keeps sending (`suspended_sender` from
  the next round its aggregator opens), and a turbine publishes an update and an anomaly alert
  signed with a key the registry does not know (`bad_signature`, at its aggregator and at the
  cloud core);
- night 3: a storm cuts 60% of every region's turbines off (each right after its night-2
  update), so night 3 fails quorum and keeps the model; they come back after it;
- after night 3: the operator rolls the fleet back to v1 (as `nacelle model rollback 1`); the
  round open at that moment closes as `superseded`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.config import InfluxConfig
from cloud_core.influx import influx_sender
from cloud_core.lifecycle import publish_release, rollback
from cloud_core.metrics import model_point
from cloud_core.model_store import ModelStore
from edge_node.node import EdgeNode
from learning.model import AutoencoderShape, weight_shapes
from nacelle.config import BrokerEndpoint
from nacelle.mqtt import publish_once
from nacelle.registry_admin import set_status
from telemetry import MetricsWriteError
from wire.envelope import seal
from wire.messages import NodeAlert, NodeUpdate, alert_envelope, update_envelope
from wire.registry import FleetRegistry, NodeStatus

log = logging.getLogger(__name__)

STORM_SHARE = 0.6  # of each region's turbines offline for the storm night: below the default quorum
NIGHTS_NEEDED = 4


@dataclass
class IncidentContext:
    """What the incidents act on; built by the simulation once the fleet runs."""

    registry_path: Path
    registry: FleetRegistry
    nodes: list[EdgeNode]
    node_tasks: list[asyncio.Task[None]]  # replaced in place when turbines come back
    store: ModelStore
    cloud_endpoint: BrokerEndpoint
    cloud_key: Ed25519PrivateKey
    region_endpoint: Callable[[str, str], BrokerEndpoint]  # (region, identity) → endpoint
    influx: InfluxConfig | None
    say: Callable[[str], None]
    happened: list[str] = field(default_factory=list)


class Incidents:
    def __init__(self, context: IncidentContext) -> None:
        self.context = context
        self._offline: list[int] = []
        self._storm_tasks: list[asyncio.Task[None]] = []

    def _note(self, text: str) -> None:
        self.context.happened.append(text)
        self.context.say(f"  incident: {text}")

    async def after_round(self, round_id: int) -> None:
        """Called as soon as the simulation sees round `round_id` logged. The next round may
        already be open by then, so the storm is armed a round early."""
        if round_id == 1:
            await self._suspend_and_forge()
            self._arm_storm()
        elif round_id == 3:
            self._after_the_storm()
            await self._rollback(1)

    def _by_region(self) -> dict[str, list[int]]:
        regions: dict[str, list[int]] = {}
        for index, node in enumerate(self.context.nodes):
            regions.setdefault(node.config.region, []).append(index)
        return regions

    async def _suspend_and_forge(self) -> None:
        context = self.context
        regions = list(self._by_region().values())  # the last turbines of a region are spared by the storm
        first = regions[0][-1]
        second = regions[-1][-1] if len(regions) > 1 else regions[0][-2]  # another region's, if any
        suspended = context.nodes[first].config.node_id
        set_status(context.registry_path, [suspended], NodeStatus.SUSPENDED, reason="simulated incident")
        self._note(f"operator suspended {suspended}; it keeps sending updates")
        forger = context.nodes[second]
        await self._publish_forged(forger, round_id=2)
        self._note(f"{forger.config.node_id} published a round-2 update and an alert signed with the wrong key")

    async def _publish_forged(self, node: EdgeNode, round_id: int) -> None:
        """An update and an alert under `node`'s own TLS identity (the broker lets them in) whose
        signatures no registered key verifies: what a turbine with a replaced, unregistered key
        sends."""
        shapes = weight_shapes(AutoencoderShape())
        delta = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
        config = node.config
        now = time.time()
        update = NodeUpdate(config.node_id, config.region, round_id, node.state.model_version, delta, 10, 0.1)
        alert = NodeAlert(config.node_id, config.region, node.state.model_version, 9.0, 1.0, now, 0)
        key = Ed25519PrivateKey.generate()
        endpoint = self.context.region_endpoint(config.region, config.node_id)
        await publish_once(
            endpoint,
            f"incident-{config.node_id}",
            [
                (node.topics.update(config.node_id), seal(update_envelope(update, "int8-zstd", now), key)),
                (node.topics.alert(config.node_id), seal(alert_envelope(alert, now), key)),
            ],
        )

    def _arm_storm(self) -> None:
        """Each storm turbine goes offline as soon as it has published its night-2 update, so
        it is gone before night 3 opens, however soon that is."""
        for members in self._by_region().values():
            self._offline += members[: max(1, round(STORM_SHARE * len(members)))]
        for index in self._offline:
            self._storm_tasks.append(asyncio.create_task(self._cut_off_after_night_2(index)))
        self._note(f"a storm will cut {len(self._offline)} turbines off for night 3")

    async def _cut_off_after_night_2(self, index: int) -> None:
        node = self.context.nodes[index]
        while node.state.last_trained_round < 2:
            await asyncio.sleep(0.05)
        self.context.node_tasks[index].cancel()

    def _after_the_storm(self) -> None:
        context = self.context
        for task in self._storm_tasks:
            task.cancel()
        for index in self._offline:
            context.node_tasks[index] = asyncio.create_task(context.nodes[index].session.run())
        self._note(f"{len(self._offline)} turbines are back online")
        self._offline = []

    async def _rollback(self, version: int) -> None:
        context = self.context
        names = list(weight_shapes(AutoencoderShape()))
        meta, weights = rollback(context.store, version, names, time.time())
        await publish_release(
            context.cloud_endpoint, meta, weights, context.registry.cloud.member_id, context.cloud_key
        )
        if context.influx is not None and context.influx.url is not None:
            sender = influx_sender(context.influx)
            try:
                sender.write(
                    [
                        model_point(
                            meta.version,
                            meta.parent_version,
                            meta.round_id,
                            "rollback",
                            None,
                            int(meta.created_at * 1000),
                        )
                    ]
                )
            except MetricsWriteError as exc:
                log.warning("the simulated rollback is not recorded in InfluxDB: %s", exc)
            finally:
                sender.close()
        self._note(f"operator rolled the fleet back to v{version} (stored and published as v{meta.version})")
