"""The report's plots: matplotlib Agg figures rendered to PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulate.report._common import (
    _DPI,
    _WIDTH,
    MODEL_COLORS,
    _list,
    _mapping,
    _model_color,
    _model_label,
    _mpl_text,
    _num,
    _region_color,
    _region_round,
    _rejected_total,
    _rounds,
)

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
