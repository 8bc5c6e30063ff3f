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
from pathlib import Path

from autodistill.calibration import write_profile
from autodistill.errors import CalibrationError
from autodistill.fileio import check_output_file
from autodistill.measure.cases import PLATFORMS
from autodistill.measure.plan import MeasurePlan
from autodistill.measure.table import TIME_CHOICES

logger = logging.getLogger(__name__)

_D = MeasurePlan()  # the measuring defaults, written once


def plan_of(args: argparse.Namespace) -> MeasurePlan:
    """The `MeasurePlan` the calibrate flags describe."""
    return MeasurePlan(device=args.device, suite=args.suite, students=args.students, seed=args.seed,
                       test_fraction=args.test_fraction,
                       student_sources=tuple(x.strip() for x in args.student_sources.split(",") if x.strip()),
                       student_spread=args.student_spread, max_student_gflops=args.max_student_gflops,
                       noise_students=args.noise_students, noise_repeats=args.noise_repeats, budget_s=args.budget_s,
                       passes=args.passes, quiet_threshold=args.quiet_threshold, max_wait_s=args.max_wait_s,
                       retries=args.retries, cores=args.cores, dtype=args.dtype, max_measure_s=args.max_measure_s)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure this device and fit a hardware profile's efficiency terms",
                       description=__doc__.splitlines()[0])
    p.add_argument("--device", required=True, choices=PLATFORMS, help="JAX platform to measure")
    p.add_argument("--out", required=True, help="where to write the calibrated profile (.toml); its stem names it")
    p.add_argument("--base", default="cpu_generic",
                   help="profile to start from and to report as the spec-only baseline (default: cpu_generic)")
    p.add_argument("--suite", default=_D.suite, choices=("tiny", "small", "full"), help="micro-benchmark suite size")
    p.add_argument("--students", type=int, default=None,
                   help="whole students to measure (default: 64 for the full suite, 12 otherwise)")
    p.add_argument("--test-fraction", type=float, default=_D.test_fraction,
                   help="share of students held out (default 0.4)")
    p.add_argument("--student-sources", default=",".join(_D.student_sources),
                   help="comma-separated sources of students, drawn in turn: search-space names (their feasible "
                        "pools) or 'broad' (BERT/MobileBERT shapes incl. LayerNorm, GELU, no bottleneck); "
                        "default: mobilebert,broad,small")
    p.add_argument("--student-spread", default=_D.student_spread, choices=("uniform", "log_flops"),
                   help="how students spread over size: as drawn (most near the GFLOP limit) or evenly over log "
                        "FLOPs, which also covers the small, fast students a search picks (default log_flops)")
    p.add_argument("--max-student-gflops", type=float, default=None,
                   help="largest forward pass of a measured student, GFLOP (default: 12 on cpu, where that takes "
                        "~0.1 s; 200 on gpu/tpu, so that BERT-base and -large at 128 tokens are inside the fitted "
                        "range)")
    p.add_argument("--noise-students", type=int, default=_D.noise_students,
                   help="held-out students re-measured for the noise floor")
    p.add_argument("--noise-repeats", type=int, default=_D.noise_repeats,
                   help="extra measurements of each noise student")
    p.add_argument("--timing-s", type=float, dest="budget_s", default=_D.budget_s,
                   help="seconds of timing per case")
    p.add_argument("--budget-s", type=float, dest="budget_s", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--passes", type=int, default=_D.passes,
                   help="measure every case this many times, in independently shuffled orders; the fit uses "
                        "each case's fastest pass (default 2)")
    p.add_argument("--quiet-threshold", type=float, default=None,
                   help="before timing a case, wait until other processes use fewer CPU cores than this "
                        "(negative: never wait; default: 0.5, or never with --cores 1)")
    p.add_argument("--max-wait-s", type=float, default=_D.max_wait_s,
                   help="longest wait for quiet per case (default 20)")
    p.add_argument("--retries", type=int, default=_D.retries,
                   help="re-time a case up to this many times when others' load exceeded the threshold")
    p.add_argument("--cores", type=int, default=_D.cores,
                   help="cpu only: pin the process to this many of the least busy cores before JAX starts "
                        "(default 1; 0: all). With 1, XLA runs every op on one thread and process CPU time is "
                        "the idle-core latency even on a busy machine; the profile then describes one core. "
                        "More cores need a quiet machine (see --quiet-threshold)")
    p.add_argument("--time", default=None, choices=tuple(TIME_CHOICES),
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
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_calibrate)

    r = sub.add_parser("rescale", help="re-measure a calibrated profile's base rates here (<= 60 s) and rescale it",
                       description="Re-time the peak, stream and vector cases a profile was calibrated with and "
                                   "multiply its base rates by how much faster or slower this device runs now "
                                   "(efficiencies and shape terms stay). Use it when `autodistill verify`'s drift "
                                   "check finds the device far from its calibration-time speed.")
    r.add_argument("--profile", required=True, help="calibrated profile (name or .toml) with its measurement table")
    r.add_argument("--device", required=True, choices=PLATFORMS, help="JAX platform to measure")
    r.add_argument("--out", required=True, help="where to write the rescaled profile (.toml); its stem names it")
    r.add_argument("--max-s", type=float, default=60.0, help="seconds of measuring at most (default 60)")
    r.add_argument("--json", action="store_true", help="print the ratios as JSON")
    r.set_defaults(func=_rescale)


def _is_profile(path: Path) -> bool:
    """Whether ``path`` is a TOML file with a profile's [compute] table (one calibrate or rescale may replace)."""
    import tomllib

    try:
        return isinstance(tomllib.loads(path.read_text(encoding="utf-8")).get("compute"), dict)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def _check_out(out: str) -> None:
    if Path(out).suffix != ".toml":
        raise CalibrationError(f"--out {out!r} must end in .toml")
    check_output_file(out, "--out", ours=_is_profile, what="a hardware profile", error=CalibrationError)


def _check_args(args: argparse.Namespace) -> None:
    _check_out(args.out)
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
        raise CalibrationError(f"--timing-s {args.budget_s} must be > 0")
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
    from autodistill.calibration import calibrate_device, calibrate_from_measurements, measurements_path
    from autodistill.hardware import load_profile

    _check_args(args)
    base = load_profile(args.base)
    if args.from_ops is not None:
        return _calibrate_from_ops(args, base)
    if args.dtype not in base.peak_flops_per_s:
        raise CalibrationError(f"--dtype {args.dtype!r} has no peak in profile {base.name!r}; "
                               f"valid: {', '.join(base.dtypes)}")
    name = Path(args.out).stem
    if args.from_measurements is not None:
        rep = calibrate_from_measurements(args.from_measurements, base, name=name, device=args.device,
                                          dtype=args.dtype, seed=args.seed, test_fraction=args.test_fraction,
                                          add_to=args.add_to, time=args.time, measure_base=not args.no_measure_base,
                                          roofline=args.roofline)
    else:
        from autodistill.measure import JAX_DTYPES

        if args.dtype not in JAX_DTYPES:
            raise CalibrationError(f"--dtype {args.dtype!r} cannot be measured; valid: {', '.join(JAX_DTYPES)}")
        rep = calibrate_device(plan_of(args), base, name=name,
                               measurements=args.measurements or measurements_path(args.out), add_to=args.add_to,
                               time=args.time, measure_base=not args.no_measure_base, roofline=args.roofline,
                               progress=not args.no_progress)
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

    _check_out(args.out)
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
