"""Labelled image folders of a re-ID dataset, for code that reads ImageFolder or MSMT17's lists: ``vmarket export``
(any dataset the project reads: a build, a cut-and-paste, a filter's output, SimMarket or real data in any layout)
and a build's ``export_imagefolder`` / ``export_msmt17`` keys. The images are hard links (copies where links are not
possible), so an export costs no image space on the same file system.

- ``imagefolder``: ``<split>/<pid>/<name>.jpg``, one folder per split the dataset has (``train``; ``query`` and
  ``gallery`` when it has a test split), so a test split's identities never mix with the training ones:
  ``torchvision.datasets.ImageFolder(OUT/train)`` trains on the training identities alone. The folder names are
  the dataset's pids (4 digits), so every image sits under the identity it shows.
- ``msmt17``: ``msmt17/MSMT17_V1/{train,test}/<pid>/...`` and ``list_{train,val,query,gallery}.txt``; the lists
  number their labels 0..N-1 per group (train; query + gallery) as MSMT17's do, the folder names keep the pids.
  torchreid's ``msmt17`` dataset reads it with ``root`` the folder above ``msmt17/`` when it has a test split.

Junk (pid -1) and distractor (pid 0 of Market-1501 and DukeMTMC-reID names) images show no identity and are left
out. ``vmarket export`` writes in ``.OUT.partial`` beside ``OUT`` and renames it when complete; a killed export
starts over when run again.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from generator.data.layouts import DATASET_NAMES, check_protocol, detect_format, scan_dataset
from generator.errors import UserError
from generator.io import (
    atomic_write_text,
    check_output_folder,
    fresh_work_folder,
    link_or_copy,
    partial_path,
    progress_bar,
    removed_on_failure,
)

EXPORTS = ("imagefolder", "msmt17")
SPLITS = ("train", "query", "gallery")
_PARTIAL_MARKER = ".vmarket-export"  # marks a .OUT.partial folder as an unfinished export (ours to clear)
# the files that mark a dataset vmarket wrote as training-only (no query or gallery to read)
TRAINING_ONLY_MARKERS = ("cutpaste.json", "filter_summary.json")


def msmt17_records(df: pd.DataFrame) -> dict[str, list[tuple[str, int, int]]]:
    """``{"train" | "query" | "gallery": [(path under MSMT17_V1/, label, camera 1-based)]}`` for the rows of ``df``
    (columns src, pid, camid, split), in its row order: labels 0..N-1 over the sorted pids of train, and separately of
    query + gallery (as MSMT17's lists number them); names carry the camera in field 2, where torchreid reads it."""
    out = {}
    for splits, folder in ((("train",), "train"), (("query", "gallery"), "test")):
        part = df[df.split.isin(splits)]
        labels = {pid: i for i, pid in enumerate(sorted(part.pid.unique()))}
        count: dict[int, int] = {}
        for r in part.itertuples():
            k = count[r.pid] = count.get(r.pid, -1) + 1
            name = f"{r.pid:04d}_{k:03d}_{r.camid:02d}_vm_{k:04d}_0{Path(r.src).suffix}"
            out.setdefault(r.split, []).append((f"{folder}/{r.pid:04d}/{name}", labels[r.pid], int(r.camid)))
    return out


def write_msmt17(df: pd.DataFrame, dest: Path, progress: bool = False) -> int:
    """``dest/MSMT17_V1/``: the images of ``df`` (columns src, pid, camid, split) in MSMT17's list layout; how many
    are hard links (the others are copies)."""
    recs = msmt17_records(df)
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    linked = 0
    bar = progress_bar(desc="msmt17", unit="img", total=len(df), enabled=progress)
    for split, items in recs.items():
        for src, (rel, label, _) in zip(df.src[df.split == split], items, strict=True):
            target = dest / "MSMT17_V1" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            linked += link_or_copy(src, target)
            lists[split].append(f"{rel.split('/', 1)[1]} {label}")
            bar.update()
    bar.close()
    for folder in ("train", "test"):
        (dest / "MSMT17_V1" / folder).mkdir(parents=True, exist_ok=True)
    for name, lines in lists.items():
        (dest / "MSMT17_V1" / f"list_{name}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    return linked


def write_imagefolder(df: pd.DataFrame, dest: Path, progress: bool = False) -> int:
    """``dest/<split>/<pid>/<name>``: the images of ``df`` (columns src, pid, split), by split and identity; how
    many are hard links (the others are copies)."""
    linked = 0
    for r in progress_bar(df.itertuples(), desc="imagefolder", unit="img", total=len(df), enabled=progress):
        target = dest / r.split / f"{r.pid:04d}" / Path(r.src).name
        target.parent.mkdir(parents=True, exist_ok=True)
        linked += link_or_copy(r.src, target)
    return linked


WRITERS = {"imagefolder": write_imagefolder, "msmt17": write_msmt17}


def write_beside(final: Path, kind: str, df: pd.DataFrame, progress: bool = False) -> None:
    """``final``: the ``kind`` export of ``df``, written in ``.NAME.partial`` beside it and renamed into place (a
    build's exports: one that exists already is complete and kept; a killed one's work folder is cleared). The
    folder holding ``final`` is locked meanwhile, so build shards that finish together write it once."""
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if final.exists():
            return
        work = partial_path(final)
        shutil.rmtree(work, ignore_errors=True)
        WRITERS[kind](df, work, progress)
        os.replace(work, final)
    finally:
        os.close(fd)  # releases the lock


def training_only_marker(root) -> str | None:
    """The file that marks ``root`` as a training-only set vmarket wrote (no query or gallery), else None: a
    cut-and-paste or hybrid (``cutpaste.json``), a filter's output (``filter_summary.json``), a build with
    ``test_share: 0`` (``build.json``)."""
    root = Path(root)
    for marker in TRAINING_ONLY_MARKERS:
        if (root / marker).is_file():
            return marker
    try:
        test_share = json.loads((root / "build.json").read_text())["config"]["test_share"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no build, or an unreadable marker: read as any dataset
    return "build.json" if test_share == 0 else None


def dataset_frame(root, fmt: str = "auto") -> tuple[pd.DataFrame, int, str]:
    """(the person images of ``root``: columns src (absolute path), pid, camid, split; the images without an
    identity left out; the layout's name)."""
    fmt = fmt if fmt != "auto" else detect_format(root, "--format")
    splits = ("train",) if training_only_marker(root) else SPLITS
    records = scan_dataset(root, splits, keep_junk=True, fmt=fmt, fmt_key="--format")
    check_protocol(records, fmt, queries=False)  # a test identity in the training split would join train/
    person = [r for r in records if r.is_person]
    if not person:
        raise UserError(f"{root}: no image of an identity (only junk or distractor images); nothing to export")
    df = pd.DataFrame({"src": [r.path for r in person], "pid": [r.pid for r in person],
                       "camid": [r.camid for r in person], "split": [r.split for r in person]})
    df["name"] = df.src.map(lambda p: Path(p).name)
    twice = df[df.duplicated(["split", "pid", "name"], keep="first")]
    if len(twice):  # one file name twice in an identity's folder (an index that lists an image twice)
        r = twice.iloc[0]
        raise UserError(f"{r.src}: named twice among the {r.split} images of identity {r.pid}; remove the "
                        "duplicate from the dataset's index")
    return df.drop(columns="name"), len(records) - len(person), DATASET_NAMES[fmt]


def identities(df: pd.DataFrame) -> int:
    """The identities of ``df``: its pids, counted apart in the training and test splits (MSMT17 numbers each from
    0, so there one number names two people; other layouts keep them disjoint)."""
    return int(df.assign(test=df.split != "train").drop_duplicates(["test", "pid"]).shape[0])


def _readme(root, kind: str, df: pd.DataFrame, left_out: int, layout: str) -> str:
    counts = ", ".join(f"{s} {int((df.split == s).sum())} images / {df.pid[df.split == s].nunique()} identities"
                       for s in SPLITS if (df.split == s).any())
    how = {"imagefolder": "<split>/<pid>/<name> (the dataset's file names): the folder names are its pids; "
                          "torchvision.datasets.ImageFolder(THIS_FOLDER/train) trains on the training identities.",
           "msmt17": "msmt17/MSMT17_V1/{train,test}/<pid>/ and list_{train,val,query,gallery}.txt, labels 0..N-1 per "
                     "group (train; query + gallery) as MSMT17 numbers them, the folder names keep the pids; "
                     "torchreid's msmt17 dataset reads it (root THIS_FOLDER, sources \"msmt17\") when it has a test "
                     "split."}[kind]
    return "\n".join([
        f"{kind} export of {root} ({layout}), written by virtual-market (vmarket export): hard links to its images "
        f"(copies where links are not possible).",
        f"images: {counts}" + (f"; {left_out} junk or distractor images without an identity left out"
                               if left_out else ""),
        f"layout: {how}",
    ]) + "\n"


def export_dataset(root: str | os.PathLike, out: str | os.PathLike, kind: str = "imagefolder", fmt: str = "auto",
                   progress: bool = True) -> dict:
    """Write the ``kind`` export (``EXPORTS``) of the dataset at ``root`` to ``out``; returns a summary. Every check
    runs before anything is written; the export is written beside ``out`` and renamed onto it when complete."""
    if kind not in EXPORTS:
        raise UserError(f"--to {kind}: unknown export; use one of {', '.join(EXPORTS)}")
    out = Path(out)
    created = check_output_folder(out, "--out", beside=True, inputs={"DATASET": root}, datasets=["DATASET"])
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose another --out or delete it")
    with removed_on_failure(None, out, created):
        df, left_out, layout = dataset_frame(root, fmt)
        t0 = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        work = fresh_work_folder(out, _PARTIAL_MARKER, "vmarket export")
    with removed_on_failure(work, out, created):
        linked = WRITERS[kind](df, work / "msmt17" if kind == "msmt17" else work, progress)
        atomic_write_text(work / "README.txt", _readme(root, kind, df, left_out, layout))
        (work / _PARTIAL_MARKER).unlink()
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(work, out)
    return {"images": len(df), "identities": identities(df), "left_out": left_out, "layout": layout,
            "splits": {s: int((df.split == s).sum()) for s in SPLITS if (df.split == s).any()},
            "copied": len(df) - linked, "training_only": not (df.split == "query").any(),
            "seconds": time.perf_counter() - t0, "out": str(out)}
