import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import one_line_error, run_main
from tiny import tiny_stage2

from augment.makers.build_config import BuildConfig
from augment.makers.builder import build
from generator.api import Sampler, real_embeddings
from generator.config import load_config
from generator.errors import UserError
from generator.eval.embedding_metrics import GaussianBaseline, frechet_distance, plausible_share
from generator.eval.neighbours import knn_precision_recall
from generator.io import load_checkpoint
from generator.models.stage2 import FACTORS, GaussianStart, build_critic, build_mapping, mapping_width
from generator.simmarket.simulate import simulate
from generator.training.stage2 import Stage2Config, split_holdout, train
from generator.training.stage2_report import REPORT_FILES, SAMPLE_FILES


def initial_critics(cfg, dims: dict[str, int]) -> dict[str, torch.nn.Module]:
    """The critics train() starts from, rebuilt with its RNG use: seed, the three mappings, then the three critics."""
    torch.manual_seed(cfg.train.seed)
    for f in FACTORS:
        build_mapping(dims[f], mapping_width(cfg.model, f), cfg.model.blocks)
    return {f: build_critic(dims[f], cfg.model.critic_width) for f in FACTORS}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mapping_and_critic_shapes():
    phi, critic = build_mapping(224, 64, 4), build_critic(224, 64)
    z = torch.randn(5, 224) * 0.2
    assert phi(z).shape == (5, 224) and critic(phi(z)).shape == (5, 1)
    assert [m.out_features for m in critic if isinstance(m, torch.nn.Linear)] == [64, 64, 64, 64, 1]


def test_training_steps_and_clipping(tiny_stages, tmp_path):
    s1, pose, _ = tiny_stages
    cfg = tiny_stage2(s1, pose, **{"train.steps": 1})
    run = tmp_path / "one"  # the three runs share run/embeddings.pt, which train() computes once
    untrained = train(cfg, run, progress=False, factors=["fg"], stop_after=0)["critics"]
    dims = load_checkpoint(run / "snapshot.pt")["dims"]
    initial = initial_critics(cfg, dims)
    for f in FACTORS:
        assert same_weights(initial[f], untrained[f]), f  # the reproduction is where training starts
    result = train(cfg, run, progress=False, factors=["fg"])
    for f in ("bg", "pose"):
        assert same_weights(initial[f], result["critics"][f]), f  # factors not trained keep their initial critic
    critic = result["critics"]["fg"]
    for p in critic.parameters():
        assert p.abs().max() <= cfg.train.clip + 1e-12  # weight clipping keeps the critic inside +/- c
    # clipping alone moves the initial weights (they start beyond c), so compare with the clipped initial critic:
    # with an lr far below float32's resolution of these weights (0 is refused) the critic is exactly that, and one
    # real step moves it away
    clipped = initial_critics(cfg, dims)["fg"]
    with torch.no_grad():
        for p in clipped.parameters():
            p.clamp_(-cfg.train.clip, cfg.train.clip)
    assert not same_weights(clipped, initial["fg"])
    frozen = train(tiny_stage2(s1, pose, **{"train.steps": 1, "train.lr": 1e-30}), run, progress=False, factors=["fg"])
    assert same_weights(clipped, frozen["critics"]["fg"])
    assert not same_weights(clipped, critic)
    gp = train(tiny_stage2(s1, pose, **{"train.steps": 2, "train.objective": "wgan-gp"}), tmp_path / "gp",
               progress=False, factors=["bg"])
    assert any(p.abs().max() > 0.01 for p in gp["critics"]["bg"].parameters())  # no clipping under WGAN-GP


def test_sampling_is_seeded_and_poses_decode(tiny_stages):
    s1, pose, s2 = tiny_stages
    sampler = Sampler.load(s2)
    for f, dim in (("fg", 224), ("bg", 128), ("pose", 32)):
        a, b = sampler.sample(f, 6, seed=3), sampler.sample(f, 6, seed=3)
        assert a.shape == (6, dim) and torch.equal(a, b)
        assert not torch.equal(a, sampler.sample(f, 6, seed=4))
    from generator.api import DisentangledModel

    model = DisentangledModel.load(s1, pose=pose)
    kps = model.keypoints_from_pose(sampler.sample("pose", 64, seed=0))
    assert kps.shape == (64, 18, 3)
    vis = kps[..., 2] > 0.5
    inside = (kps[..., 0] >= 0) & (kps[..., 0] <= 63) & (kps[..., 1] >= 0) & (kps[..., 1] <= 31)
    assert (inside | ~vis).all()  # every joint is inside the image or marked invisible
    assert (kps[~vis][:, :2] == 0).all()
    people = model.decode(sampler.sample("fg", 4, 0), sampler.sample("bg", 4, 0), sampler.sample("pose", 4, 0))
    assert people.shape == (4, 3, 64, 32)


def test_stage2_resume_is_bit_identical(tiny_stages, tmp_path):
    s1, pose, _ = tiny_stages
    cfg = tiny_stage2(s1, pose, **{"train.steps": 8})
    full = train(cfg, tmp_path / "full", progress=False, factors=["fg"])
    train(cfg, tmp_path / "part", progress=False, factors=["fg"], stop_after=3)
    resumed = train(cfg, tmp_path / "part", resume=True, progress=False, factors=["fg"])
    assert same_weights(full["nets"]["fg"], resumed["nets"]["fg"])


def test_a_log_line_cut_by_a_kill_is_dropped_on_resume_and_a_snapshot_file_names_its_data(tiny_stages, tmp_path):
    """A kill mid-append leaves a cut last line in metrics.jsonl: the resume drops it (it used to stop with a
    JSONDecodeError) and equals an uninterrupted run. stage1_run may name a snapshot file (as a shipped reference's
    stage1.pt): without data_root, the data are the snapshot's own (it used to read config.yaml beside it)."""
    s1, pose, _ = tiny_stages
    cfg = tiny_stage2(s1, pose, **{"train.steps": 6, "train.log_every": 2, "train.snapshot_every": 2})
    full = train(cfg, tmp_path / "full", progress=False, factors=["fg"])
    train(cfg, tmp_path / "part", progress=False, factors=["fg"], stop_after=4)
    with open(tmp_path / "part" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "factor": "fg", "loss_')  # the kill
    resumed = train(cfg, tmp_path / "part", resume=True, progress=False, factors=["fg"])
    assert same_weights(full["nets"]["fg"], resumed["nets"]["fg"])
    assert _records(tmp_path / "part") == _records(tmp_path / "full")
    by_file = tiny_stage2(s1 / "snapshot.pt", pose, **{"train.steps": 2})
    train(by_file, tmp_path / "by-file", progress=False, factors=["fg"])
    assert torch.equal(load_checkpoint(tmp_path / "by-file" / "embeddings.pt")["fg"],
                       load_checkpoint(tmp_path / "full" / "embeddings.pt")["fg"])


def _records(run):
    """metrics.jsonl without its wall-clock field."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in recs]


def test_stage2_resume_after_a_finished_factor_keeps_its_log(tiny_stages, tmp_path):
    """Killed after Phi_fg finished and before Phi_bg began: the resumed run equals an uninterrupted one, and
    Phi_fg's log survives the resume (not cut at the smallest step over all factors, 0)."""
    s1, pose, _ = tiny_stages
    cfg = tiny_stage2(s1, pose, **{"train.steps": 6, "train.log_every": 2, "train.snapshot_every": 2})
    full = train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "part", progress=False, factors=["fg"])  # state: fg 6, bg 0, pose 0
    resumed = train(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed["steps"] == {"fg": 6, "bg": 6, "pose": 6}
    for f in ("fg", "bg", "pose"):
        assert same_weights(full["nets"][f], resumed["nets"][f])
    assert _records(tmp_path / "part") == _records(tmp_path / "full")
    assert [r["step"] for r in _records(tmp_path / "part") if r["factor"] == "fg"] == [2, 4, 6]


def test_metrics_on_known_distributions():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 8))
    same = rng.normal(size=(400, 8))
    shifted = rng.normal(size=(400, 8)) + 3
    assert frechet_distance(real, same) < 0.3 < frechet_distance(real, shifted)
    p, r = knn_precision_recall(real, same)
    assert p > 0.8 and r > 0.8
    p, r = knn_precision_recall(real, shifted)
    assert p < 0.2 and r < 0.2
    collapsed = np.repeat(same[:1], 400, 0)  # mode collapse: precise, no recall
    p, r = knn_precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.05
    g = GaussianBaseline(torch.from_numpy(real).float())
    assert frechet_distance(real, g.sample(400, 0).numpy()) < 0.3


def test_plausible_share():
    from tests_pose_fixture import standing_poses

    real = standing_poses(200, seed=0)
    assert plausible_share(real[:50], real) > 0.9
    broken = real[:50].copy()
    broken[:, 4, :2] = broken[:, 3, :2] + 60  # a forearm twice the torso
    assert plausible_share(broken, real) < 0.1


def test_stage2_cli_eval_and_sample(capsys, tiny_stages, tmp_path):
    s1, pose, _ = tiny_stages
    import yaml

    from generator.config import to_dict

    cfg = tiny_stage2(s1, pose, **{"train.steps": 10})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    rc, out, err = run_main(capsys, "train", "stage2", "-c", tmp_path / "c.yaml", "--run-dir", tmp_path / "run",
                            "--factor", "all", "--quiet")
    assert rc == 0, err
    rc, out, err = run_main(capsys, "eval", "stage2", "--run", tmp_path / "run")
    assert rc == 0, err
    q = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    for f in ("fg", "bg", "pose"):
        for who in ("mapping", "gaussian", "real_train"):
            assert np.isfinite(q[f"{f}/{who}"]["frechet"]) and 0 <= q[f"{f}/{who}"]["precision"] <= 1
        # the training embeddings themselves, the floor, lie nearer the held-out ones than 10 steps of a mapping
        assert q[f"{f}/real_train"]["frechet"] < q[f"{f}/mapping"]["frechet"], f
    assert "plausible" in q["pose/mapping"] and "gaussian" in out and "| pose | training embeddings |" in out
    rc, out, err = run_main(capsys, "sample", "--run", tmp_path / "run", "--rows", 2, "--cols", 4)
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert names == ["a_sampled_people.png", "b_identities.png", "c_resampled_factors.png", "d_interpolation.png"]
    assert names == sorted(SAMPLE_FILES) and sorted(p.name for p in (tmp_path / "run" / "eval").iterdir()) == sorted(
        REPORT_FILES)  # what the --out checks below allow
    # again into the same folders: each replaces its own files; into the run itself (whose metrics.md is its
    # training log's table) or a folder with anything else: refused, the folder as it was
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.md").write_text("mine\n")
    (tmp_path / "other" / "notes.txt").write_text("mine\n")
    for args in (["eval", "stage2", "--run", tmp_path / "run"], ["sample", "--run", tmp_path / "run", "--rows", 1]):
        rc, out, err = run_main(capsys, *args)
        assert rc == 0, err
        before = {p: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
        one_line_error(*run_main(capsys, *args, "--out", tmp_path / "run"), f"{tmp_path / 'run'}: is the --run "
                       "folder itself")
        assert {p: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
        one_line_error(*run_main(capsys, *args, "--out", tmp_path / "other"), f"{tmp_path / 'other'}: holds",
                       "--out", "does not write")
        assert (tmp_path / "other" / "metrics.md").read_text() == "mine\n"


def test_stage2_floor_table_averages_over_seeds():
    """benchmarks/stage2_floor.py: one row per factor, each sampler's Frechet mean ± std over the seeds, precision /
    recall, and plausible poses where measured."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stage2_floor.py"
    spec = importlib.util.spec_from_file_location("stage2_floor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def q(fd):
        out = {}
        for f in FACTORS:
            for who in ("mapping", "gaussian", "real_train"):
                out[f"{f}/{who}"] = {"frechet": fd, "precision": 0.5, "recall": 0.25}
                if f == "pose":
                    out[f"{f}/{who}"]["plausible"] = 0.3
        return out

    rows = mod.floor_table([q(0.1), q(0.3)]).splitlines()
    assert rows[0] == "| factor | mapping | Gaussian | training embeddings |" and len(rows) == 2 + len(FACTORS)
    assert rows[2] == "| fg | " + " | ".join(["0.200 ± 0.141, 0.50 / 0.25"] * 3) + " |"
    assert rows[4].endswith("0.200 ± 0.141, 0.50 / 0.25 (30%) |")


def test_gaussian_start_mapping_begins_as_the_fitted_gaussian(tiny_stages, tmp_path):
    """model.gaussian_start: before any step each mapping samples exactly the Gaussian fitted to its training
    embeddings (the baseline it is scored against); training moves it from there, and the run's snapshot (buffers
    included) loads back into a Sampler that draws the same samples."""
    s1, pose, _ = tiny_stages
    cfg = tiny_stage2(s1, pose, **{"train.steps": 4, "model.gaussian_start": "true", "train.lr": 1.0e-3})
    run = tmp_path / "gs"
    untrained = train(cfg, run, progress=False, factors=["bg"], stop_after=0)["nets"]
    emb = load_checkpoint(run / "embeddings.pt")
    train_idx, _ = split_holdout(len(emb["bg"]), cfg.train.holdout, cfg.train.seed)
    gauss = GaussianBaseline(emb["bg"][train_idx])
    g = torch.Generator().manual_seed(7)
    unit = torch.randn(16, emb["bg"].shape[1], generator=g, dtype=torch.float64)
    with torch.no_grad():
        mapped = untrained["bg"]((unit * cfg.model.z_std).float())
    assert torch.allclose(mapped, (gauss.mean + unit @ gauss.chol.T).float(), atol=1e-4)
    trained = train(cfg, run, resume=True, progress=False, factors=["bg"])["nets"]
    z = torch.randn(8, emb["bg"].shape[1]) * cfg.model.z_std
    with torch.no_grad():
        start = (gauss.mean + (z.double() / cfg.model.z_std) @ gauss.chol.T).float()
        assert not torch.allclose(trained["bg"](z), start, atol=1e-4)  # the body has learned something
        assert torch.allclose(Sampler.load(run).sample_z("bg", z), trained["bg"](z), atol=1e-6)


def test_per_factor_settings_train_and_load_each_mapping_its_own_way(tiny_stages, tmp_path):
    """per_factor: the foreground mapping starts from its Gaussian, the background trains under the gradient
    penalty (its critic is not clipped), the pose mapping as the run's sections say; the snapshot loads back each
    mapping with its own settings, and a resume with other per_factor entries is refused."""
    s1, pose, _ = tiny_stages
    entries = '["fg:model.gaussian_start=true", "bg:train.objective=wgan-gp", "bg:train.lr=1.0e-3"]'
    cfg = tiny_stage2(s1, pose, **{"train.steps": 3, "per_factor": entries})
    run = tmp_path / "mixed"
    out = train(cfg, run, progress=False)
    assert isinstance(out["nets"]["fg"], GaussianStart)
    assert not isinstance(out["nets"]["bg"], GaussianStart) and not isinstance(out["nets"]["pose"], GaussianStart)
    clip = cfg.train.clip
    assert all(p.abs().max() <= clip + 1e-9 for p in out["critics"]["pose"].parameters())  # clipped
    assert any(p.abs().max() > clip for p in out["critics"]["bg"].parameters())  # gradient penalty: not clipped
    sampler = Sampler.load(run)
    for f in FACTORS:
        z = torch.randn(4, sampler.dims[f]) * cfg.model.z_std
        with torch.no_grad():
            assert torch.allclose(sampler.sample_z(f, z), out["nets"][f](z), atol=1e-6), f
    (tmp_path / "c.yaml").write_text((run / "config.yaml").read_text().replace("gaussian_start=true",
                                                                                 "gaussian_start=false"))
    changed = load_config(Stage2Config, tmp_path / "c.yaml", ["train.steps=4"])
    with pytest.raises(UserError, match="per_factor is .* here but the run was trained with"):
        train(changed, run, resume=True, progress=False)


@pytest.mark.parametrize("entry, needle", [
    ("zz:train.lr=1", "FACTOR one of fg, bg, pose"),
    ("bg:train.steps=5", "train.steps is the same for every mapping"),
    ("bg:train.objective=foo", "bg: train: objective: 'foo' is not a valid choice"),
    ("bg:train.lr=-1", "bg: train: lr: -1.0: must be above 0"),
    ("bg:train.lr", "expected KEY=VALUE"),
])
def test_per_factor_entries_are_checked_when_the_config_loads(tmp_path, entry, needle):
    with pytest.raises(UserError, match=re.escape(needle)) as e:
        load_config(Stage2Config, None, [f"per_factor=[{json.dumps(entry)}]"])
    assert "per_factor" in str(e.value)


def test_unlabelled_roots_are_embedded_after_the_labelled_people_without_identities(tiny_stages, tmp_path):
    """Stage II learns every person stage I saw: the training splits of ``unlabelled_roots`` are embedded after the
    labelled ones, as the frozen encoders see them, with pid -1."""
    s1, pose, _ = tiny_stages
    other = tmp_path / "others"
    simulate(other, 6, seed=9, size=(64, 32), progress=False)
    labelled = real_embeddings(s1, pose, progress=False)
    alone = real_embeddings(s1, pose, other, progress=False)
    train(tiny_stage2(s1, pose, **{"train.steps": 1, "unlabelled_roots": f"[{other}]"}), tmp_path / "s2",
          progress=False, factors=["fg"])
    emb = load_checkpoint(tmp_path / "s2" / "embeddings.pt")
    n = len(labelled["fg"])
    assert len(emb["fg"]) == n + len(alone["fg"]) and len(alone["fg"]) > 0
    assert torch.equal(emb["pid"][:n], labelled["pid"]) and (labelled["pid"] >= 0).all()
    assert (emb["pid"][n:] == -1).all()
    for f in FACTORS:
        torch.testing.assert_close(emb[f][:n], labelled[f])
        torch.testing.assert_close(emb[f][n:], alone[f])
    # the builder's banks are the labelled people's: a remix of every real identity, as from a labelled-only run
    build(load_config(BuildConfig, None, [f"stage2_run={tmp_path / 's2'}", f"out={tmp_path / 'vm'}", "fg_mode=real",
                                          "identities=0", "images_per_id=1"]), progress=False)
    m = pd.read_csv(tmp_path / "vm" / "manifest.csv")
    assert set(m.pid) == set(labelled["pid"].tolist()) and m.source.notna().all()
    for factor in ("bg", "pose"):
        bank = m[m[f"{factor}_source"] == "bank"]
        assert (bank[f"{factor}_key"] < n).all() and bank[f"{factor}_image"].notna().all()
    # a run directory whose embeddings hold other unlabelled roots than its config names is refused, not reused
    with pytest.raises(UserError, match="embeds other unlabelled roots"):
        train(tiny_stage2(s1, pose, **{"train.steps": 1}), tmp_path / "s2", progress=False, factors=["fg"])


def test_without_faiss_the_exact_searches_give_the_same_metrics(monkeypatch):
    """A lent GPU machine's image has no faiss and cannot install it: the stage-II report's k-NN precision / recall
    and the builder's cosine index then run in NumPy, with the same results; k-means alone is refused, in one line."""
    import sys

    import numpy as np

    from generator.errors import UserError
    from generator.eval import neighbours

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(400, 16)), rng.normal(0.3, 1.2, size=(300, 16))
    with_faiss = neighbours.knn_precision_recall(real, fake, k=3)
    index = neighbours.CosineIndex(16)
    index.add(real[:50])
    near = index.nearest_distance(fake[:20])
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    assert neighbours.knn_precision_recall(real, fake, k=3) == with_faiss
    index = neighbours.CosineIndex(16)
    assert np.isinf(index.nearest_distance(fake[:2])).all()
    index.add(real[:50])
    assert np.allclose(index.nearest_distance(fake[:20]), near, atol=1e-5) and len(index) == 50
    with pytest.raises(UserError, match="k-means needs faiss"):
        neighbours.kmeans(real.astype(np.float32), 4)


def test_a_stage2_run_without_its_embeddings_is_reported_and_built_from_again(tiny_stages, tmp_path):
    """A run packed for the next GPU window leaves its embeddings cache behind (it is rebuilt): the report and the
    builder make it again, and a stage II started past its time limit stops before it embeds anything."""
    import shutil

    from augment.makers.builder import Builder
    from generator.training.runtime import TimeLimitReached
    from generator.training.stage2 import train as train_stage2
    from generator.training.stage2_report import embedding_quality

    s1, pose, s2 = tiny_stages
    run = tmp_path / "s2"
    shutil.copytree(s2, run)
    before = load_checkpoint(run / "embeddings.pt")
    (run / "embeddings.pt").unlink()
    q = embedding_quality(run)
    assert q["heldout"] > 0 and (run / "embeddings.pt").is_file()
    assert torch.equal(load_checkpoint(run / "embeddings.pt")["fg"], before["fg"])
    (run / "embeddings.pt").unlink()
    Builder(load_config(BuildConfig, None, [f"stage2_run={run}", "out=" + str(tmp_path / "vm")]))
    assert (run / "embeddings.pt").is_file()
    with pytest.raises(TimeLimitReached, match="before stage II embedded"):
        train_stage2(tiny_stage2(s1, pose, **{"train.steps": 20}), tmp_path / "late", progress=False, deadline=0.0)
    assert not (tmp_path / "late" / "embeddings.pt").exists()
