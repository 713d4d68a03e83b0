"""Generated images joining real ones in re-ID training: label treatment per kind of generated image and batch
composition.

The treatments are the ones the field measured (DESIGN.md, "Using generated images for re-ID"):

- CamStyle (Zhong et al., CVPR 2018, Sec. 3.3): generated images of *real* identities keep the real label, make
  up about a quarter of each batch, and get label smoothing (eps = 0.1) on the generated images only.
- LSRO (Zheng et al., ICCV 2017, Sec. 3.2): an image of no real identity gets a uniform target over the *real*
  classes and adds no class; generated images stay out of pairwise and triplet losses.

Two kinds of generated image:

- a *remix* re-renders a real training identity (a ``fg_mode: real`` build) and carries its real pid, so its class
  is that identity's real class;
- a *new* identity (a Virtual Market identity). ``onehot`` and ``smooth`` give each new identity a class past the
  real ones (as the pooled ``real+virtual`` merge does); ``lsro`` adds none.

Label treatment (generated rows only; real rows keep torchreid's target, (1 - 0.1) one-hot + 0.1 / C, as the
engine ``build_engine`` makes uses it): ``onehot``, ``smooth`` ((1 - eps) one-hot + eps / C) or ``lsro`` (1 / K on
each of the K real classes). The loss is one soft-target cross-entropy over every row of the batch, torchreid's own
formula ``(-T * log_softmax).mean(0).sum()``, so the generated rows weigh what their share of the batch is.

Batch composition at share s: the real part of every batch *is* the batch of the real-only run at that step
(torchreid's train loader, untouched: same size ``train.batch``, same order and flips for a seed), and
``round(batch * s / (1 - s))`` generated images are appended. So at matched steps the real part sees exactly the
real-only run's samples, and s = 0 trains bit for bit as the real-only run. Which generated images join step t is
a pure function of (seed, t), drawn from numpy generators of their own, never from the global RNGs torchreid's
sampler and flips use: adding generated images cannot shift the real part, and a resumed run draws exactly what
the killed one would have.

With the triplet loss, the triplet term sees the real rows only, plus the remix rows when asked (``triplet``);
those remixes are then drawn for the identities of the batch's real part, so each finds real positives there.
New-identity images never join it. torchreid's engine and triplet loss stay in ``reid.torchreid_adapter``; this
module is plain torch and numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from generator.errors import UserError

LabelTreatment = Literal["onehot", "smooth", "lsro"]
LABEL_TREATMENTS = ("onehot", "smooth", "lsro")
REAL_EPSILON = 0.1  # torchreid's CrossEntropyLoss eps with label_smooth=True, as build_engine sets for real images


def train_labels(records: list) -> dict[int, int]:
    """pid -> class index 0..N-1 over the sorted pids of ``records``, the relabelling torchreid's datasets get."""
    return {pid: i for i, pid in enumerate(sorted({p for _, p, _ in records}))}


def generated_per_batch(batch: int, share: float) -> int:
    """Generated images appended to a real batch of ``batch`` so that they make ``share`` of it."""
    if not 0 <= share < 1:
        raise UserError(f"virtual_share={share}: use a share of the batch in [0, 1)")
    return round(batch * share / (1 - share))


@dataclass
class GeneratedPool:
    """Generated training images with their classes (the real classes first, in torchreid's order)."""
    paths: list[str]
    labels: np.ndarray  # (N,) int64 class index; -1 for a new identity under lsro (no class)
    remix: np.ndarray  # (N,) bool: a remix of a real identity, else a new identity
    num_real: int  # real classes K
    num_classes: int  # classes C of the model when generated images are trained on: K + new ones (none under lsro)
    remix_by_label: dict[int, np.ndarray] = field(default_factory=dict)  # real class -> pool indices of its remixes


def generated_pool(real_train: list, remix: list = (), new: list = (), treatment: LabelTreatment = "onehot"
                   ) -> GeneratedPool:
    """The pool of generated records ``(path, pid, camid)``: ``remix`` ones carry real training pids, ``new`` ones
    are identities of their own (their pid numbers may repeat real ones: they are told apart by source)."""
    if treatment not in LABEL_TREATMENTS:
        raise UserError(f"virtual_label={treatment!r}: use one of {', '.join(LABEL_TREATMENTS)}")
    real = train_labels(real_train)
    for path, pid, _ in remix:
        if pid not in real:
            raise UserError(f"{path}: a remix of pid {pid}, which is no real training identity; a remix keeps its "
                            "source image's real pid (build it with fg_mode: real from the same real data)")
    num_real = len(real)
    new_pids = train_labels(new)
    add = 0 if treatment == "lsro" else len(new_pids)
    labels = [real[p] for _, p, _ in remix] + [-1 if treatment == "lsro" else num_real + new_pids[p] for _, p, _ in new]
    is_remix = np.array([True] * len(remix) + [False] * len(new), dtype=bool)
    labels = np.array(labels, dtype=np.int64)
    by_label = {int(k): np.flatnonzero(is_remix & (labels == k)) for k in np.unique(labels[is_remix])}
    return GeneratedPool([r[0] for r in remix] + [r[0] for r in new], labels, is_remix, num_real,
                         num_real + add, by_label)


@dataclass
class Mix:
    """How generated images join a real training run (one ablation setting's mix and its images)."""
    pool: GeneratedPool
    share: float  # generated share of every batch, in [0, 1)
    treatment: LabelTreatment = "onehot"  # label treatment of the generated images
    epsilon: float = 0.1  # smoothing of the `smooth` treatment
    triplet: bool = False  # remixes join the triplet term (new identities never do)

    def num_classes(self, batch: int) -> int:
        """The model's class count: the real classes alone when no generated image is trained on (s = 0)."""
        return self.pool.num_classes if generated_per_batch(batch, self.share) else self.pool.num_real

    def summary(self, batch: int) -> dict:
        """What a finished or half-done run records, so that it is never reused for another mix."""
        return {"virtual_share": self.share, "virtual_label": self.treatment, "virtual_epsilon": self.epsilon,
                "virtual_triplet": self.triplet, "generated_per_batch": generated_per_batch(batch, self.share),
                "remix_images": int(self.pool.remix.sum()), "new_images": int((~self.pool.remix).sum())}


def soft_targets(real_labels: torch.Tensor, generated_labels: torch.Tensor, num_classes: int, num_real: int,
                 treatment: LabelTreatment = "onehot", epsilon: float = 0.1) -> torch.Tensor:
    """(B + G, C) target distributions: the B real rows as torchreid's smoothed cross-entropy makes them, then the
    G generated rows under ``treatment``."""
    # real rows: torchreid's own ops in its order (python-float scalars), so the s = 0 loss is bit for bit its loss
    real = torch.zeros(len(real_labels), num_classes).scatter_(1, real_labels.unsqueeze(1), 1)
    real = (1 - REAL_EPSILON) * real + REAL_EPSILON / num_classes
    if len(generated_labels) == 0:
        return real
    if treatment == "lsro":
        generated = torch.zeros(len(generated_labels), num_classes)
        generated[:, :num_real] = 1 / num_real
    else:
        generated = torch.zeros(len(generated_labels), num_classes).scatter_(1, generated_labels.unsqueeze(1), 1)
        if treatment == "smooth":
            generated = (1 - epsilon) * generated + epsilon / num_classes
    return torch.cat([real, generated])


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions, torchreid's formula: summed over classes, mean over rows."""
    return (-targets * F.log_softmax(logits, dim=1)).mean(0).sum()


class GeneratedDraws:
    """Which generated images join the batch of optimiser step ``step``, and which are flipped: shuffled passes over
    the pool, pass k from ``numpy.random.default_rng([seed, 0, k])``; a pure function of (seed, step)."""

    def __init__(self, size: int, per_batch: int, seed: int):
        self.size, self.per_batch, self.seed = size, per_batch, seed
        self._pass: tuple[int, np.ndarray, np.ndarray] = (-1, np.empty(0, np.int64), np.empty(0, bool))

    def _order(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pass[0] != k:
            rng = np.random.default_rng([self.seed, 0, k])
            self._pass = (k, rng.permutation(self.size), rng.random(self.size) < 0.5)
        return self._pass[1], self._pass[2]

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(G,) pool indices and (G,) horizontal flips."""
        index, flip = np.empty(self.per_batch, np.int64), np.empty(self.per_batch, bool)
        for j, position in enumerate(range(step * self.per_batch, (step + 1) * self.per_batch)):
            k, i = divmod(position, self.size)
            order, flips = self._order(k)
            index[j], flip[j] = order[i], flips[i]
        return index, flip

    def match_remixes(self, index: np.ndarray, pool: GeneratedPool, real_labels: list[int], step: int) -> np.ndarray:
        """``index`` with each remix swapped for a remix of an identity of the real part (each identity in turn, in
        the order of first appearance), so that it has real positives in the triplet term; new identities stay."""
        present = [k for k in dict.fromkeys(real_labels) if k in pool.remix_by_label]
        if not present:
            return index
        rng = np.random.default_rng([self.seed, 1, step])
        out, turn = index.copy(), 0
        for j, i in enumerate(index):
            if pool.remix[i]:
                candidates = pool.remix_by_label[present[turn % len(present)]]
                out[j] = candidates[rng.integers(len(candidates))]
                turn += 1
        return out


class MixedLoader:
    """torchreid's train loader (the real part, untouched) with the generated part appended to every batch.

    Yields torchreid's batch dict with ``img`` (B + G, 3, H, W), ``pid`` (B + G,) class indices (-1: no class),
    ``target`` (B + G, C) soft targets and ``in_triplet`` (B + G,) bool. ``step`` counts the optimiser steps done;
    the training loop sets it at the start of every epoch (a resumed run continues from its state's count).
    """

    def __init__(self, real_loader, mix: Mix, seed: int, load_image: Callable[[str, int], torch.Tensor]):
        self.real_loader, self.mix, self.load_image = real_loader, mix, load_image
        self.batch_size = real_loader.batch_size
        self.per_batch = generated_per_batch(self.batch_size, mix.share)
        self.num_classes = mix.num_classes(self.batch_size)
        self.draws = GeneratedDraws(len(mix.pool.paths), self.per_batch, seed)
        if self.per_batch and not mix.pool.paths:
            raise UserError("the generated training set is empty: virtual_share > 0 needs generated images")
        self.step = 0

    def __len__(self) -> int:
        return len(self.real_loader)

    def __iter__(self):
        for real in self.real_loader:
            yield self.combine(real)

    def combine(self, real: dict) -> dict:
        """One batch: the real batch ``real`` (torchreid's dict) and the generated images of step ``self.step``."""
        pool, labels = self.mix.pool, real["pid"]
        index, flip = self.draws(self.step)
        if self.mix.triplet:
            index = self.draws.match_remixes(index, pool, labels.tolist(), self.step)
        self.step += 1
        generated_labels = torch.from_numpy(pool.labels[index])
        targets = soft_targets(labels, generated_labels, self.num_classes, pool.num_real, self.mix.treatment,
                               self.mix.epsilon)
        in_triplet = torch.cat([torch.ones(len(labels), dtype=torch.bool),
                                torch.from_numpy(pool.remix[index] & self.mix.triplet)])
        if not len(index):
            return {**real, "target": targets, "in_triplet": in_triplet}
        # (3, H, W) each; the key seeds the image's random train transforms: a function of (seed, step, slot)
        keys = np.random.default_rng([self.draws.seed, 2, self.step - 1]).integers(2 ** 62, size=len(index))
        images = [self.load_image(pool.paths[i], int(k)) for i, k in zip(index, keys, strict=True)]
        images = torch.stack([im.flip(-1) if f else im for im, f in zip(images, flip, strict=True)])
        return {**real, "img": torch.cat([real["img"], images]), "pid": torch.cat([labels, generated_labels]),
                "impath": list(real["impath"]) + [pool.paths[i] for i in index], "target": targets,
                "in_triplet": in_triplet}
