"""SimMarket identities: the appearance parameters of a person (the foreground factor), the part labels
they colour, and look-alike groups.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# part labels of the label map; the palette of an identity gives each its colour
BG, SKIN, HAIR, TOP, SLEEVE, BOTTOM, LOWER_LEG, SHOES, BAG, HAT, PRINT, OCCLUDER = range(12)


NUM_LABELS = 12


# clothing colours weighted towards the dark and neutral colours of street clothes
_CLOTHES = np.array([
    [25, 25, 28], [40, 40, 45], [235, 235, 230], [128, 128, 128], [170, 170, 175], [30, 40, 90],
    [60, 90, 160], [150, 30, 35], [40, 110, 55], [190, 170, 120], [110, 70, 40], [220, 120, 160],
    [225, 200, 50], [140, 190, 230], [100, 50, 130], [230, 110, 40], [80, 100, 60], [200, 60, 60],
], dtype=np.float32)


_CLOTHES_W = np.array([9, 6, 6, 5, 4, 6, 4, 3, 2, 3, 3, 2, 2, 2, 2, 1, 2, 2], dtype=np.float64)

_SKIN = np.array([[240, 200, 170], [225, 180, 145], [195, 150, 110], [150, 105, 75], [100, 70, 50]], np.float32)

_HAIR = np.array([[20, 18, 15], [55, 35, 20], [100, 70, 40], [200, 170, 100], [150, 150, 150], [120, 40, 20]],
                 np.float32)

_HAIR_W = np.array([8, 6, 3, 2, 1, 1], dtype=np.float64)

PATTERNS = ("solid", "hstripes", "vstripes", "check", "front_logo", "back_print")

_PATTERN_W = np.array([8, 2, 1, 1, 2, 2], dtype=np.float64)


def keyed_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _colour(rng, table, weights=None, jitter=12.0) -> list[int]:
    p = None if weights is None else weights / weights.sum()
    c = table[rng.choice(len(table), p=p)] + rng.normal(0, jitter, 3)
    return [int(v) for v in np.clip(c, 0, 255)]


@dataclass
class Identity:
    """Appearance of one person (the foreground factor)."""

    index: int  # position in the dataset's identity list
    skin: list[int]
    hair: list[int]
    hair_style: str  # short | long | bald
    top: list[int]
    top_alt: list[int]  # second colour of the pattern
    top_pattern: str  # one of PATTERNS; front_logo / back_print show from one side only
    sleeves: str  # short | long
    bottom: list[int]
    bottom_style: str  # trousers | shorts | skirt
    shoes: list[int]
    bag: str  # none | backpack | shoulder
    bag_colour: list[int]
    hat: bool
    hat_colour: list[int]
    build: float  # limb and torso thickness factor
    height: float  # stature factor (used when poses are sampled for this identity)
    group: int = -1  # look-alike group, -1 if none

    def palette(self) -> np.ndarray:
        pal = np.zeros((NUM_LABELS, 3), np.float32)
        pal[SKIN] = self.skin
        pal[HAIR] = self.hair
        pal[TOP] = self.top
        pal[SLEEVE] = self.top if self.sleeves == "long" else self.skin
        pal[BOTTOM] = self.bottom
        pal[LOWER_LEG] = self.bottom if self.bottom_style == "trousers" else self.skin
        pal[SHOES] = self.shoes
        pal[BAG] = self.bag_colour
        pal[HAT] = self.hat_colour
        pal[PRINT] = self.top_alt
        return pal


def sample_identity(rng: np.random.Generator, index: int) -> Identity:
    top = _colour(rng, _CLOTHES, _CLOTHES_W)
    return Identity(
        index=index,
        skin=_colour(rng, _SKIN, jitter=8),
        hair=_colour(rng, _HAIR, _HAIR_W, jitter=8),
        hair_style=str(rng.choice(["short", "long", "bald"], p=[0.6, 0.33, 0.07])),
        top=top,
        top_alt=_colour(rng, _CLOTHES, _CLOTHES_W),
        top_pattern=str(rng.choice(PATTERNS, p=_PATTERN_W / _PATTERN_W.sum())),
        sleeves=str(rng.choice(["short", "long"], p=[0.45, 0.55])),
        bottom=_colour(rng, _CLOTHES, _CLOTHES_W),
        bottom_style=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.7, 0.2, 0.1])),
        shoes=_colour(rng, _CLOTHES[[0, 1, 2, 3, 9, 10]]),
        bag=str(rng.choice(["none", "backpack", "shoulder"], p=[0.55, 0.3, 0.15])),
        bag_colour=_colour(rng, _CLOTHES, _CLOTHES_W),
        hat=bool(rng.random() < 0.1),
        hat_colour=_colour(rng, _CLOTHES, _CLOTHES_W),
        build=float(rng.uniform(0.85, 1.25)),
        height=float(rng.uniform(0.9, 1.04)),
    )


def lookalike(base: Identity, rng: np.random.Generator, index: int, group: int) -> Identity:
    """A near copy of ``base``: same colours and style, one or two subtle attributes changed."""
    d = asdict(base)
    d.update(index=index, group=group, build=float(np.clip(base.build + rng.normal(0, 0.05), 0.85, 1.25)),
             height=float(np.clip(base.height + rng.normal(0, 0.02), 0.9, 1.04)))
    for c in ("top", "bottom", "skin", "hair"):
        d[c] = [int(v) for v in np.clip(np.asarray(d[c]) + rng.normal(0, 6, 3), 0, 255)]
    changes = rng.choice(["pattern", "shoes", "bag", "hair", "sleeves", "hat"], size=int(rng.integers(1, 3)),
                         replace=False)
    for ch in changes:
        if ch == "pattern":
            d["top_pattern"] = str(rng.choice(["front_logo", "back_print", "solid", "hstripes"]))
            d["top_alt"] = _colour(rng, _CLOTHES, _CLOTHES_W)
        elif ch == "shoes":
            d["shoes"] = _colour(rng, _CLOTHES[[0, 2, 9, 10]])
        elif ch == "bag":
            d["bag"] = str(rng.choice(["none", "backpack", "shoulder"]))
            d["bag_colour"] = _colour(rng, _CLOTHES, _CLOTHES_W)
        elif ch == "hair":
            d["hair_style"] = str(rng.choice(["short", "long"]))
        elif ch == "sleeves":
            d["sleeves"] = "short" if base.sleeves == "long" else "long"
        elif ch == "hat":
            d["hat"] = not base.hat
    return Identity(**d)


def make_identities(seed: int, n: int, lookalike_share: float = 0.4) -> list[Identity]:
    """``n`` identities; about ``lookalike_share`` of them in groups of 2-4 near copies."""
    rng = keyed_rng(seed, 1)
    ids: list[Identity] = []
    group = 0
    while len(ids) < n:
        base = sample_identity(keyed_rng(seed, 2, len(ids)), len(ids))
        if rng.random() < lookalike_share / 2.5 and n - len(ids) >= 2:
            size = int(min(rng.integers(2, 5), n - len(ids)))
            base.group = group
            ids.append(base)
            for _ in range(size - 1):
                ids.append(lookalike(base, keyed_rng(seed, 3, len(ids)), len(ids), group))
            group += 1
        else:
            ids.append(base)
    return ids
