"""Exact nearest-neighbour search with faiss (flat indexes), for re-ID retrieval and embedding metrics.

Where faiss cannot be imported (a lent GPU machine whose image lacks it, and no network to install it), the exact
searches run in NumPy instead (``ExactIndex``): the same neighbours and distances, in float32, by blocks of
queries; only ``kmeans`` needs faiss itself."""
from __future__ import annotations

import types

import numpy as np

from generator.errors import UserError


class ExactIndex:
    """A flat index in NumPy with faiss's ``add`` / ``search`` / ``ntotal``: squared L2 distances (``"l2"``) or
    inner products (``"ip"``), exact, each query's results sorted nearest first."""

    def __init__(self, dim: int, metric: str = "l2"):
        self.dim, self.metric = dim, metric
        self.blocks: list[np.ndarray] = []  # joined when searched: an index grows a row at a time (CosineIndex)
        self.ntotal = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1, self.dim)
        self.blocks.append(x)
        self.ntotal += len(x)

    def search(self, x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float32).reshape(-1, self.dim)
        if len(self.blocks) > 1:
            self.blocks = [np.concatenate(self.blocks)]
        data = self.blocks[0] if self.blocks else np.zeros((0, self.dim), np.float32)
        k = min(k, self.ntotal)
        dists, idx = np.empty((len(x), k), np.float32), np.empty((len(x), k), np.int64)
        sq = (data ** 2).sum(1) if self.metric == "l2" else None
        for s in range(0, len(x), block):
            q = x[s:s + block]
            prod = q @ data.T
            score = prod if sq is None else np.maximum((q ** 2).sum(1)[:, None] + sq[None] - 2 * prod, 0)
            order = -score if sq is None else score
            part = (np.argpartition(order, k - 1, axis=1)[:, :k] if k < self.ntotal
                    else np.broadcast_to(np.arange(self.ntotal), order.shape))
            part = np.take_along_axis(part, np.argsort(np.take_along_axis(order, part, 1), 1, kind="stable"), 1)
            idx[s:s + block], dists[s:s + block] = part, np.take_along_axis(score, part, 1)
        return dists, idx


def _faiss():
    try:
        import faiss
    except ImportError:  # the exact flat indexes in NumPy; k-means is refused (kmeans)
        return types.SimpleNamespace(IndexFlatL2=lambda d: ExactIndex(d, "l2"),
                                     IndexFlatIP=lambda d: ExactIndex(d, "ip"), Kmeans=None)
    return faiss


def knn_distances(x: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance from each row of ``x`` to its k-th nearest other row (exact L2)."""
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d, _ = index.search(x, k + 1)  # the first neighbour is the point itself
    return np.sqrt(np.maximum(d[:, k], 0))


def _within_manifold(points: np.ndarray, reference: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each point: is it inside some reference ball B(reference_j, radii_j)? Exact: every centre is searched."""
    faiss = _faiss()
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    points = np.ascontiguousarray(points, dtype=np.float32)
    out = np.zeros(len(points), bool)
    for s in range(0, len(points), chunk):
        d, idx = index.search(points[s:s + chunk], len(reference))
        out[s:s + chunk] = (np.sqrt(np.maximum(d, 0)) <= radii[idx]).any(1)
    return out


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls, exact search in faiss.

    Precision: share of samples inside the real manifold; recall: share of real points inside the sample manifold.
    """
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    r_real, r_fake = knn_distances(real, k), knn_distances(fake, k)
    precision = float(_within_manifold(fake, real, r_real).mean())
    recall = float(_within_manifold(real, fake, r_fake).mean())
    return precision, recall


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """(k, D) centroids of ``x`` (faiss k-means, seeded)."""
    faiss = _faiss()
    if faiss.Kmeans is None:
        raise UserError("k-means needs faiss, which is not installed here: pip install faiss-cpu (a dependency of "
                        "this project)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    return km.centroids.copy()


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) index of the nearest centroid (exact L2)."""
    faiss = _faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0]


class CosineIndex:
    """Exact cosine-similarity index (faiss inner product on L2-normalised vectors) that grows as items are accepted."""

    def __init__(self, dim: int):
        faiss = _faiss()
        self.index = faiss.IndexFlatIP(dim)

    @staticmethod
    def _norm(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def add(self, x: np.ndarray) -> None:
        self.index.add(self._norm(x))

    def nearest_distance(self, x: np.ndarray) -> np.ndarray:
        """(N,) cosine distance (1 - similarity) to the closest indexed vector; inf when the index is empty."""
        if self.index.ntotal == 0:
            return np.full(len(np.atleast_2d(x)), np.inf)
        sim, _ = self.index.search(self._norm(x), 1)
        return 1.0 - sim[:, 0]

    def __len__(self) -> int:
        return self.index.ntotal
