"""SimMarket datasets on disk: ``simulate`` renders the images of a plan (``generator.simmarket.plan``) and writes
them with their keypoints, manifest and index files; :class:`SimMarket` reads a dataset back and re-renders any
combination of its factors.

The dataset on disk holds the Market-1501 splits, the keypoint CSVs, a manifest with one row per image,
``simmarket.json`` (seed and size, from which the world of backgrounds and lighting is rebuilt),
``identities.json`` and ``poses.npz``. It can also be written in the layout of DukeMTMC-reID, MSMT17 or CUHK03
(new protocol) instead (``layout``; generator.data.layouts reads them): the same identities, images and splits,
renamed and placed as that dataset does, with its list or index files, and the keypoint CSVs named and placed as
that layout's reader looks them up. Those datasets have no junk and no distractor images, so these layouts leave
SimMarket's out. The CUHK03 layout is the folder torchreid's ``CUHK03`` class works from once it has extracted the
images (the new-protocol .mat files beside ``images_detected/`` and ``images_labeled/``), without the raw
``cuhk03_release/cuhk-03.mat`` that class also requires (MATLAB v7.3, read with h5py): the project's readers and
``reid.torchreid_adapter.register_market`` load it, torchreid's ``CUHK03`` class does not.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import savemat

from generator.config import MIN_IDS, TOO_FEW_IDS, share_defect
from generator.data.keypoints import rcv_to_yx, write_keypoints_csv
from generator.data.layouts import (
    CUHK03_VARIANTS,
    KEYPOINT_FILES,
    MSMT17_LISTS,
    MSMT17_VERSIONS,
    cuhk03_image_dir,
    cuhk03_mat_name,
)
from generator.data.manifest import write_manifest
from generator.data.market import SPLIT_DIRS
from generator.errors import UserError
from generator.io import atomic_save_image, check_output_folder, partial_path, progress_bar, removed_on_failure
from generator.simmarket.body import Pose
from generator.simmarket.identity import Identity, make_identities
from generator.simmarket.plan import ImageSpec, plan_dataset
from generator.simmarket.render import Render, render
from generator.simmarket.world import NUM_CAMERAS, STYLES, Background, World

VERSION = 1
# the settings simmarket.json records only where they differ from these
DEFAULTS = {"train_cameras": 0, "layout": "market1501", "style": "flat", "train_share": 0.5}


def settings(meta: dict) -> dict:
    """``simmarket.json``'s settings, the omitted ones filled in with their defaults (``people_seed``: ``seed``)."""
    return {**DEFAULTS, "people_seed": meta.get("seed"), **meta}


LAYOUTS = ("market1501", "duke", "msmt17", "cuhk03")  # how `simulate` can write the dataset (generator.data.layouts)
# layout -> (most identities, what bounds it); MSMT17 lists and CUHK03 indices number any count
MAX_IDS = {"market1501": (1501, "Market-1501's ids as torchreid's market1501 reads them (it asserts pid <= 1501)"),
           "duke": (9999, "DukeMTMC-reID's 4-digit ids")}


@dataclass(frozen=True)
class Placed:
    """Where a planned image goes in a layout, and what that layout calls it."""
    path: str  # relative to the dataset folder
    key: str  # its row name in the keypoint CSV
    pid: int  # the pid the layout gives it
    camid: int  # 1-based camera (CUHK03: the view)


def place_specs(specs: list[ImageSpec], layout: str) -> list[Placed]:
    """Paths and names of every image of the plan in ``layout``.

    duke: ``bounding_box_*/PPPP_cC_fFFFFFFF.jpg`` (SimMarket's 6 cameras among Duke's 8). msmt17: ``train/`` and
    ``test/`` with a folder per identity, pids relabelled from 0 within train and within test as MSMT17 numbers them,
    names ``PPPP_III_CC_0303morning_FFFF_B.jpg``. cuhk03: ``images_detected/CP_PPP_V_NN.png`` (camera pair, the
    person's number in it, view, image), an identity's cameras split into two views (the first half of them view 1),
    pids kept as the labels.
    """
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    out: list[Placed] = []
    if layout == "market1501":
        return [Placed(f"{SPLIT_DIRS[sp.split]}/{sp.name}", sp.name, sp.pid, sp.camid) for sp in specs]
    if layout == "duke":
        for sp in specs:
            name = f"{sp.pid:04d}_c{sp.camid}_f{sp.frame:07d}.jpg"
            out.append(Placed(f"{SPLIT_DIRS[sp.split]}/{name}", name, sp.pid, sp.camid))
    elif layout == "msmt17":
        train_dir, test_dir = MSMT17_VERSIONS["MSMT17_V1"]
        relabel = {part: {pid: k for k, pid in enumerate(sorted({sp.pid for sp in specs
                                                                    if (sp.split == "train") == (part == "train")}))}
                   for part in ("train", "test")}
        counter: dict[tuple[str, int], int] = {}
        for sp in specs:
            part = "train" if sp.split == "train" else "test"
            pid = relabel[part][sp.pid]
            index = counter[part, pid] = counter.get((part, pid), -1) + 1
            key = f"{pid:04d}/{pid:04d}_{index:03d}_{sp.camid:02d}_0303morning_{sp.frame:04d}_{sp.box - 1}.jpg"
            out.append(Placed(f"{train_dir if part == 'train' else test_dir}/{key}", key, pid, sp.camid))
    else:
        cams: dict[int, list[int]] = {}
        for sp in specs:
            cams.setdefault(sp.pid, [])
            if sp.camid not in cams[sp.pid]:
                cams[sp.pid].append(sp.camid)
        person = {pid: i for i, pid in enumerate(sorted(cams))}
        counter = {}
        folder = cuhk03_image_dir("cuhk03_detected")
        for sp in specs:
            own = sorted(cams[sp.pid])
            view = 1 if own.index(sp.camid) < (len(own) + 1) // 2 else 2
            counter[sp.pid] = counter.get(sp.pid, 0) + 1
            if counter[sp.pid] > 99:
                raise UserError(f"identity {sp.pid}: over 99 images, more than CUHK03 names number; use another layout")
            i = person[sp.pid]
            name = f"{i % 5 + 1}_{i // 5 + 1:03d}_{view}_{counter[sp.pid]:02d}.png"
            out.append(Placed(f"{folder}/{name}", name, sp.pid, view))
    if len({p.path for p in out}) != len(out):
        raise UserError(f"--layout {layout}: two images would get the same name; use another --seed")
    return out


def write_layout_index(root: Path, specs: list[ImageSpec], placed: list[Placed], layout: str) -> None:
    """The list or index files of ``layout`` for the images ``placed``: MSMT17's list_*.txt (list_val.txt empty:
    no validation images), CUHK03's new-protocol .mat files of both variants (the labelled images a copy of the
    detected ones; no raw cuhk03_release/cuhk-03.mat, see the module docstring)."""
    if layout == "msmt17":
        for split, name in MSMT17_LISTS.items():
            lines = [f"{p.key} {p.pid}\n" for sp, p in zip(specs, placed, strict=True) if sp.split == split]
            (root / name).write_text("".join(lines))
        (root / "list_val.txt").write_text("")
    elif layout == "cuhk03":
        filelist = np.empty((len(placed), 1), dtype=object)
        filelist[:, 0] = [p.key for p in placed]
        index = {split: np.array([[k + 1] for k, sp in enumerate(specs) if sp.split == split], dtype=np.int32)
                 for split in ("train", "query", "gallery")}
        config = {"filelist": filelist, "labels": np.array([[p.pid] for p in placed], dtype=np.int32),
                  "camId": np.array([[p.camid] for p in placed], dtype=np.int32),
                  **{f"{split}_idx": idx for split, idx in index.items()}}
        for fmt in CUHK03_VARIANTS:
            savemat(str(root / cuhk03_mat_name(fmt)), config)
        shutil.copytree(root / cuhk03_image_dir("cuhk03_detected"), root / cuhk03_image_dir("cuhk03_labeled"))


def _write_image(path: Path, image, jpeg_quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_image(image, path, **({"quality": jpeg_quality} if path.suffix == ".jpg" else {}))


def render_spec(world: World, identities: list[Identity], spec: ImageSpec) -> Render:
    if spec.pose is None:
        img = world.background_image(spec.background)
        cam = world.cameras[spec.background.camera]
        img = np.clip(img * (cam.gain * cam.tint) + cam.offset, 0, 255).astype(np.uint8)
        return Render(img, np.zeros(img.shape[:2], bool), np.zeros((18, 3), np.float32),
                      np.zeros(img.shape[:2], np.uint8))
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
             overwrite: bool = False, progress: bool = True, train_cameras: int = 0,
             layout: str = "market1501", style: str = "flat", people_seed: int | None = None,
             train_share: float = 0.5) -> dict:
    """Write a SimMarket dataset to ``out``; returns the summary counts. ``train_cameras`` k > 0 limits every
    training identity to exactly k of the 6 cameras (see ``plan_dataset``). ``layout``: market1501, or duke,
    msmt17, cuhk03 (see ``place_specs``; ``out`` is then the dataset folder of that layout). ``style``: how people
    are drawn, flat or textured (``world.STYLES``); the same identities, poses, backgrounds and keypoints either way.
    ``people_seed`` (default ``seed``) draws the people, their cameras and poses, while ``seed`` keeps drawing the
    scenes and cameras: another people seed gives other people in the same six cameras (an unlabelled split for
    a generator, disjoint from a re-ID dataset of ``seed``). ``train_share``: the share of identities in the
    training split.

    The dataset is built in a temp folder next to ``out`` and renamed into
    place at the end, so a killed run leaves no half-written dataset.
    """
    if not str(out).strip():
        raise UserError("--out '': names no folder; give the folder to write the dataset to")
    out = Path(out)
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise UserError(f"--out {out}: the current folder or one above it, which the dataset would replace; give a "
                        f"new folder such as {Path(out) / 'simmarket'}")
    if ids < MIN_IDS:
        raise UserError(f"--ids {ids}: {TOO_FEW_IDS}")
    if layout in MAX_IDS and ids > MAX_IDS[layout][0]:
        raise UserError(f"--ids {ids}: at most {MAX_IDS[layout][0]} identities fit {MAX_IDS[layout][1]}; write more "
                        f"in --layout msmt17 or cuhk03, which hold any number")
    if not 0 <= train_cameras <= NUM_CAMERAS:
        raise UserError(f"--train-cameras {train_cameras}: use 1..{NUM_CAMERAS} (0: every identity keeps 2-6 cameras)")
    if style not in STYLES:
        raise UserError(f"--style {style}: use one of {', '.join(STYLES)}")
    if defect := share_defect(ids, train_share):
        raise UserError(f"--train-share {train_share}: {defect}")
    people_seed = seed if people_seed is None else people_seed
    created = check_output_folder(out, "--out", beside=True)  # the dataset is written beside it, then renamed
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: exists and is not empty; choose another output folder, or replace it "
                            f"(vmarket simulate --overwrite)")
        if not (out / "simmarket.json").is_file():  # --overwrite replaces a SimMarket, never other data
            raise UserError(f"{out}: not a SimMarket dataset (no simmarket.json), so --overwrite does not delete it; "
                            "choose another output folder")
        if foreign := _not_written_by_simulate(out):
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise UserError(f"{out}: holds {', '.join(foreign[:3])}{more}, which SimMarket did not write; --overwrite "
                            "replaces a SimMarket and never other data: move them out of it, or choose another "
                            "output folder")
    t0 = time.perf_counter()
    h, w = size
    world = World(seed, h, w, style=style)
    identities = make_identities(people_seed, ids)
    specs = plan_dataset(world, identities, people_seed, train_share=train_share, train_cameras=train_cameras)
    if layout != "market1501":  # none of the other datasets has junk or distractor images
        specs = [sp for sp in specs if sp.pid > 0]
    placed = place_specs(specs, layout)
    tmp = partial_path(out)  # a leftover of a killed run is replaced
    meta = {"version": VERSION, "seed": seed, "height": h, "width": w, "identities": ids,
            **{k: v for k, v in (("train_cameras", train_cameras), ("layout", layout), ("style", style),
                                 ("train_share", train_share)) if v != DEFAULTS[k]},
            **({"people_seed": people_seed} if people_seed != seed else {})}
    with removed_on_failure(tmp, out, created):  # a failed or interrupted run leaves nothing behind
        summary = _write_dataset(tmp, world, identities, specs, placed, meta, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    summary["seconds"] = time.perf_counter() - t0
    return summary


KEYPOINT_CSVS = frozenset(KEYPOINT_FILES.values())
# what simulate writes beside the images (each layout writes some): the only other files a SimMarket folder holds
SIM_FILES = frozenset({"simmarket.json", "manifest.csv", "manifest.parquet", "identities.json", "poses.npz",
                       "list_val.txt", *MSMT17_LISTS.values(), *KEYPOINT_CSVS,
                       *(cuhk03_mat_name(fmt) for fmt in CUHK03_VARIANTS)})
# where its keypoint CSVs sit: beside the split folders, or in CUHK03's image folders
KEYPOINT_FOLDERS = frozenset({".", *(cuhk03_image_dir(fmt) for fmt in CUHK03_VARIANTS)})


def _not_written_by_simulate(out: Path) -> list[str]:
    """The files under the SimMarket folder ``out`` that ``simulate`` did not write (its relative paths, sorted):
    anything but its images (the manifest's paths; CUHK03's labelled crops share the detected ones' names), the
    keypoint CSVs where it writes them (and the checkpoints a killed ``vmarket keypoints`` left beside them) and
    ``SIM_FILES`` at the top. A manifest that cannot be read leaves every image unaccounted for."""
    try:
        images = set(pd.read_csv(out / "manifest.csv", usecols=["path"]).path.astype(str))
    except (OSError, ValueError, pd.errors.ParserError):
        images = set()
    detected, labeled = (cuhk03_image_dir(fmt) for fmt in CUHK03_VARIANTS)
    images |= {f"{labeled}/{p.split('/', 1)[1]}" for p in images if p.startswith(f"{detected}/")}
    foreign = []
    for folder, _, files in os.walk(out):
        rel = Path(folder).relative_to(out)
        for name in files:
            path = (rel / name).as_posix()
            top = rel == Path(".")
            keypoints = name.lstrip(".").removesuffix(".partial") in KEYPOINT_CSVS  # or a killed estimate's
            if path in images or (top and name in SIM_FILES) or (keypoints and rel.as_posix() in KEYPOINT_FOLDERS):
                continue
            foreign.append(path)
    return sorted(foreign)


def _write_dataset(tmp: Path, world: World, identities: list[Identity], specs: list[ImageSpec],
                   placed: list[Placed], meta: dict, progress: bool) -> dict:
    """``simulate``'s dataset files (images, keypoints, manifest, index, and ``simmarket.json``: ``meta`` and the
    counts) written to ``tmp``; the summary."""
    h, layout = meta["height"], meta.get("layout", DEFAULTS["layout"])
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    for folder in ([SPLIT_DIRS[s] for s in ("train", "query", "gallery")] if layout in ("market1501", "duke")
                   else []):
        (tmp / folder).mkdir(parents=True, exist_ok=True)  # every split folder, even one left empty
    rows, keypoints = [], {"train": {}, "test": {}}
    joints = np.zeros((len(specs), 18, 2), np.float32)
    visible = np.zeros((len(specs), 18), bool)
    occluders = np.full((len(specs), 4), np.nan, np.float32)
    scales = np.zeros(len(specs), np.float32)
    # file creation is slow on some disks and releases the GIL: write in background threads
    pool = ThreadPoolExecutor(max_workers=2)
    pending: deque = deque()
    try:
        for k, (sp, pl) in enumerate(progress_bar(list(zip(specs, placed, strict=True)), desc="SimMarket", unit="img",
                                                  enabled=progress, mininterval=0.5)):
            r = render_spec(world, identities, sp)
            pending.append(pool.submit(_write_image, tmp / pl.path, r.image))
            if len(pending) > 64:
                pending.popleft().result()
            keypoints["train" if sp.split == "train" else "test"][pl.key] = rcv_to_yx(r.rcv)
            if sp.pose is not None:
                joints[k], visible[k], scales[k] = sp.pose.joints, sp.pose.visible, sp.pose.scale
                if sp.pose.occluder is not None:
                    occluders[k] = sp.pose.occluder
            rows.append({
                "path": pl.path, "split": sp.split, "pid": pl.pid, "camid": pl.camid,
                "origin": "sim", "identity": sp.identity,
                "group": identities[sp.identity].group if sp.identity >= 0 else -1,
                "view": sp.pose.view if sp.pose is not None else "none", "pose_index": k,
                "occluder_colour": json.dumps(list(sp.pose.occluder_colour)) if sp.pose is not None else "",
                "bg_camera": sp.background.camera, "bg_variant": sp.background.variant,
                "bg_offset": sp.background.offset,
                "noise_key": sp.noise_key, "occluded": bool(sp.pose is not None and sp.pose.occluder is not None),
                "truncated": bool(sp.truncated or (sp.pose is not None and (sp.pose.joints[:, 0].min() < 0
                                                                            or sp.pose.joints[:, 0].max() > h - 1))),
                "visible_joints": int(r.rcv[:, 2].sum()),
            })
        for f in pending:
            f.result()
    finally:  # on a failure or a stop too, so that no write lands in tmp after its removal
        pool.shutdown(wait=True, cancel_futures=True)
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, tmp / "manifest.csv")
    write_layout_index(tmp, specs, placed, layout)
    # keypoint CSVs where the layout's reader looks first (generator.data.layouts.keypoint_dirs)
    kp_dirs = [tmp / cuhk03_image_dir(f) for f in CUHK03_VARIANTS] if layout == "cuhk03" else [tmp]
    for folder in kp_dirs:
        write_keypoints_csv(folder / KEYPOINT_FILES["train"], keypoints["train"])
        write_keypoints_csv(folder / KEYPOINT_FILES["query"], keypoints["test"])
    np.savez_compressed(tmp / "poses.npz", joints=joints, visible=visible, occluder=occluders, scale=scales)
    (tmp / "identities.json").write_text(json.dumps([asdict(i) for i in identities], indent=1))
    counts = {s: int((manifest.split == s).sum()) for s in ("train", "query", "gallery")}
    summary = {
        **meta,
        "train_ids": int(manifest[manifest.split == "train"].pid.nunique()),
        "test_ids": int(manifest[manifest.split == "query"].pid.nunique()),
        "images": len(manifest), **counts,
        "distractors": sum(sp.pid == 0 for sp in specs), "junk": sum(sp.pid == -1 for sp in specs),
    }
    (tmp / "simmarket.json").write_text(json.dumps(summary, indent=1))
    return summary


# the manifest columns a SimMarket re-renders from, and those its swap pairs are drawn by
SIM_MANIFEST_COLUMNS = ("path", "identity", "view", "occluder_colour", "bg_camera", "bg_variant", "bg_offset",
                        "noise_key", "split", "pid", "occluded", "truncated", "visible_joints")


class SimMarket:
    """A SimMarket dataset on disk, able to re-render any (identity, pose, background) combination."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta = self.root / "simmarket.json"
        if not meta.is_file():
            raise UserError(f"{meta}: missing; {self.root} is not a SimMarket dataset "
                            f"(make one with `vmarket simulate`)")
        # every file ``simulate`` wrote, read and checked here: a file cut short, edited or missing is one line
        # naming it, not a traceback in the middle of an evaluation
        path = meta
        try:
            self.meta = settings(json.loads(meta.read_text()))
            self.world = World(self.meta["seed"], self.meta["height"], self.meta["width"], style=self.meta["style"])
            path = self.root / "identities.json"
            self.identities = [Identity(**d) for d in json.loads(path.read_text())]
            path = self.root / "manifest.csv"
            self.manifest = pd.read_csv(path)
            missing = sorted(set(SIM_MANIFEST_COLUMNS) - set(self.manifest.columns))
            if missing:
                raise KeyError(", ".join(missing))
            path = self.root / "poses.npz"
            with np.load(path) as poses:
                self._joints, self._visible = poses["joints"], poses["visible"]
                self._occluder, self._scale = poses["occluder"], poses["scale"]
            if not len(self._joints) == len(self._scale) == len(self.manifest):
                raise ValueError(f"{len(self._joints)} poses for {len(self.manifest)} images")
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:  # read, JSON, CSV, zip
            raise UserError(f"{path}: not as `vmarket simulate` wrote it ({type(e).__name__}: {str(e)[:120]}); "
                            f"simulate {self.root} again (delete it, then `vmarket simulate`)") from None
        self._row = {p.split("/")[-1]: i for i, p in enumerate(self.manifest.path)}

    def row(self, name: str) -> int:
        return self._row[os.path.basename(name)]

    def identity(self, name: str) -> Identity:
        return self.identities[int(self.manifest.identity.iloc[self.row(name)])]

    def pose(self, name: str) -> Pose:
        i = self.row(name)
        m = self.manifest.iloc[i]
        occ = self._occluder[i]
        colour = (tuple(json.loads(m.occluder_colour)) if isinstance(m.occluder_colour, str) and m.occluder_colour
                  else (90, 90, 90))
        return Pose(self._joints[i].copy(), self._visible[i].copy(), str(m.view), float(self._scale[i]),
                    None if np.isnan(occ).any() else tuple(float(v) for v in occ), colour)

    def background(self, name: str) -> Background:
        m = self.manifest.iloc[self.row(name)]
        return Background(int(m.bg_camera), int(m.bg_variant), int(m.bg_offset))

    def render(self, identity_of: str, pose_of: str, background_of: str) -> Render:
        """Identity of image ``identity_of`` in the pose of ``pose_of`` on the background of ``background_of``."""
        nk = int(self.manifest.noise_key.iloc[self.row(background_of)])
        return render(self.world, self.identity(identity_of), self.pose(pose_of), self.background(background_of),
                      noise_key=nk)
