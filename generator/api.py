"""Inference API over trained checkpoints (used by augment and the evaluation).

``DisentangledModel.load(stage1_run, pose_run=None)`` gives ``encode(images, keypoints)``
-> :class:`Factors` (fg, bg, pose) and ``decode(fg, bg, pose)``, plus helpers that
swap a factor between two batches and interpolate between two embeddings.
``Sampler.load(stage2_run)`` samples embeddings from the stage-II mappings, and
``real_embeddings`` encodes a training split into the real embedding banks.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from generator.config import DataConfig, from_dict
from generator.data.dataset import person_dataset
from generator.data.keypoints import pose_vector_to_rcv, rcv_to_pose_vector
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import load_checkpoint, progress_bar
from generator.models.pose_ae import PoseModelConfig, build_pose_ae
from generator.models.stage1 import Stage1ModelConfig, build_generator
from generator.models.stage2 import FACTORS, Stage2ModelConfig, build_mapping, factor_settings, mapping_width
from generator.pose import body_rois, pose_heatmaps, pose_mask


@dataclass
class Factors:
    fg: torch.Tensor  # (B, 224) foreground embedding
    bg: torch.Tensor  # (B, 128) background embedding
    keypoints: torch.Tensor  # (B, 18, 3) pose as (row, col, visible)
    pose: torch.Tensor | None = None  # (B, 32) pose embedding, when a pose autoencoder is loaded

    def __len__(self) -> int:
        return len(self.fg)


KINDS = {"stage1": "stage-I", "pose": "pose-AE", "stage2": "stage-II"}  # a snapshot's ``kind`` -> its name


def run_kind(snap: dict) -> str | None:
    """Which kind of run a checkpoint is the snapshot of: stage-I, pose-AE or stage-II (its ``kind``; for a snapshot
    written without one, guessed from its config); None for a checkpoint that is no run's snapshot (one without a
    config, such as a run's ``state.pt``)."""
    config = snap.get("config")
    if not isinstance(config, dict):
        return None
    if snap.get("kind") in KINDS:
        return KINDS[snap["kind"]]
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return "stage-II" if "stage1_run" in config else "stage-I" if "enc_levels" in model else "pose-AE"


def checked_snapshot(path, kind: str) -> tuple[str, dict]:
    """The snapshot of the ``kind`` run (stage-I, pose-AE, stage-II) at ``path`` (its directory or snapshot file),
    and where it lies; a checkpoint of another kind, or no run's snapshot (a state.pt, say), is refused."""
    where = str(snapshot_path(path))
    snap = load_checkpoint(where)
    found = run_kind(snap)
    if found is None:
        raise UserError(f"{where}: not the snapshot of a run (no config in it; a state.pt, say); pass a {kind} run "
                        f"directory or its snapshot.pt")
    if found != kind:
        raise UserError(f"{where}: a {found} checkpoint, where a {kind} run is needed; pass a {kind} run directory "
                        f"or snapshot")
    return where, snap


@contextmanager
def fitted(where: str, kind: str):
    """Building a ``kind`` model from the snapshot ``where``: a snapshot whose config or weights do not fit this
    version's models (another version wrote it, or it was edited) is one line naming it, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as e:
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{where}: its config or weights do not fit this version's {kind} model ({why}); train the "
                        f"{kind} run again with this version, or load it with the version that wrote it") from None


def snapshot_path(path) -> Path:
    """The snapshot of a run: ``path/snapshot.pt`` for a run directory, ``path`` itself for a snapshot file."""
    path = Path(path)
    return path / "snapshot.pt" if path.is_dir() else path


class DisentangledModel:
    def __init__(self, generator, size, heatmap_radius: int, mask_radius: int, pose_ae=None, device="cpu"):
        self.device = resolve_device(str(device))
        self.G = generator.eval().to(self.device)
        self.pose_ae = pose_ae.eval().to(self.device) if pose_ae is not None else None
        self.size, self.heatmap_radius, self.mask_radius = tuple(size), heatmap_radius, mask_radius
        self.data = DataConfig(size=list(size), heatmap_radius=heatmap_radius, mask_radius=mask_radius)

    @classmethod
    def load(cls, stage1: str | os.PathLike, pose: str | os.PathLike | None = None,
             device: str = "cpu") -> "DisentangledModel":
        """From a stage-I run directory or snapshot file, and optionally a pose-AE run."""
        where, snap = checked_snapshot(stage1, "stage-I")
        # only the model and data sections are needed for inference; the training section stays with the run
        with fitted(where, "stage-I"):
            model_cfg = from_dict(Stage1ModelConfig, snap["config"]["model"], f"{where}: model")
            data = from_dict(DataConfig, snap["config"]["data"], f"{where}: data")
            G = build_generator(model_cfg, data.size)
            G.load_state_dict({k: v.float() for k, v in snap["G"].items()})
        pose_ae = None
        if pose is not None:
            pwhere, psnap = checked_snapshot(pose, "pose-AE")
            with fitted(pwhere, "pose-AE"):
                pose_ae = build_pose_ae(from_dict(PoseModelConfig, psnap["config"]["model"], f"{pwhere}: model"))
                pose_ae.load_state_dict({k: v.float() for k, v in psnap["model"].items()})
        model = cls(G, data.size, data.heatmap_radius, data.mask_radius, pose_ae, device)
        model.data = data  # the data section the model trained with
        return model

    # pose geometry on a batch of keypoints
    def pose_inputs(self, keypoints: torch.Tensor):
        """(B, 18, 3) keypoints -> pose maps (B,18,H,W), mask (B,1,H,W), ROI boxes (B,7,4), ROI visibility (B,7)."""
        h, w = self.size
        kps = keypoints.detach().cpu().numpy()
        maps = np.stack([pose_heatmaps(k, h, w, self.heatmap_radius) for k in kps])
        masks = np.stack([pose_mask(k, h, w, self.mask_radius) for k in kps])[:, None]
        rois = [body_rois(k, h, w) for k in kps]
        # a one-line converter reads better inline than as a def (E731 allowed)
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


class Sampler:
    """Sampling embeddings from trained stage-II mappings: ``sample(factor, n, seed)``."""

    def __init__(self, nets: dict, z_std: float, dims: dict, device="cpu"):
        self.nets = {f: n.eval().to(device) for f, n in nets.items()}
        self.z_std, self.dims, self.device = z_std, dims, torch.device(device)

    @classmethod
    def load(cls, run, device="cpu") -> "Sampler":
        where, snap = checked_snapshot(run, "stage-II")
        nets = {}
        with fitted(where, "stage-II"):
            for f in FACTORS:
                m = from_dict(Stage2ModelConfig, factor_settings(snap["config"], f)["model"], f"{where}: model")
                net = build_mapping(snap["dims"][f], mapping_width(m, f), m.blocks, m.gaussian_start, m.z_std)
                net.load_state_dict({k: v.float() for k, v in snap["nets"][f].items()})
                nets[f] = net
        return cls(nets, m.z_std, snap["dims"], device)

    @torch.no_grad()
    def sample(self, factor: str, n: int, seed: int) -> torch.Tensor:
        """(n, dim) embeddings of ``factor``; the same seed gives the same samples."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.dims[factor], generator=g) * self.z_std
        return self.nets[factor](z.to(self.device))

    @torch.no_grad()
    def sample_z(self, factor: str, z: torch.Tensor) -> torch.Tensor:
        return self.nets[factor](z.to(self.device))


@torch.no_grad()
def real_embeddings(stage1_run, pose_run, data_root=None, batch: int = 64,
                    progress: bool = True, unlabelled_roots=(), device="cpu") -> dict[str, torch.Tensor]:
    """Encode the training split with the frozen stage I and pose AE (on ``device``; the embeddings come back on the
    CPU): {fg, bg, pose, keypoints, pid}. The training splits of ``unlabelled_roots`` (other people, in any
    supported layout) are encoded after it, with pid -1: their identities are never read."""
    model = DisentangledModel.load(stage1_run, pose=pose_run, device=device)
    root = data_root or model.data.root  # the snapshot's own (stage1_run may be a snapshot file)
    fmt = "auto" if data_root else model.data.format  # another root: its own layout, detected
    kw = {"size": model.size, "heatmap_radius": model.heatmap_radius, "mask_radius": model.mask_radius,
          "skip_missing_keypoints": model.data.skip_missing_keypoints}
    ds = person_dataset(root, ("train",), **kw, fmt=fmt)
    labelled = len(ds)
    for extra in unlabelled_roots:
        ds.extend(person_dataset(extra, ("train",), **kw, fmt="auto", fmt_key="unlabelled_roots"))
    out: dict[str, list] = {"fg": [], "bg": [], "pose": [], "keypoints": [], "pid": []}
    for s in progress_bar(range(0, len(ds), batch), desc="embedding", unit="batch", enabled=progress, mininterval=0.1):
        b = torch.utils.data.default_collate([ds.item(i) for i in range(s, min(s + batch, len(ds)))])
        f = model.encode(b["image"], b["keypoints"])
        for k, v in (("fg", f.fg), ("bg", f.bg), ("pose", f.pose), ("keypoints", f.keypoints), ("pid", b["pid"])):
            out[k].append(v.cpu())
    emb = {k: torch.cat(v) for k, v in out.items()}
    emb["pid"][labelled:] = -1
    return emb
