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

No gallery is sorted: each positive's rank is the number of valid entries ahead of
it, counted with one ``bucketize`` of the gallery distances into the query's few
sorted positive distances, O(G log P) per query instead of O(G log G).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

JUNK_PID = -1


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


class _GalleryIndex:
    """Gallery entries grouped by pid, so a query's same-pid entries are a small gather, not a scan."""

    def __init__(self, g_pid: torch.Tensor, g_cam: torch.Tensor):
        self.order = torch.argsort(g_pid, stable=True)  # within a pid, gallery order
        self.sorted_pid = g_pid[self.order]
        self.g_pid, self.g_cam = g_pid, g_cam

    def same_pid(self, q_pid: torch.Tensor):
        """(n, M) gallery indices with the query's pid (padded with 0) and a (n, M) validity mask."""
        start = torch.searchsorted(self.sorted_pid, q_pid, right=False)
        end = torch.searchsorted(self.sorted_pid, q_pid, right=True)
        count = end - start
        m = max(int(count.max()) if len(count) else 0, 1)
        pos = start[:, None] + torch.arange(m)[None]
        ok = torch.arange(m)[None] < count[:, None]
        idx = self.order[pos.clamp(max=len(self.order) - 1)]
        return torch.where(ok, idx, torch.zeros_like(idx)), ok


def _chunk_stats(d, q_pid, q_cam, index: _GalleryIndex):
    """Per-query first-match rank, AP and INP for one chunk; rows without a valid match get AP = NaN.

    ``d``: (n, G) distances to a gallery without junk. Dense work is one searchsorted and one bincount.
    """
    n, G = d.shape
    idx, ok = index.same_pid(q_pid)  # (n, M)
    d_same = d.gather(1, idx)
    same_cam = index.g_cam[idx] == q_cam[:, None]
    is_pos, is_inv = ok & ~same_cam, ok & same_cam  # true matches; same person in the same camera (dropped)
    P = is_pos.sum(1)
    pmax = int(P.max()) if n else 0
    if pmax == 0:
        nan = torch.full((n,), float("nan"), dtype=torch.float64)
        return torch.zeros(n, dtype=torch.long), nan, nan
    inf = torch.tensor(float("inf"), dtype=d.dtype)
    # positives in ranking order: by distance, ties in gallery order (idx ascends within a pid; the sort is stable)
    pos_sorted = torch.where(is_pos, d_same, inf).sort(dim=1, stable=True)
    pos_d = pos_sorted.values[:, :pmax].contiguous()  # (n, pmax), inf-padded
    pos_idx = idx.gather(1, pos_sorted.indices[:, :pmax])  # (n, pmax) gallery index of each positive
    # only entries no farther than the query's hardest positive can precede a positive: select them
    # (one dense compare), then bucket them among the row's positives with one 1-D bucketize, rows kept
    # apart by an offset of 2^k > the distance range (exact in float64 for float32 distances)
    hardest_d = pos_d.gather(1, (P - 1).clamp(min=0)[:, None])
    hardest_d = torch.where(P[:, None] > 0, hardest_d, torch.full_like(hardest_d, -inf))
    rows, cols = (d <= hardest_d).nonzero(as_tuple=True)
    vals = d[rows, cols].double()
    span = float(max(d.abs().max(), 1.0))
    off = 2.0 ** (int(np.ceil(np.log2(span))) + 2)
    base = torch.arange(n, dtype=torch.float64)[:, None] * off
    # pads sit past the row
    bounds = torch.where(torch.isinf(pos_d), torch.full_like(pos_d, span), pos_d).double() + base
    keys, flat = vals + rows.double() * off, bounds.view(-1)
    below = torch.bucketize(keys, flat, right=False) - rows * pmax  # positives strictly closer than the entry
    upto = torch.bucketize(keys, flat, right=True) - rows * pmax  # positives no farther than the entry
    counts = torch.bincount(rows * (pmax + 1) + upto, minlength=n * (pmax + 1)).view(n, pmax + 1)
    closer = counts[:, :pmax].cumsum(1)  # (n, pmax) entries with d < p_k: negatives, dropped ones, positives
    inv_d = torch.where(is_inv, d_same, inf)
    dropped = (inv_d[:, None, :] < pos_d[:, :, None]).sum(2)  # (n, pmax) dropped entries with d < p_k
    # entries at exactly p_k rank ahead of positive k when they come first in the gallery (a stable sort)
    tied = _tied_ahead(rows, cols, below, upto, P, pos_idx, index.g_pid[cols] == q_pid[rows],
                       index.g_cam[cols] == q_cam[rows], n, pmax)
    rank = closer - dropped + tied + 1  # 1-based rank of the k-th positive among valid entries
    k = torch.arange(1, pmax + 1)
    valid_k = k[None] <= P[:, None]
    Pf = P.clamp(min=1).double()
    ap = torch.where(valid_k, k[None].double() / rank.double(), torch.zeros((), dtype=torch.float64)).sum(1) / Pf
    hardest = rank.gather(1, (P - 1).clamp(min=0)[:, None]).squeeze(1)
    inp = P.double() / hardest.double()
    has = P > 0
    ap = torch.where(has, ap, torch.full_like(ap, float("nan")))
    inp = torch.where(has, inp, torch.full_like(inp, float("nan")))
    first = torch.where(has, rank[:, 0], torch.zeros_like(rank[:, 0]))
    return first, ap, inp


def _tied_ahead(rows, cols, below, upto, P, pos_idx, same_pid, same_cam, n: int, pmax: int) -> torch.Tensor:
    """(n, pmax) count of valid entries at exactly the k-th positive's distance that precede it in the gallery.

    ``below`` / ``upto``: for each selected entry, how many of its row's positives are closer than it / no
    farther, so it ties with positives ``below .. upto - 1``. Ties are rare with real features: the loop runs
    over the widest tie, usually once or not at all.
    """
    tied = torch.zeros(n, pmax, dtype=torch.long)
    sel = (upto > below).nonzero(as_tuple=True)[0]
    sel = sel[~(same_pid[sel] & same_cam[sel])]  # dropped entries never rank
    if len(sel) == 0:
        return tied
    r, c, lo, hi = rows[sel], cols[sel], below[sel], torch.minimum(upto[sel], P[rows[sel]])
    for t in range(int((hi - lo).max())):
        k = lo + t
        ok = k < hi
        ahead = ok & (c < pos_idx[r, k.clamp(max=pmax - 1)])
        tied.index_put_((r[ahead], k[ahead]), torch.ones(int(ahead.sum()), dtype=torch.long), accumulate=True)
    return tied


def _finish(firsts, aps, inps, max_rank) -> RankResult:
    first = torch.cat(firsts)
    ap, inp = torch.cat(aps), torch.cat(inps)
    valid = ~torch.isnan(ap)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid gallery match; check the query and gallery ids and cameras")
    r = torch.arange(1, max_rank + 1)
    cmc = (first[valid][:, None] <= r[None]).double().mean(0).numpy()
    return RankResult(cmc, float(ap[valid].mean()), float(inp[valid].mean()), num_valid)


def _as_long(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


def _evaluate(distances, n_queries, q_pids, g_pids, q_camids, g_camids, max_rank, chunk) -> RankResult:
    """Shared driver: ``distances(lo, hi, keep)`` gives the (hi - lo, G') distances of queries lo..hi to the
    gallery entries ``keep`` (junk dropped)."""
    q_pid, g_pid, q_cam, g_cam = map(_as_long, (q_pids, g_pids, q_camids, g_camids))
    keep = g_pid != JUNK_PID
    index = _GalleryIndex(g_pid[keep], g_cam[keep])
    out = ([], [], [])
    for s in range(0, n_queries, chunk):
        stats = _chunk_stats(distances(s, s + chunk, keep), q_pid[s:s + chunk], q_cam[s:s + chunk], index)
        for acc, v in zip(out, stats, strict=True):
            acc.append(v)
    return _finish(*out, min(max_rank, int(keep.sum())))


def evaluate_distances(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, chunk: int = 256) -> RankResult:
    """CMC / mAP / mINP from a (Q, G) distance matrix (numpy or torch), Market-1501 protocol."""
    d = torch.as_tensor(np.asarray(distmat) if not torch.is_tensor(distmat) else distmat)
    return _evaluate(lambda lo, hi, keep: d[lo:hi][:, keep], len(d), q_pids, g_pids, q_camids, g_camids, max_rank,
                     chunk)


def evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric: str = "euclidean", max_rank: int = 50,
                      chunk: int = 256) -> RankResult:
    """The same from features: distances are computed chunk by chunk, never the whole (Q, G) matrix at once."""
    qf, gf = torch.as_tensor(qf).float(), torch.as_tensor(gf).float()
    dist = {"euclidean": squared_euclidean, "cosine": cosine_distance}[metric]
    g_kept = gf[_as_long(g_pids) != JUNK_PID].contiguous()  # junk dropped once, as the driver drops it
    return _evaluate(lambda lo, hi, keep: dist(qf[lo:hi], g_kept), len(qf), q_pids, g_pids, q_camids, g_camids,
                     max_rank, chunk)
