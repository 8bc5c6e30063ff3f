"""Record a real search landscape: flash-distil students of a space and write their accuracies to a table.

    .venv/bin/python benchmarks/record_landscape.py [--config configs/shared_data.toml] [--students 96]
        [--budgets 30,60,120] [--kt-steps 10] [--seed 0] [--out benchmarks/data/landscape_small.csv]
        [--cache-dir DIR] [--limit N] [--max-minutes M]

What it does, in order (issue 16):

1. Loads the run config (default: the goal run's, ``configs/shared_data.toml``): its teacher (with
   the MLM head the run fits and caches), its training and held-out text, its ``[search] space`` and
   latency profile, its ``[flash] batch_size`` and ``[run] seed``.
2. Picks ``--students`` candidates of the space's pool spread over it: the first at random (seeded),
   each next one the candidate farthest (Euclidean, in the search's own [0, 1] encoding) from those
   already picked (greedy maximin), so the table covers the corners and the middle alike.
3. Flash-distils each student once, up to the largest budget, and evaluates the held-out MLM
   accuracy at every budget on the way. The schedule is the flash recipe's (`FlashConfig`): a fixed
   ``--kt-steps`` of layer-wise knowledge transfer (a third of the smallest budget), then pretraining
   distillation at a constant learning rate after warm-up, over the same batches for every student.
   With a constant rate a run stopped at budget ``b`` is the same computation as a run of budget
   ``b``, so the value at 30 steps is what a 30-step flash distillation scores and the wall time to
   reach 60 from 30 is what promoting a screened candidate costs (the fidelity that a multi-fidelity
   search buys).
4. Appends one row per student to ``--out`` (CSV) as soon as it is done, and keeps the settings in a
   sidecar ``<out>.json``. Run it again and it skips the rows it has (resumable: several sittings on
   2 cores; a row cut off by a kill is dropped and redone); other settings than the sidecar's are
   refused, naming the key.

Columns: ``name`` (the short architecture name), the space's searched fields, ``params`` (encoder
and embeddings, as the search counts them), ``latency_s`` (the cost model's estimate on the
space's objective workload and profile) with ``latency_low_s``/``latency_high_s`` (the profile's
interval), then per budget ``b``: ``acc_b`` (held-out MLM accuracy), ``loss_b``, ``wall_b_s``
(seconds of training from the start, compilation included, evaluation not) and ``eval_b_s``; then
``predictions`` (masked tokens scored: one standard error is ``sqrt(acc (1 - acc) / predictions)``),
``status`` and ``message``. A failed student (NaN or diverged) keeps its row with empty accuracies.

The table is a candidate table for ``autodistill search --candidates`` (inputs: the field columns,
known: ``latency_s``, objective: ``acc_120``) and the input of ``benchmarks/bench_search_real.py``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.fileio import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "shared_data.toml"
DEFAULT_OUT = REPO / "benchmarks" / "data" / "landscape_small.csv"

logger = logging.getLogger("record_landscape")


def spread_indices(encoded: np.ndarray, n: int, seed: int) -> list[int]:
    """``n`` row indices of ``encoded`` (``N x d``) by greedy maximin from a seeded random first row."""
    if n > len(encoded):
        raise SystemExit(f"--students {n} is more than the space's {len(encoded)} candidates")
    rng = np.random.default_rng(seed)
    picked = [int(rng.integers(len(encoded)))]
    dist = np.linalg.norm(encoded - encoded[picked[0]], axis=1)
    while len(picked) < n:
        j = int(np.argmax(dist))
        picked.append(j)
        dist = np.minimum(dist, np.linalg.norm(encoded - encoded[j], axis=1))
    return picked


def columns(fields: list[str], budgets: list[int]) -> list[str]:
    cols = ["name", *fields, "params", "latency_s", "latency_low_s", "latency_high_s"]
    for b in budgets:
        cols += [f"acc_{b}", f"loss_{b}", f"wall_{b}_s", f"eval_{b}_s"]
    return cols + ["predictions", "status", "message"]


def read_done(out: Path, cols: list[str]) -> list[dict[str, str]]:
    """The complete rows of ``out`` (a last line cut off by a kill is dropped, and the file rewritten)."""
    if not out.exists():
        return []
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        logger.warning("%s: dropping a row cut off at the end (%d characters)", out, len(lines[-1]))
        lines = lines[:-1]
    rows = list(csv.DictReader(io.StringIO("".join(lines))))
    if lines and lines[0].rstrip("\r\n").split(",") != cols:
        raise SystemExit(f"{out}: its header differs from this run's columns; use another --out")
    good = [r for r in rows if len(r) == len(cols) and None not in r.values()]
    if len(good) != len(rows) or "".join(lines) != text:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(good)
        atomic_write_text(out, buf.getvalue())
    return good


def check_sidecar(path: Path, settings: dict[str, Any]) -> None:
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        for k, v in settings.items():
            if k in old and old[k] != v:
                raise SystemExit(f"{path}: {k} was {old[k]!r}, this run has {v!r}; use another --out to record "
                                 "other settings")
        merged = {**old, **settings}
    else:
        merged = settings
    atomic_write_json(path, merged)


def fmt(v: float) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--students", type=int, default=96)
    ap.add_argument("--budgets", default="30,60,120", help="total flash steps at which to evaluate (ascending)")
    ap.add_argument("--kt-steps", type=int, default=10, help="knowledge-transfer steps (<= the smallest budget)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the spread design")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--cache-dir", default=None, help="teacher head and cache (default: ~/.cache/autodistill)")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many new students (0: all)")
    ap.add_argument("--max-minutes", type=float, default=0, help="start no new student after this long (0: no limit)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    if not budgets or budgets[0] < 1 or not 0 <= args.kt_steps <= budgets[0]:
        raise SystemExit(f"--budgets {args.budgets!r} / --kt-steps {args.kt_steps}: need positive budgets and "
                         "0 <= kt-steps <= the smallest budget")

    from autodistill.distill.engine import get_engine, run_steps
    from autodistill.distill.flash import FlashConfig
    from autodistill.distill.teacher import (
        HeadFitConfig,
        TeacherCache,
        default_cache_dir,
        ensure_mlm_head,
        evaluate_mlm,
    )
    from autodistill.hardware import load_profile
    from autodistill.run.config import load_config
    from autodistill.run.context import load_space_and_pool, load_teacher_and_data

    cfg = load_config(args.config)
    for p in cfg.data.corpus:
        if p != "builtin" and not Path(p).exists():
            print(f"{p} is absent (the shared data folder?); nothing recorded", file=sys.stderr)
            return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    space, pool = load_space_and_pool(cfg)
    fields = [f.name for f in space.fields]
    cols = columns(fields, budgets)
    fcfg = FlashConfig(kt_steps=args.kt_steps, pd_steps=budgets[-1] - args.kt_steps,
                       batch_size=cfg.flash.batch_size, seed=cfg.run.seed)
    settings = {"config": os.path.relpath(Path(args.config).resolve(), REPO), "space": space.name,
                "profile": pool.profile, "batch": pool.batch, "seq": pool.seq, "budgets": budgets,
                "design_seed": args.seed, "students": args.students, "flash": fcfg.to_dict(),
                "data": {"corpus": list(cfg.data.corpus), "heldout": list(cfg.data.heldout),
                         "seq_len": cfg.data.seq_len, "max_heldout_sequences": cfg.data.max_heldout_sequences}}
    check_sidecar(out.with_suffix(".json"), settings)
    done = {r["name"] for r in read_done(out, cols)}

    picked = spread_indices(pool.encoded, args.students, args.seed)
    profile = load_profile(pool.profile)
    band = profile.error_band()
    t0 = time.perf_counter()
    bare, data = load_teacher_and_data(cfg)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    teacher = ensure_mlm_head(bare, data, HeadFitConfig(), cache_dir=cache_dir)
    teacher_ev = evaluate_mlm(teacher.arch, teacher.params, data.heldout_batches(fcfg.eval_batch_size))
    cache = TeacherCache.build(teacher, data, num_batches=fcfg.total_steps, batch_size=fcfg.batch_size,
                               seed=fcfg.seed, hidden_batches=fcfg.kt_steps, topk=fcfg.topk, cache_dir=cache_dir)
    check_sidecar(out.with_suffix(".json"), {
        "teacher": teacher.name, "teacher_mlm_accuracy": teacher_ev["mlm_accuracy"],
        "chance_accuracy": data.chance_accuracy(), "unigram_accuracy": data.unigram_accuracy(),
        "heldout_predictions": teacher_ev["predictions"], "latency_band": [band.low, band.high, band.level],
        "latency_band_source": band.source})
    print(f"teacher {teacher.name}: held-out MLM accuracy {teacher_ev['mlm_accuracy']:.4f}; data and cache ready "
          f"in {time.perf_counter() - t0:.0f} s; {len(done)} of {len(picked)} students recorded", flush=True)

    new = 0
    write_header = not out.exists() or out.stat().st_size == 0
    with out.open("a", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        if write_header:
            w.writeheader()
            f.flush()
        for i in picked:
            arch = pool.arch(i).replace(vocab_size=teacher.arch.vocab_size)
            name = pool.arch(i).short_name()
            if name in done:
                continue
            if args.limit and new >= args.limit:
                break
            if args.max_minutes and time.perf_counter() - t0 > 60 * args.max_minutes:
                print(f"--max-minutes {args.max_minutes} reached; run again to go on", flush=True)
                break
            lat = float(pool.latency_s[i])
            row: dict[str, Any] = {"name": name, **{fn: getattr(arch, fn) for fn in fields},
                                   "params": int(pool.num_parameters[i]), "latency_s": f"{lat:.6g}",
                                   "latency_low_s": f"{lat * band.low:.6g}", "latency_high_s": f"{lat * band.high:.6g}"}
            ts = time.perf_counter()
            engine = get_engine(arch, teacher, data.nsp, fcfg, False, None)
            state = engine.init_state(fcfg.seed, init_from_teacher=fcfg.init_from_teacher, head_init=fcfg.head_init)
            run, start, train_s, preds = None, 0, 0.0, 0
            status, message = "ok", ""
            for b in budgets:
                t1 = time.perf_counter()
                run = run_steps(engine, state, data, fcfg, cache, start, b, run=run)
                train_s += time.perf_counter() - t1
                state, start = run.state, b
                if run.status != "ok":
                    status, message = run.status, run.message
                    break
                t2 = time.perf_counter()
                ev = engine.evaluate(state, data.heldout_batches(fcfg.eval_batch_size))
                if not math.isfinite(ev["mlm_loss"]):
                    status, message = "nan", f"non-finite held-out loss at {b} steps"
                    break
                row.update({f"acc_{b}": f"{ev['mlm_accuracy']:.6g}", f"loss_{b}": f"{ev['mlm_loss']:.6g}",
                            f"wall_{b}_s": f"{train_s:.4g}", f"eval_{b}_s": f"{time.perf_counter() - t2:.4g}"})
                preds = ev["mlm_predictions"]
            row.update({"predictions": preds, "status": status, "message": message})
            w.writerow({c: row.get(c, "") for c in cols})
            f.flush()
            os.fsync(f.fileno())
            new += 1
            accs = " ".join(f"{row.get(f'acc_{b}', '-')}" for b in budgets)
            print(f"[{len(done) + new}/{len(picked)}] {name:40s} {status:8s} acc {accs}  "
                  f"{train_s:.0f} s train, {time.perf_counter() - ts:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
