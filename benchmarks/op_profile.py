"""Per-op times of one student inside its compiled XLA program, beside the cost model's per-op estimate.

Whole-student timings only show the sum; single-op micro-benchmarks pay the per-call dispatch (about
40 us on the CI VM), larger than most ops of a small student. This script traces one compiled student
with `jax.profiler`, reads every XLA thunk's duration from the trace (`jax.profiler.ProfileData`), maps
the thunks to the cost model's ops by their HLO ``op_name`` metadata (a dot and its epilogue fusions
count toward the same op) and prints measured against estimated time per op.

    python benchmarks/op_profile.py --arch benchmarks/goal_students/trial0001.json --shape 4x64
    python benchmarks/op_profile.py --arch mobilebert-tiny --shape 1x64 --profile cpu_local

Thunk durations include the tracer's own cost (a microsecond or two per thunk), so their sum exceeds
the untraced wall time printed beside it; compare ratios between ops, not the absolute sum. Each
thunk counts with its median over the traced calls. In some processes one embedding thunk takes
~0.4 ms per traced call while the untraced wall time is unchanged (a tracing artifact); the JSON line's
``top_thunks_us`` lists the largest thunks for such checks. CPU only
(on an accelerator the thunks are launches, not kernels). Pins itself to one core like `calibrate`.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

#: HLO op_name path (below ``layer_i/``) -> cost-model op name, first match wins.
_LAYER_OPS = (("bottleneck/input", "bottleneck_input"), ("bottleneck/attention", "bottleneck_attention"),
              ("attention/self/query", "query"), ("attention/self/key", "key"), ("attention/self/value", "value"),
              ("attention/output", "attention_output"), ("output/bottleneck", "output_bottleneck"))


def model_op(op_name: str, thunk: str) -> str:
    """The cost-model op an XLA thunk belongs to, from its HLO op_name (``other`` when none)."""
    p = op_name.replace("jit(forward)/StudentModel/", "")
    if "embedding_transformation" in p:
        return "embedding_transformation"
    if p.startswith("embeddings"):
        return "embedding_gather"
    m = re.search(r"layer_\d+/(.*)", p)
    if not m:
        return "other"
    r = m.group(1)
    for prefix, name in _LAYER_OPS:
        if r.startswith(prefix):
            return name
    if re.match(r"ffn_\d+/intermediate", r):
        return "ffn_stacked_intermediate"
    if re.match(r"ffn_\d+/output", r):
        return "ffn_stacked_output"
    if r.startswith("intermediate"):
        return "intermediate"
    if r.startswith("output"):
        return "output"
    if r.startswith("attention/self"):  # the two batched dots are attention; the rest is the softmax
        return "attention" if thunk.startswith(("ynn_fusion", "dot")) else "softmax"
    return "other"


def _shape(text: str) -> tuple[int, int]:
    """``"4x64"`` -> (4, 64); anything else is a usage error."""
    try:
        b, s = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not BATCHxSEQ, e.g. 1x64") from None
    if b < 1 or s < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch and sequence length must be >= 1")
    return b, s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, help="reference name or StudentArch JSON file")
    ap.add_argument("--shape", default="1x64", type=_shape, help="batch x sequence length (default 1x64)")
    ap.add_argument("--profile", default="cpu_local", help="profile for the estimate (default cpu_local)")
    ap.add_argument("--calls", type=int, default=50, help="traced calls averaged (default 50)")
    ap.add_argument("--core", type=int, default=None, help="core to pin to (default: the last one)")
    a = ap.parse_args(argv)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {a.core if a.core is not None else max(before)})
    try:
        return _profile(a)
    finally:
        os.sched_setaffinity(0, before)


def _profile(a: argparse.Namespace) -> int:

    import jax
    import jax.numpy as jnp
    from jax.profiler import ProfileData

    from autodistill.arch import resolve
    from autodistill.costmodel import CostModel
    from autodistill.hardware import load_profile
    from autodistill.measure import _build_student, compile_fn

    arch = resolve(a.arch)
    b, s = a.shape
    fn, args = _build_student(arch, b, s, jnp.float32, 0)
    compiled, dargs, _ = compile_fn(fn, *args)
    for _ in range(20):
        jax.block_until_ready(compiled(*dargs))
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.5:
        jax.block_until_ready(compiled(*dargs))
        n += 1
    wall_us = (time.perf_counter() - t0) / n * 1e6

    hlo_name = {}
    for line in compiled.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+) = ", line)
        opn = re.search(r'op_name="([^"]+)"', line)
        if m and opn:
            hlo_name.setdefault(m.group(1), opn.group(1))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(a.calls):
                jax.block_until_ready(compiled(*dargs))
        trace = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
    durations: dict[str, list[float]] = collections.defaultdict(list)
    for plane in trace.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAPjRtCpuClient"):
                continue
            for ev in line.events:
                if not ev.name.startswith(("end:", "ThunkExecutor", "ThreadpoolListener")):
                    durations[ev.name].append(ev.duration_ns / 1e3)
    # Per thunk the median over calls (times its runs per call): one preempted or page-faulting
    # call would otherwise dominate a mean.
    per_op: dict[str, float] = collections.defaultdict(float)
    thunks: collections.Counter[str] = collections.Counter()
    for name, us in durations.items():
        op = model_op(hlo_name.get(name, ""), name)
        per_op[op] += statistics.median(us) * len(us) / a.calls
        thunks[op] += len(us)
    est = CostModel(load_profile(a.profile), "fp32").estimate(arch, b, s)
    print(f"{arch.short_name()} b{b} s{s}: untraced wall {wall_us:.0f} us/call; traced thunks "
          f"{sum(per_op.values()):.0f} us/call; estimate ({a.profile}) {est.latency_s * 1e6:.0f} us")
    print(f"{'op':26s} {'count':>5s} {'thunks':>6s} {'measured_us':>11s} {'estimate_us':>11s} {'est/meas':>8s}")
    attention = sum(o.latency_s for o in est.ops if o.name.startswith("attention_") and o.op_class == "attention")
    shown = set()
    for o in est.ops:
        name = "attention" if o.op_class == "attention" else o.name
        if name in shown:
            continue
        shown.add(name)
        e_us = (attention if name == "attention" else o.latency_s) * 1e6
        m_us = per_op.get(name, 0.0)
        ratio = f"{e_us / m_us:8.2f}" if m_us > 0 else f"{'-':>8s}"
        print(f"{name:26s} {o.count:5.0f} {thunks.get(name, 0) // a.calls:6d} {m_us:11.1f} {e_us:11.1f} {ratio}")
    for name in sorted(set(per_op) - shown):
        print(f"{name:26s} {'':5s} {thunks[name] // a.calls:6d} {per_op[name]:11.1f} {'(none)':>11s}")
    top = sorted(((statistics.median(us) * len(us) / a.calls, name) for name, us in durations.items()), reverse=True)
    print(json.dumps({"wall_us": wall_us, "estimate_us": est.latency_s * 1e6,
                      "measured_us": {k: round(v, 2) for k, v in per_op.items()},
                      "top_thunks_us": [[name, model_op(hlo_name.get(name, ""), name), round(t, 2)]
                                        for t, name in top[:10]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
