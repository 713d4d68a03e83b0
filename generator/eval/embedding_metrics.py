"""Embedding-quality measures for stage II (Sec. 3.2): Frechet distance, pose plausibility and
the Gaussian baseline a mapping has to beat.

(k-NN precision / recall needs faiss and lives in ``generator.eval.neighbours``.)
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from generator.models.stage2 import fit_gaussian

# limbs whose lengths, relative to the torso (neck to mid-hip), describe a plausible body
PLAUSIBILITY_LIMBS = ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13), (2, 5), (8, 11))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of embeddings (as FID does for Inception features)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(ca)) * 1e-6
        covmean = linalg.sqrtm((ca + eps) @ (cb + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean))


def limb_ratios(keypoints: np.ndarray) -> np.ndarray:
    """(N, 18, 3) keypoints -> (N, L) limb length / torso length, NaN where a joint is missing."""
    k = np.asarray(keypoints, np.float64)
    vis = k[..., 2] > 0.5
    mid_hip = (k[:, 8, :2] + k[:, 11, :2]) / 2
    torso = np.linalg.norm(k[:, 1, :2] - mid_hip, axis=1)
    torso_ok = vis[:, 1] & vis[:, 8] & vis[:, 11] & (torso > 1e-6)
    out = np.full((len(k), len(PLAUSIBILITY_LIMBS)), np.nan)
    for j, (a, b) in enumerate(PLAUSIBILITY_LIMBS):
        ok = vis[:, a] & vis[:, b] & torso_ok
        out[ok, j] = np.linalg.norm(k[ok, a, :2] - k[ok, b, :2], axis=1) / torso[ok]
    return out


def plausible_share(sampled: np.ndarray, real: np.ndarray, low: float = 0.0, high: float = 100.0) -> float:
    """Share of sampled poses whose every measurable limb ratio lies inside the real range
    (percentiles ``low``-``high``), and that show a torso at all."""
    r_real, r_s = limb_ratios(real), limb_ratios(sampled)
    lo, hi = np.nanpercentile(r_real, low, axis=0), np.nanpercentile(r_real, high, axis=0)
    measurable = ~np.isnan(r_s)
    inside = np.where(measurable, (r_s >= lo) & (r_s <= hi), True)
    has_torso = measurable.any(1)
    return float((inside.all(1) & has_torso).mean())


class GaussianBaseline:
    """A Gaussian fitted to real embeddings: the baseline a mapping has to beat."""

    def __init__(self, real: torch.Tensor):
        self.mean, self.chol = fit_gaussian(real)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, len(self.mean), generator=g, dtype=torch.float64)
        return (self.mean + z @ self.chol.T).float()
