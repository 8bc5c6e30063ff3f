from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from autodistill.report import ReportData, StudentRow, TrialPoint, compare_to_baseline, markdown, write_report


def _data() -> ReportData:
    students = (
        StudentRow("s1", "mobilebert-L4-H256", 5_000_000, 1.0e-4, flash_accuracy=0.30, mlm_accuracy=0.35,
                   glue={"sst2/accuracy": 0.80}, local_est_latency_s=2.0e-3, measured_latency_s=2.1e-3, pareto=True,
                   local_interval_s=(1.8e-3, 2.3e-3)),
        StudentRow("s2", "mobilebert-L6-H384", 9_000_000, 2.0e-4, flash_accuracy=0.33,
                   local_est_latency_s=3.0e-3, measured_latency_s=2.5e-3, drift_est_latency_s=2.7e-3,
                   local_interval_s=(2.7e-3, 3.5e-3)),
        StudentRow("mobilebert", "mobilebert-L24-H512", 24_581_888, 5.1e-4, reference=True),
        StudentRow("baseline", "mobilebert-L6-H384-B96", 7_000_000, 1.5e-4, mlm_accuracy=0.30,
                   local_est_latency_s=4.0e-3, measured_latency_s=4.1e-3, recal_est_latency_s=4.08e-3, baseline=True),
    )
    trials = tuple(TrialPoint(0.2 + 0.01 * i, 1e-4 * (1 + i)) for i in range(10))
    return ReportData("test run", "tpu_v4i", "cpu (test)", students, trials, tuple(range(1, 11)),
                      {"mape": 0.04, "within_10pct": 0.96}, ("a note",))


def test_markdown_has_table_errors_and_calibration() -> None:
    md = markdown(_data())
    assert ("| s1 | mobilebert-L4-H256 | 5.00 | 0.3000 | 0.3500 | 0.8000 | 0.100 | 2.000 | 1.800-2.300 (inside) "
            "| 2.100 | -4.8% |  |  | yes |" in md)
    assert "| 3.000 | 2.700-3.500 (outside) | 2.500 |" in md  # s2 ran faster than its interval
    assert ("| baseline | mobilebert-L6-H384-B96 | 7.00 |  | 0.3000 |  | 0.150 | 4.000 |  | 4.100 | -2.4% |  "
            "| -0.5% |  |" in md)
    assert "| +20.0% | +8.0% |" in md                     # s2: 3.0 (2.7 drift-corrected) estimated vs 2.5 measured
    assert "mobilebert (ref)" in md and "- mape: 0.04" in md and "a note" in md
    # s1 beats the baseline (+0.05 at 1.5x lower latency); s2 has no full-distillation accuracy
    assert "| s1 | +0.0500 | 1.50x | yes | yes |" in md
    assert "beat the baseline (higher held-out MLM accuracy at equal or lower tpu_v4i latency): 1 of 1" in md
    assert "at least 1.3x faster at equal or higher accuracy: 1 of 1" in md
    assert "2 of 3 measured latencies within 10%" in md
    assert "drift check (the device's speed now against calibration time, from other students): 1 of 1 within 10%" in md


def test_baseline_comparison() -> None:
    rows = [StudentRow("b", "x", 1, 2.0e-4, mlm_accuracy=0.30, baseline=True),
            StudentRow("faster_equal", "x", 1, 1.5e-4, mlm_accuracy=0.30),   # 1.33x faster, same accuracy
            StudentRow("slower_better", "x", 1, 3.0e-4, mlm_accuracy=0.40),
            StudentRow("better_same", "x", 1, 2.0e-4, mlm_accuracy=0.31),
            StudentRow("ref", "x", 1, 1e-5, mlm_accuracy=0.9, reference=True)]
    c = {x.name: x for x in compare_to_baseline(rows)}
    assert set(c) == {"faster_equal", "slower_better", "better_same"}
    assert not c["faster_equal"].beats and c["faster_equal"].faster_at_equal_accuracy
    assert not c["slower_better"].beats and not c["slower_better"].faster_at_equal_accuracy
    assert c["better_same"].beats and c["better_same"].speedup == pytest.approx(1.0)
    assert compare_to_baseline(rows[1:]) == []   # no baseline, no comparison


def test_html_is_one_file_with_embedded_images(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    html_path, md_path = write_report(_data(), tmp_path / "out")
    text = html_path.read_text()
    imgs = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(imgs) == 3  # Pareto, predicted vs measured, hypervolume
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    assert "<td>s1</td>" in text and md_path.read_text().startswith("# test run")
    assert not list((tmp_path / "out").glob(".*.tmp"))
