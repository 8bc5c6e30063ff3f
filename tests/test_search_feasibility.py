"""A latency budget as a probability of feasibility (issue 16): the probability, the engine, the selection."""
from __future__ import annotations

import math

import numpy as np
import pytest

from autodistill.errors import SearchError
from autodistill.hardware import SPEC_ONLY_ERROR_BAND, ErrorBand, load_profile
from autodistill.search.engine import EngineConfig, SearchEngine
from autodistill.search.evaluators import SyntheticEvaluator
from autodistill.search.feasibility import LatencyFeasibility, band_lognormal, p_within_budget, pool_feasibility
from autodistill.search.selection import select_students
from autodistill.search.types import Trial
from autodistill.space import build_pool, load_space

CAL = ErrorBand(0.95, 1.10, n=40, source="held-out test")
FAST = dict(mc_samples=16, acq_candidates=256, n_initial=5, fit_maxiter=40)


@pytest.fixture(scope="module")
def pool():
    return build_pool(load_space("minilm"))  # cpu_generic, budget 5 ms at b1 s128


@pytest.mark.parametrize("band", [SPEC_ONLY_ERROR_BAND, CAL, ErrorBand(0.5, 4.0, level=0.6)])
def test_probability_is_monotone_half_at_the_median_and_level_inside_the_band(band: ErrorBand) -> None:
    est = 2e-3
    budgets = est * np.geomspace(0.02, 100.0, 400)
    p = p_within_budget(est, budgets, band)
    assert np.all(np.diff(p) >= 0) and p[0] < 0.05 and p[-1] > 0.95
    median = math.sqrt(band.low * band.high)
    assert p_within_budget(est, est * median, band) == pytest.approx(0.5, abs=1e-12)
    hi, lo = p_within_budget(est, est * band.high, band), p_within_budget(est, est * band.low, band)
    assert hi == pytest.approx((1 + band.level) / 2, abs=1e-9)  # the band's edges hold `level` between them
    assert lo == pytest.approx((1 - band.level) / 2, abs=1e-9)
    assert hi - lo == pytest.approx(band.level, abs=1e-9)
    # in the estimate: the same probability falls as the estimate grows
    ests = est * np.geomspace(0.2, 10.0, 50)
    assert np.all(np.diff(p_within_budget(ests, 4e-3, band)) <= 0)
    f = LatencyFeasibility.of_band(4e-3, band, 0.9)
    assert f.probability(f.max_estimate_s()) == pytest.approx(0.9, abs=1e-9)
    assert bool(f.feasible(f.max_estimate_s() * 0.999)) and not bool(f.feasible(f.max_estimate_s() * 1.001))


def test_zero_width_band_is_a_step_and_bad_inputs_are_refused() -> None:
    band = (1.2, 1.2, 0.9)
    assert p_within_budget(1.0, 1.2, band) == 1.0 and p_within_budget(1.0, 1.19, band) == 0.0
    assert math.isnan(p_within_budget(float("nan"), 1.0, band))
    mu, sigma = band_lognormal(0.9, 3.0, 0.9)
    assert mu == pytest.approx(math.log(math.sqrt(2.7))) and sigma > 0
    with pytest.raises(SearchError, match="probability"):
        LatencyFeasibility.of_band(1e-3, CAL, level=1.0)
    with pytest.raises(SearchError, match="positive"):
        LatencyFeasibility.of_band(0.0, CAL)
    with pytest.raises(SearchError, match="feasibility_level"):
        EngineConfig(feasibility_level=0.0)
    with pytest.raises(SearchError, match="latency_band"):
        EngineConfig(latency_band=(1.0, 2.0))  # type: ignore[arg-type]


def trials_near(budget: float) -> list[Trial]:
    """Completed trials at 0.2 .. 0.99 of the budget, more accurate the slower (all on one front)."""
    fr = np.linspace(0.2, 0.99, 12)
    arch = build_pool(load_space("minilm")).arch(0)
    return [Trial(i + 1, arch, "completed", accuracy=0.5 + 0.3 * float(x), latency_s=float(x) * budget)
            for i, x in enumerate(fr)]


def test_spec_only_profile_keeps_near_budget_students_out_that_a_calibrated_one_lets_in() -> None:
    """The issue's test: same estimates, different bands."""
    spec = load_profile("cpu_generic")
    assert spec.error_band() == SPEC_ONLY_ERROR_BAND
    calibrated = load_profile("cpu_local").with_interval(CAL)  # a calibrated profile, its band pinned here
    assert calibrated.error_band() == CAL
    budget = 5e-3
    trials = trials_near(budget)
    f_spec = LatencyFeasibility.of_band(budget, spec.error_band(), 0.9)
    f_cal = LatencyFeasibility.of_band(budget, calibrated.error_band(), 0.9)
    near = [t for t in trials if t.latency_s and t.latency_s > 0.5 * budget]
    assert near and not any(f_spec.feasible(t.latency_s) for t in near)
    assert all(f_cal.feasible(t.latency_s) for t in near if t.latency_s and t.latency_s < 0.85 * budget)
    s_spec = select_students(trials, trials, 3, feasibility=f_spec)
    s_cal = select_students(trials, trials, 3, feasibility=f_cal)
    s_any = select_students(trials, trials, 3)
    assert max(t.latency_s or 0 for t in s_spec) <= f_spec.max_estimate_s() < 0.5 * budget
    assert max(t.latency_s or 0 for t in s_cal) > 0.8 * budget
    assert [t.trial_id for t in s_any] == [t.trial_id for t in select_students(trials, trials, 3)]
    # the front is recomputed from the feasible trials, and nothing comes back when none is feasible
    assert select_students(trials, trials, 3, feasibility=LatencyFeasibility.of_band(1e-4, CAL)) == []


def test_engine_proposes_only_feasible_candidates_and_the_band_decides_which(pool) -> None:
    spec_b = (SPEC_ONLY_ERROR_BAND.low, SPEC_ONLY_ERROR_BAND.high, SPEC_ONLY_ERROR_BAND.level)
    cal_b = (CAL.low, CAL.high, CAL.level)
    out = {}
    for name, band in (("spec", spec_b), ("cal", cal_b), ("profile", None)):
        eng = SearchEngine(pool, EngineConfig(seed=0, feasibility_level=0.9, latency_band=band, **FAST))
        assert eng.feasibility is not None and eng.feasibility.budget_s == 5e-3
        ev = SyntheticEvaluator(seed=0)
        tid = 1
        for _ in range(3):
            for s in eng.suggest_detailed(3):
                r = ev.evaluate(s.arch, tid)
                eng.observe(Trial(tid, s.arch, "completed", accuracy=r.accuracy, latency_s=s.latency_s,
                                  source=s.source))
                tid += 1
        props = eng.suggest_detailed(4)
        assert {p.source for p in props} == {"qlognehvi"}
        assert all(bool(eng.feasibility.feasible(p.latency_s)) for p in props)
        out[name] = (eng.feasibility.max_estimate_s(), int(eng.last_feasible or 0), props)
    # cpu_generic is spec-only: its own band is the spec-only one
    assert out["profile"][0] == pytest.approx(out["spec"][0])
    assert out["spec"][0] < 0.45 * 5e-3 < 0.9 * 5e-3 < out["cal"][0]
    assert out["spec"][1] < out["cal"][1]
    # the same pool and history: the calibrated band lets in candidates the spec-only one keeps out
    assert max(p.latency_s or 0 for p in out["cal"][2]) > out["spec"][0]


def test_without_a_budget_or_a_level_nothing_is_filtered(pool) -> None:
    assert SearchEngine(pool, EngineConfig(**FAST)).feasibility is None
    from autodistill.space import space_from_dict

    free = build_pool(space_from_dict({"name": "t", "base": "mobilebert",
                                       "fields": {"num_hidden_layers": [1, 2, 3], "hidden_size": [256, 512]},
                                       "objective": {"profile": "tpu_v4i"}}))
    assert pool_feasibility(free) is None
    assert SearchEngine(free, EngineConfig(feasibility_level=0.9, **FAST)).feasibility is None
    f = SearchEngine(free, EngineConfig(feasibility_level=0.9, target_latency_s=1e-3, **FAST)).feasibility
    assert f is not None and f.budget_s == 1e-3


def test_a_store_pinned_before_the_new_engine_settings_resumes_and_is_pinned_from_then_on(tmp_path, pool) -> None:
    from autodistill.search.runner import run_search
    from autodistill.search.store import TrialStore

    space = load_space("minilm")
    cfg = EngineConfig(seed=0, **FAST)

    def go(budget: int, c: EngineConfig = cfg) -> None:
        run_search(space=space, evaluator=SyntheticEvaluator(), store=tmp_path / "a", budget=budget,
                   searcher=SearchEngine(pool, c), pool=pool, progress=False)

    go(2)
    with TrialStore(tmp_path / "a") as st:  # as an older autodistill wrote it
        meta = st.get_meta("pinned")
        for k in ("feasibility_level", "latency_band"):
            del meta["engine_config"][k]
        st.set_meta({"pinned": meta})
    go(3)
    with TrialStore(tmp_path / "a", create=False, readonly=True) as st:
        assert "feasibility_level" in st.get_meta("pinned")["engine_config"] and st.n_finished == 3
    with pytest.raises(SearchError, match="feasibility_level"):
        go(4, EngineConfig(seed=0, feasibility_level=0.9, **FAST))


def test_report_shows_the_probability_column_and_sentence_only_with_a_budget() -> None:
    import dataclasses
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from report_data import report_data

    from autodistill.report import P_BUDGET, markdown, render_html

    data = report_data()
    assert P_BUDGET not in markdown(data) and "P(latency &lt;= budget)" not in render_html(data)
    first = data.students[0].name
    with_p = dataclasses.replace(data, students=tuple(dataclasses.replace(s, p_within_budget=0.937)
                                                      if s.name == first else s for s in data.students))
    md, page = " ".join(markdown(with_p).split()), render_html(with_p)
    assert P_BUDGET in md and "0.937" in md and "central interval is the band" in md
    assert "P(latency &lt;= budget)" in page and "0.937" in page
