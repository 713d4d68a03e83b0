"""Re-ID evaluation at Market-1501 size (3368 queries x 15913 gallery, 512-D): ours against torchreid.

Ours includes the distance computation from features; torchreid's `evaluate_rank`
(the Python path, the only one PyPI's torchreid has) gets the precomputed
distance matrix. Both run in this process on the same data; the ratio is printed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def market_like(q: int, g: int, dim: int, ids: int, seed: int = 0):
    """Features with identity structure, Market-like id / camera layout, junk and distractors in the gallery."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids + 1, dim)).astype(np.float32)
    q_pids = rng.integers(1, ids + 1, q)
    q_cams = rng.integers(1, 7, q)
    g_pids = np.concatenate([rng.integers(1, ids + 1, g - g // 6), np.full(g // 12, 0),
                             np.full(g - (g - g // 6) - g // 12, -1)])
    g_cams = rng.integers(1, 7, g)
    qf = centres[q_pids] + 2.2 * rng.normal(size=(q, dim)).astype(np.float32)
    gf = centres[np.maximum(g_pids, 0)] + 2.2 * rng.normal(size=(g, dim)).astype(np.float32)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=3368)
    ap.add_argument("--gallery", type=int, default=15913)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    from reid.metrics import evaluate_features, squared_euclidean
    from reid.torchreid_adapter import import_torchreid

    import_torchreid()
    from torchreid.reid.metrics.rank import evaluate_rank

    qf, gf, qp, gp, qc, gc = market_like(args.queries, args.gallery, args.dim, 750)
    t = time.perf_counter()
    ours = evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=50)
    ours_s = time.perf_counter() - t
    distmat = squared_euclidean(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    keep = gp != -1  # torchreid's loaders drop junk before evaluation
    t = time.perf_counter()
    cmc, mAP = evaluate_rank(distmat[:, keep], qp, gp[keep], qc, gc[keep], max_rank=50, use_metric_cuhk03=False,
                             use_cython=False)
    ref_s = time.perf_counter() - t
    assert abs(mAP - ours.mAP) < 1e-5 and np.abs(cmc - ours.cmc).max() < 1e-5, "results differ"
    print(f"evaluation at {args.queries} x {args.gallery}, {args.dim}-D "
          f"(rank-1 {ours.cmc[0]:.3f}, mAP {ours.mAP:.3f}):")
    print(f"  torchreid evaluate_rank (python, distances given): {ref_s:7.2f} s")
    print(f"  ours, distances included                         : {ours_s:7.2f} s")
    print(f"  speed-up: {ref_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
