"""Model lifecycle for operators: list and show stored versions, and roll back by republishing an
earlier version's weights as a new, newest version (nodes only ever move forward in version
numbers, so a rollback must be newer to reach them). Pure over the model store, except
`publish_release`, which signs and publishes one retained model message."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.model_store import ModelStore, ModelStoreError, ModelVersion, weights_digest
from learning.model import Weights
from nacelle.config import BrokerEndpoint
from nacelle.mqtt import publish_once
from wire.envelope import seal
from wire.messages import ModelRelease, model_envelope
from wire.topics import MODEL_TOPIC


@dataclass(frozen=True)
class VersionLine:
    version: int
    round_id: int
    parent_version: int
    created_at: float
    event: str
    updates_accepted: int | None
    holdout_loss: float | None
    sha256: str


def version_lines(store: ModelStore, names: list[str]) -> list[VersionLine]:
    lines = []
    for version in store.versions():
        meta, _ = store.load(version, names)
        details = meta.details
        event = details.get("event") or details.get("origin") or "published"
        if event == "rollback":
            event = f"rollback to v{details.get('rollback_of')}"
        lines.append(
            VersionLine(
                meta.version,
                meta.round_id,
                meta.parent_version,
                meta.created_at,
                event,
                details.get("updates_accepted"),
                details.get("holdout_loss"),
                meta.sha256,
            )
        )
    return lines


def format_versions(lines: list[VersionLine]) -> str:
    header = f"{'version':>7} {'round':>5} {'parent':>6} {'created (UTC)':<19} {'updates':>7} {'holdout':>8}  event"
    rows = [header]
    for line in lines:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(line.created_at))
        updates = "" if line.updates_accepted is None else str(line.updates_accepted)
        holdout = "" if line.holdout_loss is None else f"{line.holdout_loss:.5f}"
        rows.append(
            f"{'v' + str(line.version):>7} {line.round_id:>5} {line.parent_version:>6} {created:<19} "
            f"{updates:>7} {holdout:>8}  {line.event}"
        )
    return "\n".join(rows)


def rollback(store: ModelStore, target: int, names: list[str], now: float) -> tuple[ModelVersion, Weights]:
    """Store `target`'s weights as the next version (its parent: the current newest)."""
    versions = store.versions()
    if not versions:
        raise ModelStoreError(f"no model stored in {store.directory}")
    current, _ = store.load(versions[-1], names)
    if target == current.version:
        raise ModelStoreError(f"v{target} is already the newest version: nothing to roll back")
    source, weights = store.load(target, names)
    meta = ModelVersion(
        current.version + 1,
        current.round_id,
        current.version,
        now,
        weights_digest(weights),
        {**source.details, "event": "rollback", "rollback_of": target, "replaces": current.version},
    )
    store.save(meta, weights)
    return meta, weights


async def publish_release(
    endpoint: BrokerEndpoint, meta: ModelVersion, weights: Weights, signer: str, key: Ed25519PrivateKey
) -> None:
    """Publish `meta` as the retained, signed global model, as a short-lived client of its own
    (the cloud core daemon may be connected under its client id at the same time). Raises
    PublishRefused when the broker's ACL does not grant the endpoint's identity the model topic."""
    release = ModelRelease(meta.version, meta.round_id, meta.parent_version, weights)
    payload = seal(model_envelope(release, signer, meta.created_at), key)
    await publish_once(endpoint, f"nacelle-model-admin-{meta.version}", [(MODEL_TOPIC, payload)], retain=True)
