"""What a Virtual Market build is asked for (``BuildConfig``, checked when it loads), and the plan it makes of
every identity and image before rendering."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from generator.config import ConfigValueError, check_ranges, digest, to_dict
from generator.errors import UserError
from generator.training.runtime import launch_rank

MAX_CAMERAS = 9  # Market-1501 names: one camera digit, c1..c9


MAX_PIDS = 9999  # Market-1501 names: four pid digits


TORCHREID_MARKET_PIDS = 1501  # torchreid's built-in market1501 asserts 0 <= pid <= 1501 (and camera <= 6)


@dataclass
class BuildConfig:
    stage2_run: str = ""  # stage-II run directory (its config names the stage-I and pose-AE runs)
    out: str = "outputs/virtual_market"  # dataset folder (Market-1501 layout; fg_mode: real of MSMT17 data: MSMT17's)
    identities: int = 500  # identities to build (real mode: the first N real training identities by pid; 0: all)
    images_per_id: int = 24  # images kept per identity
    seed: int = 0  # build seed; identity i uses seeds derived from (seed, i)
    # sample (Phi_fg) | remix (encode a real image and perturb it: a new identity) | real (the real training
    # identities' own foregrounds, real pids, backgrounds from cameras each identity was not seen in)
    fg_mode: Literal["sample", "remix", "real"] = "sample"
    real_fg: Literal["image", "mean"] = "image"  # real mode: fg of one real image per output (in turn), or their mean
    # real mode: the pose of any other real image, or only of other identities' images (others: every remix shows its
    # identity in a pose it was never seen in)
    pose_from: Literal["any", "others"] = "any"
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
    export_imagefolder: bool = False  # also write imagefolder/<split>/<pid>/ (hard links); augment.makers.export
    # also write msmt17/MSMT17_V1/ (MSMT17's list layout, hard links): torchreid's msmt17 loads it, any pid count
    export_msmt17: bool = False
    # where the images are decoded and scored: cpu, cuda, cuda:N or auto (CUDA when present). The plan (identities,
    # backgrounds, poses, cameras, keypoints) is made on the CPU whatever the device, so a build's labels and
    # sources do not depend on it; a GPU's pixels differ from the CPU's in the last bits
    device: str = "cpu"

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
        if self.pose_from != "any" and self.fg_mode != "real":
            raise ConfigValueError("pose_from", f"{self.pose_from!r} is for fg_mode: real (remixes of real "
                                                f"identities); set pose_from: any")
        if self.identities > MAX_PIDS:
            raise ConfigValueError("identities", f"{self.identities} is more than {MAX_PIDS} (4-digit Market-1501 "
                                                 f"pids); split it into several builds (another seed and out each)")
        if (self.identities > TORCHREID_MARKET_PIDS and not (self.export_imagefolder or self.export_msmt17)
                and self.fg_mode != "real"):
            raise ConfigValueError(
                "identities", f"{self.identities} is more than the {TORCHREID_MARKET_PIDS} a Market-1501 folder holds "
                              f"(torchreid's market1501 asserts pid <= {TORCHREID_MARKET_PIDS}); set "
                              f"export_msmt17: true for MSMT17's list layout, which torchreid loads, or "
                              f"export_imagefolder: true for imagefolder/train/<pid>/ (up to {MAX_PIDS}), or "
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
        check_ranges(self, non_negative=("remix_noise",))
        if self.fg_mode == "remix" and self.remix_noise == 0:  # the real person's own foreground, under a new pid
            raise ConfigValueError("remix_noise", "0 with fg_mode: remix would write real people as new identities; "
                                                  "give the perturbation a size (0.5 by default)")
        if not 0 <= self.novelty_tau <= 2:
            raise ConfigValueError("novelty_tau", f"{self.novelty_tau} is outside [0, 2], the range of a cosine "
                                                  f"distance; 0 turns the novelty filter off")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigValueError("jpeg_quality", f"{self.jpeg_quality} is outside 1..100")


# keys added to BuildConfig after builds were made: left out of the hash at these defaults, so such builds stay valid
LATER_KEYS = {"pose_from": "any", "device": "cpu"}


def config_hash(cfg: BuildConfig) -> str:
    return digest(_hashed(to_dict(cfg)))


def _hashed(config: dict) -> dict:
    return {k: v for k, v in config.items() if LATER_KEYS.get(k, object()) != v}


PATH_KEYS = ("out", "stage2_run", "data_root")  # a BuildConfig's folders ("" for data_root: none)


def same_build(marker: dict, cfg: BuildConfig) -> bool:
    """Whether a ``build.json`` (``marker``) records a build of ``cfg``: the same hash, or the same settings with
    its folders spelt otherwise (relative against absolute, ``./x`` against ``x``), as resolved from here."""
    if marker.get("config_hash") == config_hash(cfg):
        return True
    stored = marker.get("config")

    def resolved(config: dict) -> dict:
        return _hashed({**config, **{k: str(Path(config[k]).resolve()) for k in PATH_KEYS if config.get(k)}})

    return isinstance(stored, dict) and resolved(stored) == resolved(to_dict(cfg))


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return launch_rank()
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
    pid: int | None = None  # the pid written (None: index + 1)
    seq: int = 1  # the sequence digit of the names (real mode: 0, never a real image's)

    def __post_init__(self):
        if self.pid is None:
            self.pid = self.index + 1
