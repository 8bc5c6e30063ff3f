"""The run report: one self-contained HTML file (plots embedded) and a Markdown summary.

`ReportData` is everything the report shows; `write_report` renders it. The
run's report stage (`autodistill.run.stages.stage_report`) fills it from the
trial store, the student records and the on-device measurements; nothing here
reads those sources itself.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodistill.fileio import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentRow:
    """One student (or reference model) in the report. Latencies per request, in seconds."""

    name: str
    config: str                     # short shape, e.g. StudentArch.short_name()
    params: int
    est_latency_s: float            # cost model, search profile
    flash_accuracy: float | None = None    # held-out MLM accuracy after flash distillation
    mlm_accuracy: float | None = None      # after full distillation
    glue: Mapping[str, float] = field(default_factory=dict)
    local_est_latency_s: float | None = None    # cost model, confirmation device profile (before any refit)
    measured_latency_s: float | None = None     # measured on the confirmation device
    pareto: bool = False
    reference: bool = False
    baseline: bool = False                      # the baseline distilled with the same budget
    recal_est_latency_s: float | None = None    # after refitting on these measurements (in-sample)
    drift_est_latency_s: float | None = None    # device estimate x the drift check's ratio (out-of-sample)
    local_interval_s: tuple[float, float] | None = None  # where the measurement should fall (profile's band)

    @property
    def error(self) -> float | None:
        """Relative error of the confirmation-device estimate (the profile as given) against the measurement."""
        return _rel(self.local_est_latency_s, self.measured_latency_s)

    @property
    def drift_error(self) -> float | None:
        """The same with the estimate scaled by the drift check (anchors re-timed beside the confirmation)."""
        return _rel(self.drift_est_latency_s, self.measured_latency_s)

    @property
    def recal_error(self) -> float | None:
        """The same after recalibration on the run's own measurements (in-sample, so optimistic)."""
        return _rel(self.recal_est_latency_s, self.measured_latency_s)


def _rel(est: float | None, measured: float | None) -> float | None:
    if est is None or measured is None or not measured > 0:
        return None
    return est / measured - 1.0


@dataclass(frozen=True)
class BaselineComparison:
    """A distilled student against the baseline: accuracy gain and speed-up on the search profile."""

    name: str
    accuracy_gain: float            # student MLM accuracy - baseline's
    speedup: float                  # baseline est. latency / student's (search profile)
    beats: bool                     # higher accuracy at equal or lower latency
    faster_at_equal_accuracy: bool  # accuracy >= baseline's and speedup >= FASTER_RATIO


FASTER_RATIO = 1.3


def compare_to_baseline(rows: tuple[StudentRow, ...] | list[StudentRow]) -> list[BaselineComparison]:
    """Each distilled student (not a reference) with an accuracy, against the baseline row (none: [])."""
    base = next((r for r in rows if r.baseline and r.mlm_accuracy is not None), None)
    if base is None or base.mlm_accuracy is None:
        return []
    out = []
    for r in rows:
        if r.reference or r.baseline or r.mlm_accuracy is None or not math.isfinite(r.mlm_accuracy):
            continue
        gain = r.mlm_accuracy - base.mlm_accuracy
        speedup = base.est_latency_s / r.est_latency_s if r.est_latency_s > 0 else float("inf")
        out.append(BaselineComparison(r.name, gain, speedup, gain > 0 and speedup >= 1.0,
                                      gain >= 0 and speedup >= FASTER_RATIO))
    return out


def _baseline_section(data: ReportData) -> tuple[list[str], list[list[str]], list[str]]:
    """The "against the baseline" table (header, rows) and its summary sentences; all empty without a baseline."""
    comps = compare_to_baseline(data.students)
    if not comps:
        return [], [], []
    head = ["student", "MLM acc - baseline", "speed-up vs baseline", "higher acc at <= latency",
            f">= {FASTER_RATIO}x faster at >= acc"]
    rows = [[c.name, f"{c.accuracy_gain:+.4f}", f"{c.speedup:.2f}x", "yes" if c.beats else "no",
             "yes" if c.faster_at_equal_accuracy else "no"] for c in comps]
    n_beat = sum(c.beats for c in comps)
    n_fast = sum(c.faster_at_equal_accuracy for c in comps)
    notes = [f"Students that beat the baseline (higher held-out MLM accuracy at equal or lower "
             f"{data.search_profile} latency): {n_beat} of {len(comps)}; at least {FASTER_RATIO}x faster at equal or "
             f"higher accuracy: {n_fast} of {len(comps)}."]
    errors = [s.error for s in data.students if s.error is not None]
    if errors:
        within = sum(abs(e) <= 0.10 for e in errors)
        notes.append(f"Confirmation: {within} of {len(errors)} measured latencies within 10% of the estimate "
                     "(profile as given, before any refit).")
        drift = [s.drift_error for s in data.students if s.error is not None and s.drift_error is not None]
        if drift:
            notes.append(f"With the estimate scaled by the drift check (the device's speed now against calibration "
                         f"time, from other students): {sum(abs(e) <= 0.10 for e in drift)} of "
                         f"{len(drift)} within 10%.")
    return head, rows, notes


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _html_table(head: list[str], rows: list[list[str]], esc: Any) -> list[str]:
    return (["<table><tr>"] + [f"<th>{esc(h)}</th>" for h in head] + ["</tr>"]
            + ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows] + ["</table>"])


@dataclass(frozen=True)
class TrialPoint:
    accuracy: float
    est_latency_s: float
    feasible: bool = True


@dataclass(frozen=True)
class ReportData:
    title: str
    search_profile: str
    device: str
    students: tuple[StudentRow, ...]
    trials: tuple[TrialPoint, ...] = ()
    hypervolume: tuple[float, ...] = ()        # after each completed trial
    calibration: Mapping[str, float] = field(default_factory=dict)   # mape, within_10pct, spearman, ...
    notes: tuple[str, ...] = ()


def _fmt_ms(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v * 1e3:.3f}"


def _fmt_interval(iv: tuple[float, float] | None, measured: float | None) -> str:
    """``low-high`` in ms, marked with whether the measurement fell inside."""
    if iv is None:
        return ""
    text = f"{iv[0] * 1e3:.3f}-{iv[1] * 1e3:.3f}"
    if measured is not None and math.isfinite(measured):
        text += " (inside)" if iv[0] <= measured <= iv[1] else " (outside)"
    return text


def _fmt_pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:+.1f}%"


def _fmt_acc(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _table_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    glue_keys = sorted({k for s in data.students for k in s.glue})
    head = ["name", "config", "params (M)", "flash MLM acc", "MLM acc", *glue_keys,
            f"est ms ({data.search_profile})", "est ms (device)", "device interval ms", "measured ms", "error",
            "error, drift-corrected",
            "error after refit", "Pareto"]
    rows = []
    for s in data.students:
        rows.append([s.name + (" (ref)" if s.reference else ""), s.config, f"{s.params / 1e6:.2f}",
                     _fmt_acc(s.flash_accuracy), _fmt_acc(s.mlm_accuracy),
                     *[_fmt_acc(s.glue.get(k)) for k in glue_keys], _fmt_ms(s.est_latency_s),
                     _fmt_ms(s.local_est_latency_s), _fmt_interval(s.local_interval_s, s.measured_latency_s),
                     _fmt_ms(s.measured_latency_s),
                     _fmt_pct(s.error), _fmt_pct(s.drift_error), _fmt_pct(s.recal_error), "yes" if s.pareto else ""])
    return head, rows


def markdown(data: ReportData) -> str:
    head, rows = _table_rows(data)
    lines = [f"# {data.title}", "", f"Search objective profile: `{data.search_profile}`; confirmation device: "
             f"{data.device}.", ""]
    lines += _md_table(head, rows)
    bhead, brows, bnotes = _baseline_section(data)
    if brows:
        lines += ["", "## Against the baseline", ""] + _md_table(bhead, brows) + [""] + bnotes
    if data.calibration:
        lines += ["", "## Calibration quality (confirmation device)", ""]
        lines += [f"- {k}: {v:.4g}" for k, v in data.calibration.items()]
    if data.hypervolume:
        lines += ["", f"Hypervolume after {len(data.hypervolume)} trials: {data.hypervolume[-1]:.5g}"]
    if data.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data.notes]
    return "\n".join(lines) + "\n"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(data: ReportData) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if data.trials:
        ax.scatter([t.est_latency_s * 1e3 for t in data.trials], [t.accuracy for t in data.trials], s=12,
                   c=["0.6" if t.feasible else "0.85" for t in data.trials], label="trials (flash)")
    stu = [s for s in data.students if not s.reference and not s.baseline]
    acc = [s.mlm_accuracy if s.mlm_accuracy is not None else s.flash_accuracy for s in stu]
    ax.scatter([s.est_latency_s * 1e3 for s in stu], acc, s=40, c="tab:blue", label="students (estimated)")
    for s in data.students:
        if s.baseline and s.mlm_accuracy is not None:
            ax.scatter([s.est_latency_s * 1e3], [s.mlm_accuracy], marker="D", s=60, c="tab:orange",
                       label="baseline (same budget)")
            ax.annotate(s.name, (s.est_latency_s * 1e3, s.mlm_accuracy), fontsize=8, color="tab:orange")
    for s in data.students:
        if s.reference:
            a = s.mlm_accuracy if s.mlm_accuracy is not None else s.flash_accuracy
            if a is None:
                ax.axvline(s.est_latency_s * 1e3, color="tab:red", lw=0.8, ls=":")
                ax.annotate(s.name, (s.est_latency_s * 1e3, ax.get_ylim()[0]), rotation=90, fontsize=7,
                            color="tab:red", va="bottom")
            else:
                ax.scatter([s.est_latency_s * 1e3], [a], marker="*", s=120, c="tab:red")
                ax.annotate(s.name, (s.est_latency_s * 1e3, a), fontsize=8, color="tab:red")
    ax.set_xlabel(f"estimated latency on {data.search_profile} (ms)")
    ax.set_ylabel("held-out MLM accuracy")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs estimated latency")
    out.append(("Pareto: accuracy vs estimated latency", _png(fig)))
    plt.close(fig)

    if any(s.measured_latency_s is not None for s in data.students):
        fig, ax = plt.subplots(figsize=(5, 5))
        pts = [(s.local_est_latency_s * 1e3, s.measured_latency_s * 1e3, s.name) for s in data.students
               if s.measured_latency_s is not None and s.local_est_latency_s is not None]
        if pts:
            ax.scatter([p[1] for p in pts], [p[0] for p in pts], label="profile as given")
            rp = [(s.recal_est_latency_s * 1e3, s.measured_latency_s * 1e3) for s in data.students
                  if s.measured_latency_s is not None and s.recal_est_latency_s is not None]
            if rp:
                ax.scatter([p[1] for p in rp], [p[0] for p in rp], marker="x", c="tab:green",
                           label="after refit (in-sample)")
            for est_ms, meas_ms, name in pts:
                ax.annotate(name, (meas_ms, est_ms), fontsize=7)
            lo, hi = min(min(p[:2]) for p in pts) * 0.8, max(max(p[:2]) for p in pts) * 1.2
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("estimated latency (ms)")
        ax.set_title(f"Predicted vs measured on {data.device}")
        out.append(("Predicted vs measured latency", _png(fig)))
        plt.close(fig)

    if data.hypervolume:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(data.hypervolume) + 1), data.hypervolume)
        ax.set_xlabel("completed trials")
        ax.set_ylabel("hypervolume")
        ax.set_title("Hypervolume over trials")
        out.append(("Hypervolume over trials", _png(fig)))
        plt.close(fig)
    return out


def render_html(data: ReportData) -> str:
    head, rows = _table_rows(data)
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(data.title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#eee}img{max-width:100%}</style></head><body>",
             f"<h1>{esc(data.title)}</h1>",
             f"<p>Search objective profile: <code>{esc(data.search_profile)}</code>; confirmation device: "
             f"{esc(data.device)}.</p>", "<h2>Students</h2>"]
    parts += _html_table(head, rows, esc)
    bhead, brows, bnotes = _baseline_section(data)
    if brows:
        parts += ["<h2>Against the baseline</h2>"] + _html_table(bhead, brows, esc)
        parts += [f"<p>{esc(n)}</p>" for n in bnotes]
    for title, b64 in _plots(data):
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{b64}'>")
    if data.calibration:
        parts.append("<h2>Calibration quality</h2><ul>")
        parts += [f"<li>{esc(k)}: {v:.4g}</li>" for k, v in data.calibration.items()]
        parts.append("</ul>")
    if data.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in data.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``folder`` (atomically); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    html_path, md_path = folder / "report.html", folder / "report.md"
    atomic_write_text(html_path, render_html(data))
    atomic_write_text(md_path, markdown(data))
    logger.info("wrote %s and %s", html_path, md_path)
    return html_path, md_path


__all__ = ["BaselineComparison", "FASTER_RATIO", "ReportData", "StudentRow", "TrialPoint", "compare_to_baseline",
           "markdown", "render_html", "write_report"]
