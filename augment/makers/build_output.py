"""A finished Virtual Market build's files beside its images: the manifest, the keypoint CSVs, README.txt, and the
optional ImageFolder and MSMT17-list exports (hard links)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augment.makers.build_config import TORCHREID_MARKET_PIDS, BuildConfig
from augment.makers.export import EXPORTS, write_beside
from generator.config import to_dict
from generator.data.keypoints import rcv_to_yx, write_keypoints_csv
from generator.data.layouts import (
    KEYPOINT_FILES,
    MSMT17_OUT,
    Msmt17Writer,
    msmt17_entry,
    msmt17_out_entry,
    msmt17_out_path,
)
from generator.data.manifest import write_manifest
from generator.data.market import SPLIT_DIRS, format_name
from generator.io import atomic_write_text
from generator.pose import NO_PERSON
from generator.shipped import sha256_file
from reid.extra_training import LOADER, loading_readme


def read_parts(out: Path) -> dict[int, dict]:
    recs = {}
    for f in sorted((out / "parts").glob("shard-*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            recs[rec["identity"]] = rec
    return recs


def image_entry(path: str, msmt17: bool) -> str:
    """What the writer and the keypoint CSV name a built image by, from its manifest ``path``: the file name, or in
    MSMT17's layout the list entry ``PPPP/NAME.jpg``."""
    return msmt17_out_entry(path) if msmt17 else path.split("/")[-1]


def finalize(out: Path, cfg: BuildConfig, plans, stats, builder, recs: dict[int, dict]) -> dict:
    """Manifest (CSV + parquet), keypoint CSVs, optional ImageFolder export and README.txt, from the progress files;
    in MSMT17's layout (``builder.msmt17``) also ``list_train.txt``, beside which the keypoint CSV sits."""
    msmt17 = builder.msmt17
    rows = [r for p in plans for r in recs[p.index]["rows"]]
    kp = {"train": {}, "test": {}}
    for r in rows:
        kp["train" if r["split"] == "train" else "test"][image_entry(r["path"], msmt17)] = np.asarray(r["keypoints"])
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "keypoints"} for r in rows])
    write_manifest(df, out / "manifest.csv")
    if msmt17:  # the list, and the keypoint CSV beside it
        Msmt17Writer(out).write_list([image_entry(p, True) for p in df.path], df.pid, kp["train"])
    else:
        write_keypoints_csv(out / KEYPOINT_FILES["train"], kp["train"])
    if kp["test"]:
        write_keypoints_csv(out / KEYPOINT_FILES["query"], kp["test"])
    for kind in (k for k in EXPORTS if getattr(cfg, f"export_{k}")):
        export_build(out, df, kind)
    counts = {s: int((df.split == s).sum()) for s in ("train", "query", "gallery")}
    s2 = builder.s2cfg
    hashes = {name: sha256_file(Path(path) / "snapshot.pt") for name, path in
              (("stage1", s2.stage1_run), ("pose", s2.pose_run), ("stage2", cfg.stage2_run))}
    cams = df.groupby("pid").camid.nunique()
    lines = [
        "Virtual Market dataset, built by virtual-market (vmarket build).",
        "",
        f"identities: {len(plans)}   images: {len(df)}   train: {counts['train']}   query: {counts['query']}   "
        f"gallery: {counts['gallery']}",
        *([f"cameras (the real data's, of each background): {sorted(df.camid.unique().tolist())}; backgrounds "
           f"from a camera the identity was never seen in: {df.bg_unseen_camera.mean():.1%}",
           f"build seed: {cfg.seed}; identity seeds derived from (seed, pid); fg mode: real ({cfg.real_fg}): "
           f"real training identities, real pids, names "
           + ("in MSMT17's layout (MSMT17 data)" if msmt17 else "PPPP_cCs0_...") + " (column source: the real image)"]
          if cfg.fg_mode == "real" else
          [f"cameras (background clusters): {sorted(df.camid.unique().tolist())}; "
           f"every identity in >= {int(cams.min())} cameras",
           f"build seed: {cfg.seed}; identity i uses seeds derived from (seed, i); fg mode: {cfg.fg_mode}"]),
        f"backgrounds from Phi_bg: {(df.bg_source == 'phi_bg').mean():.1%}"
        + (f" ({stats['phi_bg_missed']} Phi_bg draws found no sample of an allowed camera in {cfg.max_attempts} "
           f"tries and took a real background)" if stats.get("phi_bg_missed") else "") + "; "
        f"poses from Phi_pose: {(df.pose_source == 'phi_pose').mean():.1%}",
        (f"novelty filter: tau {cfg.novelty_tau} (cosine), rejection rate {stats['novelty_rejection_rate']:.1%} "
         f"({stats['novelty_rejected']} of {stats['novelty_attempts']} attempts)"
         if cfg.fg_mode != "real" else "novelty filter: off (real identities)"),
        (f"quality filter: kept {cfg.quality_keep:.0%} of {builder.candidates} candidates per identity "
         f"by discriminator score"
         if builder.D is not None else "quality filter: off (stage I has no trained discriminator); d_score is 0"),
        *([f"real training images that show no person ({NO_PERSON}), never a foreground, pose or background "
           f"here: {stats['no_person_images']} of {stats['real_images']}"
           + (f"; identities with none that shows a person, not built: {stats['no_person_identities']}"
              if stats["no_person_identities"] else "")] if stats.get("no_person_images") else []),
        "",
        "checkpoints (sha256 of snapshot.pt):",
        *[f"  {k}: {v}  ({p})"
          for (k, v), p in zip(hashes.items(), (s2.stage1_run, s2.pose_run, cfg.stage2_run), strict=True)],
        "",
        "config:",
        *[f"  {k}: {v}" for k, v in to_dict(cfg).items()],
        "",
        *([f"files: {msmt17_out_path('PPPP/PPPP_FFFFFF_CC_remix_0000_0.jpg')} (MSMT17's layout: pids as the data "
           f"numbers them, from 0; cameras from 01; FFFFFF the number of the identity's candidate image kept), "
           f"listed with their pids in {MSMT17_OUT}/list_train.txt,"] if msmt17 else
          ["files: bounding_box_train/ query/ bounding_box_test/ (Market-1501 names PPPP_cCs1_FFFFFF_01.jpg),"]),
        "manifest.csv / manifest.parquet (one row per image: pid, camid, fg / bg / pose sources and seeds, the real",
        "images they came from (fg_image, bg_image, pose_image: empty where sampled), d_score),",
        (f"{MSMT17_OUT}/market-annotation-train.csv (the poses used, list entry:keypoints_y:keypoints_x)."
         if msmt17 else "market-annotation-*.csv (the poses used, name:keypoints_y:keypoints_x)."),
    ]
    if cfg.fg_mode != "real" and (cfg.identities > TORCHREID_MARKET_PIDS or cfg.cameras > 6):
        lines.append(f"torchreid's built-in market1501 asserts pid <= {TORCHREID_MARKET_PIDS} and camera <= 6, so it "
                     f"cannot load this folder: use {LOADER} (below)"
                     + (" or imagefolder/train/." if cfg.export_imagefolder else "."))
    lines += ["", *loading_readme(out, cfg.data_root or builder.s2cfg.data_root or builder.model.data.root,
                                  "real" if cfg.fg_mode == "real" else "new", training_only=counts["query"] == 0)]
    if cfg.export_msmt17:
        lines += ["", MSMT17_README.format(images=len(df))]
    atomic_write_text(out / "README.txt", "\n".join(lines) + "\n")
    return {"images": len(df), **{f"n_{k}": v for k, v in counts.items()}, "finalized": True}


MSMT17_README = """msmt17/MSMT17_V1/: the same {images} images in MSMT17's list layout (hard links), for tools that read
MSMT17 with any number of identities. Names PPPP_KKK_CC_vm_FFFF_0.jpg (CC: the camera, 1-based); list_*.txt lines
are "PPPP/NAME.jpg LABEL", labels 0..N-1 per list group (train, test), so the real pids of a fg_mode: real build are
renumbered there. torchreid's own msmt17 dataset (root THIS_FOLDER, sources "msmt17") reads it when the build has a
test split (test_share > 0); without one it fails on the empty query as market1501 does, and """ + LOADER + """
(above) is the way in, for any number of identities. fast-reid: an ImageDataset subclass registered with
@DATASET_REGISTRY.register() whose train list is read from list_train.txt (path under train/, label, camera = the
name's third field minus 1)."""


def export_build(out: Path, df, kind: str) -> None:
    """The build's ``kind`` export (``imagefolder/`` or ``msmt17/`` in ``out``) of its manifest rows ``df``."""
    write_beside(out / kind, kind, df.assign(src=[str(out / p) for p in df.path]))


def query_gallery_split(cams: list[int]) -> list[str]:
    """query / gallery for a test identity's images: one query per camera that has two or more images (one
    query in all if none has), so every query keeps a gallery match from another camera; an identity seen by one
    camera only (or in one image) is gallery alone, as no query of it could be matched."""
    counts = {c: cams.count(c) for c in set(cams)}
    if len(counts) < 2:
        return ["gallery"] * len(cams)
    splits, used = [], set()
    multi = any(n >= 2 for n in counts.values())
    for c in cams:
        if c not in used and (counts[c] >= 2 or (not multi and not used)):
            splits.append("query")
            used.add(c)
        else:
            splits.append("gallery")
    return splits


def manifest_rows(p, keep: list[int], scores, kps, bank_names: list[str] | None = None,
                  msmt17: bool = False) -> list[dict]:
    """One manifest row per kept candidate ``keep`` of identity plan ``p``. ``bank_names``: the real image of each
    bank row (relative to the data's base folder), for the columns that name the real images an image took its
    factors from: ``fg_image`` (fg_mode remix: the real image whose foreground was perturbed), ``bg_image`` and
    ``pose_image`` (a background or pose from the real bank); each is empty where the factor was sampled from
    Phi (or ``bank_names`` is None). ``msmt17``: paths in MSMT17's layout (a real-mode build of MSMT17 data, whose
    images are all training images)."""
    splits = query_gallery_split([p.images[j].camera for j in keep]) if p.split == "test" else ["train"] * len(keep)

    def bank_image(source: str, key: int) -> str:
        return bank_names[key] if bank_names is not None and source == "bank" else ""

    fg_kind, _, fg_key = p.fg_source.partition(":")
    fg_image = bank_image("bank", int(fg_key)) if fg_kind == "remix" else ""
    rows = []
    for j, split in zip(keep, splits, strict=True):
        im = p.images[j]
        path = (msmt17_out_path(msmt17_entry(p.pid, im.camera, j + 1, "remix")) if msmt17 else
                f"{SPLIT_DIRS[split]}/{format_name(p.pid, im.camera, p.seq, j + 1, 1)}")
        row = {"path": path, "split": split, "pid": p.pid, "camid": im.camera,
               "origin": "remix" if im.source else "virtual", "identity": p.index, "fg_source": p.fg_source,
               "novelty_attempts": p.attempts, "bg_source": im.bg_source, "bg_key": im.bg_key,
               "pose_source": im.pose_source, "pose_key": im.pose_key,
               "candidate": j, "d_score": float(scores[j]), "keypoints": rcv_to_yx(kps[j]).tolist()}
        if im.source:  # real mode: which real image(s) the foreground came from, and whether the camera is new
            row.update(source=im.source, bg_unseen_camera=im.bg_unseen)
        row.update(fg_image=fg_image, bg_image=bank_image(im.bg_source, im.bg_key),
                   pose_image=bank_image(im.pose_source, im.pose_key))
        rows.append(row)
    return rows


def skipped_line(summary: dict) -> str:
    """The line ``vmarket build`` prints about the real images it never used ("" when there are none)."""
    n, lost = summary.get("no_person_images", 0), summary.get("no_person_identities", 0)
    return (f"skipped {n} of {summary['real_images']} real training images with no visible person ({NO_PERSON}): "
            "never a foreground, pose or background" + (f"; identities with none that shows a person, not built: "
                                                       f"{lost}" if lost else "") if n else "")
