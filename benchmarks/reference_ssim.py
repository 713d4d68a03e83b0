"""Where the shipped reference stage I loses reconstruction SSIM: training vs held-out images, inside vs outside
the person, beside what plain Gaussian blur of the input would score.

    python benchmarks/reference_ssim.py [--images 512] [--stage1 RUN_OR_SNAPSHOT]...

Rebuilds the reference's SimMarket from the seed in its provenance (a few seconds) in a temporary folder. Each
``--stage1`` (a stage-I run directory, snapshot or shipped stage1.pt; default the shipped one) is scored on the
same images: e.g. a generator trained on an unlabelled split, on the re-ID data's people.
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from generator.api import DisentangledModel
from generator.data.dataset import person_dataset
from generator.eval.image_metrics import _gaussian_window, ssim
from generator.eval.stage1_report import reconstruction_metrics
from generator.shipped import FILES, default_dir, simulate_reference_data


def blur_ssims(root, splits, size, images: int, sigmas=(1.0, 1.5)) -> list[float]:
    """SSIM of the same images as reconstruction_metrics against themselves blurred with 7x7 Gaussians."""
    ds = person_dataset(root, splits, size=size)
    idx = np.random.default_rng(0).permutation(len(ds))[:images]
    real = (torch.stack([ds.item(int(i))["image"] for i in idx]) + 1) / 2
    out = []
    for sigma in sigmas:
        w = _gaussian_window(7, sigma)[None, None].repeat(3, 1, 1, 1)
        out.append(float(ssim(F.conv2d(F.pad(real, (3,) * 4, mode="reflect"), w, groups=3), real).mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--stage1", action="append", default=[], metavar="PATH",
                    help="stage-I run directory or snapshot to score (repeatable; default the shipped stage1.pt)")
    args = ap.parse_args()
    ref = default_dir()
    models = args.stage1 or [str(ref / FILES["stage1"])]
    print("| stage I | images | n | SSIM whole | inside the person | outside | input blurred, sigma 1 | sigma 1.5 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        simulate_reference_data(tmp, ref)
        blurred_of = {}  # the same images whichever model: blurred once per split and size
        for path in models:
            model = DisentangledModel.load(path)
            for name, splits in (("training images (train split)", ("train",)),
                                 ("held-out images (query + gallery)", ("query", "gallery"))):
                r = reconstruction_metrics(model, tmp, args.images, splits=splits)
                key = (splits, tuple(model.size))
                if key not in blurred_of:
                    blurred_of[key] = blur_ssims(tmp, splits, model.size, args.images)
                blurred = blurred_of[key]
                print(f"| {path} | {name} | {r['images']} | {r['ssim']:.3f} | {r['person_ssim']:.3f} "
                      f"| {r['background_ssim']:.3f} | {blurred[0]:.3f} | {blurred[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
