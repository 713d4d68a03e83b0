"""SimMarket bodies: articulated walking poses of 18 COCO joints, with views, occluders and truncation
(the pose factor)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from generator.pose import COCO18

VIEWS = ("front", "back", "left", "right")  # left/right: side views, facing that way in the image


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
