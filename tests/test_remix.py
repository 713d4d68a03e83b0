"""Identity-preserving remix (issue 14, item 1): the builder's ``fg_mode: real``."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error

from augment.builder import BuildConfig, Builder, build
from augment.cli import main
from generator.config import load_config
from generator.data.market import parse_name, scan_market
from generator.errors import UserError
from generator.io import load_checkpoint


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
