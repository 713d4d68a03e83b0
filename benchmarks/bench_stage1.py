"""Stage-I training throughput on CPU: one real training step (G and D, 20 x L1 + DCGAN) per variant,
in one process, as ratios to the faithful baseline (roi_align with sampling ratio 2, tiled appearance).

    python benchmarks/bench_stage1.py [--size 64x32] [--channels 32] [--steps 12] [--profile]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

VARIANTS = {
    "baseline (roi_align sr=2, tiled appearance)": dict(roi_crop="roi_align", roi_sampling_ratio=2, injection="tile"),
    "roi_align sr=1": dict(roi_crop="roi_align", roi_sampling_ratio=1, injection="tile"),
    "grid_sample crop": dict(roi_crop="grid_sample", roi_sampling_ratio=1, injection="tile"),
    "linear appearance term": dict(roi_crop="roi_align", roi_sampling_ratio=2, injection="linear"),
    "roi_align sr=1 + linear (demo)": dict(roi_crop="roi_align", roi_sampling_ratio=1, injection="linear"),
    "grid_sample + linear": dict(roi_crop="grid_sample", roi_sampling_ratio=1, injection="linear"),
    "sr=1 + linear + channels_last": dict(roi_crop="roi_align", roi_sampling_ratio=1, injection="linear",
                                          channels_last=True),
    "sr=1 + linear, L1 only (warm-up phase)": dict(roi_crop="roi_align", roi_sampling_ratio=1, injection="linear",
                                                   adversarial=False),
}


def step_fn(G, D, opt_g, opt_d, adversarial: bool = True):
    def step(b):
        real = b["image"]
        D.requires_grad_(False)
        fake, _, _ = G(real, b["pose_mask"], b["roi_boxes"], b["roi_visible"], b["pose_maps"])
        loss = 20 * (fake - real).abs().mean()
        if adversarial:
            loss = loss + F.binary_cross_entropy_with_logits(D(fake), torch.ones(len(real)))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if not adversarial:  # the L1 warm-up trains G alone
            return
        D.requires_grad_(True)
        d = (F.binary_cross_entropy_with_logits(D(real), torch.ones(len(real)))
             + F.binary_cross_entropy_with_logits(D(fake.detach()), torch.zeros(len(real)))) / 2
        opt_d.zero_grad()
        d.backward()
        opt_d.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="64x32")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--roi", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--only", default="",
                    help="comma-separated substrings: run only the matching variants (and the baseline)")
    ap.add_argument("--profile", action="store_true",
                    help="print the top operators of the baseline and the fastest variant")
    args = ap.parse_args()
    from generator.data.dataset import person_dataset
    from generator.models.stage1 import DCGANDiscriminator, DisentangledGenerator
    from generator.simmarket.simulate import simulate

    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "sim"
        simulate(root, 16, seed=0, size=(h, w), progress=False)
        ds = person_dataset(root, ("train",), size=(h, w), heatmap_radius=max(2, h // 32), mask_radius=max(4, h // 18))
        batch = torch.utils.data.default_collate([ds.item(i % len(ds)) for i in range(args.batch)])
    results = {}
    wanted = [s for s in args.only.split(",") if s]
    for i, (name, v) in enumerate(VARIANTS.items()):
        if i > 0 and wanted and not any(s in name for s in wanted):
            continue
        v = dict(v)
        channels_last, adversarial = v.pop("channels_last", False), v.pop("adversarial", True)
        torch.manual_seed(0)
        G = DisentangledGenerator((h, w), args.channels, args.levels, args.levels, args.roi, **v)
        D = DCGANDiscriminator((h, w), args.channels)
        b = batch
        if channels_last:
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
            b = {k: x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.dim() == 4 else x
                 for k, x in batch.items()}
        step = step_fn(G, D, torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)),
                       torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999)), adversarial)
        for _ in range(2):
            step(b)  # warm-up
        t = time.perf_counter()
        for _ in range(args.steps):
            step(b)
        results[name] = args.steps * args.batch / (time.perf_counter() - t)
        if args.profile and name.startswith("baseline") or (args.profile and name == "grid_sample + linear"):
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(b)
            print(f"--- profile of one step: {name}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    base = results[next(iter(VARIANTS))]
    print(f"stage-I step, {h}x{w}, {args.channels} channels, {args.levels} levels, ROI {args.roi}, batch {args.batch} "
          f"(G and D updates), {torch.get_num_threads()} threads:")
    for name, ips in results.items():
        print(f"  {name:45s} {ips:7.1f} img/s  {ips / base:5.2f}x")


if __name__ == "__main__":
    main()
