"""Every benchmark runs at its tiny size, so that none of them rots. Nothing here judges a time:
benchmarks are not tests. The Flower side needs its own virtualenv (minutes to install), so it
runs only with `python -m bench --only flower --size tiny`; here its Nacelle side runs, and the
Flower app is checked to compile."""

from __future__ import annotations

import json
import py_compile
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import codecs, fleet_round, flower, ingest
from bench.machine import REPO
from bench.results import Section, compare, document, load, render, save

pytestmark = [pytest.mark.broker, pytest.mark.influx, pytest.mark.slow]


def _numbers(section: Section) -> list[float]:
    return [v for row in section.rows for v in row.values() if isinstance(v, int | float)]


def test_codecs_benchmark_measures_every_codec() -> None:
    section = codecs.run("tiny")

    variants = [row["variant"] for row in section.rows]
    assert "int8-zstd (default)" in variants and "topk-int8-zstd 1/16" in variants
    assert all(row["bytes"] > 0 for row in section.rows)
    assert "auc" in render(section)


def test_ingest_benchmark_runs_pure_through_mosquitto_and_for_memory(tmp_path: Path) -> None:
    section = ingest.run("tiny", tmp_path)

    cases = [row["case"] for row in section.rows]
    assert any("mosquitto" in case for case in cases) and any("memory" in case for case in cases)
    assert all(value >= 0 for value in _numbers(section))


def test_fleet_round_benchmark_takes_a_small_round_apart_against_its_floor(tmp_path: Path) -> None:
    section = fleet_round.run("tiny", tmp_path)

    row = section.rows[0]
    assert row["turbines"] == fleet_round.SIZES["tiny"][0]
    assert row["floor_s"] > 0 and row["last_round_over_floor"] > 0
    assert row["wire_cpu_s"] >= 0 and row["floor_and_wire_s"] >= row["floor_s"]
    assert any("critical path" in note for note in section.notes)
    assert any("wire alone" in note.lower() for note in section.notes)


def test_flower_benchmarks_nacelle_side_and_the_flower_app_compiles(tmp_path: Path) -> None:
    nacelle = flower.run_nacelle(4, 2, tmp_path)
    flower.write_data(tmp_path / "data.npy", 4)

    assert len(nacelle["rounds_s"]) == 2 and all(seconds > 0 for seconds in nacelle["rounds_s"])
    py_compile.compile(str(REPO / "bench" / "flower_app.py"), doraise=True)


def test_nacelle_rounds_are_timed_like_flowers_from_the_previous_rounds_end() -> None:
    records = [{"opened_at": 100.0, "closed_at": 105.0}, {"opened_at": 105.5, "closed_at": 108.0}]

    assert flower.nacelle_periods(records) == [5.0, 3.0]


def test_results_are_saved_and_compared_before_after(tmp_path: Path) -> None:
    before = Section("codecs", "Update codecs", [{"variant": "int8-zstd", "bytes": 4400, "encode_us": 100.0}])
    after = Section("codecs", "Update codecs", [{"variant": "int8-zstd", "bytes": 4400, "encode_us": 50.0}])
    save(tmp_path / "a.json", document({"cores": 2}, ["python", "-m", "bench"], "tiny", [before]))
    save(tmp_path / "b.json", document({"cores": 2}, ["python", "-m", "bench"], "tiny", [after]))

    table = compare(load(tmp_path / "a.json"), load(tmp_path / "b.json"))

    assert "encode_us" in table and "0.500" in table


def test_command_line_writes_json_with_the_machine_it_ran_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "result.json"
    measured = Section("codecs", "Update codecs", [{"variant": "int8-zstd", "bytes": 4400}])
    monkeypatch.setattr(bench_main, "_runner", lambda name: lambda size, workdir: measured)  # measured above

    assert bench_main.main(["--size", "tiny", "--only", "codecs", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    assert bench_main.main(["--compare", str(out), str(out)]) == 0

    data = json.loads(out.read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["torch"] and data["machine"]["git_commit"]
    assert data["sections"][0]["rows"] == measured.rows
    printed = capsys.readouterr().out
    assert "results:" in printed and "after/before" in printed
