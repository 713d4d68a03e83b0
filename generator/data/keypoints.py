"""Keypoint annotations: the ``name:keypoints_y:keypoints_x`` CSV and the 54-D pose vector.

The CSV is the format pose-transfer work on Market-1501 publishes: a header
``name:keypoints_y:keypoints_x``, then one row per image such as
``0002_c1s1_000451_03.jpg: [18, 30, ...]: [33, 33, ...]`` with 18 integers per
list in COCO-18 order and ``-1`` for a missing joint.

Inside the project a pose is ``rcv``: an (18, 3) array of (row, col, visible)
with a missing joint stored as (0, 0, 0), the official code's convention. The
pose autoencoder's 54-D vector is ``[r/H*2-1, c/W*2-1, v]`` per joint (Sec. 3.1).
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np

from generator.errors import UserError
from generator.io import access_denied, atomic_write_text

NUM_JOINTS = 18
HEADER = "name:keypoints_y:keypoints_x"
# more visible joints outside the images than this share of a CSV's (and than one row's worth): the CSV does not
# fit the images
OUTSIDE_SHARE = 0.01


def _parse_list(text: str, path, lineno: int) -> list[int]:
    try:
        values = json.loads(text.strip())
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != NUM_JOINTS or not all(isinstance(v, int) for v in values):
        raise UserError(
            f"{path}:{lineno}: expected a list of {NUM_JOINTS} integers such as [12, 20, ..., -1], "
            f"got {text.strip()[:60]!r}; "
            "fix the row (use -1 for a missing joint)"
        )
    return values


def read_keypoints_csv(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Read a keypoint CSV into ``{image name: (18, 2) int array of (y, x)}``, -1 where missing.

    Rows keep the file's order (dicts are ordered), so writing them back gives the same bytes. A file with a header
    and no rows is refused as such (``root``: the dataset it annotates, for the command that regenerates it), not
    left to look like a missing row for every image.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (spreadsheet exports write one) is dropped
    except OSError as e:
        if e.errno == errno.EACCES:
            raise UserError(access_denied(path, "read", "keypoint file")) from None
        raise UserError(f"{path}: cannot read keypoint file ({e.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); is this a keypoint CSV?") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise UserError(f"{path}: first line must be the header {HEADER!r}; is this a keypoint CSV?")
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise UserError(f"{path}:{lineno}: expected 'name: [y...]: [x...]', got {line[:60]!r}; "
                            f"fix or remove the row")
        name = parts[0].strip()
        ys = _parse_list(parts[1], path, lineno)
        xs = _parse_list(parts[2], path, lineno)
        if name in out:
            raise UserError(f"{path}:{lineno}: duplicate row for {name}; keep one")
        # kept exactly as written, so a round trip is byte-identical; a joint with
        # either coordinate -1 counts as missing, another negative one as outside the image (see yx_to_rcv)
        out[name] = np.stack([np.asarray(ys), np.asarray(xs)], axis=1).astype(np.int64)
    if not out:
        raise UserError(f"{path}: has a header and no rows; regenerate it with "
                        f"`vmarket keypoints --root {root or path.parent} --overwrite`")
    return out


def format_keypoints_row(name: str, yx: np.ndarray) -> str:
    yx = np.asarray(yx, dtype=np.int64)
    ys = ", ".join(str(int(v)) for v in yx[:, 0])
    xs = ", ".join(str(int(v)) for v in yx[:, 1])
    return f"{name}: [{ys}]: [{xs}]"


def write_keypoints_csv(path: str | os.PathLike, keypoints: dict[str, np.ndarray]) -> None:
    """Write ``{name: (18, 2) (y, x)}`` as a keypoint CSV, atomically (temp file, then rename)."""
    path = Path(path)
    lines = [HEADER] + [format_keypoints_row(n, yx) for n, yx in keypoints.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def yx_to_rcv(yx: np.ndarray) -> np.ndarray:
    """(18, 2) (y, x) with -1 missing -> (18, 3) float (row, col, visible), missing = (0, 0, 0)."""
    yx = np.asarray(yx)
    # -1 marks a missing joint; any other value is a place, one below 0 outside the image (``joints_outside``)
    visible = (yx != -1).all(axis=-1)
    rcv = np.zeros(yx.shape[:-1] + (3,), dtype=np.float32)
    rcv[..., :2] = np.where(visible[..., None], yx, 0)
    rcv[..., 2] = visible
    return rcv


def joints_outside(rcv: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., 18) the visible joints of ``rcv`` (..., 18, 3) that lie outside ``size`` (H, W) images."""
    h, w = size
    r, c = rcv[..., 0], rcv[..., 1]
    return (rcv[..., 2] > 0) & ((r < 0) | (c < 0) | (r >= h) | (c >= w))


def leave_out_joints_outside(rcv: np.ndarray, names: list[str], size: tuple[int, int], source) -> tuple[int, list[str]]:
    """Set the visible joints of ``rcv`` (N, 18, 3) that lie outside ``size`` (H, W) images to missing, in place;
    (how many, the ``names`` of their rows). A few are a CSV's rounding at the border or a stray detection. More
    than ``OUTSIDE_SHARE`` of the visible joints, and more than one row's worth, means the CSV (``source``) does not
    fit the images (written for another size, or its y and x lists swapped): refused, since every pose map, mask
    and body box would be wrong."""
    h, w = size
    visible = rcv[..., 2] > 0
    outside = joints_outside(rcv, size)
    n_out, n_visible = int(outside.sum()), int(visible.sum())
    if not n_out:
        return 0, []
    rows = np.flatnonzero(outside.any(axis=1))
    if n_out > max(OUTSIDE_SHARE * n_visible, NUM_JOINTS):
        raise UserError(
            f"{source}: {n_out} of {n_visible} visible joints lie outside the {h}x{w} (HxW) images (y from "
            f"{int(rcv[..., 0][visible].min())} to {int(rcv[..., 0][visible].max())}, x from "
            f"{int(rcv[..., 1][visible].min())} to {int(rcv[..., 1][visible].max())}; first row {names[rows[0]]}): "
            f"the CSV was written for images of another size or has its y and x lists swapped; write keypoints for "
            f"these images (`vmarket keypoints --root DATASET --overwrite`) or resize the images to the CSV's size")
    rcv[outside] = 0
    return n_out, [names[i] for i in rows]


def outside_note(joints: int, rows: list[str], shown: int = 5) -> str:
    """The report of joints ``leave_out_joints_outside`` left out: how many, in how many rows, the first rows."""
    more = " ..." if len(rows) > shown else ""
    return (f"{joints} joints outside the images left out as missing, in {len(rows)} rows "
            f"({', '.join(rows[:shown])}{more})")


def rcv_to_yx(rcv: np.ndarray) -> np.ndarray:
    """(18, 3) (row, col, visible) -> (18, 2) int (y, x) with -1 where not visible."""
    rcv = np.asarray(rcv)
    yx = np.rint(rcv[..., :2]).astype(np.int64)
    yx[rcv[..., 2] < 0.5] = -1
    return yx


def rcv_to_pose_vector(rcv: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., 18, 3) rcv -> (..., 54) pose vector ``[r/H*2-1, c/W*2-1, v]`` per joint."""
    rcv = np.asarray(rcv, dtype=np.float32)
    vec = np.empty_like(rcv)
    vec[..., 0] = rcv[..., 0] / height * 2 - 1
    vec[..., 1] = rcv[..., 1] / width * 2 - 1
    vec[..., 2] = rcv[..., 2]
    return vec.reshape(rcv.shape[:-2] + (NUM_JOINTS * 3,))


def pose_vector_to_rcv(vec: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., 54) pose vector -> (..., 18, 3) rcv; a joint with v < 0.5 or outside the image becomes (0, 0, 0)."""
    vec = np.asarray(vec, dtype=np.float32).reshape(np.shape(vec)[:-1] + (NUM_JOINTS, 3))
    rcv = np.empty_like(vec)
    rcv[..., 0] = (vec[..., 0] + 1) / 2 * height
    rcv[..., 1] = (vec[..., 1] + 1) / 2 * width
    inside = (rcv[..., 0] >= 0) & (rcv[..., 0] <= height - 1) & (rcv[..., 1] >= 0) & (rcv[..., 1] <= width - 1)
    visible = (vec[..., 2] >= 0.5) & inside
    rcv[..., 2] = visible
    rcv[~visible] = 0
    return rcv
