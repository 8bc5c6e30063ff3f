"""The ``calibrate`` subcommand: measure this device, fit a profile's terms, report held-out accuracy.

    autodistill calibrate --device cpu --out profiles/cpu_local.toml
    autodistill calibrate --device cpu --out profiles/x.toml --from-measurements profiles/cpu_local_measurements.csv
    autodistill calibrate --device gpu --base h100 --dtype bf16 --out profiles/h100_local.toml --max-measure-s 300

By default the process is pinned to one core (``--cores 1``) and the fit uses
per-call ``min(wall, process CPU time)``: on a shared machine that is the
single-core latency an idle machine would show. Every case is measured in two
passes (``--passes``) and the faster one kept. Measuring writes
``<out stem>_measurements.csv`` beside the profile (every case with its
environment fingerprint); ``--from-measurements`` refits from such a table
without measuring. ``--roofline max|sum|auto`` (default auto) sets how an op's
compute, vector and memory times combine; auto fits both and keeps the one with
the lower error on the training students. The profile's header comments record
the held-out accuracy of the kept mode and of the other one, the spec-only
accuracy and the noise floor.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from autodistill.errors import CalibrationError

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu", "tpu")
#: Default largest student forward pass (GFLOP) by device: the accelerators run BERT-large at 128 tokens
#: (78 GFLOP) in about 2 ms, and a fit on small students alone over-estimated it by 63% on an H200.
MAX_STUDENT_GFLOPS = {"cpu": 12.0, "gpu": 200.0, "tpu": 200.0}
#: Batch sizes and sequence lengths students are timed at, by device: on accelerators larger ones, so
#: that the students reach the GFLOP limit (spread evenly over log FLOPs: about 15 students per decade
#: from 0.01 to 100 GFLOP, where the CPU's shapes stop near 10).
STUDENT_SHAPES = {"cpu": ((1, 2, 4, 8), (16, 32, 64, 128)),
                  "gpu": ((1, 2, 4, 8, 16, 32), (32, 64, 128, 256)),
                  "tpu": ((1, 2, 4, 8, 16, 32), (32, 64, 128, 256))}
#: While measuring, the table so far is saved beside the profile at most this often (seconds).
CHECKPOINT_EVERY_S = 15.0
TIME_COLUMNS = {"wall": "median_s", "corrected": "corrected_median_s", "min": "min_s"}


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone ``autodistill``-style parser holding only ``calibrate`` (for scripts and tests)."""
    parser = argparse.ArgumentParser(prog="autodistill")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure this device and fit a hardware profile's efficiency terms",
                       description=__doc__.splitlines()[0])
    p.add_argument("--device", required=True, choices=DEVICES, help="JAX platform to measure")
    p.add_argument("--out", required=True, help="where to write the calibrated profile (.toml); its stem names it")
    p.add_argument("--base", default="cpu_generic",
                   help="profile to start from and to report as the spec-only baseline (default: cpu_generic)")
    p.add_argument("--suite", default="full", choices=("tiny", "small", "full"), help="micro-benchmark suite size")
    p.add_argument("--students", type=int, default=None,
                   help="whole students to measure (default: 64 for the full suite, 12 otherwise)")
    p.add_argument("--test-fraction", type=float, default=0.4, help="share of students held out (default 0.4)")
    p.add_argument("--student-sources", default="mobilebert,broad,small",
                   help="comma-separated sources of students, drawn in turn: search-space names (their feasible "
                        "pools) or 'broad' (BERT/MobileBERT shapes incl. LayerNorm, GELU, no bottleneck); "
                        "default: mobilebert,broad,small")
    p.add_argument("--student-spread", default="log_flops", choices=("uniform", "log_flops"),
                   help="how students spread over size: as drawn (most near the GFLOP limit) or evenly over log "
                        "FLOPs, which also covers the small, fast students a search picks (default log_flops)")
    p.add_argument("--max-student-gflops", type=float, default=None,
                   help="largest forward pass of a measured student, GFLOP (default: 12 on cpu, where that takes "
                        "~0.1 s; 200 on gpu/tpu, so that BERT-base and -large at 128 tokens are inside the fitted "
                        "range)")
    p.add_argument("--noise-students", type=int, default=4, help="held-out students re-measured for the noise floor")
    p.add_argument("--noise-repeats", type=int, default=3, help="extra measurements of each noise student")
    p.add_argument("--budget-s", type=float, default=0.5, help="timing budget per case, seconds (default 0.5)")
    p.add_argument("--passes", type=int, default=2,
                   help="measure every case this many times, in independently shuffled orders; the fit uses "
                        "each case's fastest pass (default 2)")
    p.add_argument("--quiet-threshold", type=float, default=None,
                   help="before timing a case, wait until other processes use fewer CPU cores than this "
                        "(negative: never wait; default: 0.5, or never with --cores 1)")
    p.add_argument("--max-wait-s", type=float, default=20.0, help="longest wait for quiet per case (default 20)")
    p.add_argument("--retries", type=int, default=2,
                   help="re-time a case up to this many times when others' load exceeded the threshold")
    p.add_argument("--cores", type=int, default=1,
                   help="cpu only: pin the process to this many of the least busy cores before JAX starts "
                        "(default 1; 0: all). With 1, XLA runs every op on one thread and process CPU time is "
                        "the idle-core latency even on a busy machine; the profile then describes one core. "
                        "More cores need a quiet machine (see --quiet-threshold)")
    p.add_argument("--time", default=None, choices=tuple(TIME_COLUMNS),
                   help="which time to fit: wall-clock medians, the median of per call min(wall, process CPU "
                        "time), which drops waits for a core another process held, or the fastest call "
                        "(interference only ever adds time, so it is the statistic that repeats); default: min "
                        "on every device, as `autodistill verify` compares")
    p.add_argument("--seed", type=int, default=0, help="seed of the suite, the split and the fit starts")
    p.add_argument("--dtype", default="fp32",
                   help="profile dtype measured and fitted: fp32 (float32, full-precision matmuls), tf32 (float32 "
                        "arrays, TensorFloat-32 matmuls), bf16 or fp16 (weights and activations in that type); "
                        "the calibrated profile holds this dtype only (default fp32)")
    p.add_argument("--max-measure-s", type=float, default=None,
                   help="stop starting new cases after this many seconds of measuring and fit what was measured "
                        "(the order is shuffled, so that is a random subset; default: no limit)")
    p.add_argument("--measurements", default=None,
                   help="where to write the measurement table (default: <out stem>_measurements.csv)")
    p.add_argument("--from-measurements", default=None, metavar="CSV",
                   help="refit from a saved measurement table instead of measuring")
    p.add_argument("--from-ops", default=None, metavar="CSV",
                   help="fit the base profile's op-class terms to an external per-op table (a profiler export: "
                        "op, batch, m, n, k or rows, width, dtype, latency_s; see autodistill.op_table) instead of "
                        "measuring; --test-fraction of its rows are held out and reported")
    p.add_argument("--add-to", default=None, metavar="CSV",
                   help="fit this earlier measurement table too (for instance the profile's own), so that new "
                        "cases extend a calibration: e.g. `--suite tiny --student-sources small` adds students of "
                        "the search's space. Students already in it keep its train/test split. When measuring, "
                        "the table written (and saved while measuring) holds both")
    p.add_argument("--roofline", default="auto", choices=("max", "sum", "auto"),
                   help="how an op's compute, vector and memory times combine: max (they overlap), sum (they do "
                        "not), or auto: fit both, keep the one with the lower MAPE on the training students "
                        "(held-out students are never used to choose; default auto)")
    p.add_argument("--no-measure-base", action="store_true",
                   help="keep the base profile's peak/bandwidths instead of the measured ones")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_calibrate)

    r = sub.add_parser("rescale", help="re-measure a calibrated profile's base rates here (<= 60 s) and rescale it",
                       description="Re-time the peak, stream and vector cases a profile was calibrated with and "
                                   "multiply its base rates by how much faster or slower this device runs now "
                                   "(efficiencies and shape terms stay). Use it when `autodistill verify`'s drift "
                                   "check finds the device far from its calibration-time speed.")
    r.add_argument("--profile", required=True, help="calibrated profile (name or .toml) with its measurement table")
    r.add_argument("--device", required=True, choices=DEVICES, help="JAX platform to measure")
    r.add_argument("--out", required=True, help="where to write the rescaled profile (.toml); its stem names it")
    r.add_argument("--max-s", type=float, default=60.0, help="seconds of measuring at most (default 60)")
    r.add_argument("--json", action="store_true", help="print the ratios as JSON")
    r.set_defaults(func=_rescale)


def _check_args(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.suffix != ".toml":
        raise CalibrationError(f"--out {args.out!r} must end in .toml")
    if not 0.0 < args.test_fraction < 1.0:
        raise CalibrationError(f"--test-fraction {args.test_fraction} must be in (0, 1)")
    if args.students is not None and args.students < 0:
        raise CalibrationError(f"--students {args.students} must be >= 0")
    if args.noise_students < 0 or args.noise_repeats < 0:
        raise CalibrationError("--noise-students and --noise-repeats must be >= 0")
    if args.cores < 0:
        raise CalibrationError(f"--cores {args.cores} must be >= 0 (0: all cores)")
    if not args.max_wait_s >= 0:
        raise CalibrationError(f"--max-wait-s {args.max_wait_s} must be >= 0")
    if args.passes < 1:
        raise CalibrationError(f"--passes {args.passes} must be >= 1")
    if not args.budget_s > 0:
        raise CalibrationError(f"--budget-s {args.budget_s} must be > 0")
    if args.from_measurements is not None and not Path(args.from_measurements).is_file():
        raise CalibrationError(f"--from-measurements file {args.from_measurements!r} does not exist")
    if args.from_ops is not None and args.from_measurements is not None:
        raise CalibrationError("give --from-ops or --from-measurements, not both")
    if args.add_to is not None and not Path(args.add_to).is_file():
        raise CalibrationError(f"--add-to file {args.add_to!r} does not exist")
    if args.max_student_gflops is not None and not args.max_student_gflops > 0:
        raise CalibrationError(f"--max-student-gflops {args.max_student_gflops} must be > 0")
    if args.max_measure_s is not None and not args.max_measure_s > 0:
        raise CalibrationError(f"--max-measure-s {args.max_measure_s} must be > 0")
    if args.measurements is not None and Path(args.measurements).suffix not in (".csv", ".parquet"):
        raise CalibrationError(f"--measurements {args.measurements!r} must end in .csv or .parquet")


def _calibrate(args: argparse.Namespace) -> int:
    from autodistill.calibration import calibrate, measurements_path, merge_measurements
    from autodistill.hardware import load_profile

    _check_args(args)
    base = load_profile(args.base)
    if args.from_ops is not None:
        return _calibrate_from_ops(args, base)
    if args.dtype not in base.peak_flops_per_s:
        raise CalibrationError(f"--dtype {args.dtype!r} has no peak in profile {base.name!r}; "
                               f"valid: {', '.join(base.dtypes)}")
    from autodistill.measure import TIME_COLUMN, load_measurements

    earlier = load_measurements(args.add_to) if args.add_to is not None else None
    if args.from_measurements is not None:
        df = load_measurements(args.from_measurements)
        if earlier is not None:
            df = merge_measurements(earlier, df)
    else:
        from autodistill.measure import JAX_DTYPES, save_measurements

        if args.dtype not in JAX_DTYPES:
            raise CalibrationError(f"--dtype {args.dtype!r} cannot be measured; valid: {', '.join(JAX_DTYPES)}")
        path = Path(args.measurements) if args.measurements else measurements_path(args.out)
        df = measure_device(args, checkpoint=path, earlier=earlier)
        save_measurements(df, path)
        print(f"wrote {len(df)} measurements to {path}"
              + (f" ({len(earlier)} of them from {args.add_to})" if earlier is not None else ""), file=sys.stderr)
    name = Path(args.out).stem
    time_col = TIME_COLUMNS[args.time] if args.time else TIME_COLUMN[args.device]
    if time_col not in df.columns:
        raise CalibrationError(f"the measurement table has no {time_col!r} column; use --time wall")
    rep = calibrate(df, base, name=name, dtype=args.dtype, seed=args.seed, test_fraction=args.test_fraction,
                    time_col=time_col,
                    measure_base=not args.no_measure_base, roofline=args.roofline,
                    description=describe_measurements(df, args.device))
    write_profile(rep, args.out)
    if args.json:
        print(json.dumps(rep.summary(), indent=2, default=float))
    else:
        print(rep.format())
        print(f"wrote {args.out}")
    return 0


def _rescale(args: argparse.Namespace) -> int:
    from autodistill.hardware import load_profile, save_profile
    from autodistill.rescale import rescale_profile

    if Path(args.out).suffix != ".toml":
        raise CalibrationError(f"--out {args.out!r} must end in .toml")
    prof = load_profile(args.profile)
    if Path(args.out).resolve() == Path(prof.path or "").resolve():
        raise CalibrationError(f"--out {args.out!r} is the profile being rescaled; write the rescaled one elsewhere")
    res = rescale_profile(prof, args.device, max_s=args.max_s)
    out = dataclasses.replace(res.profile, name=Path(args.out).stem)
    save_profile(out, args.out)
    if args.json:
        print(json.dumps({"ratios": dict(res.ratios), "speed_ratio": res.speed_ratio, "n_cases": res.n_cases,
                          "seconds": res.seconds, "out": args.out}, indent=2))
    else:
        print(res.message())
        print(f"wrote {args.out}")
    return 0


def _calibrate_from_ops(args: argparse.Namespace, base) -> int:
    from autodistill.hardware import save_profile
    from autodistill.op_table import fit_op_table, read_op_table

    samples = read_op_table(args.from_ops)
    fit = fit_op_table(samples, base, name=Path(args.out).stem, test_fraction=args.test_fraction, seed=args.seed,
                       roofline=args.roofline, source=f"autodistill calibrate --from-ops {Path(args.from_ops).name}")
    save_profile(fit.profile, args.out)
    summary = {"roofline": fit.roofline, "n_train": fit.n_train, "n_test": fit.n_test, "train": dict(fit.train),
               "heldout": dict(fit.heldout), "heldout_by_op": {k: dict(v) for k, v in fit.by_kind.items()}}
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(f"fitted {fit.n_train} op rows of {args.from_ops} onto {base.name} (roofline {fit.roofline}); "
              f"{fit.n_test} held out")
        for label, acc in [("training rows", fit.train), ("held-out rows", fit.heldout)] + [
                (f"held-out {k}", v) for k, v in fit.by_kind.items()]:
            if acc:
                print(f"{label:22s} n={acc['n']:<5d} MAPE={100 * acc['mape']:6.2f}%  "
                      f"within10={100 * acc['within_10pct']:5.1f}%")
        print(f"wrote {args.out}")
    return 0


def describe_measurements(df, device: str) -> str:
    def first(col: str) -> str:
        return str(df[col].iloc[0]) if col in df.columns and len(df) else "?"

    aff = first("cpu_affinity")
    n = len([c for c in aff.split(",") if c.strip()]) if aff not in ("?", "", "nan") else 0
    where = f"{first('cpu')}" + (f", {n} core(s) [{aff}]" if device == "cpu" and n else "")
    flags = first("xla_flags")
    if device != "cpu" and first("device_kind") not in ("?", "", "nan"):
        where = f"{first('device_kind')}; host {where}"
    return (f"this machine's {device.upper()} ({where}), JAX {first('jax_version')}"
            + (f", XLA_FLAGS={flags}" if flags not in ("", "?", "nan") else "") + "; calibrated by `autodistill calibrate`")


def measure_device(args: argparse.Namespace, checkpoint: str | Path | None = None,
                   earlier=None):  # -> pd.DataFrame
    """Run the micro suite, the students and the noise repeats on ``args.device``, in a seeded shuffled order.

    With ``checkpoint``, the table measured so far is saved there (atomically) at most every 15 s,
    so an interrupted calibration keeps its measurements (refit them with --from-measurements).
    With ``earlier`` (a measurement table), the rows returned and saved follow its rows
    (`autodistill.calibration.merge_measurements`), so a checkpoint over the earlier file loses nothing.
    """
    import dataclasses

    import numpy as np

    from autodistill.calibration import merge_measurements
    from autodistill.measure import (RunOptions, get_device, jax_dtype, measurement_table, micro_suite,
                                     models_available, pin_cores, run_cases, save_measurements, student_suite)

    if args.device == "cpu" and args.cores > 0:
        cores = pin_cores(args.cores)
        print(f"pinned to core(s) {sorted(cores)}", file=sys.stderr)
    device = get_device(args.device)
    dtype = jax_dtype(getattr(args, "dtype", "fp32"), args.device)
    n_students = args.students if args.students is not None else (64 if args.suite == "full" else 12)
    if n_students and not models_available():
        raise CalibrationError("measuring whole students needs autodistill.models (the Flax student); "
                               "pass --students 0 to calibrate on micro-benchmarks only")
    cases = micro_suite(args.suite, seed=args.seed, platform=args.device)
    sources = [x.strip() for x in args.student_sources.split(",") if x.strip()]
    gflops = getattr(args, "max_student_gflops", None) or MAX_STUDENT_GFLOPS[args.device]
    batches, seqs = STUDENT_SHAPES[args.device]
    students = (student_suite(n_students, seed=args.seed, test_fraction=args.test_fraction, sources=sources,
                              max_gflops=gflops, spread=getattr(args, "student_spread", "uniform"),
                              batches=batches, seqs=seqs)
                if n_students else [])
    rng = np.random.default_rng(args.seed)
    base_kinds = ("peak", "stream", "vector_peak")
    rest = [c for c in cases if c.kind not in base_kinds] + students
    order = [c for c in cases if c.kind in base_kinds] + [rest[i] for i in rng.permutation(len(rest))]
    held = [c for c in students if c.split == "test"][:args.noise_students]
    n0 = len(order)
    for k in range(args.noise_repeats, 0, -1):  # re-measure at evenly spaced points: drift counts as noise
        at = n0 * k // args.noise_repeats
        order[at:at] = [dataclasses.replace(c, repeat=k) for c in held]
    n_base = sum(c.kind in base_kinds for c in cases)
    first = order[n_base:]
    for p in range(1, args.passes):  # further passes over everything but the base rates, reshuffled
        order += [dataclasses.replace(first[i], pass_=p) for i in rng.permutation(len(first))]
    t0 = time.perf_counter()
    done: list[dict] = []
    saved = [t0]

    def progress(i: int, n: int, row: dict) -> None:
        done.append(row)
        if checkpoint is not None and time.perf_counter() - saved[0] >= CHECKPOINT_EVERY_S:
            so_far = measurement_table(done)
            save_measurements(so_far if earlier is None else merge_measurements(earlier, so_far), checkpoint)
            saved[0] = time.perf_counter()
        logger.info("[%d/%d %.0fs] %s %.3g ms (spread %.1f%%, n=%d, compile %.1fs)", i + 1, n,
                    time.perf_counter() - t0, row["name"], 1e3 * row["median_s"], 100 * row["rel_spread"], row["n"],
                    row["compile_s"])
        if (i + 1) % 20 == 0 or i + 1 == n:
            print(f"measured {i + 1}/{n} cases in {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    quiet = args.quiet_threshold
    if quiet is None:
        quiet = -1.0 if (args.device == "cpu" and args.cores == 1) else 0.5
    opts = RunOptions.for_device(args.device, budget_s=args.budget_s,
                                 quiet_threshold=None if quiet < 0 else quiet, max_wait_s=args.max_wait_s,
                                 retries=max(0, args.retries))
    df = run_cases(order, device=device, opts=opts, dtype=dtype, progress=progress,
                   max_time_s=getattr(args, "max_measure_s", None))
    return df if earlier is None else merge_measurements(earlier, df)


def write_profile(rep, out: str | Path) -> Path:
    """Save the calibrated profile with the report as header comments (atomic; round-trip checked)."""
    import tomllib

    from autodistill.hardware import profile_from_dict, save_profile
    from autodistill.measure import TIME_DESCRIPTIONS

    out = Path(out)
    save_profile(rep.profile, out)  # validates and writes atomically
    h, s = rep.heldout, rep.heldout_spec
    col = rep.fit.get("time_col", "median_s")
    what = TIME_DESCRIPTIONS.get(col, "per case")
    lines = [f"# Calibrated: {rep.profile.calibration.source}.",
             f"# Fitted times: {col} ({what}" + (", fastest of several passes" if rep.fit.get("passes") else "") + ")."]
    if rep.fit.get("timing"):
        lines.append(f"# Timing: {rep.fit['timing']}.")
    if rep.base_measured:
        lines.append("# Base rates measured on this device: " + ", ".join(
            f"{k}={v:.4g}" for k, v in rep.base_measured.items()) + "; other base fields from the base profile.")
    kept = rep.profile.roofline
    lines.append(f"# Roofline: {kept} ({rep.fit.get('roofline_choice', 'given')}).")
    if h:
        lines.append(f"# Held-out students (n={h['n']}), {kept} roofline: MAPE {100 * h['mape']:.2f}%, within +-10% "
                     f"{100 * h['within_10pct']:.1f}%, Spearman {h['spearman']:.4f}, Kendall {h['kendall']:.4f}.")
    for mode, acc in rep.rooflines.items():
        o = acc.get("heldout") if mode != kept else None
        if o:
            lines.append(f"# Same fit with the {mode} roofline (not kept; for comparison): held-out MAPE "
                         f"{100 * o['mape']:.2f}%, within +-10% {100 * o['within_10pct']:.1f}%, Spearman "
                         f"{o['spearman']:.4f}, Kendall {o['kendall']:.4f}.")
    if s:
        lines.append(f"# Spec-only base profile on the same students: MAPE {100 * s['mape']:.1f}%, within +-10% "
                     f"{100 * s['within_10pct']:.1f}%, Spearman {s['spearman']:.4f}.")
    for col, nf in rep.noise.items():
        if nf:
            lines.append(f"# Noise floor ({col}): " + ", ".join(f"{k}={v:.4g}" for k, v in nf.items()) + ".")
    text = "\n".join(lines) + "\n" + out.read_text(encoding="utf-8")
    profile_from_dict(tomllib.loads(text), source=str(out))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
