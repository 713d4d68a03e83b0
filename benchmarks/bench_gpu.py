"""Stage-I training step on a CUDA GPU: achieved FLOP/s against the same run's bf16 matrix-product peak.

The model is built from a stage-I config (default: the paper's configs/stage1_market.yaml, 128x64, 128 channels,
5 levels). One step is what ``vmarket train stage1`` does: G forward and backward (20 x L1 + DCGAN), then D on
real and fake, Adam on both, bf16 autocast and channels_last as configured. FLOPs are counted by
``torch.utils.flop_counter`` over one step; time is the median of
synchronised repetitions. Without CUDA it runs on the CPU (a dry run of the script, fp32).

    python benchmarks/bench_gpu.py [--config configs/stage1_market.yaml] [--batches 16,64] [--steps 30] [--compile]
        [--cuda-graph]

``--cuda-graph`` also times the L1 warm-up's step (G alone: the phase whose end ships) eagerly and captured in one
CUDA graph (Adam with ``capturable=True``, the batch copied into static buffers, replayed): the launch overhead a
small model pays per kernel, measured as the ratio of the two in one run. It needs CUDA.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int, reps: int = 10) -> float:
    """n x n x n matrix products on random data (bf16 on CUDA, fp32 on the CPU): FLOP/s, mean of ``reps``
    after 3 warm-ups."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def make_step(G, D, opt_g, opt_d, amp: bool, l1_weight: float, device: torch.device):
    def step(b):
        real = b["image"]
        D.requires_grad_(False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            fake, _, _ = G(real, b["pose_mask"], b["roi_boxes"], b["roi_visible"], b["pose_maps"])
            loss = l1_weight * (fake.float() - real).abs().mean() + F.binary_cross_entropy_with_logits(
                D(fake).float(), torch.ones(len(real), device=device))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            ones, zeros = torch.ones(len(real), device=device), torch.zeros(len(real), device=device)
            d = (F.binary_cross_entropy_with_logits(D(real).float(), ones)
                 + F.binary_cross_entropy_with_logits(D(fake.detach()).float(), zeros)) / 2
        opt_d.zero_grad(set_to_none=True)
        d.backward()
        opt_d.step()
    return step


def on_device(nets: list, items: list, channels_last: bool, device: torch.device) -> tuple[list, dict]:
    """The networks and the collated batch of ``items`` on ``device``, in channels_last where configured."""
    nets = [n.to(device) for n in nets]
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in torch.utils.data.default_collate(items).items()}
    if channels_last:
        nets = [n.to(memory_format=torch.channels_last) for n in nets]
        batch = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
                 for k, v in batch.items()}
    return nets, batch


def median_step_s(step, batch: dict, steps: int, device: torch.device) -> float:
    """The median wall time of ``steps`` synchronised calls of ``step(batch)``."""
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        step(batch)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_l1_step(G, opt_g, amp: bool, l1_weight: float, device: torch.device):
    """The L1 warm-up's step: G forward and backward on the weighted L1 loss, Adam."""
    def step(b):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            fake, _, _ = G(b["image"], b["pose_mask"], b["roi_boxes"], b["roi_visible"], b["pose_maps"])
            loss = l1_weight * (fake.float() - b["image"]).abs().mean()
        loss.backward()
        opt_g.step()
        return loss
    return step


def graphed(step, opt, batch: dict, warmup: int = 3):
    """``step`` captured in one CUDA graph (torch.cuda.graphs' whole-network recipe): warm-up steps on a side
    stream, then one capture with the gradients left allocated; the returned function copies a batch into the
    captured inputs and replays."""
    static = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            step(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step(static)

    def replay(b):
        for k, v in static.items():
            v.copy_(b[k])
        graph.replay()
    return replay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/stage1_market.yaml")
    ap.add_argument("--batches", default="16,64", help="comma-separated batch sizes")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd G and D")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also time the L1 warm-up's step eagerly and captured in a CUDA graph (needs CUDA)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the CPU: a dry run of the script
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, also where it is not installed

    from generator.config import load_config
    from generator.data.dataset import person_dataset
    from generator.models.stage1 import DCGANDiscriminator, build_generator
    from generator.simmarket.simulate import simulate
    from generator.training.stage1 import Stage1Config

    cfg = load_config(Stage1Config, args.config)
    m, t, size = cfg.model, cfg.train, tuple(cfg.data.size)
    amp = t.amp == "bf16" and device.type == "cuda"  # as the trainer: bf16 autocast on CUDA only
    torch.backends.cudnn.benchmark = True
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "sim"
        simulate(root, 16, seed=0, size=size, progress=False)
        ds = person_dataset(root, ("train",), size=size, heatmap_radius=cfg.data.heatmap_radius,
                            mask_radius=cfg.data.mask_radius)
        items = [ds.item(i % len(ds)) for i in range(max(batches))]
    peak = matmul_peak(device, 8192 if device.type == "cuda" else 1024)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    kind = "bf16" if device.type == "cuda" else "fp32"
    print(f"{name}, torch {torch.__version__}: {kind} matrix product {peak / 1e12:.1f} TFLOP/s (this run's peak)")
    print(f"stage-I step from {args.config}: {size[0]}x{size[1]}, {m.channels} channels, {m.enc_levels} levels, "
          f"ROI {m.roi_size}, bf16 autocast {amp}, channels_last {t.channels_last}")
    variants = [(b, False) for b in batches] + ([(b, True) for b in batches] if args.compile else [])
    for batch_size, compiled in variants:
        torch.manual_seed(0)
        (G, D), batch = on_device([build_generator(m, size), DCGANDiscriminator(size, m.disc_channels)],
                                  items[:batch_size], t.channels_last, device)
        opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        if compiled:  # each batch size compiled afresh: a graph traced at another size would be a dynamic-shape one
            torch._dynamo.reset()
        Gs, Ds = (torch.compile(G, dynamic=False), torch.compile(D, dynamic=False)) if compiled else (G, D)
        step = make_step(Gs, Ds, opt_g, opt_d, amp, t.l1_weight, device)
        for _ in range(3):
            step(batch)  # warm-up (and compilation)
        with FlopCounterMode(display=False) as fc:
            step(batch)
        flops = fc.get_total_flops()
        sec = median_step_s(step, batch, args.steps, device)
        mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
        print(f"  batch {batch_size:4d}{' compiled' if compiled else '         '}: {sec * 1e3:7.2f} ms/step, "
              f"{batch_size / sec:8.1f} img/s, {flops / 1e9:8.1f} GFLOP/step, {flops / sec / 1e12:6.1f} TFLOP/s = "
              f"{100 * flops / sec / peak:5.2f}% of peak, max memory {mem:.1f} GiB")
        del G, D, Gs, Ds, opt_g, opt_d
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    if args.cuda_graph:
        if device.type != "cuda":
            print("  CUDA graph: skipped, it needs a CUDA GPU")
            return
        for batch_size in batches:
            timed = {}
            for captured in (False, True):
                torch.manual_seed(0)
                (G,), batch = on_device([build_generator(m, size)], items[:batch_size], t.channels_last, device)
                opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), capturable=captured)
                l1 = make_l1_step(G, opt_g, amp, t.l1_weight, device)
                try:
                    if captured:
                        step = graphed(l1, opt_g, batch)
                    else:
                        def step(b, l1=l1, opt_g=opt_g):
                            opt_g.zero_grad(set_to_none=True)
                            l1(b)
                        for _ in range(3):
                            step(batch)
                    timed[captured] = median_step_s(step, batch, args.steps, device)
                except Exception as e:  # a capture that fails is a finding, not the end of the run
                    print(f"  batch {batch_size:4d} L1 step, CUDA graph: failed: {type(e).__name__}: {e}")
                    break
                print(f"  batch {batch_size:4d} L1 step, {'CUDA graph' if captured else 'eager     '}: "
                      f"{timed[captured] * 1e3:7.2f} ms/step, {batch_size / timed[captured]:8.1f} img/s"
                      + (f", {timed[False] / timed[True]:.2f}x the eager step" if captured else ""))
                del G, opt_g
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
