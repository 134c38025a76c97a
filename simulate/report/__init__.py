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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulate.report._common import (
    _CSS,
    _MISSING,
    _duration,
    _e,
    _fault_names,
    _fmt,
    _int,
    _mapping,
    _model_label,
    _models,
    _num,
    _pct,
    _reasons_text,
    _region_names,
    _region_round,
    _rejected_total,
    _rejections_by_reason,
    _rounds,
    _why,
)
from simulate.report._plots import _plot_bytes, _plot_participation, _plot_per_region, _plot_roc, _plot_train_loss

__all__ = ["render_report", "write_report"]

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
    db = influx.get("database", _MISSING)  # summaries written before `target` existed
    facts = [
        ("Turbines", _int(summary.get("turbines"))),
        ("Regions", region_text),
        (
            "Nights (rounds published)",
            f"{_int(nights)} ({published} of {len(rounds)} published)" if rounds else f"{_int(nights)} (no rounds)",
        ),
        ("Wall time", _duration(summary.get("wall_seconds"))),
        ("Updates accepted", updates if rounds else _MISSING),
        ("InfluxDB", f"{_e(influx.get('url', _MISSING))} · {_e(influx.get('target', 'db ' + str(db)))}"),
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
