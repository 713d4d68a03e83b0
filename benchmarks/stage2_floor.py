"""What Frechet distance can and cannot tell about a stage-II run: its mappings, a Gaussian fitted to the same
training embeddings, and the training embeddings themselves (the floor a perfect sampler would score), each
against the run's held-out embeddings, over several sampling seeds (mean ± std):

    python benchmarks/stage2_floor.py outputs/stage2_objectives/wgan --seeds 5

Trains nothing; ``generator.training.stage2_report.embedding_quality`` per seed. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from generator.models.stage2 import FACTORS
from generator.training.stage2_report import embedding_quality

SAMPLERS = {"mapping": "mapping", "gaussian": "Gaussian", "real_train": "training embeddings"}


def floor_table(qs: list[dict]) -> str:
    """One row per factor, one cell per sampler: Frechet mean ± std, precision / recall (and plausible poses)."""
    def cell(f: str, who: str) -> str:
        rs = [q[f"{f}/{who}"] for q in qs]
        fd = [r["frechet"] for r in rs]
        text = (f"{np.mean(fd):.3f} ± {np.std(fd, ddof=1) if len(fd) > 1 else 0.0:.3f}, "
                f"{np.mean([r['precision'] for r in rs]):.2f} / {np.mean([r['recall'] for r in rs]):.2f}")
        return text + (f" ({np.mean([r['plausible'] for r in rs]):.0%})" if "plausible" in rs[0] else "")

    lines = [f"| factor | {' | '.join(SAMPLERS.values())} |", "| --- |" + " --- |" * len(SAMPLERS)]
    lines += [f"| {f} | {' | '.join(cell(f, w) for w in SAMPLERS)} |" for f in FACTORS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a trained stage-II run directory")
    ap.add_argument("--seeds", type=int, default=5, help="sampling seeds (default 5)")
    args = ap.parse_args(argv)
    qs = [embedding_quality(Path(args.run), seed=s) for s in range(args.seeds)]
    print(f"{args.run}: {qs[0]['heldout']} held-out embeddings, {args.seeds} sampling seeds; Frechet mean ± std, "
          "k-NN precision / recall (plausible poses)\n")
    print(floor_table(qs), end="")


if __name__ == "__main__":
    main()
