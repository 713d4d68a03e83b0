"""Building blocks shared by the networks: residual conv and FC blocks, FC stacks, TF-slim's initialisation."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


def activation():
    return nn.ReLU(inplace=True)


class ResBlock(nn.Module):
    """Two 3x3 convolutions, each followed by ReLU, added to the input (the official block: no normalisation)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + F.relu(self.conv2(F.relu(self.conv1(x))))


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases: TF-slim's defaults, which the official generator used."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResFC(nn.Module):
    """x + LReLU(FC(LReLU(FC(x)))), slope 0.2."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        return x + F.leaky_relu(self.fc2(F.leaky_relu(self.fc1(x), 0.2)), 0.2)


def fc_stack(in_dim: int, width: int, blocks: int, out_dim: int, first_act: bool = True) -> nn.Sequential:
    """FC (+ LReLU 0.2) -> ``blocks`` residual FC blocks -> linear FC: the pose-AE halves and the stage-II mappings."""
    head = [nn.Linear(in_dim, width)] + ([nn.LeakyReLU(0.2)] if first_act else [])
    return nn.Sequential(*head, *[ResFC(width) for _ in range(blocks)], nn.Linear(width, out_dim))
