"""cloud_core.alerts: real signed alerts from a real (tiny) fleet, one test per reason an alert
is refused, the InfluxDB point of an accepted one, and the background writing (a stand-in
writer: no InfluxDB here; tests/hierarchy/test_alerts.py has the real one)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.alerts import AlertIngest, alert_point, refusal_point, validate_alert
from cloud_core.config import AlertsConfig
from nacelle.keys import create_fleet, key_path
from telemetry import MetricsWriteError, Point
from wire.envelope import Envelope, seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import NodeAlert, alert_envelope, status_envelope
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import RegionTopics, alert_topic_ids

NOW = 1_763_900_000.0
CONFIG = AlertsConfig()
NODE, OTHER_NODE, SOUTH_NODE = "north-t00001", "north-t00002", "south-t00001"
ALERT = NodeAlert(NODE, "north", 6, 0.75, 0.5, NOW - 30.5, 3)
TOPIC = RegionTopics("north").alert(NODE)


@dataclasses.dataclass(frozen=True)
class Fleet:
    directory: Path
    registry: FleetRegistry

    def key(self, member_id: str) -> Ed25519PrivateKey:
        return load_private_key(key_path(self.directory, member_id))

    def sealed(self, envelope: Envelope, signer: str | None = None) -> bytes:
        return seal(envelope, self.key(signer or envelope.sender))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    directory = tmp_path_factory.mktemp("fleet")
    return Fleet(directory, create_fleet(directory, {"north": 3, "south": 3}))


def _validate(fleet: Fleet, payload: bytes, topic: str = TOPIC) -> NodeAlert:
    return validate_alert(payload, topic, registry=fleet.registry, config=CONFIG, now=NOW)


def _refusal(fleet: Fleet, payload: bytes, topic: str = TOPIC) -> RejectReason:
    with pytest.raises(RejectedMessage) as refused:
        _validate(fleet, payload, topic)
    return refused.value.reason


def test_a_nodes_own_alert_on_its_own_topic_is_accepted(fleet: Fleet) -> None:
    assert _validate(fleet, fleet.sealed(alert_envelope(ALERT, NOW))) == ALERT


def test_the_point_has_exactly_the_dashboards_schema_at_the_windows_time() -> None:
    line = alert_point(ALERT).to_line_protocol()

    assert line == (
        "nacelle_alert,node=north-t00001,region=north "
        "model_version=6i,ratio=1.5,score=0.75,suppressed=3i,threshold=0.5 1763899969500"
    )


def test_a_window_time_kept_in_ms_keeps_its_ms() -> None:
    alert = dataclasses.replace(ALERT, window_ts=1_763_900_000_249 / 1000)  # 1763900000.2489998...

    assert alert_point(alert).to_line_protocol().endswith(" 1763900000249")


def test_an_alert_signed_by_another_node_is_bad_signature(fleet: Fleet) -> None:
    assert _refusal(fleet, fleet.sealed(alert_envelope(ALERT, NOW), signer=OTHER_NODE)) is RejectReason.BAD_SIGNATURE


def test_a_node_on_another_nodes_alert_topic_is_topic_mismatch(fleet: Fleet) -> None:
    other = dataclasses.replace(ALERT, node_id=OTHER_NODE)

    assert _refusal(fleet, fleet.sealed(alert_envelope(other, NOW))) is RejectReason.TOPIC_MISMATCH


def test_a_node_on_another_regions_topic_is_wrong_region(fleet: Fleet) -> None:
    south = dataclasses.replace(ALERT, node_id=SOUTH_NODE, region="south")
    payload = fleet.sealed(alert_envelope(south, NOW))

    assert _refusal(fleet, payload, RegionTopics("north").alert(SOUTH_NODE)) is RejectReason.WRONG_REGION


def test_a_node_claiming_another_region_in_its_envelope_is_wrong_region(fleet: Fleet) -> None:
    claimed = dataclasses.replace(ALERT, region="south")

    assert _refusal(fleet, fleet.sealed(alert_envelope(claimed, NOW))) is RejectReason.WRONG_REGION


def test_only_nodes_alert(fleet: Fleet) -> None:
    aggregator = dataclasses.replace(ALERT, node_id="aggregator-north")
    topic = RegionTopics("north").alert("aggregator-north")

    assert _refusal(fleet, fleet.sealed(alert_envelope(aggregator, NOW)), topic) is RejectReason.UNKNOWN_SENDER


def test_a_status_on_an_alert_topic_is_wrong_kind(fleet: Fleet) -> None:
    payload = fleet.sealed(status_envelope(NODE, "north", "online", 6, NOW))

    assert _refusal(fleet, payload) is RejectReason.WRONG_KIND


def test_a_non_finite_score_is_refused_even_when_signed(fleet: Fleet) -> None:
    payload = fleet.sealed(alert_envelope(dataclasses.replace(ALERT, score=math.inf), NOW))

    assert _refusal(fleet, payload) is RejectReason.NON_FINITE


def test_an_oversized_alert_is_refused_before_it_is_parsed(fleet: Fleet) -> None:
    assert _refusal(fleet, b"\x00" * (CONFIG.max_bytes + 1)) is RejectReason.OVERSIZED


@pytest.mark.parametrize(("window_ts", "created_at"), [(NOW + 301, NOW), (NOW, NOW + 301)])
def test_alerts_from_ahead_of_our_clock_are_refused(fleet: Fleet, window_ts: float, created_at: float) -> None:
    payload = fleet.sealed(alert_envelope(dataclasses.replace(ALERT, window_ts=window_ts), created_at))

    assert _refusal(fleet, payload) is RejectReason.STALE_TIMESTAMP


def test_an_old_alert_is_still_accepted(fleet: Fleet) -> None:
    # A node offline for a week delivers its alerts when it returns: late, but true.
    old = dataclasses.replace(ALERT, window_ts=NOW - 7 * 86_400)

    assert _validate(fleet, fleet.sealed(alert_envelope(old, NOW - 7 * 86_400))) == old


# -- AlertIngest ---------------------------------------------------------------------------


class Writer:
    """A MetricsWriter that keeps what it is given to write later (a spool)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.lines: list[str] = []
        self.calls = 0
        self.fail = fail

    @property
    def points_written(self) -> int:
        return len(self.lines)

    def write(self, points: Sequence[Point]) -> int:
        raise AssertionError("alerts do not wait for InfluxDB: they go to the spool")

    def write_later(self, points: Sequence[Point]) -> None:
        self.calls += 1
        if self.fail:
            raise MetricsWriteError("cannot spool metrics: disk full")
        self.lines.extend(p.to_line_protocol() for p in points)

    def close(self) -> None:
        pass


async def test_ingest_counts_refusals_by_reason_and_spools_what_it_accepts(fleet: Fleet) -> None:
    writer = Writer()
    ingest = AlertIngest(fleet.registry, CONFIG, writer, clock=lambda: NOW)

    await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW)), TOPIC)
    await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW), signer=OTHER_NODE), TOPIC)
    await ingest.handle(b"\xc1", TOPIC)
    assert writer.lines == []  # not before `persist`, the acknowledgements' barrier
    await ingest.persist()

    assert (ingest.accepted, dict(ingest.refused)) == (1, {"bad_signature": 1, "malformed": 1})
    assert writer.lines == [
        alert_point(ALERT).to_line_protocol(),
        refusal_point(TOPIC, RejectReason.BAD_SIGNATURE, NOW).to_line_protocol(),
        refusal_point(TOPIC, RejectReason.MALFORMED, NOW).to_line_protocol(),
    ]
    assert (ingest.written, writer.calls) == (3, 1)  # one spool write for everything since the last


def test_a_refusal_point_names_the_topics_region_and_node_and_the_reason() -> None:
    line = refusal_point(TOPIC, RejectReason.BAD_SIGNATURE, 1_700_000_000.000123).to_line_protocol()
    region, node = alert_topic_ids(TOPIC) or ("", "")
    assert line == f'nacelle_alert_refusal,reason=bad_signature,region={region} count=1i,node="{node}" 1700000000000123'
    assert (
        refusal_point("not/an/alert/topic", RejectReason.MALFORMED, 1.0)
        .to_line_protocol()
        .startswith("nacelle_alert_refusal,reason=malformed,region=? ")
    )


async def test_a_full_list_drops_and_counts_the_newest_alerts(fleet: Fleet) -> None:
    writer = Writer()
    ingest = AlertIngest(fleet.registry, AlertsConfig(max_pending=2), writer, clock=lambda: NOW)
    for _ in range(3):
        await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW)), TOPIC)
    await ingest.persist()
    await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW)), TOPIC)
    await ingest.close()  # spools what came after the last persist

    assert (ingest.accepted, ingest.written, ingest.dropped) == (4, 3, 1)


async def test_a_spool_that_fails_is_logged_and_counted_and_the_ingest_goes_on(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(fail=True)
    ingest = AlertIngest(fleet.registry, CONFIG, writer, clock=lambda: NOW)

    await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW)), TOPIC)
    await ingest.persist()  # returns: the acknowledgements must not wait for a broken disk
    writer.fail = False
    await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW)), TOPIC)
    await ingest.persist()

    assert (ingest.written, ingest.dropped) == (1, 1)
    assert any("could not spool 1 alerts" in r.getMessage() for r in caplog.records)


async def test_without_influxdb_alerts_are_still_verified_and_counted(fleet: Fleet) -> None:
    ingest = AlertIngest(fleet.registry, CONFIG, None, clock=lambda: NOW)

    alert = await ingest.handle(fleet.sealed(alert_envelope(ALERT, NOW)), TOPIC)
    await ingest.close()

    assert alert == ALERT and (ingest.accepted, ingest.written) == (1, 0)
