from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from report_data import report_data

from autodistill.report import (
    PARAMS_DEFINITION,
    StudentRow,
    compare_to_baseline,
    full_front,
    markdown,
    render_html,
    summarize,
    write_report,
)


def _replace_student(data, name: str, **changes):
    return dataclasses.replace(data, students=tuple(dataclasses.replace(s, **changes) if s.name == name else s
                                                    for s in data.students))


def test_the_summary_names_the_pick_its_gain_and_the_device_check() -> None:
    s = summarize(report_data())
    # trial0003 and trial0001 beat the baseline; trial0001 is dominated by trial0003 after full distillation
    assert s.recommended == ("trial0003",)
    assert s.lines[0].startswith("Take trial0003 (mobilebert-L3-H384-B128, 4.51M parameters): held-out MLM "
                                 "accuracy 0.0660 ± 0.0035, estimated 0.04690 ms on tpu_v4i (interval 0.03-0.08 ms)")
    assert "accuracy +0.0110 ± 0.0048, 2.3 standard errors; 3.20x faster on tpu_v4i" in s.lines[1]
    assert "1.64x as measured on the device" in s.lines[1]
    assert s.lines[-1].startswith("Device check on cpu (profile cpu_local): 3 of 4 measured latencies within ±10%")
    text = " ".join(s.warnings)
    assert "trial0006 had the best flash accuracy (0.0690) but ranks 3 of 3 after full distillation" in text
    assert "dominated after full distillation: trial0001" in text
    assert "ran at 1.21x its calibration-time latency" in text
    assert "refitted profile was written (runs/synth/cpu_local_refit.toml)" in text
    assert len(s.warnings) == 4  # 1 failed trial of 13 is not called out


def test_the_summary_rule_when_nothing_beats_the_baseline_or_there_is_none() -> None:
    data = report_data()
    # a better baseline: no student beats it; the most accurate on the front is named, and why
    better = _replace_student(data, "baseline", mlm_accuracy=0.09)
    s = summarize(better)
    assert s.recommended == ("trial0003",) and "No student beat the baseline" in " ".join(s.lines)
    # no baseline at all
    nobase = dataclasses.replace(data, students=tuple(x for x in data.students if not x.baseline))
    s = summarize(nobase)
    assert s.recommended == ("trial0003",) and "has no baseline" in " ".join(s.lines)
    # nothing finished, nothing measured
    none = dataclasses.replace(data, students=tuple(dataclasses.replace(x, mlm_accuracy=None, measured_latency_s=None)
                                                    for x in data.students if not x.reference))
    s = summarize(none)
    assert s.recommended == () and "nothing to recommend" in s.lines[0]
    assert s.lines[-1] == "No latency was measured on a device in this run."
    # flash and full agree, no drift, no refit, no failures: no warnings
    calm = dataclasses.replace(_replace_student(data, "trial0006", flash_accuracy=0.040),
                               calibration={}, refit_profile=None, trials=data.trials[:-1])
    calm = _replace_student(calm, "trial0001", pareto=False)
    assert summarize(calm).warnings == ()


def test_the_full_front_and_the_baseline_comparison() -> None:
    data = report_data()
    assert [s.name for s in full_front(data)] == ["trial0006", "trial0003"]
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
    assert c["better_same"].gain_se is None  # no prediction counts, no standard error
    assert compare_to_baseline(rows[1:]) == []   # no baseline, no comparison


def test_markdown_reads_as_plain_text_summary_first() -> None:
    md = markdown(report_data())
    lines = md.splitlines()
    assert lines[2] == "## Summary" and lines[4].startswith("- Take trial0003")
    prose = [x for x in lines if not x.startswith("|")]
    assert max(map(len, prose)) <= 100
    tables: list[list[str]] = []
    for i, x in enumerate(lines):
        if x.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            tables.append([])
        if x.startswith("|"):
            tables[-1].append(x)
    assert len(tables) >= 6
    for t in tables:
        assert len({len(x) for x in t}) == 1, t[0]  # every column padded: one width per table
    # rows tens of microseconds apart stay apart; numbers right-aligned
    assert re.search(r"\| trial0006 +\| mobilebert-L4-H256-B64 +\| +0\.04660 \| 0\.03-0\.08 ", md)
    assert "0.04690" in md and "0.04730" in md
    assert "|---:|" not in md and re.search(r"-+:\|", md)
    assert "| mean |error|, profile as given" not in md  # a | in a cell would break the table
    assert "mean /error/, profile as given" in md and "8.0%" in md
    assert "against the reference point accuracy 0 and latency 1.000 ms" in md
    assert PARAMS_DEFINITION in " ".join(prose).replace("\n", " ") or "without the pooler" in md


def test_html_is_one_offline_file_with_plots_links_and_metadata(tmp_path: Path) -> None:
    html_path, md_path = write_report(report_data(), tmp_path / "out")
    text = html_path.read_text()
    assert "<meta name='viewport' content='width=device-width, initial-scale=1'>" in text
    assert not re.search(r"(src|href)=['\"]https?:", text)  # nothing to fetch
    assert text.count("<figure>") == 4  # estimated front, measured front, predicted vs measured, hypervolume
    assert text.index("id=summary") < text.index("<figure>")
    # every plotted point has its hover text; every reference model a legend entry
    assert text.count("<title>trial ") == 12 and "reference models (dotted line: no accuracy here)" in text
    assert "front after full distillation" in text and "the same after flash distillation (arrow" in text
    assert "drift-corrected (speed now vs calibration)" in text and "after the refit (in-sample)" in text
    # the band is drawn beneath the markers: the first path of the predicted-vs-measured plot
    pv = text[text.index("Predicted vs measured on"):]
    assert pv.index("fill='#e8eef5'") < pv.index("<circle")
    assert "against the reference point accuracy 0 and latency 1.000 ms" in text
    assert "<a href='students/trial0006/hf'>trial0006</a>" in text  # relative to the run folder
    assert "table class=sortable" in text and "data-v='0.066'" in text
    assert "<td>stage distill</td><td class=num data-v='200.0'>200.0 s</td>" in text
    assert md_path.read_text().startswith("# autodistill run: synth")
    assert not list((tmp_path / "out").glob(".*.tmp"))
    mask = os.umask(0)
    os.umask(mask)
    assert html_path.stat().st_mode & 0o777 == 0o666 & ~mask  # an ordinary file, not mkstemp's private 0600
    md_path.chmod(0o640)
    write_report(report_data(), tmp_path / "out")
    assert md_path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def test_log_axis_ticks_never_collide() -> None:
    html = render_html(report_data())
    for fig in re.findall(r"<figure>.*?</figure>", html, re.S):
        xs = [float(x) for x in re.findall(r"<text x='([\d.]+)' y='[\d.]+' font-size='11' text-anchor='middle'>",
                                           fig)]
        assert all(b - a > 40 for a, b in zip(xs, xs[1:])), xs
