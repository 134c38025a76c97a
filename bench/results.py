"""Benchmark results: sections of rows, rendered as tables, saved as JSON with the machine they
ran on, and compared before/after. Pure: no benchmark runs here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Row = dict[str, Any]


@dataclass
class Section:
    """One benchmark's result: rows of one table (the first column names the case) and notes."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: Any) -> Row:
        self.rows.append(row)
        return row


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        magnitude = abs(value)
        if magnitude == 0 or magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        if magnitude >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


def table(rows: list[Row]) -> str:
    """Rows as an aligned text table; columns in the order they first appear."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    aligned = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in [columns, *cells]
    ]
    return "\n".join(line.rstrip() for line in aligned)


def render(section: Section) -> str:
    lines = [f"== {section.title}", table(section.rows)]
    lines.extend(f"  {note}" for note in section.notes)
    return "\n".join(lines)


def document(machine: dict[str, Any], command: list[str], size: str, sections: list[Section]) -> dict[str, Any]:
    return {
        "schema": 1,
        "machine": machine,
        "command": command,
        "size": size,
        "sections": [asdict(section) for section in sections],
    }


def save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema") != 1 or not isinstance(data.get("sections"), list):
        raise ValueError(f"{path} is not a benchmark result of this version")
    return data


def _numbers(row: Row) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A before/after table of every numeric figure present in both, with after / before."""
    lines = []
    for key in ("git_commit", "cores", "torch", "load_average_at_start"):
        lines.append(f"{key}: {before['machine'].get(key)} -> {after['machine'].get(key)}")
    old_sections = {section["name"]: section for section in before["sections"]}
    for section in after["sections"]:
        old = old_sections.get(section["name"])
        if old is None:
            continue
        old_rows = {_case(row): row for row in old["rows"]}
        rows: list[Row] = []
        for row in section["rows"]:
            previous = old_rows.get(_case(row))
            if previous is None:
                continue
            old_numbers = _numbers(previous)
            for metric, value in _numbers(row).items():
                if metric in old_numbers:
                    was = old_numbers[metric]
                    rows.append(
                        {
                            "case": _case(row),
                            "metric": metric,
                            "before": was,
                            "after": value,
                            "after/before": value / was if was else None,
                        }
                    )
        if rows:
            lines.append(f"== {section['title']}")
            lines.append(table(rows))
    return "\n".join(lines)


def _case(row: Row) -> str:
    first = next(iter(row.values()), "")
    return str(first)
