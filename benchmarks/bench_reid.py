"""Re-ID training step on CPU (torchreid model, softmax loss, Adam): NCHW vs channels_last weights, in one
process, alternating so that drift on the machine hits both alike.

    python benchmarks/bench_reid.py [--model osnet_x0_25] [--size 128x64] [--batch 32] [--steps 10]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F


def step_time(model_name: str, size: tuple[int, int], batch: int, steps: int, channels_last: bool) -> float:
    from reid.torchreid_adapter import build_model

    torch.manual_seed(0)
    model = build_model(model_name, 100, "softmax", None).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x, y = torch.randn(batch, 3, *size), torch.randint(0, 100, (batch,))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="osnet_x0_25")
    ap.add_argument("--size", default="128x64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    size = tuple(int(v) for v in args.size.split("x"))
    times = {False: [], True: []}
    for _ in range(args.rounds):
        for cl in (False, True):
            times[cl].append(step_time(args.model, size, args.batch, args.steps, cl))
    base, cl = min(times[False]), min(times[True])
    print(f"{args.model} {args.size} batch {args.batch}, {torch.get_num_threads()} threads (best of {args.rounds}):")
    print(f"  NCHW           {args.batch / base:7.1f} img/s  1.00x")
    print(f"  channels_last  {args.batch / cl:7.1f} img/s  {base / cl:.2f}x")


if __name__ == "__main__":
    main()
