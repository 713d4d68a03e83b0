"""Virtual Market build throughput on CPU, against the JPEG-encoding bound for the same images in the same run.

Uses the stage-II run given (default: the newest under outputs/stage2); without one it trains tiny
stages on a small SimMarket first, so the figure then describes a tiny model.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_stages(d: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import tiny_pose, tiny_stage1, tiny_stage2

    from generator.simmarket.simulate import simulate
    from generator.training.pose_ae import train as train_pose
    from generator.training.stage1 import train as train_stage1
    from generator.training.stage2 import train as train_stage2

    simulate(d / "sim", 16, seed=5, size=(64, 32), progress=False)
    train_stage1(tiny_stage1(d / "sim", **{"train.steps": 4}), d / "s1", progress=False)
    train_pose(tiny_pose(d / "sim", **{"train.steps": 20}), d / "pose", progress=False)
    train_stage2(tiny_stage2(d / "s1", d / "pose", **{"train.steps": 4}), d / "s2", progress=False)
    return d / "s2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage2-run", default=None)
    ap.add_argument("--identities", type=int, default=40)
    ap.add_argument("--images-per-id", type=int, default=16)
    args = ap.parse_args()
    from augment.makers.build_config import BuildConfig
    from augment.makers.builder import build
    from generator.config import load_config

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        run = args.stage2_run
        if run is None:
            found = sorted(Path("outputs/stage2").glob("*/snapshot.pt"))
            run = str(found[-1].parent) if found else str(tiny_stages(d))
        cfg = load_config(BuildConfig, None, [f"stage2_run={run}", f"out={d / 'vm'}", f"identities={args.identities}",
                                              f"images_per_id={args.images_per_id}", "quality_keep=1.0"])
        t = time.perf_counter()
        s = build(cfg, progress=False)
        total = time.perf_counter() - t
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((d / "vm").rglob("*.jpg"))]
        t = time.perf_counter()
        for im in imgs:
            Image.fromarray(im).save(io.BytesIO(), format="JPEG", quality=cfg.jpeg_quality)
        jpeg = time.perf_counter() - t
        h, w = imgs[0].shape[:2]
        print(f"Virtual Market build ({run}, {h}x{w}, {len(imgs)} images kept of "
              f"{s['identities'] * int(np.ceil(cfg.images_per_id / cfg.quality_keep))} rendered):")
        print(f"  build, rendering loop     : {s['images_per_s']:8.1f} img/s kept (render + D score + JPEG write)")
        print(f"  build, end to end         : {len(imgs) / total:8.1f} img/s (model loading and the plan included)")
        print(f"  JPEG encoding only (bound): {len(imgs) / jpeg:8.1f} img/s  "
              f"-> build reaches {s['images_per_s'] / (len(imgs) / jpeg):.1%} of it")


if __name__ == "__main__":
    main()
