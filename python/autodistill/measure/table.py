"""The measurement table: its columns, which time column is fitted on which platform, and its files."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autodistill.errors import CalibrationError

if TYPE_CHECKING:
    import pandas as pd


#: Per-case time `autodistill calibrate` fits and `autodistill verify` compares, by platform: the fastest
#: call everywhere. Interference (host dispatch jitter, another tenant on a shared core or cache, another
#: process on ours) only ever adds time, so the fastest call is the statistic that repeats: on an H200,
#: repeated cases' medians varied 21% and their minima 8.8%; on the 2-core CI VM, two passes of the same
#: case differed by 6.5% (median of 212 cases) in their medians and by 5.4% in their minima, and four
#: held-out students timed four times each varied up to 10.2% by corrected median and 5.0% by fastest call.
TIME_COLUMN = {"cpu": "min_s", "gpu": "min_s", "tpu": "min_s"}
#: ``autodistill calibrate --time`` choices: the column each names.
TIME_CHOICES = {"wall": "median_s", "corrected": "corrected_median_s", "min": "min_s"}
#: What each fittable time column of the measurement table is, in words (profile headers, reports).
TIME_DESCRIPTIONS = {"median_s": "median wall-clock time per case",
                     "corrected_median_s": "median per case of per-call min(wall, process CPU time)",
                     "min_s": "fastest call per case"}

#: Columns of the measurement table, in order (fingerprint columns come from `env_fingerprint`).
TABLE_COLUMNS = (
    "case_id", "kind", "name", "params", "batch", "seq", "split", "repeat", "pass",
    "median_s", "min_s", "mean_s", "iqr_s", "rel_spread", "n", "stop_reason", "compile_s", "bg_load", "wait_s",
    "cpu_median_s", "corrected_median_s", "corrected_min_s", "corrected_rel_spread",
    "xla_flops", "xla_dot_flops", "xla_bytes", "xla_transcendentals", "samples_s", "cpu_samples_s",
    "calls_per_sample", "e2e_median_s", "e2e_min_s",
)
FINGERPRINT_COLUMNS = ("device_kind", "platform", "device", "jax_version", "jaxlib_version", "xla_flags",
                       "host", "cpu", "cpu_affinity", "python", "date")


def row_params(row: Mapping[str, Any]) -> dict[str, Any]:
    """A table row's case params (the ``params`` column: JSON text in a file, a dict in memory)."""
    import json

    p = row["params"]
    return json.loads(p) if isinstance(p, str) else dict(p)


def measurement_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the `TABLE_COLUMNS` + `FINGERPRINT_COLUMNS` layout."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    cols = list(TABLE_COLUMNS) + list(FINGERPRINT_COLUMNS)
    for c in cols:
        if c not in df.columns:
            df[c] = np.nan if c not in ("split", "samples_s", "cpu_samples_s", "xla_flags") else ""
    extra = [c for c in df.columns if c not in cols]
    return df[cols + extra]


def save_measurements(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the measurement table as CSV (``.csv``) or parquet (``.parquet``, needs pyarrow)."""
    from autodistill.fileio import atomic_path

    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise CalibrationError(f"measurement file {str(path)!r} must end in .csv or .parquet")
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


def load_measurements(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a table written by `save_measurements`, checking its columns."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"measurement file {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
    missing = [c for c in ("kind", "name", "params", "median_s") if c not in df.columns]
    if missing:
        raise CalibrationError(f"{path}: measurement table lacks column(s) {missing}")
    for c in ("split", "xla_flags", "stop_reason", "samples_s", "cpu_samples_s"):
        if c in df.columns:
            df[c] = df[c].fillna("").astype(str)
    return df


def merge_measurements(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One table of ``old`` and ``new`` rows, for fitting both (an existing calibration extended by new cases).

    A case measured in both counts as more passes of one case (the fit keeps its fastest). A student
    already in ``old`` keeps ``old``'s train/test split, so the held-out set stays held out.
    """
    import pandas as pd

    new = new.copy()
    if "split" in old.columns and "split" in new.columns and "name" in old.columns:
        stud = old[old["kind"] == "student"]
        known = dict(zip(stud["name"], stud["split"].fillna("").astype(str)))
        hit = (new["kind"] == "student") & new["name"].isin(list(known))
        new.loc[hit, "split"] = new.loc[hit, "name"].map(known)
    return pd.concat([old, new], ignore_index=True)
