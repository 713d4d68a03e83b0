import hashlib
import json
from collections import defaultdict

import numpy as np
import pandas as pd
from PIL import Image

from generator.data.dataset import load_image
from generator.data.keypoints import read_keypoints_csv, yx_to_rcv
from generator.data.market import scan_market
from generator.simmarket.simulate import SimMarket, simulate


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    a = simulate(tmp_path / "a", 8, seed=11, progress=False)
    b = simulate(tmp_path / "b", 8, seed=11, progress=False)
    c = simulate(tmp_path / "c", 8, seed=12, progress=False)
    assert a["images"] == b["images"]
    assert c["seed"] == 12 and c["identities"] == a["identities"]  # another seed: a dataset of the same size
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert not list(tmp_path.glob(".*partial*"))


def test_market_protocol(sim_root):
    root, summary = sim_root
    recs = scan_market(root, keep_junk=True)
    train_ids = {r.pid for r in recs if r.split == "train"}
    test_ids = {r.pid for r in recs if r.split == "query"}
    assert summary["train_ids"] == len(train_ids) == 12 and summary["test_ids"] == len(test_ids) == 12
    assert not train_ids & test_ids
    assert {r.camid for r in recs} == set(range(1, 7))
    cams = defaultdict(set)
    for r in recs:
        if r.pid > 0:
            cams[r.pid].add(r.camid)
    assert all(len(c) >= 2 for c in cams.values())  # every identity in at least 2 cameras
    by = defaultdict(list)
    for r in recs:
        by[r.split, r.pid].append(r.camid)
    for pid in test_ids:
        q = by["query", pid]
        assert len(q) == len(set(q))  # at most one query per camera
        for cam in q:  # every query has a match in the gallery from another camera
            assert any(c != cam for c in by["gallery", pid])
    assert any(r.pid == 0 for r in recs) and any(r.pid == -1 for r in recs)
    assert {r.split for r in recs if r.pid <= 0} == {"gallery"}


def test_annotations_and_manifest(sim_root):
    root, summary = sim_root
    m = pd.read_csv(root / "manifest.csv")
    assert len(m) == summary["images"]
    assert set(m.view) >= {"front", "back", "left", "right"}
    assert m.occluded.any() and m.truncated.any()
    kp = {**read_keypoints_csv(root / "market-annotation-train.csv"),
          **read_keypoints_csv(root / "market-annotation-test.csv")}
    assert set(kp) == {p.split("/")[-1] for p in m.path}
    vis = np.array([yx_to_rcv(kp[p.split("/")[-1]])[:, 2].sum() for p in m.path])
    assert (vis == m.visible_joints).all()
    people = m[m.pid > 0]
    assert (vis[m.pid > 0] < 18).mean() > 0.3  # back/side views, occlusion and truncation hide joints
    assert (vis[m.pid > 0] >= 10).mean() > 0.8
    assert people.groupby("pid").identity.nunique().max() == 1
    assert (m.group >= 0).any()  # look-alike groups exist


def test_counterfactual_render(sim_root):
    root, _ = sim_root
    sim = SimMarket(root)
    m = sim.manifest[sim.manifest.pid > 0].reset_index(drop=True)
    a = m.path[0].split("/")[-1]
    b = next(p.split("/")[-1] for p in m.path if m.pid[0] != int(p.split("/")[-1][:4]) and "c" in p)
    # the factual combination reproduces the file on disk, up to JPEG loss
    same = sim.render(a, a, a)
    disk = load_image(str(root / m.path[0]))
    assert np.abs(same.image.astype(int) - disk.astype(int)).mean() < 4
    # pose of B: the person moves to B's joints, the background stays A's
    moved = sim.render(a, b, a)
    assert np.allclose(moved.rcv, sim.pose(b).rcv())
    from scipy import ndimage

    # the camera blur spreads edges
    outside = ~ndimage.binary_dilation((same.labels > 0) | (moved.labels > 0), iterations=3)
    assert np.abs(moved.image.astype(int) - same.image.astype(int))[outside].mean() < 1e-6
    # background of B: the person is unchanged where it is visible in both
    bg = sim.render(a, a, b)
    diff = np.abs(bg.image.astype(int) - same.image.astype(int)).mean(-1)
    assert diff[~same.person_mask].mean() > diff[same.person_mask].mean()
    # the person mask covers the annotated joints
    rcv = same.rcv
    for r, c, v in rcv:
        if v:
            assert same.person_mask[max(int(r) - 2, 0):int(r) + 3, max(int(c) - 2, 0):int(c) + 3].any()


def test_camera_limited_training_identities(tmp_path):
    """--train-cameras k: every training identity is seen by exactly k cameras, the test split is unchanged."""
    full = simulate(tmp_path / "full", 16, seed=4, size=(64, 32), progress=False)
    limited = simulate(tmp_path / "k2", 16, seed=4, size=(64, 32), progress=False, train_cameras=2)
    assert limited["train_cameras"] == 2 and "train_cameras" not in full
    cams = {name: defaultdict(set) for name in ("full", "k2")}
    for name in cams:
        for r in scan_market(tmp_path / name, keep_junk=True):
            cams[name][r.split, r.pid].add(r.camid)
    train = [pid for split, pid in cams["k2"] if split == "train"]
    assert len(train) == 8 and all(len(cams["k2"]["train", pid]) == 2 for pid in train)
    assert any(len(cams["full"]["train", pid]) > 2 for pid in train)  # the limit changed something
    for split in ("query", "gallery"):  # the test split holds the same images (frame numbers in names may shift)
        content = {}
        for name in ("full", "k2"):
            content[name] = sorted((r.pid, r.camid, hashlib.sha256(open(r.path, "rb").read()).hexdigest())
                                   for r in scan_market(tmp_path / name, (split,), keep_junk=True))
        assert content["full"] == content["k2"]


def test_textured_style(tmp_path):
    """--style textured: the same files, identities and keypoints drawn another way, recorded so that counterfactual
    renders reproduce it; an unknown style is refused."""
    import pytest

    from generator.errors import UserError

    flat = simulate(tmp_path / "flat", 8, seed=3, size=(64, 32), progress=False)
    tex = simulate(tmp_path / "tex", 8, seed=3, size=(64, 32), progress=False, style="textured")
    assert tex["style"] == "textured" and "style" not in flat and tex["images"] == flat["images"]
    for name in ("market-annotation-train.csv", "market-annotation-test.csv"):
        assert (tmp_path / "flat" / name).read_text() == (tmp_path / "tex" / name).read_text()
    names = sorted(p.name for p in (tmp_path / "flat" / "bounding_box_train").glob("*.jpg"))
    assert names == sorted(p.name for p in (tmp_path / "tex" / "bounding_box_train").glob("*.jpg"))
    sim_flat, sim_tex = SimMarket(tmp_path / "flat"), SimMarket(tmp_path / "tex")
    a = names[0]
    f, t = sim_flat.render(a, a, a), sim_tex.render(a, a, a)
    assert np.array_equal(f.person_mask, t.person_mask)
    d = np.abs(f.image.astype(int) - t.image.astype(int)).mean(-1)
    assert d[f.person_mask].mean() > 8 and d[f.labels == 0].mean() > 8  # the person and the scene both change
    disk = load_image(str(tmp_path / "tex" / "bounding_box_train" / a))
    assert np.abs(t.image.astype(int) - disk.astype(int)).mean() < 4  # the loader renders the textured style
    with pytest.raises(UserError, match="--style painted: use one of flat, textured"):
        simulate(tmp_path / "bad", 8, seed=3, size=(64, 32), progress=False, style="painted")


def test_people_seed_gives_other_people_in_the_same_cameras(tmp_path):
    """--people-seed: other people (an unlabelled split for a generator) in the scenes of --seed; --train-share sets
    the split; both are recorded, so that counterfactual renders reproduce the dataset."""
    import pytest

    from generator.errors import UserError
    from generator.simmarket.simulate import settings

    base = simulate(tmp_path / "base", 12, seed=3, size=(64, 32), progress=False)
    other = simulate(tmp_path / "other", 12, seed=3, size=(64, 32), progress=False, people_seed=8, train_share=0.75)
    assert other["people_seed"] == 8 and other["train_share"] == 0.75 and "people_seed" not in base
    assert (other["train_ids"], other["test_ids"]) == (9, 3) and (base["train_ids"], base["test_ids"]) == (6, 6)
    assert settings(base)["people_seed"] == 3 and settings(base)["train_share"] == 0.5
    people = {name: json.loads((tmp_path / name / "identities.json").read_text()) for name in ("base", "other")}
    assert not any(a == b for a in people["base"] for b in people["other"])  # no person in common
    sim_base, sim_other = SimMarket(tmp_path / "base"), SimMarket(tmp_path / "other")
    assert all(np.array_equal(sim_base.world.templates[k], sim_other.world.templates[k])
               for k in sim_base.world.templates)  # the same scenes and cameras
    a = sorted(p.name for p in (tmp_path / "other" / "bounding_box_train").glob("*.jpg"))[0]
    r = sim_other.render(a, a, a)
    on_disk = np.asarray(Image.open(tmp_path / "other" / "bounding_box_train" / a), dtype=np.float32)
    err = np.abs(r.image.astype(np.float32) - on_disk).mean()
    b = next(n for n in sorted(p.name for p in (tmp_path / "other" / "bounding_box_train").glob("*.jpg"))
             if n[:4] != a[:4])
    wrong = np.abs(sim_other.render(b, a, a).image.astype(np.float32) - on_disk).mean()
    assert err < 6 and wrong > 2 * err  # re-rendered as written (64x32 JPEG loss aside), not as another person
    with pytest.raises(UserError, match="train-share"):
        simulate(tmp_path / "bad", 4, seed=3, size=(64, 32), progress=False, train_share=0.95)
