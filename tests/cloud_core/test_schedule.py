"""When the cloud core opens rounds, with a fake clock (nothing sleeps): cron in the fleet's time
zone across daylight-saving changes, interval schedules, and with --resume-schedule a restarted
cloud core keeps the cadence of its round log instead of opening a round at once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cloud_core.config import CloudConfig
from cloud_core.daemon import CloudCore
from cloud_core.schedule import next_round_time, upcoming
from nacelle.config import ConfigError, build_config
from nacelle.keys import create_fleet, key_path, registry_path
from wire.registry import FleetRegistry
from wire.signing import load_private_key

NOW = 1_763_900_000.0
INTERVAL_S = 600.0


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fleet")
    create_fleet(directory, {"north": 1})
    return directory


def _core(fleet_dir: Path, state_dir: Path) -> CloudCore:
    config = build_config(
        CloudConfig,
        {
            "registry_path": registry_path(fleet_dir),
            "private_key_path": key_path(fleet_dir, "cloud"),
            "state_dir": state_dir,
            "schedule": {"interval_s": INTERVAL_S},
        },
    )
    registry = FleetRegistry.load(config.registry_path)
    return CloudCore(config, registry, load_private_key(config.private_key_path), clock=lambda: NOW)


def _log_round(state_dir: Path, opened_at: float) -> None:
    with open(state_dir / "rounds.jsonl", "a") as log:
        log.write(json.dumps({"round": 1, "opened_at": opened_at}) + "\n")


def test_without_a_logged_round_the_first_round_is_due_at_once(fleet_dir: Path, tmp_path: Path) -> None:
    assert _core(fleet_dir, tmp_path).seconds_until_scheduled_round() == 0.0


def test_the_next_round_is_due_one_interval_after_the_last_one_opened(fleet_dir: Path, tmp_path: Path) -> None:
    core = _core(fleet_dir, tmp_path)
    _log_round(tmp_path, NOW - 100.0)

    assert core.seconds_until_scheduled_round() == pytest.approx(INTERVAL_S - 100.0)


def test_a_round_overdue_is_due_at_once(fleet_dir: Path, tmp_path: Path) -> None:
    core = _core(fleet_dir, tmp_path)
    _log_round(tmp_path, NOW - 2 * INTERVAL_S)

    assert core.seconds_until_scheduled_round() == 0.0


# -- cron in the fleet's time zone ------------------------------------------------------------

BERLIN = "Europe/Berlin"


def _local(times: list[datetime]) -> list[str]:
    return [t.astimezone(ZoneInfo(BERLIN)).strftime("%m-%d %H:%M %Z") for t in times]


def test_nightly_rounds_keep_their_local_time_across_the_spring_change() -> None:
    times = upcoming(datetime(2026, 3, 27, 12, tzinfo=UTC), "0 2 * * *", ZoneInfo(BERLIN), 4)

    # 02:00 does not exist on 29 March: that night's round opens at 03:00 CEST, once.
    assert _local(times) == ["03-28 02:00 CET", "03-29 03:00 CEST", "03-30 02:00 CEST", "03-31 02:00 CEST"]


def test_the_night_02_00_happens_twice_opens_one_round() -> None:
    times = upcoming(datetime(2026, 10, 23, 12, tzinfo=UTC), "0 2 * * *", ZoneInfo(BERLIN), 4)

    assert _local(times) == ["10-24 02:00 CEST", "10-25 02:00 CEST", "10-26 02:00 CET", "10-27 02:00 CET"]


def test_an_interval_schedule_opens_one_interval_after_the_last_round_or_at_once() -> None:
    assert next_round_time(100.0, cron=None, timezone="UTC", interval_s=60.0, last_opened=None) == 100.0
    assert next_round_time(100.0, cron=None, timezone="UTC", interval_s=60.0, last_opened=70.0) == 130.0


@pytest.mark.parametrize(("field", "value"), [("cron", "61 2 * * *"), ("timezone", "Mars/Olympus")])
def test_a_bad_cron_or_time_zone_is_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"schedule.{field}"):
        build_config(
            CloudConfig,
            {"registry_path": "r.json", "private_key_path": "k.pem", "state_dir": ".", "schedule": {field: value}},
        )


class FakeTime:
    """A clock that only moves when the daemon sleeps: no test time passes."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_daemon_opens_rounds_at_the_cron_times_across_the_autumn_change(
    fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTime(datetime(2026, 10, 23, 12, tzinfo=UTC))
    config = build_config(
        CloudConfig,
        {
            "registry_path": registry_path(fleet_dir),
            "private_key_path": key_path(fleet_dir, "cloud"),
            "state_dir": tmp_path,
            "schedule": {"cron": "0 2 * * *", "timezone": BERLIN},
        },
    )
    core = CloudCore(
        config, FleetRegistry.load(config.registry_path), load_private_key(config.private_key_path),
        clock=fake.clock, sleep=fake.sleep,
    )  # fmt: skip
    opened: list[float] = []

    async def run_round() -> object:  # what the round does is covered elsewhere; here: when
        opened.append(fake.now)
        _log_round(tmp_path, fake.now)
        return object()

    async def no_broker() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(core, "run_round", run_round)
    monkeypatch.setattr(core.session, "run", no_broker)

    await core.run(max_rounds=4, resume_schedule=True)

    times = [datetime.fromtimestamp(t, UTC) for t in opened]
    assert _local(times) == ["10-24 02:00 CEST", "10-25 02:00 CEST", "10-26 02:00 CET", "10-27 02:00 CET"]
    assert fake.slept[2] == pytest.approx(25 * 3600)  # the night the clocks go back is an hour longer
