"""``vmarket keypoints``: run a keypoint estimator (``generator.data.estimators``) over every image of a re-ID
dataset in any layout the project reads (Market-1501, DukeMTMC-reID, MSMT17, CUHK03: generator.data.layouts) and
write its keypoint CSVs, with a checkpoint per batch, so that a killed run resumes where it stopped and no CSV is
ever half-written."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from generator.data.dataset import IMAGE_ERRORS, load_image
from generator.data.estimators import Estimator
from generator.data.keypoints import HEADER, NUM_JOINTS, format_keypoints_row, rcv_to_yx, yx_to_rcv
from generator.data.layouts import KEYPOINT_FILES, Layout, keypoint_dirs, read_layout, resolve_layout
from generator.data.market import Record
from generator.errors import UserError
from generator.io import atomic_write_text, check_output_folder, partial_path, progress_bar
from generator.pose import shows_person


def _targets(layout: Layout, out: str | os.PathLike | None, records: list[Record]) -> dict[Path, list[Record]]:
    """{CSV path: its records}: the dataset's two files (train / query + gallery) where its readers look first
    (``keypoint_dirs``: beside the split folders or list files; CUHK03: in the variant's image folder), or
    everything into ``out``."""
    if out is not None:
        groups = {Path(out): records}
    else:
        folder = keypoint_dirs(layout)[0]
        groups = {}
        for r in records:
            groups.setdefault(folder / KEYPOINT_FILES[r.split], []).append(r)
    for recs in groups.values():
        seen: dict[str, str] = {}
        for r in recs:
            if r.keypoint_name in seen:
                raise UserError(f"{r.path}: same keypoint row name as {seen[r.keypoint_name]}; a keypoint CSV keys "
                                f"rows by image name, so write the splits to separate files (drop --out) or rename "
                                f"one")
            seen[r.keypoint_name] = r.path
    return groups


def _resumable(path: Path) -> bool:
    """Whether ``path`` (a CSV) has an unfinished run's checkpoint holding at least one finished row: only such a run
    may replace an existing CSV without ``overwrite`` (a checkpoint of no row did no work that resuming would keep)."""
    try:
        with open(partial_path(path), "rb") as f:
            return f.read(1 << 16).count(b"\n") >= 2  # the estimator line, then one complete row
    except FileNotFoundError:
        return False


def _read_partial(path: Path, estimator: str, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """The rows a killed run checkpointed: complete lines only (a torn last line is dropped, and the file cut back to
    the last complete row so that appending goes on cleanly). A checkpoint made on images of another ``size`` (H, W)
    than these, resized since, is refused: its rows are in the old pixels."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # the part after the last newline is torn or empty
    try:
        meta = json.loads(lines[0].decode()) if lines else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or "estimator" not in meta:
        path.unlink()  # torn before its first line was complete: nothing to keep
        return {}
    if meta["estimator"] != estimator:
        raise UserError(f"{path}: checkpoint of an unfinished run with --estimator {meta['estimator']}; rerun with "
                        f"that estimator to finish it, or delete the file to start over")
    then = meta.get("size")  # a checkpoint written before sizes were recorded holds none
    if then and size and tuple(then) != tuple(size):
        raise UserError(f"{path}: checkpoint of an unfinished run on images of {then[0]}x{then[1]} (HxW), and the "
                        f"images are {size[0]}x{size[1]} now: its rows are in the old pixels; delete the file to "
                        "estimate them all again")
    rows: dict[str, np.ndarray] = {}
    keep = len(lines[0]) + 1
    for line in lines[1:]:
        try:
            name, ys, xs = line.decode().split(":")
            yx = np.stack([np.array(json.loads(ys), np.int64), np.array(json.loads(xs), np.int64)], axis=1)
        except (UnicodeDecodeError, ValueError, TypeError):
            break
        if yx.shape != (NUM_JOINTS, 2):
            break
        rows[name.strip()] = yx
        keep += len(line) + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    return rows


def _append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def _check_one_size(root, records: list[Record]) -> tuple[int, int] | None:
    """The (H, W) of every image (read from the file headers; None: none readable). A dataset whose images differ in
    size is refused: the generator reads one size, so such images are resized before use, and keypoints estimated
    in each image's own pixels would not follow."""
    sizes: Counter = Counter()
    example: dict[tuple[int, int], str] = {}
    for r in records:
        try:
            with Image.open(r.path) as im:
                size = (im.height, im.width)
        except IMAGE_ERRORS:
            continue  # an unreadable file is named when the estimator loads it
        sizes[size] += 1
        example.setdefault(size, str(r.path))
    if len(sizes) > 1:
        common = sizes.most_common()
        (h, w), _ = common[0]
        shown = ", ".join(f"{a}x{b}: {n}" for (a, b), n in common[:3]) + (", ..." if len(common) > 3 else "")
        raise UserError(f"{root}: images of {len(sizes)} sizes (HxW: {shown}; e.g. {example[common[1][0]]}); the "
                        f"generator reads one size, and keypoints estimated now would not follow a later resize: "
                        f"resize every image to one size (e.g. {h}x{w}) first, then estimate their keypoints")
    return next(iter(sizes), None)


@dataclass
class KeypointPlan:
    groups: dict[Path, list[Record]]  # keypoint CSV -> its images
    size: tuple[int, int] | None  # (H, W) of every image


def plan_keypoints(root: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False,
                   fmt: str = "auto") -> KeypointPlan:
    """What ``write_keypoints`` writes, refusing (UserError) what it would refuse, before any estimator loads: a
    dataset it cannot scan, a CSV that exists without ``overwrite`` (unless an unfinished run's checkpoint beside it
    holds rows to resume from), an ``out`` in a missing folder, then images of several sizes."""
    layout = resolve_layout(root, fmt, "--format")
    records = read_layout(layout, ("train", "query", "gallery"), keep_junk=True)
    if out is not None and (str(out).endswith(("/", os.sep)) or Path(out).suffix.lower() != ".csv"):
        # a folder's name would become a file's; a name such as x.jpg among the images, one more image to read
        raise UserError(f"{out}: --out names the keypoint CSV file to write, ending in .csv (e.g. keypoints.csv)")
    groups = _targets(layout, out, records)
    for path in groups:
        if path.is_dir():
            raise UserError(f"{path}: is a folder; --out names the CSV file to write")
        if path.exists() and not overwrite and not _resumable(path):
            raise UserError(f"{path}: exists; pass --overwrite to replace it, or --out elsewhere")
        check_output_folder(path.parent, "--out")  # the CSV and its checkpoint are written there
        if not path.parent.is_dir():
            raise UserError(f"{path.parent}: no such folder for --out; create it or pick another path")
    return KeypointPlan(groups, _check_one_size(root, records))  # last: it opens every image


def write_keypoints(root: str | os.PathLike, estimator: Estimator, out: str | os.PathLike | None = None,
                    batch: int = 16, overwrite: bool = False, progress: bool = True, fmt: str = "auto",
                    plan: KeypointPlan | None = None) -> dict:
    """Estimate the keypoints of every image (junk included) of the dataset at ``root`` in layout ``fmt`` (auto:
    detected) and write the CSVs.

    ``out=None``: ``market-annotation-train.csv`` (training split) and ``market-annotation-test.csv`` (query +
    gallery) where ``vmarket check`` and training look for them in that layout (beside the split folders or list
    files; CUHK03: in ``images_detected/`` or ``images_labeled/``, the variant ``fmt`` reads); else one CSV for all
    splits. Rows follow the dataset's scan (split, then name or index order), each named as the layout's keypoint
    rows are (``Record.keypoint_name``: MSMT17's list entry, else the file name); an image without a detected
    person gets a row of -1.

    Every batch is appended to a hidden checkpoint beside each CSV (``.NAME.partial``); a rerun after a kill reads
    it and estimates only the images it lacks. The CSVs are written (temp file, then rename) once every image is
    done, then the checkpoints go. A CSV that exists without a checkpoint is refused unless ``overwrite``. The
    checkpoint records the images' size, and one made on images of another size (resized since) is refused.
    ``plan``: ``plan_keypoints``' answer for these arguments, if the caller has it (it opens every image).

    Returns a summary: images, done_before (resumed), joints_found (share of the 18 x images joints present),
    no_person (the person images whose pose shows no person, ``generator.pose.shows_person``: what `vmarket check`
    counts), person_images (junk and distractors left out), seconds, images_per_s, outputs.
    """
    if batch < 1:
        raise UserError(f"--batch {batch}: must be 1 or more")
    plan = plan or plan_keypoints(root, out, overwrite, fmt)
    groups = plan.groups
    records = [r for recs in groups.values() for r in recs]
    done: dict[Path, dict[str, np.ndarray]] = {}
    for path in groups:
        done[path] = _read_partial(partial_path(path), estimator.name, plan.size)
    todo = [(path, r) for path, recs in groups.items() for r in recs if r.keypoint_name not in done[path]]
    before = len(records) - len(todo)
    start = time.time()
    bar = progress_bar(desc="keypoints", unit="img", enabled=progress, total=len(records), initial=before,
                       mininterval=0.5)
    for lo in range(0, len(todo), batch):
        chunk = todo[lo:lo + batch]
        rcv = np.asarray(estimator([load_image(r.path) for _, r in chunk]))
        if rcv.shape != (len(chunk), NUM_JOINTS, 3):
            raise ValueError(f"estimator {estimator.name} returned shape {rcv.shape}, not ({len(chunk)}, 18, 3)")
        new: dict[Path, list[str]] = {}
        for (path, r), pose in zip(chunk, rcv, strict=True):
            yx = rcv_to_yx(pose)
            done[path][r.keypoint_name] = yx
            new.setdefault(path, []).append(format_keypoints_row(r.keypoint_name, yx))
        for path, lines in new.items():  # the checkpoint starts with the first batch: a refusal before it leaves none
            meta = {"estimator": estimator.name, "csv": path.name, "size": list(plan.size or ())}
            head = [] if partial_path(path).exists() else [json.dumps(meta)]
            _append(partial_path(path), head + lines)
        bar.update(len(chunk))
    bar.close()
    seconds = time.time() - start
    for path, recs in groups.items():
        rows = [format_keypoints_row(r.keypoint_name, done[path][r.keypoint_name]) for r in recs]
        atomic_write_text(path, "\n".join([HEADER, *rows]) + "\n")
    for path in groups:
        partial_path(path).unlink(missing_ok=True)
    found = np.array([(done[p][r.keypoint_name] >= 0).all(axis=1).sum() for p, recs in groups.items() for r in recs])
    people = [done[p][r.keypoint_name] for p, recs in groups.items() for r in recs if r.is_person]
    shown = shows_person(np.stack([yx_to_rcv(yx) for yx in people])) if people else np.zeros(0, bool)
    return {
        "images": len(records), "done_before": before, "estimated_now": len(todo),
        "joints_found": float(found.sum() / (NUM_JOINTS * len(records))),
        "no_person": int((~shown).sum()), "person_images": len(people),
        "seconds": seconds, "images_per_s": len(todo) / seconds if seconds > 0 else 0.0,
        "outputs": [str(p) for p in groups],
    }
