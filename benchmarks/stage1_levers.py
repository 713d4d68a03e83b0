"""Stage-I levers, measured at equal compute: each variant fine-tunes the same stage I (default: the shipped
reference) for the same steps on the same SimMarket, and is scored as the reference is (held-out reconstruction
SSIM, person SSIM and person sharpness on 512 images, the counterfactual swaps against the true renders on 200
pairs; ``generator.eval.stage1_report.evaluate``). A variant is a name and ``KEY=VALUE`` overrides of the stage-I
config, separated by commas; a baseline variant with no override is the control.

    python benchmarks/stage1_levers.py --out outputs/stage1_levers --steps 1000 \\
        --variant "l1:" --variant "identity:train.id_weight=1.0,train.id_start=200"
    python benchmarks/stage1_levers.py --out outputs/stage1_levers --steps 1000 \\
        --variant "adversarial:train.l1_only_steps=0" \\
        --variant "adversarial-fm:train.l1_only_steps=0,train.fm_weight=10"

Every variant resumes after a kill; a finished one is only scored. Writes ``results.json``, ``results.md`` and
``levers.png``: the same held-out people under every variant, reconstructed and in their neighbour's pose.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from variants import add_arguments, parse_variant, prepare, save

from generator.api import DisentangledModel
from generator.config import load_config
from generator.eval.grids import swap_grid
from generator.eval.stage1_report import evaluate, held_out_people
from generator.io import atomic_path, atomic_write_text, load_checkpoint
from generator.shipped import FILES, default_dir
from generator.training.stage1 import Stage1Config, train

ROWS = (("held-out SSIM", ("reconstruction", "ssim")), ("person SSIM", ("reconstruction", "person_ssim")),
        ("person sharpness", ("reconstruction", "person_sharpness")),
        ("pose-swap L1 / copy", ("swaps", "pose/model/l1", "pose/copy_source/l1")),
        ("fg-swap L1 / copy", ("swaps", "foreground/model/l1", "foreground/copy_source/l1")),
        ("bg-swap L1 / copy", ("swaps", "background/model/l1", "background/copy_source/l1")))


def _value(m: dict, path: tuple) -> float | None:
    part = m.get(path[0]) or {}
    if len(path) == 2:
        return part.get(path[1])
    a, b = part.get(path[1]), part.get(path[2])
    return a / b if a is not None and b else None


def comparison_figure(runs: dict[str, Path], data: Path, path: Path, people: int = 8) -> None:
    """``path``: a PNG of ``people`` held-out people (the top row), then for each variant (name: its run folder) its
    reconstructions and its pose swaps (each person in the pose of the one before), rows labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels = [], []
    for i, (name, run) in enumerate(runs.items()):
        model = DisentangledModel.load(run)
        grid = swap_grid(model.G, held_out_people(model, data, people)).view(5, -1, 3, *model.size)
        if i == 0:
            rows.append(grid[0])
            labels.append("held-out input")
        rows += [grid[1], grid[4]]
        labels += [f"{name}: reconstruction", f"{name}: pose swap"]
    h, w = rows[0].shape[-2:]
    fig, axes = plt.subplots(len(rows), 1, figsize=(people * w / 40 + 1.6, len(rows) * h / 40), dpi=120)
    for ax, row, label in zip(axes, rows, labels, strict=True):
        strip = torch.cat(list(row.clamp(-1, 1) * 0.5 + 0.5), dim=2).permute(1, 2, 0).numpy()
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/stage1_levers")
    ap.add_argument("--config", default="configs/reference/stage1.yaml", help="base stage-I config")
    ap.add_argument("--init", default=str(default_dir() / FILES["stage1"]), help="stage-I snapshot to start from")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-4, help="the reference's rate at the end of its L1 warm-up")
    add_arguments(ap)
    args = ap.parse_args(argv)
    out, data, results = prepare(args)
    base = [f"data.root={data}", f"train.init_from={args.init}", f"train.steps={args.steps}", f"train.lr={args.lr}",
            f"train.l1_only_steps={args.steps}", "train.warmup_steps=100", f"train.lr_halve_every={10 * args.steps}",
            "train.eval_every=0", f"train.sample_every={args.steps}", f"train.snapshot_every={min(250, args.steps)}"]
    for spec in args.variant:
        name, sets, overrides = parse_variant(spec)
        run = out / name
        cfg = load_config(Stage1Config, args.config, base + overrides)
        snap = run / "snapshot.pt"
        step = load_checkpoint(snap)["step"] if snap.is_file() else 0
        t = time.perf_counter()
        if step < args.steps:  # a finished one is only scored
            step = train(cfg, run, resume=True, progress=not args.quiet)["step"]
        seconds = time.perf_counter() - t
        metrics = evaluate(run, data, run / "eval")
        old = results.get(name, {})
        results[name] = {"overrides": sets, "steps": step,
                         "metrics": metrics, "train_seconds": old.get("train_seconds", 0.0) + seconds}
        save(out, results)
        print(f"[{name}] " + ", ".join(f"{label} {_value(metrics, path):.4f}" for label, path in ROWS
                                       if _value(metrics, path) is not None), flush=True)
    names = list(results)
    lines = [f"Stage I fine-tuned from {args.init} for {args.steps} steps per variant; held-out people of "
             f"{data} (reference metrics).", "", "| metric | " + " | ".join(names) + " |",
             "| --- | " + " | ".join("---" for _ in names) + " |"]
    for label, path in ROWS:
        vals = [_value(results[n]["metrics"], path) for n in names]
        lines.append(f"| {label} | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals) + " |")
    lines.append("| training s | " + " | ".join(f"{results[n]['train_seconds']:.0f}" for n in names) + " |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    comparison_figure({n: out / n for n in names if (out / n / "snapshot.pt").exists()}, data, out / "levers.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
