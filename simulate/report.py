"""One self-contained HTML report of a `nacelle simulate` run, for an operator deciding whether
to trust Nacelle: did the run complete, how did federated detection compare with training each
turbine alone and with pooling all data centrally, and how did the nightly rounds go.

Plots are PNGs drawn with matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`, never
pyplot), so rendering needs no display, keeps no global figure state and never changes the
backend other code sees. Every string taken from the summary is HTML-escaped. Missing parts of
the summary (no detection block, no per-region breakdown) leave out what depends on them and say so.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["render_report", "write_report"]

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


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", color="#e3e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _round_numbers(rounds: Sequence[Mapping[str, Any]]) -> list[float]:
    return [_num(r.get("round")) or float(i + 1) for i, r in enumerate(rounds)]


def _set_round_ticks(ax: Any, xs: Sequence[float]) -> None:
    """Every round on the x axis, also those a series has no value for, so the plots line up."""
    if len(xs) <= 30:
        ax.set_xticks(list(xs), [f"{x:g}" for x in xs])
    if xs:
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)


def _plot_train_loss(rounds: Sequence[Mapping[str, Any]]) -> bytes | None:
    points = [(x, _num(r.get("train_loss_mean"))) for x, r in zip(_round_numbers(rounds), rounds, strict=True)]
    points = [(x, y) for x, y in points if y is not None]
    if not points:
        return None
    figure = _new_figure(_WIDTH, 3.4)
    ax = figure.add_subplot()
    _, ys = zip(*points, strict=True)
    xs = _round_numbers(rounds)
    ax.plot([x for x, _ in points], ys, marker="o", color=MODEL_COLORS["federated"], linewidth=2)
    for x, y in points:
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    _style(ax, "Mean training loss reported by the turbines, per round", "round", "mean train loss")
    _set_round_ticks(ax, xs)
    ax.set_ylim(0, max(ys) * 1.2)
    return _png(figure)


def _plot_participation(summary: Mapping[str, Any], regions: Sequence[str]) -> bytes | None:
    rounds = _rounds(summary)
    if not rounds:
        return None
    xs = _round_numbers(rounds)
    # One group per region where the rounds break it down, else the fleet as a whole.
    groups: list[tuple[str, list[float | None], list[float | None], list[float]]] = []
    for region in regions:
        per_round = [_region_round(r, region) for r in rounds]
        if any(per_round):
            groups.append(
                (
                    region,
                    [_num(p.get("expected")) for p in per_round],
                    [_num(p.get("accepted")) for p in per_round],
                    [float(_rejected_total(p)) for p in per_round],
                )
            )
    per_region = bool(groups)
    if not groups:
        turbines = _num(summary.get("turbines"))
        groups.append(
            (
                "fleet",
                [turbines] * len(rounds),
                [_num(r.get("updates_accepted")) for r in rounds],
                [_num(r.get("updates_rejected")) or 0.0 for r in rounds],
            )
        )
    if all(a is None for _, _, accepted, _ in groups for a in accepted):
        return None
    figure = _new_figure(_WIDTH, 3.6)
    ax = figure.add_subplot()
    width = 0.8 / len(groups)
    any_rejected = any(n > 0 for _, _, _, rejected in groups for n in rejected)
    handles: dict[str, Any] = {}
    for index, (name, expected, accepted, rejected) in enumerate(groups):
        offsets = [x - 0.4 + width * (index + 0.5) for x in xs]
        handles["expected"] = ax.bar(
            offsets, [e or 0 for e in expected], width * 0.92, color="#eef1f4", edgecolor="#9aa5ae", linewidth=0.8
        )
        accepted_values = [a or 0 for a in accepted]
        handles[f"{_mpl_text(name)} accepted"] = bars = ax.bar(
            offsets, accepted_values, width * 0.92, color=_region_color(index)
        )
        # Say how short a bar falls where it does: a few missing turbines are hard to see.
        ax.bar_label(
            bars,
            [
                f"{a:,.0f}/{e:,.0f}" if a is not None and e is not None and a < e else ""
                for a, e in zip(accepted, expected, strict=True)
            ],
            fontsize=7,
            padding=3 if not any_rejected else 9,
        )
        hit = [i for i, n in enumerate(rejected) if n > 0]
        if hit:
            handles["rejected"] = ax.bar(
                [offsets[i] for i in hit],
                [rejected[i] for i in hit],
                width * 0.92,
                bottom=[accepted_values[i] for i in hit],
                color="#e57373",
                hatch="//",
                edgecolor="#c62828",
                linewidth=0.5,
            )
    extras = ("expected", "rejected")
    order = [k for k in handles if k not in extras] + [k for k in extras if k in handles]
    scope = "per region and round" if per_region else "per round, whole fleet"
    _style(ax, f"Participation: updates accepted of those expected, {scope}", "round", "updates")
    _set_round_ticks(ax, xs)
    top = max((e or 0) for _, expected, _, _ in groups for e in expected)
    top = max(top, max((a or 0) + r for _, _, acc, rej in groups for a, r in zip(acc, rej, strict=True)))
    ax.set_ylim(0, top * 1.3 if top else 1)
    ax.legend([handles[k] for k in order], order, loc="upper left", ncols=min(6, len(order)), fontsize=8, frameon=False)
    return _png(figure)


def _plot_bytes(rounds: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> bytes | None:
    xs = _round_numbers(rounds)
    series: list[tuple[str, str, list[tuple[float, float]], str]] = []
    for index, region in enumerate(regions):
        points = [
            (x, _num(_region_round(r, region).get("bytes_per_update_mean"))) for x, r in zip(xs, rounds, strict=True)
        ]
        kept = [(x, y) for x, y in points if y is not None]
        if kept:
            series.append((_mpl_text(region), _region_color(index), kept, "-"))
    fleet = [(x, _num(r.get("bytes_per_update_mean"))) for x, r in zip(xs, rounds, strict=True)]
    fleet_kept = [(x, y) for x, y in fleet if y is not None]
    if fleet_kept:
        series.append(("fleet mean", "#1d232a", fleet_kept, "--"))
    if not series:
        return None
    figure = _new_figure(_WIDTH, 3.4)
    ax = figure.add_subplot()
    values: list[float] = []
    for label, color, points, style in series:
        px, py = zip(*points, strict=True)
        ax.plot(px, py, style, marker="o", color=color, label=label, linewidth=2 if style == "-" else 1.5)
        values += py
    _style(ax, "Compressed bytes per model update, per round", "round", "bytes per update (mean)")
    _set_round_ticks(ax, xs)
    # The axis spans at least 20% of the typical size, so a 1% wobble looks like one.
    low, high = min(values), max(values)
    span = max(high - low, 0.2 * (low + high) / 2, 1.0)
    middle = (low + high) / 2
    ax.set_ylim(max(0.0, middle - span * 0.6), middle + span * 0.75)
    ax.yaxis.set_major_formatter(lambda value, _pos: f"{value:,.0f}")
    ax.legend(loc="upper left", ncols=min(6, len(series)), fontsize=8, frameon=False)
    return _png(figure)


def _plot_roc(models: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    curves = []
    for index, (key, model) in enumerate(models.items()):
        roc = _mapping(model.get("roc"))
        fpr = [_num(v) for v in _list(roc.get("fpr"))]
        tpr = [_num(v) for v in _list(roc.get("tpr"))]
        points = [(f, t) for f, t in zip(fpr, tpr, strict=False) if f is not None and t is not None]
        if len(points) >= 2:
            auc = _num(model.get("auc"))
            label = _mpl_text(_model_label(key)) + (f" (AUC {auc:.3f})" if auc is not None else "")
            curves.append((key, index, label, points))
    if not curves:
        return None
    figure = _new_figure(_WIDTH, 4.2)
    full, zoom = figure.subplots(1, 2, width_ratios=(1, 1))
    for ax, limit, title in ((full, 1.0, "ROC, all thresholds"), (zoom, 0.1, "ROC, false-alarm rate ≤ 10%")):
        ax.plot([0, limit], [0, limit], ":", color="#9aa5ae", linewidth=1, label="chance" if ax is full else None)
        for key, index, label, points in curves:
            fx, ty = zip(*points, strict=True)
            ax.plot(
                fx,
                ty,
                "--" if key == "centralized" else "-",
                color=_model_color(key, index),
                linewidth=2,
                label=label if ax is full else None,
                drawstyle="default",
            )
        _style(ax, title, "false-alarm rate on normal windows (FPR)", "faults detected (TPR)")
        ax.grid(True, axis="x", color="#e3e7eb", linewidth=0.8)
        ax.set_xlim(0, limit)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("auto")
    full.legend(loc="lower right", fontsize=8, frameon=True)
    zoom.xaxis.set_major_formatter(lambda value, _pos: f"{value * 100:.0f}%")
    return _png(figure)


def _plot_per_region(models: Mapping[str, Mapping[str, Any]], regions: Sequence[str]) -> bytes | None:
    keyed = [(key, index, _mapping(model.get("per_region"))) for index, (key, model) in enumerate(models.items())]
    keyed = [(key, index, per_region) for key, index, per_region in keyed if per_region]
    shown_regions = [r for r in regions if any(r in per_region for _, _, per_region in keyed)]
    if not keyed or not shown_regions:
        return None
    figure = _new_figure(_WIDTH, 3.8)
    auc_ax, fa_ax = figure.subplots(1, 2)
    width = 0.8 / len(keyed)
    lowest_auc = 0.5
    highest_fa = 0.0
    for slot, (key, index, per_region) in enumerate(keyed):
        xs = [i - 0.4 + width * (slot + 0.5) for i in range(len(shown_regions))]
        aucs = [_num(_mapping(per_region.get(r)).get("auc")) for r in shown_regions]
        fas = [_num(_mapping(per_region.get(r)).get("false_alarm_rate_unseen")) for r in shown_regions]
        color = _model_color(key, index)
        label = _mpl_text(_model_label(key))
        bars = auc_ax.bar(xs, [a if a is not None else 0 for a in aucs], width * 0.92, color=color, label=label)
        auc_ax.bar_label(bars, [f"{a:.3f}" if a is not None else "n/a" for a in aucs], fontsize=7, padding=2)
        bars = fa_ax.bar(xs, [f * 100 if f is not None else 0 for f in fas], width * 0.92, color=color, label=label)
        fa_ax.bar_label(bars, [f"{f * 100:.1f}%" if f is not None else "n/a" for f in fas], fontsize=7, padding=2)
        lowest_auc = min([lowest_auc, *(a for a in aucs if a is not None)])
        highest_fa = max([highest_fa, *(f * 100 for f in fas if f is not None)])
    ticks = list(range(len(shown_regions)))
    labels = [_mpl_text(r) for r in shown_regions]
    _style(auc_ax, "AUC per region (axis starts at chance, 0.5)", "region", "AUC")
    auc_ax.set_xticks(ticks, labels)
    auc_ax.set_ylim(max(0.0, lowest_auc - 0.05) if lowest_auc < 0.5 else 0.5, 1.06)
    _style(fa_ax, "False alarms on unseen-but-normal regimes", "region", "normal windows alarmed (%)")
    fa_ax.set_xticks(ticks, labels)
    fa_ax.set_ylim(0, max(5.0, highest_fa * 1.2))
    figure.legend(
        *auc_ax.get_legend_handles_labels(), loc="outside upper center", fontsize=8, frameon=False, ncols=len(keyed)
    )
    return _png(figure)


# --------------------------------------------------------------------------- HTML parts


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'
    )


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _table(head: Sequence[str], rows: Sequence[str], numeric_from: int = 1, text: Sequence[int] = ()) -> str:
    """A table whose columns from `numeric_from` on, except those in `text`, hold numbers."""
    cells = "".join(
        f'<th class="num">{h}</th>' if i >= numeric_from and i not in text else f"<th>{h}</th>"
        for i, h in enumerate(head)
    )
    return f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _header(summary: Mapping[str, Any], regions: Sequence[str]) -> str:
    ok = summary.get("ok")
    badge = (
        '<span class="badge ok">OK</span>'
        if ok is True
        else '<span class="badge failed">FAILED</span>'
        if ok is False
        else '<span class="badge unknown">status unknown</span>'
    )
    rounds = _rounds(summary)
    published = sum(1 for r in rounds if r.get("status") == "published")
    nights = _num(summary.get("nights"))
    region_count = summary.get("regions")
    region_text = _int(region_count) if _num(region_count) is not None else str(len(regions) or _MISSING)
    if regions:
        region_text += " (" + ", ".join(_e(r) for r in regions) + ")"
    accepted = sum(_num(r.get("updates_accepted")) or 0 for r in rounds)
    rejected = sum(_num(r.get("updates_rejected")) or 0 for r in rounds)
    region_expected = [_num(p.get("expected")) for r in rounds for p in _mapping(r.get("regions")).values()]
    turbines = _num(summary.get("turbines"))
    if region_expected and all(e is not None for e in region_expected):
        expected: float | None = sum(e or 0 for e in region_expected)
    else:
        expected = turbines * len(rounds) if turbines is not None else None
    updates = f"{accepted:,.0f}" + (f" of {expected:,.0f} expected" if expected else "") + f", {rejected:,.0f} rejected"
    influx = _mapping(summary.get("influx"))
    facts = [
        ("Turbines", _int(summary.get("turbines"))),
        ("Regions", region_text),
        (
            "Nights (rounds published)",
            f"{_int(nights)} ({published} of {len(rounds)} published)" if rounds else f"{_int(nights)} (no rounds)",
        ),
        ("Wall time", _duration(summary.get("wall_seconds"))),
        ("Updates accepted", updates if rounds else _MISSING),
        ("InfluxDB", f"{_e(influx.get('url', _MISSING))} · db {_e(influx.get('database', _MISSING))}"),
        ("Points written to InfluxDB", _int(influx.get("points_written"))),
        ("Work directory", _e(summary.get("workdir", _MISSING))),
    ]
    items = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in facts)
    problems = ""
    if ok is False:
        failed = [r for r in rounds if r.get("status") != "published"]
        detail = (
            "rounds not published: " + ", ".join(f"{_int(r.get('round'))} ({_e(r.get('status', '?'))})" for r in failed)
            if failed
            else f"{len(rounds)} of {_int(nights)} rounds completed"
        )
        problems = _note(f"<strong>The run did not complete as planned</strong>: {detail}.")
    return (
        f"<header><h1>Nacelle fleet run report {badge}</h1>"
        '<p class="sub">Simulated fleet: federated anomaly detection trained night by night over MQTT.</p>'
        f'<dl class="facts">{items}</dl>{problems}</header>'
    )


def _difference(value: float, reference: float, name: str) -> str:
    diff = value - reference
    if abs(diff) < 0.0005:
        return f"equal to {name} ({reference:.3f})"
    return f"{abs(diff):.3f} {'above' if diff > 0 else 'below'} {name} ({reference:.3f})"


def _reading(models: Mapping[str, Mapping[str, Any]]) -> str:
    """What the headline numbers say, computed from them; nothing they don't say."""

    def metric(model: str, name: str) -> float | None:
        return _num(_mapping(models.get(model)).get(name))

    sentences = []
    fed_auc = metric("federated", "auc")
    if fed_auc is not None:
        comparisons = [
            _difference(fed_auc, reference, name)
            for reference, name in (
                (metric("centralized", "auc"), "centralized"),
                (metric("local_only", "auc"), "local-only"),
            )
            if reference is not None
        ]
        sentences.append(
            f"Federated AUC is {fed_auc:.3f}" + (", " + " and ".join(comparisons) if comparisons else "") + "."
        )
    fed_fa = metric("federated", "false_alarm_rate_unseen")
    if fed_fa is not None:
        others = [
            f"{_pct(value)} {name}"
            for value, name in (
                (metric("local_only", "false_alarm_rate_unseen"), "local-only"),
                (metric("centralized", "false_alarm_rate_unseen"), "centralized"),
            )
            if value is not None
        ]
        sentences.append(
            f"On normal windows from operating regimes a turbine never met in its own training data, the "
            f"federated model raises false alarms on {_pct(fed_fa)}"
            + (" vs " + ", ".join(others) if others else "")
            + "."
        )
    fed_seen = metric("federated", "false_alarm_rate_seen")
    fed_recall = metric("federated", "recall")
    if fed_seen is not None and fed_recall is not None:
        sentences.append(
            f"At the alarm threshold it catches {_pct(fed_recall)} of fault windows with {_pct(fed_seen)} false "
            "alarms on familiar regimes."
        )
    return " ".join(sentences)


_DETECTION_COLUMNS = (
    ("auc", "AUC", "max", _fmt),
    ("precision", "Precision", "max", _fmt),
    ("recall", "Recall", "max", _fmt),
    ("false_alarm_rate_seen", "False alarms, seen regime", "min", _pct),
    ("false_alarm_rate_unseen", "False alarms, unseen regime", "min", _pct),
)


def _metric_cells(rows: Mapping[str, Mapping[str, Any]], key: str, *, mark_best: bool) -> str:
    cells = []
    for column, _title, better, fmt in _DETECTION_COLUMNS:
        value = _num(rows[key].get(column))
        values = [v for v in (_num(r.get(column)) for r in rows.values()) if v is not None]
        best = (
            value is not None and mark_best and len(values) > 1 and value == (max if better == "max" else min)(values)
        )
        cells.append(f'<td class="num{" best" if best else ""}">{fmt(value)}</td>')
    return "".join(cells)


def _detection_section(summary: Mapping[str, Any], regions: Sequence[str]) -> str:
    detection = summary.get("detection")
    if not isinstance(detection, Mapping) or not detection:
        return "<h2>Detection quality</h2>" + _note(
            "Detection was not evaluated in this run: the summary has no detection results, so there are no "
            "AUC, false-alarm or ROC figures to show. Only the training rounds are reported below."
        )
    models = _models(summary)
    parts = ["<h2>Detection quality</h2>"]
    setup = []
    windows = _mapping(detection.get("eval_windows_per_turbine"))
    if windows:
        setup.append(
            "Held-out windows per turbine: "
            + ", ".join(f"{_int(count)} {_e(name)}" for name, count in windows.items())
            + "."
        )
    quantile = _num(detection.get("threshold_quantile"))
    if quantile is not None:
        setup.append(
            f"Each turbine's alarm threshold is the {quantile:g} quantile of its own calibration-window scores, "
            "per way of training."
        )
    setup.append(
        "Federated: the global model from the nightly rounds. Local-only: each turbine trained on its own data "
        "alone. Centralized: one model trained on everyone's data pooled (the reference federation tries to match "
        "without moving raw data)."
    )
    parts.append(f'<p class="small">{" ".join(setup)}</p>')
    if models:
        rows = [
            f"<tr><td>{_e(_model_label(key))}</td>{_metric_cells(models, key, mark_best=True)}</tr>" for key in models
        ]
        parts.append(_table(["Model", *(title for _, title, _, _ in _DETECTION_COLUMNS)], rows))
        parts.append('<p class="small">Bold: best in its column.</p>')
        reading = _reading(models)
        if reading:
            parts.append(f'<p class="reading"><strong>Reading:</strong> {reading}</p>')
    else:
        parts.append(_note("The detection block holds no per-model figures."))

    roc = _plot_roc(models)
    parts.append(
        _img(
            roc,
            "ROC curves of the federated, local-only and centralized models",
            "Share of fault windows detected against share of normal windows alarmed, as the threshold moves. "
            "Right: the low-false-alarm end, where an operator would run.",
        )
        if roc
        else _note("No ROC points in the summary, so no ROC plot.")
    )

    parts.append("<h3>Per region</h3>")
    region_rows = []
    for region in regions:
        present = {key: _mapping(_mapping(m.get("per_region")).get(region)) for key, m in models.items()}
        present = {key: figures for key, figures in present.items() if figures}
        for position, key in enumerate(present):
            region_cell = f'<td rowspan="{len(present)}">{_e(region)}</td>' if position == 0 else ""
            row_class = ' class="group-start"' if position == 0 else ""
            region_rows.append(
                f"<tr{row_class}>{region_cell}<td>{_e(_model_label(key))}</td>"
                f"{_metric_cells(present, key, mark_best=True)}</tr>"
            )
    if region_rows:
        parts.append(
            _table(["Region", "Model", *(title for _, title, _, _ in _DETECTION_COLUMNS)], region_rows, numeric_from=2)
        )
        per_region_png = _plot_per_region(models, regions)
        if per_region_png:
            parts.append(
                _img(
                    per_region_png,
                    "AUC and unseen-regime false-alarm rate per region and model",
                    "Left: AUC per region (higher is better). Right: share of normal windows from unseen regimes "
                    "that raise an alarm (lower is better).",
                )
            )
    else:
        parts.append(_note("No per-region detection figures in the summary."))

    parts.append("<h3>Per fault</h3>")
    faults = _fault_names(models)
    if faults:
        head = "".join(f'<th class="num" colspan="2">{_e(_model_label(key))}</th>' for key in models)
        sub = "".join('<th class="num">AUC</th><th class="num">Recall</th>' for _ in models)
        body = []
        for fault in faults:
            cells = "".join(
                f'<td class="num">{_fmt(figures.get("auc"))}</td><td class="num">{_fmt(figures.get("recall"))}</td>'
                for figures in (_mapping(_mapping(m.get("per_fault")).get(fault)) for m in models.values())
            )
            body.append(f"<tr><td>{_e(fault)}</td>{cells}</tr>")
        parts.append(
            '<div class="scroll"><table><thead>'
            f'<tr><th rowspan="2">Fault</th>{head}</tr><tr>{sub}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>"
            '<p class="small">Recall: share of that fault\'s windows that raise an alarm at the threshold.</p>'
        )
    else:
        parts.append(_note("No per-fault detection figures in the summary."))
    return "".join(parts)


def _training_section(summary: Mapping[str, Any], regions: Sequence[str]) -> str:
    rounds = _rounds(summary)
    parts = ["<h2>Training rounds</h2>"]
    if not rounds:
        return "".join(parts) + _note("The summary holds no rounds: no training happened or none was recorded.")
    loss = _plot_train_loss(rounds)
    parts.append(
        _img(
            loss,
            "Mean training loss per round",
            "Mean reconstruction loss the turbines reported for their local training each night.",
        )
        if loss
        else _note("No training loss recorded in the rounds.")
    )
    participation = _plot_participation(summary, regions)
    parts.append(
        _img(
            participation,
            "Updates accepted of expected per region and round",
            "Grey: updates expected (one per turbine); coloured: updates accepted into the model"
            "; red hatched: updates rejected.",
        )
        if participation
        else _note("No participation figures in the rounds.")
    )
    size = _plot_bytes(rounds, regions)
    parts.append(
        _img(
            size,
            "Bytes per model update per round",
            "Mean size on the wire of one turbine's model update, per region and for the fleet.",
        )
        if size
        else _note("No update sizes recorded in the rounds.")
    )
    region_rows = []
    for region in regions:
        records = [_region_round(r, region) for r in rounds]
        records = [r for r in records if r]
        if not records:
            continue
        expected = sum(_num(r.get("expected")) or 0 for r in records)
        accepted = sum(_num(r.get("accepted")) or 0 for r in records)
        rejected = sum(_rejected_total(r) for r in records)
        reasons = _reasons_text(_rejections_by_reason(records))
        sizes = [v for v in (_num(r.get("bytes_per_update_mean")) for r in records) if v is not None]
        share = f" ({accepted / expected:.1%})" if expected else ""
        region_rows.append(
            f"<tr><td>{_e(region)}</td><td class='num'>{len(records)}</td>"
            f"<td class='num'>{accepted:,.0f} of {expected:,.0f}{share}</td>"
            f"<td class='num{' bad' if rejected else ''}'>{rejected:,}{_why(reasons)}</td>"
            f"<td class='num'>{f'{sum(sizes) / len(sizes):,.0f}' if sizes else _MISSING}</td></tr>"
        )
    if region_rows:
        parts.append("<h3>Participation per region, all rounds</h3>")
        parts.append(
            _table(["Region", "Rounds reported", "Updates accepted", "Rejected", "Mean bytes per update"], region_rows)
        )
    return "".join(parts)


def _rounds_section(summary: Mapping[str, Any], regions: Sequence[str]) -> str:
    rounds = _rounds(summary)
    if not rounds:
        return ""
    shown_regions = [region for region in regions if any(_region_round(r, region) for r in rounds)]
    head = [
        "Round",
        "Model version",
        "Status",
        "Accepted",
        "Rejected",
        *(f'{_e(region)}<span class="unit">accepted / expected</span>' for region in shown_regions),
        "Bytes per update",
        "Train loss",
        "Seconds",
    ]
    rows = []
    for record in rounds:
        status = record.get("status", _MISSING)
        status_cell = f'<td class="{"" if status == "published" else "bad"}">{_e(status)}</td>'
        reasons = _reasons_text(_rejections_by_reason([_region_round(record, r) for r in shown_regions]))
        rejected = _num(record.get("updates_rejected"))
        rejected_cell = f'<td class="num{" bad" if rejected else ""}">{_int(rejected)}{_why(reasons)}</td>'
        region_cells = ""
        for region in shown_regions:
            figures = _region_round(record, region)
            accepted, expected = _num(figures.get("accepted")), _num(figures.get("expected"))
            short = accepted is not None and expected is not None and accepted < expected
            region_cells += (
                f'<td class="num{" bad" if short else ""}">{_int(accepted)} / {_int(expected)}</td>'
                if figures
                else f'<td class="num">{_MISSING}</td>'
            )
        rows.append(
            f'<tr><td class="num">{_int(record.get("round"))}</td>'
            f'<td class="num">{_int(record.get("model_version"))}</td>'
            f'{status_cell}<td class="num">{_int(record.get("updates_accepted"))}</td>{rejected_cell}{region_cells}'
            f'<td class="num">{_int(record.get("bytes_per_update_mean"))}</td>'
            f'<td class="num">{_fmt(record.get("train_loss_mean"), 4)}</td>'
            f'<td class="num">{_fmt(record.get("seconds"), 1)}</td></tr>'
        )
    return "<h2>Rounds</h2>" + _table(head, rows, numeric_from=0, text=(2,))


# --------------------------------------------------------------------------- public API


def render_report(summary: Mapping[str, Any]) -> str:
    """The report of one `nacelle simulate` summary, as a self-contained HTML document."""
    summary = _mapping(summary)
    regions = _region_names(summary)
    body = (
        _header(summary, regions)
        + _detection_section(summary, regions)
        + _training_section(summary, regions)
        + _rounds_section(summary, regions)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Nacelle fleet run report</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def write_report(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the report of `summary` to `path` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(summary), encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m simulate.report SUMMARY_JSON [REPORT_HTML]
    import json
    import sys

    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_suffix(".html")
    print(write_report(json.loads(source.read_text()), target))
