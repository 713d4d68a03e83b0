"""Files and the terminal: atomic writes, checkpoint loading and progress bars, one helper per habit.

Every file the project writes goes to a temp name beside its target (``.NAME.PID.N.tmp``, which no scan of an
image folder picks up, since it does not end in ``.jpg``, and which no other writer shares, so two processes
writing the same file never collide) and is renamed into place when complete, so a kill never leaves a
truncated file under a valid name.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from generator.errors import UserError

_IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
_TEMP_COUNTER = itertools.count()  # temp names unique within a process; the pid makes them unique across processes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed onto ``path`` when the block succeeds, removed when it fails.

    Writers that infer a format from the file name must be given the format explicitly: the temp name ends in
    ``.tmp``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_TEMP_COUNTER)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_save_image(image: Image.Image | np.ndarray, path: str | os.PathLike, **save_kwargs) -> None:
    """A PIL image or (H, W, 3) uint8 array to ``path`` (format from its suffix: .jpg or .png), atomically."""
    path = Path(path)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    with atomic_path(path) as tmp:
        image.save(tmp, format=_IMAGE_FORMATS[path.suffix.lower()], **save_kwargs)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint missing; train the stage first or point at a run directory that has it")
    # our checkpoints hold tensors, dicts, lists and numbers only, so weights_only loading works
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}); delete it and retrain") from None


def progress_bar(iterable: Iterable | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             total: int | None = None, initial: int = 0, mininterval: float = 1.0, leave: bool = True) -> tqdm:
    """The progress bar of every long loop (tqdm); ``enabled=False`` hides it (``--quiet``, non-main ranks)."""
    return tqdm(iterable, desc=desc, unit=unit, disable=not enabled, total=total, initial=initial,
                mininterval=mininterval, leave=leave)
