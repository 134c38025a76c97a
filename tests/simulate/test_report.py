"""The HTML run report: numbers, tables, embedded plots, escaping, and partial summaries."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import pytest

from simulate.report import render_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REGIONS = ("offshore", "onshore")
FAULTS = ("gear_wear", "bearing_outer_race", "imbalance")


def _roc(sharpness: float) -> dict[str, list[float]]:
    """A smooth, concave ROC curve, tpr = fpr ** (1 / sharpness), finely sampled at low fpr."""
    fpr = sorted({0.0, *(i / 1000 for i in range(1, 100)), *(i / 50 for i in range(5, 51))})
    return {"fpr": fpr, "tpr": [round(f ** (1 / sharpness), 4) for f in fpr]}


def _figures(auc: float, precision: float, recall: float, fa_seen: float, fa_unseen: float) -> dict[str, float]:
    return {
        "auc": auc,
        "precision": precision,
        "recall": recall,
        "false_alarm_rate_seen": fa_seen,
        "false_alarm_rate_unseen": fa_unseen,
    }


def _model(name: str, headline: tuple[float, ...], offshore: tuple[float, ...], onshore: tuple[float, ...],
           faults: dict[str, tuple[float, float]], sharpness: float) -> dict[str, Any]:  # fmt: skip
    return {
        "model": name,
        **_figures(*headline),
        "roc": _roc(sharpness),
        "per_region": {"offshore": _figures(*offshore), "onshore": _figures(*onshore)},
        "per_fault": {fault: {"auc": auc, "recall": recall} for fault, (auc, recall) in faults.items()},
    }


def example_summary() -> dict[str, Any]:
    """What `nacelle simulate --turbines 200 --regions 2 --nights 5` writes, with detection."""
    losses = [0.561, 0.517, 0.460, 0.431, 0.418]
    rounds = []
    for night, loss in enumerate(losses, start=1):
        short = 3 if night == 4 else 0  # three onshore turbines missed night 4
        rejected = {"stale_model_version": 2} if night == 4 else {}
        rounds.append(
            {
                "round": night,
                "model_version": night,
                "status": "published",
                "updates_accepted": 200 - short - sum(rejected.values()),
                "updates_rejected": sum(rejected.values()),
                "bytes_per_update_mean": 4373.0 + 11 * night,
                "train_loss_mean": loss,
                "seconds": round(7.0 - 0.4 * night, 2),
                "regions": {
                    "offshore": {
                        "reported": True,
                        "accepted": 100,
                        "expected": 100,
                        "rejected": {},
                        "total_weight": 25600.0,
                        "bytes_per_update_mean": 4350.0 + 10 * night,
                    },
                    "onshore": {
                        "reported": True,
                        "accepted": 100 - short - sum(rejected.values()),
                        "expected": 100,
                        "rejected": rejected,
                        "total_weight": 25600.0,
                        "bytes_per_update_mean": 4396.0 + 12 * night,
                    },
                },
            }
        )
    models = {
        "federated": _model(
            "federated",
            (0.97, 0.9, 0.8, 0.01, 0.02),
            (0.965, 0.88, 0.78, 0.012, 0.025),
            (0.974, 0.91, 0.82, 0.009, 0.016),
            {"gear_wear": (0.95, 0.71), "bearing_outer_race": (0.98, 0.86), "imbalance": (0.979, 0.83)},
            sharpness=9.0,
        ),
        "local_only": _model(
            "local_only",
            (0.91, 0.42, 0.84, 0.012, 0.6),
            (0.902, 0.4, 0.83, 0.013, 0.64),
            (0.917, 0.44, 0.85, 0.011, 0.56),
            {"gear_wear": (0.88, 0.77), "bearing_outer_race": (0.93, 0.88), "imbalance": (0.92, 0.87)},
            sharpness=4.0,
        ),
        "centralized": _model(
            "centralized",
            (0.975, 0.92, 0.81, 0.01, 0.015),
            (0.971, 0.9, 0.8, 0.011, 0.018),
            (0.979, 0.93, 0.83, 0.009, 0.012),
            {"gear_wear": (0.957, 0.73), "bearing_outer_race": (0.984, 0.87), "imbalance": (0.982, 0.84)},
            sharpness=10.0,
        ),
    }
    return {
        "ok": True,
        "turbines": 200,
        "regions": 2,
        "region_names": list(REGIONS),
        "nights": 5,
        "rounds": rounds,
        "influx": {"url": "http://127.0.0.1:8086", "database": "nacelle", "points_written": 1020},
        "workdir": "/work/main/runs/sim",
        "wall_seconds": 61.2,
        "detection": {
            "auc_federated": 0.97,
            "auc_local_only": 0.91,
            "auc_centralized": 0.975,
            "false_alarm_rate_unseen_regime_federated": 0.02,
            "false_alarm_rate_unseen_regime_local_only": 0.6,
            "false_alarm_rate_unseen_regime_centralized": 0.015,
            "threshold_quantile": 0.99,
            "eval_windows_per_turbine": {"calibration": 64, "normal": 64, "unseen": 32, "fault": 16},
            "models": models,
        },
    }


@pytest.fixture(scope="module")
def example_report() -> str:
    """Rendered once: drawing five plots is the slow part of these tests."""
    return render_report(example_summary())


def _images(report: str) -> list[bytes]:
    return [
        base64.b64decode(data, validate=True)
        for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', report)
    ]


def _text(report: str) -> str:
    """The report with tags removed and whitespace collapsed, for reading sentences."""
    return " ".join(re.sub(r"<[^>]+>", " ", report).split())


def test_report_shows_the_detection_numbers_and_the_three_models(example_report: str) -> None:
    report = example_report
    text = _text(report)
    for row in ("Federated", "Local-only", "Centralized"):
        assert re.search(rf"<tr><td>{row}</td>", report), row
    for number in ("0.970", "0.910", "0.975", "0.900", "0.800", "2.0%", "60.0%", "1.5%", "1.0%"):
        assert number in text, number
    assert "Federated AUC is 0.970, 0.005 below centralized (0.975) and 0.060 above local-only (0.910)." in text
    assert "false alarms on 2.0% vs 60.0% local-only, 1.5% centralized" in text
    assert "0.99 quantile" in text


def test_report_names_every_region_and_fault(example_report: str) -> None:
    report = example_report
    for name in (*REGIONS, *FAULTS):
        assert f"<td>{name}</td>" in report or f'">{name}</td>' in report, name
    assert "stale_model_version: 2" in report  # rejection reasons reach the tables


def test_every_plot_is_an_embedded_png(example_report: str) -> None:
    report = example_report
    images = _images(report)
    # train loss, participation, bytes per update, ROC, per-region detection
    assert len(images) == 5 == report.count("<img ")
    for image in images:
        assert image.startswith(PNG_SIGNATURE)
        assert len(image) > 5_000
    assert "http://" not in report.replace("http://127.0.0.1:8086", "")  # no external assets
    assert "<script" not in report


def test_strings_from_the_summary_are_escaped() -> None:
    summary = example_summary()
    evil = "<script>alert(1)</script>"
    old = "onshore"
    summary["region_names"] = ["offshore", evil]
    for record in summary["rounds"]:
        record["regions"][evil] = record["regions"].pop(old)
    for model in summary["detection"]["models"].values():
        model["per_region"][evil] = model["per_region"].pop(old)
        model["per_fault"]["<b>gear</b>"] = model["per_fault"].pop("gear_wear")
    summary["rounds"][0]["status"] = '"><img src=x onerror=alert(1)>'
    summary["workdir"] = "/tmp/<i>run</i>"
    summary["influx"]["url"] = "http://x/?a=<b>&c=$money$"

    report = render_report(summary)
    assert "<script" not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "<b>gear</b>" not in report and "&lt;b&gt;gear&lt;/b&gt;" in report
    assert "<img src=x" not in report
    assert "<i>run</i>" not in report
    assert len(_images(report)) == 5  # `$` and `<` in names still plot


def test_a_summary_without_detection_still_renders() -> None:
    summary = example_summary()
    del summary["detection"]
    report = render_report(summary)
    assert "Detection was not evaluated" in report
    assert 'alt="ROC' not in report
    images = _images(report)
    assert len(images) == 3  # loss, participation, bytes
    assert all(image.startswith(PNG_SIGNATURE) for image in images)
    assert "offshore" in report and "Rounds" in report


def test_a_bare_summary_as_the_simulator_writes_it_today_renders() -> None:
    """No detection, no per-region breakdown in rounds, one failed round."""
    summary = example_summary()
    del summary["detection"]
    for record in summary["rounds"]:
        del record["regions"]
    summary["rounds"][-1].update(status="deadline_missed", train_loss_mean=None)
    summary["ok"] = False
    report = render_report(summary)
    assert "FAILED" in report and "deadline_missed" in report
    assert len(_images(report)) == 3


def test_an_almost_empty_summary_renders() -> None:
    report = render_report({"ok": False})
    assert "FAILED" in report
    assert "Detection was not evaluated" in report
    assert "<img" not in report


def test_partial_detection_falls_back_to_the_flat_keys() -> None:
    summary = example_summary()
    detection = summary["detection"]
    del detection["models"]
    report = render_report(summary)
    text = _text(report)
    assert "Federated AUC is 0.970, 0.005 below centralized (0.975) and 0.060 above local-only (0.910)." in text
    assert "No ROC points in the summary" in text
    assert len(_images(report)) == 3


def test_rendering_does_not_change_the_summary() -> None:
    summary = example_summary()
    before = copy.deepcopy(summary)
    render_report(summary)
    assert summary == before


def test_write_report_writes_the_file_and_returns_its_path(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "run.html"
    written = write_report(example_summary(), target)
    assert written == target
    content = target.read_text(encoding="utf-8")
    assert content.startswith("<!DOCTYPE html>")
    assert content.rstrip().endswith("</html>")
    assert len(_images(content)) == 5
