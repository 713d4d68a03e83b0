"""Rendering a SimMarket person: a part-label map painted back to front, coloured by the identity's palette,
shaded, composited over the background and lit by a camera. ``render`` gives the counterfactual ground truth
of any (identity, pose, background) combination."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from generator.pose import COCO18
from generator.simmarket.body import Pose
from generator.simmarket.identity import (
    BAG,
    BG,
    BOTTOM,
    HAIR,
    HAT,
    LOWER_LEG,
    OCCLUDER,
    PRINT,
    SHOES,
    SKIN,
    SLEEVE,
    TOP,
    Identity,
    keyed_rng,
)
from generator.simmarket.world import Background, World


def _line(draw, p, q, width, label):
    draw.line([(p[1], p[0]), (q[1], q[0])], fill=label, width=max(1, int(round(width))))
    r = width / 2
    for y, x in (p, q):  # round caps, so limbs join smoothly
        draw.ellipse([x - r, y - r, x + r, y + r], fill=label)


def _ellipse(draw, cy, cx, ry, rx, label):
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=label)


@dataclass(frozen=True)
class _Figure:
    """What the part painters share: one person in one pose, drawn onto one label image.

    Points are (row, col) in px; sizes are px, given in the comments as multiples of the stature ``s``.
    """

    draw: ImageDraw.ImageDraw  # paints part labels into the (H, W) "L" image
    identity: Identity  # clothing styles, hair, bag and hat decide which parts exist
    J: dict[str, tuple[float, float]]  # COCO18 joint name -> (row, col) px
    s: float  # stature px (head top to soles); every size below scales with it
    b: float  # build, unitless thickness factor of limbs and torso
    view: str  # front | back | left | right
    side: bool  # a side view (left or right)
    d: float  # facing direction in image columns: +1 for "right", -1 otherwise
    head: tuple[float, float]  # head centre (row, col) px, between the ears, shifted 0.025 s forward in side views
    hr: float  # head radius px (0.062 s)
    neck: tuple[float, float]  # neck joint (row, col) px
    mid_hip: tuple[float, float]  # midpoint of the hips (row, col) px
    ua: float  # upper-arm width px (0.052 s b)
    fa: float  # forearm width px (0.042 s b)
    th: float  # thigh width px (0.072 s b)
    sh: float  # shin width px (0.058 s b)


def _paint_torso(fig: _Figure):
    draw, identity, J, s, b, view = fig.draw, fig.identity, fig.J, fig.s, fig.b, fig.view
    neck, mid_hip, th = fig.neck, fig.mid_hip, fig.th
    if fig.side:
        w = 0.085 * s * b
        pts = [(neck[1] - w, neck[0] + 0.01 * s), (neck[1] + w, neck[0] + 0.01 * s),
               (mid_hip[1] + w * 0.95, mid_hip[0] + 0.02 * s), (mid_hip[1] - w * 0.95, mid_hip[0] + 0.02 * s)]
    else:
        pad = 0.03 * s * b
        xs_top = sorted([J["Rsho"][1], J["Lsho"][1]])
        xs_hip = sorted([J["Rhip"][1], J["Lhip"][1]])
        y_top = min(J["Rsho"][0], J["Lsho"][0]) - 0.012 * s
        y_hip = max(J["Rhip"][0], J["Lhip"][0]) + 0.02 * s
        pts = [(xs_top[0] - pad, y_top), (xs_top[1] + pad, y_top),
               (xs_hip[1] + pad, y_hip), (xs_hip[0] - pad, y_hip)]
    draw.polygon(pts, fill=TOP)
    if identity.bottom_style != "skirt":  # trouser seat
        draw.rectangle([min(J["Rhip"][1], J["Lhip"][1]) - th / 2, mid_hip[0] - 0.01 * s,
                        max(J["Rhip"][1], J["Lhip"][1]) + th / 2, mid_hip[0] + 0.04 * s], fill=BOTTOM)
    if identity.top_pattern == "front_logo" and view == "front":
        _ellipse(draw, neck[0] + 0.11 * s, neck[1], 0.035 * s, 0.04 * s, PRINT)
    if identity.top_pattern == "back_print" and view == "back":
        draw.rectangle([neck[1] - 0.06 * s * b, neck[0] + 0.05 * s, neck[1] + 0.06 * s * b, neck[0] + 0.2 * s],
                       fill=PRINT)


def _paint_leg(fig: _Figure, lr: str):
    draw, J, s, d, side = fig.draw, fig.J, fig.s, fig.d, fig.side
    hip, kne, ank = J[lr + "hip"], J[lr + "kne"], J[lr + "ank"]
    _line(draw, hip, kne, fig.th, BOTTOM)
    _line(draw, kne, ank, fig.sh, LOWER_LEG if fig.identity.bottom_style != "shorts" else SKIN)
    foot = (ank[0] + 0.015 * s, ank[1] + (0.02 * s * d if side else 0))
    _ellipse(draw, foot[0], foot[1], 0.018 * s, 0.035 * s if side else 0.024 * s, SHOES)


def _paint_skirt(fig: _Figure):
    if fig.identity.bottom_style == "skirt":
        J, s, mid_hip = fig.J, fig.s, fig.mid_hip
        xs = sorted([J["Rhip"][1], J["Lhip"][1]])
        y0, y1 = mid_hip[0] - 0.01 * s, mid_hip[0] + 0.17 * s
        fig.draw.polygon([(xs[0] - 0.03 * s, y0), (xs[1] + 0.03 * s, y0),
                          (xs[1] + 0.07 * s, y1), (xs[0] - 0.07 * s, y1)], fill=BOTTOM)


def _paint_arm(fig: _Figure, lr: str):
    draw, J, s = fig.draw, fig.J, fig.s
    sho, elb, wri = J[lr + "sho"], J[lr + "elb"], J[lr + "wri"]
    _line(draw, sho, elb, fig.ua, TOP)
    _line(draw, elb, wri, fig.fa, SLEEVE)
    _ellipse(draw, wri[0] + 0.015 * s, wri[1], 0.02 * s, 0.018 * s, SKIN)


def _paint_head(fig: _Figure):
    draw, identity, s, d, view, head, hr = fig.draw, fig.identity, fig.s, fig.d, fig.view, fig.head, fig.hr
    if identity.hair_style != "bald" or view == "back":
        _ellipse(draw, head[0] - 0.008 * s, head[1], hr * 1.05, hr * 0.95,
                 HAIR if identity.hair_style != "bald" else SKIN)
    if view == "front":
        _ellipse(draw, head[0] + 0.012 * s, head[1], hr * 0.85, hr * 0.78, SKIN)
    elif fig.side:
        _ellipse(draw, head[0] + 0.01 * s, head[1] + 0.02 * s * d, hr * 0.85, hr * 0.6, SKIN)
    if identity.hat:
        draw.chord([head[1] - hr, head[0] - hr * 1.15, head[1] + hr, head[0] + hr * 0.6], 180, 360, fill=HAT)


def _paint_long_hair(fig: _Figure):
    if fig.identity.hair_style == "long":
        s, d, side, head, hr = fig.s, fig.d, fig.side, fig.head, fig.hr
        w = hr * (0.7 if side else 0.95)
        cx = head[1] - (0.02 * s * d if side else 0)
        fig.draw.rectangle([cx - w, head[0], cx + w, fig.neck[0] + 0.09 * s], fill=HAIR)


def _paint_backpack(fig: _Figure):
    if fig.identity.bag == "backpack":
        draw, s, b, d, neck = fig.draw, fig.s, fig.b, fig.d, fig.neck
        if fig.view == "back":
            draw.rectangle([neck[1] - 0.07 * s, neck[0] + 0.04 * s, neck[1] + 0.07 * s, neck[0] + 0.25 * s],
                           fill=BAG)
        elif fig.side:
            x0 = neck[1] - 0.085 * s * b * d
            x1 = x0 - 0.07 * s * d
            draw.rectangle([min(x0, x1), neck[0] + 0.04 * s, max(x0, x1), neck[0] + 0.24 * s], fill=BAG)


def _paint_straps(fig: _Figure):
    draw, identity, J, s, view, neck = fig.draw, fig.identity, fig.J, fig.s, fig.view, fig.neck
    if identity.bag == "backpack" and view == "front":
        for lr in "RL":
            _line(draw, J[lr + "sho"], (J[lr + "sho"][0] + 0.15 * s, J[lr + "sho"][1] * 0.85 + neck[1] * 0.15),
                  0.012 * s + 1, BAG)
    if identity.bag == "shoulder":
        sho = J["Lsho"] if view != "left" else J["Rsho"]
        hip = J["Rhip"] if view != "left" else J["Lhip"]
        _line(draw, sho, hip, 0.012 * s + 1, BAG)
        if view != "back":
            draw.rectangle([hip[1] - 0.05 * s, hip[0] - 0.02 * s, hip[1] + 0.04 * s, hip[0] + 0.08 * s], fill=BAG)


def label_map(identity: Identity, pose: Pose, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 part labels of the person (0 = background), painted back to front."""
    im = Image.new("L", (width, height), BG)
    J = {n: tuple(pose.joints[i]) for i, n in enumerate(COCO18)}
    s, b = pose.scale, identity.build
    view, side = pose.view, pose.view in ("left", "right")
    d = 1.0 if view == "right" else -1.0
    head = ((J["Lear"][0] + J["Rear"][0]) / 2, (J["Lear"][1] + J["Rear"][1]) / 2)
    if side:
        head = (head[0], head[1] + 0.025 * s * d)
    fig = _Figure(
        draw=ImageDraw.Draw(im), identity=identity, J=J, s=s, b=b, view=view, side=side, d=d, head=head,
        hr=0.062 * s, neck=J["neck"], mid_hip=((J["Lhip"][0] + J["Rhip"][0]) / 2, (J["Lhip"][1] + J["Rhip"][1]) / 2),
        ua=0.052 * s * b, fa=0.042 * s * b, th=0.072 * s * b, sh=0.058 * s * b,
    )
    if side:
        near = "R" if view == "right" else "L"
        far = "L" if near == "R" else "R"
        _paint_arm(fig, far)
        _paint_backpack(fig)
        _paint_leg(fig, far)
        _paint_leg(fig, near)
        _paint_skirt(fig)
        _paint_torso(fig)
        _paint_long_hair(fig)
        _paint_straps(fig)
        _paint_head(fig)
        _paint_arm(fig, near)
    elif view == "front":
        _paint_long_hair(fig)
        _paint_leg(fig, "R")
        _paint_leg(fig, "L")
        _paint_skirt(fig)
        _paint_torso(fig)
        _paint_straps(fig)
        _paint_arm(fig, "R")
        _paint_arm(fig, "L")
        _paint_head(fig)
    else:  # back
        _paint_leg(fig, "R")
        _paint_leg(fig, "L")
        _paint_skirt(fig)
        _paint_torso(fig)
        _paint_backpack(fig)
        _paint_straps(fig)
        _paint_arm(fig, "R")
        _paint_arm(fig, "L")
        _paint_head(fig)
        _paint_long_hair(fig)
    if pose.occluder is not None:
        y1, x1, y2, x2 = pose.occluder
        fig.draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=OCCLUDER)
    return np.asarray(im)


def _texture(labels: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The "textured" style's (H, W) brightness factor on the person ``fg``: grain (coarse and fine noise, drawn per
    image), light from above (brighter head, darker feet) and dark 1-px outlines where one part meets another, an
    occluder or the scene."""
    h, w = labels.shape
    coarse = rng.normal(0, 0.10, (h // 4 + 2, w // 4 + 2)).astype(np.float32)
    grain = 1 + np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR)) \
        + rng.normal(0, 0.05, (h, w)).astype(np.float32)
    rows = np.flatnonzero(fg.any(1))
    top, bottom = rows[0], max(rows[-1], rows[0] + 1)
    light = 1.15 - 0.4 * np.clip((np.arange(h) - top) / (bottom - top), 0, 1)
    edge = np.zeros_like(fg)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return np.where(fg, grain * light[:, None] * np.where(edge, 0.4, 1.0), 1.0)


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
        stripe = {"hstripes": rows & np.ones((1, w), bool), "vstripes": cols & np.ones((h, 1), bool),
                  "check": rows ^ cols}[identity.top_pattern]
        person[torso & stripe] = identity.top_alt
    # cylindrical shading: darker towards the silhouette's sides
    centre = float(pose.joints[1, 1])
    shade = 1.0 - 0.25 * np.clip(np.abs(np.arange(w) - centre) / (0.16 * pose.scale), 0, 1) ** 2
    person *= shade[None, :, None]
    fg = labels > 0
    body = fg & (labels != OCCLUDER)
    if world.style == "textured" and body.any():  # the person only: an object in front keeps its flat look
        person *= _texture(labels, body, keyed_rng(world.seed, 13, noise_key))[..., None]
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
