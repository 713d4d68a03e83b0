"""Values no job can run with are refused when the config loads, in one line naming the key: seeds outside what
numpy accepts, non-finite numbers, sizes of 0, shares outside [0, 1), a key given twice in a YAML file."""
import pytest
from conftest import one_line_error, run_main

from augment.jobs.pipeline import PipelineConfig
from augment.jobs.reference import ReferenceConfig
from augment.jobs.reid_recipes import ReidReferenceConfig
from generator.config import load_config
from generator.errors import UserError
from generator.training.pose_ae import PoseConfig
from generator.training.stage1 import Stage1Config
from generator.training.stage2 import Stage2Config
from reid.ablation import AblationConfig


@pytest.mark.parametrize("cls, setting, message", [
    (Stage1Config, "train.seed=-4", "train.seed: -4: a seed is a whole number 0..4294967295"),
    (Stage1Config, "train.seed=4294967296", "a seed is a whole number"),
    (Stage1Config, "data.simulate_seed=-1", "data.simulate_seed: -1: a seed"),
    (AblationConfig, "seeds=[0, -1]", "seeds: -1: a seed"),
    (Stage1Config, "train.lr=.nan", "train.lr: nan: expected a finite number"),
    (Stage1Config, "train.lr=1e400", "train.lr: inf: expected a finite number"),
    (Stage1Config, "train.lr=0", "train.lr: 0.0: must be above 0"),  # a run whose weights never move
    (PoseConfig, "train.lr=0", "train.lr: 0.0: must be above 0"),
    (Stage2Config, "train.lr=0", "train.lr: 0.0: must be above 0"),
    (Stage1Config, "train.beta1=2", "train.beta1: 2.0: use a value in [0, 1)"),
    (PoseConfig, "train.beta2=1.5", "train.beta2: 1.5: use a value in [0, 1)"),
    (Stage1Config, "data.workers=-1", "data.workers: -1: must be 0 or more"),
    (Stage1Config, "data.mask_radius=-3", "data.mask_radius: -3: must be 0 or more"),
    (Stage1Config, "data.flip=5", "data.flip: 5.0: use a value in [0, 1]"),
    (Stage1Config, "model.channels=0", "model.channels: 0: must be above 0"),
    (Stage1Config, "model.roi_size=0", "model.roi_size: 0: must be above 0"),
    (PoseConfig, "model.emb_dim=0", "model.emb_dim: 0: must be above 0"),
    (Stage2Config, "model.z_std=-1", "model.z_std: -1.0: must be above 0"),
    (Stage2Config, "model.blocks=-1", "model.blocks: -1: must be 0 or more"),
    (Stage2Config, "train.holdout=1.0", "train.holdout: 1.0: use a value in [0, 1)"),
    (Stage2Config, "factors=[]", "factors: empty; name at least one of fg, bg, pose"),
    (Stage1Config, "data.splits=[]", "data.splits: empty; name at least one of train, query, gallery"),
    (Stage1Config, "data.simulate_ids=1", "data.simulate_ids: 1: SimMarket needs at least 2 identities"),
    (ReferenceConfig, "train_share=1.5", "train_share: 1.5: 200 identities need a share in (0, 1)"),
    (ReferenceConfig, "unlabelled_ids=1", "unlabelled_ids: 1: SimMarket needs at least 2 identities"),
])
def test_out_of_range_values_name_the_override(cls, setting, message):
    with pytest.raises(UserError) as e:
        load_config(cls, None, [setting])
    assert str(e.value).startswith(f"--set '{setting}': ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_the_defaults_and_the_edges_of_each_range_load():
    load_config(Stage1Config, None, ["train.seed=0", "train.beta1=0", "data.flip=1", "data.workers=0",
                                     "train.seed=4294967295", "train.lr=1e-30"])
    load_config(Stage2Config, None, ["train.holdout=0", "model.blocks=0", "factors=[fg]"])


def test_a_seed_in_a_file_is_named_by_the_file(tmp_path):
    path = tmp_path / "rr.yaml"
    path.write_text("worlds:\n  - {name: w, sim_seed: -1}\n")
    with pytest.raises(UserError, match=r"rr\.yaml: worlds\[0\]\.sim_seed: -1: a seed is a whole number"):
        load_config(ReidReferenceConfig, path)


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data: {root: here}\nmodel: {channels: 8}\ndata: {size: [64, 32]}\n")
    with pytest.raises(UserError, match=r"dup\.yaml: not valid YAML \(key 'data' given twice \(again on line 3\)"):
        load_config(Stage1Config, path)
    path.write_text("train:\n  steps: 4\n  batch: 2\n  steps: 8\n")
    with pytest.raises(UserError, match="key 'steps' given twice"):
        load_config(Stage1Config, path)


@pytest.mark.parametrize("args, needle", [
    (["simulate", "--out", "{tmp}/x", "--ids", "6", "--seed", "-1"], "argument --seed: -1: a seed is a whole number"),
    (["simulate", "--out", "{tmp}/x", "--ids", "6", "--people-seed", "x"], "argument --people-seed: 'x' is not a"),
    (["simulate", "--out", "{tmp}/x", "--ids", "6", "--train-share", "nan"], "--train-share: nan: use a finite"),
    (["cutpaste", "--root", "{tmp}", "--out", "{tmp}/x", "--blur", "inf"], "argument --blur: inf: use a finite number"),
    (["cutpaste", "--root", "{tmp}", "--out", "{tmp}/x", "--size", "64x32", "--mask-radius", "100000"],
     "--mask-radius 100000: use 1..64 px"),
    (["cutpaste", "--root", "{tmp}", "--out", "{tmp}/x", "--size", "64x32", "--blur", "65"],
     "--blur 65.0: use 0..64 px"),
    (["reference", "--time-limit", "nan"], "--time-limit nan: give seconds >= 0"),
])
def test_cli_numbers_are_refused_before_anything_runs(tmp_path, capsys, args, needle):
    rc, out, err = run_main(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    one_line_error(rc, out, err, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("yaml_text, message", [
    ("regimes: [{name: ../../escaped, train_cameras: 0}]", "regimes[0].name: '../../escaped': use letters"),
    ("regimes: [{name: full, train_cameras: 7}]", "regimes[0].train_cameras: 7: use 1..6"),
    ("regimes: []", "regimes: give at least one regime"),
    ("sim_ids: 1", "sim_ids: 1: SimMarket needs at least 2 identities"),
    ("recipes: [{name: real}, {name: cutpaste, setting: real+remix, generated: cutpaste}, {name: ../up}]",
     "recipes[2].name: '../up': it names a folder under out"),
])
def test_reference_reid_names_and_counts_are_checked_when_the_config_loads(tmp_path, yaml_text, message):
    path = tmp_path / "rr.yaml"
    recipes = "" if yaml_text.startswith("recipes") else \
        "recipes: [{name: real}, {name: cutpaste, setting: real+remix, generated: cutpaste}]\n"
    path.write_text(f"out: {tmp_path / 'out'}\n{recipes}{yaml_text}\n")
    with pytest.raises(UserError) as e:
        load_config(ReidReferenceConfig, path)
    assert str(e.value).startswith(f"{path}: {message}")
    assert not (tmp_path / "out").exists()


def test_check_refuses_prefixed_rows_and_a_training_split_left_empty(copy, capsys):
    csv = copy / "market-annotation-train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *("bounding_box_train/" + x for x in lines[1:])]) + "\n")
    for skip in ([], ["--skip-missing-keypoints"]):
        one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet", *skip), "names",
                       "under a folder; name each row by the image's file name")
    csv.write_text("\n".join([lines[0], *("9" + x[1:] for x in lines[1:])]) + "\n")  # rows of other images
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet", "--skip-missing-keypoints"),
                   "no training image has a keypoint row")


@pytest.mark.parametrize("env", [{"RANK": "abc"}, {"RANK": "2", "WORLD_SIZE": "1"}, {"WORLD_SIZE": "0"}])
def test_a_rank_that_is_not_one_of_its_world_is_refused(monkeypatch, env):
    from generator.training.runtime import launch_rank

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match="in the environment: not a rank of a world; .* unset them"):
        launch_rank()


def test_stage2_under_torchrun_is_refused_before_writing(monkeypatch, tmp_path, capsys):
    """Stage II has no process group: under torchrun every rank would train the same mappings into one run
    directory. Refused on each rank in one line, nothing written."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    one_line_error(*run_main(capsys, "train", "stage2", "-c", "configs/demo/stage2.yaml", "--run-dir",
                             tmp_path / "s2", "--quiet"),
                   "WORLD_SIZE=2: stage II trains in one process", "run it without torchrun")
    assert not (tmp_path / "s2").exists()


@pytest.mark.parametrize("cls, setting", [
    (AblationConfig, "train.size=[0, 0]"), (Stage1Config, "data.size=[8, 4]"), (AblationConfig, "train.size=[64]"),
    (PipelineConfig, "gen_size=[8, 4]"), (PipelineConfig, "reid_size=[0, 0]"), (ReferenceConfig, "gen_size=[8, 4]")])
def test_image_sizes_nothing_can_draw_are_refused(cls, setting):
    with pytest.raises(UserError, match="height must be 32..1024 and width 16..512|expected a list of 2"):
        load_config(cls, None, [setting])


def test_a_reference_stage1_run_that_is_not_there_is_refused_when_the_config_loads(tmp_path):
    with pytest.raises(UserError, match="stage1_run: .*nope: no such run folder"):
        load_config(ReferenceConfig, None, [f"stage1_run={tmp_path / 'nope'}"])


def test_reid_weights_that_are_no_state_dict_are_refused_before_writing(sim_root, tmp_path, capsys):
    import torch
    from test_bad_input import _reid_config

    script = tmp_path / "t.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    cfg = _reid_config(tmp_path, sim_root[0], out=tmp_path / "out")
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", cfg, "--set", f"train.weights={script}"),
                   "not a readable state-dict file")
    assert not (tmp_path / "out").exists()
    from reid.torchreid_adapter import build_model

    with pytest.raises(UserError, match="none of its tensors fits osnet_x0_25"):
        build_model("osnet_x0_25", 4, weights=str(other))
