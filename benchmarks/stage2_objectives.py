"""Stage-II objectives and critic budgets, measured: each variant trains the three mappings (Sec. 3.2) on the
embeddings of one stage I and is scored against a Gaussian fitted to the same training embeddings (Frechet
distance to the held-out embeddings, k-NN precision / recall; ``generator.training.stage2_report.embedding_quality``).

A variant is a name and ``KEY=VALUE`` overrides of the stage-II config, separated by commas:

    python benchmarks/stage2_objectives.py --out outputs/stage2_objectives \\
        --variant "wgan:train.objective=wgan" \\
        --variant "gp:train.objective=wgan-gp,train.lr=1.0e-4"

Default stage I and pose AE: the shipped reference (generator/reference), on the SimMarket it was trained on.
Every variant resumes after a kill; a finished one is only scored again. Writes ``results.json`` and
``results.md`` under ``--out``.
"""
from __future__ import annotations

import argparse
import time

from variants import add_arguments, parse_variant, prepare, save

from generator.config import load_config
from generator.io import atomic_copy, atomic_write_text, load_checkpoint
from generator.models.stage2 import FACTORS
from generator.shipped import FILES, default_dir
from generator.training.stage2 import Stage2Config, train
from generator.training.stage2_report import embedding_quality


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/stage2_objectives")
    ap.add_argument("--config", default="configs/reference/stage2.yaml", help="base stage-II config")
    ap.add_argument("--stage1", default=str(default_dir() / FILES["stage1"]))
    ap.add_argument("--pose", default=str(default_dir() / FILES["pose"]))
    add_arguments(ap)
    args = ap.parse_args(argv)
    out, data, results = prepare(args)
    for spec in args.variant:
        name, sets, overrides = parse_variant(spec)
        run = out / name
        cfg = load_config(Stage2Config, args.config, [f"stage1_run={args.stage1}", f"pose_run={args.pose}",
                                                      f"data_root={data}", *overrides])
        shared = out / "embeddings.pt"  # the real embeddings of stage I, computed once for every variant
        if shared.exists() and not (run / "embeddings.pt").exists():
            run.mkdir(parents=True, exist_ok=True)
            atomic_copy(shared, run / "embeddings.pt")
        t = time.perf_counter()
        train(cfg, run, resume=True, progress=not args.quiet)
        if not shared.exists():
            atomic_copy(run / "embeddings.pt", shared)
        seconds = time.perf_counter() - t
        steps = load_checkpoint(run / "snapshot.pt")["steps"]
        q = embedding_quality(run)
        old = results.get(name, {})
        results[name] = {"overrides": sets, "steps": steps, "quality": q,
                         "train_seconds": old.get("train_seconds", 0.0) + seconds}
        save(out, results)
        print(f"[{name}] " + ", ".join(f"{f} {_frechet(q, f, 4)}" for f in FACTORS), flush=True)
    lines = ["Frechet distance to held-out embeddings, mapping (Gaussian fitted to the same embeddings; the training "
             "embeddings themselves, the floor); lower is better.", "",
             "| variant | overrides | " + " | ".join(FACTORS) + " | training s |",
             "| --- | --- | " + " | ".join("---" for _ in FACTORS) + " | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['overrides']} | " + " | ".join(_frechet(r["quality"], f, 3) for f in FACTORS)
                     + f" | {r['train_seconds']:.0f} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _frechet(q: dict, f: str, digits: int) -> str:
    """'mapping (gaussian; training embeddings)' Frechet distances of factor ``f`` (a result saved before the
    training-embeddings row was measured lacks it)."""
    floor = f"; {q[f'{f}/real_train']['frechet']:.{digits}f}" if f"{f}/real_train" in q else ""
    return f"{q[f'{f}/mapping']['frechet']:.{digits}f} ({q[f'{f}/gaussian']['frechet']:.{digits}f}{floor})"


if __name__ == "__main__":
    main()
