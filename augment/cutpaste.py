"""Cut-and-paste across cameras: the baseline that needs no generator, and the hybrid that uses what the
generator does best.

Every real training person is cut out by a soft mask (the coarse pose mask of Sec. 3.1 from its keypoints,
Gaussian-blurred) and pasted, at the re-ID resolution, over the image of a *donor*: a training image from a
camera where the identity never appears (where there is one; else from another camera than the source's, of
another identity). The result keeps the real pid and takes the donor's camera, so that a re-ID model cannot use
the background as a shortcut to the identity.

- ``plates="image"``: the donor image itself is the background (with the donor's own person under the paste).
- ``plates="generator"``: the background is a *person-free plate* decoded by stage I (Sec. 3.1) from the donor's
  background embedding with no visible joint: empty pose maps, and the foreground embedding of "no person"
  (the encoding of the donor with every joint missing, zero for the BodyROI7 encoder). The plate is decoded at
  the generator's size and upscaled to the re-ID size; background transfer is the generator's strongest skill,
  and the person keeps its own crisp pixels.
- ``plates="inpaint"``: the donor image, with only the donor's own person (its soft pose mask, 1.4 times as wide)
  replaced by that plate: the background keeps the donor's pixels at the re-ID size, and the generator removes
  the donor's person that cut-and-paste drags along.

Only a training image whose pose shows a person (``generator.pose.shows_person``: at least ``MIN_PERSON_JOINTS``
visible joints, two of them joined by a limb) is a source: the soft mask of any other pose is empty or a
fragment, and its image would show the donor's person under the source's pid. The skipped sources are listed in
``skipped.csv`` (with the reason) and counted in the summary, ``cutpaste.json`` and ``README.txt``. Donors are
drawn from the same images, for every ``plates``: a person-free plate and the inpaint hole need the donor's
person located by its keypoints (else it stays in the background, a second, unlabelled person), and one donor
rule keeps the donors of ``mixed`` those of cut-and-paste with the same seed.

Output: a Market-1501 folder (``bounding_box_train/`` only; names ``PPPP_cCs0_FFFFFF_01.jpg``, sequence 0,
which real Market-1501 and SimMarket names never use, so the folder merges with the real one), ``manifest.csv``
naming source and donor per image, the keypoint CSV (the source's pose) and ``README.txt``. MSMT17 data, whose
pids start at 0 and cameras run to 15 (more than Market-1501 names carry), gets MSMT17's own layout instead:
``MSMT17_V1/train/PPPP/PPPP_FFFFFF_CC_cutpaste_KKKK_0.jpg`` (pid, frame, the donor's camera from 01, copy),
``MSMT17_V1/list_train.txt`` with each image's real pid as MSMT17's training list numbers it, and the keypoint
CSV beside it keyed by list entry; so every image keeps the pid of the person it shows, unshifted, and the folder
loads as an MSMT17 training split beside the real data (``generator.data.layouts``, ``reid.extra_training``).
It is written in
``.OUT.partial`` beside ``OUT`` and renamed when complete: a killed run resumes there (every image is a pure
function of the config), a refused one leaves nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from generator.api import DisentangledModel
from generator.data.dataset import load_image, market_dataset
from generator.data.keypoints import rcv_to_yx, write_keypoints_csv
from generator.data.layouts import MSMT17_VERSIONS, resolve_layout
from generator.data.manifest import write_manifest
from generator.data.market import MarketWriter, format_name
from generator.errors import UserError
from generator.io import (
    atomic_save_image,
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
    progress_bar,
    remove_empty_folders,
)
from generator.pose import MIN_PERSON_JOINTS, NO_PERSON, no_person_reason, pose_mask, shows_person
from reid.extra_training import loading_readme

PLATES = ("image", "generator", "inpaint", "mixed")
ORIGIN = {"image": "cutpaste", "generator": "hybrid", "inpaint": "inpaint"}  # an image's plate -> manifest origin
SOURCE = {**ORIGIN, "mixed": "mixed"}  # what a dataset of these plates is called (a reference re-ID source)
SOURCE_PLATES = {v: k for k, v in SOURCE.items()}  # a source's name (cutpaste, hybrid, inpaint, mixed) -> its plates
MAX_FRAME = 999999  # Market-1501 names: six frame digits
WHAT = {"image": "baseline", "generator": "over generated background plates (hybrid)",
        "inpaint": "over the donor image with its person filled in by a generated plate (inpaint hybrid)",
        "mixed": "over the donor image for half the images and its generated plate for the other half (mixed hybrid)"}
PLATE_NOTE = {"inpaint": ", filling in the donor's own person (its soft pose mask) in the donor image",
              "mixed": ", for a seeded random half of the images (the rest keep the donor image)"}  # README.txt
HOLE = 1.4  # inpaint: the donor's person mask is this much wider than the pasted one's (its hair and hands)
CHUNK = 64  # outputs per batch (one generator call for the plates)
MSMT17_OUT = "MSMT17_V1"  # the dataset folder of an output in MSMT17's layout (MSMT17 data)
SKIPPED_COLUMNS = ("source", "pid", "camid", "visible_joints", "reason")  # skipped.csv
# README.txt: the names and files of an output in each layout
NAMES_NOTE = {"market1501": "PPPP_cCs0_FFFFFF_01.jpg",
              "msmt17": f"{MSMT17_OUT}/train/PPPP/PPPP_FFFFFF_CC_cutpaste_KKKK_0.jpg in MSMT17's layout (pids as "
                        f"MSMT17 numbers them, from 0; cameras from 01), listed with their pids in "
                        f"{MSMT17_OUT}/list_train.txt"}
FILES_NOTE = {"market1501": "bounding_box_train/, manifest.csv (source, donor and their cameras per image), "
                            "market-annotation-train.csv (the source's pose), cutpaste.json (config)",
              "msmt17": f"{MSMT17_OUT}/train/, {MSMT17_OUT}/list_train.txt, manifest.csv (source, donor and their "
                        f"cameras per image), {MSMT17_OUT}/market-annotation-train.csv (the source's pose, keyed by "
                        "list entry), cutpaste.json (config)"}


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


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class Msmt17Writer:
    """Training images in MSMT17's layout under ``root``: ``MSMT17_V1/train/<entry>``, the entry
    (``PPPP/NAME.jpg``) being what ``list_train.txt`` and the keypoint CSV name (generator.data.layouts)."""

    def __init__(self, root: str | os.PathLike, jpeg_quality: int = 95):
        self.base = Path(root) / MSMT17_OUT
        self.jpeg_quality = jpeg_quality

    def path_for(self, split: str, name: str) -> Path:
        return self.base / MSMT17_VERSIONS[MSMT17_OUT][0] / name

    def write(self, split: str, name: str, image) -> Path:
        path = self.path_for(split, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_image(image, path, quality=self.jpeg_quality)
        return path


def output_name(pid: int, camid: int, frame: int, copy: int, msmt17: bool) -> str:
    """A Market-1501 name (sequence 0, box 1), or an MSMT17 list entry ``PPPP/PPPP_FFFFFF_CC_cutpaste_KKKK_0.jpg``
    (the camera from 01 in the third field, where MSMT17 readers take it; the frame makes it unique)."""
    if msmt17:
        return f"{pid:04d}/{pid:04d}_{frame:06d}_{camid:02d}_cutpaste_{copy:04d}_0.jpg"
    return format_name(pid, camid, 0, frame, 1)


def skipped_sources(records, rcv: np.ndarray, person: np.ndarray, base) -> pd.DataFrame:
    """The training images that are no source, their pose showing no person: what ``skipped.csv`` lists."""
    rows = [(os.path.relpath(records[i].path, base), records[i].pid, records[i].camid,
             int((rcv[i, :, 2] > 0).sum()), no_person_reason(rcv[i])) for i in np.flatnonzero(~person)]
    return pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))


def _skipped_readme(skipped: pd.DataFrame, images: int, identities_lost: int) -> list[str]:
    """README.txt's line on the skipped sources (none when there are none)."""
    if not len(skipped):
        return []
    return [f"skipped: {len(skipped)} of {images} training images show no person ({NO_PERSON}), so no image here "
            f"shows them and none is a donor; listed in skipped.csv"
            + (f"; identities left with no image here: {identities_lost}" if identities_lost else "")]


def skipped_line(summary: dict, out) -> str:
    """The line ``vmarket cutpaste`` prints about the skipped sources ("" when there are none)."""
    n = summary.get("skipped_no_person", 0)
    return (f"skipped {n} of {n + summary['sources']} source images with no visible person ({NO_PERSON}): "
            f"listed in {Path(out) / 'skipped.csv'}" if n else "")


def _refuse_unchecked(out: Path, ds) -> None:
    """A finished folder whose summary has no skip count was written without the person check: refused when the
    data holds sources that show no person, since its images of them show the donor's person under their pids."""
    n = int((~shows_person(np.stack(ds.rcv))).sum())
    if n:
        raise UserError(f"{out}: holds images of {n} source images that show no person ({NO_PERSON}): they show "
                        f"the donor's person under the source's pid; delete {out} and run again")


def cut_paste(root: str | os.PathLike, out: str | os.PathLike, per_image: int = 1, seed: int = 0,
              size: tuple[int, int] = (128, 64), mask_radius: int | None = None, blur: float | None = None,
              plates: str = "image",
              stage1_run: str | os.PathLike | None = None, keypoints_csv: str | os.PathLike | None = None,
              skip_missing_keypoints: bool = False, jpeg_quality: int = 95, device: str = "cpu",
              progress: bool = True) -> dict:
    """Write the cut-and-paste (or, with generated plates, the hybrid) dataset of ``root``'s training split to
    ``out``; returns a summary. Every check runs before anything is written. ``mask_radius`` and ``blur`` (px)
    default to 7 and 2 at 128x64, scaled with the image height (4 and 1 at 64x32), so that the mask hugs the
    person at every size rather than carrying a band of the source's background into the donor's camera."""
    mask_radius, blur = scaled_mask(size, mask_radius, blur)
    if per_image < 1:
        raise UserError(f"--per-image {per_image}: write at least 1 image per source image")
    if blur < 0 or mask_radius < 1:
        raise UserError(f"--blur {blur} / --mask-radius {mask_radius}: need blur >= 0 and mask radius >= 1 (px)")
    if not 1 <= jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality {jpeg_quality}: use 1..100")
    if plates not in PLATES:
        raise UserError(f"--plates {plates!r}: use one of {', '.join(PLATES)}")
    if (plates != "image") != (stage1_run is not None):
        raise UserError(f"--plates {plates} needs --stage1-run RUN (a stage-I run directory or snapshot)"
                        if plates != "image" else "--stage1-run applies to --plates generator, inpaint or mixed only")
    out = Path(out)
    # paths as given, as the builder's config hash has them: the same relative paths verify on another machine
    config = {"root": str(root), "per_image": per_image, "seed": seed, "size": list(size),
              "mask_radius": mask_radius, "blur": blur, "plates": plates,
              "stage1_run": str(stage1_run) if stage1_run is not None else None,
              "keypoints_csv": str(keypoints_csv) if keypoints_csv is not None else None,
              "skip_missing_keypoints": skip_missing_keypoints, "jpeg_quality": jpeg_quality}
    h = _config_hash(config)
    created = check_output_folder(out, "--out", beside=True)  # written beside it (.OUT.partial), then renamed
    if out.exists() and any(out.iterdir()):
        marker = out / "cutpaste.json"
        # also the hash of the same settings with resolved paths, as folders made by earlier versions carry
        resolved = {**config, "root": str(Path(root).resolve()),
                    "stage1_run": str(Path(stage1_run).resolve()) if stage1_run is not None else None}
        if marker.is_file() and json.loads(marker.read_text()).get("config_hash") in (h, _config_hash(resolved)):
            summary = json.loads(marker.read_text())["summary"]
            if "skipped_no_person" not in summary:
                _refuse_unchecked(out, market_dataset(root, ("train",), size=size, keypoints_csv=keypoints_csv,
                                                      skip_missing_keypoints=skip_missing_keypoints))
            return {**summary, "already_complete": True}
        raise UserError(f"{out}: not empty; choose another --out or delete it")
    ds = market_dataset(root, ("train",), size=size, keypoints_csv=keypoints_csv,
                        skip_missing_keypoints=skip_missing_keypoints)
    records, rcv = ds.records, np.stack(ds.rcv)
    has_person = shows_person(rcv)  # the sources and donors
    jobs = [(i, k) for i in np.flatnonzero(has_person).tolist() for k in range(per_image)]
    n_jobs = len(jobs)
    if not jobs:
        raise UserError(f"{root}: none of the {len(records)} training images shows a person ({NO_PERSON} in every "
                        "keypoint row); check that the keypoint CSV belongs to these images, or estimate it again")
    if n_jobs > MAX_FRAME:
        raise UserError(f"{n_jobs} images: the names number at most {MAX_FRAME} frames; lower --per-image")
    model = DisentangledModel.load(stage1_run, device=device) if plates != "image" else None
    layout = resolve_layout(root)
    base, msmt17 = layout.base, layout.format == "msmt17"
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    if not msmt17 and (pids.min() < 1 or cams.max() > 9):
        raise UserError(f"{root}: pids from {pids.min()} and cameras up to {cams.max()}, which Market-1501 names "
                        "(pids from 0001, cameras c1 to c9) cannot carry; cut-and-paste writes Market-1501 for "
                        "Market-1501, DukeMTMC-reID and CUHK03 data and MSMT17's layout for MSMT17 data")
    donors, unseen = choose_donors(pids, cams, per_image, seed, has_person)
    skipped = skipped_sources(records, rcv, has_person, base)
    # each output's own plates: for "mixed", a seeded random half on the generated plate (the donors stay those of
    # cut-and-paste with the same seed: the generator's plates are the only difference)
    own = np.full(n_jobs, plates if plates != "mixed" else "image", dtype=object)
    if plates == "mixed":
        own[np.random.default_rng([seed, 7]).permutation(n_jobs)[:n_jobs // 2]] = "generator"

    work = out.parent / f".{out.name}.partial"
    marker = work / "cutpaste.json"
    # the skipped sources fix every image's frame number: a partial run that skipped others restarts
    started = {"config_hash": h, "skipped_sources": _config_hash({"sources": skipped.source.tolist()})}
    if work.exists() and not (marker.is_file()
                              and all(json.loads(marker.read_text()).get(k) == v for k, v in started.items())):
        if marker.is_file():  # an unfinished run of another config: ours to clear
            shutil.rmtree(work)
        else:
            raise UserError(f"{work}: exists and is not an unfinished cut-and-paste; delete it")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {**started, "config": config})
    writer = Msmt17Writer(work, jpeg_quality) if msmt17 else MarketWriter(work, jpeg_quality)
    t0 = time.perf_counter()
    rows, kp, written = [], {}, 0
    names = [output_name(int(pids[i]), int(cams[donors[i, k]]), n + 1, k, msmt17) for n, (i, k) in enumerate(jobs)]
    bar = progress_bar(total=len(jobs), desc=SOURCE[plates], unit="img",
                       enabled=progress, mininterval=0.5)
    try:
        for start in range(0, len(jobs), CHUNK):
            chunk = range(start, min(start + CHUNK, len(jobs)))
            todo = [n for n in chunk if not writer.path_for("train", names[n]).exists()]  # resumed: done ones stay
            if todo:
                srcs = [jobs[n][0] for n in todo]
                dons = [int(donors[jobs[n]]) for n in todo]
                person = [load_image(records[i].path, size) for i in srcs]
                donor = np.stack([load_image(records[d].path, size) for d in dons])
                backs = donor.astype(np.float32)
                idx = [j for j, n in enumerate(todo) if own[n] != "image"]  # the outputs over a generated plate
                if idx:
                    made = background_plates(model, donor[idx], rcv[[dons[j] for j in idx]])
                    if plates == "inpaint":  # the plate fills in the donor's person alone
                        hole = np.stack([soft_person_mask(rcv[dons[j]], *size, round(HOLE * mask_radius), blur)
                                         for j in idx])[..., None]
                        made = hole * made + (1 - hole) * backs[idx]
                    backs[idx] = made
                for n, i, img, back in zip(todo, srcs, person, backs, strict=True):
                    alpha = soft_person_mask(rcv[i], *size, mask_radius, blur)
                    writer.write("train", names[n], paste(img, alpha, back))
                written += len(todo)
            for n in chunk:
                i, k = jobs[n]
                d = int(donors[i, k])
                rows.append({"path": os.path.relpath(writer.path_for("train", names[n]), work), "split": "train",
                             "pid": int(pids[i]),
                             "camid": int(cams[d]), "origin": ORIGIN[own[n]],
                             "source": os.path.relpath(records[i].path, base), "source_camid": int(cams[i]),
                             "donor": os.path.relpath(records[d].path, base), "donor_pid": int(pids[d]),
                             "donor_camid": int(cams[d]), "donor_camera_unseen": bool(unseen[i, k]),
                             "plate": own[n], "copy": k})
                kp[names[n]] = rcv_to_yx(rcv[i])
            bar.update(len(chunk))
    except UserError:
        shutil.rmtree(work, ignore_errors=True)  # a bad image found mid-way: nothing is left behind
        remove_empty_folders(out.parent, created)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    write_manifest(df, work / "manifest.csv")
    data_dir = writer.base if msmt17 else work  # where a reader looks for the keypoint CSV (and MSMT17's list)
    write_keypoints_csv(data_dir / "market-annotation-train.csv", kp)
    if msmt17:
        atomic_write_text(data_dir / "list_train.txt", "".join(f"{name} {pid}\n" for name, pid in zip(
            names, df.pid, strict=True)))
    if len(skipped):
        atomic_write_text(work / "skipped.csv", skipped.to_csv(index=False))
    summary = {"images": len(df), "sources": int(has_person.sum()),
               "identities": int(len(np.unique(pids[has_person]))),
               "written_now": written, "seconds": seconds, "images_per_s": written / max(seconds, 1e-9),
               "donor_camera_unseen": float(df.donor_camera_unseen.mean()), "plates": plates,
               "skipped_no_person": len(skipped), "min_person_joints": MIN_PERSON_JOINTS,
               "layout": "msmt17" if msmt17 else "market1501"}
    atomic_write_text(work / "README.txt", "\n".join([
        f"Cut-and-paste {WHAT[plates]}, "
        f"written by virtual-market (vmarket cutpaste).",
        "",
        f"source: {config['root']} (training split: {len(records)} images, {len(np.unique(pids))} identities)",
        *_skipped_readme(skipped, len(records), len(np.unique(pids)) - summary["identities"]),
        f"images: {len(df)} ({per_image} per source image), real pids, camera = the donor's; names "
        f"{NAMES_NOTE[summary['layout']]}",
        f"donor from a camera the identity never appears in: {summary['donor_camera_unseen']:.1%} "
        f"(else another camera than the source's, of another identity)",
        f"mask: pose mask radius {mask_radius} px, Gaussian blur std {blur} px; seed {seed}",
        *([f"plates: stage I {config['stage1_run']} at {model.size[0]}x{model.size[1]}, decoded from the donor's "
           f"background embedding with no visible joint, upscaled to {size[0]}x{size[1]}{PLATE_NOTE.get(plates, '')}"]
          if model is not None else []),
        "",
        f"files: {FILES_NOTE[summary['layout']]}"
        + (", skipped.csv (the training images that show no person, and why)." if len(skipped) else "."),
        "",
        *loading_readme(out, root, "real", training_only=True),
    ]) + "\n")
    atomic_write_json(marker, {"config_hash": h, "config": config, "summary": summary})
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(work, out)
    return summary
