"""A resume that cannot load the run's state is refused in one line and leaves the run as it was (config.yaml
included), so that the run still resumes with its own config afterwards."""
import shutil

import pytest
import yaml
from conftest import one_line_error, run_main

from generator.errors import UserError
from generator.training import pose_ae, stage1, stage2


def _snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.fixture
def runs(tiny_stages, tmp_path):
    """Writable copies of the tiny stage-I, pose-AE and stage-II runs."""
    out = {}
    for name, run in zip(("s1", "pose", "s2"), tiny_stages, strict=True):
        out[name] = tmp_path / name
        shutil.copytree(run, out[name])
    return out


@pytest.mark.parametrize("job, run, setting, was", [
    ("stage1", "s1", "model.channels=16", "8"),
    ("pose", "pose", "model.width=64", "32"),
    ("stage2", "s2", "model.blocks=3", "2"),
])
def test_resume_with_other_model_settings_is_refused_and_changes_nothing(runs, capsys, job, run, setting, was):
    before = _snapshot(runs[run])
    rc, out, err = run_main(capsys, "train", job, "--resume", runs[run], "--set", setting, "--quiet")
    key = setting.split("=")[0]
    one_line_error(rc, out, err, f"{key} is", f"trained with {was}", "start a new run")
    assert _snapshot(runs[run]) == before
    rc, out, err = run_main(capsys, "train", job, "--resume", runs[run], "--quiet")  # its own config still resumes
    assert rc == 0, err


def test_resuming_another_jobs_run_is_refused_and_changes_nothing(runs, capsys):
    before = _snapshot(runs["pose"])
    rc, out, err = run_main(capsys, "train", "stage1", "--resume", runs["pose"], "--quiet")
    one_line_error(rc, out, err, "not a run of `vmarket train stage1`", "pass the folder of a stage1 run")
    assert _snapshot(runs["pose"]) == before
    rc, out, err = run_main(capsys, "train", "pose", "--resume", runs["pose"], "--quiet")
    assert rc == 0, err


def test_a_state_that_does_not_fit_is_one_line_without_its_config(runs, sim_small):
    """With the run's config.yaml gone, the weights themselves show the mismatch: a UserError, not torch's
    hundred-line size-mismatch report."""
    from tiny import tiny_pose, tiny_stage1

    (runs["s1"] / "config.yaml").unlink()
    with pytest.raises(UserError, match=r"state\.pt: its 'G' state does not fit this configuration \(.*size mismatch"):
        stage1.train(tiny_stage1(sim_small, **{"model.channels": 16, "train.steps": 8}), runs["s1"], resume=True,
                     progress=False)
    assert not (runs["s1"] / "config.yaml").exists()  # nothing written for a resume that never began
    (runs["pose"] / "config.yaml").unlink()
    with pytest.raises(UserError, match="its 'model' state does not fit"):
        pose_ae.train(tiny_pose(sim_small, **{"model.width": 64, "train.steps": 300}), runs["pose"], resume=True,
                      progress=False)


def test_resume_may_change_what_is_not_the_model(runs, sim_small):
    """More steps (or another schedule) on resume is allowed and recorded in the run's config."""
    cfg = yaml.safe_load((runs["s2"] / "config.yaml").read_text())
    cfg["train"]["steps"] += 4
    path = runs["s2"].parent / "more.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from generator.config import load_config

    result = stage2.train(load_config(stage2.Stage2Config, path), runs["s2"], resume=True, progress=False)
    assert result["step"] == cfg["train"]["steps"]
    assert yaml.safe_load((runs["s2"] / "config.yaml").read_text())["train"]["steps"] == cfg["train"]["steps"]


def test_resume_and_run_dir_naming_two_runs_is_refused(runs, tmp_path, capsys):
    rc, out, err = run_main(capsys, "train", "pose", "--resume", runs["pose"], "--run-dir", tmp_path / "other",
                            "--quiet")
    one_line_error(rc, out, err, "name two runs")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("run, key", [("s1", "step"), ("pose", "step"), ("s2", "steps")])
def test_a_run_killed_between_its_snapshot_and_its_state_is_unfinished(runs, run, key):
    """The snapshot is written before the state: a kill between them at the last step leaves the state a save
    behind. Such a run must count as unfinished, so that its resume trains that stretch again, rather than be
    reused with a stale state (the reference would then ship stage I without its discriminator)."""
    import torch

    from augment.jobs.steps import finished
    from generator.io import atomic_save, load_checkpoint

    path = runs[run]
    done = load_checkpoint(path / "snapshot.pt")[key]
    steps = done if key == "step" else min(done.values())
    assert finished(path, steps, key)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    state[key] = done - 1 if key == "step" else {f: v - 1 for f, v in done.items()}
    atomic_save(state, path / "state.pt")
    assert not finished(path, steps, key)
    assert finished(path, steps - 1, key)  # fewer steps asked now: the state is past them, nothing to train again
    (path / "state.pt").unlink()  # a run copied without its state (trained elsewhere): the snapshot decides
    assert finished(path, steps, key)


def test_a_bare_resume_without_a_config_names_the_runs_it_could_mean(tmp_path, capsys):
    """``--resume`` resumes the newest run of the config given with -c; without -c it cannot tell which config's,
    so it says how to name one and lists the runs there instead of reporting none."""
    rc, out, err = run_main(capsys, "train", "stage1", "--resume", "--out", tmp_path, "--quiet")
    one_line_error(rc, out, err, "no run with a state.pt to resume", "start one with -c CONFIG")
    for name in ("00000-stage1_market", "00001-stage1_demo"):
        (tmp_path / "stage1" / name).mkdir(parents=True)
        (tmp_path / "stage1" / name / "state.pt").write_bytes(b"")
    (tmp_path / "stage1" / "00002-stage1_demo").mkdir()  # no state: nothing to resume
    rc, out, err = run_main(capsys, "train", "stage1", "--resume", "--out", tmp_path, "--quiet")
    runs = tmp_path / "stage1"
    line = one_line_error(rc, out, err, "pass -c CONFIG", "or --resume RUN_DIR",
                          f"runs there: {runs / '00000-stage1_market'}, {runs / '00001-stage1_demo'}")
    assert "00002" not in line
