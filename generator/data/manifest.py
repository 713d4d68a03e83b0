"""The manifest of a generated or simulated dataset: one row per image (relative path, split, pid, camid, origin,
and the seeds or sources of its factors), as CSV, and as parquet beside it when pyarrow is installed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from generator.errors import UserError
from generator.io import atomic_path


def read_manifest(path: Path, fix: str, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The manifest CSV at ``path`` (only ``columns`` of it, those it has, when given); one that cannot be read
    (cut short, not a CSV, not text) is a UserError naming it and ``fix``."""
    try:
        return pd.read_csv(path, usecols=None if columns is None else (lambda c: c in columns))
    except (OSError, UnicodeDecodeError, ValueError) as e:  # pandas' parser and empty-file errors are ValueErrors
        raise UserError(f"{path}: unreadable manifest ({type(e).__name__}); {fix}") from None


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write a manifest as CSV, and as parquet beside it when pyarrow is installed; atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    if importlib.util.find_spec("pyarrow") is None:
        return
    with atomic_path(path.with_suffix(".parquet")) as tmp:
        df.to_parquet(tmp, index=False)
