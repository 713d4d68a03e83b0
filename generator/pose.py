"""Pose geometry of the official code (Sec. 3.1, pose branch and foreground ROIs).

All functions take ``rcv``: an (18, 3) array of (row, col, visible) in COCO-18
order, missing joints (0, 0, 0), and are vectorised with numpy so that data
loading costs well under a millisecond per image.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

COCO18 = (
    "nose", "neck", "Rsho", "Relb", "Rwri", "Lsho", "Lelb", "Lwri", "Rhip",
    "Rkne", "Rank", "Lhip", "Lkne", "Lank", "Leye", "Reye", "Lear", "Rear",
)
# joint index -> the index of its mirror image (left <-> right)
FLIP_PERM = np.array([0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16])

# 23 limbs of the coarse pose mask: the COCO skeleton plus neck-ears, hip-hip and hip-shoulder
# cross links (1-based pairs in the official code, 0-based here)
LIMBS = np.array([
    [1, 2], [1, 5], [2, 3], [3, 4], [5, 6], [6, 7], [1, 8], [8, 9], [9, 10], [1, 11], [11, 12],
    [12, 13], [1, 0], [0, 14], [14, 16], [0, 15], [15, 17], [1, 16], [1, 17], [8, 11], [11, 5],
    [8, 2], [16, 17],
])

BODY_ROI_NAMES = ("head", "upper_body", "lower_body", "left_arm", "right_arm", "left_leg", "right_leg")
BODY_ROI_JOINTS = (
    (0, 1, 2, 5, 14, 15, 16, 17),
    (2, 3, 4, 5, 6, 7, 8, 11),
    (8, 9, 10, 11, 12, 13),
    (5, 6, 7),
    (2, 3, 4),
    (11, 12, 13),
    (8, 9, 10),
)
_ROI_MEMBERS = np.zeros((len(BODY_ROI_JOINTS), 18), dtype=bool)
for _i, _joints in enumerate(BODY_ROI_JOINTS):
    _ROI_MEMBERS[_i, list(_joints)] = True
ROI_MARGIN = 6  # px around the joints of a part with two or more joints
ROI_MARGIN_SINGLE = 10  # px around a part with a single present joint
# A pose shows a person when its coarse pose mask can cover one: at least this many visible joints, two of them
# joined by a limb, and a shoulder or a hip among them. With none or one joint the mask is empty; two or three draw
# at most a few short limbs (a forearm, a neck and ears), and a head alone (nose, eyes, ears) is a face: fragments
# that, pasted over another image or rendered as an identity's foreground, leave an image that shows someone else or
# no one. A shoulder or hip anchors the mask on the torso, where the upper- and lower-body ROIs are. SimMarket's
# person images have 7 visible joints or more.
MIN_PERSON_JOINTS = 4
TORSO_JOINTS = (2, 5, 8, 11)  # right / left shoulder, right / left hip (COCO-18)
NO_PERSON = (f"fewer than {MIN_PERSON_JOINTS} visible joints, none joined by a limb, or no shoulder or hip"
             )  # why, in messages


def pose_heatmaps(rcv: np.ndarray, height: int, width: int, radius: int = 4, mode: str = "disk",
                  sigma: float | None = None) -> np.ndarray:
    """(18, H, W) float32 pose maps: a solid disk of ``radius`` px at each visible joint.

    ``mode="gaussian"`` gives exp(-d^2 / 2 sigma^2) (sigma defaults to ``radius``) instead.
    Joint coordinates are truncated to integers first, as in the official code.
    """
    rcv = np.asarray(rcv)
    rows = rcv[:, 0].astype(np.int64)[:, None, None]
    cols = rcv[:, 1].astype(np.int64)[:, None, None]
    d2 = (np.arange(height)[None, :, None] - rows) ** 2 + (np.arange(width)[None, None, :] - cols) ** 2
    if mode == "disk":
        maps = (d2 <= radius * radius).astype(np.float32)
    elif mode == "gaussian":
        s = float(sigma if sigma is not None else radius)
        maps = np.exp(-d2 / (2 * s * s)).astype(np.float32)
    else:
        raise ValueError(f"unknown heatmap mode {mode!r}; use 'disk' or 'gaussian'")
    maps *= (rcv[:, 2] > 0).astype(np.float32)[:, None, None]
    return maps


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def limb_points(rcv: np.ndarray, radius: int) -> np.ndarray:
    """(M, 2) int (row, col) disk centres along every limb whose two joints are visible.

    Both joints, plus ``int(length / radius) - 1`` evenly spaced interior points.
    """
    rcv = np.asarray(rcv, dtype=np.float64)
    vis = rcv[:, 2] > 0
    limbs = LIMBS[vis[LIMBS[:, 0]] & vis[LIMBS[:, 1]]]
    if len(limbs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    p0 = rcv[limbs[:, 0], :2]
    p1 = rcv[limbs[:, 1], :2]
    n = (np.sqrt(((p1 - p0) ** 2).sum(1)) / radius).astype(np.int64)  # segments per limb
    n = np.maximum(n, 1)
    limb_idx = np.repeat(np.arange(len(limbs)), n + 1)
    step = np.concatenate([np.arange(k + 1) for k in n])  # 0..n per limb: both ends and the interior
    t = step / n[limb_idx]
    pts = p0[limb_idx] + (p1 - p0)[limb_idx] * t[:, None]
    return pts.astype(np.int64)  # truncation, as the official int(r), int(c)


def pose_mask(rcv: np.ndarray, height: int, width: int, radius: int = 7, closing: int = 5) -> np.ndarray:
    """(H, W) float32 coarse body mask: disks of ``radius`` along the 23 limbs, then a ``closing`` x ``closing``
    closing."""
    pts = limb_points(rcv, radius)
    size = 2 * radius + 1
    # a canvas with a disk's width of margin on every side; a disk centred at (r, c) covers
    # canvas[r:r+size, c:c+size], and points more than a radius outside the image touch nothing
    canvas = np.zeros((height + 2 * size, width + 2 * size), dtype=bool)
    disk = _disk(radius)
    for r, c in np.unique(pts, axis=0) + size - radius:
        if 0 <= r < height + size and 0 <= c < width + size:
            canvas[r:r + size, c:c + size] |= disk
    mask = canvas[size:size + height, size:size + width]
    if closing > 1:
        # 'nearest' borders: a window past the edge sees only pixels it already covers, as skimage's reflect did
        mask = ndimage.maximum_filter(mask, size=closing, mode="nearest")
        mask = ndimage.minimum_filter(mask, size=closing, mode="nearest")
    return mask.astype(np.float32)


def body_rois(rcv: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The 7 body ROIs: (7, 4) float32 boxes (y1, x1, y2, x2) in pixels and (7,) float32 visibility.

    A box spans the present joints of its index set +/-6 px (+/-10 px for a single
    joint), clipped to the image; a part with no present joint gets visibility 0 and box (0, 0, 1, 1).
    """
    rcv = np.asarray(rcv, dtype=np.float32)
    present = _ROI_MEMBERS & (rcv[:, 2] > 0)[None, :]  # (7, 18)
    count = present.sum(1)
    rows = np.broadcast_to(rcv[None, :, 0], present.shape)
    cols = np.broadcast_to(rcv[None, :, 1], present.shape)
    y1 = np.where(present, rows, np.inf).min(1)
    x1 = np.where(present, cols, np.inf).min(1)
    y2 = np.where(present, rows, -np.inf).max(1)
    x2 = np.where(present, cols, -np.inf).max(1)
    margin = np.where(count > 1, ROI_MARGIN, ROI_MARGIN_SINGLE)
    boxes = np.stack([
        np.clip(y1 - margin, 0, height - 1), np.clip(x1 - margin, 0, width - 1),
        np.clip(y2 + margin, 0, height - 1), np.clip(x2 + margin, 0, width - 1),
    ], axis=1)
    visible = count > 0
    boxes[~visible] = (0, 0, 1, 1)
    return boxes.astype(np.float32), visible.astype(np.float32)


def flip_rcv(rcv: np.ndarray, width: int) -> np.ndarray:
    """Mirror a pose for a horizontally flipped image: col -> W-1-col, and left and right joints swap."""
    rcv = np.asarray(rcv, dtype=np.float32).copy()
    vis = rcv[:, 2] > 0
    rcv[vis, 1] = width - 1 - rcv[vis, 1]
    return rcv[FLIP_PERM]


def shows_person(rcv: np.ndarray) -> np.ndarray:
    """(...,) bool of (..., 18, 3) poses: at least MIN_PERSON_JOINTS visible joints, two of them joined by a limb of
    the pose mask, and a shoulder or hip; a pose that fails shows no person the mask could cut out or the decoder
    could draw."""
    visible = np.asarray(rcv)[..., 2] > 0
    limb = (visible[..., LIMBS[:, 0]] & visible[..., LIMBS[:, 1]]).any(-1)
    torso = visible[..., list(TORSO_JOINTS)].any(-1)
    return (visible.sum(-1) >= MIN_PERSON_JOINTS) & limb & torso


def no_person_reason(rcv: np.ndarray) -> str:
    """Why an (18, 3) pose shows no person ("" when it shows one), for the lists of skipped images."""
    joints = int((np.asarray(rcv)[:, 2] > 0).sum())
    if shows_person(rcv):
        return ""
    if joints == 0:
        return "no visible joint"
    if joints < MIN_PERSON_JOINTS:
        return f"{joints} visible joints, fewer than {MIN_PERSON_JOINTS}"
    visible = np.asarray(rcv)[:, 2] > 0
    if not (visible[LIMBS[:, 0]] & visible[LIMBS[:, 1]]).any():
        return f"{joints} visible joints, no two joined by a limb"
    return f"{joints} visible joints, no shoulder or hip"
