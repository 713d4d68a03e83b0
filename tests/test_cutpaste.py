"""Cut-and-paste across cameras: the no-generator baseline and the hybrid over generated plates."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error
from PIL import Image

from augment.cli import main
from augment.makers import cutpaste as C
from augment.makers import plates as P
from generator.api import DisentangledModel
from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv, yx_to_rcv
from generator.data.market import parse_name, scan_market
from generator.errors import UserError
from generator.simmarket.simulate import simulate


@pytest.fixture(scope="module")
def sim2(tmp_path_factory):
    """A 128x64 SimMarket whose training identities are each seen by exactly 2 of the 6 cameras."""
    root = tmp_path_factory.mktemp("sim2") / "market1501"
    simulate(root, 12, seed=7, train_cameras=2, progress=False)
    return root


def _img(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32)


def _content(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".jpg", ".csv")}


def test_soft_mask_and_paste():
    rcv = np.zeros((18, 3), np.float32)
    rcv[[1, 8, 11, 9, 12], :] = [[30, 32, 1], [70, 28, 1], [70, 36, 1], [100, 28, 1], [100, 36, 1]]
    alpha = P.soft_person_mask(rcv, 128, 64, radius=7, blur=2.0)
    assert alpha.shape == (128, 64) and alpha.min() == 0 and alpha.max() == pytest.approx(1, abs=1e-5)
    soft = (alpha > 0.01) & (alpha < 0.99)
    assert soft.sum() > 50  # a blurred edge, not a hard cut
    assert alpha[70, 32] > 0.999 and alpha[5, 5] == 0
    person, back = np.full((128, 64, 3), 200, np.uint8), np.full((128, 64, 3), 10, np.uint8)
    out = P.paste(person, alpha, back)
    assert (out[alpha > 0.999] == 200).all() and (out[alpha == 0] == 10).all()
    edge = out[soft][:, 0]
    assert ((edge > 10) & (edge < 200)).any()
    assert P.soft_person_mask(np.zeros((18, 3)), 128, 64).max() == 0  # no joint: nothing is cut


def test_donors_come_from_cameras_the_identity_never_appears_in():
    pids = np.array([1, 1, 2, 2, 3, 3])
    cams = np.array([1, 2, 2, 3, 1, 3])
    donors, unseen = P.choose_donors(pids, cams, 4, seed=0)
    for i in range(len(pids)):
        seen = set(cams[pids == pids[i]])
        assert all(cams[d] not in seen for d in donors[i]) and unseen[i].all()
    # identity 1 seen in every camera: another camera than the source's, of another identity
    pids, cams = np.array([1, 1, 1, 2, 3]), np.array([1, 2, 3, 1, 3])
    donors, unseen = P.choose_donors(pids, cams, 3, seed=0)
    for i in range(3):
        assert not unseen[i].any()
        assert all(cams[d] != cams[i] and pids[d] != 1 for d in donors[i])
    with pytest.raises(UserError, match="one identity"):
        P.choose_donors(np.array([4, 4]), np.array([1, 2]), 1, seed=0)


def test_cutpaste_labels_cameras_and_pixels(sim2, tmp_path):
    out = tmp_path / "cp"
    s = C.cut_paste(sim2, out, per_image=2, seed=1, progress=False)
    real = scan_market(sim2, ("train",))
    seen = {}
    for r in real:
        seen.setdefault(r.pid, set()).add(r.camid)
    assert all(len(c) == 2 for c in seen.values())
    m = pd.read_csv(out / "manifest.csv")
    assert s["images"] == len(m) == 2 * len(real) and len(list((out / "bounding_box_train").glob("*.jpg"))) == len(m)
    assert (m.groupby("source").size() == 2).all() and (m.origin == "cutpaste").all()
    kps = read_keypoints_csv(sim2 / "market-annotation-train.csv")
    out_kps = read_keypoints_csv(out / "market-annotation-train.csv")
    inside_err, outside_err = [], []
    for row in m.itertuples():
        src, donor = parse_name(row.source), parse_name(row.donor)
        name = parse_name(row.path)
        assert row.pid == src.pid == name.pid and name.seq == 0  # the real label
        assert row.camid == donor.camid == name.camid  # the donor's camera ...
        assert row.camid not in seen[row.pid] and row.donor_camera_unseen  # ... one the identity never appears in
        assert donor.pid != row.pid
        yx = kps[row.source.split("/")[-1]]
        assert (out_kps[row.path.split("/")[-1]] == yx).all()  # the pose is the source's
        alpha = P.soft_person_mask(yx_to_rcv(yx), 128, 64)
        img, a, b = _img(out / row.path), _img(sim2 / row.source), _img(sim2 / row.donor)
        inside_err.append(np.abs(img - a)[alpha > 0.999].mean())
        outside_err.append(np.abs(img - b)[alpha < 0.001].mean())
        assert np.abs(img - b)[alpha > 0.999].mean() > 3 * inside_err[-1]
    assert max(inside_err) < 4 and max(outside_err) < 4  # JPEG error only
    assert "cutpaste.json" in {p.name for p in out.iterdir()} and not (tmp_path / ".cp.partial").exists()


def test_cutpaste_is_atomic_and_resumes(sim2, tmp_path, monkeypatch, capsys):
    C.cut_paste(sim2, tmp_path / "ref", seed=2, progress=False)
    calls = {"n": 0}
    real_write = C.MarketWriter.write

    def dying(self, split, name, image):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt  # killed mid-way
        return real_write(self, split, name, image)

    monkeypatch.setattr(C.MarketWriter, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        C.cut_paste(sim2, tmp_path / "out", seed=2, progress=False)
    assert not (tmp_path / "out").exists() and (tmp_path / ".out.partial").is_dir()  # nothing under the real name
    monkeypatch.setattr(C.MarketWriter, "write", real_write)
    s = C.cut_paste(sim2, tmp_path / "out", seed=2, progress=False)
    assert 0 < s["written_now"] < s["images"]  # resumed: the images already written stay
    assert _content(tmp_path / "out") == _content(tmp_path / "ref")
    assert C.cut_paste(sim2, tmp_path / "out", seed=2, progress=False)["already_complete"]
    rc = main(["cutpaste", "--root", str(sim2), "--out", str(tmp_path / "out"), "--seed", "3", "--quiet"])
    one_line_error(rc, *capsys.readouterr(), "not empty")


def test_cutpaste_refuses_bad_input_and_writes_nothing(sim2, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(sim2, data)
    bad = sorted((data / "bounding_box_train").glob("*.jpg"))[-1]
    bad.write_bytes(b"not a jpeg")
    rc = main(["cutpaste", "--root", str(data), "--out", str(tmp_path / "cp"), "--quiet"])
    one_line_error(rc, *capsys.readouterr(), bad.name)
    assert not (tmp_path / "cp").exists() and not (tmp_path / ".cp.partial").exists()
    rc = main(["cutpaste", "--root", str(sim2), "--out", str(tmp_path / "cp"), "--plates", "generator", "--quiet"])
    one_line_error(rc, *capsys.readouterr(), "--stage1-run")
    rc = main(["cutpaste", "--root", str(sim2), "--out", str(tmp_path / "cp"), "--size", "64x32", "--quiet"])
    one_line_error(rc, *capsys.readouterr(), "64x32")
    assert not (tmp_path / "cp").exists()


def test_hybrid_pastes_the_person_over_a_generated_plate(sim2, tiny_stages, tmp_path):
    stage1 = tiny_stages[0]
    s = C.cut_paste(sim2, tmp_path / "hy", seed=1, plates="generator", stage1_run=stage1, progress=False)
    m = pd.read_csv(tmp_path / "hy" / "manifest.csv")
    assert s["images"] == len(m) and (m.origin == "hybrid").all() and (m.plate == "generator").all()
    assert (m.camid == m.donor_camid).all() and m.donor_camera_unseen.all()
    model = DisentangledModel.load(stage1)  # 64x32: the plates are decoded there and upscaled to 128x64
    kps = read_keypoints_csv(sim2 / "market-annotation-train.csv")
    rows = m.head(6)
    donors = np.stack([_img(sim2 / d).astype(np.uint8) for d in rows.donor])
    donor_rcv = np.stack([yx_to_rcv(kps[d.split("/")[-1]]) for d in rows.donor])
    plates = P.background_plates(model, donors, donor_rcv)
    assert plates.shape == (6, 128, 64, 3)
    # one plate alone is the same plate: it depends on its donor only
    assert np.allclose(P.background_plates(model, donors[2:3], donor_rcv[2:3])[0], plates[2], atol=1e-3)
    for row, plate, donor in zip(rows.itertuples(), plates, donors, strict=True):
        alpha = P.soft_person_mask(yx_to_rcv(kps[row.source.split("/")[-1]]), 128, 64)
        img = _img(tmp_path / "hy" / row.path)
        assert np.abs(img - plate)[alpha < 0.001].mean() < 4  # outside the person: the plate ...
        assert np.abs(img - donor)[alpha < 0.001].mean() > 8  # ... not the donor image
        assert np.abs(img - _img(sim2 / row.source))[alpha > 0.999].mean() < 4  # inside: the real person


def test_inpaint_hybrid_fills_in_the_donors_person_only(sim2, tiny_stages, tmp_path):
    """plates="inpaint": the donor image keeps its pixels away from its own person; inside the donor's person mask
    (and outside the pasted person) the generated plate replaces it; the pasted person stays the real one."""
    stage1 = tiny_stages[0]
    s = C.cut_paste(sim2, tmp_path / "in", seed=1, plates="inpaint", stage1_run=stage1, progress=False)
    m = pd.read_csv(tmp_path / "in" / "manifest.csv")
    assert s["images"] == len(m) and (m.origin == "inpaint").all() and (m.plate == "inpaint").all()
    model = DisentangledModel.load(stage1)
    kps = read_keypoints_csv(sim2 / "market-annotation-train.csv")
    rows = m.head(6)
    donors = np.stack([_img(sim2 / d).astype(np.uint8) for d in rows.donor])
    donor_rcv = np.stack([yx_to_rcv(kps[d.split("/")[-1]]) for d in rows.donor])
    plates = P.background_plates(model, donors, donor_rcv)
    checked = 0
    for row, plate, donor, rcv in zip(rows.itertuples(), plates, donors, donor_rcv, strict=True):
        alpha = P.soft_person_mask(yx_to_rcv(kps[row.source.split("/")[-1]]), 128, 64)
        hole = P.soft_person_mask(rcv, 128, 64, round(P.HOLE * 7))
        img = _img(tmp_path / "in" / row.path)
        away = (alpha < 0.001) & (hole < 0.001)
        assert np.abs(img - donor)[away].mean() < 4  # the donor's own background pixels
        assert np.abs(img - _img(sim2 / row.source))[alpha > 0.999].mean() < 4  # the real person
        filled = (alpha < 0.001) & (hole > 0.999)  # the donor's person, not under the pasted one
        if filled.sum() >= 20:
            assert np.abs(img - plate)[filled].mean() < 4
            assert np.abs(img - donor)[filled].mean() > 8
            checked += 1
    assert checked
    rc = main(["cutpaste", "--root", str(sim2), "--out", str(tmp_path / "cp"), "--plates", "inpaint", "--quiet"])
    assert rc == 2


def test_the_person_mask_scales_with_the_image_size(sim2):
    """The mask's radius and blur default to 7 and 2 px at 128x64 and scale with the height, so the same person
    covers the same share of the image at 64x32; the 128x64 radius kept at 64x32 would paste a wide band of the
    source's background along with the person."""
    assert P.scaled_mask((128, 64)) == (7, 2.0) and P.scaled_mask((64, 32)) == (4, 1.0)
    assert P.scaled_mask((256, 128)) == (14, 4.0) and P.scaled_mask((64, 32), 6, 0.5) == (6, 0.5)
    kps = read_keypoints_csv(sim2 / "market-annotation-train.csv")
    big = [yx_to_rcv(v) for v in list(kps.values())[:20]]
    small = [P._scaled(r, (128, 64), (64, 32)) for r in big]
    share_big = np.mean([P.soft_person_mask(r, 128, 64, *P.scaled_mask((128, 64))).mean() for r in big])
    share_small = np.mean([P.soft_person_mask(r, 64, 32, *P.scaled_mask((64, 32))).mean() for r in small])
    unscaled = np.mean([P.soft_person_mask(r, 64, 32, 7, 2.0).mean() for r in small])
    assert abs(share_small / share_big - 1) < 0.15
    assert unscaled > 1.3 * share_big


def test_mixed_hybrid_is_cutpaste_with_half_the_backgrounds_generated(sim2, tiny_stages, tmp_path):
    """plates="mixed": the donors (and so the names and cameras) of cut-and-paste with the same seed; a seeded half of
    the images is the cut-and-paste image itself, the other half the hybrid's image of the same source and donor."""
    stage1 = tiny_stages[0]
    C.cut_paste(sim2, tmp_path / "cp", seed=3, progress=False)
    C.cut_paste(sim2, tmp_path / "hy", seed=3, plates="generator", stage1_run=stage1, progress=False)
    s = C.cut_paste(sim2, tmp_path / "mx", seed=3, plates="mixed", stage1_run=stage1, progress=False)
    m = pd.read_csv(tmp_path / "mx" / "manifest.csv")
    cp = pd.read_csv(tmp_path / "cp" / "manifest.csv")
    assert s["images"] == len(m) == len(cp) and s["plates"] == "mixed"
    assert (m.path == cp.path).all() and (m.donor == cp.donor).all() and (m.source == cp.source).all()
    assert sorted(m.plate.unique()) == ["generator", "image"] and (m.plate == "generator").sum() == len(m) // 2
    assert ((m.plate == "generator") == (m.origin == "hybrid")).all() and set(m.origin) == {"cutpaste", "hybrid"}
    for row in m.itertuples():
        img = _img(tmp_path / "mx" / row.path)
        same = "hy" if row.plate == "generator" else "cp"
        other = "cp" if same == "hy" else "hy"
        assert np.abs(img - _img(tmp_path / same / row.path)).mean() < 1.5
        assert np.abs(img - _img(tmp_path / other / row.path)).mean() > 4
    # another seed draws another half
    again = C.cut_paste(sim2, tmp_path / "mx2", seed=4, plates="mixed", stage1_run=stage1, progress=False)
    assert again["images"] == len(m)
    assert (pd.read_csv(tmp_path / "mx2" / "manifest.csv").plate != m.plate).any()


def _plant_no_person(root):
    """Keypoint rows that show no person in a copy's training CSV: every image of one identity (all -1) and one
    image of another (3 joints left). Returns (the gone identity, {planted image name: reason}, the other pid)."""
    csv = root / "market-annotation-train.csv"
    kps = read_keypoints_csv(csv)
    names = sorted(kps)
    gone = names[0][:4]
    planted = {n: "no visible joint" for n in names if n.startswith(gone)}
    other = next(n for n in names if not n.startswith(gone))
    kps[other][:] = -1
    kps[other][:3] = [[20, 32], [30, 32], [32, 24]]  # nose, neck, right shoulder: two limbs, a fragment
    planted[other] = "3 visible joints, fewer than 4"
    for n in planted:
        if n.startswith(gone):
            kps[n][:] = -1
    write_keypoints_csv(csv, kps)
    return int(gone), planted, int(other[:4])


@pytest.fixture(scope="module")
def no_person(sim2, tmp_path_factory):
    """sim2 with keypoint rows that show no person planted (see ``_plant_no_person``)."""
    root = tmp_path_factory.mktemp("nobody") / "market1501"
    shutil.copytree(sim2, root)
    return (root, *_plant_no_person(root))


@pytest.mark.parametrize("plates", list(P.PLATES))
def test_sources_without_a_person_are_skipped_and_reported(no_person, tiny_stages, tmp_path, plates, capsys):
    """A source whose pose shows no person would paste nothing (its mask is empty) and label the donor's person with
    its pid: no output comes from it, none uses it as a donor, and the skip is counted and listed everywhere."""
    root, gone, planted, other = no_person
    out = tmp_path / "out"
    stage1 = [] if plates == "image" else ["--stage1-run", tiny_stages[0]]
    args = ["cutpaste", "--root", root, "--out", out, "--plates", plates, "--quiet", *stage1]
    assert main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    m = pd.read_csv(out / "manifest.csv")
    real = scan_market(root, ("train",))
    names = {f"bounding_box_train/{n}" for n in planted}
    assert not set(m.source) & names and not set(m.donor) & names
    assert gone not in set(m.pid) and gone not in {parse_name(p).pid for p in m.path}
    assert (m.pid == other).sum() == sum(r.pid == other for r in real) - 1  # its one planted image: no output
    assert len(m) == len(real) - len(planted) and sorted(m.path) == sorted(
        f"bounding_box_train/{n.name}" for n in (out / "bounding_box_train").iterdir())
    # frames are numbered over the kept sources, 1..N without gaps
    assert sorted(parse_name(p).frame for p in m.path) == list(range(1, len(m) + 1))
    summary = json.loads((out / "cutpaste.json").read_text())["summary"]
    assert summary["skipped_no_person"] == len(planted) and summary["sources"] == len(m)
    skipped = pd.read_csv(out / "skipped.csv")
    assert dict(zip(skipped.source, skipped.reason, strict=True)) == {f"bounding_box_train/{n}": r
                                                                       for n, r in planted.items()}
    assert f"skipped: {len(planted)} of {len(real)} training images show no person" in (out / "README.txt").read_text()
    assert printed[-1] == (f"skipped {len(planted)} of {len(real)} source images with no visible person (fewer than "
                           f"4 visible joints, none joined by a limb, or no shoulder or hip): listed in "
                           f"{out / 'skipped.csv'}")


def test_skipping_keeps_names_deterministic_and_resumable(sim2, tmp_path, monkeypatch):
    """A killed run resumes to the uninterrupted result; a partial run begun on keypoints that showed other people
    (so other frame numbers) is restarted, never mixed with the new numbering."""
    data = tmp_path / "data"
    shutil.copytree(sim2, data)
    calls = {"n": 0}
    real_write = C.MarketWriter.write

    def dying(self, split, name, image):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return real_write(self, split, name, image)

    monkeypatch.setattr(C.MarketWriter, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        C.cut_paste(data, tmp_path / "out", seed=2, progress=False)  # every source shows a person
    _plant_no_person(data)
    monkeypatch.setattr(C.MarketWriter, "write", real_write)
    s = C.cut_paste(data, tmp_path / "out", seed=2, progress=False)
    assert s["written_now"] == s["images"] and s["skipped_no_person"] > 0  # restarted: the numbering changed
    C.cut_paste(data, tmp_path / "ref", seed=2, progress=False)
    assert _content(tmp_path / "out") == _content(tmp_path / "ref")
    calls["n"] = 0
    monkeypatch.setattr(C.MarketWriter, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        C.cut_paste(data, tmp_path / "again", seed=2, progress=False)
    monkeypatch.setattr(C.MarketWriter, "write", real_write)
    s = C.cut_paste(data, tmp_path / "again", seed=2, progress=False)
    assert 0 < s["written_now"] < s["images"]  # resumed
    assert _content(tmp_path / "again") == _content(tmp_path / "ref")


def test_a_finished_folder_made_without_the_person_check_is_refused(no_person, sim2, tmp_path):
    root = no_person[0]
    for data, out in ((root, tmp_path / "planted"), (sim2, tmp_path / "clean")):
        C.cut_paste(data, out, seed=1, progress=False)
        marker = out / "cutpaste.json"
        record = json.loads(marker.read_text())
        del record["summary"]["skipped_no_person"]  # as a folder finished without the check records it
        marker.write_text(json.dumps(record))
    with pytest.raises(UserError, match="show no person"):
        C.cut_paste(root, tmp_path / "planted", seed=1, progress=False)
    assert C.cut_paste(sim2, tmp_path / "clean", seed=1, progress=False)["already_complete"]


def test_msmt17_data_is_written_in_msmt17_layout_with_its_real_pids(tmp_path, capsys):
    """MSMT17 numbers identities from 0 and has 15 cameras, which Market-1501 names cannot carry: the output takes
    MSMT17's layout, every image keeps its source's pid, and it loads as a training split beside the real data."""
    from generator.data.layouts import scan_dataset
    from reid.extra_training import extra_training_records

    data = tmp_path / "msmt"
    simulate(data, 8, seed=2, layout="msmt17", progress=False)
    s = C.cut_paste(data, tmp_path / "cp", seed=1, progress=False)
    real = {Path(r.path).relative_to(data).as_posix(): r for r in scan_dataset(data, ("train",))}
    assert s["layout"] == "msmt17" and s["images"] == len(real) and min(r.pid for r in real.values()) == 0
    out = scan_dataset(tmp_path / "cp", ("train",))
    assert {r.layout for r in out} == {"msmt17"} and len(out) == len(real)
    m = pd.read_csv(tmp_path / "cp" / "manifest.csv").set_index("path")
    for r in out:
        row = m.loc[Path(r.path).relative_to(tmp_path / "cp").as_posix()]
        assert r.pid == row.pid == real[row.source].pid  # the pid of the person it shows
        assert r.camid == row.camid == real[row.donor].camid != real[row.source].camid
    ds = C.person_dataset(tmp_path / "cp", ("train",))  # the keypoint CSV is keyed by list entry
    assert len(ds) == len(out)
    merged = extra_training_records(data, [tmp_path / "cp"])
    assert len(merged["train"]) == 2 * len(real)
    assert {p for _, p, _ in merged["train"]} == {r.pid for r in real.values()}  # no identity added
    assert "MSMT17's layout" in (tmp_path / "cp" / "README.txt").read_text()
    # `vmarket check` reads it as the training-only set it is (it has no query or gallery to check)
    assert main(["check", "--root", str(tmp_path / "cp"), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"train {len(real)} / " in line and "a training-only set, by its cutpaste.json" in line
