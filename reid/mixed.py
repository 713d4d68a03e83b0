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
  real ones (as the pooled ``real+virtual`` merge does); ``lsro`` adds none (and a remix under ``lsro`` keeps its
  real class, one-hot: the uniform target is for images of no real identity).

Label treatment (generated rows only; real rows keep torchreid's target, (1 - 0.1) one-hot + 0.1 / C, as the
engine ``build_engine`` makes uses it): ``onehot``, ``smooth`` ((1 - eps) one-hot + eps / C) or ``lsro`` (1 / K on
each of the K real classes). The loss is one soft-target cross-entropy over every row of the batch, torchreid's own
formula ``(-T * log_softmax).mean(0).sum()``, so the generated rows weigh what their share of the batch is.

Batch composition at share s: the real part of every batch *is* the batch of the real-only run at that step
(torchreid's train loader, untouched: same size ``train.batch``, same order and flips for a seed), and
``round(batch * s / (1 - s))`` generated images are appended. A combined mix (``Mix.more``: cut-and-paste and
generator remixes, say) appends several kinds, each at its own share s_i of the batch and with its own label
treatment: ``round(batch * s_i / (1 - S))`` images of kind i, S the shares' sum, in the order of the parts, each kind
drawn from a stream of its own. So at matched steps the real part sees exactly the
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
    return parts_per_batch(batch, [share])[0]


def parts_per_batch(batch: int, shares: list[float]) -> list[int]:
    """Images of each kind appended to a real batch of ``batch`` so that kind i makes ``shares[i]`` of it."""
    total = sum(shares)
    if not 0 <= total < 1 or min(shares) < 0:
        raise UserError(f"virtual_share={shares[0] if len(shares) == 1 else shares}: use shares of the batch in "
                        f"[0, 1) whose sum is below 1")
    return [round(batch * s / (1 - total)) for s in shares]


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
    """How generated images join a real training run (one ablation setting's mix and its images). ``more``: further
    kinds of generated image of a combined mix, each a Mix of its own pool, share and label treatment (their
    ``triplet`` and ``more`` are this one's)."""
    pool: GeneratedPool
    share: float  # generated share of every batch, in [0, 1)
    treatment: LabelTreatment = "onehot"  # label treatment of the generated images
    epsilon: float = 0.1  # smoothing of the `smooth` treatment
    triplet: bool = False  # remixes join the triplet term (new identities never do)
    more: list[Mix] = field(default_factory=list)
    # its generated data: a further kind's folder name (recorded in its runs' results, which are reused only for the
    # same data); the first kind's folder and manifest origins (reid.ablation.check_kind; named in results.md)
    data: str = ""

    def __post_init__(self):
        pools = [self.pool] + [m.pool for m in self.more]
        if len({p.num_real for p in pools}) > 1:
            raise UserError("the kinds of a combined mix were labelled against different real training sets")
        if sum(1 for p in pools if p.num_classes > p.num_real) > 1:
            raise UserError("a combined mix holds new identities as classes of their own in more than one kind; "
                            "put the new identities in one kind (or give the others lsro)")

    @property
    def parts(self) -> list[Mix]:
        return [self, *self.more]

    def per_batch(self, batch: int) -> list[int]:
        """Images of each part appended to every real batch of ``batch``."""
        return parts_per_batch(batch, [m.share for m in self.parts])

    def num_classes(self, batch: int) -> int:
        """The model's class count: the real classes, and the new identities' classes of a part that is trained on
        (none when no generated image is, s = 0)."""
        counts = self.per_batch(batch)
        return max([self.pool.num_real] + [m.pool.num_classes for m, n in zip(self.parts, counts, strict=True) if n])

    def summary(self, batch: int) -> dict:
        """What a finished or half-done run records, so that it is never reused for another mix."""
        counts = self.per_batch(batch)
        out = {"virtual_share": self.share, "virtual_label": self.treatment, "virtual_epsilon": self.epsilon,
               "virtual_triplet": self.triplet, "generated_per_batch": counts[0],
               "remix_images": int(self.pool.remix.sum()), "new_images": int((~self.pool.remix).sum())}
        if self.more:
            out["more"] = [{"data": m.data, "virtual_share": m.share, "virtual_label": m.treatment,
                            "virtual_epsilon": m.epsilon, "generated_per_batch": n,
                            "remix_images": int(m.pool.remix.sum()),
                            "new_images": int((~m.pool.remix).sum())}
                           for m, n in zip(self.more, counts[1:], strict=True)]
        return out


def soft_targets(real_labels: torch.Tensor, generated_labels: torch.Tensor, num_classes: int, num_real: int,
                 treatment: LabelTreatment = "onehot", epsilon: float = 0.1) -> torch.Tensor:
    """(B + G, C) target distributions: the B real rows as torchreid's smoothed cross-entropy makes them, then the
    G generated rows under ``treatment``."""
    # real rows: torchreid's own ops in its order (python-float scalars), so the s = 0 loss is bit for bit its loss
    real = torch.zeros(len(real_labels), num_classes).scatter_(1, real_labels.unsqueeze(1), 1)
    real = (1 - REAL_EPSILON) * real + REAL_EPSILON / num_classes
    if len(generated_labels) == 0:
        return real
    if treatment == "lsro":  # uniform over the real classes for an image of no identity (label -1); a remix shows
        # a real identity and keeps its class
        known = generated_labels >= 0
        generated = torch.zeros(len(generated_labels), num_classes)
        generated[~known, :num_real] = 1 / num_real
        generated[known, generated_labels[known]] = 1
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
    the pool, pass k from ``numpy.random.default_rng([seed, 0, k])`` (part p > 0 of a combined mix:
    ``[seed, 0, k, p]``); a pure function of (seed, step)."""

    def __init__(self, size: int, per_batch: int, seed: int, part: int = 0):
        self.size, self.per_batch, self.seed, self.part = size, per_batch, seed, part
        self._pass: tuple[int, np.ndarray, np.ndarray] = (-1, np.empty(0, np.int64), np.empty(0, bool))

    def _order(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pass[0] != k:
            rng = np.random.default_rng([self.seed, 0, k] + ([self.part] if self.part else []))
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
        rng = np.random.default_rng([self.seed, 1, step] + ([self.part] if self.part else []))
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
    ``target`` (B + G, C) soft targets and ``in_triplet`` (B + G,) bool; a combined mix's kinds follow each other
    in the order of its parts. ``step`` counts the optimiser steps done; the training loop sets it at the start of
    every epoch (a resumed run continues from its state's count).
    """

    def __init__(self, real_loader, mix: Mix, seed: int, load_image: Callable[[str, int], torch.Tensor]):
        self.real_loader, self.mix, self.load_image = real_loader, mix, load_image
        self.batch_size = real_loader.batch_size
        self.counts = mix.per_batch(self.batch_size)
        self.per_batch = sum(self.counts)
        self.num_classes = mix.num_classes(self.batch_size)
        self.draws = [GeneratedDraws(len(m.pool.paths), n, seed, part)
                      for part, (m, n) in enumerate(zip(mix.parts, self.counts, strict=True))]
        if any(n and not m.pool.paths for m, n in zip(mix.parts, self.counts, strict=True)):
            raise UserError("the generated training set is empty: virtual_share > 0 needs generated images")
        self.seed = seed
        self.step = 0

    def __len__(self) -> int:
        return len(self.real_loader)

    def __iter__(self):
        for real in self.real_loader:
            yield self.combine(real)

    def combine(self, real: dict) -> dict:
        """One batch: the real batch ``real`` (torchreid's dict) and the generated images of step ``self.step``."""
        labels, step = real["pid"], self.step
        self.step += 1
        targets, in_triplet = [], [torch.ones(len(labels), dtype=torch.bool)]
        gen_labels, images, paths = [], [], []
        for part, (m, draws) in enumerate(zip(self.mix.parts, self.draws, strict=True)):
            pool = m.pool
            index, flip = draws(step)
            if self.mix.triplet:
                index = draws.match_remixes(index, pool, labels.tolist(), step)
            part_labels = torch.from_numpy(pool.labels[index])
            t = soft_targets(labels, part_labels, self.num_classes, pool.num_real, m.treatment, m.epsilon)
            targets.append(t if part == 0 else t[len(labels):])
            in_triplet.append(torch.from_numpy(pool.remix[index] & self.mix.triplet))
            if not len(index):
                continue
            # (3, H, W) each; the key seeds the image's random train transforms: a function of (seed, step, slot)
            keys = np.random.default_rng([self.seed, 2, step] + ([part] if part else [])).integers(
                2 ** 62, size=len(index))
            loaded = [self.load_image(pool.paths[i], int(k)) for i, k in zip(index, keys, strict=True)]
            images += [im.flip(-1) if f else im for im, f in zip(loaded, flip, strict=True)]
            gen_labels.append(part_labels)
            paths += [pool.paths[i] for i in index]
        targets, in_triplet = torch.cat(targets), torch.cat(in_triplet)
        if not images:
            return {**real, "target": targets, "in_triplet": in_triplet}
        return {**real, "img": torch.cat([real["img"], torch.stack(images)]),
                "pid": torch.cat([labels, *gen_labels]), "impath": list(real["impath"]) + paths, "target": targets,
                "in_triplet": in_triplet}
