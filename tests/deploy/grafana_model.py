"""What Grafana would do with deploy/grafana/, without a Grafana: read the provisioning files and
dashboards, check their structure, list every InfluxQL query they hold (panels, template
variables, annotations, alert rules), render a query the way Grafana renders it before it reaches
InfluxDB, and evaluate an alert rule's reduce and threshold expressions on the answer.

No Grafana server is installable here and no maintained Python library validates dashboard JSON
(grafanalib and grafana-foundation-sdk build dashboards; the SDK's `from_json` accepts anything),
so the structure checked is the documented one: the fields Grafana needs to load, lay out and
query a dashboard. The rendering follows Grafana's InfluxDB datasource: template variables are
interpolated by the frontend in "regex" format (`applyTemplateVariables`), then the backend
replaces `$timeFilter`, `$interval`, `$__interval_ms` and `$__interval`
(pkg/tsdb/influxdb/models/query.go).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
DATASOURCE_FILE = PROVISIONING_DIR / "datasources" / "nacelle.yaml"
DASHBOARD_PROVIDER_FILE = PROVISIONING_DIR / "dashboards" / "nacelle.yaml"
ALERT_RULES_FILE = PROVISIONING_DIR / "alerting" / "nacelle-rules.yaml"

EXPRESSION_UID = "__expr__"
GRID_COLUMNS = 24
# Core panel plugins of Grafana 10/11: a dashboard must not depend on an installed plugin.
PANEL_TYPES = frozenset(
    {"row", "timeseries", "stat", "table", "bargauge", "gauge", "state-timeline", "status-history", "barchart",
     "piechart", "text", "heatmap", "histogram", "logs"}
)  # fmt: skip
RESULT_FORMATS = frozenset({"time_series", "table", "logs"})
VARIABLE_TYPES = frozenset({"query", "custom", "constant", "textbox", "interval", "datasource", "adhoc"})
# What the InfluxDB backend replaces itself, and the alias patterns of a series name.
BACKEND_MACROS = frozenset({"timeFilter", "interval", "__interval", "__interval_ms"})
NO_DATA_STATES = frozenset({"NoData", "Alerting", "OK", "KeepLast"})
EXEC_ERROR_STATES = frozenset({"Error", "Alerting", "OK", "KeepLast"})
SEVERITIES = frozenset({"page", "ticket"})

# Grafana's variable syntax: $name, [[name]] / [[name:format]], ${name} / ${name:format}.
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::(\w+))?\}")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_RELATIVE_TIME = re.compile(r"^now-(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_DASHBOARD_LINK = re.compile(r"/d/([A-Za-z0-9_-]+)")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard file, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def datasource_uid() -> str:
    (datasource,) = load_yaml(DATASOURCE_FILE)["datasources"]
    return str(datasource["uid"])


def min_interval_s() -> float:
    """The datasource's minimum interval (jsonData.timeInterval), the floor of `$__interval`."""
    (datasource,) = load_yaml(DATASOURCE_FILE)["datasources"]
    return duration_s(str(datasource.get("jsonData", {}).get("timeInterval", "1ms")))


def duration_s(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    if not match:
        raise ValueError(f"not a Grafana duration: {text!r}")
    value, unit = float(match[1]), match[2]
    return value / 1000 if unit == "ms" else value * _UNIT_SECONDS[unit]


def all_panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those folded into collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


# ------------------------------------------------------------------------------------ queries


@dataclass(frozen=True)
class Query:
    """One InfluxQL statement of a dashboard or an alert rule, as written."""

    key: str  # "dashboard-uid/panel title/refId", "dashboard-uid/$variable", "alert:rule-uid/refId"
    text: str
    range_s: float  # seconds of the time range Grafana would give it (dashboard default or rule's)
    max_data_points: int = 1000


def dashboard_range_s(dashboard: Mapping[str, Any]) -> float:
    """Seconds of a dashboard's default time range (`now-7d` to `now`)."""
    time_range = dashboard["time"]
    match = _RELATIVE_TIME.match(time_range["from"])
    if not match or time_range["to"] != "now":
        raise ValueError(f"{dashboard['uid']}: default time range must be now-N(s|m|h|d|w) to now, got {time_range}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    """Every InfluxQL query of a dashboard: variables, annotations, panel targets."""
    uid, range_s = dashboard["uid"], dashboard_range_s(dashboard)
    queries = [
        Query(f"{uid}/${variable['name']}", variable_query(variable), range_s)
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    queries += [
        Query(f"{uid}/annotation:{annotation['name']}", annotation["target"]["query"], range_s)
        for annotation in dashboard["annotations"]["list"]
        if not annotation.get("builtIn")
    ]
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            key = f"{uid}/{panel['title']}/{target['refId']}"
            queries.append(Query(key, target["query"], range_s, int(panel.get("maxDataPoints", 1000))))
    return queries


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's InfluxQL: a string, or since Grafana 10 an object holding it."""
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def alert_queries(rules_file: Mapping[str, Any], influx_uid: str) -> list[Query]:
    return [
        Query(f"alert:{rule['uid']}/{data['refId']}", data["model"]["query"], float(data["relativeTimeRange"]["from"]))
        for group in rules_file["groups"]
        for rule in group["rules"]
        for data in rule["data"]
        if data["datasourceUid"] == influx_uid
    ]


def alert_rules(rules_file: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules_file["groups"] for rule in group["rules"]]


# ------------------------------------------------------------------------------------ rendering


def regex_escape(value: str) -> str:
    """Grafana's kbn.regexEscape, the "regex" variable format."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m[0], value)


def format_value(value: str | Sequence[str], fmt: str) -> str:
    if fmt == "raw":
        return value if isinstance(value, str) else ",".join(value)
    if fmt != "regex":
        raise ValueError(f"variable format {fmt!r} is not one these dashboards use")
    if isinstance(value, str):
        return regex_escape(value)
    escaped = [regex_escape(v) for v in value]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate_variables(text: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """The frontend's step: dashboard variables in "regex" format; anything else stays for the backend."""

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[4]
        fmt = match[3] or match[5] or "regex"
        return format_value(values[name], fmt) if name in values else match[0]

    return _VARIABLE.sub(replace, text)


def round_interval_s(seconds: float) -> float:
    """Grafana's rounding of a computed interval to a readable step (rangeutil.roundInterval)."""
    steps = [
        (0.015, 0.01), (0.035, 0.02), (0.075, 0.05), (0.15, 0.1), (0.35, 0.2), (0.75, 0.5), (1.5, 1), (3.5, 2),
        (7.5, 5), (12.5, 10), (17.5, 15), (25, 20), (45, 30), (90, 60), (210, 120), (450, 300), (750, 600),
        (1050, 900), (1500, 1200), (2700, 1800), (5400, 3600), (9000, 7200), (16200, 10800), (32400, 21600),
        (86400, 43200), (604800, 86400), (1814400, 604800), (3628800, 2592000),
    ]  # fmt: skip
    return next((step for limit, step in steps if seconds < limit), 31536000)


def format_interval(seconds: float) -> str:
    """gtime.FormatInterval: the largest whole unit, as InfluxQL reads it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(1, int(seconds * 1000))}ms"


def interval_s(range_s: float, max_data_points: int, minimum_s: float) -> float:
    return max(minimum_s, round_interval_s(range_s / max_data_points))


def render(
    text: str,
    values: Mapping[str, str | Sequence[str]],
    *,
    start_ms: int,
    end_ms: int,
    interval: float,
) -> str:
    """The statement InfluxDB receives from Grafana for `text` with these variable values."""
    rendered = interpolate_variables(text, values)
    interval_text = format_interval(interval)
    rendered = rendered.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    rendered = rendered.replace("$interval", interval_text)
    rendered = rendered.replace("$__interval_ms", str(math.floor(interval * 1000)))
    rendered = rendered.replace("$__interval", interval_text)
    left = [m[0] for m in _VARIABLE.finditer(rendered)]
    if left:
        raise ValueError(f"unresolved variables {left} in {rendered!r}")
    return rendered


# ------------------------------------------------------------------------------------ alert rules


@dataclass(frozen=True)
class RuleOutcome:
    """What Grafana would decide for a rule on one evaluation."""

    state: str  # "Normal" | "Alerting" | "NoData" | "Error"
    firing: list[dict[str, str]] = field(default_factory=list)  # labels of the alerting instances
    values: list[tuple[dict[str, str], float | None]] = field(default_factory=list)

    @property
    def fires(self) -> bool:
        return self.state == "Alerting"


def query_series(influx_series: Sequence[Mapping[str, Any]]) -> list[tuple[dict[str, str], list[Any]]]:
    """InfluxDB series as Grafana's data frames: one series per value column, tags as labels."""
    series = []
    for one in influx_series:
        tags = dict(one.get("tags") or {})
        columns = one["columns"]
        for index, column in enumerate(columns):
            if column != "time":
                series.append((tags, [row[index] for row in one.get("values", [])]))
    return series


def _reduce(reducer: str, mode: str, values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if mode != "dropNN" and len(numbers) != len(values):
        return None
    if not numbers:
        return None
    reducers = {
        "last": lambda n: n[-1],
        "max": max,
        "min": min,
        "sum": sum,
        "mean": lambda n: sum(n) / len(n),
        "count": len,
    }
    return float(reducers[reducer](numbers))


def _threshold(evaluator: Mapping[str, Any], value: float | None) -> bool:
    if value is None:
        return False
    kind, params = evaluator["type"], [float(p) for p in evaluator["params"]]
    checks = {
        "gt": lambda: value > params[0],
        "lt": lambda: value < params[0],
        "within_range": lambda: params[0] < value < params[1],
        "outside_range": lambda: value < params[0] or value > params[1],
    }
    return bool(checks[kind]())


def evaluate_rule(rule: Mapping[str, Any], answers: Mapping[str, Sequence[Mapping[str, Any]]]) -> RuleOutcome:
    """Evaluate a rule made of queries, one reduce and one threshold (the shape these rules use),
    given InfluxDB's answer (raw series) to each query by refId."""
    data = {item["refId"]: item for item in rule["data"]}
    condition = data[rule["condition"]]["model"]
    if condition["type"] != "threshold":
        raise ValueError(f"{rule['uid']}: the condition must be a threshold expression")
    reduce_model = data[condition["expression"]]["model"]
    if reduce_model["type"] != "reduce":
        raise ValueError(f"{rule['uid']}: the threshold must read a reduce expression")
    series = query_series(answers[reduce_model["expression"]])
    if not series:
        no_data = {"OK": "Normal", "KeepLast": "Normal", "Alerting": "Alerting", "NoData": "NoData"}
        return RuleOutcome(no_data[rule.get("noDataState", "NoData")])
    mode = reduce_model.get("settings", {}).get("mode", "strict")
    (evaluator,) = [item["evaluator"] for item in condition["conditions"]]
    values = [(labels, _reduce(reduce_model["reducer"], mode, points)) for labels, points in series]
    firing = [labels for labels, value in values if _threshold(evaluator, value)]
    return RuleOutcome("Alerting" if firing else "Normal", firing, values)


# ------------------------------------------------------------------------------------ structure


def _datasource_problems(where: str, ref: Any, influx_uid: str) -> list[str]:
    if not isinstance(ref, dict):
        return [f"{where}: datasource must be a {{type, uid}} reference, got {ref!r}"]
    if ref.get("uid") != influx_uid or ref.get("type") != "influxdb":
        return [f"{where}: datasource {ref} is not the provisioned influxdb uid {influx_uid!r}"]
    return []


def _variable_names_used(text: str) -> set[str]:
    return {m[1] or m[2] or m[4] for m in _VARIABLE.finditer(text)}


def _check_query_text(where: str, text: Any, known: set[str]) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        return [f"{where}: empty query"]
    problems = []
    unknown = _variable_names_used(text) - known - BACKEND_MACROS
    if unknown:
        problems.append(f"{where}: unknown variables {sorted(unknown)}")
    if "__timeFilter" in text:
        problems.append(f"{where}: InfluxQL uses $timeFilter, not $__timeFilter")
    return problems


def _check_alias(where: str, target: Mapping[str, Any]) -> list[str]:
    alias = target.get("alias") or ""
    group_by = target["query"].split("GROUP BY", 1)[1] if "GROUP BY" in target["query"] else ""
    return [
        f"{where}: alias $tag_{tag} but the query does not group by {tag!r}"
        for tag in re.findall(r"\$tag_(\w+)", alias)
        if f'"{tag}"' not in group_by
    ]


def _overlaps(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


def _check_panel(where: str, panel: Mapping[str, Any], influx_uid: str, variables: set[str]) -> list[str]:
    problems = []
    if not isinstance(panel.get("id"), int):
        problems.append(f"{where}: id must be an integer")
    if panel.get("type") not in PANEL_TYPES:
        problems.append(f"{where}: type {panel.get('type')!r} is not a core panel type")
    if not isinstance(panel.get("title"), str) or not panel["title"].strip():
        problems.append(f"{where}: no title")
    grid = panel.get("gridPos", {})
    if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
        problems.append(f"{where}: gridPos needs integer x, y, w, h")
    elif grid["x"] < 0 or grid["y"] < 0 or grid["w"] < 1 or grid["h"] < 1 or grid["x"] + grid["w"] > GRID_COLUMNS:
        problems.append(f"{where}: gridPos {grid} is outside the {GRID_COLUMNS}-column grid")
    if panel.get("type") in {"row", "text"}:
        return problems
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    levels = [step.get("value") for step in steps[1:]]
    if steps and (steps[0].get("value") is not None or levels != sorted(levels)):
        problems.append(f"{where}: thresholds must start at the base step (value null) and rise")
    # On call, a panel must say what it answers and when it is expected to be empty.
    if not str(panel.get("description", "")).strip():
        problems.append(f"{where}: no description")
    problems += _datasource_problems(where, panel.get("datasource"), influx_uid)
    targets = panel.get("targets") or []
    if not targets:
        problems.append(f"{where}: no targets")
    ref_ids = [t.get("refId") for t in targets]
    if len(set(ref_ids)) != len(ref_ids) or not all(isinstance(r, str) and r for r in ref_ids):
        problems.append(f"{where}: refIds {ref_ids} must be unique non-empty strings")
    for target in targets:
        at = f"{where}/{target.get('refId')}"
        problems += _datasource_problems(at, target.get("datasource"), influx_uid)
        if target.get("rawQuery") is not True:
            problems.append(f"{at}: not a raw InfluxQL query (rawQuery: true)")
        if target.get("resultFormat") not in RESULT_FORMATS:
            problems.append(f"{at}: resultFormat {target.get('resultFormat')!r}")
        problems += _check_query_text(at, target.get("query"), variables)
        if isinstance(target.get("query"), str):
            problems += _check_alias(at, target)
    return problems


def _check_variables(uid: str, variables: Sequence[Mapping[str, Any]], influx_uid: str) -> list[str]:
    problems, defined = [], set()
    for variable in variables:
        name = variable.get("name")
        where = f"{uid}/${name}"
        if not isinstance(name, str) or not re.fullmatch(r"\w+", name) or name in defined:
            problems.append(f"{where}: names must be unique identifiers")
        if variable.get("type") not in VARIABLE_TYPES:
            problems.append(f"{where}: type {variable.get('type')!r}")
        if variable.get("type") == "query":
            problems += _datasource_problems(where, variable.get("datasource"), influx_uid)
            # Grafana resolves a chain in order: a variable may only use those defined before it.
            problems += _check_query_text(where, variable_query(variable), defined)
            if variable.get("refresh") not in (1, 2):
                problems.append(f"{where}: refresh must be 1 (on load) or 2 (on time range change)")
        defined.add(str(name))
    return problems


def _check_annotations(
    uid: str, annotations: Sequence[Mapping[str, Any]], influx_uid: str, known: set[str]
) -> list[str]:
    problems = []
    for annotation in annotations:
        where = f"{uid}/annotation:{annotation.get('name')}"
        if annotation.get("builtIn"):
            if annotation.get("datasource", {}).get("type") != "grafana":
                problems.append(f"{where}: the built-in annotation reads Grafana's own store")
            continue
        problems += _datasource_problems(where, annotation.get("datasource"), influx_uid)
        target = annotation.get("target") or {}
        if target.get("rawQuery") is not True or not target.get("fromAnnotations"):
            problems.append(f"{where}: target must be a raw InfluxQL annotation query")
        problems += _check_query_text(where, target.get("query"), known)
        if not target.get("textColumn"):
            problems.append(f"{where}: no textColumn")
    return problems


def _urls(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "url" and isinstance(value, str):
                yield value
            else:
                yield from _urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _urls(item)


def dashboard_problems(dashboards: Mapping[str, Mapping[str, Any]], influx_uid: str) -> list[str]:
    """Everything that would stop Grafana from loading, laying out or querying these dashboards."""
    problems: list[str] = []
    uids = [d.get("uid") for d in dashboards.values()]
    if len(set(uids)) != len(uids):
        problems.append(f"dashboard uids are not unique: {uids}")
    titles = [d.get("title") for d in dashboards.values()]
    if len(set(titles)) != len(titles):
        problems.append(f"dashboard titles are not unique (one folder): {titles}")
    for name, dashboard in dashboards.items():
        uid = dashboard.get("uid")
        if not isinstance(uid, str) or not _UID.match(uid):
            problems.append(f"{name}: uid {uid!r} must be 1-40 letters, digits, '-' or '_'")
            continue
        for key, kind in (("title", str), ("schemaVersion", int), ("panels", list), ("tags", list), ("time", dict)):
            if not isinstance(dashboard.get(key), kind):
                problems.append(f"{uid}: {key} must be a {kind.__name__}")
        if isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] < 36:
            problems.append(f"{uid}: schemaVersion {dashboard['schemaVersion']} predates datasource references by uid")
        if "id" in dashboard and dashboard["id"] is not None:
            problems.append(f"{uid}: a provisioned dashboard must not carry an instance-specific id")
        try:
            dashboard_range_s(dashboard)
        except (KeyError, ValueError) as exc:
            problems.append(f"{uid}: {exc}")
        variables = dashboard.get("templating", {}).get("list", [])
        problems += _check_variables(uid, variables, influx_uid)
        known = {str(v.get("name")) for v in variables}
        problems += _check_annotations(uid, dashboard.get("annotations", {}).get("list", []), influx_uid, known)
        panels = list(all_panels(dashboard.get("panels", [])))
        ids = [p.get("id") for p in panels]
        if len(set(ids)) != len(ids):
            problems.append(f"{uid}: panel ids are not unique: {ids}")
        titles = [p.get("title") for p in panels]
        if len(set(titles)) != len(titles):
            problems.append(f"{uid}: panel titles are not unique: {titles}")
        for panel in panels:
            problems += _check_panel(f"{uid}/{panel.get('title')}", panel, influx_uid, known)
        top = [p for p in dashboard.get("panels", []) if isinstance(p.get("gridPos"), dict)]
        problems += [
            f"{uid}: panels {a.get('title')!r} and {b.get('title')!r} overlap"
            for i, a in enumerate(top)
            for b in top[i + 1 :]
            if _overlaps(a["gridPos"], b["gridPos"])
        ]
        for url in _urls(dashboard):
            problems += [
                f"{uid}: link {url!r} to unknown dashboard {t!r}" for t in _DASHBOARD_LINK.findall(url) if t not in uids
            ]
    return problems


def _env_expanded_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Strings of an alert rules file that Grafana passes through os.ExpandEnv: all but the
    query models and the annotations (Grafana keeps those raw)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in {"model", "annotations"}:
                yield from _env_expanded_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _env_expanded_strings(item, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def alert_rule_problems(
    rules_file: Mapping[str, Any], influx_uid: str, dashboards: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    problems: list[str] = []
    if rules_file.get("apiVersion") != 1:
        problems.append("alert rules: apiVersion must be 1")
    panels_by_uid = {d["uid"]: {p.get("id") for p in all_panels(d["panels"])} for d in dashboards.values()}
    uids = []
    for group in rules_file.get("groups", []):
        if not group.get("name") or not group.get("folder"):
            problems.append(f"alert group {group.get('name')!r}: name and folder are required")
        try:
            duration_s(str(group.get("interval")))
        except ValueError as exc:
            problems.append(f"alert group {group.get('name')!r}: {exc}")
        for rule in group.get("rules", []):
            where = f"alert:{rule.get('uid')}"
            uids.append(rule.get("uid"))
            if not isinstance(rule.get("uid"), str) or not _UID.match(rule["uid"]) or not rule.get("title"):
                problems.append(f"{where}: uid (1-40 characters) and title are required")
            if rule.get("noDataState") not in NO_DATA_STATES or rule.get("execErrState") not in EXEC_ERROR_STATES:
                problems.append(
                    f"{where}: noDataState/execErrState {rule.get('noDataState')}/{rule.get('execErrState')}"
                )
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}")
            if not rule.get("annotations", {}).get("summary"):
                problems.append(f"{where}: no summary annotation")
            dashboard_uid = rule.get("dashboardUid")
            if dashboard_uid is not None and rule.get("panelId") not in panels_by_uid.get(dashboard_uid, set()):
                problems.append(f"{where}: dashboardUid/panelId {dashboard_uid}/{rule.get('panelId')} do not exist")
            data = rule.get("data", [])
            ref_ids = [item.get("refId") for item in data]
            if len(set(ref_ids)) != len(ref_ids):
                problems.append(f"{where}: refIds are not unique: {ref_ids}")
            if rule.get("condition") not in ref_ids:
                problems.append(f"{where}: condition {rule.get('condition')!r} is not one of {ref_ids}")
            for item in data:
                at = f"{where}/{item.get('refId')}"
                model = item.get("model", {})
                if model.get("refId") != item.get("refId"):
                    problems.append(f"{at}: model.refId differs from refId")
                if item.get("datasourceUid") == EXPRESSION_UID:
                    expression = model.get("expression")
                    if model.get("type") not in {"reduce", "threshold", "math"} or expression not in ref_ids:
                        problems.append(f"{at}: expression {model.get('type')!r} on {expression!r}")
                    continue
                if item.get("datasourceUid") != influx_uid:
                    problems.append(f"{at}: datasourceUid {item.get('datasourceUid')!r} is not {influx_uid!r}")
                    continue
                problems += _datasource_problems(at, model.get("datasource"), influx_uid)
                window = item.get("relativeTimeRange", {})
                if not (isinstance(window.get("from"), int) and window["from"] > window.get("to", 0) >= 0):
                    problems.append(f"{at}: relativeTimeRange {window} must reach back from `to` to `from` seconds")
                if model.get("rawQuery") is not True or "$timeFilter" not in str(model.get("query")):
                    problems.append(f"{at}: must be a raw InfluxQL query bounded by $timeFilter")
                problems += _check_query_text(at, model.get("query"), set())
    if len(set(uids)) != len(uids):
        problems.append(f"alert rule uids are not unique: {uids}")
    problems += [
        f"alert rules{path}: {value!r} would be expanded as an environment variable by Grafana"
        for path, value in _env_expanded_strings(rules_file)
        if "$" in value
    ]
    return problems
