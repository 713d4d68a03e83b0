"""One small PNG of what made a few generated images: per row the pictures that made one image (source | donor, or
source | pose | background) and the image itself, each labelled with its camera, for a report."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from augment.gallery.model import Gallery, Item
from generator.io import atomic_save_image

PAD, HEADER, CAPTION = 4, 16, 14  # px: gaps, the column labels, the camera label under each image


def _chosen(g: Gallery, rows: int) -> tuple[list[str], list[Item]]:
    """(column roles, items): one item from each of ``rows`` identities spread over the dataset, all made from
    pictures of the same roles (the most common kind of item that has any)."""
    first = []
    for ident in g.identities:
        item = next((it for it in ident.items if any(p.path is not None for _, p in it.parts)), None)
        if item is not None:
            first.append(item)
    if not first:
        return [], []

    def roles(it: Item) -> tuple[str, ...]:
        return tuple(role for role, p in it.parts if p.path is not None)

    common = Counter(roles(it) for it in first).most_common(1)[0][0]
    same = [it for it in first if roles(it) == common]
    picks = sorted(set(np.linspace(0, len(same) - 1, min(rows, len(same))).round().astype(int).tolist()))
    return [*common, "result"], [same[i] for i in picks]


def triplet_figure(g: Gallery, path: str | os.PathLike, rows: int = 4, height: int = 128) -> Path | None:
    """Write the figure of ``rows`` items to ``path`` (PNG, atomically); None (nothing written) when no item of
    ``g`` was made from an image."""
    columns, items = _chosen(g, rows)
    if not items:
        return None
    width = height // 2
    canvas = Image.new("RGB", (PAD + len(columns) * (width + PAD),
                               HEADER + len(items) * (height + CAPTION + PAD) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((PAD + c * (width + PAD) + 2, 2), name, fill=(40, 40, 40))
    for r, item in enumerate(items):
        pictures = [p for _, p in item.parts if p.path is not None] + [item.result]
        y = HEADER + r * (height + CAPTION + PAD)
        for c, picture in enumerate(pictures):
            x = PAD + c * (width + PAD)
            with Image.open(picture.path) as im:
                canvas.paste(im.convert("RGB").resize((width, height), Image.BILINEAR), (x, y))
            draw.text((x + 2, y + height + 1), f"c{picture.camid}" if picture.camid else "", fill=(90, 90, 90))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_image(canvas, path)
    return path
