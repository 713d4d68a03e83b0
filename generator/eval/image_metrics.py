"""Image metrics: SSIM (Wang et al. 2004), mask-SSIM (the PG2 convention) and scores inside a region."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).float()
    return g[:, None] * g[None, :]


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004; 11x11 Gaussian, sigma 1.5) of (B, 3, H, W) images in [0, 1],
    averaged over channels."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    w = _gaussian_window().to(a)[None, None].repeat(a.shape[1], 1, 1, 1)
    pad = w.shape[-1] // 2
    # the Gaussian blur of every SSIM moment, one line inline (E731 allowed)
    conv = lambda x: F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), w, groups=a.shape[1])  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    s_aa, s_bb, s_ab = conv(a * a) - mu_a ** 2, conv(b * b) - mu_b ** 2, conv(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return s.mean(1)  # (B, H, W)


def ssim(a, b) -> torch.Tensor:
    return ssim_map(a, b).flatten(1).mean(1)


def mask_ssim(a, b, mask) -> torch.Tensor:
    """SSIM of the images with the background blacked out (the PG2 convention); mask (B, 1, H, W)."""
    return ssim(a * mask, b * mask)


def region_scores(gen: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image L1 (grey levels 0..255), colour error (distance of mean RGB, 0..255) and SSIM inside
    ``region`` (B, H, W)."""
    r = region.float()[:, None]
    n = r.flatten(1).sum(1).clamp(min=1)
    l1 = ((gen - truth).abs() * r).flatten(1).sum(1) / (3 * n) * 255
    mean_g = (gen * r).flatten(2).sum(2) / n[:, None]
    mean_t = (truth * r).flatten(2).sum(2) / n[:, None]
    colour = (mean_g - mean_t).norm(dim=1) * 255
    region_ssim = (ssim_map(gen, truth) * region.float()).flatten(1).sum(1) / n
    return {"l1": l1, "colour": colour, "ssim": region_ssim}


def to01(x: torch.Tensor) -> torch.Tensor:
    return (x.float().cpu().clamp(-1, 1) + 1) / 2
