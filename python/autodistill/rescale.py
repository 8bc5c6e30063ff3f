"""Drift that fixes itself: re-measure a calibrated profile's base rates and rescale it.

A calibrated profile's efficiencies are relative to base rates measured at calibration time (peak
FLOP/s, vector FLOP/s, DRAM and cache bandwidth: the ``peak``, ``stream`` and ``vector_peak`` rows of
its measurement table). On a machine that runs faster or slower than that one (another VM of the
same type, a throttled card), `rescale_profile` times those same cases again, in at most ``max_s``
seconds, and multiplies each base rate by how much faster it runs now. The efficiencies, the
shape terms and the overheads stay as fitted: the base-rate cases do not measure per-call host
time (on this project's CPU VMs, scaling the overheads with the peak made the rescaled estimates
worse; see the README's "Drift").
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autodistill.calibration import measured_base_profile, measurements_path
from autodistill.errors import CalibrationError
from autodistill.hardware import HardwareProfile
from autodistill.measure.cases import BASE_KINDS
from autodistill.measure.table import row_params

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Profile fields a rescale multiplies by the measured now / then rate ratio.
RATE_FIELDS = ("peak_flops_per_s", "vector_flops_per_s", "hbm_bytes_per_s", "onchip_bytes_per_s")
DEFAULT_MAX_S = 60.0


@dataclass(frozen=True)
class Rescale:
    """A rescaled profile and what changed: ``ratios[field]`` = rate now / rate at calibration."""

    profile: HardwareProfile
    ratios: Mapping[str, float]
    n_cases: int
    seconds: float

    @property
    def speed_ratio(self) -> float:
        """How fast the device runs now against calibration time (geometric mean of the rate ratios)."""
        vals = [v for v in self.ratios.values() if v > 0]
        return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 1.0

    def message(self) -> str:
        parts = ", ".join(f"{k.replace('_per_s', '')} x{v:.3f}" for k, v in self.ratios.items())
        return (f"rescaled profile {self.profile.name!r}: re-measured {self.n_cases} base-rate cases in "
                f"{self.seconds:.1f} s; this device runs at {self.speed_ratio:.3f}x its calibration-time rates "
                f"({parts})")


def base_rate_rows(profile: HardwareProfile, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The calibration-time base-rate rows of ``profile``'s measurement table (first repeat only)."""
    from autodistill.measure import load_measurements

    if table is None:
        if profile.path is None:
            raise CalibrationError(f"profile {profile.name!r} has no file, so no measurement table beside it")
        path = measurements_path(profile.path)
        if not path.is_file():
            raise CalibrationError(f"profile {profile.name!r} has no measurement table at {path}: rescaling needs "
                                   "the base-rate cases it was calibrated with")
        table = load_measurements(path)
    rows = table[table["kind"].isin(BASE_KINDS)]
    if "repeat" in rows.columns:
        rows = rows[rows["repeat"] == 0]
    if rows.empty:
        raise CalibrationError(f"profile {profile.name!r}: its measurement table has no base-rate rows "
                               f"({', '.join(BASE_KINDS)})")
    return rows.drop_duplicates("name").reset_index(drop=True)


def _time_col(table: pd.DataFrame) -> str:
    return "min_s" if "min_s" in table.columns else "median_s"


def rescale_profile(profile: HardwareProfile, device: str = "cpu", *, max_s: float = DEFAULT_MAX_S,
                    table: pd.DataFrame | None = None,
                    run: Callable[[list[Any], float], pd.DataFrame] | None = None,
                    dtype: str | None = None) -> Rescale:
    """Re-time ``profile``'s base-rate cases on ``device`` (at most ``max_s`` seconds) and rescale it.

    ``run(cases, max_s)`` measures cases into a table (default: `autodistill.measure.run_cases` on
    the device, timed as calibration times); tests pass their own. Raises `CalibrationError` when
    the profile is spec-only or has no base-rate rows to compare with."""
    if profile.calibration is None or not profile.calibration.fitted:
        raise CalibrationError(f"profile {profile.name!r} is spec-only: there are no calibration-time rates to "
                               "rescale from (calibrate it first)")
    if not max_s > 0:
        raise CalibrationError(f"max_s={max_s!r} must be > 0")
    dt = dtype or profile.default_dtype
    then = base_rate_rows(profile, table)
    from autodistill.measure import Case

    cases = [Case(str(r["kind"]), str(r["name"]), row_params(r)) for r in then.to_dict("records")]
    t0 = time.perf_counter()
    cores = calibration_cores(then)
    now = (run or _default_run(device, dt, cores))(cases, max_s)
    seconds = time.perf_counter() - t0
    col = _time_col(then)
    measured = set(now["name"])
    then = then[then["name"].isin(measured)]
    _, got_then = measured_base_profile(profile, then, time_col=col, dtype=dt)
    _, got_now = measured_base_profile(profile, now, time_col=col, dtype=dt)
    ratios = {k: got_now[k] / got_then[k] for k in RATE_FIELDS if k in got_then and k in got_now and got_then[k] > 0}
    if not ratios:
        raise CalibrationError("no base rate could be re-measured in time; raise max_s")
    return Rescale(apply_ratios(profile, ratios, dt), ratios, len(now), seconds)


def apply_ratios(profile: HardwareProfile, ratios: Mapping[str, float], dtype: str) -> HardwareProfile:
    """``profile`` with each base rate multiplied by its ratio; everything else as it was."""
    kw: dict[str, Any] = {}
    for k, r in ratios.items():
        if k == "peak_flops_per_s":
            kw[k] = {dtype: profile.peak_flops_per_s[dtype] * r}
        else:
            kw[k] = getattr(profile, k) * r
    cal = profile.calibration
    assert cal is not None
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    note = ", ".join(f"{k} x{v:.4g}" for k, v in ratios.items())
    new_cal = dataclasses.replace(cal, source=f"{cal.source}; rescaled {stamp}: {note}"[:1000])
    return dataclasses.replace(profile, calibration=new_cal, path=None, **kw)


def calibration_cores(table: pd.DataFrame) -> int:
    """How many cores the calibration measured on, from its ``cpu_affinity`` column ("[0, 1]", or a
    lone core number that the CSV reader turned into an int); 0 when unknown (all cores)."""
    import json

    if "cpu_affinity" not in table.columns or table.empty:
        return 0
    v = table["cpu_affinity"].iloc[0]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return 0 if isinstance(v, float) and math.isnan(v) else 1
    try:
        got = json.loads(str(v))
    except ValueError:
        return 0
    return len(got) if isinstance(got, list) else 1


_CHILD = r"""
import json, sys
req = json.loads(sys.stdin.read())
from autodistill import measure
if req["device"] == "cpu" and req["cores"] > 0:
    measure.pin_cores(req["cores"])   # before JAX starts, as at calibration time
cases = [measure.Case(c["kind"], c["name"], c["params"]) for c in req["cases"]]
dev = measure.get_device(req["device"])
opts = measure.RunOptions.for_device(req["device"], xla_cost=False, budget_s=req["budget_s"])
df = measure.run_cases(cases, dev, opts, measure.jax_dtype(req["dtype"], req["device"]), max_time_s=req["max_s"])
print(measure.RESULT_MARK + df.to_json(orient="records"))
"""


def _default_run(device: str, dtype: str, cores: int) -> Callable[[list[Any], float], pd.DataFrame]:
    """Measure in a fresh process pinned to the calibration's core count (CPU), as calibration measured."""
    def run(cases: list[Any], max_s: float) -> pd.DataFrame:
        import pandas as pd

        from autodistill.measure.runner import run_child

        req = {"cases": [{"kind": c.kind, "name": c.name, "params": dict(c.params)} for c in cases],
               "device": device, "dtype": dtype, "cores": int(cores), "max_s": float(max_s),
               "budget_s": max(0.2, max_s / (2 * len(cases)))}
        rows = run_child(_CHILD, req, timeout_s=max_s + 300, what=f"re-measuring base rates on {device!r}",
                         error=CalibrationError)
        return pd.DataFrame.from_records(rows)

    return run


__all__ = ["DEFAULT_MAX_S", "RATE_FIELDS", "Rescale", "apply_ratios", "base_rate_rows",
           "rescale_profile"]
