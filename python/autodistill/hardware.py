"""Hardware profiles: what the cost model knows about a target accelerator.

A profile is a TOML file (``profiles/<name>.toml``) with units in every key:

```toml
name = "tpu_v4i"
kind = "tpu"                    # tpu | gpu | cpu
[compute]
peak_flops_per_s = { bf16 = 138e12, int8 = 138e12 }   # matrix unit, per dtype
vector_flops_per_s = 4.3e12     # elementwise unit (VPU / CUDA cores / SIMD)
matrix_tile_m = 8               # the matrix unit pads M, N, K up to these
matrix_tile_n = 128
matrix_tile_k = 128
clock_hz = 1.05e9
roofline = "max"                # optional: how an op's compute, vector and memory times combine (max | sum)
[memory]
hbm_bytes = 8.59e9
hbm_bytes_per_s = 614e9
onchip_bytes = 134217728        # CMEM / L2 / LLC: working sets that fit are served from it
onchip_bytes_per_s = 2.0e12
[overhead]
op_overhead_s = 2e-6            # per fused op (launch / pipeline fill)
fixed_overhead_s = 1e-5         # per inference (dispatch, host sync)
[calibration]                   # written by `autodistill calibrate`; absent = spec-only
matmul_compute_efficiency = 1.0 # per op class: matmul, attention, vector, gather
...
```

`load_profile` validates every field and range and names what is wrong.

``roofline`` (default ``"max"``) chooses how the cost model combines an op's
compute, vector and memory times: ``"max"`` assumes the units overlap
perfectly (the classic roofline), ``"sum"`` assumes they do not (XLA on a CPU
core overlaps little). Either way the op's per-class overhead is added.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from autodistill.errors import ProfileError, choices_message

logger = logging.getLogger(__name__)

KINDS = ("tpu", "gpu", "cpu")
DTYPES = ("fp32", "tf32", "bf16", "fp16", "int8")
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "int8": 1}
#: Op classes that carry their own calibrated terms (order shared with C++).
OP_CLASSES = ("matmul", "attention", "vector", "gather")
#: How an op's compute, vector and memory times combine (order shared with C++).
ROOFLINES = ("max", "sum")
CLASS_TERMS = ("compute_efficiency", "memory_efficiency", "overhead_s", "half_rate_k")
#: Largest `ClassTerms.half_rate_k` a profile may carry (elements of K).
MAX_HALF_RATE_K = 65536.0
#: The matmul classes: shape-aware (a K ramp, ``half_rate_k``), and each may carry a fitted shape residual
#: (see `Calibration.residuals`).
RESIDUAL_CLASSES = ("matmul", "attention")
#: Knots (log2 of a dimension) of the residual's piecewise-linear terms, one set each for M, N and K.
RESIDUAL_KNOTS_LOG2 = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0)
RESIDUAL_DIMS = ("m", "n", "k")
RESIDUAL_LEN = len(RESIDUAL_DIMS) * len(RESIDUAL_KNOTS_LOG2)
#: The residual never moves an op's time by more than this in log (a factor of e^0.5 = 1.65).
RESIDUAL_MAX_LOG = 0.5
#: Bound on each stored residual value (the sum over M, N and K is then clipped to `RESIDUAL_MAX_LOG`).
RESIDUAL_MAX_VALUE = 4.0

PROFILE_PATH_ENV = "AUTODISTILL_PROFILE_PATH"


@dataclass(frozen=True)
class ClassTerms:
    """Calibrated terms of one op class: time = max-or-sum(flops/(peak*ce), bytes/(bw*me)) + overhead_s.

    ``half_rate_k`` shapes the compute term of matmuls: a tile's main loop over ``K`` runs at
    ``K / (K + half_rate_k)`` of the class's rate (prologue, epilogue and pipeline fill cost as much
    as ``half_rate_k`` more steps of K), so small-K matmuls run far below peak. 0: no such cost.
    """

    compute_efficiency: float = 1.0
    memory_efficiency: float = 1.0
    overhead_s: float = 0.0
    half_rate_k: float = 0.0

    def __post_init__(self) -> None:
        for name in ("compute_efficiency", "memory_efficiency"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 < v <= 10.0):
                raise ProfileError(f"{name}={v!r} is out of range; valid: 0 < x <= 10")
        if not (isinstance(self.overhead_s, (int, float)) and math.isfinite(self.overhead_s)
                and 0.0 <= self.overhead_s < 1.0):
            raise ProfileError(f"overhead_s={self.overhead_s!r} is out of range; valid: 0 <= x < 1")
        k0 = self.half_rate_k
        if isinstance(k0, bool) or not (isinstance(k0, (int, float)) and math.isfinite(k0)
                                        and 0.0 <= k0 <= MAX_HALF_RATE_K):
            raise ProfileError(f"half_rate_k={k0!r} is out of range; valid: 0 <= x <= {MAX_HALF_RATE_K:g}")


#: Share of cases a profile's latency interval is meant to cover.
INTERVAL_LEVEL = 0.9
#: measured / estimated latency assumed for a spec-only profile: wide, and leaning slow, because
#: spec-only estimates run fast (the measured figures are in the README's "Prediction intervals").
SPEC_ONLY_BAND = (0.9, 3.0)


@dataclass(frozen=True)
class ErrorBand:
    """How far measured latency strays from the estimate: ``low <= measured / estimated <= high`` for
    ``level`` of the cases in ``source`` (``n`` of them; 0 for the spec-only default)."""

    low: float
    high: float
    level: float = INTERVAL_LEVEL
    n: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v <= 100):
                raise ProfileError(f"interval_{name}={v!r} must be a ratio in (0, 100]")
        if self.low > self.high:
            raise ProfileError(f"interval_low={self.low!r} must not exceed interval_high={self.high!r}")
        if not (isinstance(self.level, (int, float)) and 0 < self.level < 1):
            raise ProfileError(f"interval_level={self.level!r} must be in (0, 1)")

    def around(self, latency_s: Any) -> tuple[Any, Any]:
        """The interval ``(low_s, high_s)`` of the measured latency, given an estimate (a float or an array)."""
        return latency_s * self.low, latency_s * self.high


SPEC_ONLY_ERROR_BAND = ErrorBand(*SPEC_ONLY_BAND, source="spec-only default (no held-out errors)")


@dataclass(frozen=True)
class Calibration:
    """Per-op-class efficiency terms; `fitted` is False for spec-only profiles."""

    terms: Mapping[str, ClassTerms]
    fitted: bool = False
    fixed_overhead_s: float | None = None  # overrides the spec value when fitted
    source: str = "spec"  # free text: where the terms came from (device, date, sample count)
    #: Optional bounded shape residual of a matmul class: `RESIDUAL_LEN` values, the piecewise-linear
    #: terms of log2 M, N and K at `RESIDUAL_KNOTS_LOG2`; an op's time is multiplied by exp of their
    #: sum, clipped to +-`RESIDUAL_MAX_LOG` (see `costmodel_reference.log_residual`).
    residuals: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    #: The spread of the held-out errors (None: not stored; the spec-only band applies).
    interval: ErrorBand | None = None

    def __post_init__(self) -> None:
        missing = set(OP_CLASSES) - set(self.terms)
        extra = set(self.terms) - set(OP_CLASSES)
        if missing or extra:
            raise ProfileError(f"calibration classes {sorted(self.terms)}; expected exactly {list(OP_CLASSES)}")
        for c, vals in self.residuals.items():
            if c not in RESIDUAL_CLASSES:
                raise ProfileError(choices_message("residual class", c, RESIDUAL_CLASSES))
            if (not isinstance(vals, (tuple, list)) or len(vals) != RESIDUAL_LEN
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               and abs(v) <= RESIDUAL_MAX_VALUE for v in vals)):
                raise ProfileError(f"{c}_residual must be {RESIDUAL_LEN} finite numbers in "
                                   f"[-{RESIDUAL_MAX_VALUE:g}, {RESIDUAL_MAX_VALUE:g}]")


@dataclass(frozen=True)
class HardwareProfile:
    """A target device, with units in every name. See the module docstring for the TOML layout."""

    name: str
    kind: str
    peak_flops_per_s: Mapping[str, float]
    vector_flops_per_s: float
    matrix_tile_m: int
    matrix_tile_n: int
    matrix_tile_k: int
    hbm_bytes: float
    hbm_bytes_per_s: float
    onchip_bytes: float
    onchip_bytes_per_s: float
    op_overhead_s: float
    fixed_overhead_s: float
    clock_hz: float = 0.0
    roofline: str = "max"  # one of ROOFLINES
    parallel_units: int = 0  # SMs / TensorCores x MXUs that output tiles spread over in waves; 0: no waves
    description: str = ""
    calibration: Calibration | None = None
    path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProfileError(f"profile {self.name!r}: " + choices_message("kind", self.kind, KINDS))
        if not self.peak_flops_per_s:
            raise ProfileError(f"profile {self.name!r}: peak_flops_per_s needs at least one dtype of {list(DTYPES)}")
        for dt, v in self.peak_flops_per_s.items():
            if dt not in DTYPES:
                raise ProfileError(f"profile {self.name!r}: "
                                   + choices_message("dtype in peak_flops_per_s", dt, DTYPES))
            _check_range(self.name, f"peak_flops_per_s.{dt}", v, 1e6, 1e18)
        _check_range(self.name, "vector_flops_per_s", self.vector_flops_per_s, 1e6, 1e18)
        for t in ("matrix_tile_m", "matrix_tile_n", "matrix_tile_k"):
            v = getattr(self, t)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
                raise ProfileError(f"profile {self.name!r}: {t}={v!r} must be an integer in 1..4096")
        _check_range(self.name, "hbm_bytes", self.hbm_bytes, 1e6, 1e15)
        _check_range(self.name, "hbm_bytes_per_s", self.hbm_bytes_per_s, 1e6, 1e15)
        _check_range(self.name, "onchip_bytes", self.onchip_bytes, 0, 1e12)
        _check_range(self.name, "onchip_bytes_per_s", self.onchip_bytes_per_s, 1e6, 1e16)
        _check_range(self.name, "op_overhead_s", self.op_overhead_s, 0, 1.0)
        _check_range(self.name, "fixed_overhead_s", self.fixed_overhead_s, 0, 10.0)
        _check_range(self.name, "clock_hz", self.clock_hz, 0, 1e11)
        pu = self.parallel_units
        if isinstance(pu, bool) or not isinstance(pu, int) or not 0 <= pu <= 1_000_000:
            raise ProfileError(f"profile {self.name!r}: parallel_units={pu!r} must be an integer in 0..1000000 "
                               "(0: no wave quantisation)")
        if not isinstance(self.roofline, str) or self.roofline not in ROOFLINES:
            raise ProfileError(f"profile {self.name!r}: " + choices_message("roofline", self.roofline, ROOFLINES))

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(self.peak_flops_per_s)

    @property
    def default_dtype(self) -> str:
        """bf16 where the device has it, else the first listed dtype."""
        return "bf16" if "bf16" in self.peak_flops_per_s else next(iter(self.peak_flops_per_s))

    def class_terms(self, op_class: str) -> ClassTerms:
        """Calibrated terms of ``op_class``; spec-only profiles get efficiency 1 and `op_overhead_s`."""
        if op_class not in OP_CLASSES:
            raise ProfileError(choices_message("op class", op_class, OP_CLASSES))
        if self.calibration is None:
            return ClassTerms(1.0, 1.0, self.op_overhead_s, 0.0)
        return self.calibration.terms[op_class]

    def error_band(self) -> ErrorBand:
        """The interval the profile's estimates carry: its held-out errors, or the wide spec-only band."""
        if self.calibration is not None and self.calibration.interval is not None:
            return self.calibration.interval
        return SPEC_ONLY_ERROR_BAND

    def effective_fixed_overhead_s(self) -> float:
        if self.calibration is not None and self.calibration.fixed_overhead_s is not None:
            return self.calibration.fixed_overhead_s
        return self.fixed_overhead_s

    def resolve(self, dtype: str | None = None) -> dict[str, Any]:
        """Flat fields the cost model uses for one dtype (shared by C++ and the Python reference).

        Every value is a float except ``"roofline"``, one of `ROOFLINES`.
        """
        dtype = dtype or self.default_dtype
        if dtype not in self.peak_flops_per_s:
            raise ProfileError(
                f"profile {self.name!r} has no peak for dtype {dtype!r}; valid choices: {', '.join(self.dtypes)}"
            )
        out: dict[str, Any] = {
            "peak_flops_per_s": float(self.peak_flops_per_s[dtype]),
            "vector_flops_per_s": float(self.vector_flops_per_s),
            "hbm_bytes_per_s": float(self.hbm_bytes_per_s),
            "onchip_bytes": float(self.onchip_bytes),
            "onchip_bytes_per_s": float(self.onchip_bytes_per_s),
            "tile_m": float(self.matrix_tile_m),
            "tile_n": float(self.matrix_tile_n),
            "tile_k": float(self.matrix_tile_k),
            "dtype_bytes": float(DTYPE_BYTES[dtype]),
            "fixed_overhead_s": float(self.effective_fixed_overhead_s()),
            "parallel_units": float(self.parallel_units),
            "roofline": self.roofline,
        }
        for c in OP_CLASSES:
            t = self.class_terms(c)
            out[f"{c}_compute_efficiency"] = float(t.compute_efficiency)
            out[f"{c}_memory_efficiency"] = float(t.memory_efficiency)
            out[f"{c}_overhead_s"] = float(t.overhead_s)
            out[f"{c}_half_rate_k"] = float(t.half_rate_k)
        res = self.calibration.residuals if self.calibration is not None else {}
        for c in RESIDUAL_CLASSES:
            out[f"{c}_residual"] = tuple(float(v) for v in res.get(c, ()))
        return out

    def with_calibration(self, calibration: Calibration | None, name: str | None = None) -> HardwareProfile:
        return dataclasses.replace(self, calibration=calibration, name=name or self.name, path=None)

    def with_interval(self, interval: ErrorBand, name: str | None = None) -> HardwareProfile:
        """This profile with the interval its calibrated estimates carry; a spec-only profile has none to set."""
        if self.calibration is None:
            raise ProfileError(f"profile {self.name!r} is not calibrated: an interval belongs to a calibration")
        return self.with_calibration(dataclasses.replace(self.calibration, interval=interval), name=name)

    # ------------------------------------------------------------------ TOML
    def to_toml(self) -> str:
        """Serialize to the TOML layout `load_profile` reads (comments are not kept)."""
        lines = [f'name = "{self.name}"', f'kind = "{self.kind}"', f"description = {_toml_str(self.description)}", "",
                 "[compute]"]
        peaks = ", ".join(f"{k} = {_num(v)}" for k, v in self.peak_flops_per_s.items())
        lines += [f"peak_flops_per_s = {{ {peaks} }}", f"vector_flops_per_s = {_num(self.vector_flops_per_s)}",
                  f"matrix_tile_m = {self.matrix_tile_m}", f"matrix_tile_n = {self.matrix_tile_n}",
                  f"matrix_tile_k = {self.matrix_tile_k}", f"clock_hz = {_num(self.clock_hz)}",
                  f'roofline = "{self.roofline}"', f"parallel_units = {self.parallel_units}", "", "[memory]",
                  f"hbm_bytes = {_num(self.hbm_bytes)}", f"hbm_bytes_per_s = {_num(self.hbm_bytes_per_s)}",
                  f"onchip_bytes = {_num(self.onchip_bytes)}", f"onchip_bytes_per_s = {_num(self.onchip_bytes_per_s)}",
                  "", "[overhead]", f"op_overhead_s = {_num(self.op_overhead_s)}",
                  f"fixed_overhead_s = {_num(self.fixed_overhead_s)}"]
        if self.calibration is not None:
            cal = self.calibration
            lines += ["", "[calibration]", f"fitted = {'true' if cal.fitted else 'false'}",
                      f"source = {_toml_str(cal.source)}"]
            if cal.fixed_overhead_s is not None:
                lines.append(f"fixed_overhead_s = {_num(cal.fixed_overhead_s)}")
            for c in OP_CLASSES:
                for t in CLASS_TERMS:
                    lines.append(f"{c}_{t} = {_num(getattr(cal.terms[c], t))}")
            for c in RESIDUAL_CLASSES:
                if c in cal.residuals:
                    lines.append(f"{c}_residual = [{', '.join(repr(float(v)) for v in cal.residuals[c])}]")
            if cal.interval is not None:
                b = cal.interval
                lines += [f"interval_low = {_num(b.low)}", f"interval_high = {_num(b.high)}",
                          f"interval_level = {_num(b.level)}", f"interval_n = {int(b.n)}",
                          f"interval_source = {_toml_str(b.source)}"]
        return "\n".join(lines) + "\n"


def _num(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() or abs(v) >= 1e15 else str(int(v))


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _check_range(profile: str, name: str, v: Any, lo: float, hi: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProfileError(f"profile {profile!r}: {name}={v!r} is out of range; valid: {lo:g} <= x <= {hi:g}")


# ---------------------------------------------------------------------- loading
_SECTIONS: dict[str, tuple[str, ...]] = {
    "": ("name", "kind", "description"),
    "compute": ("peak_flops_per_s", "vector_flops_per_s", "matrix_tile_m", "matrix_tile_n", "matrix_tile_k",
                "clock_hz", "roofline", "parallel_units"),
    "memory": ("hbm_bytes", "hbm_bytes_per_s", "onchip_bytes", "onchip_bytes_per_s"),
    "overhead": ("op_overhead_s", "fixed_overhead_s"),
}
_OPTIONAL = {"description", "clock_hz", "roofline", "parallel_units"}


def profile_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> HardwareProfile:
    """Build a profile from parsed TOML, naming any missing, unknown or bad key."""
    allowed_top = set(_SECTIONS[""]) | {s for s in _SECTIONS if s} | {"calibration"}
    unknown = set(data) - allowed_top
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {sorted(unknown)}; valid: {sorted(allowed_top)}")
    kw: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = data if not section else data.get(section)
        if table is None:
            raise ProfileError(f"{source}: missing section [{section}] with keys {list(keys)}")
        if section and not isinstance(table, Mapping):
            raise ProfileError(f"{source}: [{section}] must be a table")
        if section:
            extra = set(table) - set(keys)
            if extra:
                raise ProfileError(f"{source}: unknown key(s) {sorted(extra)} in [{section}]; valid: {list(keys)}")
        for k in keys:
            if k not in table:
                if k in _OPTIONAL:
                    continue
                raise ProfileError(f"{source}: missing key {k!r} in [{section or 'top level'}]")
            kw[k] = table[k]
    if not isinstance(kw.get("peak_flops_per_s"), Mapping):
        raise ProfileError(f"{source}: peak_flops_per_s must be a table of dtype = FLOP/s, e.g. {{ bf16 = 1e14 }}")
    kw["peak_flops_per_s"] = dict(kw["peak_flops_per_s"])
    for k in ("vector_flops_per_s", "hbm_bytes", "hbm_bytes_per_s", "onchip_bytes", "onchip_bytes_per_s",
              "op_overhead_s", "fixed_overhead_s", "clock_hz"):
        if k in kw and isinstance(kw[k], int) and not isinstance(kw[k], bool):
            kw[k] = float(kw[k])
    kw["peak_flops_per_s"] = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                              for k, v in kw["peak_flops_per_s"].items()}
    cal = data.get("calibration")
    if cal is not None:
        kw["calibration"] = _calibration_from_dict(cal, source)
    kw["path"] = source
    try:
        return HardwareProfile(**kw)
    except ProfileError as e:
        raise ProfileError(f"{source}: {e}") from None


_INTERVAL_KEYS = ("interval_low", "interval_high", "interval_level", "interval_n", "interval_source")


def _calibration_from_dict(cal: Mapping[str, Any], source: str) -> Calibration:
    valid = ({"fitted", "source", "fixed_overhead_s"} | {f"{c}_{t}" for c in OP_CLASSES for t in CLASS_TERMS}
             | {f"{c}_residual" for c in RESIDUAL_CLASSES} | set(_INTERVAL_KEYS))
    extra = set(cal) - valid
    if extra:
        raise ProfileError(f"{source}: unknown key(s) {sorted(extra)} in [calibration]; valid: {sorted(valid)}")
    terms = {}
    for c in OP_CLASSES:
        defaults = ClassTerms()
        vals = {t: cal.get(f"{c}_{t}", getattr(defaults, t)) for t in CLASS_TERMS}
        vals = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in vals.items()}
        try:
            terms[c] = ClassTerms(**vals)
        except ProfileError as e:
            raise ProfileError(f"{source}: [calibration] {c}_{e}") from None
    fo = cal.get("fixed_overhead_s")
    if fo is not None:
        _check_range(source, "calibration.fixed_overhead_s", fo, 0, 10.0)
        fo = float(fo)
    residuals = {c: cal[f"{c}_residual"] for c in RESIDUAL_CLASSES if f"{c}_residual" in cal}
    try:
        band = None
        if "interval_low" in cal or "interval_high" in cal:
            if not ("interval_low" in cal and "interval_high" in cal):
                raise ProfileError("interval_low and interval_high go together")
            band = ErrorBand(cal["interval_low"], cal["interval_high"], cal.get("interval_level", INTERVAL_LEVEL),
                             int(cal.get("interval_n", 0)), str(cal.get("interval_source", "")))
        fitted = cal.get("fitted", False)
        if not isinstance(fitted, bool):  # bool("no") is True: a spec-only profile would list as calibrated
            raise ProfileError(f"fitted = {fitted!r} must be true or false (a TOML boolean, unquoted)")
        return Calibration(terms=terms, fitted=fitted, fixed_overhead_s=fo,
                           source=str(cal.get("source", "")),
                           residuals={c: tuple(v) if isinstance(v, list) else v for c, v in residuals.items()},
                           interval=band)
    except ProfileError as e:
        raise ProfileError(f"{source}: [calibration] {e}") from None


def profile_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``, first match wins.

    ``$AUTODISTILL_PROFILE_PATH`` (os.pathsep-separated), then the source
    checkout's ``profiles/`` (so calibration writes where it is committed),
    then the copy shipped in the wheel.
    """
    dirs = [Path(p) for p in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p]
    checkout = Path(__file__).resolve().parents[2] / "profiles"
    if checkout.is_dir():
        dirs.append(checkout)
    try:
        shipped = Path(str(resources.files("autodistill") / "profiles"))
        if shipped.is_dir():
            dirs.append(shipped)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual loaders
        pass
    return dirs


def list_profiles() -> tuple[str, ...]:
    """Names of every profile on the search path, sorted."""
    names = {p.stem for d in profile_dirs() for p in d.glob("*.toml")}
    return tuple(sorted(names))


def load_profile(name_or_path: str | os.PathLike[str]) -> HardwareProfile:
    """Load a profile by name (``"tpu_v4i"``) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise ProfileError(f"profile file {str(p)!r} does not exist")
        return _load_file(p)
    for d in profile_dirs():
        cand = d / f"{name_or_path}.toml"
        if cand.is_file():
            return _load_file(cand)
    raise ProfileError(choices_message("profile", str(name_or_path), list_profiles()))


def _load_file(path: Path) -> HardwareProfile:
    from autodistill.fileio import read_toml

    return profile_from_dict(read_toml(path, what="profile file", error=ProfileError), source=str(path))


def save_profile(profile: HardwareProfile, path: str | os.PathLike[str]) -> Path:
    """Write ``profile`` as TOML atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = profile.to_toml()
    profile_from_dict(tomllib.loads(text), source=str(path))  # round-trip check before replacing anything
    from autodistill.fileio import atomic_write_text

    atomic_write_text(path, text)
    logger.info("wrote profile %s to %s", profile.name, path)
    return path
