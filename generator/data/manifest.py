"""The manifest of a generated or simulated dataset: one row per image (relative path, split, pid, camid, origin,
and the seeds or sources of its factors), as CSV, and as parquet beside it when pyarrow is installed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from generator.io import atomic_path


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write a manifest as CSV, and as parquet beside it when pyarrow is installed; atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    if importlib.util.find_spec("pyarrow") is None:
        return
    with atomic_path(path.with_suffix(".parquet")) as tmp:
        df.to_parquet(tmp, index=False)
