"""Train a torchreid baseline on a registered dataset and evaluate it with our fast exact metrics.

Checkpoints follow the project's run-directory rules: ``state.pt`` after every
epoch (model, optimiser, scheduler, epoch, optimiser steps, RNG) for resume; ``result.json`` at the end.
With a ``reid.mixed.Mix``, generated images join every batch of the real training data (``reid.mixed`` explains
how); the run records its mix, and a finished or half-done run is never reused for another mix or budget.
"""
from __future__ import annotations

import json
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from generator.config import ConfigValueError, check_ranges, check_size
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import atomic_save, atomic_write_text, load_checkpoint, read_json_object
from generator.training.runs import capture_state, restore_state
from reid.metrics import RankResult, evaluate_features
from reid.mixed import Mix, MixedLoader
from reid.torchreid_adapter import (
    CLASSIFIER,
    TRANSFORMS,
    build_datamanager,
    build_engine,
    build_model,
    image_reader,
    train_one_epoch,
)


def start_from(model: torch.nn.Module, state: dict) -> None:
    """Load the previous stage's weights (``state``, a state dict) into ``model``, the features only: never the
    identity classifier, whose classes are the previous training set's people, even when their count is the same."""
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape
                           and not k.startswith(CLASSIFIER)}, strict=False)


@dataclass
class ReidTrainConfig:
    model: str = "osnet_x0_25"  # torchreid model name (osnet_x0_25 on CPU; resnet50 / osnet_x1_0 on GPU)
    loss: Literal["softmax", "triplet"] = "softmax"
    size: tuple[int, int] = (128, 64)  # image height, width
    batch: int = 32
    epochs: int = 10
    steps_per_epoch: int = 0  # batches per epoch; 0: one pass over the training data
    lr: float = 0.0015
    # torchreid's train-time transforms: random_flip, random_crop, random_patch, color_jitter, random_erase
    # (generated images get the same ones, the flip excepted, from RNGs of their own; reid.mixed)
    transforms: list[str] = field(default_factory=lambda: ["random_flip"])
    workers: int = 2
    eval_every: int = 0  # > 0: also evaluate after every that many epochs (the learning curve; RNGs untouched)
    channels_last: bool = True  # NHWC weights: 1.40x faster osnet_x0_25 steps on 2 CPU cores (benchmarks/bench_reid.py)
    weights: str = ""  # local state-dict file to start from ('' = random init, nothing is downloaded)
    device: str = "auto"

    def __post_init__(self):
        if self.size is None:
            self.size = [128, 64]
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise ConfigValueError("transforms", f"{unknown[0]!r} is not one of torchreid's train transforms "
                                                 f"({', '.join(TRANSFORMS)})")
        if self.eval_every < 0:
            raise ConfigValueError("eval_every", f"{self.eval_every}: use 0 (evaluate at the end only) or a "
                                                 "number of epochs")
        if self.steps_per_epoch < 0:
            raise ConfigValueError("steps_per_epoch", f"{self.steps_per_epoch}: use 0 (one pass over the data) or "
                                                      "a batch count")
        check_ranges(self, positive=("batch", "epochs", "lr"), non_negative=("workers",))
        check_size(self, "size")


def train_sampler(loss: str) -> str:
    """torchreid's sampler for ``loss``: the triplet loss needs identity-balanced batches (P ids x K images)."""
    return "RandomIdentitySampler" if loss == "triplet" else "RandomSampler"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def extract_features(model, loader, device) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    model.eval()
    feats, pids, cams = [], [], []
    for data in loader:
        feats.append(model(data["img"].to(device)).float().cpu())
        pids.append(data["pid"].numpy())
        cams.append(data["camid"].numpy())
    return torch.cat(feats), np.concatenate(pids), np.concatenate(cams)


def evaluate_model(model, datamanager, test_set: str, device) -> RankResult:
    q = extract_features(model, datamanager.test_loader[test_set]["query"], device)
    g = extract_features(model, datamanager.test_loader[test_set]["gallery"], device)
    return evaluate_features(q[0], g[0], q[1], g[1], q[2], g[2], max_rank=50)


def train_and_evaluate(train_set: str, test_set: str, cfg: ReidTrainConfig, run_dir: Path, seed: int,
                       init_from: Path | None = None, progress: bool = True, mix: Mix | None = None) -> dict:
    """Train on registered dataset ``train_set``, evaluate on the query / gallery of ``test_set``; resumable per
    epoch.

    ``init_from``: a ``state.pt`` whose backbone weights start this run (virtual pre-training -> real fine-tuning).
    ``mix``: generated images appended to every batch of ``train_set`` (its real training data); None: ``train_set``
    alone.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mix_summary = mix.summary(cfg.batch) if mix is not None else None
    if (run_dir / "result.json").exists():
        done = read_json_object(run_dir / "result.json", f"delete {run_dir} to train it again")
        _check_same_training(run_dir / "result.json", done.get("steps_per_epoch"), cfg.steps_per_epoch,
                             done.get("mix"), mix_summary, done.get("transforms", ["random_flip"]), cfg.transforms,
                             done.get("epochs", cfg.epochs), cfg.epochs)
        return done
    device = resolve_device(cfg.device)
    seed_everything(seed)
    dm = build_datamanager(train_set, test_set, tuple(cfg.size), cfg.batch, cfg.workers, train_sampler(cfg.loss),
                           use_gpu=device.type == "cuda", transforms=tuple(cfg.transforms))
    mixed_loader = None
    if mix is not None:
        if mix.pool.num_real != dm.num_train_pids:
            raise UserError(f"the generated images were labelled against {mix.pool.num_real} real identities, "
                            f"dataset {train_set!r} has {dm.num_train_pids}")
        # draws of its own (never the global RNGs): the real part stays the real-only run's batches
        mixed_loader = MixedLoader(dm.train_loader, mix, seed, image_reader(dm, tuple(cfg.transforms)))
    num_classes = dm.num_train_pids if mixed_loader is None else mixed_loader.num_classes
    model = build_model(cfg.model, num_classes, cfg.loss, cfg.weights or None).to(device)
    if cfg.channels_last:  # convolutions follow the weights' memory format; inputs can stay NCHW
        model = model.to(memory_format=torch.channels_last)
    if init_from is not None:
        start_from(model, load_checkpoint(init_from)["model"])
    engine, optimizer, scheduler = build_engine(cfg.loss, dm, model, cfg.lr, cfg.epochs, use_gpu=device.type == "cuda",
                                                mixed_loader=mixed_loader)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    state = restore_state(run_dir, parts)
    start, steps, curve = 0, 0, []  # epochs done, optimiser steps done, (epoch, steps, rank-1, mAP) so far
    if state is not None:
        _check_same_training(run_dir / "state.pt", int(state["steps_per_epoch"]), cfg.steps_per_epoch,
                             state.get("mix"), mix_summary, state.get("transforms", ["random_flip"]), cfg.transforms,
                             state.get("epochs", cfg.epochs), cfg.epochs)
        start, steps, curve = int(state["epoch"]), int(state["steps"]), list(state.get("curve", []))
    for epoch in range(start, cfg.epochs):
        if mixed_loader is not None:
            mixed_loader.step = steps  # the generated draws are a function of (seed, step)
        steps += train_one_epoch(engine, epoch, cfg.epochs, progress, steps=cfg.steps_per_epoch)
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            curve.append(_curve_point(model, dm, test_set, device, epoch + 1, steps))
        atomic_save(capture_state(parts, epoch=epoch + 1, steps=steps, steps_per_epoch=cfg.steps_per_epoch,
                                  mix=mix_summary, transforms=list(cfg.transforms), curve=curve, epochs=cfg.epochs),
                    run_dir / "state.pt")
    result = evaluate_model(model, dm, test_set, device)
    out = {**result.summary(), "cmc": [float(v) for v in result.cmc[:20]], "epochs": cfg.epochs,
           "steps_per_epoch": cfg.steps_per_epoch, "steps": steps, "seed": seed, "transforms": list(cfg.transforms),
           "train_set": train_set, "test_set": test_set, "train_ids": int(dm.num_train_pids),
           "device": device_name(device), "model": cfg.model, "loss": cfg.loss, "lr": cfg.lr, "batch": cfg.batch,
           "size": list(cfg.size), "date": time.strftime("%Y-%m-%d")}
    if mix_summary is not None:
        out["mix"] = mix_summary
    if cfg.eval_every:
        out["curve"] = curve + [{"epoch": cfg.epochs, "steps": steps, "rank1": out["rank1"], "mAP": out["mAP"]}]
    atomic_write_text(run_dir / "result.json", json.dumps(out, indent=1))
    return out


def device_name(device: torch.device) -> str:
    """What trained a run, for its result: the GPU's name, or the CPU's model, the instruction set torch's kernels use
    on it and torch's thread count. A CPU run's numbers depend on all three: the same seed trained on another CPU model
    or instruction set gives other numbers (the kernels sum in another order)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split()) or platform.machine()
    except OSError:
        pass
    return platform.machine()


def _curve_point(model, dm, test_set: str, device, epoch: int, steps: int) -> dict:
    """A mid-training evaluation that leaves every RNG (python, numpy, torch) and the train mode as they were, so
    the run trains exactly as it would without it."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        r = evaluate_model(model, dm, test_set, device)
    random.setstate(py)
    np.random.set_state(npy)
    model.train()
    return {"epoch": epoch, "steps": steps, "rank1": float(r.cmc[0]), "mAP": float(r.mAP)}


def _check_same_training(path: Path, done_steps: int, asked_steps: int, done_mix: dict | None,
                         asked_mix: dict | None, done_transforms: list[str] = ("random_flip",),
                         asked_transforms: list[str] = ("random_flip",), done_epochs: int = 0,
                         asked_epochs: int = 0) -> None:
    # a finished or half-done run is reused as is, so one trained to another step budget or with another mix of
    # generated images would silently break the comparison
    if done_steps != asked_steps:
        raise UserError(f"{path}: trained with steps_per_epoch={done_steps}, the config asks for {asked_steps}; "
                        "delete that run folder or write to another out")
    if done_mix != asked_mix:
        raise UserError(f"{path}: trained with generated images {done_mix}, the config asks for {asked_mix}; "
                        "delete that run folder or write to another out")
    if done_epochs != asked_epochs:  # the learning-rate schedule depends on the total too
        raise UserError(f"{path}: trained for train.epochs={done_epochs}, the config asks for {asked_epochs}; "
                        "delete that run folder or write to another out")
    if list(done_transforms) != list(asked_transforms):
        raise UserError(f"{path}: trained with train.transforms {list(done_transforms)}, the config asks for "
                        f"{list(asked_transforms)}; delete that run folder or write to another out")
