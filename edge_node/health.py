"""`nacelle edge-health`: is this edge node online, and does it run the fleet's current model?

Asked on the node's own host with the node's own configuration (its certificate, the registry),
after a restart: deploy/ansible's rolling upgrade waits for it before the next batch. The
answer comes from the regional broker's retained messages, signatures verified, never from the
node's files: the node's status (published "online" with its model version when it connects,
"offline" as its last will or when it stops) and the cloud's global model. A node is healthy
when its status is online and its version is the model's. `judge` decides (pure); `check`
connects, waits for the answer or the timeout, and never disturbs the node's own session (it
connects under a client id of its own, with a clean session).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

import aiomqtt

from edge_node.config import EdgeConfig
from nacelle.tls import client_context
from wire.envelope import Envelope, Kind, open_envelope
from wire.errors import RejectedMessage
from wire.messages import model_version
from wire.registry import FleetRegistry
from wire.topics import MODEL_TOPIC, RegionTopics

log = logging.getLogger(__name__)

# A status is ~150 bytes; a model of the default autoencoder ~20 KB (EdgeConfig bounds it).
_STATUS_MAX_BYTES = 4096


@dataclass(frozen=True)
class Health:
    healthy: bool
    message: str


def judge(node_id: str, status: Envelope | None, model: int | None, refused: str = "") -> Health:
    """Healthy when `status` (the node's verified retained status) says online at the version
    of `model` (the retained global model's version); otherwise why not, for the operator."""
    note = f" ({refused})" if refused else ""
    if status is None:
        return Health(False, f"{node_id}: no status on the broker yet: the node has not connected{note}")
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.created_at))
    state = status.body.get("state")
    if state != "online":
        return Health(False, f"{node_id}: {state} since {since}{note}")
    if model is None:
        return Health(
            False, f"{node_id}: online since {since}, but no global model on the broker (cloud core and bridge up?)"
        )
    if status.base_version != model:
        return Health(
            False,
            f"{node_id}: online since {since} with model v{status.base_version}; the fleet's model is v{model}",
        )
    return Health(True, f"{node_id}: online since {since} with model v{model}, the fleet's current one")


class _Observed:
    """The newest verified status and model version seen, and the last refusal."""

    def __init__(self, config: EdgeConfig, registry: FleetRegistry) -> None:
        self.config = config
        self.status_topic = RegionTopics(config.region).status(config.node_id)
        self._node_key = registry.keys_for(config.node_id)
        self._cloud_key = registry.keys_for(registry.cloud.member_id)
        self.status: Envelope | None = None
        self.model: int | None = None
        self.refused = ""

    def take(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.status_topic:
                envelope = open_envelope(
                    payload, max_bytes=_STATUS_MAX_BYTES, keys=self._node_key, expected_kind=Kind.STATUS
                )
                if envelope.region != self.config.region:
                    self.refused = f"status signed for region {envelope.region!r}"
                    return
                self.status = envelope
            elif topic == MODEL_TOPIC:
                envelope = open_envelope(
                    payload, max_bytes=self.config.max_message_bytes, keys=self._cloud_key, expected_kind=Kind.MODEL
                )
                self.model = model_version(envelope)
        except RejectedMessage as exc:
            self.refused = f"refused a message on {topic}: {exc}"

    def health(self) -> Health:
        return judge(self.config.node_id, self.status, self.model, self.refused)


async def check(config: EdgeConfig, timeout_s: float = 120.0) -> Health:
    """Wait up to `timeout_s` for the node to be healthy; the last verdict either way."""
    observed = _Observed(config, FleetRegistry.load(config.registry_path))
    endpoint = config.broker
    context = client_context(endpoint)
    last_error = ""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                async with aiomqtt.Client(
                    endpoint.host,
                    endpoint.port,
                    identifier=f"nacelle-health-{config.node_id}-{secrets.token_hex(4)}",
                    tls_context=context,
                    keepalive=endpoint.keepalive_s,
                    timeout=10,
                ) as client:
                    last_error = ""
                    await client.subscribe(observed.status_topic, qos=1)
                    await client.subscribe(MODEL_TOPIC, qos=1)
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        observed.take(str(message.topic), payload)
                        if observed.health().healthy:
                            return observed.health()
        except TimeoutError:
            break
        except aiomqtt.MqttError as exc:
            last_error = f"broker {endpoint.host}:{endpoint.port}: {exc}"
            log.info("%s; retrying", last_error)
            if time.monotonic() + 1.0 >= deadline:
                break
            await asyncio.sleep(1.0)
    if last_error:
        return Health(False, f"{config.node_id}: cannot reach the broker: {last_error}")
    return observed.health()
