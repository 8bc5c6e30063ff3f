"""The cost model's op forms against published GPU per-op measurements nobody here produced.

Data: ``../shared/data/gpu_ops`` (NeuSight, ASPLOS 2025; FP32 PyTorch kernels on 7 NVIDIA GPUs; see
its README). Per device and op kind with at least ``--min-rows`` rows, a seeded half of the rows is
fitted and the other half predicted, by three methods side by side in one run:

* ``spec_roofline``: max(FLOPs / peak, bytes / bandwidth) from the spec-only profile, nothing fitted;
* ``three_term``: the same roofline with a fitted compute efficiency, bandwidth efficiency and fixed
  overhead (no tiles, no waves);
* ``autodistill``: the cost model's own op form (`autodistill.op_table`, the shapes a student's ops
  get: tile padding, waves over the SMs, split-K, the K ramp, on-chip residency), its class terms
  fitted by `autodistill.op_table.fit_op_table`; the CTA tile is chosen among `TILES` by training
  error (a calibrated choice; the spec profile's tile is the first).

``noise`` is a bound on the measurement noise of the device's rows of that kind: the median of
|log t_i - (log t_(i-1) + log t_(i+1)) / 2| over rows that differ from both neighbours in one
dimension only (as a fraction); a smooth model cannot do much better than it.

Then BERT-Large inference (seq 512, batch 8 and 16), estimated by the cost model with each
device's op-calibrated profile (all kinds fitted on their training halves), against the whole-model
measurements in ``e2e_labels.csv``.

    python benchmarks/bench_gpu_ops.py [--data DIR] [--min-rows 500] [--json]

With ``--json`` the last line is a JSON list of rows with keys device, op, method, n_test, mape,
within_10pct (fractions), and noise.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from autodistill import reference_arch
from autodistill.calibration import PARAM_NAMES, accuracy, base_rates, fit_terms, predict, theta_of
from autodistill.costmodel import CostModel
from autodistill.errors import AutodistillError
from autodistill.hardware import load_profile
from autodistill.op_table import KIND_CLASS, OpSample, class_free_terms, fit_op_table, op_matrix, split_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpu_ops"
#: NeuSight device name -> the spec-only profile shipped for it.
DEVICES = {"NVIDIA A100-PCIE-40GB": "a100_pcie_40gb", "NVIDIA A100 80GB PCIe": "a100_pcie_80gb",
           "NVIDIA L4": "l4", "Tesla V100-PCIE-32GB": "v100_pcie_32gb", "Tesla T4": "t4",
           "Tesla P100-PCIE-16GB": "p100_pcie_16gb", "Tesla P4": "p4"}
#: e2e_labels.csv spells devices with underscores.
E2E_NAMES = {k.replace(" ", "_"): k for k in DEVICES}
FILES = {"linear": "matmul", "bmm": "bmm", "ln": "layernorm", "softmax": "softmax", "elem": "elementwise"}
#: CTA tiles (m, n, k) the autodistill fit chooses among by training error; the spec profile's first.
TILES = ((128, 128, 8), (128, 64, 8), (64, 64, 8), (128, 32, 8), (32, 128, 8))
#: FLOPs per element of the elementwise ops (the cost model's activation costs where it has them).
ELEM_FLOPS = {"add": 1, "mul": 1, "div": 1, "pow": 4, "addu": 1, "mulu": 1, "divu": 1, "powu": 4, "relu": 1,
              "tanh": 6, "gelu": 10}
UNARY = {"addu", "mulu", "divu", "powu", "relu", "tanh", "gelu"}
SEED = 0


def load_rows(data: Path) -> dict[tuple[str, str], list[OpSample]]:
    """(device, op kind) -> the published rows as per-op samples (FP32, latency in seconds)."""
    import pandas as pd

    out: dict[tuple[str, str], list[OpSample]] = {}
    for fname, kind in FILES.items():
        df = pd.read_csv(data / f"{fname}.csv")
        for rec in df.to_dict("records"):
            dev = rec["Device"]
            if dev not in DEVICES:
                continue
            t = float(rec["Latency"]) * 1e-3
            if kind in ("matmul", "bmm"):
                s = OpSample(kind, "fp32", t, batch=int(rec["B"]), m=int(rec["M"]), n=int(rec["N"]), k=int(rec["K"]))
            elif kind == "elementwise":
                op = str(rec["OPName"])
                s = OpSample(kind, "fp32", t, rows=int(rec["B"]), width=int(rec["H"]),
                             inputs=1 if op in UNARY else 2, flops_per_element=float(ELEM_FLOPS[op]))
            else:
                s = OpSample(kind, "fp32", t, rows=int(rec["B"]), width=int(rec["H"]))
            out.setdefault((dev, kind), []).append(s)
    return out


def noise_bound(samples: list[OpSample]) -> float:
    """Median |log t_i - mean(log t_(i-1), log t_(i+1))| along single-dimension neighbours (a fraction)."""
    dims = ("batch", "m", "n", "k", "rows", "width", "inputs", "flops_per_element")
    keyed = [(tuple(getattr(s, d) for d in dims), math.log(s.latency_s)) for s in samples]
    devs = []
    for j in range(len(dims)):
        groups: dict[tuple, list[tuple[float, float]]] = {}
        for key, lt in keyed:
            groups.setdefault(key[:j] + key[j + 1:], []).append((float(key[j]), lt))
        for pts in groups.values():
            if len(pts) < 3:
                continue
            pts.sort()
            for a, b, c in zip(pts, pts[1:], pts[2:]):
                if c[0] > 0 and a[0] > 0 and c[0] / a[0] <= 4:  # close neighbours only
                    devs.append(abs(b[1] - 0.5 * (a[1] + c[1])))
    return float(math.expm1(np.median(devs))) if devs else float("nan")


def plain_profile(profile, tile=(1, 1, 1)):
    """The profile without tiles or waves: the plain roofline."""
    return dataclasses.replace(profile, parallel_units=0, matrix_tile_m=tile[0], matrix_tile_n=tile[1],
                               matrix_tile_k=tile[2], calibration=None, roofline="max")


def spec_and_three_term(samples, spec):
    """Held-out accuracy of the spec-sheet roofline and of the fitted three-term roofline."""
    prof = plain_profile(spec)
    prof = dataclasses.replace(prof, op_overhead_s=0.0)
    mat = op_matrix(samples, prof)
    meas = np.array([s.latency_s for s in samples])
    tr, te = split_rows(len(samples), 0.5, SEED)
    rates = base_rates(prof, "fp32")
    th = theta_of(prof)
    th[PARAM_NAMES.index("fixed_overhead_s")] = 0.0
    spec_acc = accuracy(predict(th, mat.subset(te), rates, "max"), meas[te])
    cls = KIND_CLASS[samples[0].op]
    free = tuple(n for n in class_free_terms([cls], prof) if not n.endswith("half_rate_k"))
    r = fit_terms(mat.subset(tr), meas[tr], rates, theta0=th, free=free, roofline="max", starts=4, seed=SEED)
    return spec_acc, accuracy(predict(r.theta, mat.subset(te), rates, "max"), meas[te])


def autodistill_fit(samples, spec, tiles=TILES):
    """The cost model's op form, tile chosen by training MAPE: (fit, tile)."""
    best = None
    for tile in tiles if samples[0].op in ("matmul", "bmm") else tiles[:1]:
        prof = dataclasses.replace(spec, matrix_tile_m=tile[0], matrix_tile_n=tile[1], matrix_tile_k=tile[2])
        fit = fit_op_table(samples, prof, test_fraction=0.5, seed=SEED, source="bench_gpu_ops")
        if best is None or fit.train["mape"] < best[0].train["mape"]:
            best = (fit, tile)
    return best


def device_profile(rows_by_kind, spec):
    """One op-calibrated profile of a device: every kind's training half, one tile for both matmul classes."""
    samples = [s for ss in rows_by_kind.values() for s in ss]
    best = None
    for tile in TILES:
        prof = dataclasses.replace(spec, matrix_tile_m=tile[0], matrix_tile_n=tile[1], matrix_tile_k=tile[2])
        fit = fit_op_table(samples, prof, test_fraction=0.5, seed=SEED, source="bench_gpu_ops: all op kinds")
        score = fit.train["mape"]
        if best is None or score < best[0]:
            best = (score, fit, tile)
    return best[1], best[2]


def e2e_rows(data: Path):
    import pandas as pd

    df = pd.read_csv(data / "e2e_labels.csv", dtype={"mode": str, "option": str})  # "inf" is not infinity
    df = df[(df["model_name"] == "bert_large") & (df["mode"] == "inf") & df["device"].isin(list(E2E_NAMES))]
    return [(E2E_NAMES[r["device"]], int(r["batch"]), int(r["seqlen"]), str(r["option"]) if isinstance(r["option"], str)
             else "", float(r["label_all_fw_latency"]) * 1e-3) for r in df.to_dict("records")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help=f"the gpu_ops folder (default {DATA})")
    ap.add_argument("--min-rows", type=int, default=500, help="fit a device's op kind only with this many rows")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on the last line")
    args = ap.parse_args(argv)
    if not (args.data / "linear.csv").is_file():
        print(f"bench_gpu_ops: no published GPU measurements at {args.data} (see ../shared/data/README.md)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = load_rows(args.data)
    out = []
    print(f"{'device':24s} {'op':12s} {'n_test':>6s} {'noise':>6s} | {'spec_roofline':>15s} | {'three_term':>15s} | "
          f"{'autodistill':>15s}  tile   roofline")
    print(f"{'':24s} {'':12s} {'':>6s} {'':>6s} | {'MAPE  within10':>15s} | {'MAPE  within10':>15s} | "
          f"{'MAPE  within10':>15s}")
    for dev, pname in DEVICES.items():
        spec = load_profile(pname)
        for kind in FILES.values():
            samples = rows.get((dev, kind), [])
            if len(samples) < args.min_rows:
                continue
            noise = noise_bound(samples)
            spec_acc, three = spec_and_three_term(samples, spec)
            fit, tile = autodistill_fit(samples, spec)
            ad = fit.heldout
            cells = []
            for method, acc in (("spec_roofline", spec_acc), ("three_term", three), ("autodistill", ad)):
                out.append({"device": dev, "op": kind, "method": method, "n_test": int(acc["n"]),
                            "mape": round(acc["mape"], 5), "within_10pct": round(acc["within_10pct"], 4),
                            "noise": round(noise, 4)})
                cells.append(f"{100 * acc['mape']:6.1f}% {100 * acc['within_10pct']:5.1f}%")
            print(f"{dev:24s} {kind:12s} {ad['n']:6d} {100 * noise:5.1f}% | " + " | ".join(cells)
                  + f"  {tile[0]}x{tile[1]} {fit.roofline}")
    # BERT-Large from each device's op-calibrated profile.
    print("\nBERT-Large inference (FP32) from each device's op-calibrated profile vs measured (e2e_labels.csv)")
    print(f"{'device':24s} {'batch':>5s} {'seq':>4s} {'option':7s} {'measured':>10s} {'estimate':>10s} {'error':>7s}"
          f" {'spec-only':>10s} {'error':>7s}")
    arch = reference_arch("bert-large")
    profiles = {}
    for dev, b, s, option, meas in sorted(e2e_rows(args.data)):
        if dev not in profiles:
            by_kind = {k: rows[(dev, k)] for k in FILES.values() if (dev, k) in rows}
            profiles[dev] = device_profile(by_kind, load_profile(DEVICES[dev]))[0].profile
        est = CostModel(profiles[dev], "fp32").latency_s(arch, b, s)
        spec_est = CostModel(load_profile(DEVICES[dev]), "fp32").latency_s(arch, b, s)
        print(f"{dev:24s} {b:5d} {s:4d} {option or '-':7s} {1e3 * meas:8.1f}ms {1e3 * est:8.1f}ms "
              f"{100 * (est / meas - 1):+6.1f}% {1e3 * spec_est:8.1f}ms {100 * (spec_est / meas - 1):+6.1f}%")
        for method, e in (("autodistill", est), ("spec_roofline", spec_est)):
            out.append({"device": dev, "op": f"bert_large_b{b}_s{s}{'_' + option if option else ''}",
                        "method": method, "n_test": 1, "mape": round(abs(e / meas - 1), 5),
                        "within_10pct": float(abs(e / meas - 1) <= 0.10), "noise": float("nan")})
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        print(json.dumps(out, allow_nan=True))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except AutodistillError as e:
        print(f"bench_gpu_ops: {e}", file=sys.stderr)
        raise SystemExit(2) from None
