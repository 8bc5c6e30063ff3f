"""Cost-model throughput: C++ batch estimates per second vs the pure-Python reference, in one run.

    .venv/bin/python benchmarks/bench_costmodel.py [--n 2000000] [--ref-n 2000] [--repeats 5]

Goals (issue 2): >= 5 million 24-layer students a second on the 2-core machine, and >= 300x the
Python reference scoring the same architectures. Prints medians; the machine is noisy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from autodistill import costmodel_reference as ref
from autodistill.arch import FEATURE_NAMES, StudentArch
from autodistill.costmodel import CostModel
from autodistill.hardware import load_profile


def mobilebert_space(n: int, seed: int = 0) -> np.ndarray:
    """``n x F`` random 24-layer MobileBERT-family students (the AutoDistill search space)."""
    rng = np.random.default_rng(seed)
    base = StudentArch().features()
    rows = np.repeat(base[None, :], n, axis=0)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    rows[:, col["num_hidden_layers"]] = 24
    rows[:, col["hidden_size"]] = rng.choice([256, 384, 512, 640, 768], n)
    rows[:, col["intra_bottleneck_size"]] = rng.choice([64, 128, 192, 256], n)
    rows[:, col["num_attention_heads"]] = rng.choice([1, 2, 4, 8], n)
    rows[:, col["intermediate_size"]] = rng.choice([256, 512, 768, 1024, 1536], n)
    rows[:, col["num_feedforward_networks"]] = rng.integers(1, 5, n)
    return rows


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--ref-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", default="tpu_v4i")
    args = ap.parse_args()

    profile = load_profile(args.profile)
    cm = CostModel(profile)
    feats = mobilebert_space(args.n)
    cm.estimate_batch(feats[:1000])  # warm-up
    t_all = median_time(lambda: cm.estimate_batch(feats, 1, 128), args.repeats)
    t_one = median_time(lambda: cm.estimate_batch(feats, 1, 128, threads=1), args.repeats)

    sub = feats[: args.ref_n]
    archs = [StudentArch.from_features(r) for r in sub]
    t_ref = median_time(lambda: [ref.latency_s(a, profile, 1, 128) for a in archs], max(1, args.repeats // 2))
    check = cm.estimate_batch(sub, 1, 128)
    want = np.array([ref.latency_s(a, profile, 1, 128) for a in archs])
    max_rel = float(np.max(np.abs(check - want) / want))

    cpp_rate = args.n / t_all
    cpp_rate_1 = args.n / t_one
    ref_rate = args.ref_n / t_ref
    print(f"profile={args.profile} batch=1 seq=128, 24-layer MobileBERT-family students, cores={os.cpu_count()}")
    print(f"C++ batch, all threads : {cpp_rate / 1e6:8.2f} M archs/s  (median of {args.repeats}, n={args.n:,})")
    print(f"C++ batch, 1 thread    : {cpp_rate_1 / 1e6:8.2f} M archs/s")
    print(f"Python reference       : {ref_rate / 1e3:8.2f} k archs/s  (n={args.ref_n:,})")
    print(f"ratio C++/reference    : {cpp_rate / ref_rate:8.0f}x  (1 thread: {cpp_rate_1 / ref_rate:.0f}x)")
    print(f"max relative difference C++ vs reference on the reference subset: {max_rel:.2e}")
    print(f"goals: >= 5 M archs/s -> {'met' if cpp_rate >= 5e6 else 'NOT met'}; "
          f">= 300x -> {'met' if cpp_rate / ref_rate >= 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
