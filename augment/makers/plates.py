"""What a cut-and-paste person is pasted over, and the pieces of the paste: the plates (the donor image, a
person-free plate the generator decodes from the donor, the donor with its own person filled in by that plate, or
a seeded half of each), the donor of every output, the soft person mask, and the composite."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from generator.api import DisentangledModel
from generator.errors import UserError
from generator.pose import pose_mask


@dataclass(frozen=True)
class Plates:
    """One kind of plate: ``vmarket cutpaste --plates NAME`` writes the dataset called ``dataset`` (the name a
    recipe's ``generated`` and the demo's ``generated`` use), whose images carry the manifest origin ``origin``."""

    name: str  # the --plates value
    dataset: str  # cutpaste | hybrid | inpaint | mixed
    origin: str  # each image's manifest origin ("" for mixed: its images are cutpaste or hybrid, one by one)
    what: str  # README.txt and the CLI: what the person is pasted over
    note: str = ""  # README.txt: what the plates line adds


PLATES = {p.name: p for p in (
    Plates("image", "cutpaste", "cutpaste", "baseline"),
    Plates("generator", "hybrid", "hybrid", "over generated background plates (hybrid)"),
    Plates("inpaint", "inpaint", "inpaint",
           "over the donor image with its person filled in by a generated plate (inpaint hybrid)",
           ", filling in the donor's own person (its soft pose mask) in the donor image"),
    Plates("mixed", "mixed", "",
           "over the donor image for half the images and its generated plate for the other half (mixed hybrid)",
           ", for a seeded random half of the images (the rest keep the donor image)"),
)}
PLATES_OF = {p.dataset: p.name for p in PLATES.values()}  # a dataset's name (cutpaste, hybrid, ...) -> its plates
ORIGINS = tuple(p.origin for p in PLATES.values() if p.origin)  # the manifest origins cut-and-paste writes
HOLE = 1.4  # inpaint: the donor's person mask is this much wider than the pasted one's (its hair and hands)


def soft_person_mask(rcv: np.ndarray, height: int, width: int, radius: int = 7, blur: float = 2.0) -> np.ndarray:
    """(H, W) float32 alpha in [0, 1]: the coarse pose mask (disks of ``radius`` along the limbs, closed), blurred by
    a Gaussian of ``blur`` px std, so that the paste has no hard seam."""
    mask = pose_mask(rcv, height, width, radius)
    if blur > 0:
        mask = ndimage.gaussian_filter(mask, blur, mode="constant")
    return np.clip(mask, 0, 1).astype(np.float32)


def scaled_mask(size: tuple[int, int], radius: int | None = None, blur: float | None = None) -> tuple[int, float]:
    """The person mask's disk radius and blur (px) at image ``size``: those given, else 7 and 2 at 128x64 scaled
    with the height."""
    scale = size[0] / 128
    return (max(1, round(7 * scale)) if radius is None else radius), (2.0 * scale if blur is None else blur)


def paste(person: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``alpha`` (H, W) of ``person`` over ``background`` (both (H, W, 3), uint8 or float 0..255)."""
    a = alpha[..., None].astype(np.float32)
    out = a * person.astype(np.float32) + (1 - a) * background.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def choose_donors(pids: np.ndarray, cams: np.ndarray, per_image: int, seed: int,
                  usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, per_image) donor indices and whether each donor's camera is one its source identity never appears in.

    Only ``usable`` images (default: all) are sources and donors; the rows of the others stay 0. The cameras an
    identity appears in are those of all its images. Donor pools, in order of preference: images of cameras the
    identity never appears in; images of other identities from another camera than the source's; any image of
    another identity. Output (i, k) draws with its own generator keyed by (seed, i, k)."""
    n = len(pids)
    usable = np.ones(n, bool) if usable is None else np.asarray(usable, bool)
    seen = {int(p): set(cams[pids == p].tolist()) for p in np.unique(pids)}
    pools: dict[tuple[int, int], tuple[np.ndarray, bool]] = {}
    donors = np.zeros((n, per_image), np.int64)
    unseen = np.zeros((n, per_image), bool)
    for i in np.flatnonzero(usable).tolist():
        key = (int(pids[i]), int(cams[i]))
        if key not in pools:
            fresh = np.flatnonzero(~np.isin(cams, list(seen[key[0]])) & usable)
            other_cam = np.flatnonzero((cams != key[1]) & (pids != key[0]) & usable)
            other_id = np.flatnonzero((pids != key[0]) & usable)
            pool = next((p for p in (fresh, other_cam, other_id) if len(p)), None)
            if pool is None:
                raise UserError("the training split holds one identity whose images show a person; cut-and-paste "
                                "takes its backgrounds from other identities' images, so it needs at least two")
            pools[key] = (pool, len(fresh) > 0)
        pool, is_fresh = pools[key]
        for k in range(per_image):
            donors[i, k] = pool[int(np.random.default_rng([seed, i, k]).integers(len(pool)))]
            unseen[i, k] = is_fresh
    return donors, unseen


def _scaled(rcv: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Keypoints (..., 18, 3) of an image of size ``src`` moved to size ``dst`` (missing joints stay (0, 0, 0))."""
    out = np.array(rcv, np.float32, copy=True)
    out[..., 0] *= dst[0] / src[0]
    out[..., 1] *= dst[1] / src[1]
    return out


@torch.no_grad()
def background_plates(model: DisentangledModel, donors: np.ndarray, donor_rcv: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) float 0..255 person-free plates at the donors' size, from (B, H, W, 3) uint8 donor images and
    their (B, 18, 3) keypoints: stage I encodes each donor's background (its person masked out), and decodes it
    with the foreground of "no person" and a pose with no visible joint; then the plate is upscaled."""
    size = tuple(donors.shape[1:3])
    x = torch.from_numpy(donors).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(model.device)
    if size != model.size:
        x = F.interpolate(x, size=model.size, mode="area")  # (B, 3, h, w) at the generator's size
    kps = torch.from_numpy(_scaled(donor_rcv, size, model.size))
    none = torch.zeros_like(kps)  # every joint missing: empty pose maps, empty mask, invisible ROIs
    bg = model.encode(x, kps).bg
    # with no joint the foreground feature map is masked to zero, so "no person" encodes the same for every image
    fg_none = model.encode(x[:1], none[:1]).fg.expand(len(x), -1)
    plate = model.decode(fg_none, bg, none)
    if size != model.size:
        plate = F.interpolate(plate, size=size, mode="bilinear", align_corners=False)
    return ((plate.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).cpu().numpy()


def compose(model: DisentangledModel | None, plates: str, own: list[str], person: list[np.ndarray],
            donor: np.ndarray, source_rcv: np.ndarray, donor_rcv: np.ndarray, size: tuple[int, int],
            mask_radius: int, blur: float) -> list[np.ndarray]:
    """(H, W, 3) uint8 composites: each ``person`` image, cut out by the soft mask of its ``source_rcv`` row, over its
    donor's plate of kind ``own`` (``image``, ``generator`` or ``inpaint``, per output)."""
    backs = donor.astype(np.float32)
    idx = [j for j, kind in enumerate(own) if kind != "image"]  # the outputs over a generated plate
    if idx:
        made = background_plates(model, donor[idx], donor_rcv[idx])
        if plates == "inpaint":  # the plate fills in the donor's person alone
            hole = np.stack([soft_person_mask(donor_rcv[j], *size, round(HOLE * mask_radius), blur)
                             for j in idx])[..., None]
            made = hole * made + (1 - hole) * backs[idx]
        backs[idx] = made
    return [paste(img, soft_person_mask(rcv, *size, mask_radius, blur), back)
            for img, rcv, back in zip(person, source_rcv, backs, strict=True)]
