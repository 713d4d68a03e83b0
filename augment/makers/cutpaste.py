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

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from augment.makers.plates import PLATES, choose_donors, compose, scaled_mask
from generator.api import DisentangledModel
from generator.config import digest
from generator.data.dataset import load_image, person_dataset
from generator.data.keypoints import rcv_to_yx, write_keypoints_csv
from generator.data.layouts import KEYPOINT_FILES, MSMT17_OUT, Msmt17Writer, msmt17_entry, resolve_layout
from generator.data.manifest import write_manifest
from generator.data.market import MarketWriter, format_name
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import (
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
    progress_bar,
    read_json_object,
    remove_empty_folders,
)
from generator.pose import MIN_PERSON_JOINTS, NO_PERSON, no_person_reason, shows_person
from reid.extra_training import loading_readme

MAX_FRAME = 999999  # Market-1501 names: six frame digits
CHUNK = 64  # outputs per batch (one generator call for the plates)
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


def output_name(pid: int, camid: int, frame: int, copy: int, msmt17: bool) -> str:
    """A Market-1501 name (sequence 0, box 1), or an MSMT17 list entry ``PPPP/PPPP_FFFFFF_CC_cutpaste_KKKK_0.jpg``
    (the camera from 01 in the third field, where MSMT17 readers take it; the frame makes it unique)."""
    if msmt17:
        return msmt17_entry(pid, camid, frame, "cutpaste", copy)
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


@dataclass
class _Plan:
    """Every output of one cut-and-paste, fixed before anything is written: output n pastes training image
    ``jobs[n][0]`` (copy ``jobs[n][1]``) over its donor, on plates of kind ``own[n]``, named ``names[n]``."""

    records: list
    rcv: np.ndarray  # (N, 18, 3) every training image's keypoints
    has_person: np.ndarray  # (N,) the sources and donors
    pids: np.ndarray
    cams: np.ndarray
    donors: np.ndarray  # (N, per_image)
    unseen: np.ndarray  # (N, per_image) the donor's camera is one the identity never appears in
    skipped: pd.DataFrame  # the training images that are no source (skipped.csv)
    jobs: list[tuple[int, int]]
    own: np.ndarray  # each output's own plates
    names: list[str]
    base: Path  # the data's base folder: manifest paths are relative to it
    msmt17: bool  # MSMT17 data: outputs in MSMT17's layout


def _check_arguments(per_image: int, mask_radius: int, blur: float, jpeg_quality: int, plates: str,
                     stage1_run, size: tuple[int, int]) -> None:
    if per_image < 1:
        raise UserError(f"--per-image {per_image}: write at least 1 image per source image")
    if not 0 <= blur <= size[0]:  # NaN fails
        raise UserError(f"--blur {blur}: use 0..{size[0]} px (the image height)")
    if not 1 <= mask_radius <= size[0]:
        raise UserError(f"--mask-radius {mask_radius}: use 1..{size[0]} px (the image height)")
    if not 1 <= jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality {jpeg_quality}: use 1..100")
    if plates not in PLATES:
        raise UserError(f"--plates {plates!r}: use one of {', '.join(PLATES)}")
    if (plates != "image") != (stage1_run is not None):
        raise UserError(f"--plates {plates} needs --stage1-run RUN (a stage-I run directory or snapshot)"
                        if plates != "image" else "--stage1-run applies to --plates generator, inpaint or mixed only")


def _already_made(out: Path, config: dict, h: str, load_data) -> dict:
    """The summary of a finished ``out`` made with the same settings; else a refusal (``out`` is not empty)."""
    marker = out / "cutpaste.json"
    # also the hash of the same settings with resolved paths: folders whose cutpaste.json hashed absolute paths
    resolved = {**config, "root": str(Path(config["root"]).resolve()),
                "stage1_run": str(Path(config["stage1_run"]).resolve()) if config["stage1_run"] is not None else None}
    made = read_json_object(marker, f"delete {out} and run cutpaste again") if marker.is_file() else {}
    if made.get("config_hash") in (h, digest(resolved)):
        summary = made.get("summary")
        if not isinstance(summary, dict):
            raise UserError(f"{marker}: no summary; delete {out} and run cutpaste again")
        if "skipped_no_person" not in summary:
            _refuse_unchecked(out, load_data())
        return {**summary, "already_complete": True}
    raise UserError(f"{out}: not empty; choose another --out or delete it")


def _plan(root, ds, per_image: int, seed: int, plates: str) -> _Plan:
    records, rcv = ds.records, np.stack(ds.rcv)
    has_person = shows_person(rcv)
    jobs = [(i, k) for i in np.flatnonzero(has_person).tolist() for k in range(per_image)]
    if not jobs:
        raise UserError(f"{root}: none of the {len(records)} training images shows a person ({NO_PERSON} in every "
                        "keypoint row); check that the keypoint CSV belongs to these images, or estimate it again")
    if len(jobs) > MAX_FRAME:
        raise UserError(f"{len(jobs)} images: the names number at most {MAX_FRAME} frames; lower --per-image")
    return _donors_and_names(root, records, rcv, has_person, jobs, per_image, seed, plates)


def _donors_and_names(root, records, rcv, has_person, jobs, per_image: int, seed: int, plates: str) -> _Plan:
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
    n_jobs = len(jobs)
    own = np.full(n_jobs, plates if plates != "mixed" else "image", dtype=object)
    if plates == "mixed":
        own[np.random.default_rng([seed, 7]).permutation(n_jobs)[:n_jobs // 2]] = "generator"
    names = [output_name(int(pids[i]), int(cams[donors[i, k]]), n + 1, k, msmt17) for n, (i, k) in enumerate(jobs)]
    return _Plan(records, rcv, has_person, pids, cams, donors, unseen, skipped, jobs, own, names, base, msmt17)


def _partial_marker(marker: Path) -> dict:
    """An unfinished run's ``cutpaste.json``; {} where a kill cut it short (that run is cleared, as another's)."""
    try:
        return read_json_object(marker, "")
    except UserError:
        return {}


def _work_folder(out: Path, started: dict, config: dict) -> Path:
    """``.OUT.partial`` beside ``out``, for the run ``started`` describes: resumed when it is that run's, cleared
    when it is another unfinished cut-and-paste, refused otherwise."""
    work = out.parent / f".{out.name}.partial"
    marker = work / "cutpaste.json"
    if work.exists() and not (marker.is_file()
                              and all(_partial_marker(marker).get(k) == v for k, v in started.items())):
        if marker.is_file():  # an unfinished run of another config: ours to clear
            shutil.rmtree(work)
        else:
            raise UserError(f"{work}: exists and is not an unfinished cut-and-paste; delete it")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {**started, "config": config})
    return work


def _manifest_row(plan: _Plan, n: int, path: str) -> dict:
    i, k = plan.jobs[n]
    d = int(plan.donors[i, k])
    return {"path": path, "split": "train", "pid": int(plan.pids[i]), "camid": int(plan.cams[d]),
            "origin": PLATES[plan.own[n]].origin,
            "source": os.path.relpath(plan.records[i].path, plan.base), "source_camid": int(plan.cams[i]),
            "donor": os.path.relpath(plan.records[d].path, plan.base), "donor_pid": int(plan.pids[d]),
            "donor_camid": int(plan.cams[d]), "donor_camera_unseen": bool(plan.unseen[i, k]),
            "plate": plan.own[n], "copy": k}


def _paste_all(plan: _Plan, model, writer, work: Path, plates: str, size: tuple[int, int], mask_radius: int,
               blur: float, progress: bool) -> tuple[list[dict], dict, int]:
    """Write every output not written yet, chunk by chunk; returns the manifest rows, the keypoints by name and
    how many images were written now."""
    rows, kp, written = [], {}, 0
    bar = progress_bar(total=len(plan.jobs), desc=PLATES[plates].dataset, unit="img", enabled=progress,
                       mininterval=0.5)
    try:
        for start in range(0, len(plan.jobs), CHUNK):
            chunk = range(start, min(start + CHUNK, len(plan.jobs)))
            todo = [n for n in chunk if not writer.path_for("train", plan.names[n]).exists()]  # resumed: done stay
            if todo:
                srcs = [plan.jobs[n][0] for n in todo]
                dons = [int(plan.donors[plan.jobs[n]]) for n in todo]
                person = [load_image(plan.records[i].path, size) for i in srcs]
                donor = np.stack([load_image(plan.records[d].path, size) for d in dons])
                images = compose(model, plates, [plan.own[n] for n in todo], person, donor, plan.rcv[srcs],
                                 plan.rcv[dons], size, mask_radius, blur)
                for n, image in zip(todo, images, strict=True):
                    writer.write("train", plan.names[n], image)
                written += len(todo)
            for n in chunk:
                rows.append(_manifest_row(plan, n, os.path.relpath(writer.path_for("train", plan.names[n]), work)))
                kp[plan.names[n]] = rcv_to_yx(plan.rcv[plan.jobs[n][0]])
            bar.update(len(chunk))
    finally:
        bar.close()
    return rows, kp, written


def _readme(plan: _Plan, summary: dict, config: dict, model, out: Path, root) -> str:
    plates, size = config["plates"], config["size"]
    n_ids = len(np.unique(plan.pids))
    return "\n".join([
        f"Cut-and-paste {PLATES[plates].what}, "
        f"written by virtual-market (vmarket cutpaste).",
        "",
        f"source: {config['root']} (training split: {len(plan.records)} images, {n_ids} identities)",
        *_skipped_readme(plan.skipped, len(plan.records), n_ids - summary["identities"]),
        f"images: {summary['images']} ({config['per_image']} per source image), real pids, camera = the donor's; "
        f"names {NAMES_NOTE[summary['layout']]}",
        f"donor from a camera the identity never appears in: {summary['donor_camera_unseen']:.1%} "
        f"(else another camera than the source's, of another identity)",
        f"mask: pose mask radius {config['mask_radius']} px, Gaussian blur std {config['blur']} px; "
        f"seed {config['seed']}",
        *([f"plates: stage I {config['stage1_run']} at {model.size[0]}x{model.size[1]}, decoded from the donor's "
           f"background embedding with no visible joint, upscaled to {size[0]}x{size[1]}{PLATES[plates].note}"]
          if model is not None else []),
        "",
        f"files: {FILES_NOTE[summary['layout']]}"
        + (", skipped.csv (the training images that show no person, and why)." if len(plan.skipped) else "."),
        "",
        *loading_readme(out, root, "real", training_only=True),
    ]) + "\n"


def _write_files(plan: _Plan, work: Path, writer, rows: list[dict], kp: dict, summary: dict) -> pd.DataFrame:
    """The manifest, the keypoint CSV (beside MSMT17's list for MSMT17 data) and skipped.csv, in ``work``."""
    df = pd.DataFrame(rows)
    write_manifest(df, work / "manifest.csv")
    if plan.msmt17:  # the list, and the keypoint CSV beside it
        writer.write_list(plan.names, df.pid, kp)
    else:
        write_keypoints_csv(work / KEYPOINT_FILES["train"], kp)
    if len(plan.skipped):
        atomic_write_text(work / "skipped.csv", plan.skipped.to_csv(index=False))
    return df


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
    _check_arguments(per_image, mask_radius, blur, jpeg_quality, plates, stage1_run, size)
    resolve_device(device)  # a device that is none, or not here, is refused whether or not the plates need it
    out = Path(out)
    # paths as given, as the builder's config hash has them: the same relative paths verify on another machine
    config = {"root": str(root), "per_image": per_image, "seed": seed, "size": list(size),
              "mask_radius": mask_radius, "blur": blur, "plates": plates,
              "stage1_run": str(stage1_run) if stage1_run is not None else None,
              "keypoints_csv": str(keypoints_csv) if keypoints_csv is not None else None,
              "skip_missing_keypoints": skip_missing_keypoints, "jpeg_quality": jpeg_quality}
    h = digest(config)
    created = check_output_folder(out, "--out", beside=True,  # written beside it (.OUT.partial), then renamed
                                  inputs={"--root": root, "--stage1-run": stage1_run}, datasets=["--root"])

    def load_data():
        return person_dataset(root, ("train",), size=size, keypoints_csv=keypoints_csv,
                              skip_missing_keypoints=skip_missing_keypoints)

    if out.exists() and any(out.iterdir()):
        return _already_made(out, config, h, load_data)
    ds = load_data()
    plan = _plan(root, ds, per_image, seed, plates)
    model = DisentangledModel.load(stage1_run, device=device) if plates != "image" else None
    # the skipped sources fix every image's frame number: a partial run that skipped others restarts
    work = _work_folder(out, {"config_hash": h, "skipped_sources": digest(
        {"sources": plan.skipped.source.tolist()})}, config)
    writer = Msmt17Writer(work, jpeg_quality) if plan.msmt17 else MarketWriter(work, jpeg_quality)
    t0 = time.perf_counter()
    try:
        rows, kp, written = _paste_all(plan, model, writer, work, plates, size, mask_radius, blur, progress)
    except UserError:
        shutil.rmtree(work, ignore_errors=True)  # a bad image found mid-way: nothing is left behind
        remove_empty_folders(out.parent, created)
        raise
    seconds = time.perf_counter() - t0
    summary = {"images": len(rows), "sources": int(plan.has_person.sum()),
               "identities": int(len(np.unique(plan.pids[plan.has_person]))),
               "written_now": written, "seconds": seconds, "images_per_s": written / max(seconds, 1e-9),
               "donor_camera_unseen": float(np.mean([r["donor_camera_unseen"] for r in rows])), "plates": plates,
               "skipped_no_person": len(plan.skipped), "min_person_joints": MIN_PERSON_JOINTS,
               "layout": "msmt17" if plan.msmt17 else "market1501"}
    _write_files(plan, work, writer, rows, kp, summary)
    atomic_write_text(work / "README.txt", _readme(plan, summary, config, model, out, root))
    atomic_write_json(work / "cutpaste.json", {"config_hash": h, "config": config, "summary": summary})
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(work, out)
    return summary
