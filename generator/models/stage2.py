"""Stage-II networks (Sec. 3.2): the mappings Phi_fg, Phi_bg, Phi_pose from Gaussian noise to embeddings, and
their WGAN critics."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from generator.config import check_ranges, parse_override
from generator.errors import UserError
from generator.models.layers import fc_stack

FACTORS = ("fg", "bg", "pose")


@dataclass
class Stage2ModelConfig:
    width_fg: int = 512  # FC width of Phi_fg
    width_bg: int = 256  # FC width of Phi_bg
    width_pose: int = 512  # FC width of Phi_pose
    blocks: int = 4  # residual FC blocks in each mapping
    critic_width: int = 512  # FC width of each critic (4 FC layers)
    z_std: float = 0.2  # z ~ N(0, z_std^2), of the embedding's own size
    # beyond the paper: each mapping is the Gaussian fitted to its training embeddings plus the residual FC stack,
    # whose last layer starts at zero, so training starts from the Gaussian and adds what a Gaussian lacks
    gaussian_start: bool = False

    def __post_init__(self):
        check_ranges(self, positive=("width_fg", "width_bg", "width_pose", "critic_width", "z_std"),
                     non_negative=("blocks",))


def fit_gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, C) of the Gaussian fitted to ``x`` (N, dim), in float64: C is the Cholesky factor of the covariance
    (+1e-6 on the diagonal, so that it exists for a rank-deficient set)."""
    x = x.double()
    cov = torch.cov(x.T) + 1e-6 * torch.eye(x.shape[1], dtype=torch.float64)
    return x.mean(0), torch.linalg.cholesky(cov)


class GaussianStart(nn.Module):
    """Phi(z) = mean + (z / z_std) C^T + body(z): the Gaussian N(mean, C C^T) fitted to the training embeddings
    (``fit``; buffers, saved with the weights and never trained) plus a residual FC stack whose last layer starts at
    zero, so that the untrained mapping samples exactly that Gaussian."""

    def __init__(self, dim: int, width: int, blocks: int, z_std: float):
        super().__init__()
        self.z_std = z_std
        self.body = fc_stack(dim, width, blocks, dim)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("chol", torch.eye(dim))

    @torch.no_grad()
    def fit(self, real: torch.Tensor) -> "GaussianStart":
        """Take the Gaussian fitted to ``real`` (N, dim): ``fit_gaussian``."""
        mean, chol = fit_gaussian(real)
        self.mean.copy_(mean)
        self.chol.copy_(chol)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + (z / self.z_std) @ self.chol.T + self.body(z)


def build_mapping(dim: int, width: int, blocks: int, gaussian_start: bool = False, z_std: float = 0.2) -> nn.Module:
    """Phi: FC + ``blocks`` residual FC blocks + FC, noise (B, dim) -> embedding (B, dim); ``gaussian_start``: on
    top of the fitted Gaussian (``GaussianStart``, whose ``fit`` the training calls)."""
    if gaussian_start:
        return GaussianStart(dim, width, blocks, z_std)
    return fc_stack(dim, width, blocks, dim)


def build_critic(dim: int, width: int) -> nn.Module:
    """4 FC layers of ``width`` with LeakyReLU 0.2, then a linear score (no normalisation)."""
    return nn.Sequential(nn.Linear(dim, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                         nn.Linear(width, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                         nn.Linear(width, 1))


# the settings a stage-II config's per_factor entries ("FACTOR:KEY=VALUE") may set for one mapping; the rest (steps,
# batch, seeds, z_std, widths of the saved snapshot's layout aside) are the run's
FACTOR_KEYS = ("model.gaussian_start", "model.blocks", "model.critic_width", "train.objective", "train.lr",
               "train.critic_steps", "train.clip", "train.gp_weight")


def split_factor_entry(entry: str) -> tuple[str, list[str], object]:
    """'bg:train.objective=wgan-gp' -> ("bg", ["train", "objective"], "wgan-gp"); a UserError names a malformed
    entry."""
    factor, sep, setting = str(entry).partition(":")
    if not sep or factor not in FACTORS:
        raise UserError(f"per_factor: {entry!r}: expected FACTOR:KEY=VALUE with FACTOR one of {', '.join(FACTORS)}, "
                        f"e.g. 'bg:train.objective=wgan-gp'")
    keys, value = parse_override(setting, f"per_factor: {entry!r}")
    if ".".join(keys) not in FACTOR_KEYS:
        raise UserError(f"per_factor: {entry!r}: {'.'.join(keys)} is the same for every mapping; set one of "
                        f"{', '.join(FACTOR_KEYS)}")
    return factor, keys, value


def factor_settings(config: dict, factor: str) -> dict:
    """The stage-II config ``config`` (a plain dict, as a snapshot stores it) with the ``per_factor`` entries of
    ``factor`` applied to its model and train sections."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for entry in config.get("per_factor", []):
        f, (section, key), value = split_factor_entry(entry)
        if f == factor:
            out[section][key] = value
    return out


def mapping_width(m: Stage2ModelConfig, factor: str) -> int:
    return {"fg": m.width_fg, "bg": m.width_bg, "pose": m.width_pose}[factor]
