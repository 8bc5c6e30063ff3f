"""Latency estimates of students on a hardware profile, from the C++ core.

This is the only module that imports ``autodistill._costmodel``. The model
itself is documented in ``csrc/costmodel/model.h`` and written out in plain
Python in `autodistill.costmodel_reference` (the test oracle).

Example::

    from autodistill import load_profile, reference_arch
    from autodistill.costmodel import CostModel
    cm = CostModel(load_profile("tpu_v4i"))
    est = cm.estimate(reference_arch("mobilebert"), batch=1, seq=128)
    est.latency_s, est.ops[0].name
    cm.estimate_batch(features)          # (n, F) float64 -> (n,) seconds
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autodistill import _costmodel
from autodistill.arch import FEATURE_NAMES, StudentArch
from autodistill.costmodel_reference import OpEstimate
from autodistill.errors import AutodistillError, CostModelError
from autodistill.hardware import OP_CLASSES, ROOFLINES, HardwareProfile

logger = logging.getLogger(__name__)

#: Bumped whenever the model's formulas change; stored with every search trial.
#: 1.1: per-profile roofline combine mode (``[compute] roofline = "max" | "sum"``; "max" is 1.0's formula).
COST_MODEL_VERSION = "1.1"

if tuple(_costmodel.FEATURE_NAMES) != FEATURE_NAMES:  # pragma: no cover - build/version skew
    raise ImportError(
        f"autodistill._costmodel feature layout {_costmodel.FEATURE_NAMES} does not match "
        f"autodistill.arch.FEATURE_NAMES {FEATURE_NAMES}; rebuild the extension (make build)"
    )
if tuple(_costmodel.OP_CLASSES) != OP_CLASSES:  # pragma: no cover
    raise ImportError(f"autodistill._costmodel op classes {_costmodel.OP_CLASSES} != {OP_CLASSES}; rebuild")
if tuple(getattr(_costmodel, "ROOFLINES", ())) != ROOFLINES:  # pragma: no cover
    raise ImportError(f"autodistill._costmodel rooflines {getattr(_costmodel, 'ROOFLINES', None)} != {ROOFLINES}; "
                      "rebuild the extension (make build)")


@dataclass(frozen=True)
class LatencyEstimate:
    """Latency of one inference of ``batch`` x ``seq`` tokens, with its per-op breakdown.

    ``roofline`` is how each op's compute, vector and memory times were combined (the profile's mode).
    """

    latency_s: float
    fixed_overhead_s: float
    ops: tuple[OpEstimate, ...]
    profile: str
    dtype: str
    batch: int
    seq: int
    roofline: str = "max"
    #: (low_s, high_s): where the measured latency should fall, from the profile's `ErrorBand`.
    interval_s: tuple[float, float] = (0.0, 0.0)
    interval_level: float = 0.0
    interval_source: str = ""

    @property
    def flops(self) -> float:
        return sum(o.flops for o in self.ops)

    @property
    def bytes_moved(self) -> float:
        return sum(o.bytes_moved for o in self.ops)

    def to_dict(self) -> dict:
        return {
            "latency_s": self.latency_s, "fixed_overhead_s": self.fixed_overhead_s, "profile": self.profile,
            "dtype": self.dtype, "batch": self.batch, "seq": self.seq, "roofline": self.roofline,
            "interval_s": list(self.interval_s), "interval_level": self.interval_level,
            "interval_source": self.interval_source, "flops": self.flops,
            "bytes_moved": self.bytes_moved, "ops": [o.__dict__.copy() for o in self.ops],
        }


def _check_workload(batch: int, seq: int) -> None:
    for name, v in (("batch", batch), ("seq", seq)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= 1 << 20:
            raise CostModelError(f"{name}={v!r} must be an integer in 1..1048576")


class CostModel:
    """The analytic latency model of one profile and dtype.

    Args:
        profile: the target device.
        dtype: one of ``profile.dtypes``; defaults to bf16 where the device has it.
    """

    def __init__(self, profile: HardwareProfile, dtype: str | None = None) -> None:
        self.profile = profile
        self.dtype = dtype or profile.default_dtype
        self.resolved = profile.resolve(self.dtype)  # raises ProfileError naming valid dtypes
        try:
            self._hw = _costmodel.Hardware(**self.resolved)
        except ValueError as e:
            raise CostModelError(f"profile {profile.name!r}: {e}") from None

    def __repr__(self) -> str:
        return f"CostModel(profile={self.profile.name!r}, dtype={self.dtype!r}, roofline={self.profile.roofline!r})"

    def estimate(self, arch: StudentArch, batch: int = 1, seq: int = 128, *, mlm_head: bool = False) -> LatencyEstimate:
        """Latency and per-op breakdown of one inference of ``arch`` on ``batch`` x ``seq`` tokens."""
        if not isinstance(arch, StudentArch):
            raise CostModelError(f"arch must be a StudentArch, got {type(arch).__name__}")
        _check_workload(batch, seq)
        try:
            d = _costmodel.estimate(arch.features(), self._hw, int(batch), int(seq), bool(mlm_head))
        except ValueError as e:
            raise CostModelError(str(e)) from None
        ops = tuple(OpEstimate(**o) for o in d["ops"])
        band = self.profile.error_band()
        return LatencyEstimate(d["latency_s"], d["fixed_overhead_s"], ops, self.profile.name, self.dtype,
                               int(batch), int(seq), self.profile.roofline, band.around(d["latency_s"]), band.level,
                               band.source)

    def interval_s(self, latency_s: float | np.ndarray) -> tuple[Any, Any]:
        """``(low, high)`` seconds where a measured latency should fall given estimate(s) ``latency_s``."""
        return self.profile.error_band().around(latency_s)

    def latency_s(self, arch: StudentArch, batch: int = 1, seq: int = 128, *, mlm_head: bool = False) -> float:
        return self.estimate(arch, batch, seq, mlm_head=mlm_head).latency_s

    def estimate_batch(self, features: np.ndarray | Sequence[StudentArch], batch: int = 1, seq: int = 128, *,
                       mlm_head: bool = False, threads: int = 0) -> np.ndarray:
        """Latencies of many students at once.

        Args:
            features: ``n x F`` float64 array in `autodistill.arch.FEATURE_NAMES` order
                (see `features_of`), or a sequence of `StudentArch`.
            threads: worker threads; 0 uses every core. The GIL is released while scoring.

        Returns:
            ``n`` latencies in seconds (float64).
        """
        if not isinstance(features, np.ndarray):
            features = features_of(features)
        if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES):
            raise CostModelError(
                f"features must have shape (n, {len(FEATURE_NAMES)}) in FEATURE_NAMES order; got {features.shape}"
            )
        if features.dtype.kind not in "fiub":
            raise CostModelError(f"features must be numeric, got dtype {features.dtype}")
        _check_workload(batch, seq)
        try:
            return _costmodel.estimate_batch(features, self._hw, int(batch), int(seq), bool(mlm_head), int(threads))
        except ValueError as e:
            raise CostModelError(str(e)) from None


@dataclass(frozen=True)
class ServingMix:
    """A distribution of request shapes: ``(batch, seq, weight)`` triples; weights are request shares.

    Latency over the mix is summarized as the weighted mean and weighted quantiles (p50, p99) of the
    per-request latency, so a student is judged on the traffic it will serve, not on one shape.
    """

    shapes: tuple[tuple[int, int, float], ...]

    def __post_init__(self) -> None:
        if not self.shapes:
            raise CostModelError("a serving mix needs at least one (batch, seq, weight) shape")
        for sh in self.shapes:
            if len(sh) != 3:
                raise CostModelError(f"serving-mix entry {sh!r} must be (batch, seq, weight)")
            b, s, w = sh
            _check_workload(b, s)
            if not (isinstance(w, (int, float)) and np.isfinite(w) and w > 0):
                raise CostModelError(f"serving-mix weight {w!r} for batch={b} seq={s} must be finite and > 0")

    @classmethod
    def single(cls, batch: int = 1, seq: int = 128) -> ServingMix:
        return cls(((batch, seq, 1.0),))

    @classmethod
    def from_list(cls, items: Sequence[Mapping[str, float]]) -> ServingMix:
        """From ``[{"batch": 1, "seq": 128, "weight": 0.7}, ...]`` (as written in a TOML config)."""
        out: list[Any] = []  # checked in __post_init__
        for it in items:
            unknown = set(it) - {"batch", "seq", "weight"}
            if unknown:
                raise CostModelError(f"unknown serving-mix key(s) {sorted(unknown)}; valid: batch, seq, weight")
            out.append((it.get("batch", 1), it.get("seq", 128), it.get("weight", 1.0)))
        return cls(tuple(out))


def _weighted_quantile(lat: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per row of ``lat`` (n x k), the smallest latency whose cumulative request share reaches ``q``."""
    order = np.argsort(lat, axis=1, kind="stable")
    ls = np.take_along_axis(lat, order, axis=1)
    cw = np.cumsum(w[order], axis=1) / w.sum()
    idx = np.argmax(cw >= q - 1e-12, axis=1)
    return ls[np.arange(lat.shape[0]), idx]


def mix_latency(cm: CostModel, features: np.ndarray | Sequence[StudentArch], mix: ServingMix, *,
                mlm_head: bool = False) -> dict[str, np.ndarray]:
    """Latency of ``n`` students over a serving mix.

    Returns:
        ``{"mean_s", "p50_s", "p99_s"}``, each an ``n`` float64 array (per request, weighted by share).
    """
    if not isinstance(features, np.ndarray):
        features = features_of(features)
    lat = np.stack([cm.estimate_batch(features, b, s, mlm_head=mlm_head) for b, s, _ in mix.shapes], axis=1)
    w = np.array([sh[2] for sh in mix.shapes], dtype=np.float64)
    return {"mean_s": lat @ (w / w.sum()), "p50_s": _weighted_quantile(lat, w, 0.5),
            "p99_s": _weighted_quantile(lat, w, 0.99)}


def features_of(archs: Sequence[StudentArch]) -> np.ndarray:
    """Stack the feature rows of ``archs`` into an ``n x F`` float64 array."""
    if len(archs) == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
    for a in archs:
        if not isinstance(a, StudentArch):
            raise CostModelError(f"expected StudentArch items, got {type(a).__name__}")
    return np.stack([a.features() for a in archs])


def estimate(profile: str | HardwareProfile, arch: StudentArch | str, batch: int = 1, seq: int = 128,
             dtype: str | None = None, mlm_head: bool = False) -> LatencyEstimate:
    """Convenience: estimate by profile name and arch (or reference name)."""
    from autodistill.arch import reference_arch
    from autodistill.hardware import load_profile

    prof = load_profile(profile) if isinstance(profile, str) else profile
    a = reference_arch(arch) if isinstance(arch, str) else arch
    return CostModel(prof, dtype).estimate(a, batch, seq, mlm_head=mlm_head)


#: How a latency objective summarizes latency over a serving mix (`mix_latency`'s keys).
MIX_STATISTICS = ("mean_s", "p50_s", "p99_s")


@dataclass(frozen=True)
class LatencyObjective:
    """The latency a search minimizes and a report shows: the cost model of ``profile`` at ``dtype``
    (None: the profile's default), over the request shapes of ``mix``, summarized by ``statistic``.

    One object serves the candidate pool, the search summary and the report, so they cannot disagree.
    """

    profile: str | HardwareProfile
    dtype: str | None
    mix: ServingMix
    statistic: str = "mean_s"

    def __post_init__(self) -> None:
        if self.statistic not in MIX_STATISTICS:
            from autodistill.errors import choices_message

            raise CostModelError(choices_message("mix statistic", self.statistic, MIX_STATISTICS))

    @property
    def cost_model(self) -> CostModel:
        cm = self.__dict__.get("_cm")
        if cm is None:
            from autodistill.hardware import load_profile

            prof = self.profile if isinstance(self.profile, HardwareProfile) else load_profile(self.profile)
            cm = CostModel(prof, self.dtype)
            object.__setattr__(self, "_cm", cm)  # a cache, not state: the fields fix it
        return cm

    @property
    def profile_name(self) -> str:
        return self.profile.name if isinstance(self.profile, HardwareProfile) else str(self.profile)

    def latency_s(self, archs: np.ndarray | Sequence[StudentArch]) -> np.ndarray:
        """``n`` latencies (seconds) of feature rows (``n x F``) or architectures."""
        return mix_latency(self.cost_model, archs, self.mix)[self.statistic]

    def describe(self) -> str:
        """``"mean_s over 1 request shape(s) on tpu_v4i"``."""
        return f"{self.statistic} over {len(self.mix.shapes)} request shape(s) on {self.cost_model.profile.name}"


__all__ = ["COST_MODEL_VERSION", "CostModel", "LatencyEstimate", "LatencyObjective", "MIX_STATISTICS", "OpEstimate",
           "ServingMix", "estimate", "features_of", "mix_latency", "AutodistillError"]
