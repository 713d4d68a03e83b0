"""SimMarket: a procedural Market-1501-format dataset with known factors.

Every image is ``render(identity, pose, background)``: an identity is a set of
appearance parameters (clothing colours and patterns, build, hair, bag, hat),
a pose is 18 COCO joints plus an optional occluder, and a background is a
camera-specific template with that camera's lighting. Because the three are
independent inputs, SimMarket can render the *counterfactual* image (identity
A in the pose of B on the background of C) that measures factor swapping
(Sec. 3.1 of the paper is what the swaps test).

The dataset on disk holds the Market-1501 splits, the keypoint CSVs, a
manifest with one row per image, ``simmarket.json`` (seed and size, from
which the world of backgrounds and lighting is rebuilt), ``identities.json``
and ``poses.npz``; :class:`SimMarket` reads them back and re-renders any combination.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from generator.errors import UserError
from generator.keypoints import rcv_to_yx, write_keypoints_csv
from generator.market import SPLIT_DIRS, MarketWriter, format_name
from generator.pose import COCO18

VERSION = 1
NUM_CAMERAS = 6

# part labels of the label map; the palette of an identity gives each its colour
BG, SKIN, HAIR, TOP, SLEEVE, BOTTOM, LOWER_LEG, SHOES, BAG, HAT, PRINT, OCCLUDER = range(12)
NUM_LABELS = 12

VIEWS = ("front", "back", "left", "right")  # left/right: side views, facing that way in the image

# clothing colours weighted towards the dark and neutral colours of street clothes
_CLOTHES = np.array([
    [25, 25, 28], [40, 40, 45], [235, 235, 230], [128, 128, 128], [170, 170, 175], [30, 40, 90],
    [60, 90, 160], [150, 30, 35], [40, 110, 55], [190, 170, 120], [110, 70, 40], [220, 120, 160],
    [225, 200, 50], [140, 190, 230], [100, 50, 130], [230, 110, 40], [80, 100, 60], [200, 60, 60],
], dtype=np.float32)
_CLOTHES_W = np.array([9, 6, 6, 5, 4, 6, 4, 3, 2, 3, 3, 2, 2, 2, 2, 1, 2, 2], dtype=np.float64)
_SKIN = np.array([[240, 200, 170], [225, 180, 145], [195, 150, 110], [150, 105, 75], [100, 70, 50]], np.float32)
_HAIR = np.array([[20, 18, 15], [55, 35, 20], [100, 70, 40], [200, 170, 100], [150, 150, 150], [120, 40, 20]], np.float32)
_HAIR_W = np.array([8, 6, 3, 2, 1, 1], dtype=np.float64)
PATTERNS = ("solid", "hstripes", "vstripes", "check", "front_logo", "back_print")
_PATTERN_W = np.array([8, 2, 1, 1, 2, 2], dtype=np.float64)


def _rng(*key: int) -> np.random.Generator:
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
    changes = rng.choice(["pattern", "shoes", "bag", "hair", "sleeves", "hat"], size=int(rng.integers(1, 3)), replace=False)
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


@dataclass
class Pose:
    """An articulated pose in pixel coordinates (the pose factor)."""

    joints: np.ndarray  # (18, 2) float32 (row, col) of every joint, also of hidden ones
    visible: np.ndarray  # (18,) bool: annotated (in the image, not occluded, not turned away)
    view: str  # one of VIEWS
    scale: float  # person height in px, head top to soles
    occluder: tuple | None = None  # (y1, x1, y2, x2) px of an object in front of the person
    occluder_colour: tuple = (90, 90, 90)

    def rcv(self) -> np.ndarray:
        rcv = np.zeros((18, 3), np.float32)
        rcv[self.visible, :2] = self.joints[self.visible]
        rcv[:, 2] = self.visible
        return rcv


# the unit body: (row, col) in units of stature for the front view, col positive = image right,
# person's right side at negative col (facing the camera)
_UNIT = {
    "nose": (0.09, 0.0), "neck": (0.165, 0.0), "Rsho": (0.19, -0.1), "Lsho": (0.19, 0.1),
    "Rhip": (0.5, -0.062), "Lhip": (0.5, 0.062), "Reye": (0.07, -0.022), "Leye": (0.07, 0.022),
    "Rear": (0.075, -0.045), "Lear": (0.075, 0.045),
}
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.15, 0.135, 0.215, 0.215


def sample_pose(rng: np.random.Generator, height: int, width: int, stature: float = 1.0, view: str | None = None,
                phase: float | None = None, occlusion_p: float = 0.1, truncation_p: float = 0.06) -> Pose:
    """A walking pose with joint jitter, in a ``height`` x ``width`` image."""
    view = view or str(rng.choice(VIEWS, p=[0.3, 0.3, 0.2, 0.2]))
    phase = float(rng.uniform(0, 2 * math.pi)) if phase is None else phase
    s = height * 0.82 * stature * rng.uniform(0.92, 1.05)  # stature in px
    cx = width / 2 + rng.normal(0, 0.035 * width)
    top = (height - s) / 2 + rng.normal(0, 0.02 * height)
    truncated = rng.random() < truncation_p
    if truncated:
        top += rng.choice([-1, 1]) * rng.uniform(0.12, 0.25) * height
    j = {}
    swing = 0.38 * math.sin(phase)
    side = view in ("left", "right")
    d = 1.0 if view == "right" else -1.0  # walking direction in image columns for side views
    mirror = -1.0 if view == "back" else 1.0  # from the back, the person's right is on the image right
    for name, (r, c) in _UNIT.items():
        if side:
            c = {"nose": 0.05, "Reye": 0.035, "Leye": 0.035, "Rear": -0.01, "Lear": -0.01}.get(name, c * 0.15) * d
        j[name] = (r, c * mirror if not side else c)
    if side:  # shoulders and hips overlap, the near side a little in front
        near = "R" if view == "right" else "L"
        for part in ("sho", "hip"):
            for lr in "RL":
                j[lr + part] = (j[lr + part][0], (0.012 if lr == near else -0.012) * d)
    for lr, sgn in (("L", 1.0), ("R", -1.0)):
        leg = sgn * swing  # left and right legs swing in opposition
        arm = -0.7 * leg
        hip, sho = j[lr + "hip"], j[lr + "sho"]
        knee_bend = 0.35 * max(0.0, math.sin(phase + (0 if lr == "L" else math.pi) + 1.2))
        if side:
            knee = (hip[0] + _THIGH * math.cos(leg), hip[1] + _THIGH * math.sin(leg) * d)
            ank = (knee[0] + _SHIN * math.cos(leg - knee_bend), knee[1] + _SHIN * math.sin(leg - knee_bend) * d)
            elb = (sho[0] + _UPPER_ARM * math.cos(arm), sho[1] + _UPPER_ARM * math.sin(arm) * d)
            wri = (elb[0] + _FOREARM * math.cos(arm + 0.3), elb[1] + _FOREARM * math.sin(arm + 0.3) * d)
        else:  # swinging towards or away from the camera: foreshortening only
            out = 1.0 if hip[1] > 0 else -1.0
            knee = (hip[0] + _THIGH * math.cos(leg) * 0.98, hip[1] + out * 0.004)
            ank = (knee[0] + _SHIN * math.cos(leg - knee_bend), knee[1] + out * 0.002)
            elb = (sho[0] + _UPPER_ARM * (0.96 + 0.04 * math.cos(arm)), sho[1] + out * 0.03)
            wri = (elb[0] + _FOREARM * (0.95 + 0.05 * math.cos(arm)), elb[1] + out * 0.012)
        j[lr + "kne"], j[lr + "ank"], j[lr + "elb"], j[lr + "wri"] = knee, ank, elb, wri
    unit = np.array([j[n] for n in COCO18], np.float64)
    unit += rng.normal(0, 0.006, unit.shape)
    lean = rng.normal(0, 0.03)
    unit[:, 1] += lean * (unit[:, 0] - 0.5)
    joints = np.stack([top + unit[:, 0] * s, cx + unit[:, 1] * s], axis=1).astype(np.float32)

    visible = np.ones(18, bool)
    if view == "back":
        visible[[0, 14, 15]] = False  # nose and eyes face away
    elif side:
        far = "L" if view == "right" else "R"
        visible[[COCO18.index(far + "eye"), COCO18.index(far + "ear")]] = False
    occluder = None
    colour = tuple(int(v) for v in rng.integers(40, 200, 3))
    if rng.random() < occlusion_p:
        y1 = float(rng.uniform(0.55, 0.8) * height)
        if rng.random() < 0.5:
            x1, x2 = 0.0, float(width)
        else:
            w = rng.uniform(0.35, 0.6) * width
            x1 = float(rng.choice([0.0, width - w]))
            x2 = x1 + w
        occluder = (y1, x1, float(height), x2)
        inside = (joints[:, 0] >= y1) & (joints[:, 1] >= x1) & (joints[:, 1] < x2)
        visible &= ~inside
    in_image = (joints[:, 0] >= 0) & (joints[:, 0] <= height - 1) & (joints[:, 1] >= 0) & (joints[:, 1] <= width - 1)
    visible &= in_image
    return Pose(joints, visible, view, float(s), occluder, colour)


@dataclass
class Background:
    """A camera's scene: which template, where it is cropped (the background factor)."""

    camera: int  # 1..6
    variant: int  # template index within the camera
    offset: int  # column at which the template is cropped


@dataclass
class Camera:
    gain: float
    tint: np.ndarray  # (3,) colour multipliers
    offset: float  # black level
    noise: float  # sensor noise std in grey levels
    blur: float  # Gaussian blur radius in px


class World:
    """Backgrounds and camera lighting of a SimMarket seed; rebuilt identically from (seed, size)."""

    def __init__(self, seed: int, height: int, width: int, variants: int = 4):
        self.seed, self.height, self.width, self.variants = seed, height, width, variants
        self.margin = width // 2  # templates are wider than the image so crops can slide
        self.cameras: dict[int, Camera] = {}
        self.templates: dict[tuple[int, int], np.ndarray] = {}
        self.noise: dict[int, np.ndarray] = {}
        for cam in range(1, NUM_CAMERAS + 1):
            rng = _rng(seed, 7, cam)
            self.cameras[cam] = Camera(
                gain=float(rng.uniform(0.75, 1.2)), tint=rng.uniform(0.85, 1.15, 3).astype(np.float32),
                offset=float(rng.uniform(-10, 15)), noise=float(rng.uniform(2, 6)), blur=float(rng.uniform(0.2, 0.9)),
            )
            base = rng.uniform(60, 190) + rng.normal(0, 18, 3)  # mostly grey scenes with a colour cast
            for v in range(variants):
                self.templates[cam, v] = self._template(_rng(seed, 8, cam, v), base)
            # a bank of noise fields; each image takes one at a random shift
            self.noise[cam] = rng.normal(0, self.cameras[cam].noise, (height * 2, width * 2, 3)).astype(np.float32)

    def _template(self, rng, base) -> np.ndarray:
        h, w = self.height, self.width + self.margin
        horizon = int(rng.uniform(0.3, 0.6) * h)
        wall = np.clip(base + rng.normal(0, 30, 3), 0, 255)
        floor = np.clip(base * rng.uniform(0.5, 1.1) + rng.normal(0, 25, 3), 0, 255)
        img = np.empty((h, w, 3), np.float32)
        img[:horizon] = wall
        ramp = np.linspace(1.0, rng.uniform(0.6, 1.0), h - horizon)[:, None, None]
        img[horizon:] = floor * ramp
        x = 0
        while x < w:  # pillars, windows, shop fronts
            bw = int(rng.integers(4, max(6, w // 3)))
            if rng.random() < 0.6:
                top = int(rng.uniform(0, horizon * 0.6))
                img[top:horizon, x:x + bw] = np.clip(wall + rng.normal(0, 45, 3), 0, 255)
            x += bw + int(rng.integers(1, 10))
        for _ in range(int(rng.integers(0, 4))):  # floor lines
            y = int(rng.uniform(horizon, h))
            img[y:y + 1] *= rng.uniform(0.6, 0.9)
        for _ in range(int(rng.integers(1, 4))):  # clutter: bins, bikes, plants
            cy, cx = rng.uniform(horizon * 0.7, h), rng.uniform(0, w)
            ry, rx = rng.uniform(3, h / 6), rng.uniform(2, w / 6)
            yy, xx = np.ogrid[:h, :w]
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img[blob] = np.clip(base * rng.uniform(0.5, 1.3) + rng.normal(0, 30, 3), 0, 255)
        lowres = rng.normal(0, 10, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
        texture = np.asarray(Image.fromarray(((lowres + 128).clip(0, 255)).astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32) - 128
        return np.clip(img + texture, 0, 255).astype(np.float32)

    def sample_background(self, rng: np.random.Generator, camera: int) -> Background:
        return Background(camera, int(rng.integers(self.variants)), int(rng.integers(self.margin + 1)))

    def background_image(self, bg: Background) -> np.ndarray:
        return self.templates[bg.camera, bg.variant][:, bg.offset:bg.offset + self.width]


def _line(draw, p, q, width, label):
    draw.line([(p[1], p[0]), (q[1], q[0])], fill=label, width=max(1, int(round(width))))
    r = width / 2
    for y, x in (p, q):  # round caps, so limbs join smoothly
        draw.ellipse([x - r, y - r, x + r, y + r], fill=label)


def _ellipse(draw, cy, cx, ry, rx, label):
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=label)


def label_map(identity: Identity, pose: Pose, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 part labels of the person (0 = background), painted back to front."""
    im = Image.new("L", (width, height), BG)
    draw = ImageDraw.Draw(im)
    J = {n: tuple(pose.joints[i]) for i, n in enumerate(COCO18)}
    s, b = pose.scale, identity.build
    view, side = pose.view, pose.view in ("left", "right")
    d = 1.0 if view == "right" else -1.0
    head = ((J["Lear"][0] + J["Rear"][0]) / 2, (J["Lear"][1] + J["Rear"][1]) / 2)
    if side:
        head = (head[0], head[1] + 0.025 * s * d)
    hr = 0.062 * s
    neck, mid_hip = J["neck"], ((J["Lhip"][0] + J["Rhip"][0]) / 2, (J["Lhip"][1] + J["Rhip"][1]) / 2)
    ua, fa, th, sh = 0.052 * s * b, 0.042 * s * b, 0.072 * s * b, 0.058 * s * b

    def torso():
        if side:
            w = 0.085 * s * b
            pts = [(neck[1] - w, neck[0] + 0.01 * s), (neck[1] + w, neck[0] + 0.01 * s),
                   (mid_hip[1] + w * 0.95, mid_hip[0] + 0.02 * s), (mid_hip[1] - w * 0.95, mid_hip[0] + 0.02 * s)]
        else:
            pad = 0.03 * s * b
            xs_top = sorted([J["Rsho"][1], J["Lsho"][1]])
            xs_hip = sorted([J["Rhip"][1], J["Lhip"][1]])
            y_top = min(J["Rsho"][0], J["Lsho"][0]) - 0.012 * s
            y_hip = max(J["Rhip"][0], J["Lhip"][0]) + 0.02 * s
            pts = [(xs_top[0] - pad, y_top), (xs_top[1] + pad, y_top), (xs_hip[1] + pad, y_hip), (xs_hip[0] - pad, y_hip)]
        draw.polygon(pts, fill=TOP)
        if identity.bottom_style != "skirt":  # trouser seat
            draw.rectangle([min(J["Rhip"][1], J["Lhip"][1]) - th / 2, mid_hip[0] - 0.01 * s,
                            max(J["Rhip"][1], J["Lhip"][1]) + th / 2, mid_hip[0] + 0.04 * s], fill=BOTTOM)
        if identity.top_pattern == "front_logo" and view == "front":
            _ellipse(draw, neck[0] + 0.11 * s, neck[1], 0.035 * s, 0.04 * s, PRINT)
        if identity.top_pattern == "back_print" and view == "back":
            draw.rectangle([neck[1] - 0.06 * s * b, neck[0] + 0.05 * s, neck[1] + 0.06 * s * b, neck[0] + 0.2 * s], fill=PRINT)

    def leg(lr):
        hip, kne, ank = J[lr + "hip"], J[lr + "kne"], J[lr + "ank"]
        _line(draw, hip, kne, th, BOTTOM)
        _line(draw, kne, ank, sh, LOWER_LEG if identity.bottom_style != "shorts" else SKIN)
        foot = (ank[0] + 0.015 * s, ank[1] + (0.02 * s * d if side else 0))
        _ellipse(draw, foot[0], foot[1], 0.018 * s, 0.035 * s if side else 0.024 * s, SHOES)

    def skirt():
        if identity.bottom_style == "skirt":
            xs = sorted([J["Rhip"][1], J["Lhip"][1]])
            y0, y1 = mid_hip[0] - 0.01 * s, mid_hip[0] + 0.17 * s
            draw.polygon([(xs[0] - 0.03 * s, y0), (xs[1] + 0.03 * s, y0), (xs[1] + 0.07 * s, y1), (xs[0] - 0.07 * s, y1)], fill=BOTTOM)

    def arm(lr):
        sho, elb, wri = J[lr + "sho"], J[lr + "elb"], J[lr + "wri"]
        _line(draw, sho, elb, ua, TOP)
        _line(draw, elb, wri, fa, SLEEVE)
        _ellipse(draw, wri[0] + 0.015 * s, wri[1], 0.02 * s, 0.018 * s, SKIN)

    def head_parts():
        if identity.hair_style != "bald" or view == "back":
            _ellipse(draw, head[0] - 0.008 * s, head[1], hr * 1.05, hr * 0.95, HAIR if identity.hair_style != "bald" else SKIN)
        if view == "front":
            _ellipse(draw, head[0] + 0.012 * s, head[1], hr * 0.85, hr * 0.78, SKIN)
        elif side:
            _ellipse(draw, head[0] + 0.01 * s, head[1] + 0.02 * s * d, hr * 0.85, hr * 0.6, SKIN)
        if identity.hat:
            draw.chord([head[1] - hr, head[0] - hr * 1.15, head[1] + hr, head[0] + hr * 0.6], 180, 360, fill=HAT)

    def long_hair():
        if identity.hair_style == "long":
            w = hr * (0.7 if side else 0.95)
            cx = head[1] - (0.02 * s * d if side else 0)
            draw.rectangle([cx - w, head[0], cx + w, neck[0] + 0.09 * s], fill=HAIR)

    def backpack():
        if identity.bag == "backpack":
            if view == "back":
                draw.rectangle([neck[1] - 0.07 * s, neck[0] + 0.04 * s, neck[1] + 0.07 * s, neck[0] + 0.25 * s], fill=BAG)
            elif side:
                x0 = neck[1] - 0.085 * s * b * d
                x1 = x0 - 0.07 * s * d
                draw.rectangle([min(x0, x1), neck[0] + 0.04 * s, max(x0, x1), neck[0] + 0.24 * s], fill=BAG)

    def straps():
        if identity.bag == "backpack" and view == "front":
            for lr in "RL":
                _line(draw, J[lr + "sho"], (J[lr + "sho"][0] + 0.15 * s, J[lr + "sho"][1] * 0.85 + neck[1] * 0.15), 0.012 * s + 1, BAG)
        if identity.bag == "shoulder":
            sho = J["Lsho"] if view != "left" else J["Rsho"]
            hip = J["Rhip"] if view != "left" else J["Lhip"]
            _line(draw, sho, hip, 0.012 * s + 1, BAG)
            if view != "back":
                draw.rectangle([hip[1] - 0.05 * s, hip[0] - 0.02 * s, hip[1] + 0.04 * s, hip[0] + 0.08 * s], fill=BAG)

    if side:
        near = "R" if view == "right" else "L"
        far = "L" if near == "R" else "R"
        arm(far)
        backpack()
        leg(far)
        leg(near)
        skirt()
        torso()
        long_hair()
        straps()
        head_parts()
        arm(near)
    elif view == "front":
        long_hair()
        leg("R"), leg("L")
        skirt()
        torso()
        straps()
        arm("R"), arm("L")
        head_parts()
    else:  # back
        leg("R"), leg("L")
        skirt()
        torso()
        backpack()
        straps()
        arm("R"), arm("L")
        head_parts()
        long_hair()
    if pose.occluder is not None:
        y1, x1, y2, x2 = pose.occluder
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=OCCLUDER)
    return np.asarray(im)


@dataclass
class Render:
    image: np.ndarray  # (H, W, 3) uint8
    person_mask: np.ndarray  # (H, W) bool, the visible person
    rcv: np.ndarray  # (18, 3) keypoints as annotated
    labels: np.ndarray | None = None  # (H, W) uint8 part labels before lighting (OCCLUDER where an object covers)


def render(world: World, identity: Identity, pose: Pose, background: Background, light_camera: int | None = None,
           noise_key: int = 0) -> Render:
    """Render ``identity`` in ``pose`` over ``background``; the counterfactual ground truth.

    Lighting is that of ``light_camera`` (default: the background's camera);
    ``noise_key`` picks the sensor-noise field, so renders are deterministic.
    """
    h, w = world.height, world.width
    labels = label_map(identity, pose, h, w)
    pal = identity.palette()
    pal[OCCLUDER] = pose.occluder_colour
    person = pal[labels]  # (H, W, 3)
    torso = labels == TOP
    if identity.top_pattern in ("hstripes", "vstripes", "check") and torso.any():
        period = max(2, int(round(pose.scale * 0.035)))
        rows = (np.arange(h)[:, None] - int(pose.joints[1, 0])) // period % 2 == 1
        cols = (np.arange(w)[None, :] - int(pose.joints[1, 1])) // period % 2 == 1
        stripe = {"hstripes": rows & np.ones((1, w), bool), "vstripes": cols & np.ones((h, 1), bool), "check": rows ^ cols}[identity.top_pattern]
        person[torso & stripe] = identity.top_alt
    # cylindrical shading: darker towards the silhouette's sides
    centre = float(pose.joints[1, 1])
    shade = 1.0 - 0.25 * np.clip(np.abs(np.arange(w) - centre) / (0.16 * pose.scale), 0, 1) ** 2
    person *= shade[None, :, None]
    fg = labels > 0
    img = np.where(fg[..., None], person, world.background_image(background))
    cam = world.cameras[light_camera or background.camera]
    img = img * (cam.gain * cam.tint) + cam.offset
    nf = world.noise[background.camera]
    oy, ox = noise_key % h, (noise_key // h) % w
    img += nf[oy:oy + h, ox:ox + w]
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if cam.blur > 0.25:
        out = out.filter(ImageFilter.GaussianBlur(cam.blur))
    return Render(np.asarray(out), fg & (labels != OCCLUDER), pose.rcv(), labels)


# ---------------------------------------------------------------------------------------------
# the dataset: identities, tracklets, Market splits, files


def make_identities(seed: int, n: int, lookalike_share: float = 0.4) -> list[Identity]:
    """``n`` identities; about ``lookalike_share`` of them in groups of 2-4 near copies."""
    rng = _rng(seed, 1)
    ids: list[Identity] = []
    group = 0
    while len(ids) < n:
        base = sample_identity(_rng(seed, 2, len(ids)), len(ids))
        if rng.random() < lookalike_share / 2.5 and n - len(ids) >= 2:
            size = int(min(rng.integers(2, 5), n - len(ids)))
            base.group = group
            ids.append(base)
            for _ in range(size - 1):
                ids.append(lookalike(base, _rng(seed, 3, len(ids)), len(ids), group))
            group += 1
        else:
            ids.append(base)
    return ids


@dataclass
class ImageSpec:
    split: str
    pid: int
    camid: int
    seq: int
    frame: int
    box: int
    identity: int  # index into identities, -1 for a distractor without a person
    pose: Pose | None
    background: Background
    noise_key: int
    truncated: bool = False

    @property
    def name(self) -> str:
        return format_name(self.pid, self.camid, self.seq, self.frame, self.box)


def plan_dataset(world: World, identities: list[Identity], seed: int, train_share: float = 0.5,
                 distractor_share: float = 0.05, junk_share: float = 0.03) -> list[ImageSpec]:
    """Every image of the dataset as an ImageSpec, following the Market-1501 protocol.

    Identities are split into train and test; every identity is seen by 2-6 cameras in
    tracklets of 2-5 frames. For test identities, one image per camera goes to the
    query and the rest to the gallery, so each query has a cross-camera match.
    The gallery also gets distractors (pid 0000) and junk (pid -1).
    """
    n = len(identities)
    rng = _rng(seed, 4)
    order = rng.permutation(n)
    n_train = max(1, int(round(n * train_share)))
    train_idx = set(order[:n_train].tolist())
    pids = {i: i + 1 for i in range(n)}  # pids 1..n, interleaved between the splits as in Market
    frame_counter = {c: int(rng.integers(0, 1000)) for c in range(1, NUM_CAMERAS + 1)}
    specs: list[ImageSpec] = []
    h, w = world.height, world.width
    for i in range(n):
        irng = _rng(seed, 5, i)
        k = int(irng.choice([2, 3, 4, 5, 6], p=[0.3, 0.3, 0.2, 0.12, 0.08]))
        cams = sorted(irng.choice(NUM_CAMERAS, size=k, replace=False) + 1)
        images = []
        for cam in cams:
            length = int(irng.integers(2, 6))
            view = str(irng.choice(VIEWS, p=[0.3, 0.3, 0.2, 0.2]))
            phase = float(irng.uniform(0, 2 * math.pi))
            bg = world.sample_background(irng, int(cam))
            seq = int(irng.integers(1, 7))
            for t in range(length):
                frame_counter[cam] += int(irng.integers(5, 40))
                prng = _rng(seed, 6, i, int(cam), t)
                pose = sample_pose(prng, h, w, identities[i].height, view=view, phase=phase + 0.9 * t)
                tbg = Background(bg.camera, bg.variant, int(np.clip(bg.offset + irng.integers(-3, 4), 0, world.margin)))
                images.append(ImageSpec("", pids[i], int(cam), seq, frame_counter[cam], 1, i, pose, tbg,
                                        int(irng.integers(1 << 30))))
        if i in train_idx:
            for im in images:
                im.split = "train"
        else:
            for cam in cams:
                mine = [im for im in images if im.camid == cam]
                q = int(irng.integers(len(mine)))
                for j, im in enumerate(mine):
                    im.split = "query" if j == q else "gallery"
        specs.extend(images)
    n_gallery = sum(s.split == "gallery" for s in specs)
    test_ids = [i for i in range(n) if i not in train_idx]
    for kind, share in (("distractor", distractor_share), ("junk", junk_share)):
        for t in range(int(round(n_gallery * share))):
            drng = _rng(seed, 9 if kind == "distractor" else 10, t)
            cam = int(drng.integers(1, NUM_CAMERAS + 1))
            frame_counter[cam] += int(drng.integers(5, 40))
            bg = world.sample_background(drng, cam)
            ident = int(drng.choice(test_ids)) if test_ids else 0
            pose = sample_pose(drng, h, w, identities[ident].height, occlusion_p=0.0, truncation_p=0.0)
            if kind == "distractor":  # a false detection: background, at most a sliver of someone at the edge
                if drng.random() < 0.5:
                    pose = None
                else:
                    pose.joints[:, 1] += drng.choice([-1, 1]) * w * 0.75
            else:  # junk: a badly cropped detection showing a small part of a person
                pose.joints[:, 0] += drng.choice([-1, 1]) * h * drng.uniform(0.45, 0.6)
            if pose is not None:
                inside = (pose.joints[:, 0] >= 0) & (pose.joints[:, 0] <= h - 1) & (pose.joints[:, 1] >= 0) & (pose.joints[:, 1] <= w - 1)
                pose.visible &= inside
            pid = 0 if kind == "distractor" else -1
            specs.append(ImageSpec("gallery", pid, cam, int(drng.integers(1, 7)), frame_counter[cam], 1,
                                   ident if pose is not None else -1, pose, bg, int(drng.integers(1 << 30)), True))
    # a frame may hold several detections: number the boxes within (camera, seq, frame)
    seen: dict[tuple, int] = {}
    for sp in specs:
        key = (sp.camid, sp.seq, sp.frame)
        seen[key] = seen.get(key, 0) + 1
        sp.box = seen[key]
    return specs


def render_spec(world: World, identities: list[Identity], spec: ImageSpec) -> Render:
    if spec.pose is None:
        img = world.background_image(spec.background)
        cam = world.cameras[spec.background.camera]
        img = np.clip(img * (cam.gain * cam.tint) + cam.offset, 0, 255).astype(np.uint8)
        return Render(img, np.zeros(img.shape[:2], bool), np.zeros((18, 3), np.float32), np.zeros(img.shape[:2], np.uint8))
    return render(world, identities[spec.identity], spec.pose, spec.background, noise_key=spec.noise_key)


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r}: expected HEIGHTxWIDTH such as 128x64") from None
    if h < 32 or w < 16 or h > 1024 or w > 512:
        raise UserError(f"--size {text!r}: height must be 32..1024 and width 16..512 (Market-1501 is 128x64)")
    return h, w


def simulate(out: str | os.PathLike, ids: int, seed: int = 0, size: tuple[int, int] = (128, 64),
             overwrite: bool = False, progress: bool = True) -> dict:
    """Write a SimMarket dataset to ``out``; returns the summary counts.

    The dataset is built in a temp folder next to ``out`` and renamed into
    place at the end, so a killed run leaves no half-written dataset.
    """
    from tqdm import tqdm

    out = Path(out)
    if ids < 2:
        raise UserError(f"--ids {ids}: SimMarket needs at least 2 identities (one train, one test)")
    if ids > 1501:
        raise UserError(f"--ids {ids}: at most 1501 identities fit Market-1501's 4-digit ids as torchreid reads them")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")
    t0 = time.perf_counter()
    h, w = size
    world = World(seed, h, w)
    identities = make_identities(seed, ids)
    specs = plan_dataset(world, identities, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")  # a leftover of a killed run is replaced
    if tmp.exists():
        shutil.rmtree(tmp)
    writer = MarketWriter(tmp)
    rows, keypoints = [], {"train": {}, "test": {}}
    joints = np.zeros((len(specs), 18, 2), np.float32)
    visible = np.zeros((len(specs), 18), bool)
    occluders = np.full((len(specs), 4), np.nan, np.float32)
    scales = np.zeros(len(specs), np.float32)
    # file creation is slow on some disks and releases the GIL: write in background threads
    pool = ThreadPoolExecutor(max_workers=2)
    pending: deque = deque()
    for k, sp in enumerate(tqdm(specs, desc="SimMarket", unit="img", disable=not progress, mininterval=0.5)):
        r = render_spec(world, identities, sp)
        pending.append(pool.submit(writer.write, sp.split, sp.name, r.image))
        if len(pending) > 64:
            pending.popleft().result()
        keypoints["train" if sp.split == "train" else "test"][sp.name] = rcv_to_yx(r.rcv)
        if sp.pose is not None:
            joints[k], visible[k], scales[k] = sp.pose.joints, sp.pose.visible, sp.pose.scale
            if sp.pose.occluder is not None:
                occluders[k] = sp.pose.occluder
        rows.append({
            "path": f"{SPLIT_DIRS[sp.split]}/{sp.name}", "split": sp.split, "pid": sp.pid, "camid": sp.camid,
            "origin": "sim", "identity": sp.identity, "group": identities[sp.identity].group if sp.identity >= 0 else -1,
            "view": sp.pose.view if sp.pose is not None else "none", "pose_index": k,
            "occluder_colour": json.dumps(list(sp.pose.occluder_colour)) if sp.pose is not None else "",
            "bg_camera": sp.background.camera, "bg_variant": sp.background.variant, "bg_offset": sp.background.offset,
            "noise_key": sp.noise_key, "occluded": bool(sp.pose is not None and sp.pose.occluder is not None),
            "truncated": bool(sp.truncated or (sp.pose is not None and (sp.pose.joints[:, 0].min() < 0 or sp.pose.joints[:, 0].max() > h - 1))),
            "visible_joints": int(r.rcv[:, 2].sum()),
        })
    for f in pending:
        f.result()
    pool.shutdown()
    import pandas as pd

    manifest = pd.DataFrame(rows)
    write_manifest(manifest, tmp / "manifest.csv")
    write_keypoints_csv(tmp / "market-annotation-train.csv", keypoints["train"])
    write_keypoints_csv(tmp / "market-annotation-test.csv", keypoints["test"])
    np.savez_compressed(tmp / "poses.npz", joints=joints, visible=visible, occluder=occluders, scale=scales)
    (tmp / "identities.json").write_text(json.dumps([asdict(i) for i in identities], indent=1))
    counts = {s: int((manifest.split == s).sum()) for s in ("train", "query", "gallery")}
    summary = {
        "version": VERSION, "seed": seed, "height": h, "width": w, "identities": ids,
        "train_ids": int(manifest[manifest.split == "train"].pid.nunique()),
        "test_ids": int(manifest[manifest.split == "query"].pid.nunique()),
        "images": len(manifest), **counts,
        "distractors": int((manifest.pid == 0).sum()), "junk": int((manifest.pid == -1).sum()),
    }
    (tmp / "simmarket.json").write_text(json.dumps(summary, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def write_manifest(df, path: Path) -> None:
    """Write a manifest as CSV, and as parquet beside it when pyarrow is installed; atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    pq = path.with_suffix(".parquet")
    tmp = pq.with_name(f".{pq.name}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, pq)


class SimMarket:
    """A SimMarket dataset on disk, able to re-render any (identity, pose, background) combination."""

    def __init__(self, root: str | os.PathLike):
        import pandas as pd

        self.root = Path(root)
        meta = self.root / "simmarket.json"
        if not meta.is_file():
            raise UserError(f"{meta}: missing; {self.root} is not a SimMarket dataset (make one with `vmarket simulate`)")
        self.meta = json.loads(meta.read_text())
        self.world = World(self.meta["seed"], self.meta["height"], self.meta["width"])
        self.identities = [Identity(**d) for d in json.loads((self.root / "identities.json").read_text())]
        self.manifest = pd.read_csv(self.root / "manifest.csv")
        poses = np.load(self.root / "poses.npz")
        self._joints, self._visible = poses["joints"], poses["visible"]
        self._occluder, self._scale = poses["occluder"], poses["scale"]
        self._row = {p.split("/")[-1]: i for i, p in enumerate(self.manifest.path)}

    def row(self, name: str) -> int:
        return self._row[os.path.basename(name)]

    def identity(self, name: str) -> Identity:
        return self.identities[int(self.manifest.identity.iloc[self.row(name)])]

    def pose(self, name: str) -> Pose:
        i = self.row(name)
        m = self.manifest.iloc[i]
        occ = self._occluder[i]
        colour = tuple(json.loads(m.occluder_colour)) if isinstance(m.occluder_colour, str) and m.occluder_colour else (90, 90, 90)
        return Pose(self._joints[i].copy(), self._visible[i].copy(), str(m.view), float(self._scale[i]),
                    None if np.isnan(occ).any() else tuple(float(v) for v in occ), colour)

    def background(self, name: str) -> Background:
        m = self.manifest.iloc[self.row(name)]
        return Background(int(m.bg_camera), int(m.bg_variant), int(m.bg_offset))

    def render(self, identity_of: str, pose_of: str, background_of: str) -> Render:
        """Identity of image ``identity_of`` in the pose of ``pose_of`` on the background of ``background_of``."""
        nk = int(self.manifest.noise_key.iloc[self.row(background_of)])
        return render(self.world, self.identity(identity_of), self.pose(pose_of), self.background(background_of), noise_key=nk)
