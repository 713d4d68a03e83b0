"""Image metrics: SSIM (Wang et al. 2004), mask-SSIM (the PG2 convention) and scores inside a region.

SSIM follows scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` and torchmetrics' ``StructuralSimilarityIndexMeasure``: an 11x11
Gaussian window (sigma 1.5), and the mean is taken over the *valid* part of the SSIM map only,
where the window lies inside the image; the 5-pixel border is cropped, not padded. (At 64x32 the
border is 42% of the pixels, at 128x64 22%.) ``tests/test_api_eval.py`` checks parity with
scikit-image to 1e-4.

Images without a person (an empty region, such as a distractor's pose mask) have no person-region
SSIM and no mask-SSIM: those scores are NaN per image, and the reports average over the images that
have a person and say how many were left out (``nan_mean``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW, SIGMA = 11, 1.5
BORDER = WINDOW // 2  # rows and columns on each side where the window leaves the image


def _gaussian(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    g = _gaussian(size, sigma).float()
    return g[:, None] * g[None, :]


def _blur(x: torch.Tensor) -> torch.Tensor:
    """The 11x11 Gaussian as two 1-D passes over every channel, valid positions only: (B, C, H - 10, W - 10)."""
    g = _gaussian().to(x)
    b, c, h, w = x.shape
    y = F.conv2d(x.reshape(b * c, 1, h, w), g[None, None, :, None])
    y = F.conv2d(y, g[None, None, None, :])
    return y.reshape(b, c, h - WINDOW + 1, w - WINDOW + 1)


def ssim_map(a: torch.Tensor, b: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """Per-pixel SSIM of (B, 3, H, W) images in [0, 1] over the valid window positions, averaged over channels:
    (B, H - 10, W - 10); pixel (i, j) of the map is centred on pixel (i + 5, j + 5) of the image. ``exact``: in
    float64, for the 1e-6 parity of a metric; else in the inputs' precision (a training loss, differentiable)."""
    if min(a.shape[-2:]) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels, got {tuple(a.shape[-2:])}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    if exact:
        a, b = a.double(), b.double()  # the moments are differences of near-equal sums: float64 keeps 1e-6 parity
    mu_a, mu_b = _blur(a), _blur(b)
    s_aa, s_bb, s_ab = _blur(a * a) - mu_a ** 2, _blur(b * b) - mu_b ** 2, _blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return s.mean(1).float()


def valid(region: torch.Tensor) -> torch.Tensor:
    """A (B, H, W) region cropped to the pixels the SSIM map covers."""
    return region[..., BORDER:region.shape[-2] - BORDER, BORDER:region.shape[-1] - BORDER]


def ssim(a, b) -> torch.Tensor:
    return ssim_map(a, b).flatten(1).mean(1)


def has_person(mask: torch.Tensor) -> torch.Tensor:
    """(B,) True where a (B, [1,] H, W) person mask has any pixel inside the SSIM map's valid part."""
    m = mask[:, 0] if mask.dim() == 4 else mask
    return valid(m > 0.5).flatten(1).any(1)


def mask_ssim(a, b, mask) -> torch.Tensor:
    """SSIM of the images with the background blacked out (the PG2 convention); mask (B, 1, H, W).
    NaN for an image whose mask is empty (both masked images are black: SSIM would be a meaningless 1)."""
    s = ssim(a * mask, b * mask)
    return torch.where(has_person(mask), s, torch.full_like(s, float("nan")))


def region_scores(gen: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image L1 (grey levels 0..255), colour error (distance of mean RGB, 0..255) and SSIM inside
    ``region`` (B, H, W); SSIM over the region's pixels in the valid part of the map. NaN for an empty region."""
    r = region.float()[:, None]
    n = r.flatten(1).sum(1)
    nan = torch.full_like(n, float("nan"))
    l1 = ((gen - truth).abs() * r).flatten(1).sum(1) / (3 * n.clamp(min=1)) * 255
    mean_g = (gen * r).flatten(2).sum(2) / n.clamp(min=1)[:, None]
    mean_t = (truth * r).flatten(2).sum(2) / n.clamp(min=1)[:, None]
    colour = (mean_g - mean_t).norm(dim=1) * 255
    rv = valid(region.float())
    nv = rv.flatten(1).sum(1)
    region_ssim = (ssim_map(gen, truth) * rv).flatten(1).sum(1) / nv.clamp(min=1)
    return {"l1": torch.where(n > 0, l1, nan), "colour": torch.where(n > 0, colour, nan),
            "ssim": torch.where(nv > 0, region_ssim, nan)}


def edge_energy(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-image sum of the absolute horizontal and vertical differences of neighbouring pixels (mean over the
    channels) of ``x`` (B, C, H, W), over the pairs of pixels that both lie in ``region`` (B, H, W). Blur lowers
    it: the ratio of a generated image's energy to the true image's in the same region is its sharpness."""
    r = region.bool()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(1) * (r[:, 1:] & r[:, :-1])
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(1) * (r[:, :, 1:] & r[:, :, :-1])
    return dy.flatten(1).sum(1) + dx.flatten(1).sum(1)


def nan_mean(values: torch.Tensor) -> tuple[float, int]:
    """Mean over the finite entries and the number of NaN entries left out (images without a person)."""
    ok = ~torch.isnan(values)
    return (float(values[ok].mean()) if ok.any() else float("nan")), int((~ok).sum())


def to01(x: torch.Tensor) -> torch.Tensor:
    return (x.float().cpu().clamp(-1, 1) + 1) / 2
