"""Re-ID evaluation under the Market-1501 single-query protocol: CMC, mAP and mINP, exact and fast.

For each query, gallery entries with the query's pid *and* camera are dropped,
and so are junk entries (pid -1), as the official Market-1501 protocol does;
distractors (pid 0) stay. A query with no valid match is skipped, as torchreid does.

Junk: torchreid's ``evaluate_rank`` itself counts pid -1 as an ordinary negative;
only its dataset classes drop junk images before evaluation. So the results equal
``evaluate_rank`` on the same distances once junk has been removed from the gallery
(tested to 1e-6), and differ from ``evaluate_rank`` on a gallery that still holds junk.

Ties: entries at equal distance are ranked in gallery order, which is what a stable
sort of each row gives (``np.argsort(kind="stable")``). A negative tied with a
positive ranks ahead of it only when it comes first in the gallery.

No gallery row is sorted whole. The rank of a query's true match is one plus the
number of valid entries closer to the query, plus those at exactly its distance
that come before it in the gallery. Only entries no farther than the query's
farthest match can be closer than a match: one compare picks them out, they alone
are sorted (by value), and two binary searches per match give the entries below it
and those up to it. Entries at exactly a match's distance other than matches
(rare with real features) are then counted in gallery order from the distance row.
Per query that is O(G) plus O(S log S), S the entries up to the farthest match, in
numpy calls over blocks of queries or whole rows: Python loops run once per query
(the sort) and once per such tie, never per gallery entry.

``evaluate_features`` computes distances a block of queries at a time, never the
whole (Q, G) matrix, with the formulas of ``squared_euclidean`` /
``cosine_distance`` (the same norms, terms added in the same order), on the CPU.
The matrix product goes through numpy's BLAS (OpenBLAS in numpy's wheels), about 1.7x
as fast as torch's MKL on the benchmark machine (AMD EPYC), so these distances can
differ from those functions' in the last bit, and results by that rounding (on the
benchmark's hard case, mAP by 3e-7; CMC not at all). While one block is ranked,
the next block's product runs in a second thread (when torch is allowed more than
one thread).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

JUNK_PID = -1
_ROWS = 128  # queries finished and ranked at a time, while their distances are in cache
_BLOCK_DISTANCES = 1 << 24  # at most this many distances in a block (64 MB in float32; two blocks are held)


@dataclass
class RankResult:
    cmc: np.ndarray  # (max_rank,) share of valid queries whose first match is within rank r+1
    mAP: float
    mINP: float  # mean inverse negative penalty (Ye et al. 2021): matches / rank of the hardest match
    num_valid: int  # queries with at least one valid gallery match

    def summary(self) -> dict:
        out = {"mAP": self.mAP, "mINP": self.mINP, "num_valid_queries": self.num_valid}
        for r in (1, 5, 10, 20):
            if r <= len(self.cmc):
                out[f"rank{r}"] = float(self.cmc[r - 1])
        return out


def squared_euclidean(qf: torch.Tensor, gf: torch.Tensor) -> torch.Tensor:
    """(Q, G) squared Euclidean distances, torchreid's 'euclidean' metric."""
    return (qf * qf).sum(1, keepdim=True) + (gf * gf).sum(1)[None] - 2 * qf @ gf.T


def cosine_distance(qf: torch.Tensor, gf: torch.Tensor) -> torch.Tensor:
    qf = torch.nn.functional.normalize(qf, dim=1)
    gf = torch.nn.functional.normalize(gf, dim=1)
    return 1 - qf @ gf.T


class _Gallery:
    """The gallery without junk, its entries grouped by pid: a query's same-pid entries are a small gather."""

    def __init__(self, pid: np.ndarray, cam: np.ndarray):
        self.cam = cam
        self.order = np.argsort(pid, kind="stable")  # within a pid, gallery order
        self.sorted_pid = pid[self.order]

    def same_pid(self, q_pid: np.ndarray):
        """(n, M) gallery indices with the query's pid, in gallery order (padded with 0), and their (n, M) mask."""
        start = np.searchsorted(self.sorted_pid, q_pid, "left")
        count = np.searchsorted(self.sorted_pid, q_pid, "right") - start
        m = max(int(count.max(initial=0)), 1)
        ok = np.arange(m)[None] < count[:, None]
        pos = np.minimum(start[:, None] + np.arange(m)[None], len(self.order) - 1)  # never empty here
        return np.where(ok, self.order[pos], 0), ok


def _chunk_stats(d: np.ndarray, q_pid: np.ndarray, q_cam: np.ndarray, gallery: _Gallery):
    """Per-query first-match rank, AP and INP for a few queries; rows without a valid match get AP = INP = NaN.

    ``d``: (n, G) C-contiguous float distances to the gallery without junk; it is overwritten (dropped
    entries set to NaN).
    """
    n, G = d.shape
    nan = np.full(n, np.nan)
    if G == 0:
        return np.zeros(n, np.int64), nan, nan.copy()
    idx, ok = gallery.same_pid(q_pid)  # (n, M)
    same_cam = gallery.cam[idx] == q_cam[:, None]
    is_pos = ok & ~same_cam  # true matches
    P = is_pos.sum(1)
    if not P.any():
        return np.zeros(n, np.int64), nan, nan.copy()
    r, c = np.nonzero(ok & same_cam)  # same person in the same camera: dropped; NaN is never <=, < or ==
    d[r, idx[r, c]] = np.nan
    rows = np.arange(n)
    # matches in ranking order: by distance, ties in gallery order (idx ascends in a row; lexsort is stable)
    key = np.where(is_pos, d[rows[:, None], idx], np.inf)
    pmax = int(P.max())
    order = np.lexsort((~is_pos, key), axis=-1)[:, :pmax]
    pos_d = np.take_along_axis(key, order, 1)  # (n, pmax); past P[i] padding
    pos_idx = np.take_along_axis(idx, order, 1)
    k = np.arange(pmax)
    valid = k[None] < P[:, None]
    hardest = pos_d[rows, np.maximum(P - 1, 0)]
    # only entries no farther than the hardest match can be closer than a match: take them, sort each row's,
    # and count for each match the entries below it and those up to it (a search for the next float up)
    sel = d <= hardest[:, None]
    bounds = np.concatenate([pos_d, np.nextafter(pos_d, np.inf)], axis=1)
    found = np.zeros((n, 2 * pmax), np.int64)
    for i in np.flatnonzero(P):
        s = d[i].compress(sel[i])
        s.sort()
        found[i] = s.searchsorted(bounds[i])
    lt, le = found[:, :pmax], found[:, pmax:]  # valid entries (matches included) closer than / no farther than
    # entries at exactly match k's distance rank ahead of it when they come first in the gallery (a stable
    # sort); among the matches, those are the ones before k in ranking order
    eq = (pos_d[:, :, None] == pos_d[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    tied = (eq & (k[None, None, :] < k[None, :, None])).sum(2)
    for i, j in zip(*np.nonzero(valid & (le - lt > eq.sum(2))), strict=True):  # a non-match at that distance
        tied[i, j] = np.count_nonzero(d[i, :pos_idx[i, j]] == pos_d[i, j])
    rank = lt + tied + 1  # 1-based rank of the k-th match among valid entries
    has = P > 0
    ap = np.where(valid, (k + 1)[None] / rank, 0.0).sum(1) / np.maximum(P, 1)
    inp = P / rank[rows, np.maximum(P - 1, 0)]
    return np.where(has, rank[:, 0], 0), np.where(has, ap, np.nan), np.where(has, inp, np.nan)


def _finish(stats, max_rank) -> RankResult:
    first, ap, inp = (np.concatenate(v) for v in zip(*stats, strict=True)) if stats else (np.zeros(0),) * 3
    valid = ~np.isnan(ap)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid gallery match; check the query and gallery ids and cameras")
    r = np.arange(1, max_rank + 1)
    cmc = (first[valid][:, None] <= r[None]).mean(0)
    return RankResult(cmc, float(ap[valid].mean()), float(inp[valid].mean()), num_valid)


def _as_int(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).reshape(-1)


def _evaluate(block, n_queries, q_pids, g_pids, q_camids, g_camids, max_rank, chunk) -> RankResult:
    """Shared driver over blocks of ``chunk`` queries. ``block(lo, hi, slot)`` does the work for queries lo..hi
    that needs no ranking (in buffer ``slot``, 0 or 1) and returns ``rows(a, b)``, which gives the (b - a, G')
    C-contiguous float distances of queries lo + a .. lo + b to the gallery without junk, an array the driver
    may overwrite. With more than one torch thread, the next block's ``block`` runs in a second thread while
    this block is ranked."""
    q_pid, g_pid, q_cam, g_cam = map(_as_int, (q_pids, g_pids, q_camids, g_camids))
    keep = g_pid != JUNK_PID
    gallery = _Gallery(g_pid[keep], g_cam[keep])
    starts = range(0, n_queries, chunk)
    stats = []
    with ThreadPoolExecutor(1) as ahead:
        overlap = torch.get_num_threads() > 1
        pending = None
        for b, lo in enumerate(starts):
            hi = min(lo + chunk, n_queries)
            rows = pending.result() if pending else block(lo, hi, b % 2)
            pending = ahead.submit(block, hi, min(hi + chunk, n_queries), (b + 1) % 2) \
                if overlap and hi < n_queries else None
            for a in range(0, hi - lo, _ROWS):
                e = min(a + _ROWS, hi - lo)
                stats.append(_chunk_stats(rows(a, e), q_pid[lo + a:lo + e], q_cam[lo + a:lo + e], gallery))
    return _finish(stats, min(max_rank, int(keep.sum())))


def _float_numpy(d) -> np.ndarray:
    if torch.is_tensor(d):
        d = d.detach().cpu()
        d = d.float() if d.dtype in (torch.float16, torch.bfloat16) else d
        d = d.numpy()
    d = np.asarray(d)
    if d.dtype.kind != "f" or d.dtype.itemsize < 4:
        d = d.astype(np.float64 if d.dtype.kind in "iub" else np.float32)
    return d


def evaluate_distances(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, chunk: int = 512) -> RankResult:
    """CMC / mAP / mINP from a (Q, G) distance matrix (numpy or torch), Market-1501 protocol; ``chunk`` queries
    at a time (fewer for a large gallery)."""
    d = _float_numpy(distmat)
    keep = _as_int(g_pids) != JUNK_PID

    def block(lo, hi, slot):
        part = np.compress(keep, d[lo:hi], axis=1)  # a copy, junk dropped: the driver overwrites it
        return lambda a, b: part[a:b]

    n = max(1, min(chunk, _BLOCK_DISTANCES // max(int(keep.sum()), 1)))
    return _evaluate(block, len(d), q_pids, g_pids, q_camids, g_camids, max_rank, n)


def evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric: str = "euclidean", max_rank: int = 50,
                      chunk: int = 512) -> RankResult:
    """The same from features, distances computed ``chunk`` queries at a time (fewer for a large gallery).

    Distances by the formulas of ``squared_euclidean`` / ``cosine_distance``, on the CPU (see the module docstring).
    """
    if metric not in ("euclidean", "cosine"):
        raise KeyError(metric)
    qf, gf = (_float_numpy(x).astype(np.float32, copy=False) for x in (qf, gf))
    q, g = torch.from_numpy(qf), torch.from_numpy(np.compress(_as_int(g_pids) != JUNK_PID, gf, axis=0))  # no junk
    if metric == "euclidean":  # (q * q).sum + (g * g).sum - (2 * q) @ g.T, added in this order
        q_np, g_np = (2 * qf), g.numpy()
        q_sq, g_sq = ((x * x).sum(1).numpy() for x in (q, g))  # torch's sums: squared_euclidean's, bit for bit
    else:  # 1 - normalize(q) @ normalize(g).T
        q_np, g_np = (torch.nn.functional.normalize(x, dim=1).numpy() for x in (q, g))
    n = max(1, min(chunk, len(qf), _BLOCK_DISTANCES // max(len(g), 1)))
    slots = np.empty((2, n, len(g)), np.float32)  # reused: no fresh pages per block
    tmp = np.empty((min(_ROWS, n), len(g)), np.float32)

    def block(lo, hi, slot):
        mm = np.matmul(q_np[lo:hi], g_np.T, out=slots[slot, :hi - lo])

        def rows(a, b):  # finished in place, a few rows at a time while they are in cache
            if metric == "cosine":
                return np.subtract(1, mm[a:b], out=mm[a:b])
            return np.subtract(np.add(q_sq[lo + a:lo + b, None], g_sq[None], out=tmp[:b - a]), mm[a:b], out=mm[a:b])

        return rows

    return _evaluate(block, len(qf), q_pids, g_pids, q_camids, g_camids, max_rank, n)
