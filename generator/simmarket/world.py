"""The SimMarket world: camera-specific background templates, lighting and sensor noise (the background
factor), rebuilt identically from (seed, size)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from generator.simmarket.identity import keyed_rng

NUM_CAMERAS = 6
# how people are drawn: "flat" (uniform part colours, soft side shading) or "textured" (grain, light from above,
# inked part outlines, duller scenes): a second look for testing what is fitted to the first, e.g. a pose
# estimator's accuracy
STYLES = ("flat", "textured")


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
    """Backgrounds and camera lighting of a SimMarket seed; rebuilt identically from (seed, size, style)."""

    def __init__(self, seed: int, height: int, width: int, variants: int = 4, style: str = "flat"):
        if style not in STYLES:
            raise ValueError(f"style {style!r}: not one of {', '.join(STYLES)}")
        self.seed, self.height, self.width, self.variants, self.style = seed, height, width, variants, style
        self.margin = width // 2  # templates are wider than the image so crops can slide
        self.cameras: dict[int, Camera] = {}
        self.templates: dict[tuple[int, int], np.ndarray] = {}
        self.noise: dict[int, np.ndarray] = {}
        for cam in range(1, NUM_CAMERAS + 1):
            rng = keyed_rng(seed, 7, cam)
            self.cameras[cam] = Camera(
                gain=float(rng.uniform(0.75, 1.2)), tint=rng.uniform(0.85, 1.15, 3).astype(np.float32),
                offset=float(rng.uniform(-10, 15)), noise=float(rng.uniform(2, 6)), blur=float(rng.uniform(0.2, 0.9)),
            )
            base = rng.uniform(60, 190) + rng.normal(0, 18, 3)  # mostly grey scenes with a colour cast
            for v in range(variants):
                t = self._template(keyed_rng(seed, 8, cam, v), base)
                if style == "textured":  # duller scenes: half the saturation
                    t = 0.5 * t + 0.5 * t.mean(-1, keepdims=True)
                self.templates[cam, v] = t
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
        texture = np.asarray(Image.fromarray(((lowres + 128).clip(0, 255)).astype(np.uint8))
                             .resize((w, h), Image.BILINEAR), np.float32) - 128
        return np.clip(img + texture, 0, 255).astype(np.float32)

    def sample_background(self, rng: np.random.Generator, camera: int) -> Background:
        return Background(camera, int(rng.integers(self.variants)), int(rng.integers(self.margin + 1)))

    def background_image(self, bg: Background) -> np.ndarray:
        return self.templates[bg.camera, bg.variant][:, bg.offset:bg.offset + self.width]
