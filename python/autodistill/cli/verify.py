"""The ``verify`` subcommand: time students on a device and compare them with a profile's estimates.

    autodistill verify --profile cpu_local --device cpu --arch mobilebert --arch tinybert-4 --shape 1x128
    autodistill verify --profile profiles/h100_local.toml --device gpu --run runs/demo --shape 1x128 --shape 8x128

The on-device confirmation of `autodistill run` (`autodistill.verify.confirm`) as a
command of its own: for reference architectures (`autodistill archs`), StudentArch
JSON files and the students of a run folder, at one or more batch x sequence
shapes. Each shape is one confirmation (the fastest of ``--passes`` passes in a
fresh process, a drift check on the profile's calibration table, a recalibration
when an error exceeds ``--tolerance``). ``--out`` saves everything as JSON;
``--reuse`` takes the measurements from such a file instead of timing again (to
score another profile against the same measurements).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from autodistill.errors import ConfigError
from autodistill.measure.cases import PLATFORMS

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="time students on a device and compare with a profile's latency estimates",
                       description=__doc__.splitlines()[0])
    p.add_argument("--profile", required=True, help="profile name (see `profiles list`) or .toml path")
    p.add_argument("--device", required=True, choices=PLATFORMS, help="JAX platform to measure on")
    p.add_argument("--arch", action="append", default=[], metavar="NAME|JSON",
                   help="a reference name (see `archs`) or a JSON file of StudentArch fields (repeatable)")
    p.add_argument("--run", default=None, metavar="DIR", help="also every finished student of this run folder")
    p.add_argument("--shape", action="append", default=[], metavar="BxS",
                   help="batch x sequence length to time, e.g. 8x128 (repeatable; default 1x128)")
    p.add_argument("--passes", type=int, default=2, help="timing passes, the fastest kept (default 2)")
    p.add_argument("--anchors", type=int, default=6,
                   help="students of the profile's calibration table re-timed for the drift check (0: none)")
    p.add_argument("--tolerance", type=float, default=0.10, help="relative error that triggers a refit (default 0.1)")
    p.add_argument("--timing-s", type=float, dest="budget_s", default=1.0,
                   help="seconds of timing per student and pass")
    p.add_argument("--budget-s", type=float, dest="budget_s", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--cores", type=int, default=1, help="cpu only: pin the timing process to this many cores (0: all)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--force", action="store_true",
                   help="let --out replace an existing file that is not an earlier verify JSON file")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="take the measurements from an earlier --out file (same students and shapes) instead of "
                        "timing again")
    p.set_defaults(func=_verify)


def parse_shape(text: str) -> tuple[int, int]:
    """``"8x128"`` -> (8, 128)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        b, s = (int(x) for x in parts)
    except ValueError:
        raise ConfigError(f"--shape {text!r} must be BATCHxSEQ, e.g. 1x128") from None
    if not (1 <= b <= 4096 and 1 <= s <= 8192):
        raise ConfigError(f"--shape {text!r}: batch must be in 1..4096 and sequence length in 1..8192")
    return b, s


def run_students(run_dir: str | os.PathLike[str]) -> list[tuple[str, Any]]:
    """(name, arch) of every ready student of a run folder (`autodistill.run.StudentRecord.ready`)."""
    from autodistill.run import RunFolder

    folder = RunFolder(run_dir)
    if not folder.students_dir.is_dir():
        raise ConfigError(f"--run {str(run_dir)!r} has no students/ folder (is it an `autodistill run` folder?)")
    out = [(r.name, r.arch) for r in folder.students(ready=True)]
    if not out:
        raise ConfigError(f"--run {str(run_dir)!r} has no finished students")
    return out


def _student_name(spec: str, arch: Any) -> str:
    """A student's name in the tables: a file's stem, an inline object's shape, else the spec itself."""
    if spec.endswith(".json"):
        return Path(spec).stem
    return arch.short_name() if spec.lstrip().startswith("{") else spec


def _students(args: argparse.Namespace) -> list[tuple[str, Any]]:
    from autodistill.arch import resolve

    out = [(_student_name(a, arch), arch) for a, arch in ((a, resolve(a)) for a in args.arch)]
    if args.run:
        out += run_students(args.run)
    if not out:
        raise ConfigError("nothing to verify: give --arch and/or --run")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"student names given twice: {', '.join(dup)}")
    return out


def _is_verify_json(path: Path) -> bool:
    """Whether ``path`` is an earlier ``verify --out`` file (a JSON object with a list of shapes)."""
    from autodistill.fileio import read_json

    try:
        data = read_json(path)
    except ConfigError:
        return False
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def _reused(path: str, profile_name: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The shapes of an earlier ``verify --out`` file by (batch, seq); another profile's drift check is
    dropped (its anchors belong to that profile's table)."""
    from autodistill.fileio import read_json

    data = read_json(path, what="--reuse file")
    if data is None:
        raise ConfigError(f"--reuse file {path!r} does not exist")
    shapes = data.get("shapes") if isinstance(data, dict) else None
    if not isinstance(shapes, list) or not all(isinstance(sh, dict) for sh in shapes):
        raise ConfigError(f"--reuse file {path!r} is not a verify JSON file: it has no list of shapes")
    out = {}
    for sh in shapes:
        try:
            key = (int(sh["batch"]), int(sh["seq"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"--reuse file {path!r} is not a verify JSON file: a shape has no integer "
                              f"batch and seq") from None
        if sh.get("profile") != profile_name:
            sh = {**sh, "drift": None}
        out[key] = sh
    return out


def format_shape(res: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:+.1f}%"

    lines = [f"{res['device']} b{res['batch']} x s{res['seq']}, profile {res['profile']} ({res['dtype']})"]
    lines.append(f"  {'student':<34} {'measured':>11} {'estimate':>11} {'error':>8} {'drift-corr':>10} {'refit':>8}")
    for s in res["students"]:
        m = s["measured_latency_s"]
        lines.append(f"  {s['name'][:34]:<34} {1e3 * m:>9.3f}ms {1e3 * s['est_latency_s']:>9.3f}ms "
                     f"{pct(s['est_latency_s'] / m - 1):>8} "
                     f"{pct(None if s['drift_latency_s'] is None else s['drift_latency_s'] / m - 1):>10} "
                     f"{pct(None if s['recal_latency_s'] is None else s['recal_latency_s'] / m - 1):>8}")
    sm = res["summary"]
    if sm:
        line = (f"  MAPE {100 * sm['mape_before']:.1f}%, within 10% {100 * sm['within_10pct_before']:.0f}%")
        if "drift_ratio" in sm:
            line += f"; drift {sm['drift_ratio']:.3f} ({int(sm['drift_anchors'])} anchors)"
            if "mape_drift_corrected" in sm:
                line += (f", drift-corrected MAPE {100 * sm['mape_drift_corrected']:.1f}%, within 10% "
                         f"{100 * sm['within_10pct_drift_corrected']:.0f}%")
        if sm.get("recalibrated"):
            line += f"; after refit MAPE {100 * sm['mape_after']:.1f}%"
        lines.append(line)
    if res["note"]:
        lines.append("  " + res["note"])
    return "\n".join(lines)


def _verify(args: argparse.Namespace) -> int:
    from autodistill.fileio import atomic_write_json, check_output_file
    from autodistill.hardware import load_profile
    from autodistill.verify import DriftCheck, confirm, match_reused, profile_dtype

    if args.passes < 1:
        raise ConfigError(f"--passes {args.passes} must be >= 1")
    if args.anchors < 0:
        raise ConfigError(f"--anchors {args.anchors} must be >= 0")
    if not 0.0 < args.tolerance < 10.0:
        raise ConfigError(f"--tolerance {args.tolerance} must be in (0, 10)")
    if not args.budget_s > 0:
        raise ConfigError(f"--timing-s {args.budget_s} must be > 0")
    if args.cores < 0:
        raise ConfigError(f"--cores {args.cores} must be >= 0")
    if args.out is not None:
        if not args.out.endswith(".json"):
            raise ConfigError(f"--out {args.out!r} must end in .json")
        check_output_file(args.out, "--out", ours=_is_verify_json, what="a verify JSON file", force=args.force)
    shapes = [parse_shape(s) for s in args.shape] or [(1, 128)]
    profile = load_profile(args.profile)
    students = _students(args)
    for name, arch in students:  # a model cannot read more tokens than it has positions
        for b, s in shapes:
            if s > arch.max_position_embeddings:
                raise ConfigError(f"--shape {b}x{s}: student {name} has max_position_embeddings="
                                  f"{arch.max_position_embeddings}, fewer than {s} tokens")
    reuse = _reused(args.reuse, profile.name) if args.reuse else {}
    result: dict[str, Any] = {"device": args.device, "profile": profile.name, "profile_path": profile.path,
                              "dtype": profile_dtype(profile), "shapes": []}
    for b, s in shapes:
        prev = reuse.get((b, s))
        rows, drift = None, None
        if prev is not None:
            rows = match_reused(prev, students, source=f"--reuse {args.reuse!r}")
            try:
                drift = DriftCheck.from_dict(prev["drift"]) if prev.get("drift") else None
            except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise ConfigError(f"--reuse {args.reuse!r}: the b{b}xs{s} drift check is not valid ({e})") from None
        elif args.reuse:
            raise ConfigError(f"--reuse {args.reuse!r} has no shape {b}x{s}")
        if not args.no_progress and (rows is None or drift is None):
            print(f"timing {len(students) if rows is None else 0} student(s) at batch {b} seq {s} on {args.device}"
                  + (f" (and {args.anchors} drift anchors)" if drift is None and args.anchors else ""),
                  file=sys.stderr, flush=True)
        rep = confirm(students, profile, batch=b, seq=s, device=args.device, tolerance=args.tolerance,
                      budget_s=args.budget_s, cores=args.cores, passes=args.passes, measurements=rows,
                      anchors=0 if rows is not None and drift is None else args.anchors, drift=drift)
        res = {**rep.to_dict(b, s), "dtype": result["dtype"]}
        result["shapes"].append(res)
        print(format_shape(res))
        if args.out:  # after every shape: an interrupted verify keeps what it measured
            atomic_write_json(args.out, result, indent=1)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
