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
Market-1501 and SimMarket names (s1..s6) never do. MSMT17 data, whose pids start at 0 and cameras run to 15, gets
MSMT17's own layout instead, as ``vmarket cutpaste`` writes it: ``MSMT17_V1/train/PPPP/PPPP_FFFFFF_CC_remix_0000_0.jpg``
(the candidate's number as the frame, the camera from 01), ``MSMT17_V1/list_train.txt`` with the real pids and the
keypoint CSV beside it, keyed by list entry.

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

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from augment.makers.build_config import (
    MAX_CAMERAS,
    MAX_PIDS,
    BuildConfig,
    IdentityPlan,
    ImagePlan,
    config_hash,
    same_build,
)
from augment.makers.build_output import finalize, image_entry, manifest_rows, read_parts
from generator.api import DisentangledModel, snapshot_path
from generator.config import from_dict, to_dict
from generator.data.dataset import person_dataset
from generator.data.layouts import MSMT17_MAX_CAMERA, Msmt17Writer, msmt17_out_path, resolve_layout
from generator.data.market import MarketWriter, Record
from generator.errors import UserError
from generator.eval.neighbours import CosineIndex, kmeans, nearest
from generator.io import (
    atomic_write_text,
    check_output_folder,
    load_checkpoint,
    progress_bar,
    read_json_object,
)
from generator.models.stage1 import DCGANDiscriminator
from generator.pose import NO_PERSON, shows_person
from generator.training.runtime import rank_device
from generator.training.stage1 import Stage1Config
from generator.training.stage2 import load_embeddings, load_stage2

POSE_TRIES = 20  # Phi_pose samples drawn for one image before the build is refused (each shows no person)
NO_PERSON_KEYS = ("no_person_images", "no_person_identities", "real_images")  # the skip counts build.json keeps


class Builder:
    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg  # ranges and choices were checked when the config loaded (BuildConfig.__post_init__)
        if not cfg.stage2_run:
            raise UserError("stage2_run: not set; name a trained stage-II run directory in the build config (or "
                            "--set stage2_run=RUN)")
        run = Path(cfg.stage2_run)
        if not (run / "snapshot.pt").is_file():
            raise UserError(f"{run}: no stage-II snapshot.pt; set stage2_run to a trained stage-II run directory")
        self.s2cfg, self.sampler, self.model = load_stage2(run)
        emb = load_embeddings(self.s2cfg, run, progress=False)  # the real banks: fg, bg, keypoints, pid
        # the labelled people's rows: unlabelled people (pid -1, stage II's unlabelled_roots) trained the mappings,
        # but are no image of the data the builder names and remixes
        self.emb = {k: v[emb["pid"] >= 0] for k, v in emb.items() if torch.is_tensor(v)}
        self.size = self.model.size
        self.device = rank_device(cfg.device)  # under torchrun, each rank's own GPU
        # the decoder that renders: the plan's model itself on the CPU, else a copy of its generator on the device
        self.renderer = self.model if self.device.type == "cpu" else DisentangledModel(
            copy.deepcopy(self.model.G), self.size, self.model.heatmap_radius, self.model.mask_radius,
            device=self.device)
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
        self.msmt17 = False  # the build is written in MSMT17's layout (real mode on MSMT17 data)
        self.records = self._real_records() if cfg.fg_mode == "real" else None
        self.bank_names = self._bank_names()

    @property
    def data_root(self) -> str:
        """The real data the build reads: the config's, else stage II's, else stage I's."""
        return self.cfg.data_root or self.s2cfg.data_root or self.model.data.root

    @property
    def data_format(self) -> str:
        """The layout of ``data_root``: stage I's data format for stage I's own data, else detected (another root, in
        its own layout, as the embeddings read it)."""
        return self.model.data.format if self.data_root == self.model.data.root else "auto"

    def _real_records(self) -> list[Record]:
        """The training records of the real data, in the order of the embedding banks (as real_embeddings read
        them), so that bank row i is the image records[i]: its name, pid and camera."""
        root = self.data_root
        fmt = self.data_format
        ds = person_dataset(root, ("train",), size=self.size, fmt=fmt,
                            skip_missing_keypoints=self.model.data.skip_missing_keypoints)
        pids = self.emb["pid"].numpy()
        if len(ds.records) != len(pids) or any(r.pid != p for r, p in zip(ds.records, pids, strict=True)):
            raise UserError(f"{root}: its training split ({len(ds.records)} images) is not the data of "
                            f"{self.cfg.stage2_run}/embeddings.pt ({len(pids)} embeddings); set data_root to the "
                            f"dataset stage II embedded")
        # a remix is written under its real pid and a real camera: in MSMT17's layout for MSMT17 data (which numbers
        # people from 0 and cameras to 15), else in Market-1501 names; a person those names cannot hold would be
        # written as someone else
        layout = resolve_layout(root, fmt)
        self.msmt17 = layout.format == "msmt17"
        lowest, cameras = (0, MSMT17_MAX_CAMERA) if self.msmt17 else (1, MAX_CAMERAS)
        bad = next((r for r, shown in zip(ds.records, self.person, strict=True)
                    if shown and not (lowest <= r.pid <= MAX_PIDS and 1 <= r.camid <= cameras)), None)
        if bad is not None:
            names = "MSMT17 names" if self.msmt17 else "Market-1501 names"
            raise UserError(f"{bad.path}: pid {bad.pid}, camera {bad.camid}: fg_mode: real writes each remix under its "
                            f"real pid and camera in {names}, which hold pids {lowest}..{MAX_PIDS} and cameras "
                            f"1..{cameras}; renumber the dataset's people and cameras into those ranges")
        if self.msmt17 and self.cfg.export_msmt17:
            raise UserError(f"export_msmt17: true: {root} is MSMT17 data, so this build is written in MSMT17's layout "
                            f"already ({msmt17_out_path('')}, list_train.txt with the real pids); set "
                            f"export_msmt17: false")
        n_ids = len(np.unique(pids[self.person]))  # identities with an image that shows a person
        if self.cfg.identities > n_ids:
            raise UserError(f"identities {self.cfg.identities}: {root} has {n_ids} training identities with an "
                            f"image that shows a person; set identities: 0 to remix all of them, or at most {n_ids}")
        if n_ids < 2:
            raise UserError(f"{root}: one training identity with an image that shows a person; a remix takes its "
                            f"backgrounds from other identities' images, so it needs at least two")
        self.data_base = layout.base
        return ds.records

    def _bank_names(self) -> list[str] | None:
        """Each bank row's real image, relative to the data's base folder (as ``source`` names it): what the
        manifest's ``fg_image``, ``bg_image`` and ``pose_image`` name. In sample and remix modes, None when the data
        stage II embedded is not found or is not that of the banks (those columns are then left empty)."""
        if self.records is not None:
            return [os.path.relpath(r.path, self.data_base) for r in self.records]
        root = self.data_root
        fmt = self.data_format
        try:
            ds = person_dataset(root, ("train",), size=self.size, fmt=fmt,
                                skip_missing_keypoints=self.model.data.skip_missing_keypoints)
            base = resolve_layout(root, fmt).base
        except UserError:
            return None
        pids = self.emb["pid"].numpy()
        if len(ds.records) != len(pids) or any(r.pid != p for r, p in zip(ds.records, pids, strict=True)):
            return None
        return [os.path.relpath(r.path, base) for r in ds.records]

    def _load_discriminator(self):
        run = Path(self.s2cfg.stage1_run)  # a run directory, or a snapshot file (a shipped reference's stage1.pt)
        snap = load_checkpoint(snapshot_path(run))
        state_path = snapshot_path(run).with_name("state.pt")  # the run's last step: its D if the snapshot's is that
        state = load_checkpoint(state_path) if "D" not in snap and state_path.is_file() else {}
        if "D" in snap:  # shipped reference checkpoints carry D in the snapshot
            d_state = snap["D"]
        elif "D" in state and int(state.get("step", -1)) == int(snap["step"]):
            d_state = state["D"]
        else:
            return None
        cfg = from_dict(Stage1Config, snap["config"])
        if cfg.train.adv_weight <= 0 or cfg.train.l1_only_steps >= int(snap["step"]):
            return None  # stage I never trained its discriminator: its scores would mean nothing
        D = DCGANDiscriminator(tuple(cfg.data.size), cfg.model.disc_channels)
        D.load_state_dict({k: v.float() for k, v in d_state.items()})
        return D.eval().to(self.device)

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
        names = self.bank_names
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
                else:  # a real pose of another image (pose_from others: of another identity)
                    poses = people[people != src] if cfg.pose_from == "any" else people[pids[people] != pid]
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
        out = self.renderer.decode(fg, torch.from_numpy(np.stack([im.bg for im in p.images])), kp)
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


def is_complete(cfg: BuildConfig) -> bool:
    """Whether ``cfg.out`` holds a finished build of ``cfg`` (its config hash, and README.txt, which ``finalize``
    writes last); checked without loading any model, so a copied build verifies where its stage-II run is absent."""
    marker = Path(cfg.out) / "build.json"
    return (marker.is_file() and (Path(cfg.out) / "README.txt").is_file()
            and same_build(read_json_object(marker, f"delete {cfg.out} and build again"), cfg))


def build(cfg: BuildConfig, shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict:
    """Build (this shard of) the Virtual Market; returns a summary. Resumes a killed build of the same config."""
    out = Path(cfg.out)
    h = config_hash(cfg)
    marker = out / "build.json"
    check_output_folder(out, "out", inputs={"stage2_run": cfg.stage2_run, "data_root": cfg.data_root},
                        datasets=["data_root"])
    begun = read_json_object(marker, f"delete {out} and build again") if marker.exists() else None
    if out.exists() and any(out.iterdir()):
        if begun is None or not same_build(begun, cfg):
            raise UserError(f"{out}: not empty and not a build of this config; choose another out or delete it")
    t0 = time.perf_counter()
    builder = Builder(cfg)  # a missing stage-II run or an impossible novelty filter is refused before out exists
    check_output_folder(out, "out", inputs={"data_root": builder.data_root}, datasets=["data_root"])
    plans, stats = builder.plan()
    skips = {k: stats[k] for k in NO_PERSON_KEYS}
    if begun is not None and NO_PERSON_KEYS[0] not in begun and skips[NO_PERSON_KEYS[0]]:
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
    writer = Msmt17Writer(out, cfg.jpeg_quality) if builder.msmt17 else MarketWriter(out, cfg.jpeg_quality)
    todo = [p for p in mine if p.index not in done]
    n_img, t_render = 0, time.perf_counter()
    for p in progress_bar(todo, desc=f"build shard {i}/{n}", unit="id", enabled=progress, mininterval=0.5):
        imgs, scores, kps = builder.render_identity(p)
        keep = builder.select(p, scores)
        rows = manifest_rows(p, keep, scores, kps, builder.bank_names, builder.msmt17)
        for r in rows:
            j = r["candidate"]
            writer.write(r["split"], image_entry(r["path"], builder.msmt17), imgs[j])
        n_img += len(rows)
        with open(progress_file, "a") as f:  # identity done: its images are all in place
            f.write(json.dumps({"identity": p.index, "rows": rows}) + "\n")
            f.flush()
            os.fsync(f.fileno())
    render_s = time.perf_counter() - t_render
    summary = {"shard": f"{i}/{n}", "identities": len(mine), "rendered_now": len(todo), "images_now": n_img,
               "seconds": time.perf_counter() - t0, "images_per_s": n_img / max(render_s, 1e-9), **stats}
    recs = read_parts(out)
    if all(p.index in recs for p in plans):  # the last shard to finish writes the dataset-level files
        summary.update(finalize(out, cfg, plans, stats, builder, recs))
    return summary


