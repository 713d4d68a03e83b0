"""Pose autoencoder training (Sec. 3.1, pose branch): 54-D keypoint vector <-> 32-D embedding, 20 x MSE.

The pose AE trains on keypoints alone (no images), so it is quick on a CPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from generator.config import DataConfig, check_ranges, save_config, to_dict
from generator.data.keypoints import leave_out_joints_outside, rcv_to_pose_vector, read_keypoints_csv, yx_to_rcv
from generator.data.layouts import layout_keypoint_file, read_layout, resolve_layout
from generator.errors import UserError
from generator.io import atomic_save, progress_bar
from generator.models.pose_ae import PoseModelConfig, build_pose_ae
from generator.pose import flip_rcv
from generator.training.runs import RunLog, capture_state, check_resume, prepare_data, restore_state
from generator.training.runtime import barrier, cleanup, setup_runtime, time_up, unwrap, wrap_ddp


@dataclass
class PoseTrainConfig:
    steps: int = 120000
    batch: int = 16
    lr: float = 2e-5
    beta1: float = 0.5
    beta2: float = 0.999
    lr_halve_every: int = 50000
    mse_weight: float = 20.0  # weight of the reconstruction MSE
    min_visible: int = 4  # skip poses with fewer visible joints (detector failures)
    seed: int = 0
    device: str = "auto"
    log_every: int = 200
    snapshot_every: int = 5000

    def __post_init__(self):
        check_ranges(self, positive=("steps", "batch", "lr", "lr_halve_every", "log_every", "snapshot_every"),
                     non_negative=("min_visible", "mse_weight"), below_one=("beta1", "beta2"))


@dataclass
class PoseConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: PoseModelConfig = field(default_factory=PoseModelConfig)
    train: PoseTrainConfig = field(default_factory=PoseTrainConfig)


def pose_vectors(root: Path, splits, size, min_visible: int = 4, flip: bool = True, fmt: str = "auto") -> torch.Tensor:
    """(N, 54) pose vectors of the split images (and their mirror images when ``flip``); ``fmt``: the dataset
    layout (generator.data.layouts)."""
    layout = resolve_layout(root, fmt, "data.format")
    records = read_layout(layout, tuple(splits))
    source_of = {s: layout_keypoint_file(layout, s) for s in splits}
    rows = []
    for src in sorted(set(source_of.values())):
        names = {r.keypoint_name for r in records if source_of[r.split] == src}  # the rows of this CSV's splits
        table = {name: yx_to_rcv(yx) for name, yx in read_keypoints_csv(src, root).items() if name in names}
        if not table:
            continue
        poses = np.stack(list(table.values()))
        leave_out_joints_outside(poses, list(table), size, src)
        for rcv in poses:
            if rcv[:, 2].sum() >= min_visible:
                rows.append(rcv)
                if flip:
                    rows.append(flip_rcv(rcv, size[1]))
    if not rows:
        raise UserError(f"{root}: no pose with at least {min_visible} visible joints in {', '.join(splits)}; "
                        f"check the keypoint files")
    return torch.from_numpy(rcv_to_pose_vector(np.stack(rows), *size))


def train(cfg: PoseConfig, run_dir: Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, deadline: float | None = None) -> dict:
    """Train the pose autoencoder; ``stop_after`` and ``deadline`` as in stage I's ``train``."""
    t = cfg.train
    rt = setup_runtime(t.device, "none", False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume(run_dir, cfg, "pose")
    log = RunLog(run_dir, enabled=rt.is_main)
    if rt.is_main:
        prepare_data(cfg.data, progress)
    barrier(rt)
    size = tuple(cfg.data.size)
    data = torch.cat([pose_vectors(Path(cfg.data.root), cfg.data.splits, size, t.min_visible, fmt=cfg.data.format)]
                     + [pose_vectors(Path(r), ("train",), size, t.min_visible) for r in cfg.data.unlabelled_roots]
                     ).to(rt.device)
    torch.manual_seed(t.seed)
    model = build_pose_ae(cfg.model).to(rt.device)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    start = 0
    state = restore_state(run_dir, {"model": model, "opt": opt}) if resume else None
    if rt.is_main:  # after the state is restored: a refused resume leaves the run's config as it was
        save_config(cfg, run_dir / "config.yaml")
    if state is not None:
        start = int(state["step"])
        log.truncate_after(start)
        log.line(f"resumed at step {start}" + (f"; {', '.join(state['dropped'])} restart from a packed state"
                                                if state.get("dropped") else ""))
    md = wrap_ddp(model, rt)
    end = t.steps if stop_after is None else min(t.steps, stop_after)
    sources = ", ".join(map(str, [cfg.data.root, *cfg.data.unlabelled_roots]))
    log.line(f"pose AE: {len(data)} poses from {sources}, device {rt.device}, world {rt.world_size}")
    bar = progress_bar(total=end, initial=start, desc="pose AE", unit="step", enabled=progress and rt.is_main)
    acc, n, t_last = 0.0, 0, time.time()
    for step in range(start, end):
        g = torch.Generator().manual_seed(t.seed * 7919 + step)  # the batch is a pure function of the step
        idx = torch.randint(len(data), (t.batch * rt.world_size,),
                            generator=g)[rt.rank * t.batch:(rt.rank + 1) * t.batch]
        x = data[idx.to(rt.device)]
        for group in opt.param_groups:
            group["lr"] = t.lr * 0.5 ** (step // t.lr_halve_every)
        recon, _ = md(x)
        loss = t.mse_weight * ((recon - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc, n = acc + float(loss.detach()), n + 1
        bar.update(1)
        done = step + 1
        if done % t.log_every == 0 or done == end:
            with torch.no_grad():
                ref = data[:2048].view(-1, 18, 3)
                r = model(data[:2048])[0].view(-1, 18, 3)
                vis = ref[..., 2] > 0.5
                vis_acc = float(((r[..., 2] > 0.5) == vis).float().mean())
                err = (r[..., :2] - ref[..., :2]).abs() * torch.tensor([size[0] / 2, size[1] / 2], device=ref.device)
                px = float(err[vis].norm(dim=-1).mean())  # joint error in pixels, visible joints
            rec = {"step": done, "loss": round(acc / n, 6), "visibility_acc": round(vis_acc, 4),
                   "joint_err_px": round(px, 3),
                   "steps_per_s": round(n / max(time.time() - t_last, 1e-9), 1)}
            log.metrics(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", px=f"{px:.2f}")
            acc, n, t_last = 0.0, 0, time.time()
        stop = done < end and time_up(deadline, rt)
        if rt.is_main and (done % t.snapshot_every == 0 or done == end or stop):
            m = unwrap(model)
            atomic_save({"kind": "pose", "config": to_dict(cfg), "step": done, "model": m.state_dict()},
                        run_dir / "snapshot.pt")
            atomic_save(capture_state({"model": m, "opt": opt}, kind="pose", step=done), run_dir / "state.pt")
        if stop:
            end = done
            break
    bar.close()
    barrier(rt)
    cleanup(rt)
    return {"step": end, "run_dir": str(run_dir), "model": model}
