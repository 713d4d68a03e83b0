"""Where the shipped reference stage I loses reconstruction SSIM: training vs held-out images, inside vs outside
the person, beside what plain Gaussian blur of the input would score.

    python benchmarks/reference_ssim.py [--images 512]

Rebuilds the reference's SimMarket from the seed in its provenance (a few seconds) in a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from generator.api import DisentangledModel
from generator.data import market_dataset
from generator.evaluate import _to01, ssim_map
from generator.shipped import FILES, default_dir, provenance
from generator.simmarket import simulate


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = torch.arange(7.0) - 3
    g = torch.exp(-k ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)
    return F.conv2d(F.pad(x, (3,) * 4, mode="reflect"), w, groups=3)


def breakdown(model: DisentangledModel, root, splits, images: int) -> dict:
    ds = market_dataset(root, splits, size=model.size, heatmap_radius=model.heatmap_radius, mask_radius=model.mask_radius)
    idx = np.random.default_rng(0).permutation(len(ds))[:images]
    acc: dict[str, list] = {"whole": [], "person": [], "background": [], "blur_sigma1": [], "blur_sigma1.5": []}
    for s in range(0, len(idx), 32):
        b = torch.utils.data.default_collate([ds.item(int(i)) for i in idx[s:s + 32]])
        with torch.no_grad():
            rec = _to01(model.render(model.encode(b["image"], b["keypoints"])))
        real = _to01(b["image"])
        m = ssim_map(rec, real)
        person = b["pose_mask"][:, 0] > 0.5
        acc["whole"].append(m.flatten(1).mean(1))
        acc["person"].append((m * person).flatten(1).sum(1) / person.flatten(1).sum(1).clamp(min=1))
        acc["background"].append((m * ~person).flatten(1).sum(1) / (~person).flatten(1).sum(1).clamp(min=1))
        acc["blur_sigma1"].append(ssim_map(blur(real, 1.0), real).flatten(1).mean(1))
        acc["blur_sigma1.5"].append(ssim_map(blur(real, 1.5), real).flatten(1).mean(1))
    return {k: float(torch.cat(v).mean()) for k, v in acc.items()} | {"images": int(len(idx))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    ref = default_dir()
    data = provenance(ref)["data"]
    model = DisentangledModel.load(ref / FILES["stage1"])
    with tempfile.TemporaryDirectory() as tmp:
        simulate(tmp, data["identities"], seed=data["seed"], size=(data["height"], data["width"]), progress=False)
        rows = {"training images (train split)": breakdown(model, tmp, ("train",), args.images),
                "held-out images (query + gallery)": breakdown(model, tmp, ("query", "gallery"), args.images)}
    print("| images | n | SSIM whole | inside the person | outside | input blurred, sigma 1 | sigma 1.5 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['images']} | {r['whole']:.3f} | {r['person']:.3f} | {r['background']:.3f} "
              f"| {r['blur_sigma1']:.3f} | {r['blur_sigma1.5']:.3f} |")


if __name__ == "__main__":
    main()
