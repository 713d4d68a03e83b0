"""Stage-II networks (Sec. 3.2): the mappings Phi_fg, Phi_bg, Phi_pose from Gaussian noise to embeddings, and
their WGAN critics."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from generator.config import check_ranges
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

    def __post_init__(self):
        check_ranges(self, positive=("width_fg", "width_bg", "width_pose", "critic_width", "z_std"),
                     non_negative=("blocks",))


def build_mapping(dim: int, width: int, blocks: int) -> nn.Module:
    """Phi: FC + ``blocks`` residual FC blocks + FC, noise (B, dim) -> embedding (B, dim)."""
    return fc_stack(dim, width, blocks, dim)


def build_critic(dim: int, width: int) -> nn.Module:
    """4 FC layers of ``width`` with LeakyReLU 0.2, then a linear score (no normalisation)."""
    return nn.Sequential(nn.Linear(dim, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                         nn.Linear(width, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                         nn.Linear(width, 1))


def mapping_width(m: Stage2ModelConfig, factor: str) -> int:
    return {"fg": m.width_fg, "bg": m.width_bg, "pose": m.width_pose}[factor]
