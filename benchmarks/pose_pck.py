"""Accuracy of a keypoint estimator against SimMarket's true keypoints: PCK, torso-normalised.

Renders a SimMarket (``--style flat`` or ``textured``, the same people, poses and keypoints drawn two ways) into a
temporary folder, runs the estimator (``vmarket keypoints``'s, default MediaPipe: ``pip install -e '.[pose]'``) on
``--images`` person images drawn from the training split, and prints one Markdown row per style: the share of
images where it found a person, PCK@0.5 and PCK@0.2 (``generator.data.estimators.pck``: torso = true neck to the mid
point of the true hips; a joint the estimator misses counts as wrong), PCK@0.5 on the images where it found a
person, the milliseconds per image, and PCK@0.5 by the person's view (front, back, left, right). Run it alone:
one thread, as ``vmarket keypoints`` runs MediaPipe.

    python benchmarks/pose_pck.py --style flat textured --size 128x64 --seed 7
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from generator.data.dataset import load_image
from generator.data.estimators import make_estimator, pck
from generator.data.keypoints import read_keypoints_csv, yx_to_rcv
from generator.data.market import scan_market
from generator.simmarket.simulate import parse_size, simulate
from generator.simmarket.world import STYLES


def measure(style: str, ids: int, seed: int, size: tuple[int, int], images: int, estimator: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sim"
        simulate(root, ids, seed=seed, size=size, progress=False, style=style)
        recs = [r for r in scan_market(root, ("train",)) if r.pid > 0]
        pick = np.random.default_rng(seed).choice(len(recs), size=min(images, len(recs)), replace=False)
        recs = [recs[i] for i in sorted(pick)]
        truth = read_keypoints_csv(root / "market-annotation-train.csv")
        manifest = pd.read_csv(root / "manifest.csv").set_index("path")
        views = np.array([manifest.view[f"bounding_box_train/{r.name}"] for r in recs])
        true = np.stack([yx_to_rcv(truth[r.name]) for r in recs])
        pixels = [load_image(r.path) for r in recs]
        est = make_estimator(estimator)
        t = time.perf_counter()
        pred = np.concatenate([est(pixels[i:i + 16]) for i in range(0, len(pixels), 16)])
        seconds = time.perf_counter() - t
        if hasattr(est, "close"):
            est.close()
    found = pred[..., 2].any(1)
    return {"style": style, "images": len(recs), "found": float(found.mean()), "pck50": pck(pred, true, 0.5)[0],
            "pck20": pck(pred, true, 0.2)[0], "pck50_found": pck(pred[found], true[found], 0.5)[0],
            "ms": 1000 * seconds / len(recs),
            "views": {v: pck(pred[views == v], true[views == v], 0.5)[0] for v in ("front", "back", "left", "right")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style", nargs="+", choices=STYLES, default=list(STYLES))
    p.add_argument("--ids", type=int, default=60, help="SimMarket identities (half of them in the training split)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", default="128x64")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--estimator", default="mediapipe")
    args = p.parse_args()
    size = parse_size(args.size)
    print(f"estimator {args.estimator}, SimMarket {args.ids} ids seed {args.seed} at {args.size}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| style | images | person found | PCK@0.5 torso | PCK@0.2 torso | PCK@0.5 where found | per image "
          "| PCK@0.5 front / back / left / right |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for style in args.style:
        m = measure(style, args.ids, args.seed, size, args.images, args.estimator)
        print(f"| {m['style']} | {m['images']} | {100 * m['found']:.1f}% | {m['pck50']:.3f} | {m['pck20']:.3f} | "
              f"{m['pck50_found']:.3f} | {m['ms']:.0f} ms | {' / '.join(f'{v:.2f}' for v in m['views'].values())} |",
              flush=True)


if __name__ == "__main__":
    main()
