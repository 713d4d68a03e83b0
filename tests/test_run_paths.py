"""Where a command takes a run or a checkpoint, a path of the wrong kind is named for what it is: a run directory
where a checkpoint file goes, a file where a run goes, another stage's run, a folder that holds no dataset."""
import pytest
from conftest import one_line_error, run_main

from generator.errors import UserError


def test_eval_and_sample_take_a_run_directory_or_its_snapshot(capsys, tiny_stages, tmp_path):
    import shutil

    from augment.cli.generator_commands import _default_out, _run_path

    s1, pose, s2 = tiny_stages
    other = tmp_path / "snapshot-l1.pt"  # stage I's other snapshots evaluate as they are
    shutil.copy(s1 / "snapshot.pt", other)
    assert _run_path(str(other), "stage-I", any_snapshot=True) == other
    assert _default_out(other, "eval") == tmp_path / "snapshot-l1-eval"
    assert _default_out(s1, "eval") == s1 / "eval"
    assert _run_path(str(s2 / "snapshot.pt"), "stage-II") == s2
    assert _run_path(str(s2), "stage-II") == s2
    with pytest.raises(UserError, match="config.yaml: a file other than a run's snapshot.pt; pass the stage-II run"):
        _run_path(str(s2 / "config.yaml"), "stage-II")
    with pytest.raises(UserError, match="a pose-AE checkpoint, where a stage-II run is needed"):
        _run_path(str(pose), "stage-II")
    out = tmp_path / "grids"
    rc, stdout, err = run_main(capsys, "sample", "--run", s2 / "snapshot.pt", "--out", out, "--cols", "3",
                               "--rows", "1")
    assert rc == 0, err
    assert any(out.glob("*.png"))


def test_init_from_takes_a_stage1_run_directory_and_names_another_stage(tiny_stages):
    from generator.models.stage1 import Stage1ModelConfig
    from generator.training.stage1 import initial_weights

    s1, pose, _ = tiny_stages
    from generator.io import load_checkpoint

    model = Stage1ModelConfig(**load_checkpoint(s1 / "snapshot.pt")["config"]["model"])
    weights = initial_weights(s1, model)  # the run directory: its snapshot.pt
    assert weights.keys() == initial_weights(s1 / "snapshot.pt", model).keys()
    with pytest.raises(UserError, match="a pose-AE checkpoint, where a stage-I run is needed"):
        initial_weights(pose, model)


def test_a_folder_given_as_a_checkpoint_file_is_named_as_a_folder(tmp_path):
    from generator.io import load_checkpoint

    with pytest.raises(UserError, match="a folder, where a checkpoint file is needed"):
        load_checkpoint(tmp_path)


def test_a_folder_without_a_dataset_offers_the_format_option_only_where_the_command_has_one(capsys, tmp_path):
    from generator.data.layouts import detect_format

    with pytest.raises(UserError) as e:
        detect_format(tmp_path)
    assert "no re-ID dataset found" in str(e.value)
    assert "set the format" not in str(e.value) and "--format" not in str(e.value)
    one_line_error(*run_main(capsys, "check", "--root", tmp_path, "--quiet"), "no re-ID dataset found",
                   "or set --format to its format (market1501")
