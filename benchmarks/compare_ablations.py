"""Paired comparison of two reference re-ID ablations (``ablation.csv`` of ``vmarket reference-reid``) over the seeds
both ran: the same recipe under another generator, re-ID size or machine. For every regime and recipe of A that B
also has, A - B in rank-1 and mAP (mean ± standard error over the paired seeds); ``--against`` adds A's recipe
against B's named recipes (B's real-only and cut-and-paste, say).

    python benchmarks/compare_ablations.py A/ablation.csv B/ablation.csv [--against real,cutpaste] \
        [--names 128x64,64x32]
"""
from __future__ import annotations

import argparse

import pandas as pd

from reid.ablation import paired


def compare(a: pd.DataFrame, b: pd.DataFrame, against: list[str], names: tuple[str, str]) -> pd.DataFrame:
    both = pd.concat([a.assign(setting="A:" + a.setting), b.assign(setting="B:" + b.setting)])
    rows = []
    for (regime, setting), g in a.groupby(["regime", "setting"], sort=False):
        other = b[(b.regime == regime) & (b.setting == setting) & b.seed.isin(g.seed)]
        if other.empty:
            continue
        row = {"regime": regime, "recipe": setting, "seeds": int(other.seed.nunique()),
               f"{names[0]} rank-1 / mAP": _means(g[g.seed.isin(other.seed)]),
               f"{names[1]} rank-1 / mAP": _means(other)}
        for column, vs in [(f"vs {names[1]}, same recipe", setting)] + [(f"vs {names[1]} {s}", s) for s in against]:
            cells = []
            for metric in ("rank1", "mAP"):
                mean, se, n = paired(both, regime, "A:" + setting, "B:" + vs, metric)
                cells.append("n/a" if n == 0 else f"{100 * mean:+.1f}" + ("" if n < 2 else f" ± {100 * se:.1f}"))
            row[column] = " / ".join(cells)
        rows.append(row)
    return pd.DataFrame(rows)


def _means(g: pd.DataFrame) -> str:
    return f"{100 * g.rank1.mean():.1f} / {100 * g.mAP.mean():.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--against", default="", help="B's recipes to pair every recipe of A with, comma-separated")
    ap.add_argument("--names", default="A,B", help="what to call A and B in the table")
    args = ap.parse_args()
    names = tuple(args.names.split(","))
    if len(names) != 2:
        ap.error("--names: two names, comma-separated")
    t = compare(pd.read_csv(args.a), pd.read_csv(args.b), [s for s in args.against.split(",") if s], names)
    if t.empty:
        print("no recipe of A ran in B over the same regime and seeds")
        return
    print("| " + " | ".join(t.columns) + " |")
    print("| " + " | ".join("---" for _ in t.columns) + " |")
    for r in t.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
