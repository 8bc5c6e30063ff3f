"""Export a student as a serialized StableHLO program (``jax.export``) and check it in a fresh process.

`export_stablehlo` writes a folder with two files:

* ``model.stablehlo``: the bytes of ``jax.export.Exported.serialize()`` for the MLM forward pass (the
  weights are constants inside the program, so the file alone runs the student);
* ``signature.json``: the input signature (``input_ids``, ``token_type_ids``, ``attention_mask``: int32,
  ``(batch, seq)``), the output, the arch, the platforms, the autodistill and JAX versions and the
  SHA-256 of ``model.stablehlo``.

By default both dimensions are symbolic (``jax.export.symbolic_shape("b, s")`` with ``s <=
max_position_embeddings``; this lowers and runs cleanly on the CPU): one program serves every batch
size and sequence length, each compiled on first use. ``batch=``/``seq=`` fix them instead.

`load_stablehlo` reads the folder back (the digest is checked before deserializing, so a damaged file
is named instead of failing inside XLA) and returns a `StableHLOProgram` callable. `check_stablehlo`
reloads the folder in a fresh Python process (``sys.executable``: nothing of this process's JAX state
is reused) and compares the program's logits with the Flax model's on fixed inputs: the largest
absolute difference must be at most ``rtol`` (1e-4) times the largest |logit|.
Loading needs the ``flatbuffers`` package (``jax.export`` serialization uses it).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autodistill.arch import StudentArch
from autodistill.errors import DistillError

__all__ = ["FORMAT", "INPUT_NAMES", "SIGNATURE_FILE", "STABLEHLO_FILE", "StableHLOProgram", "check_stablehlo",
           "export_stablehlo", "fixed_inputs", "load_stablehlo", "read_signature", "stablehlo_available",
           "stablehlo_written", "time_stablehlo"]

STABLEHLO_FILE = "model.stablehlo"
SIGNATURE_FILE = "signature.json"
FORMAT = "autodistill-stablehlo/1"
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")


def stablehlo_available() -> str | None:
    """None when ``jax.export`` can serialize here, else why not (a missing package)."""
    try:
        import flatbuffers  # noqa: F401 - jax.export's serializer imports it
        import jax.export  # noqa: F401
    except ImportError as e:
        return f"StableHLO export needs jax and flatbuffers ({e}); pip install flatbuffers"
    return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_stablehlo(arch: StudentArch, params: Mapping[str, Any], folder: str | os.PathLike, *,
                     batch: int | None = None, seq: int | None = None,
                     platforms: Sequence[str] | None = None) -> Path:
    """Write ``params`` of ``arch`` as ``folder/model.stablehlo`` + ``folder/signature.json``; returns ``folder``.

    ``batch``/``seq`` None: a symbolic dimension (see the module docstring). ``platforms``: the
    ``jax.export`` lowering platforms (default: this machine's backend). Each file is written
    atomically; ``signature.json`` (the file that says an export is complete) is removed first and
    written last, so a crash never leaves a signature beside another program. A folder holding
    other files than these is refused (`DistillError`).
    """
    why = stablehlo_available()
    if why is not None:
        raise DistillError(why)
    import jax
    import jax.numpy as jnp
    from jax import export as jexport

    from autodistill import __version__
    from autodistill.fileio import atomic_path, atomic_write_json
    from autodistill.models import StudentModel

    dest = Path(folder)
    if dest.exists() and not dest.is_dir():
        raise DistillError(f"StableHLO export folder {dest} exists and is not a folder")
    if dest.is_dir():
        other = sorted(p.name for p in dest.iterdir()
                       if p.name not in (STABLEHLO_FILE, SIGNATURE_FILE) and not p.name.startswith("."))
        if other:
            raise DistillError(f"StableHLO export folder {dest} holds other files ({', '.join(other[:5])}); "
                               "give an empty folder or an earlier StableHLO export")
    maxpos = arch.max_position_embeddings
    if seq is not None and not 1 <= seq <= maxpos:
        raise DistillError(f"seq={seq} must be in [1, {maxpos}] (max_position_embeddings)")
    if batch is not None and batch < 1:
        raise DistillError(f"batch={batch} must be >= 1")
    b_dim = "b" if batch is None else str(int(batch))
    s_dim = "s" if seq is None else str(int(seq))
    shape = jexport.symbolic_shape(f"{b_dim}, {s_dim}", constraints=[f"s <= {maxpos}"] if seq is None else ())
    head = "cls" in params
    model = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=head)
    consts = jax.tree.map(jnp.asarray, dict(params))

    def forward(input_ids, token_type_ids, attention_mask):
        out = model.apply({"params": consts}, input_ids, token_type_ids=token_type_ids,
                          attention_mask=attention_mask)
        return out.logits if head else out.last_hidden_state

    spec = jax.ShapeDtypeStruct(shape, jnp.int32)
    t0 = time.perf_counter()
    try:
        exp = jexport.export(jax.jit(forward), platforms=tuple(platforms) if platforms else None)(spec, spec, spec)
        data = bytes(exp.serialize())
    except DistillError:
        raise
    except Exception as e:  # noqa: BLE001 - lowering raises many types; report them as one
        raise DistillError(f"jax.export of {arch.short_name()} failed: {type(e).__name__}: {e}") from e
    export_s = time.perf_counter() - t0
    out_aval = exp.out_avals[0]
    signature = {
        "format": FORMAT, "file": STABLEHLO_FILE, "sha256": _digest(data), "bytes": len(data),
        "inputs": [{"name": n, "shape": [str(d) for d in spec.shape], "dtype": "int32"} for n in INPUT_NAMES],
        "output": {"name": "logits" if head else "last_hidden_state", "shape": [str(d) for d in out_aval.shape],
                   "dtype": str(out_aval.dtype)},
        "symbolic": {"batch": batch is None, "seq": seq is None, "constraints": [f"s <= {maxpos}"] if seq is None
                     else []},
        "platforms": list(exp.platforms), "arch": arch.to_dict(), "mlm_head": head,
        "autodistill": __version__, "jax": jax.__version__, "export_s": round(export_s, 3)}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / SIGNATURE_FILE).unlink(missing_ok=True)
    with atomic_path(dest / STABLEHLO_FILE) as tmp:
        tmp.write_bytes(data)
    atomic_write_json(dest / SIGNATURE_FILE, signature)
    return dest


def read_signature(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/signature.json`` checked for the fields a loader needs (`DistillError` naming the file)."""
    from autodistill.fileio import read_json

    path = Path(folder) / SIGNATURE_FILE
    sig = read_json(path, what="StableHLO signature", error=DistillError)
    if sig is None:
        raise DistillError(f"no StableHLO export in {folder}: {path} is missing")
    if not isinstance(sig, dict) or sig.get("format") != FORMAT or not isinstance(sig.get("sha256"), str):
        raise DistillError(f"StableHLO signature {path} is not an autodistill signature ({FORMAT})")
    return sig


def stablehlo_written(folder: str | os.PathLike, arch: StudentArch) -> bool:
    """Whether ``folder`` holds a complete StableHLO export of ``arch`` (signature and program present)."""
    try:
        sig = read_signature(folder)
    except DistillError:
        return False
    return (Path(folder) / STABLEHLO_FILE).is_file() and sig.get("arch") == arch.to_dict()


@dataclass(frozen=True)
class StableHLOProgram:
    """A reloaded export: ``program(input_ids, token_type_ids=None, attention_mask=None)`` -> logits (NumPy).

    ``exported`` is the `jax.export.Exported`; ``signature`` the folder's ``signature.json``.
    """

    exported: Any
    signature: Mapping[str, Any]
    path: Path

    @property
    def arch(self) -> StudentArch:
        return StudentArch.from_dict(self.signature["arch"])

    def inputs(self, input_ids: Any, token_type_ids: Any = None, attention_mask: Any = None) -> tuple[Any, ...]:
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim != 2:
            raise DistillError(f"input_ids must be (batch, seq); got shape {ids.shape}")
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, np.int32)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
        return ids, types, mask

    def __call__(self, input_ids: Any, token_type_ids: Any = None, attention_mask: Any = None) -> np.ndarray:
        args = self.inputs(input_ids, token_type_ids, attention_mask)
        try:
            return np.asarray(self.exported.call(*args))
        except Exception as e:  # noqa: BLE001 - shape errors come as several types
            raise DistillError(f"StableHLO program {self.path} rejected inputs of shape {args[0].shape}: {e}") from e


def load_stablehlo(folder: str | os.PathLike) -> StableHLOProgram:
    """Read ``folder`` (see `export_stablehlo`); a missing, damaged or foreign file raises `DistillError` naming it."""
    why = stablehlo_available()
    if why is not None:
        raise DistillError(why)
    from jax import export as jexport

    sig = read_signature(folder)
    path = Path(folder) / STABLEHLO_FILE
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DistillError(f"cannot read the StableHLO program {path}: {e.strerror or e}") from None
    if _digest(data) != sig["sha256"]:
        raise DistillError(f"StableHLO program {path} is damaged or was replaced: its SHA-256 does not match "
                           f"{Path(folder) / SIGNATURE_FILE} ({len(data)} bytes, {sig.get('bytes')} written)")
    try:
        exp = jexport.deserialize(bytearray(data))
    except Exception as e:  # noqa: BLE001 - flatbuffers / MLIR errors
        raise DistillError(f"StableHLO program {path} cannot be deserialized: {type(e).__name__}: {e}") from e
    return StableHLOProgram(exp, sig, path)


def fixed_inputs(arch: StudentArch, batch: int = 2, seq: int = 24, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random token and segment ids, and a mask with the second row half padding: the inputs both export
    checks (`verify_export`, `check_stablehlo`) compare logits on. int32, ``(batch, seq)`` each."""
    seq = min(seq, arch.max_position_embeddings)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, arch.vocab_size, size=(batch, seq)).astype(np.int32)
    types = rng.integers(0, min(arch.type_vocab_size, 2), size=(batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    if batch > 1:
        mask[1, seq // 2:] = 0
    return ids, types, mask


_CHECK_CHILD = r"""
import json, sys, time
req = json.loads(sys.stdin.read())
t0 = time.perf_counter()
import numpy as np
from autodistill.distill.stablehlo import load_stablehlo
from autodistill.errors import AutodistillError
from autodistill.measure import RESULT_MARK
try:
    prog = load_stablehlo(req["folder"])
    load_s = time.perf_counter() - t0
    x = np.load(req["inputs"])
    t1 = time.perf_counter()
    out = prog(x["input_ids"], x["token_type_ids"], x["attention_mask"])
    call_s = time.perf_counter() - t1
    np.save(req["output"], out)
    res = {"ok": True, "load_s": load_s, "first_call_s": call_s}
except AutodistillError as e:
    res = {"ok": False, "error": str(e)}
print(RESULT_MARK + json.dumps(res))
"""


def check_stablehlo(folder: str | os.PathLike, arch: StudentArch, params: Mapping[str, Any], *,
                    rtol: float = 1e-4, batch: int = 2, seq: int = 24, seed: int = 0,
                    timeout_s: float = 600.0) -> dict[str, float]:
    """Reload ``folder`` in a fresh Python process and compare its outputs with Flax's ``params`` of ``arch``.

    Returns ``max_abs_diff``, ``scale`` (largest |Flax logit|), ``load_s`` (the child's import +
    deserialize time) and ``first_call_s`` (compile + first call). Raises `DistillError` when the
    child fails or the difference exceeds ``rtol * scale``.
    """
    import jax.numpy as jnp

    from autodistill.measure import run_child
    from autodistill.models import StudentModel

    inputs = fixed_inputs(arch, batch, seq, seed)
    with tempfile.TemporaryDirectory(prefix="autodistill-shlo-") as td:
        np.savez(Path(td) / "in.npz", input_ids=inputs[0], token_type_ids=inputs[1], attention_mask=inputs[2])
        req = {"folder": str(Path(folder).resolve()), "inputs": str(Path(td) / "in.npz"),
               "output": str(Path(td) / "out.npy")}
        res = run_child(_CHECK_CHILD, req, timeout_s=timeout_s, what=f"reloading the StableHLO export {folder}",
                        error=DistillError)
        if not res.get("ok"):
            raise DistillError(str(res.get("error")))
        got = np.load(Path(td) / "out.npy")
    head = "cls" in params
    out = StudentModel(arch=arch, dtype=jnp.float32, mlm_head=head).apply(
        {"params": params}, jnp.asarray(inputs[0]), token_type_ids=jnp.asarray(inputs[1]),
        attention_mask=jnp.asarray(inputs[2]))
    ref = np.asarray(out.logits if head else out.last_hidden_state)
    if got.shape != ref.shape:
        raise DistillError(f"StableHLO check: the program in {folder} gave {got.shape}, Flax {ref.shape}")
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(got.astype(np.float64) - ref)))
    tol = rtol * max(scale, 1e-6)
    if not diff <= tol:
        raise DistillError(f"StableHLO check failed: the program reloaded from {Path(folder) / STABLEHLO_FILE} and "
                           f"the Flax model of {arch.short_name()} differ by {diff:.3g} > {tol:.3g} "
                           f"({rtol:g} x max |output| {scale:.3g})")
    return {"max_abs_diff": diff, "scale": scale, "load_s": float(res["load_s"]),
            "first_call_s": float(res["first_call_s"])}


_TIME_CHILD = r"""
import json, sys
req = json.loads(sys.stdin.read())
from autodistill import measure
if req["device"] == "cpu" and req["cores"] > 0:
    measure.pin_cores(req["cores"])   # before JAX starts, as autodistill.verify.measure_items
import jax
from autodistill.distill.stablehlo import fixed_inputs, load_stablehlo
from autodistill.measure.timing import time_fn
dev = measure.get_device(req["device"])
best = [None] * len(req["folders"])
progs = [load_stablehlo(f) for f in req["folders"]]
for _ in range(req["passes"]):
    for i, prog in enumerate(progs):
        ids, types, mask = fixed_inputs(prog.arch, req["batch"], req["seq"])
        mask[:] = 1
        t = time_fn(prog.exported.call, ids, types, mask, device=dev, budget_s=req["budget_s"])
        if best[i] is None or t.min_s < best[i]:
            best[i] = t.min_s
print(measure.RESULT_MARK + json.dumps(best))
"""


def time_stablehlo(folders: Sequence[str | os.PathLike], batch: int, seq: int, *, device: str = "cpu",
                   cores: int = 1, passes: int = 2, budget_s: float = 1.0,
                   timeout_s: float = 1800.0) -> list[float]:
    """Fastest call (seconds) of each reloaded program at ``batch`` x ``seq``, timed in a fresh process
    pinned like `autodistill.verify.measure_items` (the statistic the confirmation compares: ``min_s``).
    The program includes the MLM head (the confirmation's student cases time the encoder alone)."""
    if not folders:
        return []
    from autodistill.measure import run_child

    req = {"folders": [str(Path(f).resolve()) for f in folders], "batch": int(batch), "seq": int(seq),
           "device": device, "cores": int(cores), "passes": max(1, int(passes)), "budget_s": float(budget_s)}
    return [float(x) for x in run_child(_TIME_CHILD, req, timeout_s=timeout_s,
                                        what=f"timing StableHLO programs on device {device!r}", error=DistillError)]

