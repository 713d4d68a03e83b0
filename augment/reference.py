"""Reference models for SimMarket: train stage I, the pose AE and stage II on the demo's data with a fixed seed,
evaluate them, and ship them as package data (fp16 weights, sha256, provenance) that the demo uses by default.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from augment.pipeline import StageTimer, generator_configs, simulate_data, train_generator


@dataclass
class ReferenceConfig:
    out: str = "outputs/reference"  # run directories of the reference training
    sim_ids: int = 200  # SimMarket identities (half train, half test): the demo's data
    sim_seed: int = 0
    gen_size: list[int] = field(default_factory=lambda: [64, 32])  # resolution the generator trains at
    stage1: str = "configs/reference/stage1.yaml"  # job configs; data and run paths are redirected under `out`
    pose: str = "configs/reference/pose.yaml"
    stage2: str = "configs/reference/stage2.yaml"
    set: list[str] = field(default_factory=list)  # overrides per job, e.g. "stage1:train.steps=300"
    eval_pairs: int = 200  # counterfactual swap pairs scored after stage I
    package: str = "generator/reference"  # where the shipped checkpoints and provenance.json are written
    figures: str = "docs"  # where the README figures are written ("" for none)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_reference(cfg: ReferenceConfig, progress: bool = True, log=print) -> Path:
    """Train and evaluate every stage under ``cfg.out``; resumable, finished stages are reused."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stage = StageTimer(out)
    gen_root = out / "data" / "sim-gen"
    commits = out / "commits.txt"  # the code each (re)start ran, for the provenance
    with open(commits, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {git_commit()}\n")
    stage("data", lambda: simulate_data(((gen_root, cfg.gen_size),), cfg.sim_ids, cfg.sim_seed, progress, log))
    s1cfg, pcfg, s2cfg = generator_configs(out, gen_root, cfg.gen_size, cfg.stage1, cfg.pose, cfg.stage2, cfg.set)
    train_generator(out, gen_root, s1cfg, pcfg, s2cfg, cfg.eval_pairs, stage, progress, log)
    return out
