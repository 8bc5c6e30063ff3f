"""Subcommands of the profile and cost-model stages: ``profiles``, ``archs``, ``estimate``, ``table``."""
from __future__ import annotations

import argparse
import json
import sys

from autodistill.arch import StudentArch, reference_arch, reference_names, resolve
from autodistill.errors import ArchError, ProfileError
from autodistill.hardware import list_profiles, load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="list or show hardware profiles")
    psub = p.add_subparsers(dest="profiles_command", metavar="{list,show}")
    psub.required = True
    pl = psub.add_parser("list", help="names of every profile on the search path")
    pl.set_defaults(func=_profiles_list)
    ps = psub.add_parser("show", help="one profile's fields, as TOML")
    ps.add_argument("name", help="profile name or path to a .toml file")
    ps.set_defaults(func=_profiles_show)

    a = sub.add_parser("archs", help="list the built-in reference architectures with parameter counts")
    a.set_defaults(func=_archs)

    e = sub.add_parser("estimate", help="latency estimate of one student on one profile, per op")
    e.add_argument("--profile", required=True, help="profile name (see `profiles list`) or .toml path")
    e.add_argument("--arch", required=True, help="reference name (see `archs`) or a JSON file of StudentArch fields")
    e.add_argument("--batch", type=int, default=1, help="sequences per inference")
    e.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    e.add_argument("--dtype", default=None, help="dtype with a peak in the profile (default: bf16 if present)")
    e.add_argument("--mlm-head", action="store_true", help="include the MLM head")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=_estimate)

    d = sub.add_parser("table", help="estimate table of the reference models on every profile")
    d.add_argument("--batch", type=int, default=1, help="sequences per inference")
    d.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    d.set_defaults(func=_table)


def _profiles_list(args: argparse.Namespace) -> int:
    bad = 0
    for name in list_profiles():
        try:
            p = load_profile(name)
        except ProfileError as e:  # one damaged file on the path does not hide the others
            print(f"autodistill: error: {e}", file=sys.stderr)
            bad += 1
            continue
        cal = "calibrated" if p.calibration is not None and p.calibration.fitted else "spec-only"
        print(f"{name:16s} {p.kind:4s} {cal:11s} {p.description}")
    return 2 if bad else 0


def _profiles_show(args: argparse.Namespace) -> int:
    p = load_profile(args.name)
    print(f"# {p.path}")
    print(p.to_toml(), end="")
    return 0


def _archs(args: argparse.Namespace) -> int:
    print(f"{'name':16s} {'family':10s} {'params':>12s}  shape")
    for n in reference_names():
        a = reference_arch(n)
        print(f"{n:16s} {a.family:10s} {a.num_parameters(pooler=False):>12,d}  {a.short_name()}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from autodistill.costmodel import CostModel

    arch = resolve(args.arch)
    _check_seq(args.seq, arch, args.arch)
    est = CostModel(load_profile(args.profile), args.dtype).estimate(arch, args.batch, args.seq,
                                                                    mlm_head=args.mlm_head)
    if args.json:
        d = est.to_dict()
        d["arch"] = arch.to_dict()
        print(json.dumps(d, indent=2))
        return 0
    print(f"{arch.short_name()} on {est.profile} ({est.dtype}, {est.roofline} roofline), "
          f"batch={est.batch} seq={est.seq}: {est.latency_s * 1e3:.4f} ms "
          f"({100 * est.interval_level:.0f}% interval {est.interval_s[0] * 1e3:.4f}-{est.interval_s[1] * 1e3:.4f} ms, "
          f"{est.interval_source}), {est.flops / 1e9:.3f} GFLOP, "
          f"{est.bytes_moved / 1e6:.2f} MB")
    hdr = (f"{'op':26s} {'class':9s} {'count':>5s} {'GFLOP':>9s} {'pad%':>6s} {'MB':>9s} {'bound':7s} {'ms':>9s} "
           f"{'share':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for o in est.ops:
        padw = 100.0 * (o.padded_flops / o.flops - 1.0) if o.flops else 0.0
        print(f"{o.name:26s} {o.op_class:9s} {o.count:5.0f} {o.flops / 1e9:9.4f} {padw:6.1f} "
              f"{o.bytes_moved / 1e6:9.3f} {o.bound:7s} {o.latency_s * 1e3:9.4f} "
              f"{100 * o.latency_s / est.latency_s:5.1f}%")
    print(f"{'fixed_overhead':26s} {'':9s} {'':5s} {'':9s} {'':6s} {'':9s} {'':7s} "
          f"{est.fixed_overhead_s * 1e3:9.4f} {100 * est.fixed_overhead_s / est.latency_s:5.1f}%")
    return 0


def _check_seq(seq: int, arch: StudentArch, spec: str) -> None:
    """A model cannot read more tokens than it has positions: refuse instead of pricing an impossible run."""
    if seq > arch.max_position_embeddings:
        base = spec if ":" not in spec and not spec.lstrip().startswith("{") else "NAME"
        raise ArchError(f"--seq {seq} is longer than {arch.short_name()}'s max_position_embeddings="
                        f"{arch.max_position_embeddings}: the model cannot read that many tokens (for a what-if, "
                        f"give it more positions: --arch {base}:max_position_embeddings={seq})")


def _table(args: argparse.Namespace) -> int:
    from autodistill.costmodel import CostModel

    names = reference_names()
    longest = min(reference_arch(n).max_position_embeddings for n in names)
    if args.seq > longest:
        raise ArchError(f"--seq {args.seq} is longer than the reference models read (max_position_embeddings "
                        f"{longest}); use --seq <= {longest}, or `estimate --arch NAME:max_position_embeddings=N`")
    profiles = list_profiles()
    print(f"Estimated latency (ms) of one inference, batch={args.batch} seq={args.seq}, default dtype per profile")
    print(f"{'model':16s} {'params':>8s} " + " ".join(f"{p:>12s}" for p in profiles))
    models = {p: CostModel(load_profile(p)) for p in profiles}
    for n in names:
        a = reference_arch(n)
        cells = " ".join(f"{models[p].latency_s(a, args.batch, args.seq) * 1e3:12.4f}" for p in profiles)
        print(f"{n:16s} {a.num_parameters(pooler=False) / 1e6:7.1f}M {cells}")
    return 0
