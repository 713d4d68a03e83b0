"""Tiny seeded configs for CPU tests (a few seconds per training run)."""
import json

from generator.config import load_config
from generator.simmarket.simulate import simulate
from generator.training import stage1
from generator.training.pose_ae import PoseConfig
from generator.training.stage1 import Stage1Config


def tiny_stage1(root, **overrides) -> Stage1Config:
    sets = [f"data.root={root}", "data.size=[64,32]", "data.workers=0", "data.heatmap_radius=2", "data.mask_radius=4",
            "model.channels=8", "model.enc_levels=2", "model.dec_levels=2", "model.roi_size=8", "model.bottleneck=16",
            "model.disc_channels=8", "model.injection=linear", "train.batch=4", "train.lr=1.0e-3", "train.device=cpu",
            "train.log_every=5", "train.sample_every=1000", "train.snapshot_every=1000", "train.grid_size=4"]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(Stage1Config, None, sets)


def tiny_pose(root, **overrides) -> PoseConfig:
    sets = [f"data.root={root}", "data.size=[64,32]", "model.width=32", "model.blocks=2", "train.batch=16",
            "train.lr=1.0e-3", "train.device=cpu", "train.log_every=10", "train.snapshot_every=1000"]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(PoseConfig, None, sets)


def tiny_stage2(stage1_run, pose_run, **overrides):
    from generator.training.stage2 import Stage2Config

    sets = [f"stage1_run={stage1_run}", f"pose_run={pose_run}", "model.width_fg=32", "model.width_bg=32",
            "model.width_pose=32", "model.blocks=2", "model.critic_width=32", "train.batch=16", "train.critic_steps=2",
            "train.lr=1.0e-3", "train.log_every=5", "train.snapshot_every=1000", "train.holdout=0.2"]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(Stage2Config, None, sets)


def stage1_resumed_and_whole(tmp_path, **overrides) -> tuple[dict, dict, list[dict]]:
    """A tiny stage I (6 steps on a 6-identity SimMarket, ``overrides`` on top) trained twice: stopped at step 3 and
    resumed, and in one go. (the resumed run's result, the whole run's result, the whole run's metric records)."""
    simulate(tmp_path / "sim", 6, seed=2, size=(64, 32), progress=False)
    cfg = tiny_stage1(tmp_path / "sim", **{"train.steps": 6, "train.log_every": 2, "train.snapshot_every": 3,
                                           **overrides})
    stage1.train(cfg, tmp_path / "half", progress=False, stop_after=3)
    resumed = stage1.train(cfg, tmp_path / "half", resume=True, progress=False)
    whole = stage1.train(cfg, tmp_path / "whole", progress=False)
    records = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    return resumed, whole, records
