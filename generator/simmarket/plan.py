"""The plan of a SimMarket dataset: every image as an :class:`ImageSpec` (split, Market-1501 name fields, identity,
pose, background, noise), following the Market-1501 protocol of tracklets, splits, distractors and junk.
``generator.simmarket.simulate`` renders and writes the plan."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from generator.data.market import format_name
from generator.simmarket.body import VIEWS, Pose, sample_pose
from generator.simmarket.identity import Identity, keyed_rng
from generator.simmarket.world import NUM_CAMERAS, Background, World


@dataclass
class ImageSpec:
    split: str
    pid: int
    camid: int
    seq: int
    frame: int
    box: int
    identity: int  # index into identities, -1 for a distractor without a person
    pose: Pose | None
    background: Background
    noise_key: int
    truncated: bool = False

    @property
    def name(self) -> str:
        return format_name(self.pid, self.camid, self.seq, self.frame, self.box)


def plan_dataset(world: World, identities: list[Identity], seed: int, train_share: float = 0.5,
                 distractor_share: float = 0.05, junk_share: float = 0.03, train_cameras: int = 0) -> list[ImageSpec]:
    """Every image of the dataset as an ImageSpec, following the Market-1501 protocol.

    Identities are split into train and test; every identity is seen by 2-6 cameras in
    tracklets of 2-5 frames. For test identities, one image per camera goes to the
    query and the rest to the gallery, so each query has a cross-camera match.
    The gallery also gets distractors (pid 0000) and junk (pid -1).

    ``train_cameras`` k > 0: every training identity is seen by exactly k cameras (a camera-limited
    regime, where a re-ID model sees few viewpoints per person); test identities keep 2-6. With k = 0 the
    plan is the same as without the option.
    """
    n = len(identities)
    rng = keyed_rng(seed, 4)
    order = rng.permutation(n)
    n_train = max(1, int(round(n * train_share)))
    train_idx = set(order[:n_train].tolist())
    frame_counter = {c: int(rng.integers(0, 1000)) for c in range(1, NUM_CAMERAS + 1)}
    specs: list[ImageSpec] = []
    for i in range(n):
        # pids 1..n, interleaved between the splits as in Market
        specs.extend(plan_identity(world, identities, seed, i, i + 1, i in train_idx, train_cameras, frame_counter))
    n_gallery = sum(s.split == "gallery" for s in specs)
    test_ids = [i for i in range(n) if i not in train_idx]
    for kind, share in (("distractor", distractor_share), ("junk", junk_share)):
        for t in range(int(round(n_gallery * share))):
            specs.append(plan_false_detection(world, identities, seed, kind, t, test_ids, frame_counter))
    number_boxes(specs)
    return specs


def plan_identity(world: World, identities: list[Identity], seed: int, i: int, pid: int, train: bool,
                  train_cameras: int, frame_counter: dict[int, int]) -> list[ImageSpec]:
    """The images of identity ``i`` (pid ``pid``): a tracklet in each of its cameras (``train_cameras`` of them
    for a training identity when > 0), all in the train split (``train``) or, per camera, one in the query and the
    rest in the gallery. ``frame_counter`` (each camera's last frame number) advances past them."""
    h, w = world.height, world.width
    irng = keyed_rng(seed, 5, i)
    k = int(irng.choice([2, 3, 4, 5, 6], p=[0.3, 0.3, 0.2, 0.12, 0.08]))
    cams = sorted(irng.choice(NUM_CAMERAS, size=k, replace=False) + 1)
    if train_cameras and train:
        cams = sorted(keyed_rng(seed, 11, i).choice(NUM_CAMERAS, size=train_cameras, replace=False) + 1)
    images = []
    for cam in cams:
        length = int(irng.integers(2, 6))
        view = str(irng.choice(VIEWS, p=[0.3, 0.3, 0.2, 0.2]))
        phase = float(irng.uniform(0, 2 * math.pi))
        bg = world.sample_background(irng, int(cam))
        seq = int(irng.integers(1, 7))
        for t in range(length):
            frame_counter[cam] += int(irng.integers(5, 40))
            prng = keyed_rng(seed, 6, i, int(cam), t)
            pose = sample_pose(prng, h, w, identities[i].height, view=view, phase=phase + 0.9 * t)
            tbg = Background(bg.camera, bg.variant, int(np.clip(bg.offset + irng.integers(-3, 4), 0, world.margin)))
            images.append(ImageSpec("", pid, int(cam), seq, frame_counter[cam], 1, i, pose, tbg,
                                    int(irng.integers(1 << 30))))
    if train:
        for im in images:
            im.split = "train"
    else:
        for cam in cams:
            mine = [im for im in images if im.camid == cam]
            q = int(irng.integers(len(mine)))
            for j, im in enumerate(mine):
                im.split = "query" if j == q else "gallery"
    return images


def plan_false_detection(world: World, identities: list[Identity], seed: int, kind: str, t: int,
                         test_ids: list[int], frame_counter: dict[int, int]) -> ImageSpec:
    """The ``t``-th gallery image of ``kind``: a distractor (pid 0: background, at most a sliver of someone at the
    edge) or junk (pid -1: a badly cropped detection showing a small part of a person), drawn among the test
    identities ``test_ids``. ``frame_counter`` advances past it."""
    h, w = world.height, world.width
    drng = keyed_rng(seed, 9 if kind == "distractor" else 10, t)
    cam = int(drng.integers(1, NUM_CAMERAS + 1))
    frame_counter[cam] += int(drng.integers(5, 40))
    bg = world.sample_background(drng, cam)
    ident = int(drng.choice(test_ids)) if test_ids else 0
    pose = sample_pose(drng, h, w, identities[ident].height, occlusion_p=0.0, truncation_p=0.0)
    if kind == "distractor":
        if drng.random() < 0.5:
            pose = None
        else:
            pose.joints[:, 1] += drng.choice([-1, 1]) * w * 0.75
    else:
        pose.joints[:, 0] += drng.choice([-1, 1]) * h * drng.uniform(0.45, 0.6)
    if pose is not None:
        inside = ((pose.joints[:, 0] >= 0) & (pose.joints[:, 0] <= h - 1) & (pose.joints[:, 1] >= 0)
                  & (pose.joints[:, 1] <= w - 1))
        pose.visible &= inside
    pid = 0 if kind == "distractor" else -1
    return ImageSpec("gallery", pid, cam, int(drng.integers(1, 7)), frame_counter[cam], 1,
                     ident if pose is not None else -1, pose, bg, int(drng.integers(1 << 30)), True)


def number_boxes(specs: list[ImageSpec]) -> None:
    """Number the boxes within each (camera, seq, frame): a frame may hold several detections."""
    seen: dict[tuple, int] = {}
    for sp in specs:
        key = (sp.camid, sp.seq, sp.frame)
        seen[key] = seen.get(key, 0) + 1
        sp.box = seen[key]
