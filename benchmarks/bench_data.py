"""Data benchmarks: SimMarket rendering on one core, and PersonDataset / DataLoader throughput.

Each figure is printed beside a reference measured in the same run (JPEG
encoding of the same images; decoding the same files), so ratios stay
comparable across machines. Run with `make bench`.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the SimMarket target is stated
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image


def bench_simmarket(tmp: Path, ids: int) -> Path:
    from generator.simmarket.identity import make_identities
    from generator.simmarket.plan import plan_dataset
    from generator.simmarket.simulate import render_spec, simulate
    from generator.simmarket.world import World

    world = World(0, 128, 64)
    identities = make_identities(0, ids)
    specs = plan_dataset(world, identities, 0)
    t = time.perf_counter()
    images = [render_spec(world, identities, sp).image for sp in specs]
    render_s = time.perf_counter() - t
    t = time.perf_counter()
    for im in images:
        Image.fromarray(im).save(io.BytesIO(), format="JPEG", quality=95)
    jpeg_s = time.perf_counter() - t
    root = tmp / "market1501"
    t = time.perf_counter()
    summary = simulate(root, ids, seed=0, progress=False)
    total_s = time.perf_counter() - t
    n = len(specs)
    print(f"SimMarket render only        : {n / render_s:8.0f} img/s  ({n} images, 1 thread)")
    print(f"JPEG encode only (reference) : {n / jpeg_s:8.0f} img/s")
    print(f"simulate end to end          : {summary['images'] / total_s:8.0f} img/s  "
          f"(render + JPEG + atomic write + annotations; {total_s / jpeg_s:.1f}x the JPEG-only time)")
    return root


def bench_loader(root: Path, batches: int) -> None:
    from generator.data.dataset import load_image, person_dataset

    ds = person_dataset(root, ("train",))
    n = min(len(ds), batches * 16)
    t = time.perf_counter()
    for i in range(n):
        load_image(ds.records[i].path)
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        ds.item(i)
    item_s = time.perf_counter() - t
    print(f"JPEG decode only (reference) : {n / decode_s:8.0f} samples/s")
    print(f"PersonDataset item           : {n / item_s:8.0f} samples/s  (image, 18 pose maps, mask, 7 ROIs; "
          f"{item_s / decode_s:.1f}x the decode time)")
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
        it = iter(dl)
        next(it)  # start-up (worker spawn) is not throughput
        t = time.perf_counter()
        k = 0
        for _ in range(min(batches, len(dl) - 1)):
            next(it)
            k += 16
        print(f"DataLoader batch 16, {workers} workers: {k / (time.perf_counter() - t):8.0f} samples/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ids", type=int, default=200, help="SimMarket identities to render")
    ap.add_argument("--batches", type=int, default=40, help="DataLoader batches to time")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        root = bench_simmarket(Path(d), args.ids)
        bench_loader(root, args.batches)


if __name__ == "__main__":
    main()
