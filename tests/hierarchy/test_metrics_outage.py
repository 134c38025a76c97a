"""InfluxDB stops while the cloud core closes a round, and comes back on the same port: the round
goes on without waiting for it (model published, round logged), the cloud core keeps running,
and once InfluxDB is back every point the round produced is stored, each exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from learning.model import AutoencoderShape, weight_shapes
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from telemetry import MetricsWriter, Point, SpooledWriter
from tests.hierarchy.conftest import FLEET, Fleet, announced_round
from wire.envelope import seal
from wire.messages import NodeUpdate, update_envelope
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker, pytest.mark.influx]


class StopsInfluxAtClose:
    """The cloud core's writer, wrapped: stops influxd as the round's points are handed over
    (inside the round's close) and counts what the round produced, per measurement."""

    def __init__(self, inner: MetricsWriter, influx: RunningInfluxDB) -> None:
        self.inner, self.influx = inner, influx
        self.produced: Counter[str] = Counter()
        self.returned: int | None = None
        self.write_s = 0.0

    @property
    def points_written(self) -> int:
        return self.inner.points_written

    def write(self, points: Sequence[Point]) -> int:
        self.influx.stop()
        self.produced.update(point.to_line_protocol().split(",", 1)[0].split(" ", 1)[0] for point in points)
        started = time.monotonic()
        self.returned = self.inner.write(points)
        self.write_s = time.monotonic() - started
        return self.returned

    def close(self) -> None:
        self.inner.close()


async def publish_updates(fleet: Fleet) -> list[str]:
    shapes = weight_shapes(AutoencoderShape())
    rng = np.random.default_rng(3)
    nodes = []
    for region, count in FLEET.items():
        announcement = await announced_round(fleet, region)
        for index in range(1, count + 1):
            node = f"{region}-t{index:05d}"
            delta = {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()}
            update = NodeUpdate(node, region, announcement.round_id, announcement.base_version, delta, 100 + index, 0.1)
            payload = seal(update_envelope(update, "int8-zstd", time.time()), fleet.node_key(node))
            async with fleet.client(region, node, identifier=f"test-{node}") as client:
                await client.publish(RegionTopics(region).update(node), payload, qos=1)
            nodes.append(node)
    return nodes


async def start_aggregators(fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]) -> None:
    aggregators = [fleet.aggregator(region, tmp_path / f"agg-{region}") for region in FLEET]
    running.extend(asyncio.create_task(a.session.run()) for a in aggregators)
    await asyncio.gather(*(a.session.connected.wait() for a in aggregators))


async def until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_influxdb_down_at_round_close_loses_no_point_and_stores_none_twice(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    with start_influxdb(tmp_path / "influx") as influx:
        await start_aggregators(fleet, tmp_path, running)
        core = fleet.cloud(
            tmp_path / "cloud",
            # One round now, the next in an hour: the core stays up, as in production.
            schedule={"interval_s": 3600, "regional_deadline_s": 60, "global_deadline_s": 90},
            influx={"url": influx.url, "database": influx.database},
        )
        spooled = core.metrics
        assert isinstance(spooled, SpooledWriter)
        wrapper = StopsInfluxAtClose(spooled, influx)
        core.metrics = wrapper
        cloud = asyncio.create_task(core.run())
        running.append(cloud)

        nodes = await publish_updates(fleet)
        await until(lambda: (tmp_path / "cloud" / "rounds.jsonl").exists(), 60, "the round to close")

        record = json.loads((tmp_path / "cloud" / "rounds.jsonl").read_text().splitlines()[-1])
        assert record["status"] == "published" and record["updates_accepted"] == len(nodes)
        assert (wrapper.returned, record["points_written"]) == (0, 0)
        assert wrapper.write_s < 5  # the close did not wait out the outage
        produced = dict(wrapper.produced)
        assert produced["nacelle_node"] == len(nodes) and produced["nacelle_round"] == 1
        assert spooled.pending_points == sum(produced.values())

        await asyncio.to_thread(influx.restart)  # same port, same data
        assert await asyncio.to_thread(spooled.drain, 60)

        assert not cloud.done()  # the cloud core went on to wait for its next round
        stored = {m: influx.query_rows(f'SELECT count("round") FROM "{m}"')[0]["count"] for m in produced}
        assert stored == produced
        rows = influx.query_rows('SELECT "num_samples" FROM "nacelle_node" GROUP BY "node"')
        assert sorted(row["node"] for row in rows) == sorted(nodes)  # each node once
        assert spooled.points_written == sum(produced.values())


class Crash(Exception):
    """The cloud core's process dying at this point."""


class DiesAfterWriting:
    """The cloud core's writer, wrapped: hands the round's points over, then the process dies
    (before the round is logged)."""

    def __init__(self, inner: MetricsWriter) -> None:
        self.inner = inner

    @property
    def points_written(self) -> int:
        return self.inner.points_written

    def write(self, points: Sequence[Point]) -> int:
        self.inner.write(points)
        raise Crash

    def close(self) -> None:
        self.inner.close()


async def test_a_round_closed_again_after_a_crash_stores_its_points_once(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    with start_influxdb(tmp_path / "influx") as influx:
        await start_aggregators(fleet, tmp_path, running)
        settings: dict[str, object] = {
            "schedule": {"regional_deadline_s": 60, "global_deadline_s": 90},
            "influx": {"url": influx.url, "database": influx.database},
        }
        core = fleet.cloud(tmp_path / "cloud", **settings)
        assert core.metrics is not None
        core.metrics = DiesAfterWriting(core.metrics)
        dying = asyncio.create_task(core.run(max_rounds=1))
        running.append(dying)
        nodes = await publish_updates(fleet)
        with pytest.raises(Crash):
            await asyncio.wait_for(dying, 60)
        assert not (tmp_path / "cloud" / "rounds.jsonl").exists()

        restarted = fleet.cloud(tmp_path / "cloud", **settings)
        [record] = await asyncio.wait_for(restarted.run(max_rounds=1), 60)
        assert record.status == "published" and record.updates_accepted == len(nodes)
        spooled = restarted.metrics
        assert isinstance(spooled, SpooledWriter)
        assert await asyncio.to_thread(spooled.drain, 60)

        # Written twice, stored once: the same series at the same time is one point.
        rounds = influx.query_rows('SELECT "updates_accepted" FROM "nacelle_round"')
        assert [row["updates_accepted"] for row in rounds] == [len(nodes)]
        [count] = influx.query_rows('SELECT count("round") FROM "nacelle_node"')
        assert count["count"] == len(nodes)
