"""What a stage-I width costs: parameters, fp16 checkpoint size and forward FLOPs per image of the generator, for
each width and per-level cap (``model.channels``, ``model.max_level_channels``) on top of a stage-I config.

    python benchmarks/stage1_sizes.py [--config configs/reference/stage1.yaml] [--size 64x32]
        [--variant 96] [--variant 96:192] ...

A variant is CHANNELS or CHANNELS:CAP. The shipped checkpoints (stage I, pose AE and stage II together) are held to
48 MiB in fp16, so the column that matters for a candidate is the stage-I size plus the other two (printed below the
table from the shipped package).
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from generator.config import load_config
from generator.models.stage1 import build_generator, level_width
from generator.shipped import default_dir
from generator.simmarket.simulate import parse_size
from generator.training.stage1 import Stage1Config

DEFAULT_VARIANTS = ("32", "48", "64", "96", "96:160", "96:192", "96:224", "128:192")


def measure(model_cfg, size) -> dict:
    """Parameters, fp16 MiB and forward GFLOP per image of the generator of ``model_cfg`` at ``size`` (H, W)."""
    g = build_generator(model_cfg, size).eval()
    n = sum(p.numel() for p in g.parameters())
    h, w = size
    boxes = torch.tensor([[w * 0.1, h * 0.1, w * 0.9, h * 0.9]]).repeat(1, 7, 1)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        g(torch.randn(1, 3, h, w), torch.ones(1, 1, h, w), boxes, torch.ones(1, 7), torch.zeros(1, 18, h, w))
    return {"params_m": n / 1e6, "fp16_mib": n * 2 / 2 ** 20, "gflop": fc.get_total_flops() / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/reference/stage1.yaml", help="stage-I YAML the variants change")
    ap.add_argument("--size", default=None, help="HxW (default the config's data.size)")
    ap.add_argument("--variant", action="append", default=[], help="CHANNELS or CHANNELS:CAP (repeatable)")
    args = ap.parse_args()
    cfg = load_config(Stage1Config, args.config)
    size = parse_size(args.size) if args.size else tuple(cfg.data.size)
    rows = []
    for v in args.variant or DEFAULT_VARIANTS:
        ch, _, cap = v.partition(":")
        m = dataclasses.replace(cfg.model, channels=int(ch), max_level_channels=int(cap or 0))
        rows.append((v, m, measure(m, size)))
    base = rows[0][2]["gflop"]
    print(f"stage-I generator at {size[0]}x{size[1]}, {cfg.model.enc_levels} encoder / {cfg.model.dec_levels} "
          f"decoder levels (level widths: channels x 1..levels, capped):")
    print("| channels | level widths | parameters | fp16 MiB | forward GFLOP / image | FLOPs vs first |")
    print("| --- | --- | --- | --- | --- | --- |")
    for v, m, r in rows:
        widths = [level_width(m.channels, i, m.max_level_channels) for i in range(m.dec_levels)]
        print(f"| {v} | {', '.join(map(str, widths))} | {r['params_m']:.2f} M | {r['fp16_mib']:.1f} | "
              f"{r['gflop']:.2f} | {r['gflop'] / base:.2f}x |")
    shipped = default_dir()
    others = sum((shipped / f).stat().st_size for f in ("pose.pt", "stage2.pt") if (shipped / f).is_file())
    print(f"\nthe shipped pose AE and stage II take {others / 2 ** 20:.1f} MiB of the 48 MiB the shipped checkpoints "
          f"may hold ({shipped})")


if __name__ == "__main__":
    main()
