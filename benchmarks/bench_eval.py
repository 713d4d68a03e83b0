"""Re-ID evaluation at Market-1501 size (3368 queries x 15913 gallery, 512-D): ours against torchreid, two cases.

- easy: a strong identity signal (rank-1 about 0.94, mAP about 0.54): each query's matches near the top.
- hard: a weak one (rank-1 about 0.54, mAP about 0.18), what an early or weak re-ID model gives: many matches
  far down the ranking.

Both galleries hold junk (pid -1) and distractors (pid 0). Ours (`evaluate_features`) gets the whole gallery and
drops junk itself, and its time includes the distances from the features; torchreid's `evaluate_rank` (the Python
path, the only one PyPI's torchreid has) gets the distance matrix of `squared_euclidean` with junk removed, as
torchreid's dataset classes remove it. torchreid runs once; ours runs --repeat times before it and as many after,
and the median counts, so that ours sees the machine's load on both sides of torchreid's long run. Both run in this
process with the default numbers of threads (printed); the ratio of the two times is printed. CMC and mAP must
agree to 1e-5; the differences printed come from the distances alone (ours computes the product with numpy's
BLAS, `squared_euclidean` with torch's: last-bit differences).

A tie check follows: the hard case's distances rounded to integers (ties at every depth), ours
(`evaluate_distances`) against `evaluate_rank` on the same distances made distinct in gallery order
(``+ position * 1e-9``), which is how a stable sort ranks ties and how ours ranks them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

CASES = {"easy": 2.2, "hard": 2.65}  # noise scale of the features around their identity centre


def market_like(q: int, g: int, dim: int, ids: int, noise: float = 2.2, seed: int = 0):
    """Features with identity structure, Market-like id / camera layout, junk and distractors in the gallery.

    ``noise``: scale of each image's deviation from its identity's centre (unit normal); larger is harder.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids + 1, dim)).astype(np.float32)
    q_pids = rng.integers(1, ids + 1, q)
    q_cams = rng.integers(1, 7, q)
    g_pids = np.concatenate([rng.integers(1, ids + 1, g - g // 6), np.full(g // 12, 0),
                             np.full(g - (g - g // 6) - g // 12, -1)])
    g_cams = rng.integers(1, 7, g)
    qf = centres[q_pids] + noise * rng.normal(size=(q, dim)).astype(np.float32)
    gf = centres[np.maximum(g_pids, 0)] + noise * rng.normal(size=(g, dim)).astype(np.float32)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def _agree(ours, cmc, mAP, what: str) -> str:
    d_cmc, d_map = float(np.abs(cmc - ours.cmc).max()), abs(mAP - ours.mAP)
    assert d_cmc < 1e-5 and d_map < 1e-5, f"{what}: results differ (CMC by {d_cmc:.2e}, mAP by {d_map:.2e})"
    return f"max CMC difference {d_cmc:.1e}, mAP difference {d_map:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=3368)
    ap.add_argument("--gallery", type=int, default=15913)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of ours per case before torchreid's run, and as many after (the median is reported)")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    ap.add_argument("--no-tie-check", action="store_true")
    args = ap.parse_args()
    from reid.metrics import evaluate_distances, evaluate_features, squared_euclidean
    from reid.torchreid_adapter import torchreid_evaluate_rank

    def reference(distmat, qp, gp, qc, gc):
        keep = gp != -1  # torchreid's dataset classes drop junk before evaluation
        t = time.perf_counter()
        cmc, mAP = torchreid_evaluate_rank(distmat[:, keep], qp, gp[keep], qc, gc[keep], max_rank=50)
        return cmc, mAP, time.perf_counter() - t

    def timed(fn, times):
        out = None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return out

    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    blas = env or f"its default, one per core ({os.cpu_count()})"
    print(f"evaluation at {args.queries} x {args.gallery}, {args.dim}-D; torch threads: {torch.get_num_threads()}, "
          f"numpy BLAS threads: {blas}")
    hard_distmat = None
    for name in args.cases:
        qf, gf, qp, gp, qc, gc = market_like(args.queries, args.gallery, args.dim, 750, noise=CASES[name])
        times = []  # ours before and after torchreid's long run, to sample the machine's load on both sides
        ours = timed(lambda: evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=50), times)  # noqa: B023
        distmat = squared_euclidean(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
        cmc, mAP, ref_s = reference(distmat, qp, gp, qc, gc)
        after = timed(lambda: evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=50), times)  # noqa: B023
        assert after.mAP == ours.mAP and np.array_equal(after.cmc, ours.cmc)
        ours_s = statistics.median(times)
        diff = _agree(ours, cmc, mAP, name)
        print(f"  {name} (noise {CASES[name]}): rank-1 {ours.cmc[0]:.3f}, mAP {ours.mAP:.3f}, mINP {ours.mINP:.4f}")
        print(f"    {'torchreid evaluate_rank (python, distances given)':<52}: {ref_s:8.3f} s")
        print(f"    {f'ours, distances included (median of {len(times)} runs)':<52}: {ours_s:8.3f} s "
              f"(runs {min(times):.3f} to {max(times):.3f} s)")
        print(f"    speed-up: {ref_s / ours_s:.1f}x; agree to 1e-5 ({diff})", flush=True)
        if name == "hard":
            hard_distmat, labels = distmat, (qp, gp, qc, gc)
    if hard_distmat is None or args.no_tie_check:
        return
    qp, gp, qc, gc = labels
    rounded = np.round(hard_distmat).astype(np.float64)  # integer distances: many ties
    times = []
    ours = timed(lambda: evaluate_distances(rounded, qp, gp, qc, gc, max_rank=50), times)
    ours_s = statistics.median(times)
    position = np.cumsum(gp != -1) - 1  # place in the gallery once junk is gone
    cmc, mAP, ref_s = reference(rounded + position[None] * 1e-9, qp, gp, qc, gc)
    diff = _agree(ours, cmc, mAP, "ties")
    print(f"  ties (hard case, distances rounded to integers): rank-1 {ours.cmc[0]:.3f}, mAP {ours.mAP:.3f}")
    print(f"    ours (distances given) {ours_s:.3f} s, torchreid {ref_s:.2f} s; the stable-sort referee agrees "
          f"({diff})")


if __name__ == "__main__":
    main()
