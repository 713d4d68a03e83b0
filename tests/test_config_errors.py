"""A bad config or --set is refused while the config loads: exit code 2, one line naming the key and the fix,
no traceback, and no run directory or output folder left behind.

Most cases call the CLI's ``main`` in this process (an import of the whole CLI costs 5-10 s per subprocess on
2 cores); two subprocesses check the same through ``vmarket`` itself.
"""
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import one_line_error, run_cli

from augment.cli import main
from augment.jobs.reference import ReferenceConfig
from augment.makers.build_config import BuildConfig
from generator.config import from_dict, load_config, save_config, to_dict
from generator.errors import UserError
from generator.io import load_checkpoint
from generator.shipped import FILES, default_dir
from generator.training.pose_ae import PoseConfig
from generator.training.stage1 import Stage1Config
from generator.training.stage2 import Stage2Config

REPO = Path(__file__).resolve().parents[1]
# every job config of a pipeline, by absolute path: the tests run in an empty folder
PIPELINE_JOBS = {job: str(REPO / "configs" / "demo" / f"{job}.yaml")
                 for job in ("stage1", "pose", "stage2", "build", "reid")}


def _command(cmd: str, config: Path) -> list[str]:
    """The argv of ``cmd`` (train stage1 | train pose | train stage2 | build | reid | pipeline) on ``config``."""
    if cmd.startswith("train"):
        return [*cmd.split(), "-c", str(config), "--quiet"]
    if cmd == "reid":
        return ["reid", "ablate", "-c", str(config), "--quiet"]
    if cmd == "pipeline":
        return ["pipeline", str(config), "--quiet"]
    return [cmd, "-c", str(config), "--quiet"]


def _write_config(tmp_path: Path, cmd: str, data: dict) -> Path:
    """``data`` as the config of ``cmd``, writing every output under tmp_path/out (absent unless written)."""
    data = dict(data)
    if cmd == "build" or cmd == "reid":
        data.setdefault("out", str(tmp_path / "out"))
    if cmd == "pipeline":
        data = {**PIPELINE_JOBS, "out": str(tmp_path / "out"), **data}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(tmp_path, monkeypatch, capsys, cmd: str, data: dict, sets: list[str], *needles) -> str:
    """Run ``vmarket cmd`` in-process in the empty tmp_path; assert the one-line refusal and that nothing was
    written (no outputs/ run directory, no out folder)."""
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path, cmd, data)
    argv = _command(cmd, config) + [a for s in sets for a in ("--set", s)]
    rc = main(argv)
    out, err = capsys.readouterr()
    line = one_line_error(rc, out, err, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "something was written"
    return line


TRAIN = ["train stage1", "train pose", "train stage2"]
ALL = TRAIN + ["build", "reid", "pipeline"]


# --------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize("cmd", ALL)
def test_unknown_top_level_key(tmp_path, monkeypatch, capsys, cmd):
    _refused(tmp_path, monkeypatch, capsys, cmd, {"nosuch_key": 1}, [], "bad.yaml", "'nosuch_key'", "valid keys are")


@pytest.mark.parametrize("cmd, section", [("train stage1", "train"), ("train pose", "model"), ("train stage2", "train"),
                                          ("reid", "train")])
def test_unknown_key_in_section(tmp_path, monkeypatch, capsys, cmd, section):
    _refused(tmp_path, monkeypatch, capsys, cmd, {section: {"stpes": 5}}, [], "bad.yaml", f"'{section}.stpes'",
             f"valid keys in {section} are")


# --------------------------------------------------------------------------- wrong types and lengths
@pytest.mark.parametrize("cmd, data, needles", [
    ("train stage1", {"train": {"steps": "many"}}, ["train.steps", "expected int", "'many'"]),
    ("train stage1", {"data": {"size": [128]}}, ["data.size", "2 values", "[128, 64]"]),
    ("train pose", {"data": {"size": [128, 64, 3]}}, ["data.size", "2 values"]),
    ("train pose", {"data": {"size": "128x64"}}, ["data.size", "expected a list"]),
    ("train stage2", {"train": {"batch": 1.5}}, ["train.batch", "expected int"]),
    ("build", {"identities": "lots"}, ["identities", "expected int"]),
    ("build", {"export_imagefolder": "yes please"}, ["export_imagefolder", "true or false"]),
    ("reid", {"train": {"size": [128]}}, ["train.size", "2 values"]),
    ("reid", {"seeds": 3}, ["seeds", "expected a list"]),
    ("pipeline", {"gen_size": [64]}, ["gen_size", "2 values", "[64, 32]"]),
])
def test_wrong_type(tmp_path, monkeypatch, capsys, cmd, data, needles):
    _refused(tmp_path, monkeypatch, capsys, cmd, data, [], "bad.yaml", *needles)


def test_wrong_type_from_set_names_the_set(tmp_path, monkeypatch, capsys):
    line = _refused(tmp_path, monkeypatch, capsys, "train pose", {}, ["data.size=[128,64,3]"],
                    "--set 'data.size=[128,64,3]'", "data.size", "2 values")
    assert "bad.yaml" not in line  # the file is fine; the override is at fault


# --------------------------------------------------------------------------- bad --set
@pytest.mark.parametrize("cmd, sets, needles", [
    ("train stage1", ["train.steps"], ["--set 'train.steps'", "KEY=VALUE"]),
    ("train stage1", ["train.nosuch=1"], ["'train.nosuch'", "valid keys in train"]),
    ("train stage2", ["nosection.x=1"], ["'nosection'", "valid keys are"]),
    ("train pose", ["train.steps.x=1"], ["'train.steps' is a value, not a section"]),
    ("train stage1", ["=3"], ["--set '=3'", "KEY=VALUE"]),
    ("build", ["cameraz=3"], ["'cameraz'", "valid keys are"]),
    ("reid", ["train.nosuch=1"], ["'train.nosuch'"]),
    ("pipeline", ["nosuch=1"], ["'nosuch'"]),
    ("pipeline", ["set=[stage1:train.nosuch=1]"], ["set 'stage1:train.nosuch=1'", "'train.nosuch'"]),
    ("pipeline", ["set=[stage1train.steps=1]"], ["'stage1train.steps=1'", "JOB:KEY=VALUE"]),
    # a job's key set directly joins the set list, and is checked as its entries are
    ("pipeline", ["stage1:train.stepz=300"], ["set 'stage1:train.stepz=300'", "'train.stepz'"]),
    ("pipeline", ["nojob:x=1"], ["set 'nojob:x=1'", "job 'nojob' is not one of"]),
    ("pipeline", ["out="], ["out: expected str, got None", "--set \"KEY=''\""]),
])
def test_bad_set(tmp_path, monkeypatch, capsys, cmd, sets, needles):
    _refused(tmp_path, monkeypatch, capsys, cmd, {}, sets, *needles)


# --------------------------------------------------------------------------- choices
@pytest.mark.parametrize("cmd, data, needles", [
    ("train stage1", {"train": {"amp": "fp16"}}, ["train.amp", "'fp16'", "bf16, none"]),
    ("train stage1", {"model": {"injection": "concat"}}, ["model.injection", "tile, linear"]),
    ("train stage1", {"model": {"fg_encoder": "resnet"}}, ["model.fg_encoder", "bodyroi7, wholebody"]),
    ("train stage1", {"model": {"roi_crop": "nearest"}}, ["model.roi_crop", "roi_align, grid_sample"]),
    ("train stage1", {"data": {"splits": ["train", "test"]}}, ["data.splits[1]", "train, query, gallery"]),
    ("train stage2", {"train": {"objective": "gan"}}, ["train.objective", "wgan, wgan-gp"]),
    ("train stage2", {"factors": ["fg", "hair"]}, ["factors[1]", "fg, bg, pose"]),
    ("build", {"fg_mode": "mix"}, ["fg_mode", "sample, remix"]),
    ("reid", {"train": {"loss": "arcface"}}, ["train.loss", "softmax, triplet"]),
    ("reid", {"settings": ["real", "virtual->fake"]}, ["settings", "'fake'", "real, virtual, real+virtual"]),
])
def test_choice_outside_its_set(tmp_path, monkeypatch, capsys, cmd, data, needles):
    _refused(tmp_path, monkeypatch, capsys, cmd, data, [], "bad.yaml", *needles)


@pytest.mark.parametrize("sets, needles", [
    (["set=[stage2:train.objective=gan]"], ["set 'stage2:train.objective=gan'", "wgan, wgan-gp"]),
    (["set=[build:fg_mode=mix]"], ["set 'build:fg_mode=mix'", "sample, remix"]),
    (["set=[reid:train.loss=arcface]"], ["set 'reid:train.loss=arcface'", "softmax, triplet"]),
])
def test_pipeline_job_overrides_are_checked_before_anything_runs(tmp_path, monkeypatch, capsys, sets, needles):
    _refused(tmp_path, monkeypatch, capsys, "pipeline", {}, sets, *needles)


# --------------------------------------------------------------------------- builder ranges
@pytest.mark.parametrize("data, needles", [
    ({"cameras": 12}, ["cameras", "12", "1..9"]),
    ({"cameras": 0}, ["cameras", "1..9"]),
    ({"identities": 2000}, ["identities", "2000", "1501", "export_imagefolder: true", "split"]),
    ({"identities": 10000, "export_imagefolder": True}, ["identities", "9999"]),
    ({"identities": 0}, ["identities", "at least 1"]),
    ({"identities": -5}, ["identities", "at least 1"]),
    ({"images_per_id": 0}, ["images_per_id", "at least 1"]),
    ({"quality_keep": 0}, ["quality_keep", "(0, 1]"]),
    ({"test_share": 1.5}, ["test_share", "[0, 1]"]),
    ({"remix_noise": -1}, ["remix_noise", "0 or more"]),
    ({"fg_mode": "remix", "remix_noise": 0}, ["remix_noise", "real people as new identities"]),
    ({"novelty_tau": 5}, ["novelty_tau", "[0, 2]"]),
])
def test_build_ranges(tmp_path, monkeypatch, capsys, data, needles):
    _refused(tmp_path, monkeypatch, capsys, "build", data, [], "bad.yaml", *needles)


def test_build_range_from_set_names_the_set(tmp_path, monkeypatch, capsys):
    _refused(tmp_path, monkeypatch, capsys, "build", {}, ["identities=2000"], "--set 'identities=2000'", "1501")


def test_more_than_1501_identities_with_the_imagefolder_export():
    cfg = load_config(BuildConfig, None, ["identities=2000", "export_imagefolder=true"])
    assert cfg.identities == 2000
    assert load_config(BuildConfig, None, ["identities=1501", "cameras=9"]).identities == 1501


# --------------------------------------------------------------------------- through `vmarket` itself
@pytest.mark.parametrize("cmd, data, sets, needles", [
    ("train stage1", {"train": {"amp": "fp16"}}, [], ["bad.yaml", "train.amp", "bf16, none"]),
    ("build", {}, ["cameras=12"], ["--set 'cameras=12'", "1..9"]),
])
def test_cli_subprocess(tmp_path, cmd, data, sets, needles):
    config = _write_config(tmp_path, cmd, data)
    argv = _command(cmd, config) + [a for s in sets for a in ("--set", s)]
    one_line_error(*run_cli(*argv, cwd=tmp_path, timeout=120), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no outputs/ run directory, no out folder


# --------------------------------------------------------------------------- what must keep working
def _within(stored, now) -> bool:
    """Every key of ``stored`` is in ``now`` with the same value (recursively, types included: lists stay lists)."""
    if isinstance(stored, dict):
        return isinstance(now, dict) and all(k in now and _within(v, now[k]) for k, v in stored.items())
    return type(stored) is type(now) and stored == now


def test_shipped_checkpoint_configs_round_trip():
    """The shipped checkpoints store their configs as plain dicts with lists; they load under the typed
    annotations (tuples, Literal) and write back unchanged."""
    for name, cls in (("stage1", Stage1Config), ("pose", PoseConfig), ("stage2", Stage2Config)):
        stored = load_checkpoint(default_dir() / FILES[name])["config"]
        cfg = from_dict(cls, stored, name)
        assert _within(stored, to_dict(cfg))  # fields added since keep their defaults
    assert isinstance(cfg.factors, list)


def test_every_config_for_real_data_loads_under_its_job():
    """The configs the README gives for a user's own data (configs/*_market.yaml, build_market_remix.yaml) load
    under their jobs' config classes, so a key renamed in the code cannot leave them broken; the cut-and-paste
    recipe's control is the same config with the remixes taken out, as its header says."""
    from reid.ablation import AblationConfig

    classes = {"stage1": Stage1Config, "pose": PoseConfig, "stage2": Stage2Config, "build": BuildConfig,
               "reid": AblationConfig}
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"build_market_remix.yaml", "reid_market_cutpaste.yaml", "stage1_market.yaml"}
    for p in paths:
        load_config(classes[p.stem.split("_")[0]], p)
    recipe = load_config(AblationConfig, REPO / "configs" / "reid_market_cutpaste.yaml")
    remixes = load_config(BuildConfig, REPO / "configs" / "build_market_remix.yaml")
    assert (remixes.fg_mode, remixes.pose_from, remixes.test_share) == ("real", "others", 0.0)
    assert recipe.more_generated[0].root == remixes.out and recipe.more_generated[0].kind == "remix"
    # the README's control, as written: cut-and-paste alone (and real-only) at the recipe's share, seeds and steps,
    # on the folder its `vmarket cutpaste` writes
    readme = (REPO / "README.md").read_text().replace("\\\n", " ")
    command = re.search(r"vmarket reid ablate -c configs/reid_market_cutpaste.yaml (--set .*?)\s+#", readme)
    assert command, "README.md gives the recipe's cut-and-paste control"
    sets = [v.strip('"') for v in re.findall(r'--set ("[^"]*"|\S+)', command.group(1))]
    control = load_config(AblationConfig, REPO / "configs" / "reid_market_cutpaste.yaml", sets)
    assert control.more_generated == [] and control.settings == recipe.settings == ["real", "real+remix"]
    assert (control.remix_root, control.virtual_share, control.seeds) == (recipe.remix_root, 0.25, recipe.seeds)
    assert control.out != recipe.out and control.train == recipe.train and control.matched_steps
    assert f"vmarket cutpaste --root data/market1501 --out {recipe.remix_root} " in readme
    alone = re.search(r"vmarket reid ablate -c configs/reid_market_cutpaste.yaml (--set \S+)\s+#", readme)
    assert alone, "README.md gives the recipe's own command"
    only = load_config(AblationConfig, REPO / "configs" / "reid_market_cutpaste.yaml", [alone.group(1)[6:].strip('"')])
    assert only.settings == ["real+remix"] and only.more_generated == recipe.more_generated
    comment = (REPO / "configs" / "reid_market_cutpaste.yaml").read_text().replace("\\\n#", " ")
    for text in (command.group(0).rsplit("#", 1)[0], alone.group(0).rsplit("#", 1)[0]):
        assert " ".join(text.split()) in " ".join(comment.split()), text  # the config's comment says the same


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Stage1Config, None, ["data.size=[64,32]", "train.amp=none", "model.injection=linear"])
    assert cfg.data.size == (64, 32)
    assert to_dict(cfg)["data"]["size"] == [64, 32]  # YAML, JSON hashes and checkpoints see a list, as before
    save_config(cfg, tmp_path / "c.yaml")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["data"]["size"] == [64, 32]
    assert load_config(Stage1Config, tmp_path / "c.yaml") == cfg


# --------------------------------------------------------------------------- base: one config extends another
def test_a_config_extends_its_base_section_by_section(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {"data": {"root": "a", "size": [64, 32]}, "train": {"steps": 10, "lr": 0.5, "l1_only_steps": 3}}))
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\ntrain: {steps: 20}\n")
    cfg = load_config(Stage1Config, tmp_path / "sub" / "child.yaml", ["train.lr=0.25"])
    assert (cfg.data.root, tuple(cfg.data.size)) == ("a", (64, 32))  # kept from the base
    assert (cfg.train.steps, cfg.train.l1_only_steps, cfg.train.lr) == (20, 3, 0.25)  # replaced, kept, --set


def test_every_shipped_config_variant_equals_its_base_plus_its_keys():
    """Each config with a base differs from it only in the keys it writes (lists replaced, sections merged)."""
    from generator.config import merge, read_config

    variants = [p for p in (REPO / "configs").rglob("*.yaml") if "base" in yaml.safe_load(p.read_text())]
    assert len(variants) >= 5
    for p in variants:
        own = yaml.safe_load(p.read_text())
        base = read_config(p.parent / own.pop("base"))
        assert read_config(p) == merge(base, own)
        assert own and all(base.get(k) != v for k, v in own.items() if not isinstance(v, dict)), p


@pytest.mark.parametrize("text, needles", [
    ("base: missing.yaml\n", ["base: missing.yaml: no such file", "relative to"]),
    ("base: bad.yaml\n", ["extends itself", "remove the loop"]),
    ("base: [1, 2]\n", ["is not a file name"]),
    ("base: sub\n", ["base: sub: a folder, not a config file"]),
])
def test_a_bad_base_is_one_line(tmp_path, monkeypatch, capsys, text, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    (tmp_path / "sub").mkdir()
    one_line_error(main(["train", "stage1", "-c", "bad.yaml", "--quiet"]), *capsys.readouterr(), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "sub"], "something was written"


@pytest.mark.parametrize("cmd", ALL)
@pytest.mark.parametrize("text", ["", "# every key left out\n"])
def test_an_empty_config_is_refused_not_taken_as_every_default(tmp_path, monkeypatch, capsys, cmd, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    one_line_error(main(_command(cmd, tmp_path / "bad.yaml")), *capsys.readouterr(), "bad.yaml: empty config")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "something was written"


def test_yaml_merge_keys_are_read_and_a_key_twice_is_still_refused(tmp_path):
    from generator.config import read_config

    path = tmp_path / "c.yaml"
    path.write_text("data: &d {size: [64, 32], flip: 0.0}\ntrain: {<<: *d, flip: 1.0, steps: 3}\n")
    assert read_config(path)["train"] == {"size": [64, 32], "flip": 1.0, "steps": 3}  # its own key wins
    path.write_text("data: &d {flip: 0.0}\ntrain: {<<: *d, steps: 3, steps: 4}\n")
    with pytest.raises(UserError, match="key 'steps' given twice"):
        read_config(path)


@pytest.mark.parametrize("sets, needles", [
    (["data.splits=[train,train]"], ["data.splits: 'train' given twice"]),
    (["data.unlabelled_roots=[u,u]"], ["data.unlabelled_roots: 'u' given twice"]),
])
def test_a_list_item_twice_is_refused(tmp_path, monkeypatch, capsys, sets, needles):
    _refused(tmp_path, monkeypatch, capsys, "train stage1", {}, sets, *needles)


def test_job_configs_are_found_beside_the_config_that_names_them(tmp_path, monkeypatch):
    """A pipeline or reference config names its job configs relative to its own folder, so a copy of configs/
    works from any current folder; a name that exists only relative to the current folder (a path as a user types
    it) still loads, and a missing one is named where it was looked for."""
    from augment.jobs.pipeline import PipelineConfig
    from augment.jobs.reference import ReferenceConfig
    from augment.jobs.steps import generator_configs, job_config
    from reid.ablation import AblationConfig

    shutil.copytree(REPO / "configs", tmp_path / "mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    demo = tmp_path / "mine" / "demo"
    cfg = load_config(PipelineConfig, demo / "pipeline.yaml")
    assert [cfg.stage1, cfg.pose, cfg.stage2, cfg.build, cfg.reid] == [
        str(demo / f"{job}.yaml") for job in ("stage1", "pose", "stage2", "build", "reid")]
    s1, pose, s2 = generator_configs(tmp_path / "out", tmp_path / "data", cfg.gen_size, cfg.stage1, cfg.pose,
                                     cfg.stage2, [])
    assert s1.model == load_config(Stage1Config, REPO / "configs" / "demo" / "stage1.yaml").model  # its base too
    job_config(BuildConfig, cfg.build, [], [], "build")
    job_config(AblationConfig, cfg.reid, [], [], "reid")
    ref = load_config(ReferenceConfig, tmp_path / "mine" / "reference" / "reference-unlabelled.yaml")  # via base:
    assert ref.stage2 == str(tmp_path / "mine" / "reference" / "stage2.yaml")
    # typed as a path from the current folder: kept; --set values are never moved
    (elsewhere / "s1.yaml").write_text("base: ../mine/demo/stage1.yaml\n")
    (tmp_path / "p.yaml").write_text("stage1: s1.yaml\n")
    assert load_config(PipelineConfig, tmp_path / "p.yaml").stage1 == "s1.yaml"
    assert load_config(PipelineConfig, demo / "pipeline.yaml", ["reid=x.yaml"]).reid == "x.yaml"
    (tmp_path / "p.yaml").write_text("stage1: nowhere.yaml\n")
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere.yaml'}: cannot read config"):
        job_config(Stage1Config, load_config(PipelineConfig, tmp_path / "p.yaml").stage1, [], [], "stage1")


def test_a_job_key_set_directly_joins_the_set_list_after_the_files_entries():
    """``--set JOB:KEY=VALUE`` on a config that runs jobs is one more entry of its ``set`` list, after the file's own
    (which it overrides, entries applying in order), rather than a replacement of the list that would drop them."""
    path = Path(__file__).parents[1] / "configs" / "reference" / "reference-48-unlabelled.yaml"
    cfg = load_config(ReferenceConfig, path, ["stage1:train.steps=300"])
    assert cfg.set == ["stage1:model.channels=48", "stage1:train.steps=4500", "stage1:train.steps=300"]
    cfg = load_config(ReferenceConfig, path, ["set=[pose:train.steps=5]", "stage1:train.steps=300"])  # in order
    assert cfg.set == ["pose:train.steps=5", "stage1:train.steps=300"]
