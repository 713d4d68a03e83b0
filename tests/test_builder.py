import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_main

from augment.makers.build_config import BuildConfig
from augment.makers.builder import Builder, build
from generator.config import load_config
from generator.errors import UserError


def _cfg(s2, out, **kw):
    sets = [f"stage2_run={s2}", f"out={out}", "identities=6", "images_per_id=4", "seed=1", "quality_keep=0.8",
            "bg_sample_share=0.5", "pose_sample_share=0.25", "novelty_tau=0.0001"]
    sets += [f"{k}={v}" for k, v in kw.items()]
    return load_config(BuildConfig, None, sets)


def _content(root):
    """sha256 of every image and of the manifest / keypoint files, keyed by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.suffix == ".jpg" or p.name in ("manifest.csv", "market-annotation-train.csv",
                                                             "market-annotation-test.csv")):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_same_seed_is_byte_identical(tiny_stages, tmp_path):
    s2 = tiny_stages[2]
    a = build(_cfg(s2, tmp_path / "a"), progress=False)
    build(_cfg(s2, tmp_path / "b"), progress=False)
    assert a["finalized"] and a["images"] == 6 * 4
    ca, cb = _content(tmp_path / "a"), _content(tmp_path / "b")
    assert ca == cb and len([k for k in ca if k.endswith(".jpg")]) == 24
    build(_cfg(s2, tmp_path / "c", seed=2), progress=False)
    assert _content(tmp_path / "c") != ca
    m = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert set(m.columns) >= {"path", "pid", "camid", "fg_source", "bg_source", "bg_key", "pose_source", "pose_key",
                              "d_score"}
    assert (m.groupby("pid").camid.nunique() >= 2).all()  # every identity spans at least two cameras
    assert (m.groupby("pid").size() == 4).all()
    assert (tmp_path / "a" / "manifest.parquet").exists()
    readme = (tmp_path / "a" / "README.txt").read_text()
    assert "sha256" in readme and "novelty" in readme and "identities: 6" in readme


def test_shards_union_equals_unsharded(tiny_stages, tmp_path):
    s2 = tiny_stages[2]
    first = build(_cfg(s2, tmp_path / "sharded"), shard=(0, 2), progress=False)
    assert not first.get("finalized")
    assert not (tmp_path / "sharded" / "manifest.csv").exists()
    last = build(_cfg(s2, tmp_path / "sharded"), shard=(1, 2), progress=False)
    assert last["finalized"]
    build(_cfg(s2, tmp_path / "whole"), progress=False)
    assert _content(tmp_path / "sharded") == _content(tmp_path / "whole")


def test_killed_build_resumes_to_the_same_result(tiny_stages, tmp_path, monkeypatch):
    s2 = tiny_stages[2]
    build(_cfg(s2, tmp_path / "ref"), progress=False)
    out = tmp_path / "killed"
    import augment.makers.builder as B

    calls = {"n": 0}
    real_render = B.Builder.render_identity

    def dying(self, p):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed while rendering the 4th identity
        return real_render(self, p)

    monkeypatch.setattr(B.Builder, "render_identity", dying)
    with pytest.raises(KeyboardInterrupt):
        build(_cfg(s2, out), progress=False)
    monkeypatch.setattr(B.Builder, "render_identity", real_render)
    with open(out / "parts" / "shard-0-of-1.jsonl", "a") as f:
        f.write('{"identity": 3, "rows": [{"pa')  # a progress line cut by the kill
    (out / "bounding_box_train" / ".0004_c1s1_000001_01.jpg.tmp").write_bytes(b"\xff\xd8 half a jpeg")
    assert not (out / "manifest.csv").exists()
    s = build(_cfg(s2, out), progress=False)
    assert s["rendered_now"] == 3 and s["finalized"]
    assert _content(out) == _content(tmp_path / "ref")


def test_refuses_other_config_in_non_empty_dir(capsys, tiny_stages, tmp_path):
    s2 = tiny_stages[2]
    build(_cfg(s2, tmp_path / "x"), progress=False)
    with pytest.raises(UserError, match="not a build of this config"):
        build(_cfg(s2, tmp_path / "x", seed=5), progress=False)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    rc, out, err = run_main(capsys, "build", "-c", "/dev/null", "--set", f"stage2_run={s2}", "--set",
                            f"out={tmp_path / 'y'}",
                           "--quiet")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not empty" in err


def test_torchreid_loads_the_export(tiny_stages, tmp_path):
    from reid.torchreid_adapter import builtin_market1501

    s2 = tiny_stages[2]
    s = build(_cfg(s2, tmp_path / "market1501", identities=8, test_share=0.5, images_per_id=5), progress=False)
    ds = builtin_market1501(tmp_path)
    assert len(ds.train) == s["n_train"] and len(ds.query) == s["n_query"] and len(ds.gallery) == s["n_gallery"]
    assert ds.num_train_pids == 4
    q = {(pid, cam) for _, pid, cam, _ in ds.query}
    for pid, cam in q:  # every query has a gallery image of the same identity from another camera
        assert any(p == pid and c != cam for _, p, c, _ in ds.gallery)


def test_novelty_filter_rejects_planted_duplicate(tiny_stages, tmp_path):
    s2 = tiny_stages[2]
    builder = Builder(_cfg(s2, tmp_path / "n", novelty_tau=0.01))
    real_sample = builder.sampler.sample
    state = {"first": None, "planted": False}

    def planted(factor, n, seed):
        x = real_sample(factor, n, seed)
        if factor == "fg":
            if state["first"] is None:
                state["first"] = x.clone()
            elif not state["planted"]:
                state["planted"] = True
                return state["first"] * 1.0001  # a near-duplicate of the first identity
        return x

    builder.sampler.sample = planted
    plans, stats = builder.plan()
    assert state["planted"] and stats["novelty_rejected"] >= 1
    assert plans[1].attempts >= 2
    fg = np.stack([p.fg for p in plans])
    cos = fg @ fg.T / np.linalg.norm(fg, axis=1)[:, None] / np.linalg.norm(fg, axis=1)[None]
    assert (1 - cos[np.triu_indices(len(fg), 1)]).min() >= 0.01


def test_missing_stage2_run_writes_nothing(tmp_path, capsys):
    from conftest import one_line_error

    from augment.cli import main

    rc = main(["build", "-c", "/dev/null", "--set", f"stage2_run={tmp_path / 'nope'}",
               "--set", f"out={tmp_path / 'vm'}", "--quiet"])
    one_line_error(rc, *capsys.readouterr(), "snapshot.pt", "stage2_run")
    assert not (tmp_path / "vm").exists()  # refused before the output folder is made


def test_the_default_device_keeps_a_builds_hash_and_another_changes_it(tiny_stages, tmp_path):
    """Builds begun before the device key resume: the default is left out of the config hash."""
    from augment.makers.build_config import _hashed, config_hash
    from generator.config import digest, to_dict

    cfg = _cfg(tiny_stages[2], tmp_path / "a")
    assert config_hash(cfg) == digest(_hashed({k: v for k, v in to_dict(cfg).items() if k != "device"}))
    assert config_hash(_cfg(tiny_stages[2], tmp_path / "a", device="auto")) != config_hash(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_a_cuda_build_without_a_gpu_is_refused_before_anything_is_written(capsys, tiny_stages, tmp_path):
    from conftest import one_line_error

    cfg = tmp_path / "build.yaml"
    cfg.write_text(f"stage2_run: {tiny_stages[2]}\nout: {tmp_path / 'vm'}\nidentities: 2\nimages_per_id: 2\n"
                   "device: cuda\n")
    one_line_error(*run_main(capsys, "build", "-c", cfg, "--quiet"), "device 'cuda'", "no CUDA GPU")
    assert not (tmp_path / "vm").exists()
    build(_cfg(tiny_stages[2], tmp_path / "auto", device="auto"), progress=False)  # auto: the CPU here
    build(_cfg(tiny_stages[2], tmp_path / "cpu"), progress=False)
    assert _content(tmp_path / "auto") == _content(tmp_path / "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_build_has_the_cpu_builds_labels_and_nearly_its_pixels(tiny_stages, tmp_path):
    from PIL import Image

    s2 = tiny_stages[2]
    build(_cfg(s2, tmp_path / "cpu", quality_keep=1.0), progress=False)
    build(_cfg(s2, tmp_path / "gpu", quality_keep=1.0, device="cuda"), progress=False)
    a, b = (pd.read_csv(tmp_path / d / "manifest.csv") for d in ("cpu", "gpu"))
    labels = [c for c in a.columns if c != "d_score"]
    pd.testing.assert_frame_equal(a[labels], b[labels])  # the plan, made on the CPU either way
    for path in a.path:
        x, y = (np.asarray(Image.open(tmp_path / d / path), dtype=float) for d in ("cpu", "gpu"))
        assert np.abs(x - y).mean() < 2.0, path  # the same image, up to the device's arithmetic and JPEG
