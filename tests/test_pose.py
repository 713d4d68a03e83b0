import numpy as np

from generator.pose import (
    BODY_ROI_JOINTS,
    COCO18,
    FLIP_PERM,
    LIMBS,
    MIN_PERSON_JOINTS,
    body_rois,
    flip_rcv,
    limb_points,
    no_person_reason,
    pose_heatmaps,
    pose_mask,
    shows_person,
)

H, W = 128, 64


def standing_pose():
    yx = {"nose": (15, 32), "neck": (26, 32), "Rsho": (28, 22), "Relb": (46, 19), "Rwri": (62, 18), "Lsho": (28, 42),
          "Lelb": (46, 45), "Lwri": (62, 46), "Rhip": (66, 26), "Rkne": (92, 25), "Rank": (117, 25), "Lhip": (66, 38),
          "Lkne": (92, 39), "Lank": (117, 39), "Reye": (12, 29), "Leye": (12, 35), "Rear": (13, 26), "Lear": (13, 38)}
    rcv = np.zeros((18, 3), np.float32)
    for i, n in enumerate(COCO18):
        rcv[i] = (*yx[n], 1)
    return rcv


def test_limbs_are_the_23_of_the_official_mask():
    assert len(LIMBS) == 23
    assert len({tuple(sorted(limb)) for limb in LIMBS.tolist()}) == 23
    assert sorted(FLIP_PERM.tolist()) == list(range(18))


def test_heatmap_peak_on_joint():
    rcv = standing_pose()
    rcv[4, 2] = 0
    maps = pose_heatmaps(rcv, H, W)
    assert maps.shape == (18, H, W) and maps.dtype == np.float32
    for j in range(18):
        if rcv[j, 2] == 0:
            assert maps[j].sum() == 0
            continue
        r, c = int(rcv[j, 0]), int(rcv[j, 1])
        assert maps[j, r, c] == 1
        ys, xs = np.nonzero(maps[j])
        assert abs(ys.mean() - r) < 1e-6 or r + 4 >= H  # the disk is centred on the joint
        assert ((ys - r) ** 2 + (xs - c) ** 2 <= 16).all()
        assert maps[j].sum() == 49  # a radius-4 disk of integer offsets
    g = pose_heatmaps(rcv, H, W, mode="gaussian")
    for j in np.flatnonzero(rcv[:, 2]):
        assert np.unravel_index(g[j].argmax(), g[j].shape) == (int(rcv[j, 0]), int(rcv[j, 1]))


def test_mask_covers_every_visible_limb():
    rcv = standing_pose()
    rcv[7, 2] = 0  # left wrist missing: the Lelb-Lwri limb is not drawn
    mask = pose_mask(rcv, H, W, radius=7)
    vis = rcv[:, 2] > 0
    for a, b in LIMBS:
        for t in np.linspace(0, 1, 25):
            r, c = rcv[a, :2] + t * (rcv[b, :2] - rcv[a, :2])
            if vis[a] and vis[b]:
                assert mask[int(r), int(c)] == 1, (COCO18[a], COCO18[b], t)
    assert mask[int(rcv[7, 0]) + 6, int(rcv[7, 1])] == 0  # below the missing wrist
    assert mask[2, 2] == 0 and mask[125, 60] == 0
    assert pose_mask(np.zeros((18, 3)), H, W).sum() == 0
    pts = limb_points(rcv, 7)
    assert len(pts) > 2 * 22


def test_rois_follow_index_sets():
    rcv = standing_pose()
    boxes, vis = body_rois(rcv, H, W)
    assert boxes.shape == (7, 4) and vis.tolist() == [1] * 7
    for k, joints in enumerate(BODY_ROI_JOINTS):
        pts = rcv[list(joints), :2]
        want = [max(pts[:, 0].min() - 6, 0), max(pts[:, 1].min() - 6, 0), min(pts[:, 0].max() + 6, H - 1),
                min(pts[:, 1].max() + 6, W - 1)]
        assert np.allclose(boxes[k], want)
    # left arm with only the elbow: a single joint gets +/-10 px; a part with no joint gets visibility 0
    rcv2 = rcv.copy()
    rcv2[[5, 7], 2] = 0
    rcv2[[11, 12, 13], 2] = 0
    boxes, vis = body_rois(rcv2, H, W)
    assert np.allclose(boxes[3], [46 - 10, 45 - 10, 46 + 10, 45 + 10])
    assert vis[5] == 0 and np.allclose(boxes[5], [0, 0, 1, 1])
    assert vis[2] == 1  # lower body still has the right leg


def test_flip_swaps_left_and_right():
    rcv = standing_pose()
    rcv[4, 2] = 0  # right wrist missing
    f = flip_rcv(rcv, W)
    assert np.allclose(f[COCO18.index("Lsho")], [28, W - 1 - 22, 1])  # the right shoulder becomes the left one
    assert np.allclose(f[COCO18.index("Rsho")], [28, W - 1 - 42, 1])
    assert f[COCO18.index("Lwri"), 2] == 0 and f[COCO18.index("Rwri"), 2] == 1
    assert np.allclose(flip_rcv(f, W), rcv)
    # pose maps of the flipped pose are the mirrored, channel-swapped maps
    assert np.array_equal(pose_heatmaps(f, H, W), pose_heatmaps(rcv, H, W)[FLIP_PERM][:, :, ::-1])
    # the mask mirrors up to the official integer truncation of the points along each limb
    a, b = pose_mask(f, H, W), pose_mask(rcv, H, W)[:, ::-1]
    assert (a * b).sum() / np.maximum(a, b).sum() > 0.97


def test_mask_equals_the_definition_near_borders():
    """Disks of radius 7 at every limb point, then a 5x5 closing, checked by brute force."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    for _ in range(30):
        rcv = np.zeros((18, 3))
        rcv[:, 0], rcv[:, 1] = rng.uniform(-10, H + 10, 18), rng.uniform(-10, W + 10, 18)
        rcv[:, 2] = rng.random(18) < 0.8
        ref = np.zeros((H, W), bool)
        for r, c in limb_points(rcv, 7):
            ref |= (yy - r) ** 2 + (xx - c) ** 2 <= 49
        ref = ndimage.minimum_filter(ndimage.maximum_filter(ref, 5, mode="nearest"), 5, mode="nearest")
        assert (pose_mask(rcv, H, W) == ref).all()


def test_a_person_needs_four_visible_joints_joined_by_a_limb_and_a_shoulder_or_hip():
    rcv = standing_pose()
    assert shows_person(rcv) and no_person_reason(rcv) == ""
    batch = np.stack([rcv, np.zeros((18, 3), np.float32)])
    assert shows_person(batch).tolist() == [True, False]
    assert no_person_reason(np.zeros((18, 3))) == "no visible joint"
    fragment = rcv.copy()
    fragment[3:, 2] = 0  # nose, neck, right shoulder: two limbs of mask, a fragment
    assert pose_mask(fragment, H, W).sum() > 0 and not shows_person(fragment)
    assert no_person_reason(fragment) == f"3 visible joints, fewer than {MIN_PERSON_JOINTS}"
    ends = np.zeros_like(rcv)
    ends[[4, 7, 10, 13]] = rcv[[4, 7, 10, 13]]  # wrists and ankles: no two joined by a limb, an empty mask
    assert pose_mask(ends, H, W).sum() == 0 and not shows_person(ends)
    assert no_person_reason(ends) == "4 visible joints, no two joined by a limb"
    torso = np.zeros_like(rcv)
    torso[[2, 5, 8, 11]] = rcv[[2, 5, 8, 11]]  # both shoulders and hips: the fewest that span the torso
    assert shows_person(torso)
    face = np.zeros_like(rcv)
    face[[0, 14, 15, 16, 17]] = rcv[[0, 14, 15, 16, 17]]  # nose, eyes, ears: limbs of the mask, but a face alone
    assert pose_mask(face, H, W).sum() > 0 and not shows_person(face)
    assert no_person_reason(face) == "5 visible joints, no shoulder or hip"
    head_and_neck = np.zeros_like(rcv)
    head_and_neck[[0, 1, 16, 17]] = rcv[[0, 1, 16, 17]]
    assert not shows_person(head_and_neck)
