"""The pose autoencoder of the pose branch (Sec. 3.1): 54-D keypoint vector <-> 32-D pose embedding."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from generator.config import check_ranges
from generator.models.layers import fc_stack


@dataclass
class PoseModelConfig:
    emb_dim: int = 32  # pose embedding
    width: int = 512  # FC width
    blocks: int = 4  # residual FC blocks in each half

    def __post_init__(self):
        check_ranges(self, positive=("emb_dim", "width"), non_negative=("blocks",))


class PoseAutoencoder(nn.Module):
    """54-D keypoint vector <-> 32-D pose embedding (Sec. 3.1, pose branch).

    Encoder: FC 512 + LReLU, 4 residual FC blocks, FC 32. Decoder: FC 512 (no activation),
    4 residual FC blocks, then two heads: 36 coordinates (linear) and 18 visibilities
    (sigmoid, rounded in the forward pass with a straight-through gradient).
    """

    def __init__(self, joints: int = 18, emb_dim: int = 32, width: int = 512, blocks: int = 4):
        super().__init__()
        self.joints, self.emb_dim = joints, emb_dim
        self.encoder = fc_stack(joints * 3, width, blocks, emb_dim)
        self.decoder = fc_stack(emb_dim, width, blocks, width, first_act=False)[:-1]  # trunk without its last FC
        self.coords = nn.Linear(width, joints * 2)
        self.visibility = nn.Linear(width, joints)

    def encode(self, pose_vector):
        return self.encoder(pose_vector)

    def decode(self, emb, hard: bool = True):
        h = self.decoder(emb)
        coords = self.coords(h).view(-1, self.joints, 2)
        vis = torch.sigmoid(self.visibility(h))
        if hard:
            vis = vis + ((vis > 0.5).to(vis.dtype) - vis).detach()  # straight-through binarisation
        return torch.cat([coords, vis[..., None]], -1).flatten(1)  # (B, 54) interleaved like the input

    def forward(self, pose_vector):
        emb = self.encode(pose_vector)
        return self.decode(emb), emb


def build_pose_ae(m: PoseModelConfig) -> PoseAutoencoder:
    return PoseAutoencoder(emb_dim=m.emb_dim, width=m.width, blocks=m.blocks)
