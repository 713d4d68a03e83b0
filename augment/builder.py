"""The Virtual Market builder (Sec. 4): one foreground per identity, many backgrounds and poses.

An identity is one foreground embedding, sampled by Phi_fg (or, in "remix" mode,
encoded from a real image and perturbed). Each of its images gets a background
(Phi_bg or a bank of real background embeddings) and a pose (Phi_pose or a bank
of real training poses). Cameras 1..6 are clusters of background embeddings.

In "real" mode (the identity-preserving remix, after CamStyle and DG-Net) the identities are the
real training identities themselves: each image takes the foreground embedding of one of the identity's real
images (or their mean), a background from a camera the identity was never seen in (where one exists) and a
pose from another image; it keeps the real pid and gets its background's real camera, so that the folder
merges with the real training data without an offset. Names use sequence 0 (``PPPP_cCs0_...``), which real
Market-1501 and SimMarket names (s1..s6) never do.

A real training image whose pose shows no person (``generator.pose.shows_person``: fewer than
``MIN_PERSON_JOINTS`` visible joints, or none joined by a limb) is never a foreground, a pose or a bank
background: its foreground embedding is that of "no person", its pose draws no one, and its background embedding,
encoded with no person masked out, carries whoever the keypoints missed. In real mode an identity none of whose
images shows a person is not built; with ``identities: N`` the first N identities by pid that have such an image
are. The skips are counted in the summary, ``build.json`` and README.txt.

Build order, chosen so that any shard is reproducible on its own:
1. the *plan* (every identity's embedding after the novelty filter, every
   image's background, pose and camera) is computed by every process, cheaply
   and in the same order;
2. rendering, the expensive part, is split by identity over ``--shard i/n`` or
   torchrun ranks; each identity is decoded as its own batch, so its pixels do
   not depend on which process renders it;
3. each identity's images are written atomically, then a line in the shard's
   progress file marks it done: a killed build resumes at the first identity
   not marked, and the last shard to finish writes manifest, keypoints and README.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from augment.stage2_report import load_stage2
from generator.config import ConfigValueError, from_dict, to_dict
from generator.data.dataset import market_dataset
from generator.data.keypoints import rcv_to_yx, write_keypoints_csv
from generator.data.layouts import resolve_layout
from generator.data.manifest import write_manifest
from generator.data.market import SPLIT_DIRS, MarketWriter, Record, format_name
from generator.errors import UserError
from generator.io import atomic_write_text, check_output_folder, load_checkpoint, progress_bar
from generator.models.stage1 import DCGANDiscriminator
from generator.pose import NO_PERSON, shows_person
from generator.shipped import sha256_file
from generator.training.stage1 import Stage1Config
from reid.extra_training import LOADER, loading_readme
from reid.retrieval import CosineIndex, kmeans, nearest

MAX_CAMERAS = 9  # Market-1501 names: one camera digit, c1..c9
MAX_PIDS = 9999  # Market-1501 names: four pid digits
TORCHREID_MARKET_PIDS = 1501  # torchreid's built-in market1501 asserts 0 <= pid <= 1501 (and camera <= 6)
POSE_TRIES = 20  # Phi_pose samples drawn for one image before the build is refused (each shows no person)
NO_PERSON_KEYS = ("no_person_images", "no_person_identities", "real_images")  # the skip counts build.json keeps


@dataclass
class BuildConfig:
    stage2_run: str = ""  # stage-II run directory (its config names the stage-I and pose-AE runs)
    out: str = "outputs/virtual_market"  # dataset folder (Market-1501 layout)
    identities: int = 500  # identities to build (real mode: the first N real training identities by pid; 0: all)
    images_per_id: int = 24  # images kept per identity
    seed: int = 0  # build seed; identity i uses seeds derived from (seed, i)
    # sample (Phi_fg) | remix (encode a real image and perturb it: a new identity) | real (the real training
    # identities' own foregrounds, real pids, backgrounds from cameras each identity was not seen in)
    fg_mode: Literal["sample", "remix", "real"] = "sample"
    real_fg: Literal["image", "mean"] = "image"  # real mode: fg of one real image per output (in turn), or their mean
    data_root: str = ""  # real mode: the data stage II embedded (default: its data_root, else stage I's data.root)
    remix_noise: float = 0.5  # remix: perturbation std, in units of the real fg embeddings' per-dimension std
    bg_sample_share: float = 0.5  # share of images whose background comes from Phi_bg (the rest: real bank)
    pose_sample_share: float = 0.0  # share of images whose pose comes from Phi_pose (the rest: real bank; official: 0)
    cameras: int = 6  # background clusters = camera ids, 1..9 (one digit in names); real mode: the real cameras
    novelty_tau: float = 0.02  # reject an identity whose fg lies within this cosine distance of an accepted or real one
    max_attempts: int = 50  # novelty attempts per identity before giving up
    quality_keep: float = 1.0  # keep this share of candidates per identity, best discriminator scores first
    test_share: float = 0.0  # share of identities for query / gallery (0: everything in bounding_box_train)
    jpeg_quality: int = 95
    export_imagefolder: bool = False  # also write imagefolder/<pid>/ (hard links); needed above 1501 identities
    # also write msmt17/MSMT17_V1/ (MSMT17's list layout, hard links): torchreid's msmt17 loads it, any pid count
    export_msmt17: bool = False

    def __post_init__(self):
        """Range checks, at config load time (before anything is written)."""
        if not 1 <= self.cameras <= MAX_CAMERAS:
            raise ConfigValueError("cameras", f"{self.cameras} is outside 1..{MAX_CAMERAS} (Market-1501 names hold "
                                              f"one camera digit, c1..c9); use 1..{MAX_CAMERAS}")
        if self.fg_mode == "real":
            if self.identities < 0:
                raise ConfigValueError("identities", f"{self.identities} is negative; 0 remixes every real training "
                                                     f"identity, N > 0 the first N by pid")
            if self.test_share > 0:
                raise ConfigValueError("test_share", f"{self.test_share}: real-mode remixes are training images of "
                                                     f"the real training identities; set test_share: 0")
        elif self.identities < 1:
            raise ConfigValueError("identities", f"{self.identities} is less than 1; build at least 1 identity")
        if self.identities > MAX_PIDS:
            raise ConfigValueError("identities", f"{self.identities} is more than {MAX_PIDS} (4-digit Market-1501 "
                                                 f"pids); split it into several builds (another seed and out each)")
        if (self.identities > TORCHREID_MARKET_PIDS and not (self.export_imagefolder or self.export_msmt17)
                and self.fg_mode != "real"):
            raise ConfigValueError(
                "identities", f"{self.identities} is more than the {TORCHREID_MARKET_PIDS} a Market-1501 folder holds "
                              f"(torchreid's market1501 asserts pid <= {TORCHREID_MARKET_PIDS}); set "
                              f"export_msmt17: true for MSMT17's list layout, which torchreid loads, or "
                              f"export_imagefolder: true for imagefolder/<pid>/ + manifest.csv (up to {MAX_PIDS}), or "
                              f"split into builds of <= {TORCHREID_MARKET_PIDS} identities (another seed and out each)")
        if self.images_per_id < 1:
            raise ConfigValueError("images_per_id",
                                   f"{self.images_per_id} is less than 1; keep at least 1 image per identity")
        if not 0 < self.quality_keep <= 1:
            raise ConfigValueError("quality_keep", f"{self.quality_keep} is outside (0, 1]; 1.0 keeps every candidate")
        if self.max_attempts < 1:
            raise ConfigValueError("max_attempts",
                                   f"{self.max_attempts} is less than 1; allow at least 1 novelty attempt")
        for name in ("bg_sample_share", "pose_sample_share", "test_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigValueError(name, f"{getattr(self, name)} is outside [0, 1]; it is a share")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigValueError("jpeg_quality", f"{self.jpeg_quality} is outside 1..100")


def config_hash(cfg: BuildConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n such as 0/4") from None
    if not (0 <= i < n):
        raise UserError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


@dataclass
class ImagePlan:
    bg_source: str  # phi_bg | bank
    bg_key: int  # seed for phi_bg, or index into the real background bank
    pose_source: str  # phi_pose | bank
    pose_key: int
    camera: int  # 1-based
    bg: np.ndarray | None = None  # (128,) the background embedding itself, resolved once in the plan
    fg: np.ndarray | None = None  # (224,) real mode: this image's own foreground (None: the identity's)
    source: str = ""  # real mode: the real image(s) the foreground came from, relative to the data root
    bg_unseen: bool = False  # real mode: the background's camera is one the identity was never seen in


@dataclass
class IdentityPlan:
    index: int  # 0-based identity slot; pid = index + 1 (real mode: the real pid)
    fg: np.ndarray  # (224,)
    fg_source: str  # phi_fg:<seed> | remix:<real image> | real_image:<pid> | real_mean:<pid>
    attempts: int
    images: list[ImagePlan] = field(default_factory=list)
    split: str = "train"
    pid: int = 0  # the pid written (0: index + 1)
    seq: int = 1  # the sequence digit of the names (real mode: 0, never a real image's)

    def __post_init__(self):
        self.pid = self.pid or self.index + 1


class Builder:
    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg  # ranges and choices were checked when the config loaded (BuildConfig.__post_init__)
        run = Path(cfg.stage2_run)
        if not (run / "snapshot.pt").is_file():
            raise UserError(f"{run}: no stage-II snapshot.pt; set stage2_run to a trained stage-II run directory")
        self.s2cfg, self.sampler, self.model = load_stage2(run)
        self.emb = load_checkpoint(run / "embeddings.pt")  # the real banks: fg, bg, keypoints, pid
        self.size = self.model.size
        self.D = self._load_discriminator()
        if self.D is None and cfg.quality_keep < 1:
            raise UserError(f"quality_keep {cfg.quality_keep}: the quality filter needs stage I's trained "
                            f"discriminator, and {self.s2cfg.stage1_run} trained without the adversarial term; "
                            f"set quality_keep: 1.0")
        self.candidates = int(np.ceil(cfg.images_per_id / cfg.quality_keep))
        self.person = shows_person(self.emb["keypoints"].numpy())  # (N,) the bank rows that may be used
        self.pose_redrawn = 0  # Phi_pose samples drawn again because they showed no person
        if not self.person.any():
            raise UserError(f"{run}/embeddings.pt: none of its {len(self.person)} training images shows a person "
                            f"({NO_PERSON}); train stage II on data whose keypoints find the people")
        self.records = self._real_records() if cfg.fg_mode == "real" else None

    def _real_records(self) -> list[Record]:
        """The training records of the real data, in the order of the embedding banks (as real_embeddings read
        them), so that bank row i is the image records[i]: its name, pid and camera."""
        root = self.cfg.data_root or self.s2cfg.data_root or self.model.data.root
        fmt = self.model.data.format
        ds = market_dataset(root, ("train",), size=self.size, fmt=fmt,
                            skip_missing_keypoints=self.model.data.skip_missing_keypoints)
        pids = self.emb["pid"].numpy()
        if len(ds.records) != len(pids) or any(r.pid != p for r, p in zip(ds.records, pids, strict=True)):
            raise UserError(f"{root}: its training split ({len(ds.records)} images) is not the data of "
                            f"{self.cfg.stage2_run}/embeddings.pt ({len(pids)} embeddings); set data_root to the "
                            f"dataset stage II embedded")
        n_ids = len(np.unique(pids[self.person]))  # identities with an image that shows a person
        if self.cfg.identities > n_ids:
            raise UserError(f"identities {self.cfg.identities}: {root} has {n_ids} training identities with an "
                            f"image that shows a person; set identities: 0 to remix all of them, or at most {n_ids}")
        if n_ids < 2:
            raise UserError(f"{root}: one training identity with an image that shows a person; a remix takes its "
                            f"backgrounds from other identities' images, so it needs at least two")
        self.data_base = resolve_layout(root, fmt).base
        return ds.records

    def _load_discriminator(self):
        snap = load_checkpoint(Path(self.s2cfg.stage1_run) / "snapshot.pt")
        state_path = Path(self.s2cfg.stage1_run) / "state.pt"
        if "D" in snap:  # shipped reference checkpoints carry D in the snapshot
            d_state = snap["D"]
        elif state_path.exists():
            d_state = load_checkpoint(state_path)["D"]
        else:
            return None
        cfg = from_dict(Stage1Config, snap["config"])
        if cfg.train.adv_weight <= 0 or cfg.train.l1_only_steps >= int(snap["step"]):
            return None  # stage I never trained its discriminator: its scores would mean nothing
        D = DCGANDiscriminator(tuple(cfg.data.size), cfg.model.disc_channels)
        D.load_state_dict({k: v.float() for k, v in d_state.items()})
        return D.eval()

    # ------------------------------------------------------------------ the plan
    def plan(self) -> tuple[list[IdentityPlan], dict]:
        if self.cfg.fg_mode == "real":
            return self._plan_real()
        cfg = self.cfg
        people = np.flatnonzero(self.person)  # the bank rows a foreground, background or pose may come from
        bank_bg = self.emb["bg"].numpy()
        centroids = kmeans(bank_bg[people], cfg.cameras, seed=cfg.seed)
        bank_cams = nearest(bank_bg, centroids) + 1  # camera of every real background, once
        novelty = CosineIndex(self.emb["fg"].shape[1])
        real_fg = self.emb["fg"].numpy()
        real_pids = self.emb["pid"].numpy()
        # one mean embedding per real training identity: a virtual identity must not copy any of them
        novelty.add(np.stack([real_fg[(real_pids == p) & self.person].mean(0) for p in np.unique(real_pids[people])]))
        fg_std = real_fg[people].std(0)
        plans, rejected = [], 0
        for i in range(cfg.identities):
            for attempt in range(cfg.max_attempts):
                seed = int(np.random.default_rng([cfg.seed, i, attempt]).integers(1 << 31))
                if cfg.fg_mode == "sample":
                    fg = self.sampler.sample("fg", 1, seed)[0].cpu().numpy()
                    source = f"phi_fg:{seed}"
                else:
                    rng = np.random.default_rng(seed)
                    j = int(people[int(rng.integers(len(people)))])
                    fg = (real_fg[j] + rng.normal(0, cfg.remix_noise, real_fg.shape[1]) * fg_std).astype(np.float32)
                    source = f"remix:{j}"
                if novelty.nearest_distance(fg[None])[0] >= cfg.novelty_tau:
                    break
                rejected += 1
            else:
                raise UserError(f"identity {i}: no novel foreground in {cfg.max_attempts} attempts at novelty_tau "
                                f"{cfg.novelty_tau}; lower novelty_tau or train stage II longer")
            novelty.add(fg[None])
            plans.append(IdentityPlan(i, fg, source, attempt + 1))
        for p in plans:
            rng = np.random.default_rng([cfg.seed, p.index, 1_000_003])
            for _ in range(self.candidates):
                if rng.random() < cfg.bg_sample_share:
                    bg_src, bg_key = "phi_bg", int(rng.integers(1 << 31))
                    bg = self.sampler.sample("bg", 1, bg_key)[0].cpu().numpy()
                else:
                    bg_src, bg_key = "bank", int(people[int(rng.integers(len(people)))])
                    bg = bank_bg[bg_key]
                if rng.random() < cfg.pose_sample_share:
                    pose_src, pose_key = "phi_pose", self._person_pose_key(int(rng.integers(1 << 31)))
                else:
                    pose_src, pose_key = "bank", int(people[int(rng.integers(len(people)))])
                p.images.append(ImagePlan(bg_src, bg_key, pose_src, pose_key, 0, bg))
            cams = nearest(np.stack([im.bg for im in p.images]), centroids) + 1
            if len(set(cams.tolist())) < 2 and cfg.cameras > 1:  # every identity spans at least two cameras
                other = np.flatnonzero((bank_cams != cams[0]) & self.person)
                if len(other):  # else every real background that shows a person lies in one camera
                    k = int(other[int(rng.integers(len(other)))])
                    p.images[-1].bg_source, p.images[-1].bg_key, p.images[-1].bg = "bank", k, bank_bg[k]
                    cams[-1] = bank_cams[k]
            for im, c in zip(p.images, cams, strict=True):
                im.camera = int(c)
        n_test = int(round(cfg.identities * cfg.test_share))
        for p in plans[cfg.identities - n_test:]:
            p.split = "test"
        stats = {"novelty_rejected": rejected, "novelty_attempts": rejected + len(plans),
                 "novelty_rejection_rate": rejected / (rejected + len(plans)), **self._no_person_stats()}
        return plans, stats

    def _plan_real(self) -> tuple[list[IdentityPlan], dict]:
        """Real mode: one plan per real training identity; every random choice keyed by (seed, pid)."""
        cfg = self.cfg
        bank_bg, real_fg = self.emb["bg"].numpy(), self.emb["fg"].numpy()
        pids, person = self.emb["pid"].numpy(), self.person
        people = np.flatnonzero(person)
        cams = np.array([r.camid for r in self.records])
        names = [os.path.relpath(r.path, self.data_base) for r in self.records]
        cam_ids = np.unique(cams)
        # a sampled background is labelled with the real camera whose mean background embedding is nearest
        cam_centroids = np.stack([bank_bg[cams == c].mean(0) for c in cam_ids])
        ids = np.unique(pids[person])  # the identities with an image that shows a person
        ids = ids[:cfg.identities] if cfg.identities else ids
        plans, unseen_total, phi_bg_missed = [], 0, 0
        for index, pid in enumerate(ids.tolist()):
            own = np.flatnonzero((pids == pid) & person)  # its images a foreground may come from
            seen = np.unique(cams[pids == pid])
            unseen_cams = np.setdiff1d(cam_ids, seen)
            rng = np.random.default_rng([cfg.seed, pid, 1_000_033])
            order = rng.permutation(own)  # each output takes the next of the identity's images, in turn
            mean_fg = real_fg[own].mean(0).astype(np.float32)
            mean_source = ";".join(names[j] for j in own)  # real_fg mean: every image of the identity with a person
            p = IdentityPlan(index, mean_fg, f"real_{cfg.real_fg}:{pid}", 1, pid=pid, seq=0)
            for k in range(self.candidates):
                src = int(order[k % len(own)])
                # cameras the identity was never seen in; where it was seen in all, any but the source image's
                allowed = unseen_cams if len(unseen_cams) else cam_ids[cam_ids != cams[src]]
                pool = np.flatnonzero(np.isin(cams, allowed) & (pids != pid) & person)
                if len(pool) == 0:  # a single camera: any other identity's image
                    pool = np.flatnonzero((pids != pid) & person)
                bg_src = "bank"
                if rng.random() < cfg.bg_sample_share:
                    for _ in range(cfg.max_attempts):
                        seed = int(rng.integers(1 << 31))
                        bg = self.sampler.sample("bg", 1, seed)[0].cpu().numpy()
                        cam = int(cam_ids[nearest(bg[None], cam_centroids)[0]])
                        if cam in allowed:
                            bg_src, bg_key = "phi_bg", seed
                            break
                    else:
                        phi_bg_missed += 1
                if bg_src == "bank":  # a real background (also where no sample landed in an allowed camera)
                    bg_key = int(pool[int(rng.integers(len(pool)))])
                    bg, cam = bank_bg[bg_key], int(cams[bg_key])
                if rng.random() < cfg.pose_sample_share:
                    pose_src, pose_key = "phi_pose", self._person_pose_key(int(rng.integers(1 << 31)))
                else:  # a real pose of another image
                    poses = people[people != src]
                    pose_src, pose_key = "bank", int(poses[int(rng.integers(len(poses)))])
                p.images.append(ImagePlan(
                    bg_src, bg_key, pose_src, pose_key, cam, bg,
                    fg=real_fg[src] if cfg.real_fg == "image" else mean_fg,
                    source=names[src] if cfg.real_fg == "image" else mean_source,
                    bg_unseen=cam not in seen))
                unseen_total += cam not in seen
            plans.append(p)
        n = sum(len(p.images) for p in plans)
        stats = {"novelty_rejected": 0, "novelty_attempts": 0, "novelty_rejection_rate": 0.0,
                 "bg_unseen_camera_share": unseen_total / max(n, 1), "phi_bg_missed": phi_bg_missed,
                 **self._no_person_stats()}
        return plans, stats

    def _person_pose_key(self, key: int) -> int:
        """A Phi_pose sample key whose decoded pose shows a person: ``key``, else the first of the keys derived
        from it that does (derived, so that the plan's other draws stay as they are); counted in
        ``pose_redrawn``."""
        for k in range(POSE_TRIES):
            cand = key if k == 0 else int(np.random.default_rng([key, k]).integers(1 << 31))
            kp = self.model.keypoints_from_pose(self.sampler.sample("pose", 1, cand))[0].cpu().numpy()
            if shows_person(kp):
                self.pose_redrawn += k
                return cand
        raise UserError(f"{self.cfg.stage2_run}: Phi_pose drew no pose that shows a person ({NO_PERSON}) in "
                        f"{POSE_TRIES} tries; train stage II longer or set pose_sample_share: 0")

    def _no_person_stats(self) -> dict:
        """The real training images never used (their pose shows no person) and, in real mode, the identities
        left with none that shows one, which are not built."""
        pids = self.emb["pid"].numpy()
        lost = len(np.unique(pids)) - len(np.unique(pids[self.person])) if self.cfg.fg_mode == "real" else 0
        return {"real_images": len(self.person), "no_person_images": int((~self.person).sum()),
                "no_person_identities": lost, "pose_redrawn": self.pose_redrawn}

    # ------------------------------------------------------------------ rendering
    @torch.no_grad()
    def render_identity(self, p: IdentityPlan) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """(images HxWx3 uint8, discriminator scores, keypoints (K, 18, 3)) of an identity's candidates."""
        kps = []
        for im in p.images:
            if im.pose_source == "phi_pose":
                kps.append(self.model.keypoints_from_pose(self.sampler.sample("pose", 1, im.pose_key))[0].cpu())
            else:
                kps.append(self.emb["keypoints"][im.pose_key])
        k = len(p.images)
        fg = torch.from_numpy(np.stack([p.fg if im.fg is None else im.fg for im in p.images]))
        kp = torch.stack(kps).float()
        out = self.model.decode(fg, torch.from_numpy(np.stack([im.bg for im in p.images])), kp)
        scores = torch.sigmoid(self.D(out)).cpu().numpy() if self.D is not None else np.zeros(k, np.float32)
        imgs = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return list(imgs), scores, kp.numpy()

    def select(self, p: IdentityPlan, scores: np.ndarray) -> list[int]:
        """Indices of the kept candidates: the best scores, still spanning at least two cameras."""
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        keep = order[:self.cfg.images_per_id]
        cams = {p.images[i].camera for i in keep}
        if len(cams) < 2:
            extra = next((i for i in order[len(keep):] if p.images[i].camera not in cams), None)
            if extra is not None:
                keep[-1] = extra
        return sorted(keep)


def _test_splits(cams: list[int]) -> list[str]:
    """query / gallery for a test identity's images: one query per camera that has two or more images (one
    query in all if none has), so every query keeps a gallery match from another camera."""
    counts = {c: cams.count(c) for c in set(cams)}
    splits, used = [], set()
    multi = any(n >= 2 for n in counts.values())
    for c in cams:
        if c not in used and (counts[c] >= 2 or (not multi and not used)):
            splits.append("query")
            used.add(c)
        else:
            splits.append("gallery")
    return splits


def _rows_for_identity(p: IdentityPlan, keep: list[int], scores, kps) -> list[dict]:
    splits = _test_splits([p.images[j].camera for j in keep]) if p.split == "test" else ["train"] * len(keep)
    rows = []
    for j, split in zip(keep, splits, strict=True):
        im = p.images[j]
        name = format_name(p.pid, im.camera, p.seq, j + 1, 1)
        row = {"path": f"{SPLIT_DIRS[split]}/{name}", "split": split, "pid": p.pid, "camid": im.camera,
               "origin": "remix" if im.source else "virtual", "identity": p.index, "fg_source": p.fg_source,
               "novelty_attempts": p.attempts, "bg_source": im.bg_source, "bg_key": im.bg_key,
               "pose_source": im.pose_source, "pose_key": im.pose_key,
               "candidate": j, "d_score": float(scores[j]), "keypoints": rcv_to_yx(kps[j]).tolist()}
        if im.source:  # real mode: which real image(s) the foreground came from, and whether the camera is new
            row.update(source=im.source, bg_unseen_camera=im.bg_unseen)
        rows.append(row)
    return rows


def is_complete(cfg: BuildConfig) -> bool:
    """Whether ``cfg.out`` holds a finished build of ``cfg`` (its config hash, and README.txt, which ``finalize``
    writes last); checked without loading any model, so a copied build verifies where its stage-II run is absent."""
    marker = Path(cfg.out) / "build.json"
    return (marker.is_file() and (Path(cfg.out) / "README.txt").is_file()
            and json.loads(marker.read_text()).get("config_hash") == config_hash(cfg))


def build(cfg: BuildConfig, shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict:
    """Build (this shard of) the Virtual Market; returns a summary. Resumes a killed build of the same config."""
    out = Path(cfg.out)
    h = config_hash(cfg)
    marker = out / "build.json"
    check_output_folder(out, "out")
    if out.exists() and any(out.iterdir()):
        if not marker.exists() or json.loads(marker.read_text()).get("config_hash") != h:
            raise UserError(f"{out}: not empty and not a build of this config; choose another out or delete it")
    t0 = time.perf_counter()
    builder = Builder(cfg)  # a missing stage-II run or an impossible novelty filter is refused before out exists
    plans, stats = builder.plan()
    skips = {k: stats[k] for k in NO_PERSON_KEYS}
    if marker.exists() and NO_PERSON_KEYS[0] not in json.loads(marker.read_text()) and skips[NO_PERSON_KEYS[0]]:
        raise UserError(f"{out}: begun without the person check, while {skips[NO_PERSON_KEYS[0]]} real training "
                        f"images show no person ({NO_PERSON}) and may be its foregrounds, poses or backgrounds; "
                        f"delete {out} and build again")
    out.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write_text(marker, json.dumps({"config_hash": h, "config": to_dict(cfg), **skips}, indent=1))
    i, n = shard
    mine = [p for p in plans if p.index % n == i]
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    progress_file = parts / f"shard-{i}-of-{n}.jsonl"
    done = {}
    if progress_file.exists():
        good = []
        for line in progress_file.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that identity is redone
            done[rec["identity"]] = rec
            good.append(line)
        atomic_write_text(progress_file, "".join(line + "\n" for line in good))  # drop the cut line before appending
    writer = MarketWriter(out, cfg.jpeg_quality)
    todo = [p for p in mine if p.index not in done]
    n_img, t_render = 0, time.perf_counter()
    for p in progress_bar(todo, desc=f"build shard {i}/{n}", unit="id", enabled=progress, mininterval=0.5):
        imgs, scores, kps = builder.render_identity(p)
        keep = builder.select(p, scores)
        rows = _rows_for_identity(p, keep, scores, kps)
        for r in rows:
            j = r["candidate"]
            writer.write(r["split"], r["path"].split("/")[-1], imgs[j])
        n_img += len(rows)
        with open(progress_file, "a") as f:  # identity done: its images are all in place
            f.write(json.dumps({"identity": p.index, "rows": rows}) + "\n")
            f.flush()
            os.fsync(f.fileno())
    render_s = time.perf_counter() - t_render
    summary = {"shard": f"{i}/{n}", "identities": len(mine), "rendered_now": len(todo), "images_now": n_img,
               "seconds": time.perf_counter() - t0, "images_per_s": n_img / max(render_s, 1e-9), **stats}
    recs = _read_parts(out)
    if all(p.index in recs for p in plans):  # the last shard to finish writes the dataset-level files
        summary.update(finalize(out, cfg, plans, stats, builder, recs))
    return summary


def skipped_line(summary: dict) -> str:
    """The line ``vmarket build`` prints about the real images it never used ("" when there are none)."""
    n, lost = summary.get("no_person_images", 0), summary.get("no_person_identities", 0)
    return (f"skipped {n} of {summary['real_images']} real training images with no visible person ({NO_PERSON}): "
            "never a foreground, pose or background" + (f"; identities with none that shows a person, not built: "
                                                       f"{lost}" if lost else "") if n else "")


def _read_parts(out: Path) -> dict[int, dict]:
    recs = {}
    for f in sorted((out / "parts").glob("shard-*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            recs[rec["identity"]] = rec
    return recs


def finalize(out: Path, cfg: BuildConfig, plans, stats, builder: Builder, recs: dict[int, dict]) -> dict:
    """Manifest (CSV + parquet), keypoint CSVs, optional ImageFolder export and README.txt, from the progress files."""
    rows = [r for p in plans for r in recs[p.index]["rows"]]
    kp = {"train": {}, "test": {}}
    for r in rows:
        kp["train" if r["split"] == "train" else "test"][r["path"].split("/")[-1]] = np.asarray(r["keypoints"])
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "keypoints"} for r in rows])
    write_manifest(df, out / "manifest.csv")
    write_keypoints_csv(out / "market-annotation-train.csv", kp["train"])
    if kp["test"]:
        write_keypoints_csv(out / "market-annotation-test.csv", kp["test"])
    if cfg.export_imagefolder:
        export_imagefolder(out, df)
    if cfg.export_msmt17:
        export_msmt17(out, df)
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
           f"real training identities, real pids, names PPPP_cCs0_... (column source: the real image)"]
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
        "files: bounding_box_train/ query/ bounding_box_test/ (Market-1501 names PPPP_cCs1_FFFFFF_01.jpg),",
        "manifest.csv / manifest.parquet (one row per image: pid, camid, fg / bg / pose sources and seeds, d_score),",
        "market-annotation-*.csv (the poses used, name:keypoints_y:keypoints_x).",
    ]
    if cfg.fg_mode != "real" and (cfg.identities > TORCHREID_MARKET_PIDS or cfg.cameras > 6):
        lines.append(f"torchreid's built-in market1501 asserts pid <= {TORCHREID_MARKET_PIDS} and camera <= 6, so it "
                     f"cannot load this folder: use {LOADER} (below)"
                     + (" or imagefolder/." if cfg.export_imagefolder else "."))
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


def msmt17_records(df) -> dict[str, list[tuple[str, int, int]]]:
    """``{"train" | "query" | "gallery": [(relative path in MSMT17_V1/, label, camera 1-based)]}`` for the rows of a
    build manifest: labels 0..N-1 over the sorted pids of train, and separately of query + gallery (as MSMT17's
    lists number them); file names carry the camera in field 2, which is where torchreid reads it."""
    out = {}
    for splits, folder in ((("train",), "train"), (("query", "gallery"), "test")):
        part = df[df.split.isin(splits)]
        labels = {pid: i for i, pid in enumerate(sorted(part.pid.unique()))}
        count: dict[int, int] = {}
        for r in part.itertuples():
            k = count[r.pid] = count.get(r.pid, -1) + 1
            name = f"{r.pid:04d}_{k:03d}_{r.camid:02d}_vm_{k:04d}_0.jpg"
            out.setdefault(r.split, []).append((f"{folder}/{r.pid:04d}/{name}", labels[r.pid], int(r.camid)))
    return out


def export_msmt17(out: Path, df) -> None:
    """msmt17/MSMT17_V1/{train,test}/<pid>/<name>.jpg hard links (copies where links are not possible) and
    list_{train,val,query,gallery}.txt (val empty), written in a temp folder and renamed into place."""
    final = out / "msmt17"
    tmp = out / ".msmt17.partial"
    if final.exists():
        return
    shutil.rmtree(tmp, ignore_errors=True)
    recs = msmt17_records(df)
    sources = dict(zip(df.index, df.path, strict=True))
    lists = {"train": [], "val": [], "query": [], "gallery": []}
    rows = {s: df.index[df.split == s] for s in ("train", "query", "gallery")}
    for split, items in recs.items():
        for idx, (rel, label, _) in zip(rows[split], items, strict=True):
            dst = tmp / "MSMT17_V1" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(out / sources[idx], dst)
            except OSError:
                shutil.copy2(out / sources[idx], dst)
            lists[split].append(f"{rel.split('/', 1)[1]} {label}")
    for name, lines in lists.items():
        (tmp / "MSMT17_V1" / f"list_{name}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    (tmp / "MSMT17_V1" / "test").mkdir(parents=True, exist_ok=True)
    (tmp / "MSMT17_V1" / "train").mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def export_imagefolder(out: Path, df) -> None:
    """imagefolder/<pid>/<name>.jpg hard links (copies where links are not possible)."""
    for r in df.itertuples():
        dst = out / "imagefolder" / f"{r.pid:04d}" / Path(r.path).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            continue
        try:
            os.link(out / r.path, dst)
        except OSError:
            shutil.copy2(out / r.path, dst)
