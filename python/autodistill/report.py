"""The run report: one self-contained HTML file and a plain-text Markdown twin.

`ReportData` is everything the report shows; `write_report` renders it. The run's report stage
(`autodistill.run.stages.stage_report`) fills it from the trial store, the student records and the
on-device measurements; nothing here reads those sources itself.

The HTML needs no network and no library: plots are inline SVG (a ``<title>`` on every point is its
hover text), tables sort on a click of their header (a few lines of inline script) and scroll inside
their box on a narrow screen. Both files open with `summarize`'s answer: which student to take, how it
compares with the baseline, whether the device agreed, and what in the run looks suspicious.
"""
from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autodistill.fileio import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["BaselineComparison", "FASTER_RATIO", "PARAMS_DEFINITION", "ReportData", "StudentRow", "Summary",
           "TrialPoint", "compare_to_baseline", "markdown", "render_html", "summarize", "write_report"]

#: What the report's parameter counts count (the trial table uses the same definition).
PARAMS_DEFINITION = "parameters of the encoder and embeddings, without the pooler and the MLM head"
#: A drift-check ratio further than this from 1 is called out in the summary.
DRIFT_WARN = 0.15
#: The relative error the device check counts as agreement.
AGREE_TOLERANCE = 0.10


@dataclass(frozen=True)
class StudentRow:
    """One student (or reference model) in the report. Latencies per request, in seconds."""

    name: str
    config: str                     # short shape, e.g. StudentArch.short_name()
    params: int                     # PARAMS_DEFINITION
    est_latency_s: float            # cost model, search profile
    flash_accuracy: float | None = None    # held-out MLM accuracy after flash distillation
    mlm_accuracy: float | None = None      # after full distillation
    glue: Mapping[str, float] = field(default_factory=dict)
    local_est_latency_s: float | None = None    # cost model, confirmation device profile (before any refit)
    measured_latency_s: float | None = None     # measured on the confirmation device
    pareto: bool = False                        # on the search (flash) front it was chosen from
    reference: bool = False
    baseline: bool = False                      # the baseline distilled with the same budget
    recal_est_latency_s: float | None = None    # after refitting on these measurements (in-sample)
    drift_est_latency_s: float | None = None    # device estimate x the drift check's ratio (out-of-sample)
    local_interval_s: tuple[float, float] | None = None  # where the measurement should fall (profile's band)
    est_interval_s: tuple[float, float] | None = None    # the same on the search profile
    mlm_predictions: int = 0                    # held-out masked tokens behind mlm_accuracy (0: unknown)
    exported: str | None = None                 # its transformers folder
    trial_id: int | None = None
    p_within_budget: float | None = None        # P(latency <= the latency budget) under the search band

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

    @property
    def accuracy_se(self) -> float | None:
        """Binomial standard error of `mlm_accuracy` over its held-out predictions (None when unknown).
        Masked tokens of one sequence are not independent, so this is a lower bound."""
        p, n = self.mlm_accuracy, self.mlm_predictions
        if p is None or not math.isfinite(p) or n <= 0:
            return None
        return math.sqrt(max(p * (1.0 - p), 0.0) / n)

    @property
    def distilled(self) -> bool:
        """A student of this run with a full-distillation accuracy (not a reference, not the baseline)."""
        return not self.reference and not self.baseline and _finite(self.mlm_accuracy)


def _rel(est: float | None, measured: float | None) -> float | None:
    if est is None or measured is None or not measured > 0:
        return None
    return est / measured - 1.0


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


@dataclass(frozen=True)
class TrialPoint:
    """One search trial. ``accuracy`` is its flash-distillation accuracy (None when it failed)."""

    accuracy: float | None
    est_latency_s: float | None
    feasible: bool = True
    trial_id: int | None = None
    config: str = ""
    params: int | None = None               # PARAMS_DEFINITION
    status: str = "completed"
    source: str = ""


@dataclass(frozen=True)
class ReportData:
    title: str
    search_profile: str
    device: str
    students: tuple[StudentRow, ...]
    trials: tuple[TrialPoint, ...] = ()
    hypervolume: tuple[float, ...] = ()        # after each completed trial
    calibration: Mapping[str, float] = field(default_factory=dict)   # `ConfirmationReport.summary` keys
    notes: tuple[str, ...] = ()
    reference_point: tuple[float, float] | None = None  # (accuracy, latency_s) the hypervolume is measured from
    metadata: Mapping[str, str] = field(default_factory=dict)    # run name, date, version, config, ...
    stage_times_s: Mapping[str, float] = field(default_factory=dict)
    refit_profile: str | None = None           # a refitted profile the confirmation wrote (not used here)
    link_base: str | None = None               # exports under this folder are linked relative to it


# ============================================================================================ the answer
@dataclass(frozen=True)
class BaselineComparison:
    """A distilled student against the baseline: accuracy gain and speed-up on the search profile."""

    name: str
    accuracy_gain: float            # student MLM accuracy - baseline's
    speedup: float                  # baseline est. latency / student's (search profile)
    beats: bool                     # higher accuracy at equal or lower latency
    faster_at_equal_accuracy: bool  # accuracy >= baseline's and speedup >= FASTER_RATIO
    gain_se: float | None = None    # standard error of the gain (both accuracies' binomial errors)
    measured_speedup: float | None = None  # the same ratio of latencies measured on the confirmation device


FASTER_RATIO = 1.3


def _baseline_row(rows: Sequence[StudentRow]) -> StudentRow | None:
    return next((r for r in rows if r.baseline and _finite(r.mlm_accuracy)), None)


def compare_to_baseline(rows: Sequence[StudentRow]) -> list[BaselineComparison]:
    """Each distilled student (not a reference) with an accuracy, against the baseline row (none: [])."""
    base = _baseline_row(rows)
    if base is None or base.mlm_accuracy is None:
        return []
    out = []
    for r in rows:
        if not r.distilled or r.mlm_accuracy is None:
            continue
        gain = r.mlm_accuracy - base.mlm_accuracy
        speedup = base.est_latency_s / r.est_latency_s if r.est_latency_s > 0 else float("inf")
        se = (math.hypot(r.accuracy_se, base.accuracy_se)
              if r.accuracy_se is not None and base.accuracy_se is not None else None)
        meas = (base.measured_latency_s / r.measured_latency_s
                if base.measured_latency_s and r.measured_latency_s else None)
        out.append(BaselineComparison(r.name, gain, speedup, gain > 0 and speedup >= 1.0,
                                      gain >= 0 and speedup >= FASTER_RATIO, se, meas))
    return out


def _front(rows: Sequence[StudentRow], acc: Callable[[StudentRow], float | None]) -> list[StudentRow]:
    """Rows no other row beats on both ``acc`` (higher) and estimated latency (lower)."""
    pts = [r for r in rows if _finite(acc(r))]
    out = []
    for r in pts:
        a = acc(r)
        assert a is not None
        if not any((acc(o) or 0.0) >= a and o.est_latency_s <= r.est_latency_s
                   and ((acc(o) or 0.0) > a or o.est_latency_s < r.est_latency_s) for o in pts):
            out.append(r)
    return sorted(out, key=lambda r: r.est_latency_s)


def full_front(data: ReportData) -> list[StudentRow]:
    """The accuracy-latency front after full distillation: students and the baseline (no references)."""
    return _front([s for s in data.students if not s.reference], lambda r: r.mlm_accuracy)


def _kendall(xs: Sequence[float], ys: Sequence[float]) -> float:
    n, s = len(xs), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int(math.copysign(1, xs[i] - xs[j]) * math.copysign(1, ys[i] - ys[j])) \
                if xs[i] != xs[j] and ys[i] != ys[j] else 0
    pairs = n * (n - 1) // 2
    return s / pairs if pairs else float("nan")


@dataclass(frozen=True)
class Summary:
    """The report's first block: the recommended student(s), sentences that say why, and warnings."""

    recommended: tuple[str, ...]
    lines: tuple[str, ...]
    warnings: tuple[str, ...]


def _acc_pm(r: StudentRow) -> str:
    se = r.accuracy_se
    return f"{r.mlm_accuracy:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def summarize(data: ReportData) -> Summary:
    """Which student to take and why, the device check in one sentence, and what looks suspicious.

    The rule: among the students on the full-distillation front that beat the baseline (higher held-out
    MLM accuracy at equal or lower estimated latency), take the fastest; when none beats it, the most
    accurate student on the front, said so; without a baseline, the most accurate on the front."""
    rows = data.students
    cands = [s for s in rows if s.distilled]
    base = _baseline_row(rows)
    front = full_front(data)
    on_front = [s for s in front if s.distilled]
    comps = {c.name: c for c in compare_to_baseline(rows)}
    lines: list[str] = []
    recommended: list[str] = []
    by_name = {s.name: s for s in rows}
    prof = data.search_profile
    if not cands:
        lines.append("No student finished full distillation, so there is nothing to recommend yet.")
    else:
        beaters = [s for s in on_front if s.name in comps and comps[s.name].beats]
        if beaters:
            pick = max(beaters, key=lambda s: (comps[s.name].speedup, comps[s.name].accuracy_gain))
            recommended = [pick.name] + [s.name for s in beaters if s is not pick]
        else:
            pick = max(on_front or cands, key=lambda s: s.mlm_accuracy or 0.0)
            recommended = [pick.name]
        c = comps.get(pick.name)
        text = (f"Take {pick.name} ({pick.config}, {pick.params / 1e6:.2f}M parameters): held-out MLM accuracy "
                f"{_acc_pm(pick)}, estimated {_ms(pick.est_latency_s)} ms on {prof}"
                + (f" (interval {_fmt_interval(pick.est_interval_s, None)} ms)" if pick.est_interval_s else "") + ".")
        lines.append(text)
        if base is not None and c is not None:
            gain = f"{c.accuracy_gain:+.4f}" + (f" ± {c.gain_se:.4f}" if c.gain_se else "")
            sig = ""
            if c.gain_se:
                z = abs(c.accuracy_gain) / c.gain_se
                sig = f", {z:.1f} standard errors" + (" (within the noise)" if z < 2 else "")
            who = "the baseline" + ("" if base.name == "baseline" else f" {base.name}")
            lines.append(f"Against {who} ({base.config}, {_acc_pm(base)} at "
                         f"{_ms(base.est_latency_s)} ms): accuracy {gain}{sig}; {c.speedup:.2f}x faster on {prof} "
                         "by the cost model (an error common to both estimates cancels in this ratio)"
                         + (f", {c.measured_speedup:.2f}x as measured on the device" if c.measured_speedup else "")
                         + ".")
            if not c.beats:
                lines.append("No student beat the baseline (higher accuracy at equal or lower latency); this is "
                             "the most accurate student on the front.")
        elif base is None:
            lines.append("The run has no baseline to compare with.")
        if len(recommended) > 1:
            lines.append("Also on the front and better than the baseline: " + ", ".join(recommended[1:]) + ".")
    lines.append(_device_sentence(data))
    warnings = _warnings(data, cands, front, by_name)
    return Summary(tuple(recommended), tuple(lines), tuple(warnings))


def _device_sentence(data: ReportData) -> str:
    measured = [s for s in data.students if s.error is not None]
    if not measured:
        return "No latency was measured on a device in this run."
    errs = sorted(abs(s.error) for s in measured if s.error is not None)
    within = sum(e <= AGREE_TOLERANCE for e in errs)
    median = errs[len(errs) // 2] if len(errs) % 2 else 0.5 * (errs[len(errs) // 2 - 1] + errs[len(errs) // 2])
    text = (f"Device check on {data.device}: {within} of {len(errs)} measured latencies within "
            f"±{AGREE_TOLERANCE:.0%} of the estimate (median error {median:.1%})")
    inside = [s for s in measured if s.local_interval_s and s.measured_latency_s is not None]
    if inside:
        k = sum(s.local_interval_s[0] <= s.measured_latency_s <= s.local_interval_s[1]  # type: ignore[index,operator]
                for s in inside)
        text += f"; {k} of {len(inside)} inside the profile's interval"
    drift = [abs(s.drift_error) for s in measured if s.drift_error is not None]
    if drift:
        text += f"; {sum(e <= AGREE_TOLERANCE for e in drift)} of {len(drift)} within ±10% drift-corrected"
    return text + "."


def _warnings(data: ReportData, cands: list[StudentRow], front: list[StudentRow],
              by_name: Mapping[str, StudentRow]) -> list[str]:
    out = []
    both = [s for s in cands if _finite(s.flash_accuracy)]
    if len(both) >= 2:
        best_flash = max(both, key=lambda s: s.flash_accuracy or 0.0)
        order = sorted(both, key=lambda s: -(s.mlm_accuracy or 0.0))
        rank = order.index(best_flash) + 1
        tau = _kendall([s.flash_accuracy or 0.0 for s in both], [s.mlm_accuracy or 0.0 for s in both])
        if rank > 1:
            out.append(f"Flash and full distillation disagree: {best_flash.name} had the best flash accuracy "
                       f"({best_flash.flash_accuracy:.4f}) but ranks {rank} of {len(both)} after full distillation "
                       f"({best_flash.mlm_accuracy:.4f}); Kendall tau between the two rankings {tau:+.2f} over "
                       f"{len(both)} students.")
    front_names = {s.name for s in front}
    dominated = [s.name for s in cands if s.pareto and s.name not in front_names]
    if dominated:
        out.append("On the search (flash) front but dominated after full distillation: " + ", ".join(dominated)
                   + " (the table's 'search front' and 'full front' columns).")
    ratio = data.calibration.get("drift_ratio")
    if ratio is not None and math.isfinite(ratio) and abs(ratio - 1.0) > DRIFT_WARN:
        out.append(f"The device ran at {ratio:.2f}x its calibration-time latency (drift check): estimates from the "
                   "profile as given are off by about that factor on this machine today.")
    if data.refit_profile:
        out.append(f"Confirmation errors exceeded the tolerance and a refitted profile was written "
                   f"({data.refit_profile}); the estimates in this report still use the profile as given. Pass "
                   "the refitted one as [confirm] profile (or --profile) to use it.")
    failed = [t for t in data.trials if t.status == "failed"]
    if data.trials and len(failed) > 0.2 * len(data.trials):
        out.append(f"{len(failed)} of {len(data.trials)} search trials failed (the trial table gives each error "
                   "source).")
    return out


# ============================================================================================ formatting
def _ms(v: float | None) -> str:
    """Milliseconds with four significant digits: rows tens of microseconds apart stay apart."""
    if v is None or not math.isfinite(v):
        return ""
    x = v * 1e3
    return f"{x:#.4g}".rstrip(".") if x < 1000 else f"{x:.0f}"


def _fmt_interval(iv: tuple[float, float] | None, measured: float | None) -> str:
    """``low-high`` in ms, marked with whether the measurement fell inside."""
    if iv is None:
        return ""
    text = f"{iv[0] * 1e3:.3g}-{iv[1] * 1e3:.3g}"
    if measured is not None and math.isfinite(measured):
        text += " (inside)" if iv[0] <= measured <= iv[1] else " (outside)"
    return text


def _fmt_pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:+.1f}%"


def _fmt_acc(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


#: A table cell: its text and, for a number, the value it sorts by (None: text, left-aligned).
Cell = tuple[str, float | None]


def _num(text: str, v: float | None) -> Cell:
    return (text, v if v is not None and math.isfinite(v) else (math.nan if text == "" else None))


def _txt(text: str) -> Cell:
    return (text, None)


@dataclass(frozen=True)
class _Table:
    head: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    numeric: tuple[bool, ...]


def _table(head: Sequence[str], rows: Sequence[Sequence[Cell]]) -> _Table:
    numeric = tuple(any(r[i][1] is not None for r in rows) for i in range(len(head)))
    return _Table(tuple(head), tuple(tuple(r) for r in rows), numeric)


def _link(data: ReportData, path: str | None) -> str | None:
    if not path:
        return None
    if data.link_base:
        try:
            return os.path.relpath(path, data.link_base)
        except ValueError:
            return path
    return path


P_BUDGET = "P(latency <= budget)"


def _has_budget(data: ReportData) -> bool:
    """Whether a latency budget was set (some student carries its probability of meeting it)."""
    return any(s.p_within_budget is not None for s in data.students)


def _budget_sentence(data: ReportData) -> str:
    return (f"{P_BUDGET}: the probability that the student's latency on {data.search_profile} meets the latency "
            "budget, its estimate's error band (measured/estimated) taken as a lognormal whose central interval is "
            "the band; students are chosen only when it reaches the run's feasibility level.")


def _students_table(data: ReportData) -> _Table:
    glue_keys = sorted({k for s in data.students for k in s.glue})
    front = {s.name for s in full_front(data)}
    budget = _has_budget(data)
    head = ["name", "config", "params (M)", "flash MLM acc", "MLM acc", "± SE", *glue_keys,
            f"est ms ({data.search_profile})", "est interval ms", *([P_BUDGET] if budget else []),
            "est ms (device)", "device interval ms",
            "measured ms", "error", "error, drift-corrected", "error after refit", "search front", "full front"]
    rows = []
    for s in data.students:
        name = s.name + (" (ref)" if s.reference else "") + (" (baseline)" if s.baseline and s.name != "baseline"
                                                              else "")
        rows.append([_txt(name), _txt(s.config), _num(f"{s.params / 1e6:.2f}", s.params / 1e6),
                     _num(_fmt_acc(s.flash_accuracy), s.flash_accuracy), _num(_fmt_acc(s.mlm_accuracy), s.mlm_accuracy),
                     _num(_fmt_acc(s.accuracy_se), s.accuracy_se),
                     *[_num(_fmt_acc(s.glue.get(k)), s.glue.get(k)) for k in glue_keys],
                     _num(_ms(s.est_latency_s), s.est_latency_s), _txt(_fmt_interval(s.est_interval_s, None)),
                     *([_num(f"{s.p_within_budget:.3f}" if s.p_within_budget is not None else "",
                             s.p_within_budget)] if budget else []),
                     _num(_ms(s.local_est_latency_s), s.local_est_latency_s),
                     _txt(_fmt_interval(s.local_interval_s, s.measured_latency_s)),
                     _num(_ms(s.measured_latency_s), s.measured_latency_s),
                     _num(_fmt_pct(s.error), s.error), _num(_fmt_pct(s.drift_error), s.drift_error),
                     _num(_fmt_pct(s.recal_error), s.recal_error), _txt("yes" if s.pareto else ""),
                     _txt("yes" if s.name in front and not s.reference else "")])
    return _table(head, rows)


def _baseline_table(data: ReportData) -> tuple[_Table | None, list[str]]:
    """The "against the baseline" table and its summary sentences (None and [] without a baseline)."""
    comps = compare_to_baseline(data.students)
    if not comps:
        return None, []
    head = ["student", "acc - baseline", "± SE", "speed-up", "measured speed-up", "beats it",
            f">= {FASTER_RATIO}x faster"]
    rows = [[_txt(c.name), _num(f"{c.accuracy_gain:+.4f}", c.accuracy_gain),
             _num(_fmt_acc(c.gain_se), c.gain_se), _num(f"{c.speedup:.2f}x", c.speedup),
             _num(f"{c.measured_speedup:.2f}x" if c.measured_speedup else "", c.measured_speedup),
             _txt("yes" if c.beats else "no"), _txt("yes" if c.faster_at_equal_accuracy else "no")] for c in comps]
    n_beat = sum(c.beats for c in comps)
    n_fast = sum(c.faster_at_equal_accuracy for c in comps)
    notes = [f"Speed-up: the baseline's estimated {data.search_profile} latency over the student's (measured: on "
             f"{data.device}). Beats it: higher held-out MLM accuracy at equal or lower latency. "
             f">= {FASTER_RATIO}x faster: at equal or higher accuracy.",
             f"Students that beat the baseline (higher held-out MLM accuracy at equal or lower "
             f"{data.search_profile} latency): {n_beat} of {len(comps)}; at least {FASTER_RATIO}x faster at equal or "
             f"higher accuracy: {n_fast} of {len(comps)}."]
    errors = [s.error for s in data.students if s.error is not None]
    if errors:
        within = sum(abs(e) <= AGREE_TOLERANCE for e in errors)
        notes.append(f"Confirmation: {within} of {len(errors)} measured latencies within 10% of the estimate "
                     "(profile as given, before any refit).")
        drift = [s.drift_error for s in data.students if s.error is not None and s.drift_error is not None]
        if drift:
            notes.append(f"With the estimate scaled by the drift check (the device's speed now against calibration "
                         f"time, from other students): {sum(abs(e) <= AGREE_TOLERANCE for e in drift)} of "
                         f"{len(drift)} within 10%.")
    return _table(head, rows), notes


def _trials_table(data: ReportData) -> _Table:
    head = ["trial", "status", "source", "config", "params (M)", "flash MLM acc",
            f"est ms ({data.search_profile})", "feasible"]
    rows = [[_num(str(t.trial_id) if t.trial_id is not None else "", t.trial_id), _txt(t.status), _txt(t.source),
             _txt(t.config), _num(f"{t.params / 1e6:.2f}" if t.params else "", t.params / 1e6 if t.params else None),
             _num(_fmt_acc(t.accuracy), t.accuracy), _num(_ms(t.est_latency_s), t.est_latency_s),
             _txt("yes" if t.feasible else "no")] for t in data.trials]
    return _table(head, rows)


#: How the calibration summary's keys read in the report: (plain name, kind of value).
CALIBRATION_NAMES: dict[str, tuple[str, str]] = {
    "n": ("students measured", "count"),
    "mape_before": ("mean |error|, profile as given", "pct"),
    "within_10pct_before": ("share within ±10%, profile as given", "pct"),
    "mape_drift_corrected": ("mean |error|, drift-corrected", "pct"),
    "within_10pct_drift_corrected": ("share within ±10%, drift-corrected", "pct"),
    "mape_after": ("mean |error| after the refit (in-sample, optimistic)", "pct"),
    "within_10pct_after": ("share within ±10% after the refit (in-sample)", "pct"),
    "recalibrated": ("refitted profile written", "bool"),
    "drift_ratio": ("drift check: latency now / at calibration time (median)", "ratio"),
    "drift_anchors": ("drift check: calibration students re-timed", "count"),
}


def _calibration_table(data: ReportData) -> _Table:
    rows = []
    keys = [k for k in CALIBRATION_NAMES if k in data.calibration] + \
        [k for k in data.calibration if k not in CALIBRATION_NAMES]
    for k in keys:
        v = data.calibration[k]
        name, kind = CALIBRATION_NAMES.get(k, (k, "number"))
        text = {"pct": f"{100 * v:.1f}%", "count": f"{v:.0f}", "bool": "yes" if v else "no",
                "ratio": f"{v:.3f}x"}.get(kind, f"{v:.4g}")
        rows.append([_txt(name), _num(text, v) if kind != "bool" else _txt(text)])
    return _table(["measure", "value"], rows)


def _metadata_table(data: ReportData) -> _Table:
    rows = [[_txt(k), _txt(v)] for k, v in data.metadata.items()]
    total = sum(data.stage_times_s.values())
    rows += [[_txt(f"stage {k}"), _num(f"{v:.1f} s", v)] for k, v in data.stage_times_s.items()]
    if data.stage_times_s:
        rows.append([_txt("stages in all"), _num(f"{total:.1f} s", total)])
    return _table(["", ""], rows)


# ============================================================================================ markdown
def _md_table(t: _Table) -> list[str]:
    """Columns padded to their width, numbers right-aligned, so the file reads as plain text."""
    cells = [list(t.head)] + [[c[0].replace("|", "/") for c in r] for r in t.rows]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(t.head))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(r, widths, t.numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, t.numeric)) + "|"
    return [line(cells[0]), sep] + [line(r) for r in cells[1:]]


def _columns(t: _Table, names: Sequence[str]) -> _Table:
    idx = [t.head.index(n) for n in names if n in t.head]
    return _Table(tuple(t.head[i] for i in idx), tuple(tuple(r[i] for i in idx) for r in t.rows),
                  tuple(t.numeric[i] for i in idx))


def _wrap(text: str, prefix: str = "") -> list[str]:
    return textwrap.wrap(text, 100, initial_indent=prefix, subsequent_indent=" " * len(prefix)) or [prefix]


def markdown(data: ReportData) -> str:
    summ = summarize(data)
    lines = [f"# {data.title}", "", "## Summary", ""]
    for s in summ.lines:
        lines += _wrap(s, "- ")
    for w in summ.warnings:
        lines += _wrap("Check: " + w, "- ")
    lines += [""] + _wrap(f"Search objective profile: {data.search_profile}; confirmation device: {data.device}. "
                          f"Params: {PARAMS_DEFINITION}; MLM accuracy ± its binomial standard error over the "
                          "held-out masked tokens.") + [""]
    t = _students_table(data)
    glue = [h for h in t.head if "/" in h]
    lines += ["## Accuracy", ""] + _md_table(_columns(t, ["name", "params (M)", "flash MLM acc", "MLM acc", "± SE",
                                                          *glue, "search front", "full front"]))
    lines += ["", "## Latency", ""] + _md_table(_columns(t, ["name", "config", t.head[6 + len(glue)],
                                                             "est interval ms",
                                                             *([P_BUDGET] if _has_budget(data) else [])]))
    if _has_budget(data):
        lines += [""] + _wrap(_budget_sentence(data))
    measured = t.head.index("measured ms")
    dev = _columns(_Table(t.head, tuple(r for r in t.rows if r[measured][0]), t.numeric),
                   ["name", "est ms (device)", "device interval ms", "measured ms", "error",
                    "error, drift-corrected", "error after refit"])
    if dev.rows:
        lines += ["", f"On the device, {data.device}:", ""]
        lines += _md_table(dataclasses.replace(dev, head=("name", "est ms", "interval ms", "measured ms", "error",
                                                          "drift-corr.", "after refit")))
    bt, bnotes = _baseline_table(data)
    if bt is not None:
        lines += ["", "## Against the baseline", ""] + _md_table(bt) + [""]
        for n in bnotes:
            lines += _wrap(n)
    if data.calibration:
        lines += ["", "## Calibration quality (confirmation device)", ""] + _md_table(_calibration_table(data))
    if data.hypervolume:
        lines += [""] + _wrap(f"Hypervolume after {len(data.hypervolume)} trials: {data.hypervolume[-1]:.5g}"
                              + _ref_text(data) + ".")
    if data.trials:
        lines += ["", "## Every trial", ""] + _md_table(_trials_table(data))
    if data.notes:
        lines += ["", "## Notes", ""]
        for n in data.notes:
            lines += _wrap(n, "- ")
    if data.metadata or data.stage_times_s:
        lines += ["", "## Run", ""] + _md_table(_metadata_table(data))
    return "\n".join(lines) + "\n"


def _ref_text(data: ReportData) -> str:
    if data.reference_point is None:
        return ""
    a, lat = data.reference_point
    return (f", against the reference point accuracy {a:.4g} and latency {_ms(lat)} ms (the area of the "
            "accuracy-latency plane the trials dominate above that accuracy and below that latency)")


# ============================================================================================ SVG plots
_COLORS = {"trial": "#9aa0a6", "infeasible": "#d5d8dc", "student": "#1f77b4", "flash": "#1f77b4",
           "baseline": "#e67e22", "reference": "#c0392b", "front": "#1f77b4", "band": "#e8eef5",
           "refit": "#2e8b57", "drift": "#8e44ad", "measured_front": "#16a085"}


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks spanning [lo, hi]; decades only when that gives too many."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mult in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in mult if lo <= m * 10.0 ** k <= hi]
        if len(ticks) <= 7:
            return ticks if len(ticks) >= 2 else [lo, hi]
    return [10.0 ** k for k in range(k0, k1 + 1, max(1, (k1 - k0) // 6)) if lo <= 10.0 ** k <= hi] or [lo, hi]


def _lin_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo or 1.0
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * step) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(v: float) -> str:
    return f"{v:.3g}"


class _Plot:
    """One SVG chart: axes (x log or linear, y linear or log), points with hover titles, lines, legend."""

    W, H, L, R, T, B = 960, 500, 64, 16, 34, 48

    def __init__(self, title: str, xlabel: str, ylabel: str, xs: Sequence[float], ys: Sequence[float], *,
                 xlog: bool = True, ylog: bool = False) -> None:
        self.title, self.xlabel, self.ylabel, self.xlog, self.ylog = title, xlabel, ylabel, xlog, ylog
        self.x0, self.x1 = self._range(xs, xlog)
        self.y0, self.y1 = self._range(ys, ylog)
        self.items: list[str] = []
        self.legend: list[tuple[str, str]] = []   # (label, marker svg at the origin)
        self.labels: list[tuple[float, float, str, str]] = []

    @staticmethod
    def _range(v: Sequence[float], log: bool) -> tuple[float, float]:
        v = [x for x in v if math.isfinite(x) and (x > 0 or not log)]
        if not v:
            return (0.1, 10.0) if log else (0.0, 1.0)
        lo, hi = min(v), max(v)
        if log:
            lo, hi = (lo / 1.5, hi * 1.5) if lo < hi else (lo / 2, hi * 2)
        else:
            pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 0.01)
            lo, hi = lo - pad, hi + pad
        return lo, hi

    def px(self, x: float) -> float:
        f = ((math.log10(x) - math.log10(self.x0)) / (math.log10(self.x1) - math.log10(self.x0)) if self.xlog
             else (x - self.x0) / (self.x1 - self.x0))
        return self.L + f * (self.W - self.L - self.R)

    def py(self, y: float) -> float:
        f = ((math.log10(y) - math.log10(self.y0)) / (math.log10(self.y1) - math.log10(self.y0)) if self.ylog
             else (y - self.y0) / (self.y1 - self.y0))
        return self.H - self.B - f * (self.H - self.T - self.B)

    def point(self, x: float, y: float, title: str, *, shape: str = "circle", color: str, r: float = 4.5,
              hollow: bool = False, dx: float = 0.0) -> None:
        cx, cy = self.px(x) + dx, self.py(y)
        fill = "white" if hollow else color
        t = f"<title>{html.escape(title)}</title>"
        if shape == "diamond":
            d = f"M{cx:.1f},{cy - r * 1.3:.1f}l{r * 1.3:.1f},{r * 1.3:.1f}l{-r * 1.3:.1f},{r * 1.3:.1f}" \
                f"l{-r * 1.3:.1f},{-r * 1.3:.1f}z"
            self.items.append(f"<path d='{d}' fill='{fill}' stroke='{color}' stroke-width='1.5'>{t}</path>")
        elif shape == "star":
            pts = " ".join(f"{cx + (r * 1.6 if i % 2 == 0 else r * 0.7) * math.sin(i * math.pi / 5):.1f},"
                           f"{cy - (r * 1.6 if i % 2 == 0 else r * 0.7) * math.cos(i * math.pi / 5):.1f}"
                           for i in range(10))
            self.items.append(f"<polygon points='{pts}' fill='{fill}' stroke='{color}'>{t}</polygon>")
        elif shape == "cross":
            self.items.append(f"<path d='M{cx - r:.1f},{cy - r:.1f}L{cx + r:.1f},{cy + r:.1f}M{cx - r:.1f},"
                              f"{cy + r:.1f}L{cx + r:.1f},{cy - r:.1f}' stroke='{color}' stroke-width='2'>{t}</path>")
        else:
            self.items.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='{r}' fill='{fill}' stroke='{color}' "
                              f"stroke-width='1.5'>{t}</circle>")

    def line(self, pts: Sequence[tuple[float, float]], *, color: str, width: float = 1.5, dash: str = "",
             arrow: bool = False, dx: float = 0.0) -> None:
        if len(pts) < 2:
            return
        d = "M" + "L".join(f"{self.px(x) + dx:.1f},{self.py(y):.1f}" for x, y in pts)
        extra = (f" stroke-dasharray='{dash}'" if dash else "") + (" marker-end='url(#arrow)'" if arrow else "")
        self.items.append(f"<path d='{d}' fill='none' stroke='{color}' stroke-width='{width}'{extra}/>")

    def errorbar(self, x: float, y: float, *, xerr: tuple[float, float] | None = None,
                 yerr: float | None = None, color: str, dx: float = 0.0) -> None:
        if xerr is not None:
            self.line([(xerr[0], y), (xerr[1], y)], color=color, width=1)
        if yerr:
            self.line([(x, y - yerr), (x, y + yerr)], color=color, width=1, dx=dx)

    def dodge(self, xs: Sequence[float], gap_px: float = 11.0) -> list[float]:
        """Horizontal offsets (px) that set points closer than ``gap_px`` on the x axis side by side."""
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        group: list[int] = []
        for i in order + [-1]:
            if i >= 0 and group and self.px(xs[i]) - self.px(xs[group[0]]) < gap_px:
                group.append(i)
                continue
            for k, j in enumerate(group):
                out[j] = (k - (len(group) - 1) / 2) * gap_px
            group = [i]
        return out

    def band(self, lo: float, hi: float, f_lo: float, f_hi: float, label: str) -> None:
        """The area between y = f_lo x and y = f_hi x over [lo, hi] (a ±tolerance band), drawn first."""
        pts = [(lo, lo * f_lo), (hi, hi * f_lo), (hi, hi * f_hi), (lo, lo * f_hi)]
        d = "M" + "L".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts) + "Z"
        self.items.insert(0, f"<path d='{d}' fill='{_COLORS['band']}' stroke='none'/>")
        self.legend.append((label, f"<rect x='-6' y='-5' width='12' height='10' fill='{_COLORS['band']}'/>"))

    def label(self, x: float, y: float, text: str, color: str = "#333", dx: float = 0.0) -> None:
        self.labels.append((self.px(x) + dx, self.py(y), text, color))

    def key(self, label: str, shape: str, color: str, hollow: bool = False) -> None:
        fill = "white" if hollow else color
        marker = {"circle": f"<circle r='4.5' fill='{fill}' stroke='{color}' stroke-width='1.5'/>",
                  "diamond": f"<path d='M0,-6l6,6l-6,6l-6,-6z' fill='{fill}' stroke='{color}'/>",
                  "star": f"<polygon points='0,-7 2,-2 7,-2 3,1 4,6 0,3 -4,6 -3,1 -7,-2 -2,-2' fill='{fill}' "
                          f"stroke='{color}'/>",
                  "cross": f"<path d='M-4,-4L4,4M-4,4L4,-4' stroke='{color}' stroke-width='2'/>",
                  "line": f"<path d='M-9,0H9' stroke='{color}' stroke-width='2'/>",
                  "dash": f"<path d='M-9,0H9' stroke='{color}' stroke-width='1.2' stroke-dasharray='4 3'/>",
                  "arrow": f"<path d='M-9,0H7' stroke='{color}' stroke-width='1' marker-end='url(#arrow)'/>"}[shape]
        self.legend.append((label, marker))

    def _place_labels(self) -> list[str]:
        """Labels right of their point, moved down (then up) until no two overlap."""
        out: list[str] = []
        boxes: list[tuple[float, float, float, float]] = []
        for x, y, text, color in sorted(self.labels, key=lambda v: (v[1], v[0])):
            w, h = 6.2 * len(text), 12.0
            lx = x + 7 if x + 7 + w < self.W - self.R else x - 7 - w
            ly = y + 4
            for k in range(40):
                dy = (k + 1) // 2 * 13 * (1 if k % 2 else -1) if k else 0
                cand = (lx, ly + dy - h, lx + w, ly + dy)
                if not any(cand[0] < b[2] and b[0] < cand[2] and cand[1] < b[3] and b[1] < cand[3] for b in boxes):
                    ly += dy
                    break
            boxes.append((lx, ly - h, lx + w, ly))
            if abs(ly - 4 - y) > 6:
                out.append(f"<path d='M{x:.1f},{y:.1f}L{lx + (0 if lx > x else w):.1f},{ly - 4:.1f}' "
                           f"stroke='#bbb' stroke-width='0.7'/>")
            out.append(f"<text x='{lx:.1f}' y='{ly:.1f}' font-size='11' fill='{color}'>{html.escape(text)}</text>")
        return out

    def svg(self, caption: str = "") -> str:
        W, H, L, R, T, B = self.W, self.H, self.L, self.R, self.T, self.B
        total_h = H + (((len(self.legend) + 1) // 2) * 17 + 10 if self.legend else 0)
        parts = [f"<svg viewBox='0 0 {W} {total_h}' width='100%' role='img' xmlns='http://www.w3.org/2000/svg' "
                 f"font-family='sans-serif' style='max-width:{W}px'><title>{html.escape(self.title)}</title>",
                 "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='6' markerHeight='6' "
                 "orient='auto-start-reverse'><path d='M0,0L10,5L0,10z' fill='#555'/></marker></defs>",
                 f"<rect x='{L}' y='{T}' width='{W - L - R}' height='{H - T - B}' fill='white' stroke='#999'/>"]
        xt = _log_ticks(self.x0, self.x1) if self.xlog else _lin_ticks(self.x0, self.x1)
        yt = _log_ticks(self.y0, self.y1) if self.ylog else _lin_ticks(self.y0, self.y1)
        last = -1e9
        for v in xt:
            x = self.px(v)
            parts.append(f"<path d='M{x:.1f},{T}V{H - B}' stroke='#eee'/>")
            if x - last > 40:  # never two labels on top of each other
                parts.append(f"<text x='{x:.1f}' y='{H - B + 15}' font-size='11' text-anchor='middle'>"
                             f"{_tick_text(v)}</text>")
                last = x
        last = 1e9
        for v in yt:
            y = self.py(v)
            parts.append(f"<path d='M{L},{y:.1f}H{W - R}' stroke='#eee'/>")
            if last - y > 16:
                parts.append(f"<text x='{L - 5}' y='{y + 4:.1f}' font-size='11' text-anchor='end'>"
                             f"{_tick_text(v)}</text>")
                last = y
        parts.append(f"<text x='{(L + W - R) / 2}' y='{H - 12}' font-size='12' text-anchor='middle'>"
                     f"{html.escape(self.xlabel)}</text>")
        parts.append(f"<text transform='translate(14,{(T + H - B) / 2}) rotate(-90)' font-size='12' "
                     f"text-anchor='middle'>{html.escape(self.ylabel)}</text>")
        parts.append(f"<text x='{L}' y='20' font-size='14' font-weight='bold'>{html.escape(self.title)}</text>")
        parts.append(f"<svg x='{L}' y='{T}' width='{W - L - R}' height='{H - T - B}' overflow='hidden'>"
                     f"<g transform='translate({-L},{-T})'>" + "".join(self.items) + "".join(self._place_labels())
                     + "</g></svg>")
        if self.legend:  # below the axes, two columns: it never hides a point
            col_w = (W - L - R) / 2
            for i, (text, marker) in enumerate(self.legend):
                x, y = L + (i % 2) * col_w + 8, H + 8 + (i // 2) * 17
                parts.append(f"<g transform='translate({x:.1f},{y})'>{marker}</g>"
                             f"<text x='{x + 14:.1f}' y='{y + 4}' font-size='12'>{html.escape(text)}</text>")
        parts.append("</svg>")
        body = "".join(parts)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return f"<figure><div class='scroll plot'>{body}</div>{cap}</figure>"


def _steps(front: Sequence[tuple[float, float]], x_end: float) -> list[tuple[float, float]]:
    """A front's step line, fastest first: its accuracy holds until the next, slower-but-better point."""
    pts: list[tuple[float, float]] = []
    for x, y in front:
        if pts:
            pts.append((x, pts[-1][1]))
        pts.append((x, y))
    return pts + [(x_end, pts[-1][1])] if pts else pts


def _pareto_plot(data: ReportData) -> str:
    """Accuracy against estimated latency: trials, the students' flash -> full arrows, the full front."""
    stu = [s for s in data.students if not s.reference]
    refs = [s for s in data.students if s.reference]
    ok = [t for t in data.trials if _finite(t.accuracy) and t.est_latency_s]
    xs = [t.est_latency_s * 1e3 for t in ok if t.est_latency_s] + [s.est_latency_s * 1e3 for s in data.students]
    for s in stu:
        if s.est_interval_s:
            xs += [s.est_interval_s[0] * 1e3, s.est_interval_s[1] * 1e3]
    ys = [t.accuracy for t in ok if t.accuracy is not None]
    ys += [v for s in data.students for v in (s.mlm_accuracy, s.flash_accuracy) if _finite(v)]  # type: ignore[misc]
    ys += [(s.mlm_accuracy or 0.0) + k * s.accuracy_se for s in stu if s.accuracy_se for k in (-1, 1)]
    p = _Plot("Accuracy vs estimated latency", f"estimated latency on {data.search_profile} (ms, log scale)",
              "held-out MLM accuracy", xs, ys)
    if ok:
        for t in ok:
            assert t.accuracy is not None and t.est_latency_s is not None
            p.point(t.est_latency_s * 1e3, t.accuracy, f"trial {t.trial_id} {t.config}: flash accuracy "
                    f"{t.accuracy:.4f}, {_ms(t.est_latency_s)} ms", color=_COLORS["trial" if t.feasible
                                                                              else "infeasible"], r=2.5)
        p.key("search trials (flash accuracy)", "circle", _COLORS["trial"])
    front = full_front(data)
    if len(front) >= 1:
        p.line(_steps([(s.est_latency_s * 1e3, s.mlm_accuracy or 0.0) for s in front], p.x1),
               color=_COLORS["front"], width=1.2, dash="5 3")
        p.key("front after full distillation (estimated latency)", "dash", _COLORS["front"])
    drew_flash = False
    # students a few px apart in latency are drawn side by side (their hover text gives the exact value)
    offsets = p.dodge([s.est_latency_s * 1e3 for s in stu])
    for s, dx in zip(stu, offsets):
        x = s.est_latency_s * 1e3
        color = _COLORS["baseline" if s.baseline else "student"]
        iv = (s.est_interval_s[0] * 1e3, s.est_interval_s[1] * 1e3) if s.est_interval_s else None
        if s.flash_accuracy is not None and s.mlm_accuracy is not None and _finite(s.flash_accuracy) \
                and _finite(s.mlm_accuracy):
            p.line([(x, s.flash_accuracy), (x, s.mlm_accuracy)], color="#555", width=1, arrow=True, dx=dx)
        if s.flash_accuracy is not None and _finite(s.flash_accuracy):
            p.point(x, s.flash_accuracy, f"{s.name} after flash distillation: {s.flash_accuracy:.4f}",
                    color=color, hollow=True, r=3.5, dx=dx)
            drew_flash = True
        yv = s.mlm_accuracy if _finite(s.mlm_accuracy) else s.flash_accuracy
        if yv is None or not math.isfinite(yv):
            continue
        y = yv
        p.errorbar(x, y, xerr=iv, yerr=s.accuracy_se if _finite(s.mlm_accuracy) else None, color=color, dx=dx)
        shape = "diamond" if s.baseline else "circle"
        p.point(x, y, f"{s.name} ({s.config}): MLM accuracy {_fmt_acc(s.mlm_accuracy) or 'n/a'}"
                      + (f" ± {s.accuracy_se:.4f}" if s.accuracy_se else "") + f", {_ms(s.est_latency_s)} ms"
                      + (f" (interval {_fmt_interval(s.est_interval_s, None)})"
                         if s.est_interval_s else ""), shape=shape, color=color, hollow=not _finite(s.mlm_accuracy),
                dx=dx)
        p.label(x, y, s.name, color, dx=dx)
    if any(not s.baseline for s in stu):
        p.key("students after full distillation (± SE, latency interval)", "circle", _COLORS["student"])
    if drew_flash:
        p.key("the same after flash distillation (arrow: flash -> full)", "circle", _COLORS["student"], hollow=True)
    if any(s.baseline for s in stu):
        p.key("baseline (same distillation budget)", "diamond", _COLORS["baseline"])
    drew_ref = False
    for s in refs:
        x = s.est_latency_s * 1e3
        if not p.x0 <= x <= p.x1:
            continue
        a = s.mlm_accuracy if _finite(s.mlm_accuracy) else None
        if a is None:
            p.line([(x, p.y0), (x, p.y1)], color=_COLORS["reference"], width=0.8, dash="2 3")
            p.label(x, p.y0 + 0.04 * (p.y1 - p.y0), s.name, _COLORS["reference"])
        else:
            p.point(x, a, f"{s.name} ({s.config}): MLM accuracy {a:.4f}, {_ms(s.est_latency_s)} ms", shape="star",
                    color=_COLORS["reference"])
            p.label(x, a, s.name, _COLORS["reference"])
        drew_ref = True
    if drew_ref:
        p.key("reference models (dotted line: no accuracy here)", "star", _COLORS["reference"])
    return p.svg("Hover a point for its numbers. The dashed step line is the accuracy-latency front of the fully "
                 "distilled students and the baseline; error bars are ± one standard error of accuracy and the "
                 f"{data.search_profile} profile's latency interval.")


def _measured_front_plot(data: ReportData) -> str | None:
    stu = [s for s in data.students if not s.reference and s.measured_latency_s and _finite(s.mlm_accuracy)]
    if len(stu) < 2:
        return None
    p = _Plot(f"Accuracy vs measured latency on {data.device}", "measured latency (ms, log scale)",
              "held-out MLM accuracy", [s.measured_latency_s * 1e3 for s in stu if s.measured_latency_s],
              [(s.mlm_accuracy or 0.0) + k * (s.accuracy_se or 0.0) for s in stu for k in (-1, 1)])
    by_meas = sorted(stu, key=lambda s: s.measured_latency_s or 0.0)
    front, best = [], -1.0
    for s in by_meas:
        if (s.mlm_accuracy or 0.0) > best:
            front.append(s)
            best = s.mlm_accuracy or 0.0
    p.line(_steps([((s.measured_latency_s or 0.0) * 1e3, s.mlm_accuracy or 0.0) for s in front], p.x1),
           color=_COLORS["measured_front"], width=1.2, dash="5 3")
    p.key("front over measured latency", "dash", _COLORS["measured_front"])
    for s in stu:
        color = _COLORS["baseline" if s.baseline else "student"]
        x, y = (s.measured_latency_s or 0.0) * 1e3, s.mlm_accuracy or 0.0
        p.errorbar(x, y, yerr=s.accuracy_se, color=color)
        p.point(x, y, f"{s.name}: {_fmt_acc(s.mlm_accuracy)}, measured {_ms(s.measured_latency_s)} ms",
                shape="diamond" if s.baseline else "circle", color=color)
        p.label(x, y, s.name, color)
    p.key("students", "circle", _COLORS["student"])
    if any(s.baseline for s in stu):
        p.key("baseline", "diamond", _COLORS["baseline"])
    return p.svg("The same students on the confirmation device: the front by what was measured.")


def _predicted_plot(data: ReportData) -> str | None:
    rows = [s for s in data.students if s.measured_latency_s and s.local_est_latency_s]
    if not rows:
        return None
    vals = [v * 1e3 for s in rows for v in (s.measured_latency_s, s.local_est_latency_s, s.drift_est_latency_s,
                                            s.recal_est_latency_s) if v]
    lo, hi = min(vals) / 1.3, max(vals) * 1.3
    p = _Plot(f"Predicted vs measured on {data.device}", "measured latency (ms, log scale)",
              "estimated latency (ms, log scale)", [lo, hi], [lo, hi], ylog=True)
    p.x0, p.x1, p.y0, p.y1 = lo, hi, lo, hi
    p.band(lo, hi, 1 - AGREE_TOLERANCE, 1 + AGREE_TOLERANCE, f"±{AGREE_TOLERANCE:.0%} of the measurement")
    p.line([(lo, lo), (hi, hi)], color="#444", width=0.8, dash="4 3")
    p.key("estimate = measurement", "dash", "#444")
    kinds = (("local_est_latency_s", "profile as given", "circle", _COLORS["student"]),
             ("drift_est_latency_s", "drift-corrected (speed now vs calibration)", "circle", _COLORS["drift"]),
             ("recal_est_latency_s", "after the refit (in-sample)", "cross", _COLORS["refit"]))
    for attr, label, shape, color in kinds:
        pts = [(s, getattr(s, attr)) for s in rows if getattr(s, attr)]
        if not pts:
            continue
        for s, v in pts:
            m = (s.measured_latency_s or 0.0) * 1e3
            p.point(m, v * 1e3, f"{s.name}, {label}: estimated {_ms(v)} ms, measured {_ms(s.measured_latency_s)} ms "
                    f"({_fmt_pct(v / (s.measured_latency_s or 1.0) - 1)})", shape=shape, color=color,
                    hollow=attr == "drift_est_latency_s", r=4.5)
        p.key(label, shape, color, hollow=attr == "drift_est_latency_s")
    for s in rows:
        p.label((s.measured_latency_s or 0.0) * 1e3, (s.local_est_latency_s or 0.0) * 1e3, s.name)
    return p.svg("Points inside the shaded band are estimates within 10% of what was measured.")


def _hv_plot(data: ReportData) -> str | None:
    if not data.hypervolume:
        return None
    hv = list(data.hypervolume)
    n = range(1, len(hv) + 1)
    p = _Plot("Hypervolume over trials", "completed trials", "hypervolume", [float(i) for i in n], hv, xlog=False)
    p.line(list(zip((float(i) for i in n), hv)), color=_COLORS["front"], width=1.8)
    for i, v in zip(n, hv):
        p.point(float(i), v, f"after {i} trials: {v:.5g}", color=_COLORS["front"], r=2.5)
    return p.svg("Hypervolume of the search front" + (_ref_text(data) or " (no reference point recorded)") + ".")


# ============================================================================================ HTML
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1180px;margin:0 auto;padding:12px 16px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:.3em 0}h2{font-size:1.2em;margin-top:1.6em}
.summary{border:2px solid #1f77b4;border-radius:8px;padding:8px 16px;background:#f5f9fd}
.summary .pick{font-size:1.1em}.warn{color:#8a4b00}
.scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:13px;white-space:nowrap}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#eee;cursor:pointer;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
th.num{text-align:right}figure{margin:0}figcaption{font-size:12px;color:#555;margin:2px 0 10px}
svg{height:auto}.plot svg{min-width:600px}
@media (max-width:600px){body{padding:8px}table{font-size:12px}}
"""

#: Click a header to sort by it (numbers by their value; click again to reverse).
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],rows=Array.from(b.rows),dir=th.dataset.dir==='1'?-1:1;
t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=dir===1?'1':'-1';
rows.sort(function(a,c){var x=a.cells[i],y=c.cells[i],u=x.dataset.v,w=y.dataset.v;
if(u!==undefined&&w!==undefined){u=parseFloat(u);w=parseFloat(w);if(isNaN(u))return 1;if(isNaN(w))return -1;
return dir*(u-w)}return dir*x.textContent.localeCompare(y.textContent)});
rows.forEach(function(r){b.appendChild(r)})})});
"""


def _html_table(t: _Table, links: Mapping[str, str] | None = None) -> str:
    esc = html.escape
    head = "".join(f"<th{' class=num' if num else ''}>{esc(h)}</th>" for h, num in zip(t.head, t.numeric))
    body = []
    for r in t.rows:
        cells = []
        for j, (text, v) in enumerate(r):
            inner = esc(text)
            if j == 0 and links and text in links:
                inner = f"<a href='{esc(links[text])}'>{inner}</a>"
            if t.numeric[j]:
                val = "NaN" if v is None or not math.isfinite(v) else repr(float(v))
                cells.append(f"<td class=num data-v='{val}'>{inner}</td>")
            else:
                cells.append(f"<td>{inner}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class=scroll><table class=sortable><thead><tr>{head}</tr></thead><tbody>" + "".join(body)
            + "</tbody></table></div>")


def render_html(data: ReportData) -> str:
    esc = html.escape
    summ = summarize(data)
    parts = ["<!doctype html><html lang=en><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{esc(data.title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{esc(data.title)}</h1>", "<section class=summary id=summary><h2>Summary</h2>"]
    for i, line in enumerate(summ.lines):
        parts.append(f"<p{' class=pick' if i == 0 and summ.recommended else ''}>{esc(line)}</p>")
    if summ.warnings:
        parts.append("<ul>" + "".join(f"<li class=warn>Check: {esc(w)}</li>" for w in summ.warnings) + "</ul>")
    parts.append("</section>")
    parts.append(f"<p>Search objective profile: <code>{esc(data.search_profile)}</code>; confirmation device: "
                 f"{esc(data.device)}. Params: {esc(PARAMS_DEFINITION)}. MLM accuracy ± its binomial standard error "
                 "over the held-out masked tokens (a lower bound: tokens of one sequence are not independent). "
                 "Click a column header to sort.</p>")
    parts.append(_pareto_plot(data))
    links = {s.name + (" (ref)" if s.reference else ""): _link(data, s.exported) for s in data.students
             if s.exported}
    parts += ["<h2>Students</h2>", _html_table(_students_table(data), {k: v for k, v in links.items() if v})]
    if _has_budget(data):
        parts.append(f"<p>{esc(_budget_sentence(data))}</p>")
    if links:
        parts.append("<p>A student's name links to its exported transformers folder.</p>")
    bt, bnotes = _baseline_table(data)
    if bt is not None:
        parts += ["<h2>Against the baseline</h2>", _html_table(bt)] + [f"<p>{esc(n)}</p>" for n in bnotes]
    for fig in (_measured_front_plot(data), _predicted_plot(data)):
        if fig:
            parts.append(fig)
    if data.calibration:
        parts += ["<h2>Calibration quality (confirmation device)</h2>", _html_table(_calibration_table(data))]
    hv = _hv_plot(data)
    if hv:
        parts += ["<h2>Search</h2>", hv]
    if data.trials:
        parts += [f"<h2>Every trial ({len(data.trials)})</h2>", _html_table(_trials_table(data))]
    if data.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in data.notes) + "</ul>")
    if data.metadata or data.stage_times_s:
        parts += ["<h2>Run</h2>", _html_table(_metadata_table(data))]
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
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
