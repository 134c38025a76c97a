"""Formatting and summary accessors shared by the report's plots and HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Ways of training, in the order the report shows them, with their display names and colours.
MODEL_ORDER = ("federated", "local_only", "centralized")
MODEL_LABELS = {"federated": "Federated", "local_only": "Local-only", "centralized": "Centralized"}
MODEL_COLORS = {"federated": "#1f6fb4", "local_only": "#e07b1a", "centralized": "#6b6b6b"}
_EXTRA_COLORS = ("#8e44ad", "#16a085", "#c0392b", "#2c3e50")
_REGION_COLORS = ("#1f6fb4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_DPI = 100
_WIDTH = 10.4  # inches: the page's content width at _DPI
_MISSING = "—"

_CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1d232a;
       background: #f4f6f8; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e7eb; }
h3 { font-size: 1.05em; margin: 24px 0 8px; }
.sub { color: #5b6670; margin: 0 0 16px; }
.badge { display: inline-block; padding: 2px 12px; border-radius: 12px; font-weight: 600; font-size: 0.8em;
         vertical-align: middle; margin-left: 10px; color: #fff; }
.badge.ok { background: #2e7d32; } .badge.failed { background: #c62828; } .badge.unknown { background: #757575; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 10px 20px; margin: 0; }
dl.facts div { background: #f7f9fa; border: 1px solid #e3e7eb; border-radius: 6px; padding: 8px 12px; }
dl.facts dt { font-size: 0.78em; text-transform: uppercase; letter-spacing: 0.04em; color: #5b6670; }
dl.facts dd { margin: 2px 0 0; font-weight: 600; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 8px 0 6px; font-size: 0.92em; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e3e7eb; text-align: left; vertical-align: top; }
thead th { background: #f1f4f6; border-bottom: 2px solid #cfd6dc; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
th .unit { display: block; font-weight: 400; font-size: 0.85em; color: #5b6670; }
td .why { display: block; font-size: 0.85em; }
td.best { font-weight: 700; }
tr.group-start td { border-top: 2px solid #cfd6dc; }
.bad { color: #c62828; font-weight: 600; }
.reading { background: #eef5fb; border-left: 4px solid #1f6fb4; padding: 10px 14px; margin: 12px 0; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 10px 14px; margin: 12px 0; }
.small { font-size: 0.85em; color: #5b6670; }
figure { margin: 16px 0 8px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; border-radius: 4px; }
figcaption { font-size: 0.85em; color: #5b6670; margin-top: 4px; }
.scroll { overflow-x: auto; }
"""


# --------------------------------------------------------------------------- small helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, None, bool, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 3) -> str:
    number = _num(value)
    return _MISSING if number is None else f"{number:.{digits}f}"


def _pct(value: Any, digits: int = 1) -> str:
    number = _num(value)
    return _MISSING if number is None else f"{number * 100:.{digits}f}%"


def _int(value: Any) -> str:
    number = _num(value)
    return _MISSING if number is None else f"{round(number):,}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else []


def _mpl_text(text: Any) -> str:
    """A label matplotlib draws literally: `$` would start mathtext, and a leading `_` hides a
    legend entry."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _duration(seconds: Any) -> str:
    number = _num(seconds)
    if number is None:
        return _MISSING
    if number < 60:
        return f"{number:.1f} s"
    minutes, rest = divmod(round(number), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{number:.1f} s ({hours} h {minutes} min)" if hours else f"{number:.1f} s ({minutes} min {rest} s)"


def _model_label(key: str) -> str:
    return MODEL_LABELS.get(key, key)


def _model_color(key: str, index: int) -> str:
    return MODEL_COLORS.get(key, _EXTRA_COLORS[index % len(_EXTRA_COLORS)])


def _region_color(index: int) -> str:
    return _REGION_COLORS[index % len(_REGION_COLORS)]


# --------------------------------------------------------------------------- reading the summary


def _rounds(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in _list(summary.get("rounds")) if isinstance(r, Mapping)]


def _region_names(summary: Mapping[str, Any]) -> list[str]:
    """Regions in the summary's order, then any that only appear in rounds or detection."""
    names = [str(n) for n in _list(summary.get("region_names"))]
    for record in _rounds(summary):
        names += [str(n) for n in _mapping(record.get("regions"))]
    for model in _models(summary).values():
        names += [str(n) for n in _mapping(model.get("per_region"))]
    return list(dict.fromkeys(names))


def _models(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each way of training's figures, known ones first. Falls back to the flat
    `auc_<model>` / `false_alarm_rate_unseen_regime_<model>` keys where `models` lacks one."""
    detection = _mapping(summary.get("detection"))
    given = {str(k): _mapping(v) for k, v in _mapping(detection.get("models")).items()}
    keys = [k for k in MODEL_ORDER if k in given] + [k for k in given if k not in MODEL_ORDER]
    for key in MODEL_ORDER:
        if key not in given and (f"auc_{key}" in detection or f"false_alarm_rate_unseen_regime_{key}" in detection):
            keys.append(key)
    keys.sort(key=lambda k: MODEL_ORDER.index(k) if k in MODEL_ORDER else len(MODEL_ORDER))
    models: dict[str, Mapping[str, Any]] = {}
    for key in keys:
        entry = dict(given.get(key, {}))
        entry.setdefault("auc", detection.get(f"auc_{key}"))
        entry.setdefault("false_alarm_rate_unseen", detection.get(f"false_alarm_rate_unseen_regime_{key}"))
        models[key] = entry
    return models


def _fault_names(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for model in models.values():
        names += [str(n) for n in _mapping(model.get("per_fault"))]
    return list(dict.fromkeys(names))


def _region_round(record: Mapping[str, Any], region: str) -> Mapping[str, Any]:
    return _mapping(_mapping(record.get("regions")).get(region))


def _rejected_total(region_record: Mapping[str, Any]) -> int:
    rejected = region_record.get("rejected")
    if isinstance(rejected, Mapping):
        return sum(int(n) for n in rejected.values() if _num(n) is not None)
    number = _num(rejected)
    return int(number) if number is not None else 0


def _rejections_by_reason(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for region_record in records:
        rejected = region_record.get("rejected")
        if isinstance(rejected, Mapping):
            for reason, count in rejected.items():
                if _num(count) is not None:
                    reasons[str(reason)] = reasons.get(str(reason), 0) + int(count)
    return reasons


def _why(reasons: str) -> str:
    return f'<span class="why">{reasons}</span>' if reasons else ""


def _reasons_text(reasons: Mapping[str, int]) -> str:
    return ", ".join(f"{_e(reason)}: {count:,}" for reason, count in sorted(reasons.items()) if count)
