"""Launched by torchrun in test_stage1: 2 gloo ranks train stage I, each saves its weights."""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
# torchrun starts this file alone: tests/ is put on sys.path first
from tiny import tiny_stage1  # noqa: E402

from generator.models.stage1 import build_generator
from generator.training.stage1 import train

root, out = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ["RANK"])
cfg = tiny_stage1(root, **{"train.steps": 6, "train.l1_only_steps": 2})
if rank == 0:
    torch.manual_seed(cfg.train.seed)
    torch.save(build_generator(cfg.model, (64, 32)).state_dict(), out / "init.pt")
run = out / "run"
run.mkdir(exist_ok=True)
result = train(cfg, run, progress=False)
torch.save(result["G"].state_dict(), out / f"rank{rank}.pt")
