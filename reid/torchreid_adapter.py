"""The one place torchreid (PyPI 0.2.5, a repackaging of upstream 1.4.0) is imported.

Its quirks are handled here: modules live under ``torchreid.reid.*``; it warns
at import that the Cython ranking is missing; its built-in ``market1501``
starts a download when ``<root>/market1501`` is missing and parses pid and
camera with ``([-\\d]+)_c(\\d)`` searched over the *whole path*.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from generator.errors import UserError

_TORCHREID_NAME_RE = re.compile(r"([-\d]+)_c(\d)")


def import_torchreid():
    """``torchreid``, imported without its Cython warning (our evaluation does not use its ranking)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cython evaluation", category=UserWarning)
        import torchreid
        import torchreid.reid.metrics.rank  # noqa: F401  (the warning is raised here)
    return torchreid


def builtin_market1501(root: str | os.PathLike, verbose: bool = False, **kwargs):
    """torchreid's own ``Market1501`` over ``<root>/market1501`` (never a download).

    ``root`` is the folder *above* ``market1501/``, as torchreid expects; inside
    it, torchreid uses ``Market-1501-v15.09.15/`` when present, else the split folders directly.
    """
    root = Path(root).resolve()
    dataset_dir = root / "market1501"
    if not dataset_dir.is_dir():
        raise UserError(
            f"{dataset_dir}: missing; torchreid's market1501 reads <root>/market1501/ (and would try a download "
            "without it): move or link the dataset there"
        )
    if _TORCHREID_NAME_RE.search(str(dataset_dir)):
        raise UserError(
            f"{dataset_dir}: the path itself matches torchreid's '<pid>_c<cam>' pattern, so it would misread every "
            "pid; move the dataset to a path without '<digits>_c<digit>'"
        )
    torchreid = import_torchreid()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The current data structure is deprecated")
        return torchreid.reid.data.datasets.image.market1501.Market1501(root=str(root), verbose=verbose, **kwargs)
