"""deploy/grafana/: the dashboards, datasource, dashboard provider and alert rules are what Grafana
expects, and every query in them (panel, template variable, annotation, alert rule) returns rows
from a real InfluxDB after a simulated run, rendered the way Grafana renders it.

Panels that only failure modes feed (alerts, rollbacks, rejections, failed rounds) get their data
from the run's staged incidents (`--incidents`, simulate.incidents) and faulty turbines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regional_aggregator.config import RobustSettings
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from simulate.run import SimulationSettings, run_simulation
from tests.deploy.grafana_model import (
    ALERT_RULES_FILE,
    DASHBOARD_DIR,
    DASHBOARD_PROVIDER_FILE,
    DATASOURCE_FILE,
    EXPRESSION_UID,
    Query,
    alert_queries,
    alert_rule_problems,
    alert_rules,
    all_panels,
    dashboard_problems,
    dashboard_queries,
    datasource_uid,
    evaluate_rule,
    interval_s,
    load_dashboards,
    load_yaml,
    min_interval_s,
    render,
)

README = Path(__file__).resolve().parents[2] / "README.md"
LIVE = [pytest.mark.broker, pytest.mark.influx, pytest.mark.slow]

# Whether each rule fires on the simulated run with its incidents: the storm night's failed
# quorum and the refused updates page; no region is silent for a night and nobody poisons.
EXPECTED_FIRING: dict[str, bool] = {
    "nacelle-round-quorum-failed": True,
    "nacelle-region-silent": False,
    "nacelle-rejection-spike": True,
    "nacelle-poisoned-update": False,
}


def _all_queries() -> list[Query]:
    influx_uid = datasource_uid()
    queries = [q for d in load_dashboards().values() for q in dashboard_queries(d)]
    return queries + alert_queries(load_yaml(ALERT_RULES_FILE), influx_uid)


# ------------------------------------------------------------------------------ the files


def test_dashboards_are_grafana_dashboards_on_the_provisioned_datasource() -> None:
    dashboards = load_dashboards()

    assert set(dashboards) == {
        "nacelle-fleet.json",
        "nacelle-rounds.json",
        "nacelle-node.json",
        "nacelle-security.json",
    }
    assert dashboard_problems(dashboards, datasource_uid()) == []
    node = next(d for d in dashboards.values() if d["uid"] == "nacelle-node")
    assert [v["name"] for v in node["templating"]["list"]] == ["region", "node"]


def test_the_validator_reports_what_grafana_would_refuse() -> None:
    """The structural check is only worth something if it catches the usual mistakes."""
    dashboards = load_dashboards()
    broken = {name: dict(d) for name, d in dashboards.items()}
    fleet = broken["nacelle-fleet.json"]
    first, second, *rest = fleet["panels"]
    fleet["panels"] = [
        {**first, "targets": [{**first["targets"][0], "datasource": {"type": "influxdb", "uid": "other"}}]},
        {**second, "id": first["id"], "gridPos": first["gridPos"]},
        {**rest[0], "targets": [{**rest[0]["targets"][0], "query": "SELECT 1 FROM x WHERE $nowhere"}]},
        *rest[1:],
    ]

    problems = "\n".join(dashboard_problems(broken, datasource_uid()))

    assert "is not the provisioned influxdb uid" in problems
    assert "panel ids are not unique" in problems
    assert "overlap" in problems
    assert "unknown variables ['nowhere']" in problems


def test_the_datasource_is_influxql_at_an_address_the_operator_sets() -> None:
    provisioning = load_yaml(DATASOURCE_FILE)
    (datasource,) = provisioning["datasources"]
    readme = README.read_text()

    assert provisioning["apiVersion"] == 1
    assert (datasource["type"], datasource["access"], datasource["uid"]) == ("influxdb", "proxy", "nacelle-influxdb")
    assert datasource["jsonData"]["version"] == "InfluxQL"
    assert datasource["url"] == "${NACELLE_INFLUXDB_URL}"
    assert datasource["jsonData"]["dbName"] == "${NACELLE_INFLUXDB_DATABASE}"
    for name in (
        "NACELLE_INFLUXDB_URL",
        "NACELLE_INFLUXDB_DATABASE",
        "NACELLE_INFLUXDB_USER",
        "NACELLE_INFLUXDB_PASSWORD",
    ):
        assert name in DATASOURCE_FILE.read_text() and name in readme, name


def test_the_dashboard_provider_loads_the_dashboards_directory() -> None:
    provisioning = load_yaml(DASHBOARD_PROVIDER_FILE)
    (provider,) = provisioning["providers"]
    path = provider["options"]["path"]
    readme = README.read_text()

    assert provisioning["apiVersion"] == 1 and provider["type"] == "file" and provider["folder"]
    assert path.startswith("/") and path.endswith("/nacelle")
    # The README is how the files get from this repository to that path.
    assert f"deploy/grafana/dashboards:{path}" in readme and path in readme
    assert sorted(DASHBOARD_DIR.glob("*.json")), "no dashboards to provision"


def test_alert_rules_are_grafana_rules_on_the_provisioned_datasource() -> None:
    rules_file = load_yaml(ALERT_RULES_FILE)
    rules = alert_rules(rules_file)

    assert alert_rule_problems(rules_file, datasource_uid(), load_dashboards()) == []
    assert {rule["uid"] for rule in rules} == set(EXPECTED_FIRING)
    assert {rule["uid"] for rule in rules if rule["labels"]["severity"] == "page"} == {
        "nacelle-region-silent",
        "nacelle-rejection-spike",
    }


def test_the_poisoning_threshold_is_the_aggregators_outlier_warning() -> None:
    warning = RobustSettings().outlier_warning
    (rule,) = [r for r in alert_rules(load_yaml(ALERT_RULES_FILE)) if r["uid"] == "nacelle-poisoned-update"]
    threshold = next(d for d in rule["data"] if d["refId"] == rule["condition"])["model"]["conditions"][0]
    outlier_panels = [
        panel
        for dashboard in load_dashboards().values()
        for panel in all_panels(dashboard["panels"])
        if "outlier_score" in str(panel.get("targets")) and panel["type"] != "table"
    ]

    assert threshold["evaluator"] == {"type": "gt", "params": [warning]}
    assert outlier_panels
    for panel in outlier_panels:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1]["value"] == warning, panel["title"]


def test_every_query_has_a_unique_key() -> None:
    keys = [q.key for q in _all_queries()]

    assert len(keys) == len(set(keys)), "two queries share a key: make panel titles unique"


def test_only_the_last_seen_panels_read_beyond_the_time_range() -> None:
    """Everything else is bounded by $timeFilter: an unbounded query reads every shard of a
    years-old database. A turbine silent for longer than the range must still say when it was
    last seen."""
    unbounded = {q.key for q in _all_queries() if "$timeFilter" not in q.text and not q.text.startswith("SHOW ")}

    assert unbounded == {"nacelle-node/Last seen/A", "nacelle-node/Last round contributed/A"}


def test_queries_render_the_way_grafana_sends_them_to_influxdb() -> None:
    query = (
        'SELECT mean("x") FROM "m" WHERE "region" =~ /^$region$/ AND "node" =~ /^${node}$/ AND $timeFilter '
        "GROUP BY time($__interval)"
    )

    rendered = render(query, {"region": ["off.shore", "on/shore"], "node": "t-1"}, start_ms=1, end_ms=2, interval=600)

    assert rendered == (
        'SELECT mean("x") FROM "m" WHERE "region" =~ /^(off\\.shore|on\\/shore)$/ AND "node" =~ /^t-1$/ '
        "AND time >= 1ms and time <= 2ms GROUP BY time(10m)"
    )
    assert interval_s(7 * 86400, 1000, 60) == 600  # 7 days over ~1000 pixels: 10-minute buckets
    assert interval_s(3600, 1000, 60) == 60  # never below the datasource's minimum interval
    with pytest.raises(ValueError, match="unresolved"):
        render("SELECT 1 FROM m WHERE $unknown", {}, start_ms=1, end_ms=2, interval=60)


def test_alert_rules_fire_on_the_answers_they_are_meant_for() -> None:
    """The reduce and threshold of each rule, on answers shaped like InfluxDB's."""
    rules = {rule["uid"]: rule for rule in alert_rules(load_yaml(ALERT_RULES_FILE))}

    def answer(column: str, per_region: Mapping[str, float]) -> list[dict[str, Any]]:
        return [
            {"name": "m", "tags": {"region": r}, "columns": ["time", column], "values": [[0, v]]}
            for r, v in per_region.items()
        ]

    def firing(uid: str, series: list[dict[str, Any]]) -> list[dict[str, str]] | str:
        outcome = evaluate_rule(rules[uid], {"A": series})
        return outcome.firing if series else outcome.state

    assert firing("nacelle-round-quorum-failed", [{"name": "m", "columns": ["time", "rounds"], "values": [[0, 1]]}])
    assert firing("nacelle-round-quorum-failed", []) == "Normal"
    assert firing("nacelle-region-silent", answer("accepted", {"north": 0, "south": 120})) == [{"region": "north"}]
    assert firing("nacelle-region-silent", []) == "Alerting"  # no round recorded at all
    assert firing("nacelle-rejection-spike", answer("rejected_share", {"north": 0.2, "south": 0.01})) == [
        {"region": "north"}
    ]
    assert firing("nacelle-poisoned-update", answer("outlier_score", {"north": 9.5, "south": 1.7})) == [
        {"region": "north"}
    ]
    assert firing("nacelle-poisoned-update", answer("outlier_score", {"north": 3.9})) == []


# ------------------------------------------------------------------------------ against a simulated run


@dataclass(frozen=True)
class SimulatedFleet:
    influx: RunningInfluxDB
    regions: list[str]
    nodes: dict[str, list[str]]  # by region, as the $node variable lists them


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedFleet]:
    """One small simulated run (real brokers, aggregators, cloud core, InfluxDB): the slow part."""
    tmp_path = tmp_path_factory.mktemp("grafana")
    with start_influxdb(tmp_path / "influxdb") as influx:
        settings = SimulationSettings(
            turbines=12,
            regions=2,
            nights=4,
            windows_per_turbine=96,
            workdir=tmp_path / "sim",
            summary_json=tmp_path / "summary.json",
            influx_url=influx.url,
            evaluate=False,  # detection figures feed no panel
            incidents=True,  # refusals, a suspended turbine, a failed quorum, a rollback: see simulate.incidents
            faulty_share=1.0,  # every turbine develops a fault: each one's alert panels have rows
        )
        summary = asyncio.run(run_simulation(settings))
        assert summary["ok"], summary
        regions = _tag_values(influx, 'SHOW TAG VALUES FROM "nacelle_region" WITH KEY = "region"')
        nodes = {
            region: _tag_values(
                influx, f'SHOW TAG VALUES FROM "nacelle_node" WITH KEY = "node" WHERE "region" = \'{region}\''
            )
            for region in regions
        }
        yield SimulatedFleet(influx, regions, nodes)


def _tag_values(influx: RunningInfluxDB, statement: str) -> list[str]:
    return [row["value"] for row in influx.query_rows(statement)]


def _scenarios(fleet: SimulatedFleet) -> list[dict[str, str | Sequence[str]]]:
    """Variable values an operator would pick: every region (All), then one region and one of its turbines."""
    first = fleet.regions[0]
    return [
        {"region": fleet.regions, "node": fleet.nodes[first][0]},
        {"region": [fleet.regions[-1]], "node": fleet.nodes[fleet.regions[-1]][-1]},
    ]


@pytest.mark.parametrize("query", [pytest.param(q, id=q.key, marks=LIVE) for q in _all_queries()])
def test_query_returns_rows_from_the_simulated_run(query: Query, fleet: SimulatedFleet) -> None:
    now_ms = int(time.time() * 1000)
    interval = interval_s(query.range_s, query.max_data_points, min_interval_s())
    for values in _scenarios(fleet):
        statement = render(
            query.text, values, start_ms=now_ms - int(query.range_s * 1000), end_ms=now_ms, interval=interval
        )
        rows = sum(len(series.get("values", [])) for series in fleet.influx.query(statement))
        assert rows > 0, f"{query.key}: no rows for {statement}"


@pytest.mark.broker
@pytest.mark.influx
@pytest.mark.slow
def test_alert_rules_fire_for_the_incidents_and_only_for_them(fleet: SimulatedFleet) -> None:
    now_ms = int(time.time() * 1000)
    outcomes = {}
    for rule in alert_rules(load_yaml(ALERT_RULES_FILE)):
        answers = {}
        for item in rule["data"]:
            if item["datasourceUid"] == EXPRESSION_UID:
                continue
            window = item["relativeTimeRange"]
            statement = render(
                item["model"]["query"],
                {},
                start_ms=now_ms - window["from"] * 1000,
                end_ms=now_ms - window["to"] * 1000,
                interval=item["model"]["intervalMs"] / 1000,
            )
            answers[item["refId"]] = fleet.influx.query(statement)
        outcomes[rule["uid"]] = evaluate_rule(rule, answers)

    assert {uid: outcome.fires for uid, outcome in outcomes.items()} == EXPECTED_FIRING, outcomes
