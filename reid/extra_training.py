"""Generated images as extra *training* data beside a real dataset, in torchreid: how the outputs of
``vmarket build`` and ``vmarket cutpaste`` load.

Those outputs are training-only sets (a build's query / gallery are empty unless ``test_share`` > 0), and
torchreid's ``Market1501`` indexes ``query[0]``, so pointed at one it raises ``IndexError``. Registered as a
dataset of its own (with a stand-in query) and named as a second torchreid source (``sources=[real, extra]``), it
loads, but torchreid's ``Dataset.__add__`` shifts the second source's pids past the first's, so a cut-and-paste
image of real identity 7 would become a class of its own. Here
one torchreid dataset is registered instead: the real training split plus each extra set's training images, the
real query and gallery as its test set, and every extra image labelled by what it shows (its folder's
``manifest.csv`` column ``origin``, or ``identities``):

- a *real* identity (cut-and-paste and its hybrids, ``fg_mode: real`` remixes: origins ``reid.consistency.
  REAL_ORIGINS``) keeps its real pid, so after torchreid's relabelling it joins its identity's class and adds
  none (CamStyle, DG-Net: DESIGN.md, "Using generated images for re-ID");
- a *new* identity (a Virtual Market identity, origin ``virtual``) gets its pid shifted past the real pids and
  the new pids of the sets before it, or by ``new_pid_offset``: a class of its own.

torchreid is reached through ``reid.torchreid_adapter`` only.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from generator.data.layouts import manifest_file
from generator.data.manifest import read_manifest
from generator.errors import UserError
from reid.consistency import NEW_ORIGIN, REAL_ORIGINS
from reid.torchreid_adapter import market_records, merge_records, register_dataset

IDENTITIES = ("auto", "real", "new")  # how the extra images' pids are read: by their manifest origin, or all alike
LOADER = "register_with_extra_training"  # the function the outputs' README.txt shows


def manifest_origins(root) -> tuple[Path | None, dict[str, str]]:
    """(the manifest read, {image file name: origin}) of an extra set: its ``manifest.csv`` beside the split
    folders or in the root; (None, {}) when it has none with an ``origin`` column."""
    path = manifest_file(root)
    if path is None:
        return None, {}
    df = read_manifest(path, "restore it, or pass identities='real' or 'new' to say what its images show",
                       ("path", "origin"))
    if {"path", "origin"} <= set(df.columns):
        return path, {Path(p).name: str(o) for p, o in zip(df["path"], df["origin"], strict=True)}
    return None, {}


def split_extra(records: list, root, real_pids: set[int], identities: str = "auto", real_root="") -> tuple[list, list]:
    """(records of real identities, records of new identities) among an extra set's training ``records``
    ``(path, pid, camid)``; a real-identity image whose pid no real training identity has is refused."""
    if identities not in IDENTITIES:
        raise UserError(f"identities={identities!r}: use one of {', '.join(IDENTITIES)}")
    manifest, origins = manifest_origins(root) if identities == "auto" else (None, {})
    if identities == "auto" and manifest is None:
        raise UserError(f"{root}: no manifest.csv with an origin column to tell real identities from new ones; "
                        "pass identities='real' (its pids are the real dataset's identities) or identities='new'")
    real, new = [], []
    for rec in records:
        path, pid, _ = rec
        origin = origins.get(Path(path).name) if identities == "auto" else identities
        if origin is None:
            raise UserError(f"{manifest}: no row for {Path(path).name}, so whether it shows a real identity or a new "
                            "one is unknown; restore the manifest, or pass identities='real' or 'new'")
        if origin in REAL_ORIGINS or origin == "real":
            if pid not in real_pids:
                raise UserError(f"{path}: an image of real identity {pid}, which is no training identity of "
                                f"{real_root}; pass as real_root the dataset it was made from"
                                + (", or identities='new'" if identities == "real" else ""))
            real.append(rec)
        elif origin in (NEW_ORIGIN, "new"):
            new.append(rec)
        else:
            raise UserError(f"{manifest}: {Path(path).name} has origin {origin!r}, neither a real identity "
                            f"({', '.join(REAL_ORIGINS)}) nor a new one ({NEW_ORIGIN}); pass identities='real' or "
                            "'new' to say what its images show")
    return real, new


def extra_training_records(real_root, extra_roots, identities: str = "auto", new_pid_offset: int | None = None,
                           real_format: str = "auto", progress: bool = False) -> dict[str, list]:
    """torchreid records ``(path, pid, camid)`` of the real dataset at ``real_root`` (any layout the project
    reads, ``real_format``) with its training split extended by the training images of every folder in
    ``extra_roots``: ``{"train", "query", "gallery"}``, training pids not yet relabelled.

    Real-identity images keep their pids; each extra set's new identities are shifted past every pid before them
    (``new_pid_offset``: by that much instead, refused where it collides)."""
    if isinstance(extra_roots, (str, os.PathLike)):
        extra_roots = [extra_roots]
    real = market_records(real_root, progress=progress, fmt=real_format, fmt_key="real_format")
    real_pids = {p for _, p, _ in real["train"]}
    train = list(real["train"])
    for root in extra_roots:
        records = market_records(root, ("train",), progress=progress)["train"]
        same, new = split_extra(records, root, real_pids, identities, real_root)
        train += same
        if new:
            train, _ = merge_records(train, new, new_pid_offset)
    return {"train": train, "query": real["query"], "gallery": real["gallery"]}


def register_with_extra_training(name: str, real_root, extra_roots, identities: str = "auto",
                                 new_pid_offset: int | None = None, real_format: str = "auto",
                                 progress: bool = False) -> str:
    """Register torchreid dataset ``name``: the real dataset at ``real_root`` with the training images of
    ``extra_roots`` (builds, cut-and-paste outputs: one folder or a list) added to its training split, real
    identities under their real class, new ones as classes of their own; its test set is the real query and
    gallery. Use ``name`` as both ``sources`` and ``targets`` of torchreid's ``ImageDataManager``.

    ``identities``: ``auto`` reads each image's kind from its folder's ``manifest.csv`` (``origin``); ``real`` or
    ``new`` says it for every extra image (a folder without a manifest)."""
    rec = extra_training_records(real_root, extra_roots, identities, new_pid_offset, real_format, progress)
    return register_dataset(name, rec["train"], rec["query"], rec["gallery"])


def loading_readme(folder, real_root, identities: str, training_only: bool) -> list[str]:
    """The lines of an output's README.txt that say how it loads in torchreid, ending with the code (indented 4)
    that does it: ``folder`` the output, ``real_root`` the real dataset it was made from (``identities`` real: its
    images keep real pids) or that the generator learned from (new)."""
    folder, real_root = Path(folder).resolve(), Path(real_root).resolve()
    if training_only:
        why = ("Loading: this is a training-only set (no query or gallery images), so torchreid's own dataset "
               "classes (Market1501, the built-in market1501 dataset; MSMT17 likewise) cannot load it: they raise "
               "IndexError on the empty query. Add it to a real dataset's training split")
    else:
        why = ("Loading: torchreid's built-in market1501 reads this folder alone when it sits at <root>/market1501/ "
               "(at most 1501 identities, cameras 1 to 6). To train on it beside a real dataset, add it to the real "
               "training split")
    kind = ("its images keep their real pids, so each joins its real identity's class and no identity is added"
            if identities == "real" else "its identities are new ones, numbered past the real dataset's pids")
    source = "these images were made from" if identities == "real" else "the generator learned from"
    text = (f"{why} with {LOADER} (reid.extra_training, installed with virtual-market): {kind}; the real query "
            f"and gallery are the test set. real_root may be any dataset the project reads (Market-1501, "
            f"DukeMTMC-reID, MSMT17, CUHK03); here, the data {source}. With PyPI's torchreid 0.2.5:")
    call = f"    name = {LOADER}("
    export = (f"Labelled folders for other code (torchvision's ImageFolder, by split and pid; or MSMT17's lists): "
              f"vmarket export {folder} --out DIR [--to msmt17].")
    return [
        *textwrap.wrap(export, 116, break_on_hyphens=False, break_long_words=False),
        "",
        *textwrap.wrap(text, 116, break_on_hyphens=False),
        "",
        "    import os",
        "",
        "    import torchreid",
        f"    from reid.extra_training import {LOADER}",
        "",
        f"{call}\"real_plus_extra\", real_root={json.dumps(str(real_root))},",
        f"{' ' * len(call)}extra_roots=[{json.dumps(str(folder))}])",
        "    datamanager = torchreid.data.ImageDataManager(root=\"\", sources=name, targets=name, height=128, "
        "width=64,",
        "                                                  workers=min(4, os.cpu_count() or 1))",
    ]
