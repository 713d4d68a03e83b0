"""Identity loss on remixed people (beyond the paper, after DG-Net Sec. 3.2 and FD-GAN): a small re-ID classifier,
trained on the labelled real images alongside stage I, scores stage I's remixes (the foreground and background of
image i decoded in the pose of another image of the batch) and pulls each toward the identity of i. Sec. 3.1's
reconstruction loss only ever sees a person in their own pose; this term asks that a person keep their identity in
a pose they were not seen in, which is what the Virtual Market builder's remixes are used for in re-ID.

The classifier is the critic's counterpart: it trains on real images only (cross-entropy over the labelled
identities) and is frozen while it scores the generator's remixes. Images of unlabelled roots carry no identity
and are left out of both terms.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from generator.pose import shows_person

IGNORE = -1  # the label of an image without an identity (unlabelled data)


class IdentityClassifier(nn.Module):
    """4 x (3x3 conv, BN, ReLU, stride 2) at widths ch..8ch, global average pooling -> (B, 8ch) re-ID feature,
    then a linear layer -> (B, num_ids) identity logits."""

    def __init__(self, num_ids: int, ch: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for i in range(4):
            layers += [nn.Conv2d(c_in, ch * 2 ** i, 3, stride=2, padding=1), nn.BatchNorm2d(ch * 2 ** i),
                       nn.ReLU(inplace=True)]
            c_in = ch * 2 ** i
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_ids)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def identity_labels(pids: list[int], labelled: int) -> torch.Tensor:
    """(N,) class index of each dataset image: its pid's rank among the pids of the first ``labelled`` images
    (the labelled root); ``IGNORE`` for the images after them (unlabelled roots)."""
    classes = {p: i for i, p in enumerate(sorted(set(pids[:labelled])))}
    return torch.tensor([classes[p] for p in pids[:labelled]] + [IGNORE] * (len(pids) - labelled))


def remix(G: nn.Module, batch: dict, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W): the foreground and background embeddings of image i decoded in the pose of image i - 1 of
    the batch (the last for the first: a pose of someone else, or of the same person elsewhere);
    ``IdentityTerm.targets(remixed=True)`` gives its labels."""
    return G.decode(fg, bg, batch["pose_maps"].roll(1, 0))


class IdentityTerm:
    """The classifier, its optimiser and the labels of a training set; ``update`` trains the classifier on a real
    batch, ``loss`` scores the generator's remixes of it."""

    def __init__(self, labels: torch.Tensor, device: torch.device, lr: float, ch: int = 32):
        self.labels = labels.to(device)
        self.classifier = IdentityClassifier(int(labels.max()) + 1, ch).to(device)
        self.opt = torch.optim.Adam(self.classifier.parameters(), lr=lr, betas=(0.9, 0.999))

    def targets(self, batch: dict, remixed: bool = False) -> torch.Tensor:
        """(B,) class of each image of ``batch`` (``remixed``: of its remix); ``IGNORE`` for unlabelled images,
        images that show no person (``generator.pose.shows_person``), and remixes into a pose that shows none
        (an empty pose is what the person-free plates are decoded from: no one may be drawn there)."""
        y = self.labels[batch["index"].to(self.labels.device)]
        person = torch.from_numpy(shows_person(batch["keypoints"].cpu().numpy())).to(y.device)
        if remixed:
            person &= person.roll(1, 0)  # the pose comes from image i - 1 (``remix``)
        return torch.where(person, y, torch.full_like(y, IGNORE))

    def update(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One classifier step on the real images; (loss, accuracy) on the labelled ones."""
        y = self.targets(batch)
        keep = y != IGNORE
        if not keep.any():
            return torch.zeros(()), torch.zeros(())
        self.classifier.requires_grad_(True)
        logits = self.classifier(batch["image"].float())
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach(), (logits.argmax(1)[keep] == y[keep]).float().mean().detach()

    def loss(self, images: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy of the frozen classifier on ``images`` (the remixes of ``batch``) against the identities
        of the people they should show."""
        y = self.targets(batch, remixed=True)
        if not (y != IGNORE).any():
            return images.sum() * 0  # keeps the graph, adds nothing
        self.classifier.requires_grad_(False)
        self.classifier.eval()  # batch-norm statistics of real images only
        loss = F.cross_entropy(self.classifier(images.float()), y, ignore_index=IGNORE)
        self.classifier.train()
        return loss
