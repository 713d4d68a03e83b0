"""Paired comparison of two reference re-ID ablations (``ablation.csv`` of ``vmarket reference-reid``) over the seeds
both ran: the same recipe under another generator, re-ID size or machine. For every regime and recipe of A that B
also has, A - B in rank-1 and mAP (mean ± standard error over the paired seeds); ``--against`` adds A's recipe
against B's named recipes (B's real-only and cut-and-paste, say).

    python benchmarks/compare_ablations.py A/ablation.csv B/ablation.csv [--against real,cutpaste] \
        [--names 128x64,64x32]
"""
from __future__ import annotations

import argparse

from augment.jobs.ablation_tables import compare, markdown, read_ablation


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
    t = compare(read_ablation(args.a), read_ablation(args.b), [s for s in args.against.split(",") if s], names)
    if t.empty:
        print("no recipe of A ran in B over the same regime and seeds")
        return
    print(markdown(t), end="")


if __name__ == "__main__":
    main()
