import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_pose, tiny_stage1

from generator.config import ConfigValueError
from generator.data.dataset import person_dataset
from generator.models.pose_ae import PoseAutoencoder
from generator.models.stage1 import DisentangledGenerator, Stage1ModelConfig, build_generator, level_width
from generator.training.pose_ae import train as train_pose
from generator.training.runs import rng_state, set_rng_state
from generator.training.stage1 import train


def _batch(root, n=4):
    ds = person_dataset(root, ("train",), size=(64, 32), heatmap_radius=2, mask_radius=4)
    return torch.utils.data.default_collate([ds.item(i) for i in range(n)])


def test_official_embedding_sizes():
    torch.manual_seed(0)
    G = DisentangledGenerator(size=(128, 64), channels=8, enc_levels=2, dec_levels=2, roi_size=12)
    b = 2
    img = torch.randn(b, 3, 128, 64)
    boxes = torch.tensor([[10.0, 5.0, 60.0, 40.0]]).repeat(b, 7, 1)
    out, fg, bg = G(img, torch.ones(b, 1, 128, 64), boxes, torch.ones(b, 7), torch.zeros(b, 18, 128, 64))
    assert fg.shape == (b, 224) and bg.shape == (b, 128) and out.shape == img.shape
    pae = PoseAutoencoder()
    recon, emb = pae(torch.randn(b, 54))
    assert emb.shape == (b, 32) and recon.shape == (b, 54)
    assert set(recon.view(b, 18, 3)[..., 2].unique().tolist()) <= {0.0, 1.0}  # binarised visibilities
    whole = DisentangledGenerator(size=(64, 32), channels=8, enc_levels=2, dec_levels=2, fg_encoder="wholebody")
    fg, bg = whole.encode(torch.randn(b, 3, 64, 32), torch.ones(b, 1, 64, 32), boxes, torch.ones(b, 7))
    assert fg.shape == (b, 224) and bg.shape == (b, 128)


def test_max_level_channels_caps_the_deep_levels_only():
    """A cap on a level's width shrinks the deep levels (where the parameters are) and leaves the stem and the
    shallow levels, the embeddings and the output as they are; 0 is the uncapped model."""
    assert [level_width(16, i) for i in range(4)] == [16, 32, 48, 64]
    assert [level_width(16, i, 40) for i in range(4)] == [16, 32, 40, 40]
    kw = dict(size=(64, 32), channels=16, enc_levels=4, dec_levels=4, roi_size=12)
    torch.manual_seed(0)
    full, capped = DisentangledGenerator(**kw), DisentangledGenerator(**kw, max_level_channels=32)
    assert sum(p.numel() for p in DisentangledGenerator(**kw, max_level_channels=64).parameters()) == \
        sum(p.numel() for p in full.parameters())  # a cap at the widest level changes nothing
    n_full, n_capped = (sum(p.numel() for p in g.parameters()) for g in (full, capped))
    assert n_capped < 0.6 * n_full
    assert capped.stem[0].out_channels == full.stem[0].out_channels == 16
    assert [blk.conv1.in_channels for blk in capped.decoder.down_blocks] == [16, 32, 32, 32]
    b = 2
    boxes = torch.tensor([[4.0, 4.0, 28.0, 60.0]]).repeat(b, 7, 1)
    out, fg, bg = capped(torch.randn(b, 3, 64, 32), torch.ones(b, 1, 64, 32), boxes, torch.ones(b, 7),
                         torch.zeros(b, 18, 64, 32))
    assert out.shape == (b, 3, 64, 32) and fg.shape == (b, 224) and bg.shape == (b, 128)
    out.abs().mean().backward()
    assert all(p.grad is not None for p in capped.parameters())
    with pytest.raises(ConfigValueError, match="max_level_channels"):
        Stage1ModelConfig(channels=32, max_level_channels=16)


@pytest.mark.parametrize("crop", ["roi_align", "grid_sample"])
def test_invisible_roi_gives_zero_vector(sim_small, crop):
    torch.manual_seed(0)
    G = build_generator(tiny_stage1(sim_small, **{"model.roi_crop": crop}).model, (64, 32))
    batch = _batch(sim_small)
    vis = batch["roi_visible"].clone()
    vis[0, 3] = 0
    vis[1, :] = 0
    fg, _ = G.encode(batch["image"], batch["pose_mask"], batch["roi_boxes"], vis)
    fg = fg.view(4, 7, 32)
    assert (fg[0, 3] == 0).all() and (fg[1] == 0).all()
    assert (fg[0, 0] != 0).any() and (fg[2] != 0).any()


def test_straight_through_visibility_has_gradient():
    pae = PoseAutoencoder(width=32, blocks=1)
    emb = torch.randn(3, 32, requires_grad=True)
    pae.decode(emb).view(3, 18, 3)[..., 2].sum().backward()
    assert emb.grad.abs().sum() > 0


def _losses(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_stage1_losses_fall(sim_small, tmp_path):
    cfg = tiny_stage1(sim_small, **{"train.steps": 40, "train.l1_only_steps": 20, "train.sample_every": 40})
    train(cfg, tmp_path, progress=False)
    recs = _losses(tmp_path)
    assert recs[-1]["l1"] < 0.8 * recs[0]["l1"]
    assert recs[-1]["d_loss"] > 0  # the adversarial term ran after the L1 warm-up
    assert (tmp_path / "grid-0000040.png").exists() and (tmp_path / "snapshot.pt").exists()


def test_pose_ae_loss_falls(sim_small, tmp_path):
    train_pose(tiny_pose(sim_small, **{"train.steps": 60}), tmp_path, progress=False)
    recs = _losses(tmp_path)
    assert recs[-1]["loss"] < 0.5 * recs[0]["loss"]


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_stage1_resume_is_bit_identical(sim_small, tmp_path):
    cfg = tiny_stage1(sim_small, **{"train.steps": 12, "train.snapshot_every": 5, "train.l1_only_steps": 3,
                                    "data.flip": 0.5})
    full = train(cfg, tmp_path / "full", progress=False)
    run = tmp_path / "part"
    train(cfg, run, progress=False, stop_after=7)  # stops after step 7 and saves its state
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 7
    train(cfg, run, resume=True, progress=False)
    resumed_dir = run
    resumed = torch.load(resumed_dir / "state.pt", weights_only=True)
    for k, v in full["G"].state_dict().items():
        assert torch.equal(v, resumed["G"][k]), k
    for k, v in full["D"].state_dict().items():
        assert torch.equal(v, resumed["D"][k]), k


@pytest.mark.slow  # a real SIGKILL of a `vmarket` subprocess, then a resume: end to end
def test_stage1_resume_after_kill(sim_small, tmp_path):
    """A real SIGKILL mid-run; `vmarket train --resume` then finishes with the uninterrupted weights."""
    import signal
    import time

    args = [sys.executable, "-m", "augment.cli", "train", "stage1", "--quiet", "--set", f"data.root={sim_small}"]
    cfg_path = tmp_path / "tiny.yaml"
    import yaml

    from generator.config import to_dict

    cfg = tiny_stage1(sim_small, **{"train.steps": 30, "train.snapshot_every": 4})
    cfg_path.write_text(yaml.safe_dump(to_dict(cfg)))
    ref = tmp_path / "ref"
    subprocess.run(args[:5] + ["-c", cfg_path, "--run-dir", ref, "--quiet"], check=True, capture_output=True)
    run = tmp_path / "killed"
    p = subprocess.Popen(args[:5] + ["-c", cfg_path, "--run-dir", run, "--quiet"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "state.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = torch.load(run / "state.pt", weights_only=True)["step"]
    assert killed_at < 30
    subprocess.run(args[:5] + ["--resume", run, "--quiet"], check=True, capture_output=True)
    a = torch.load(ref / "state.pt", weights_only=True)
    b = torch.load(run / "state.pt", weights_only=True)
    assert b["step"] == 30
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated records after the resume


@pytest.mark.slow  # torchrun starts two gloo ranks, each importing torch
def test_ddp_two_gloo_ranks_stay_identical(sim_small, tmp_path):
    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                        str(script), str(sim_small), str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert any(not torch.equal(init[k], w0[k]) for k in init)  # training changed the weights


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rng_state_restores_cuda():
    state = rng_state()
    a = torch.rand(4, device="cuda")
    torch.rand(100, device="cuda")  # move on
    set_rng_state(state)
    assert torch.equal(a, torch.rand(4, device="cuda"))


def test_stage1_and_pose_ae_also_train_on_unlabelled_roots(sim_small, tmp_path):
    """data.unlabelled_roots: the training images (and poses) of other people are added to root's; a missing
    root is refused before anything trains."""
    from generator.errors import UserError
    from generator.simmarket.simulate import simulate
    from generator.training.pose_ae import pose_vectors

    extra = tmp_path / "unlabelled"
    simulate(extra, 8, seed=5, people_seed=9, size=(64, 32), progress=False)
    kw = {"size": (64, 32), "heatmap_radius": 2, "mask_radius": 4}
    n = len(person_dataset(sim_small, ("train",), **kw)) + len(person_dataset(extra, ("train",), **kw))
    train(tiny_stage1(sim_small, **{"train.steps": 2, "data.unlabelled_roots": f"[{extra}]"}), tmp_path / "s1",
          progress=False)
    assert f"stage1: {n} images from {sim_small}, {extra}," in (tmp_path / "s1" / "log.txt").read_text()
    poses = len(pose_vectors(sim_small, ("train",), (64, 32))) + len(pose_vectors(extra, ("train",), (64, 32)))
    train_pose(tiny_pose(sim_small, **{"train.steps": 2, "data.unlabelled_roots": f"[{extra}]"}), tmp_path / "pose",
               progress=False)
    assert f"pose AE: {poses} poses from {sim_small}, {extra}," in (tmp_path / "pose" / "log.txt").read_text()
    with pytest.raises(UserError, match="nowhere"):
        train(tiny_stage1(sim_small, **{"train.steps": 2, "data.unlabelled_roots": f"[{tmp_path / 'nowhere'}]"}),
              tmp_path / "s1-bad", progress=False)


def test_imported_stage1_run_counts_as_finished_and_a_different_one_is_refused(sim_small, tmp_path):
    """A reference's stage1_run: a finished run of the same config, trained elsewhere, is copied without its
    optimiser state and counts as finished; one of another model config, or unfinished, is refused."""
    from augment.jobs.reference import import_stage1
    from augment.jobs.steps import finished
    from generator.errors import UserError

    cfg = tiny_stage1(sim_small, **{"train.steps": 4, "train.l1_only_steps": 2, "train.snapshot_every": 2})
    train(cfg, tmp_path / "gpu", progress=False)
    for bad, match in (({"model.channels": 16}, "model config differs from the job's in channels"),
                       ({"train.steps": 8, "train.l1_only_steps": 2}, "train config differs from the job's in steps"),
                       ({"data.unlabelled_roots": f"[{sim_small}]"}, "unlabelled roots")):
        with pytest.raises(UserError, match=match):
            import_stage1(tmp_path / "gpu", tmp_path / "bad", tiny_stage1(sim_small, **{**{
                "train.steps": 4, "train.l1_only_steps": 2}, **bad}))
        assert not (tmp_path / "bad").exists()
    snap = torch.load(tmp_path / "gpu" / "snapshot.pt", weights_only=True)
    del snap["config"]["train"]["fm_weight"]  # a run saved before the option: it had its default
    torch.save(snap, tmp_path / "gpu" / "snapshot.pt")
    dst = tmp_path / "ref" / "stage1"
    import_stage1(tmp_path / "gpu", dst, tiny_stage1(sim_small, **{"train.steps": 4, "train.l1_only_steps": 2,
                                                                  "train.device": "cuda"}))
    assert not (dst / "state.pt").exists() and (dst / "snapshot-l1.pt").is_file()
    assert json.loads((dst / "imported.json").read_text())["step"] == 4
    assert finished(dst, 4) and not finished(dst, 5)
    a, b = (torch.load(d / "snapshot.pt", weights_only=True)["G"] for d in (dst, tmp_path / "gpu"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_keeps_images_without_a_person_and_counts_them(sim_small, tmp_path):
    """Stage I reads no label: an image that shows no person trains the background branch, and the log says how
    many there are."""
    import shutil

    from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv

    data = tmp_path / "data"
    shutil.copytree(sim_small, data)
    csv = data / "market-annotation-train.csv"
    kps = read_keypoints_csv(csv)
    for name in sorted(kps)[:3]:
        kps[name][:] = -1
    write_keypoints_csv(csv, kps)
    train(tiny_stage1(data, **{"train.steps": 1}), tmp_path / "s1", progress=False)
    log = (tmp_path / "s1" / "log.txt").read_text()
    assert f"stage1: {len(kps)} images" in log and "data: 3 training images show no person" in log


def test_stage1_sizes_table_shows_what_a_cap_saves():
    """benchmarks/stage1_sizes.py: one row per variant, the capped model smaller and cheaper than the uncapped."""
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "stage1_sizes.py"), "--variant", "16",
                          "--variant", "16:24"], capture_output=True, text=True, cwd=repo, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 16")]
    assert [r[1].strip() for r in rows] == ["16, 32, 48, 64", "16, 24, 24, 24"]
    (p_full, p_cap), (f_full, f_cap) = ([float(r[i].split()[0]) for r in rows] for i in (2, 4))
    assert p_cap < 0.6 * p_full and f_cap < f_full


def test_a_kill_as_the_l1_warm_up_ends_keeps_its_snapshot(sim_small, tmp_path, monkeypatch):
    """``snapshot-l1.pt`` (the end of the L1 warm-up, which the reference ships) is written before the state that
    moves past it: a run killed while saving that state resumes from the step before, and still writes it."""
    import generator.training.stage1 as S

    cfg = tiny_stage1(sim_small, **{"train.steps": 4, "train.l1_only_steps": 2, "train.snapshot_every": 2})
    real_save = S.save_state

    def killed_at_the_warm_up(trained, step, is_main, run_dir):
        if step == 2:
            raise KeyboardInterrupt  # the kill, while the state of step 2 is being saved
        real_save(trained, step, is_main, run_dir)

    monkeypatch.setattr(S, "save_state", killed_at_the_warm_up)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "s1", progress=False)
    assert (tmp_path / "s1" / "snapshot-l1.pt").is_file()
    monkeypatch.setattr(S, "save_state", real_save)
    train(cfg, tmp_path / "s1", resume=True, progress=False)
    l1 = torch.load(tmp_path / "s1" / "snapshot-l1.pt", weights_only=True)
    assert l1["step"] == 2 and torch.load(tmp_path / "s1" / "snapshot.pt", weights_only=True)["step"] == 4
