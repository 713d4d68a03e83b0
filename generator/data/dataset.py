"""The person dataset the networks train on (Sec. 3.1 inputs), for real data (Market-1501, DukeMTMC-reID, MSMT17,
CUHK03: generator.data.layouts) and SimMarket alike.

Each item holds the image in [-1, 1], the 18 pose maps, the coarse pose mask,
the 7 body-ROI boxes with their visibilities, the 54-D pose vector, pid and camid.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from generator.data.keypoints import (
    joints_outside,
    leave_out_joints_outside,
    rcv_to_pose_vector,
    read_keypoints_csv,
    yx_to_rcv,
)
from generator.data.layouts import (
    layout_keypoint_file,
    read_layout,
    resolve_layout,
)
from generator.data.market import Record
from generator.errors import UserError
from generator.io import access_denied, progress_bar
from generator.pose import body_rois, flip_rcv, pose_heatmaps, pose_mask, shows_person

SIZE_FIX = "resize the images or set the size to match"
# what opening a broken image raises: a truncated or foreign file, and one of more pixels than Pillow decodes (a
# decompression bomb, or no image of a person)
IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError)


def image_error(e: Exception) -> str:
    """Why an image could not be opened, in words for a one-line error."""
    if isinstance(e, Image.DecompressionBombError):
        return "over Pillow's limit of pixels: far too large for an image of a person"
    return type(e).__name__


def load_image(path: str, size: tuple[int, int] | None = None, size_fix: str = SIZE_FIX) -> np.ndarray:
    """(H, W, 3) uint8; UserError naming the file if it is unreadable or not ``size`` (H, W) (``size_fix``: what
    to do then, in the words of the command that asked)."""
    try:
        with Image.open(path) as im:
            im.load()
            img = np.array(im.convert("RGB"))
    except IMAGE_ERRORS as e:
        if getattr(e, "errno", None) == errno.EACCES:
            raise UserError(access_denied(path, "read", "image")) from None
        raise UserError(f"{path}: unreadable image ({image_error(e)}); replace or remove the file") from None
    if size is not None and img.shape[:2] != tuple(size):
        raise UserError(
            f"{path}: image is {img.shape[0]}x{img.shape[1]} (HxW) but the data size is {size[0]}x{size[1]}; "
            + size_fix.format(h=img.shape[0], w=img.shape[1]))
    return img


def check_images(records: list[Record], size: tuple[int, int] | None = None, progress: bool = False,
                 desc: str = "checking images", size_fix: str = SIZE_FIX) -> None:
    """Decode every image once (UserError naming the first unreadable or wrong-sized file), so that a job refuses
    bad data before it writes anything, not when a worker first loads the file hours into training."""
    for r in progress_bar(records, desc=desc, unit="img", enabled=progress, mininterval=0.5):
        load_image(r.path, size, size_fix)


class PersonDataset(torch.utils.data.Dataset):
    """Records with keypoints -> training items; a flip mirrors the image and swaps left and right joints."""

    def __init__(self, records: list[Record], keypoints: dict[str, np.ndarray], size: tuple[int, int] = (128, 64),
                 flip_prob: float = 0.0, heatmap_radius: int = 4, heatmap_mode: str = "disk", mask_radius: int = 7,
                 keypoint_source: str = "the keypoint CSV", skip_missing_keypoints: bool = False,
                 source_of: dict | None = None):
        """``keypoints``: ``{image path or keypoint name (Record.keypoint_name): (18, 2) (y, x)}``, a path entry
        first (``person_dataset`` keys rows by path, so that same-named rows of two splits' CSVs never mix).

        Images without a keypoint row: junk (pid -1) and distractors (pid 0), never trained on, are left out
        (counted in ``skipped_unlabelled``); a person image is refused, or with ``skip_missing_keypoints`` left
        out and counted in ``skipped_missing``. ``source_of``: the keypoint CSV of each split, where they differ;
        joints outside the images are judged per CSV (``leave_out_joints_outside``)."""
        if not records:
            raise UserError("no images to load: the split is empty; check the dataset root")
        self.size = tuple(size)
        self.flip_prob = flip_prob
        self.heatmap_radius, self.heatmap_mode, self.mask_radius = heatmap_radius, heatmap_mode, mask_radius
        self.records, self.rcv = [], []
        self.skipped_unlabelled = self.skipped_missing = 0
        for r in records:
            yx = keypoints.get(r.path)
            if yx is None:
                yx = keypoints.get(r.keypoint_name)
            if yx is None:
                if not r.is_person:
                    self.skipped_unlabelled += 1
                    continue
                if skip_missing_keypoints:
                    self.skipped_missing += 1
                    continue
                load_image(r.path, self.size)  # a broken or stray file is named for what it is, not for its row
                raise UserError(
                    f"{r.path}: no keypoint row in {keypoint_source}; add one (use -1 for undetected joints), "
                    "remove the image, or pass --skip-missing-keypoints to leave such images out"
                )
            self.records.append(r)
            self.rcv.append(yx_to_rcv(yx))
        if not self.records:
            raise UserError(f"none of the {len(records)} images has a row in {keypoint_source}; "
                            "check that the keypoint CSV belongs to this dataset")
        self.joints_outside, self.rows_outside = 0, []
        by_source: dict[str, list[int]] = {}
        for i, r in enumerate(self.records):
            by_source.setdefault(str((source_of or {}).get(r.split, keypoint_source)), []).append(i)
        for source, idx in by_source.items():
            rcv = np.stack([self.rcv[i] for i in idx])
            try:
                n, rows = leave_out_joints_outside(rcv, [self.records[i].keypoint_name for i in idx], self.size,
                                                   source)
            except UserError:  # images of another size than the job's are the defect, not the CSV written for them
                first = int(np.flatnonzero(joints_outside(rcv, self.size).any(axis=1))[0])
                load_image(self.records[idx[first]].path, self.size)
                raise
            self.joints_outside += n
            self.rows_outside += rows
            for i, v in zip(idx, rcv, strict=True):
                self.rcv[i] = v

    def __len__(self) -> int:
        return len(self.records)

    def without_person(self) -> list[Record]:
        """The identity images (junk and distractors may show no one) whose pose shows no person
        (``generator.pose.shows_person``): never a person that cut-and-paste pastes or the builder renders."""
        shown = shows_person(np.stack(self.rcv))
        return [r for r, s in zip(self.records, shown, strict=True) if r.is_person and not s]

    def extend(self, other: "PersonDataset") -> None:
        """Append the images of ``other`` (built with the same size and radii), e.g. an unlabelled split."""
        mine = (self.size, self.heatmap_radius, self.heatmap_mode, self.mask_radius)
        if (other.size, other.heatmap_radius, other.heatmap_mode, other.mask_radius) != mine:
            raise ValueError("extend: the datasets differ in size or radii")
        self.records += other.records
        self.rcv += other.rcv
        self.skipped_unlabelled += other.skipped_unlabelled
        self.skipped_missing += other.skipped_missing
        self.joints_outside += other.joints_outside
        self.rows_outside += other.rows_outside

    def item(self, index: int, flip: bool = False) -> dict:
        r = self.records[index]
        h, w = self.size
        img = load_image(r.path, self.size)
        rcv = self.rcv[index]
        if flip:
            img = img[:, ::-1]
            rcv = flip_rcv(rcv, w)
        boxes, roi_vis = body_rois(rcv, h, w)
        return {
            # (3, H, W)
            "image": torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(127.5).sub_(1.0),
            # (18, H, W)
            "pose_maps": torch.from_numpy(pose_heatmaps(rcv, h, w, self.heatmap_radius, self.heatmap_mode)),
            "pose_mask": torch.from_numpy(pose_mask(rcv, h, w, self.mask_radius))[None],  # (1, H, W)
            "roi_boxes": torch.from_numpy(boxes),  # (7, 4) y1, x1, y2, x2 px
            "roi_visible": torch.from_numpy(roi_vis),  # (7,)
            "keypoints": torch.from_numpy(np.asarray(rcv, np.float32)),  # (18, 3) row, col, visible
            "pose_vector": torch.from_numpy(rcv_to_pose_vector(rcv, h, w)),  # (54,)
            "pid": r.pid,
            "camid": r.camid,
            "index": index,
        }

    def __getitem__(self, index) -> dict:
        if isinstance(index, tuple):  # (index, flip) from StepBatchSampler
            return self.item(int(index[0]), bool(index[1]))
        flip = self.flip_prob > 0 and bool(torch.rand(()) < self.flip_prob)
        return self.item(index, flip)


class StepBatchSampler(torch.utils.data.Sampler):
    """The batches of training steps ``start..end`` as lists of (index, flip), a pure function of (seed, step).

    The data order does not depend on how a run was interrupted, which is what
    makes a resumed run bit-identical to an uninterrupted one. Under DDP each
    rank takes its slice of the global batch.
    """

    def __init__(self, n: int, batch: int, seed: int, flip_prob: float, start: int, end: int, rank: int = 0,
                 world: int = 1):
        self.n, self.batch, self.seed, self.flip_prob = n, batch, seed, flip_prob
        self.start, self.end, self.rank, self.world = start, end, rank, world
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            self._perm_cache = {epoch: perm}
        return self._perm_cache[epoch]

    def batch_at(self, step: int) -> list[tuple[int, bool]]:
        g = self.batch * self.world
        pos = step * g
        idx = []
        while len(idx) < g:
            epoch, off = divmod(pos, self.n)
            take = min(g - len(idx), self.n - off)
            idx.extend(self._perm(epoch)[off:off + take].tolist())
            pos += take
        flips = torch.rand(g, generator=torch.Generator().manual_seed(self.seed * 7919 + step + 1)) < self.flip_prob
        lo = self.rank * self.batch
        return [(i, bool(f)) for i, f in zip(idx[lo:lo + self.batch], flips[lo:lo + self.batch].tolist(), strict=True)]

    def __iter__(self):
        for step in range(self.start, self.end):
            yield self.batch_at(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def _refuse_prefixed_rows(table: dict, missing: list[Record], source: Path) -> None:
    """A row that names a ``missing`` image under a folder ('bounding_box_train/NAME', a CSV written with paths) is
    the CSV's defect, not a missing row: refused, even where images without a row may be left out."""
    tails = {k.split("/", i)[i]: k for k in table if isinstance(k, str) for i in range(1, k.count("/") + 1)}
    r = next((r for r in missing if r.keypoint_name in tails), None)
    if r is not None:
        raise UserError(f"{source}: the row {tails[r.keypoint_name]!r} names {r.keypoint_name!r} under a folder; name "
                        f"each row by the image's file name as the dataset's keypoint CSVs do ({r.keypoint_name!r})")


def person_dataset(root: str | os.PathLike, splits=("train",), size: tuple[int, int] = (128, 64),
                   keypoints_csv: str | os.PathLike | None = None, keep_junk: bool = False, fmt: str = "auto",
                   fmt_key: str | None = None, **kwargs) -> PersonDataset:
    """A PersonDataset over the given splits of a re-ID dataset root (real or SimMarket) in layout ``fmt`` (auto:
    detected; generator.data.layouts). Keypoints: each split's CSV of the layout, or ``keypoints_csv`` for all."""
    layout = resolve_layout(root, fmt, fmt_key)
    records = read_layout(layout, splits, keep_junk=keep_junk)
    if keypoints_csv is not None:
        source_of = {s: Path(keypoints_csv) for s in splits}
    else:
        source_of = {s: layout_keypoint_file(layout, s) for s in splits}
    sources = sorted(set(source_of.values()))
    tables = {src: read_keypoints_csv(src, root) for src in sources}
    keypoints: dict[str, np.ndarray] = {}
    for r in records:  # each image's row from its own split's CSV
        yx = tables[source_of[r.split]].get(r.keypoint_name)
        if yx is not None:
            keypoints[r.path] = yx
    for src in sources:
        missing = [r for r in records if source_of[r.split] == src and r.is_person and r.path not in keypoints]
        if missing:
            _refuse_prefixed_rows(tables[src], missing, src)
        other = next(((r, o) for r in missing for o in sources if o != src and r.keypoint_name in tables[o]), None)
        if other is not None and not kwargs.get("skip_missing_keypoints"):
            r, o = other  # an image filed under another split than the CSV that annotates it
            raise UserError(f"{r.path}: no keypoint row in {src}, the CSV of its split ({r.split}), but {o} has a row "
                            f"of that name: rows are matched per split; move the image to the folder of that CSV's "
                            f"split, or add its row to {src}")
    return PersonDataset(records, keypoints, size, keypoint_source=" or ".join(str(s) for s in sources),
                         source_of=source_of, **kwargs)
