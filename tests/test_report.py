from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from autodistill.report import ReportData, StudentRow, TrialPoint, markdown, write_report


def _data() -> ReportData:
    students = (
        StudentRow("s1", "mobilebert-L4-H256", 5_000_000, 1.0e-4, flash_accuracy=0.30, mlm_accuracy=0.35,
                   glue={"sst2/accuracy": 0.80}, local_est_latency_s=2.0e-3, measured_latency_s=2.1e-3, pareto=True),
        StudentRow("s2", "mobilebert-L6-H384", 9_000_000, 2.0e-4, flash_accuracy=0.33,
                   local_est_latency_s=3.0e-3, measured_latency_s=2.5e-3),
        StudentRow("mobilebert", "mobilebert-L24-H512", 24_581_888, 5.1e-4, reference=True),
    )
    trials = tuple(TrialPoint(0.2 + 0.01 * i, 1e-4 * (1 + i)) for i in range(10))
    return ReportData("test run", "tpu_v4i", "cpu (test)", students, trials, tuple(range(1, 11)),
                      {"mape": 0.04, "within_10pct": 0.96}, ("a note",))


def test_markdown_has_table_errors_and_calibration() -> None:
    md = markdown(_data())
    assert "| s1 | mobilebert-L4-H256 | 5.00 | 0.3000 | 0.3500 | 0.8000 | 0.100 | 2.000 | 2.100 | -4.8% | yes |" in md
    assert "+20.0%" in md                     # s2: 3.0 estimated vs 2.5 measured
    assert "mobilebert (ref)" in md and "- mape: 0.04" in md and "a note" in md


def test_html_is_one_file_with_embedded_images(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    html_path, md_path = write_report(_data(), tmp_path / "out")
    text = html_path.read_text()
    imgs = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(imgs) == 3  # Pareto, predicted vs measured, hypervolume
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    assert "<td>s1</td>" in text and md_path.read_text().startswith("# test run")
    assert not list((tmp_path / "out").glob(".*.tmp"))
