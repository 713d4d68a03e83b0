"""PNG grids of images in [-1, 1]: the stage-I swap grid and the writer every grid goes through."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from generator.io import atomic_path


def swap_grid(G, batch: dict) -> torch.Tensor:
    """Rows: input | reconstruction | fg swap | bg swap | pose swap; the donor of each swap is the previous person."""
    with torch.no_grad():
        fg, bg = G.encode(batch["image"], batch["pose_mask"], batch["roi_boxes"], batch["roi_visible"])
        pm = batch["pose_maps"]
        # the donor of each swap is the previous person in the batch (a one-line lambda, E731 allowed)
        nxt = lambda x: x.roll(1, 0)  # noqa: E731
        rows = [batch["image"], G.decode(fg, bg, pm), G.decode(nxt(fg), bg, pm), G.decode(fg, nxt(bg), pm),
                G.decode(fg, bg, nxt(pm))]
    return torch.cat([r.float().cpu() for r in rows], 0)


def save_grid(images: torch.Tensor, nrow: int, path: Path) -> None:
    """(N, 3, H, W) images in [-1, 1] as one PNG of ``nrow`` images per row."""
    with atomic_path(path) as tmp:
        save_image(images.clamp(-1, 1) * 0.5 + 0.5, tmp, nrow=nrow, padding=1, format="PNG")
