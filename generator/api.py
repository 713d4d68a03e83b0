"""Inference API over trained checkpoints (used by augment and the evaluation).

``DisentangledModel.load(stage1_run, pose_run=None)`` gives ``encode(images, keypoints)``
-> :class:`Factors` (fg, bg, pose) and ``decode(fg, bg, pose)``, plus helpers that
swap a factor between two batches and interpolate between two embeddings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from generator.config import from_dict
from generator.keypoints import pose_vector_to_rcv, rcv_to_pose_vector
from generator.pose import body_rois, pose_heatmaps, pose_mask
from generator.runs import load_checkpoint


@dataclass
class Factors:
    fg: torch.Tensor  # (B, 224) foreground embedding
    bg: torch.Tensor  # (B, 128) background embedding
    keypoints: torch.Tensor  # (B, 18, 3) pose as (row, col, visible)
    pose: torch.Tensor | None = None  # (B, 32) pose embedding, when a pose autoencoder is loaded

    def __len__(self) -> int:
        return len(self.fg)


def _snapshot_path(path) -> Path:
    path = Path(path)
    return path / "snapshot.pt" if path.is_dir() else path


class DisentangledModel:
    def __init__(self, generator, size, heatmap_radius: int, mask_radius: int, pose_ae=None, device="cpu"):
        self.G = generator.eval().to(device)
        self.pose_ae = pose_ae.eval().to(device) if pose_ae is not None else None
        self.size, self.heatmap_radius, self.mask_radius = tuple(size), heatmap_radius, mask_radius
        self.device = torch.device(device)

    @classmethod
    def load(cls, stage1: str | os.PathLike, pose: str | os.PathLike | None = None, device: str = "cpu") -> "DisentangledModel":
        """From a stage-I run directory or snapshot file, and optionally a pose-AE run."""
        from generator.train_stage1 import Stage1Config, build_generator

        snap = load_checkpoint(_snapshot_path(stage1))
        cfg = from_dict(Stage1Config, snap["config"], str(_snapshot_path(stage1)))
        G = build_generator(cfg.model, cfg.data.size)
        G.load_state_dict({k: v.float() for k, v in snap["G"].items()})
        pose_ae = None
        if pose is not None:
            from generator.train_pose import PoseConfig, build_pose_ae

            psnap = load_checkpoint(_snapshot_path(pose))
            pose_ae = build_pose_ae(from_dict(PoseConfig, psnap["config"], str(_snapshot_path(pose))).model)
            pose_ae.load_state_dict({k: v.float() for k, v in psnap["model"].items()})
        return cls(G, cfg.data.size, cfg.data.heatmap_radius, cfg.data.mask_radius, pose_ae, device)

    # pose geometry on a batch of keypoints
    def pose_inputs(self, keypoints: torch.Tensor):
        """(B, 18, 3) keypoints -> pose maps (B,18,H,W), mask (B,1,H,W), ROI boxes (B,7,4), ROI visibility (B,7)."""
        h, w = self.size
        kps = keypoints.detach().cpu().numpy()
        maps = np.stack([pose_heatmaps(k, h, w, self.heatmap_radius) for k in kps])
        masks = np.stack([pose_mask(k, h, w, self.mask_radius) for k in kps])[:, None]
        rois = [body_rois(k, h, w) for k in kps]
        t = lambda a: torch.from_numpy(np.asarray(a)).to(self.device)  # noqa: E731
        return t(maps), t(masks), t(np.stack([r[0] for r in rois])), t(np.stack([r[1] for r in rois]))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, keypoints: torch.Tensor) -> Factors:
        """(B, 3, H, W) images in [-1, 1] and (B, 18, 3) keypoints -> factors."""
        _, mask, boxes, vis = self.pose_inputs(keypoints)
        fg, bg = self.G.encode(images.to(self.device), mask, boxes, vis)
        pose = None
        if self.pose_ae is not None:
            vec = torch.from_numpy(rcv_to_pose_vector(keypoints.cpu().numpy(), *self.size)).to(self.device)
            pose = self.pose_ae.encode(vec)
        return Factors(fg, bg, keypoints.to(self.device).float(), pose)

    @torch.no_grad()
    def keypoints_from_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 32) pose embeddings -> (B, 18, 3) keypoints; joints outside the image become invisible."""
        if self.pose_ae is None:
            raise ValueError("decoding a pose embedding needs a pose autoencoder: load one with pose=RUN")
        vec = self.pose_ae.decode(pose.to(self.device)).cpu().numpy()
        return torch.from_numpy(pose_vector_to_rcv(vec, *self.size)).to(self.device)

    @torch.no_grad()
    def decode(self, fg: torch.Tensor, bg: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1]; ``pose`` is (B, 18, 3) keypoints or (B, 32) pose embeddings."""
        keypoints = pose if pose.dim() == 3 else self.keypoints_from_pose(pose)
        maps, _, _, _ = self.pose_inputs(keypoints)
        return self.G.decode(fg.to(self.device), bg.to(self.device), maps)

    def render(self, f: Factors) -> torch.Tensor:
        return self.decode(f.fg, f.bg, f.keypoints)


def swap(a: Factors, b: Factors, factor: str) -> Factors:
    """``a`` with ``factor`` (fg | bg | pose) taken from ``b``."""
    if factor == "fg":
        return replace(a, fg=b.fg)
    if factor == "bg":
        return replace(a, bg=b.bg)
    if factor == "pose":
        return replace(a, keypoints=b.keypoints, pose=b.pose)
    raise ValueError(f"unknown factor {factor!r}; use fg, bg or pose")


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps, *a.shape) linear interpolation from embedding ``a`` to ``b`` (both ends included)."""
    t = torch.linspace(0, 1, steps, device=a.device).view(-1, *([1] * a.dim()))
    return (1 - t) * a[None] + t * b[None]
