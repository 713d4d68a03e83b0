"""Exact nearest-neighbour search with faiss (flat indexes), for re-ID retrieval and embedding metrics."""
from __future__ import annotations

import numpy as np


def _faiss():
    import faiss

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
