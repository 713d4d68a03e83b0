"""Identity-preserving remix: the builder's ``fg_mode: real``."""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error

from augment.cli import main
from augment.makers.build_config import BuildConfig, config_hash
from augment.makers.builder import Builder, build, is_complete
from generator.config import digest, load_config, to_dict
from generator.data.market import parse_name, scan_market
from generator.errors import UserError
from generator.io import atomic_save, load_checkpoint


def _cfg(s2, out, **kw):
    sets = [f"stage2_run={s2}", f"out={out}", "fg_mode=real", "identities=0", "images_per_id=3", "seed=1",
            "bg_sample_share=0.5", "pose_sample_share=0.0"]
    sets += [f"{k}={v}" for k, v in kw.items()]
    return load_config(BuildConfig, None, sets)


def _real(sim_small):
    recs = scan_market(sim_small, ("train",))
    seen = {}
    for r in recs:
        seen.setdefault(r.pid, set()).add(r.camid)
    return recs, seen


def test_remix_keeps_real_pids_unseen_cameras_and_names_its_source(tiny_stages, sim_small, tmp_path):
    recs, seen = _real(sim_small)
    s = build(_cfg(tiny_stages[2], tmp_path / "vm"), progress=False)
    m = pd.read_csv(tmp_path / "vm" / "manifest.csv")
    assert s["finalized"] and len(m) == 3 * len(seen)
    assert sorted(m.pid.unique()) == sorted(seen)  # every real training identity, real pids, no offset
    assert (m.groupby("pid").size() == 3).all() and (m.origin == "remix").all()
    cams_all = {r.camid for r in recs}
    by_name = {f"bounding_box_train/{r.name}": r for r in recs}
    for row in m.itertuples():
        src = by_name[row.source]  # the manifest names a real training image ...
        assert src.pid == row.pid  # ... of the same identity
        name = parse_name(row.path)
        assert (name.pid, name.camid, name.seq) == (row.pid, row.camid, 0)
        if cams_all - seen[row.pid]:  # cameras the identity was never seen in exist: the background is from one
            assert row.camid not in seen[row.pid] and row.bg_unseen_camera
        else:  # seen everywhere: at least not the source image's camera
            assert row.camid != src.camid
        if row.bg_source == "bank":  # a real background: the label is its real camera, another identity's image
            assert recs[row.bg_key].camid == row.camid and recs[row.bg_key].pid != row.pid
        assert row.pose_key != recs.index(src)  # the pose comes from another image
    assert set(m.bg_source) == {"bank", "phi_bg"}
    assert "fg mode: real" in (tmp_path / "vm" / "README.txt").read_text()


def test_remix_in_new_poses_takes_every_pose_from_another_identity(tiny_stages, sim_small, tmp_path):
    """pose_from: others: every remix shows its identity in the pose of another identity's image (a pose the
    identity was never seen in); with the default, some poses come from the identity's own other images."""
    recs, _ = _real(sim_small)
    build(_cfg(tiny_stages[2], tmp_path / "new", pose_from="others", images_per_id=12), progress=False)
    m = pd.read_csv(tmp_path / "new" / "manifest.csv")
    assert (m.pose_source == "bank").all()
    assert all(recs[k].pid != pid for k, pid in zip(m.pose_key, m.pid, strict=True))
    assert all(parse_name(p).pid != pid for p, pid in zip(m.pose_image, m.pid, strict=True))
    build(_cfg(tiny_stages[2], tmp_path / "any", images_per_id=12), progress=False)
    m = pd.read_csv(tmp_path / "any" / "manifest.csv")
    assert any(recs[k].pid == pid for k, pid in zip(m.pose_key, m.pid, strict=True))
    with pytest.raises(UserError, match="pose_from: 'others' is for fg_mode: real"):
        load_config(BuildConfig, None, ["fg_mode=sample", "pose_from=others"])
    # the key left at its default does not change the hash of a build made before it existed
    assert config_hash(BuildConfig()) == digest({k: v for k, v in to_dict(BuildConfig()).items()
                                                 if k not in ("pose_from", "device")})
    assert config_hash(BuildConfig(fg_mode="real", pose_from="others")) != config_hash(BuildConfig(fg_mode="real"))


def test_remix_image_fg_is_the_source_embedding_and_mean_is_the_mean(tiny_stages, sim_small, tmp_path):
    recs, seen = _real(sim_small)
    emb = load_checkpoint(tiny_stages[2] / "embeddings.pt")
    names = [f"bounding_box_train/{r.name}" for r in recs]
    plans, stats = Builder(_cfg(tiny_stages[2], tmp_path / "a", identities=2)).plan()
    assert [p.pid for p in plans] == sorted(seen)[:2]
    for p in plans:
        for im in p.images:
            assert np.array_equal(im.fg, emb["fg"][names.index(im.source)].numpy())
    plans, _ = Builder(_cfg(tiny_stages[2], tmp_path / "b", identities=1, real_fg="mean")).plan()
    own = (emb["pid"] == plans[0].pid).numpy()
    for im in plans[0].images:
        assert np.allclose(im.fg, emb["fg"][own].mean(0).numpy(), atol=1e-6)
        assert len(im.source.split(";")) == own.sum()


def test_remix_refuses_bad_config(tiny_stages, sim_small, tmp_path, capsys):
    _, seen = _real(sim_small)
    with pytest.raises(UserError, match="training identities"):
        Builder(_cfg(tiny_stages[2], tmp_path / "x", identities=len(seen) + 1))
    with pytest.raises(UserError, match="test_share"):
        _cfg(tiny_stages[2], tmp_path / "x", test_share=0.5)
    rc = main(["build", "-c", "/dev/null", "--set", f"stage2_run={tiny_stages[2]}", "--set", "fg_mode=real",
               "--set", f"data_root={tmp_path}", "--set", f"out={tmp_path / 'vm'}", "--quiet"])
    one_line_error(rc, *capsys.readouterr(), str(tmp_path))
    assert not (tmp_path / "vm").exists()


def test_identity_seen_in_every_camera_gets_another_camera_than_its_source(tiny_stages, sim_small, tmp_path):
    builder = Builder(_cfg(tiny_stages[2], tmp_path / "c", images_per_id=6, bg_sample_share=0.0))
    # two cameras only (odd -> 1, even -> 2): most identities are then seen in every camera
    builder.records = [dataclasses.replace(r, camid=2 - r.camid % 2) for r in builder.records]
    plans, stats = builder.plan()
    by_name = {f"bounding_box_train/{r.name}": r for r in builder.records}
    everywhere = 0
    for p in plans:
        seen = {r.camid for r in builder.records if r.pid == p.pid}
        everywhere += seen == {1, 2}
        for im in p.images:
            assert im.camera != by_name[im.source].camid
            assert im.bg_unseen == (im.camera not in seen)
            assert builder.records[im.bg_key].pid != p.pid
    assert everywhere >= 1 and stats["bg_unseen_camera_share"] < 1


@pytest.fixture
def nobody_s2(tiny_stages, tmp_path):
    """A copy of the tiny stage-II run whose embedded real images include some that show no person (keypoints all
    missing): every image of one identity, and one image of another. Returns (run, that identity, planted rows)."""
    s2 = tmp_path / "s2"
    shutil.copytree(tiny_stages[2], s2)
    emb = load_checkpoint(s2 / "embeddings.pt")
    pids = emb["pid"].numpy()
    gone, other = np.unique(pids)[:2]
    planted = np.flatnonzero(pids == gone).tolist() + [int(np.flatnonzero(pids == other)[0])]
    emb["keypoints"][planted] = 0
    atomic_save(emb, s2 / "embeddings.pt")
    return s2, int(gone), planted


def test_remix_never_takes_a_person_from_an_image_without_one(nobody_s2, sim_small, tmp_path, capsys):
    """An image that shows no person gives the foreground of "no person": labelled with its real pid, its remix
    would show no one of that identity. It is never a foreground, pose or background; an identity with no other
    image is not built; the skips are counted in the summary line, build.json and README.txt."""
    s2, gone, planted = nobody_s2
    recs, seen = _real(sim_small)
    names = {f"bounding_box_train/{recs[i].name}" for i in planted}
    sets = [f"stage2_run={s2}", f"out={tmp_path / 'vm'}", "fg_mode=real", "identities=0", "images_per_id=3",
            "seed=1", "bg_sample_share=0.5"]
    assert main(["build", "-c", "/dev/null", *[a for kv in sets for a in ("--set", kv)], "--quiet"]) == 0
    m = pd.read_csv(tmp_path / "vm" / "manifest.csv")
    assert set(m.pid) == set(seen) - {gone} and (m.groupby("pid").size() == 3).all()
    assert not set(m.source) & names
    assert not set(m.bg_key[m.bg_source == "bank"]) & set(planted) and not set(m.pose_key) & set(planted)
    marker = json.loads((tmp_path / "vm" / "build.json").read_text())
    assert (marker["no_person_images"], marker["no_person_identities"]) == (len(planted), 1)
    readme = (tmp_path / "vm" / "README.txt").read_text()
    assert f"never a foreground, pose or background here: {len(planted)} of {len(recs)}" in readme
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"skipped {len(planted)} of {len(recs)} real training images with no visible person (fewer than 4 visible "
        "joints, none joined by a limb, or no shoulder or hip): never a foreground, pose or background; identities "
        "with none that shows a person, not built: 1")


def test_remix_and_sample_plans_skip_images_without_a_person(nobody_s2, tmp_path):
    s2, gone, planted = nobody_s2
    emb = load_checkpoint(s2 / "embeddings.pt")
    for mode in ("sample", "remix"):
        cfg = load_config(BuildConfig, None, [f"stage2_run={s2}", f"out={tmp_path / mode}", f"fg_mode={mode}",
                                              "identities=4", "images_per_id=6", "novelty_tau=0.0001",
                                              "bg_sample_share=0", "pose_sample_share=0"])
        plans, stats = Builder(cfg).plan()
        assert (stats["no_person_images"], stats["no_person_identities"]) == (len(planted), 0)
        for p in plans:
            assert mode == "sample" or int(p.fg_source.split(":")[1]) not in planted
            assert not {k for im in p.images for k in (im.bg_key, im.pose_key)} & set(planted)
    plans, _ = Builder(_cfg(s2, tmp_path / "mean", real_fg="mean")).plan()
    assert gone not in {p.pid for p in plans}
    other = int(emb["pid"][planted[-1]])
    shown = (emb["pid"] == other).numpy()
    shown[planted[-1]] = False
    p = next(p for p in plans if p.pid == other)
    assert np.allclose(p.images[0].fg, emb["fg"][shown].mean(0).numpy(), atol=1e-6)
    assert len(p.images[0].source.split(";")) == shown.sum()


def test_a_build_begun_without_the_person_check_is_refused(nobody_s2, tmp_path):
    s2, _, _ = nobody_s2
    cfg = _cfg(s2, tmp_path / "old")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "build.json").write_text(json.dumps({"config_hash": config_hash(cfg), "config": to_dict(cfg)}))
    with pytest.raises(UserError, match="without the person check"):
        build(cfg, progress=False)


def test_a_finished_build_is_known_however_its_folders_are_spelt(tmp_path, monkeypatch):
    """A build made with relative folders is the same build when asked for with absolute ones (and the reverse):
    it is recognised as complete, and build() resumes it rather than refusing a non-empty folder. Other settings, or
    another stage-II run, are still another build."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s2").mkdir()
    made = _cfg("s2", "vm", fg_mode="real", pose_from="others")
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "build.json").write_text(json.dumps({"config_hash": config_hash(made), "config": to_dict(made)}))
    (tmp_path / "vm" / "README.txt").write_text("done\n")
    spelt = _cfg(tmp_path / "s2", f"../{tmp_path.name}/./vm", fg_mode="real", pose_from="others")
    assert config_hash(spelt) != config_hash(made) and is_complete(spelt)
    assert not is_complete(_cfg(tmp_path / "s2", tmp_path / "vm", fg_mode="real"))  # pose_from differs
    (tmp_path / "s3").mkdir()
    other = _cfg(tmp_path / "s3", tmp_path / "vm", fg_mode="real", pose_from="others")
    assert not is_complete(other)
    with pytest.raises(UserError, match="not a build of this config"):
        build(other, progress=False)
    with pytest.raises(UserError) as e:  # the same build: past the folder check, to the stage-II run it needs
        build(spelt, progress=False)
    assert "not a build of this config" not in str(e.value)


def test_sampled_poses_that_show_no_person_are_drawn_again(tiny_stages, tmp_path):
    """Phi_pose can decode a pose that shows no one: such a sample is replaced by the first derived key whose pose
    shows a person, counted in ``pose_redrawn``; a mapping that never draws one refuses the build."""
    for mode in ("sample", "real"):
        cfg = load_config(BuildConfig, None, [f"stage2_run={tiny_stages[2]}", f"out={tmp_path / mode}",
                                              f"fg_mode={mode}", "identities=2", "images_per_id=3",
                                              "novelty_tau=0.0001", "pose_sample_share=1"])
        builder = Builder(cfg)
        decode = builder.model.keypoints_from_pose
        calls = []

        def every_other_shows_no_one(pose, decode=decode, calls=calls):
            kp = decode(pose)
            calls.append(len(calls))
            return kp * 0 if len(calls) % 2 else kp  # odd calls: no visible joint

        builder.model.keypoints_from_pose = every_other_shows_no_one
        plans, stats = builder.plan()
        keys = [im.pose_key for p in plans for im in p.images]
        assert all(im.pose_source == "phi_pose" for p in plans for im in p.images)
        assert stats["pose_redrawn"] == len(keys) and len(calls) == 2 * len(keys)
        builder.model.keypoints_from_pose = lambda pose, decode=decode: decode(pose) * 0
        with pytest.raises(UserError, match="drew no pose that shows a person"):
            builder.plan()


def test_remix_of_msmt17_data_is_written_in_msmt17_layout_with_its_real_pids(tiny_stages, tmp_path, capsys):
    """MSMT17 numbers its people from 0 (and its cameras to 15), which Market-1501 names cannot hold: a remix of
    MSMT17 data takes MSMT17's layout, as cut-and-paste does. Every image keeps its source's pid (person 0
    included), its name carries its background's camera, and the folder loads as a training split beside the real
    data without adding an identity."""
    from tiny import tiny_stage2

    from generator.data.dataset import person_dataset
    from generator.data.layouts import scan_dataset
    from generator.simmarket.simulate import simulate
    from generator.training.stage2 import train as train_stage2
    from reid.extra_training import extra_training_records

    s1, pose, _ = tiny_stages
    data = tmp_path / "msmt"
    simulate(data, 6, seed=0, size=(64, 32), layout="msmt17", progress=False)
    train_stage2(tiny_stage2(s1, pose, data_root=data, **{"train.steps": 2}), tmp_path / "s2", progress=False)
    real = {Path(r.path).relative_to(data).as_posix(): r for r in scan_dataset(data, ("train",))}
    assert min(r.pid for r in real.values()) == 0
    vm = tmp_path / "vm"
    s = build(_cfg(tmp_path / "s2", vm), progress=False)
    m = pd.read_csv(vm / "manifest.csv").set_index("path")
    out = scan_dataset(vm, ("train",))
    assert s["finalized"] and {r.layout for r in out} == {"msmt17"} and len(out) == len(m) == 3 * len(
        {r.pid for r in real.values()})
    assert not (vm / "bounding_box_train").exists()
    for r in out:
        row = m.loc[Path(r.path).relative_to(vm).as_posix()]
        assert r.pid == row.pid == real[row.source].pid  # the person it shows, under the real pid
        assert r.camid == row.camid  # its background's camera, where MSMT17 readers take it
        if row.bg_source == "bank":
            assert real[row.bg_image].camid == row.camid
    assert 0 in set(m.pid)
    assert len(person_dataset(vm, ("train",))) == len(out)  # the keypoint CSV, keyed by list entry, holds each
    merged = extra_training_records(data, [vm])
    assert len(merged["train"]) == len(real) + len(out)
    assert {p for _, p, _ in merged["train"]} == {r.pid for r in real.values()}  # no identity added
    assert "MSMT17's layout" in (vm / "README.txt").read_text()
    assert main(["check", "--root", str(vm), "--size", "64x32", "--quiet"]) == 0
    assert "a training-only set, by its build.json" in capsys.readouterr().out
    with pytest.raises(UserError, match="export_msmt17: true: .* is MSMT17 data"):
        Builder(_cfg(tmp_path / "s2", tmp_path / "vm2", export_msmt17="true"))
    # a camera MSMT17 names cannot hold (two digits) is refused before anything is written
    lst = data / "list_train.txt"
    entry, pid = lst.read_text().splitlines()[0].split()
    moved = entry.split("_")
    moved[2] = "100"
    moved = "_".join(moved)
    (data / "train" / entry).rename(data / "train" / moved)
    lst.write_text(lst.read_text().replace(entry, moved, 1))
    kp = data / "market-annotation-train.csv"
    kp.write_text(kp.read_text().replace(entry, moved, 1))
    with pytest.raises(UserError, match=r"pid \d+, camera 100: fg_mode: real writes each remix under its real pid "
                                        r"and camera in MSMT17 names, which hold pids 0..9999 and cameras 1..99"):
        Builder(_cfg(tmp_path / "s2", tmp_path / "vm3"))
    assert not (tmp_path / "vm3").exists()
