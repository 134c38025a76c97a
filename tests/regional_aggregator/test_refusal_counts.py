"""The refusal counts file: read back what was saved, coalesce a burst into one write."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

from regional_aggregator.refusal_counts import RefusalCountsFile, RoundRefusals


def test_saved_counts_are_read_back_with_their_round(tmp_path: Path) -> None:
    RefusalCountsFile(tmp_path / "refusals.json").save(RoundRefusals(4, Counter(malformed=2, stale=1)))
    assert RefusalCountsFile(tmp_path / "refusals.json").load() == RoundRefusals(4, Counter(malformed=2, stale=1))


def test_no_file_means_no_refusals_and_an_unreadable_one_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "refusals.json"
    assert RefusalCountsFile(path).load() == RoundRefusals(None, Counter())
    path.write_text('{"round_id": 3}')
    with caplog.at_level(logging.WARNING):
        assert RefusalCountsFile(path).load() == RoundRefusals(None, Counter())
    assert "unreadable" in caplog.text


async def test_a_burst_is_written_once_with_its_last_counts(tmp_path: Path) -> None:
    path = tmp_path / "refusals.json"
    counts = RefusalCountsFile(path, interval_s=0.05)
    running: Counter[str] = Counter()
    for _ in range(100):
        running["malformed"] += 1
        counts.save_soon(RoundRefusals(7, running))
    assert not path.exists()
    await asyncio.sleep(0.2)
    assert RefusalCountsFile(path).load() == RoundRefusals(7, Counter(malformed=100))

    counts.save_soon(RoundRefusals(7, Counter(malformed=101)))
    counts.flush()  # at once, as when the daemon stops
    assert RefusalCountsFile(path).load().counts == Counter(malformed=101)
