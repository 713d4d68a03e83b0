"""Bad values and names given to a command: out-of-range numbers, devices that are not there, recipe names a config
does not have, an output path that is a file or the current folder, the wrong kind of run. Each is refused with exit
code 2 and one line naming the value and the fix, before anything is written (run in this process, ``run_main``)."""
import os
import shutil

import pytest
import torch
from conftest import one_line_error, run_main
from PIL import Image
from test_bad_input import _reid_config
from tiny import tiny_stage1

from augment.makers.build_config import BuildConfig
from augment.makers.builder import Builder, build
from generator.config import load_config, save_config
from generator.device import resolve_device
from generator.errors import UserError
from generator.simmarket.simulate import simulate
from generator.training.stage1 import Stage1Config
from reid.ablation import AblationConfig

NO_GPU = "cuda:99"  # a GPU no machine here has: refused with or without CUDA


def _absent(path):
    assert not os.path.lexists(path), sorted(p.name for p in path.iterdir()) if path.is_dir() else path


@pytest.mark.parametrize("override, needle", [
    ("train.lr=-1", "train.lr: -1"), ("train.batch=0", "train.batch: 0"), ("train.epochs=0", "train.epochs: 0"),
    ("train.device=bogus", "'bogus' is not a device"), ("seeds=[]", "seeds: empty"),
    ("train.transforms=[random_flop]", "'random_flop' is not one of"),
    ("seeds=[0,0]", "seeds: 0 given twice"), ("settings=[real,real]", "settings: 'real' given twice"),
])
def test_reid_ablate_refuses_bad_training_values_before_writing(sim_small, tmp_path, capsys, override, needle):
    out = tmp_path / "reid"
    rc, o, e = run_main(capsys, "reid", "ablate", "-c", _reid_config(tmp_path, sim_small, out), "--set", override,
                        "--quiet")
    line = one_line_error(rc, o, e, needle)
    assert f"error: --set '{override}'" in line  # the override is named, not the file it overrode
    _absent(out)


def test_reid_ablate_refuses_an_unknown_model_or_a_missing_gpu_before_writing(sim_small, tmp_path, capsys):
    out = tmp_path / "reid"
    cfg = _reid_config(tmp_path, sim_small, out)
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", cfg, "--set", "train.model=bogusnet", "--quiet"),
                   "'bogusnet': unknown to torchreid", "osnet_x0_25")
    _absent(out)
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", cfg, "--set", f"train.device={NO_GPU}", "--quiet"),
                   f"device '{NO_GPU}'", "GPU")
    _absent(out)


@pytest.mark.parametrize("sets, needle", [
    (["settings=[real,real+remix]", "remix_root={missing}"], ["remix_root: {missing}: no such folder",
                                                               "vmarket cutpaste --root", "--out {missing}`"]),
    (["settings=[real+new]", "virtual_root={missing}"], ["virtual_root: {missing}: no such folder", "vmarket build"]),
    (["settings=[real+remix]", "remix_root={real}", "more_generated=[{{root: {missing}, kind: remix, share: 0.1}}]"],
     ["more_generated[0].root: {missing}: no such folder", "more_generated=[]"]),
    (["real_root={missing}"], ["real_root: {missing}: no such folder", "--set real_root="]),
])
def test_reid_ablate_names_the_config_key_of_a_missing_dataset_folder(sim_small, tmp_path, capsys, sets, needle):
    """A generated folder not made yet (the README's recipe before its build) is named by its key and what makes
    it, before any image is read or anything written."""
    out, missing = tmp_path / "reid", tmp_path / "not made"
    cfg = _reid_config(tmp_path, sim_small, out)
    args = [a for v in sets for a in ("--set", v.format(missing=missing, real=sim_small))]
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", cfg, *args, "--quiet"),
                   *(n.format(missing=missing) for n in needle))
    _absent(out)


def test_a_dataset_folder_the_settings_do_not_read_may_be_missing(sim_small, tmp_path):
    """check_roots refuses only the folders the settings read: real-only with the recipe's remix_root not made yet
    passes, and its real+remix does not; an entry of more_generated counts only for a mixed setting."""
    from reid.ablation import MoreGenerated, check_roots

    missing = str(tmp_path / "not made")
    cfg = AblationConfig(real_root=str(sim_small), remix_root=missing, virtual_root=missing,
                         more_generated=[MoreGenerated(root=missing, kind="remix", share=0.1)])
    check_roots(cfg, {"real"})
    with pytest.raises(UserError, match="remix_root: "):
        check_roots(cfg, {"real", "real+remix"})
    with pytest.raises(UserError, match="virtual_root: "):
        check_roots(cfg, {"virtual"})
    with pytest.raises(UserError, match=r"more_generated\[0\].root: "):
        check_roots(AblationConfig(real_root=str(sim_small), remix_root=str(sim_small),
                                   more_generated=cfg.more_generated), {"real+remix"})


@pytest.mark.parametrize("override, needle", [
    ("train.batch=0", "train.batch: 0: must be above 0"), ("train.steps=-5", "train.steps: -5"),
    ("train.lr=-1", "train.lr: -1.0: must be above 0"), ("train.device=gpu", "'gpu' is not a device"),
    ("train.sample_every=0", "train.sample_every: 0: must be above 0"),
])
def test_train_stage1_refuses_bad_values_before_a_run_folder(sim_small, tmp_path, capsys, override, needle):
    cfg = tmp_path / "s1.yaml"
    save_config(tiny_stage1(sim_small), cfg)
    rc, o, e = run_main(capsys, "train", "stage1", "-c", cfg, "--set", override, "--out", tmp_path / "runs", "--quiet")
    one_line_error(rc, o, e, needle, f"--set '{override}'")
    _absent(tmp_path / "runs")


def test_a_device_is_checked_against_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad, needle in (("bogus", "not a device"), ("cuda:x", "not a device"), (NO_GPU, "GPU")):
        with pytest.raises(UserError, match=needle):
            resolve_device(bad)
    with pytest.raises(UserError, match="'tpu' is not a device"):
        load_config(Stage1Config, None, ["train.device=tpu"])


def test_filter_and_cutpaste_refuse_a_device_before_writing(sim_small, tmp_path, capsys, tiny_stages):
    out = tmp_path / "cp"
    one_line_error(*run_main(capsys, "cutpaste", "--root", sim_small, "--out", out, "--size", "64x32", "--plates",
                             "generator", "--stage1-run", tiny_stages[0], "--device", NO_GPU, "--quiet"), NO_GPU)
    _absent(out)
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    one_line_error(*run_main(capsys, "filter", "--model", model, "--real-root", sim_small, "--generated", sim_small,
                             "--out", out, "--size", "64x32", "--device", "bogus", "--quiet"), "'bogus'")
    _absent(out)


@pytest.mark.parametrize("out", ["", ".", ".."])
def test_simulate_refuses_no_folder_or_the_folder_it_stands_in(tmp_path, capsys, monkeypatch, out):
    here = tmp_path / "here"
    here.mkdir()
    (here / "keep.txt").write_text("mine\n")
    monkeypatch.chdir(here)
    one_line_error(*run_main(capsys, "simulate", "--out", out, "--ids", "4", "--size", "64x32", "--overwrite",
                             "--quiet"), "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"] and (here / "keep.txt").read_text() == "mine\n"


def test_sample_and_eval_refuse_bad_counts_and_a_file_for_out(tiny_stages, tmp_path, capsys):
    s1, _, s2 = tiny_stages
    for args, defect in ((["sample", "--run", s2, "--cols", "2"], "use 3 to 64"),
                         (["sample", "--run", s2, "--cols", "100000"], "100000: use 3 to 64"),
                         (["sample", "--run", s2, "--rows", "-1"], "use 1 to 64"),
                         (["eval", "stage1", "--run", s1, "--pairs", "0"], "use 1 or more"),
                         (["eval", "stage1", "--run", s1, "--limit", "0"], "use 1 or more")):
        rc, o, e = run_main(capsys, *args, "--out", tmp_path / "x")
        one_line_error(rc, o, e, defect)
        _absent(tmp_path / "x")
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    for args in (["sample", "--run", s2], ["eval", "stage1", "--run", s1, "--limit", "4", "--pairs", "1"]):
        one_line_error(*run_main(capsys, *args, "--out", afile), "is a file, not a folder")
        assert afile.read_text() == "not a folder\n"
    one_line_error(*run_main(capsys, "eval", "stage1", "--run", s1, "--data", tmp_path / "none", "--out",
                             tmp_path / "x"), "no such dataset folder", "--data")
    _absent(tmp_path / "x")


def test_eval_on_a_held_out_split_of_one_person_is_refused_before_writing(tiny_stages, tmp_path, capsys):
    from generator.simmarket.simulate import simulate

    simulate(tmp_path / "one", 3, seed=0, size=(64, 32), progress=False)  # 2 training identities, 1 held out
    rc, o, e = run_main(capsys, "eval", "stage1", "--run", tiny_stages[0], "--data", tmp_path / "one", "--out",
                        tmp_path / "x", "--pairs", "1", "--limit", "4")
    one_line_error(rc, o, e, "fewer than 2 different", "more test identities")
    _absent(tmp_path / "x")


def test_reference_reid_refuses_unknown_names_before_writing(tmp_path, capsys):
    cfg = tmp_path / "rr.yaml"
    out = tmp_path / "out"
    cfg.write_text(f"out: {out}\nsim_ids: 4\nseeds: [0]\nrecipes:\n  - {{name: real}}\n"
                   "  - {name: cutpaste, setting: real+remix, generated: cutpaste}\n")
    for flag in ("--only", "--fresh"):
        one_line_error(*run_main(capsys, "reference-reid", cfg, flag, "Real", "--quiet"),
                       "no recipe named 'Real'", "the config's recipes are real, cutpaste")
        _absent(out)
    one_line_error(*run_main(capsys, "reference-reid", cfg, "--set", "anchor=cutpaste", "--quiet"),
                   "not a real-only recipe", "use one of real")


def test_pipeline_refuses_bad_values_and_a_foreign_folder_before_writing(tmp_path, capsys):
    out = tmp_path / "demo"
    for override, needle in (("sim_ids=1", "sim_ids: 1"), ("sim_train_cameras=9", "sim_train_cameras: 9"),
                             ("eval_pairs=0", "eval_pairs: 0"), ("reference_recipe=bogus", "reference_recipe 'bogus'"),
                             ("set=[reid:train.model=bogusnet]", "'bogusnet': unknown to torchreid"),
                             (f"reference={tmp_path / 'empty'}", "no reference checkpoints here")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        one_line_error(*run_main(capsys, "pipeline", "--set", f"out={out}", "--set", override, "--quiet"), needle)
        _absent(out)
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    one_line_error(*run_main(capsys, "pipeline", "--set", f"out={out}", "--quiet"), "not a pipeline's output")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_reference_refuses_a_snapshot_name_and_a_rescore_of_nothing(tmp_path, capsys):
    one_line_error(*run_main(capsys, "reference", "--set", f"out={tmp_path / 'ref'}", "--set", "ship_stage1=bogus.pt",
                             "--quiet"), "ship_stage1: 'bogus.pt'", "snapshot.pt")
    _absent(tmp_path / "ref")
    line = one_line_error(*run_main(capsys, "reference", "--set", f"out={tmp_path / 'ref'}", "--set",
                                    f"package={tmp_path / 'pkg'}", "--rescore", "--quiet"), "nothing shipped here")
    assert "--from-scratch" not in line


def test_a_build_reads_a_stage2_run_whose_stage1_is_a_snapshot_file(tiny_stages, tmp_path):
    """Stage II may name its stage I by a snapshot file (a shipped reference's stage1.pt): the builder reads that
    file's generator and discriminator, not FILE/snapshot.pt."""
    s1, pose, s2 = tiny_stages
    moved = tmp_path / "s2"
    shutil.copytree(s2, moved)
    snap = tmp_path / "stage1.pt"  # as a reference ships it: the snapshot with the discriminator inside
    stage1 = torch.load(s1 / "snapshot.pt", map_location="cpu", weights_only=False)
    stage1["D"] = torch.load(s1 / "state.pt", map_location="cpu", weights_only=False)["D"]
    torch.save(stage1, snap)
    ckpt = torch.load(moved / "snapshot.pt", map_location="cpu", weights_only=False)
    ckpt["config"]["stage1_run"] = str(snap)  # the run's own config points at the file
    torch.save(ckpt, moved / "snapshot.pt")
    builder = Builder(load_config(BuildConfig, None, [f"stage2_run={moved}", f"out={tmp_path / 'vm'}"]))
    assert builder.s2cfg.stage1_run == str(snap) and builder.D is not None  # the file's own discriminator
    ckpt["config"]["stage1_run"] = str(s1 / "snapshot.pt")  # the run's snapshot.pt: its state.pt holds D
    torch.save(ckpt, moved / "snapshot.pt")
    assert Builder(load_config(BuildConfig, None, [f"stage2_run={moved}", f"out={tmp_path / 'vm'}"])).D is not None
    with pytest.raises(UserError, match="stage2_run: not set"):
        Builder(BuildConfig())


def test_the_wrong_kind_of_run_or_a_file_for_a_folder_is_named(tiny_stages, sim_small, tmp_path, capsys):
    s1, pose, s2 = tiny_stages
    one_line_error(*run_main(capsys, "sample", "--run", s1, "--out", tmp_path / "x"),
                   "a stage-I checkpoint, where a stage-II run is needed")
    one_line_error(*run_main(capsys, "cutpaste", "--root", sim_small, "--out", tmp_path / "x", "--size", "64x32",
                             "--plates", "inpaint", "--stage1-run", s2 / "snapshot.pt", "--quiet"),
                   "a stage-II checkpoint, where a stage-I run is needed")
    _absent(tmp_path / "x")
    afile = tmp_path / "afile"
    afile.write_text("not a dataset\n")
    one_line_error(*run_main(capsys, "check", "--root", afile, "--quiet"), "is a file, not a folder")
    one_line_error(*run_main(capsys, "browse", afile, "--out", tmp_path / "g"), "is a file, not a folder")
    line = one_line_error(*run_main(capsys, "cutpaste", "--root", sim_small, "--out", tmp_path / "x", "--size",
                                    "64x32", "--plates", "inpaint", "--stage1-run", afile, "--quiet"),
                          "not a readable checkpoint")
    assert "delete" not in line  # a mistyped path is not the user's file to delete


def test_a_checkpoint_that_is_no_runs_snapshot_is_named(tiny_stages, sim_small, tmp_path, capsys):
    s1, _, _ = tiny_stages
    one_line_error(*run_main(capsys, "cutpaste", "--root", sim_small, "--out", tmp_path / "x", "--size", "64x32",
                             "--plates", "inpaint", "--stage1-run", s1 / "state.pt", "--quiet"),
                   "not the snapshot of a run")
    _absent(tmp_path / "x")
    with pytest.raises(UserError, match="finetune_epochs: -1"):
        load_config(AblationConfig, None, ["finetune_epochs=-1"])


def test_reid_ablate_refuses_a_folder_that_holds_other_files(sim_small, copy, tmp_path, capsys):
    """An out that holds files but no ablation's config.yaml (a dataset, another job's folder) is never written into:
    the runs and tables would land among the user's own files."""
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", _reid_config(tmp_path, sim_small, copy), "--quiet"),
                   str(copy), "not a re-ID ablation's output")
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("train: {steps: 2}\n")  # another job's config
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", _reid_config(tmp_path, sim_small, tmp_path / "other"),
                             "--quiet"), "not a re-ID ablation's output")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["config.yaml"]


def test_eval_refuses_another_kind_of_run_and_other_sized_data_leaving_no_out(tiny_stages, tmp_path, capsys):
    from generator.simmarket.simulate import simulate

    s1, _, s2 = tiny_stages
    out = tmp_path / "x" / "eval"  # two folders deep: neither may be left behind
    one_line_error(*run_main(capsys, "eval", "stage1", "--run", s2, "--out", out),
                   "a stage-II checkpoint, where a stage-I run is needed")
    _absent(tmp_path / "x")
    one_line_error(*run_main(capsys, "eval", "stage2", "--run", s1, "--out", out),
                   "a stage-I checkpoint, where a stage-II run is needed")
    _absent(tmp_path / "x")
    simulate(tmp_path / "big", 4, seed=0, size=(128, 64), progress=False)  # the run trained at 64x32
    line = one_line_error(*run_main(capsys, "eval", "stage1", "--run", s1, "--data", tmp_path / "big", "--out", out,
                                    "--pairs", "1", "--limit", "4"), "image is 128x64", "data size is 64x32")
    assert "keypoint" not in line and "CSV" not in line  # the images are the defect, not their keypoint file
    _absent(tmp_path / "x")


def test_cutpaste_refuses_a_device_that_is_none_with_image_plates(copy, tmp_path, capsys):
    one_line_error(*run_main(capsys, "cutpaste", "--root", copy, "--out", tmp_path / "cp", "--device", "gpu",
                             "--quiet"), "'gpu'", "not a device")
    _absent(tmp_path / "cp")


def test_package_only_refuses_names_and_an_out_without_runs(tmp_path, capsys):
    cfg = tmp_path / "rr.yaml"
    out, package = tmp_path / "out", tmp_path / "pkg"
    cfg.write_text(f"out: {out}\npackage: {package}\nsim_ids: 4\nseeds: [0]\nrecipes:\n  - {{name: real}}\n"
                   "  - {name: cutpaste, setting: real+remix, generated: cutpaste}\n")
    for flag in ("--only", "--world", "--fresh"):
        one_line_error(*run_main(capsys, "reference-reid", cfg, "--package-only", flag, "real", "--quiet"),
                       f"{flag} does not apply to --package-only")
    one_line_error(*run_main(capsys, "reference-reid", cfg, "--package-only", "--quiet"),
                   "no finished run of this config here")
    _absent(out)
    _absent(package)
    afile = tmp_path / "file.txt"
    afile.write_text("mine\n")
    one_line_error(*run_main(capsys, "reference-reid", cfg, "--package-only", "--set", f"out={afile}", "--quiet"),
                   f"{afile}: is a file, not a folder; choose another out")
    _absent(package)


def test_generated_images_given_as_the_other_kind_are_refused_before_writing(sim_small, tmp_path, capsys):
    """A folder whose manifest says its images show new identities, given as remixes of the real ones (or the other
    way round), would train every image under a class that is not the person shown."""
    gen = tmp_path / "gen"
    (gen / "bounding_box_train").mkdir(parents=True)
    for src in sorted((sim_small / "bounding_box_train").glob("*.jpg"))[:2]:
        shutil.copy(src, gen / "bounding_box_train" / src.name)
    names = sorted(p.name for p in (gen / "bounding_box_train").iterdir())
    for origin, given, setting, fix in (("virtual", "remix_root", "real+remix", "give that folder as virtual_root"),
                                        ("cutpaste", "virtual_root", "real+new", "give that folder as remix_root")):
        (gen / "manifest.csv").write_text("path,origin\n" + "".join(f"bounding_box_train/{n},{origin}\n"
                                                                  for n in names))
        out = tmp_path / "reid"
        rc, o, e = run_main(capsys, "reid", "ablate", "-c", _reid_config(tmp_path, sim_small, out), "--set",
                            f"settings=[{setting}]", "--set", f"{given}={gen}", "--quiet")
        one_line_error(rc, o, e, names[0], f"origin {origin!r}", f"but {given} takes its folder as", fix)
        _absent(out)


def test_simulate_overwrite_replaces_a_simmarket_never_other_data(tmp_path, capsys):
    data = tmp_path / "Market-1501"
    (data / "bounding_box_train").mkdir(parents=True)
    (data / "bounding_box_train" / "0001_c1s1_000001_00.jpg").write_bytes(b"a real image")
    one_line_error(*run_main(capsys, "simulate", "--out", data, "--ids", "4", "--size", "64x32", "--overwrite",
                             "--quiet"), "not a SimMarket dataset (no simmarket.json), so --overwrite does not delete")
    assert (data / "bounding_box_train" / "0001_c1s1_000001_00.jpg").read_bytes() == b"a real image"


@pytest.mark.parametrize("layout", ["market1501", "cuhk03"])
def test_simulate_overwrite_keeps_what_the_user_put_in_a_simmarket(tmp_path, capsys, layout):
    """--overwrite replaces the files SimMarket wrote; a SimMarket folder that also holds the user's own files (notes,
    a dataset made inside it) is refused, and those files stay. Without them it is replaced."""
    data = tmp_path / "sim"
    simulate(data, 4, size=(64, 32), progress=False, layout=layout)
    split = next(p for p in sorted(data.iterdir()) if p.is_dir())
    (data / "notes.txt").write_text("mine\n")
    (split / "x").mkdir()
    (split / "x" / "manifest.csv").write_text("a dataset made inside it\n")
    args = ("simulate", "--out", data, "--ids", "4", "--size", "64x32", "--layout", layout, "--overwrite", "--quiet")
    one_line_error(*run_main(capsys, *args), f"{data}: holds {split.name}/x/manifest.csv, notes.txt, which "
                   "SimMarket did not write; --overwrite replaces a SimMarket and never other data")
    assert (data / "notes.txt").read_text() == "mine\n" and (split / "x" / "manifest.csv").is_file()
    (data / "notes.txt").unlink()
    shutil.rmtree(split / "x")
    (split / "market-annotation-mine.csv").write_text("mine\n")  # not where simulate writes its keypoints
    one_line_error(*run_main(capsys, *args), f"holds {split.name}/market-annotation-mine.csv, which SimMarket")
    (split / "market-annotation-mine.csv").unlink()
    (data / ".market-annotation-train.csv.partial").write_text("")  # a killed `vmarket keypoints`: its own
    rc, _, _ = run_main(capsys, *args)
    assert rc == 0 and (data / "simmarket.json").is_file()
    assert not (data / ".market-annotation-train.csv.partial").exists()


@pytest.mark.parametrize("key", ["out", "package", "figures"])
def test_the_reference_job_refuses_paths_it_could_not_write_before_training(tmp_path, capsys, key):
    """`vmarket reference` trains for hours before it writes its package and figures: a path it could not write
    is refused first, in one line, and nothing is made."""
    afile = tmp_path / "file.txt"
    afile.write_text("mine\n")
    paths = {"out": tmp_path / "runs", "package": tmp_path / "pkg", "figures": tmp_path / "figs", key: afile / "sub"}
    sets = [a for k, v in paths.items() for a in ("--set", f"{k}={v}")]
    one_line_error(*run_main(capsys, "reference", "tests/configs/reference_tiny.yaml", *sets, "--quiet"),
                   f"{afile}: is a file, not a folder, so {afile / 'sub'} cannot be made; choose another {key}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_the_reference_job_refuses_an_out_that_holds_other_files(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    one_line_error(*run_main(capsys, "reference", "tests/configs/reference_tiny.yaml", "--set", f"out={out}",
                             "--set", f"package={tmp_path / 'pkg'}", "--set", "figures=''", "--quiet"),
                   "holds files but no reference run")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and not (tmp_path / "pkg").exists()


def test_a_path_in_the_home_folder_is_expanded_where_the_shell_does_not(tmp_path, capsys, monkeypatch):
    """`--out=~/x` and `out: ~/x` reach vmarket with the tilde (the shell expands neither): they mean the home
    folder, never a folder named `~` under the current one."""
    from generator.config import load_config
    from reid.ablation import AblationConfig

    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir(), here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    assert load_config(AblationConfig, None, ["out=~/runs"]).out == str(home / "runs")
    rc, _, err = run_main(capsys, "simulate", "--out=~/sim", "--ids", "4", "--size", "64x32", "--quiet")
    assert rc == 0, err
    assert (home / "sim" / "simmarket.json").is_file() and not list(here.iterdir())


def test_an_out_that_is_or_holds_an_input_is_refused_without_advice_to_delete_it(sim_small, tiny_stages, tmp_path,
                                                                                 capsys):
    """`--out` naming the input (or a folder above it) must not get "not empty; delete it": that deletes the input."""
    s1, _, s2 = tiny_stages
    data = tmp_path / "data"
    shutil.copytree(sim_small, data / "sim")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cases = [
        (["cutpaste", "--root", data / "sim", "--out", data / "sim", "--size", "64x32", "--quiet"],
         "the --root folder itself"),
        (["cutpaste", "--root", data / "sim", "--out", data, "--size", "64x32", "--quiet"],
         "the --root folder; choose a --out outside it"),
        (["filter", "--model", tmp_path / "state.pt", "--real-root", data / "sim", "--generated", data / "sim",
          "--out", data / "sim", "--quiet"], "the --generated folder itself"),
        (["browse", data / "sim", "--out", data / "sim", "--quiet"], "the dataset folder itself"),
        (["sample", "--run", s2, "--out", s2], "the --run folder itself"),
        (["eval", "stage1", "--run", s1, "--data", data / "sim", "--out", data], "the --data folder; choose a --out"),
        # inside a dataset: its scan would read the output, and replacing the dataset would delete it
        (["cutpaste", "--root", data / "sim", "--out", data / "sim" / "bounding_box_train" / "x", "--size", "64x32",
          "--quiet"], f"lies inside {data / 'sim'}, the --root folder, a dataset that would then hold "
         "it; choose a --out outside it"),
        (["filter", "--model", tmp_path / "state.pt", "--real-root", data / "sim", "--generated", data / "sim",
          "--out", data / "sim" / "kept", "--quiet"], "the --generated folder, a dataset"),
        (["browse", data / "sim", "--out", data / "sim" / "gallery", "--quiet"], "the dataset folder, a dataset"),
        (["eval", "stage1", "--run", s1, "--data", data / "sim", "--out", data / "sim" / "eval"],
         "the --data folder, a dataset"),
    ]
    for argv, defect in cases:
        rc, out, err = run_main(capsys, *argv)
        one_line_error(rc, out, err, defect)
        assert "delete" not in err and "empty the folder" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_filter_refuses_a_stray_work_folder_before_it_scores_anything(sim_small, tmp_path, capsys):
    (tmp_path / ".kept.partial").mkdir()
    (tmp_path / ".kept.partial" / "mine.txt").write_text("mine\n")
    rc, out, err = run_main(capsys, "filter", "--model", tmp_path / "state.pt", "--real-root", sim_small,
                            "--generated", sim_small, "--out", tmp_path / "kept", "--quiet")
    one_line_error(rc, out, err, ".kept.partial: exists and is not an unfinished vmarket filter output")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept.partial"]


def test_status_refuses_the_flags_of_a_run_and_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "rr.yaml"
    out = tmp_path / "out"
    cfg.write_text(f"out: {out}\npackage: {tmp_path / 'pkg'}\nsim_ids: 4\nseeds: [0]\nrecipes:\n  - {{name: real}}\n"
                   "  - {name: cutpaste, setting: real+remix, generated: cutpaste}\n")
    for flags in (["--package"], ["--package-only"], ["--only", "real"], ["--fresh", "real"], ["--jobs", "2"]):
        one_line_error(*run_main(capsys, "reference-reid", cfg, "--status", *flags, "--quiet"),
                       f"{flags[0]} does not apply to --status")
    code, text, _ = run_main(capsys, "reference-reid", cfg, "--status", "--no-shipped")
    assert code in (0, None) and text.startswith(f"{out}: 0 of 4 runs finished (here)")
    assert "- reference/full: real (seed 0); cutpaste (seed 0)" in text
    # a selection that names nothing, seeds given twice or none, and a table to reuse that is not there
    for flags, defect in ((["--world", ""], "--world '': names nothing; give NAME,NAME or drop --world"),
                          (["--world", ","], "--world ',': names nothing"),
                          (["--set", "seeds=[]"], "seeds: []: give at least one seed, none twice"),
                          (["--set", "seeds=[0,0]"], "seeds: [0, 0]: give at least one seed, none twice"),
                          (["--set", f"reuse={tmp_path / 'none'}"], f"reuse: {tmp_path / 'none'}: no such folder")):
        one_line_error(*run_main(capsys, "reference-reid", cfg, "--status", *flags, "--quiet"), defect)
    one_line_error(*run_main(capsys, "reference-reid", cfg, "--only", " , ", "--quiet"), "--only ' , ': names nothing")
    _absent(out)


def test_check_names_the_size_flag_for_data_of_another_size(tmp_path, capsys):
    simulate(tmp_path / "small", 4, seed=0, size=(64, 32), progress=False)
    one_line_error(*run_main(capsys, "check", "--root", tmp_path / "small", "--quiet"),
                   "image is 64x32 (HxW) but the data size is 128x64", "pass --size 64x32")
    rc, out, err = run_main(capsys, "check", "--root", tmp_path / "small", "--size", "64x32", "--quiet")
    assert "image is 64x32" not in err  # that size is what it checks now (the keypoints are another matter)


def test_a_folder_whose_writer_was_stopped_points_to_its_unfinished_work(tmp_path, capsys):
    """`check` of a cut-and-paste output killed before its rename: not only "no such folder", but where the work is
    and how it completes."""
    (tmp_path / ".pasted.partial" / "bounding_box_train").mkdir(parents=True)
    one_line_error(*run_main(capsys, "check", "--root", tmp_path / "pasted", "--quiet"),
                   f"{tmp_path / 'pasted'}: no such folder, only .pasted.partial beside it", "run that command again")
    one_line_error(*run_main(capsys, "check", "--root", tmp_path / "other", "--quiet"),
                   f"{tmp_path / 'other'}: no such folder;")
    from generator.io import folder_defect

    assert folder_defect(tmp_path / ("a" * 250)) == "no such folder"  # no room for .NAME.partial: no error either


def test_an_image_of_too_many_pixels_is_refused_in_one_line(sim_small, tmp_path, capsys, monkeypatch):
    """Pillow refuses to decode an image far larger than its pixel limit (a decompression bomb): the commands that
    read images name the file in one line, as for any unreadable image. The limit is lowered here, so that the
    dataset's own 64x32 images exceed it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow raises beyond twice the limit: 2,048 > 1,000
    one_line_error(*run_main(capsys, "check", "--root", sim_small, "--quiet"), "unreadable image (over Pillow's "
                   "limit of pixels: far too large for an image of a person); replace or remove the file")
    one_line_error(*run_main(capsys, "browse", sim_small, "--out", tmp_path / "gallery", "--quiet"),
                   "over Pillow's limit of pixels")
    assert not (tmp_path / "gallery").exists()


def test_a_body_part_crop_larger_than_the_images_is_refused_at_load(tmp_path, capsys):
    """model.roi_size beyond the image size would build a model of tens of GB before the first step (the process is
    killed without a word): the config is refused when read, and no run directory is made."""
    with pytest.raises(UserError, match=r"model.roi_size: 1000: larger than the images \(64x32\)"):
        load_config(Stage1Config, None, ["data.size=[64,32]", "model.roi_size=1000"])
    assert load_config(Stage1Config, None, ["data.size=[64,32]", "model.roi_size=64"]).model.roi_size == 64
    one_line_error(*run_main(capsys, "train", "stage1", "-c", "configs/demo/stage1.yaml", "--set",
                             "model.roi_size=1000", "--run-dir", tmp_path / "run", "--quiet"), "model.roi_size: 1000")
    assert not (tmp_path / "run").exists()


def test_check_refuses_a_test_split_that_breaks_the_reid_protocol(sim_small, tmp_path, capsys):
    """A training identity in the query (a test of what the model trained on), and a query identity with no gallery
    image (no search can find it), are refused by check, naming the image."""
    data = tmp_path / "sim"
    shutil.copytree(sim_small, data)
    train = sorted((data / "bounding_box_train").glob("*.jpg"))[0]
    rows = (data / "market-annotation-train.csv").read_text().splitlines()
    row = next(line for line in rows if line.startswith(train.name))
    shutil.copy(train, data / "query" / train.name)
    with open(data / "market-annotation-test.csv", "a") as f:
        f.write(row + "\n")
    one_line_error(*run_main(capsys, "check", "--root", data, "--size", "64x32", "--quiet"),
                   f"{data / 'query' / train.name}: query image of identity {int(train.name[:4])}, which the "
                   "training split holds too")
    (data / "query" / train.name).unlink()
    assert run_main(capsys, "check", "--root", data, "--size", "64x32", "--quiet")[0] in (0, None)
    query = sorted((data / "query").glob("*.jpg"))[0]
    gallery = sorted((data / "bounding_box_test").glob(f"{query.name[:4]}_*.jpg"))
    # its gallery images without keypoint rows, left out by --skip-missing-keypoints: still there to be found
    csv = data / "market-annotation-test.csv"
    csv.write_text("".join(line + "\n" for line in csv.read_text().splitlines()
                           if not any(line.startswith(g.name) for g in gallery)))
    rc, out, err = run_main(capsys, "check", "--root", data, "--size", "64x32", "--skip-missing-keypoints", "--quiet")
    assert rc in (0, None) and out.startswith("ok:"), err
    for image in gallery:
        image.unlink()
    one_line_error(*run_main(capsys, "check", "--root", data, "--size", "64x32", "--quiet"),
                   f"query image of identity {int(query.name[:4])}, of which the gallery holds no image")


def test_check_refuses_a_query_only_its_own_camera_holds_in_the_gallery(sim_small, tmp_path, capsys):
    """The evaluation leaves out a query's same-identity gallery images from its own camera, so a query whose gallery
    images all come from that camera can never be found: check names it (before, any gallery image passed)."""
    data = tmp_path / "sim"
    shutil.copytree(sim_small, data)
    query = sorted((data / "query").glob("*.jpg"))[0]
    cam = query.name[5:7]  # Market names: 0001_c1s1_000151_01.jpg
    assert run_main(capsys, "check", "--root", data, "--size", "64x32", "--quiet")[0] in (0, None)
    csv = data / "market-annotation-test.csv"
    rows = csv.read_text()
    others = [g for g in sorted((data / "bounding_box_test").glob(f"{query.name[:4]}_*.jpg")) if g.name[5:7] != cam]
    assert others, "the fixture's query identity has gallery images from another camera"
    for g in others:  # the same images, as if the query's camera had taken them
        moved = g.name[:5] + cam + g.name[7:]
        g.rename(g.with_name(moved))
        rows = rows.replace(g.name + ":", moved + ":")
    csv.write_text(rows)
    one_line_error(*run_main(capsys, "check", "--root", data, "--size", "64x32", "--quiet"),
                   f"{query}: query image of identity {int(query.name[:4])} from camera {int(cam[1])}, whose gallery "
                   "images all come from that camera too")


def test_a_folder_by_the_keypoint_csvs_name_is_named_as_such(sim_small, tmp_path, capsys):
    data = tmp_path / "sim"
    shutil.copytree(sim_small, data)
    (data / "market-annotation-train.csv").unlink()
    (data / "market-annotation-train.csv").mkdir()
    one_line_error(*run_main(capsys, "check", "--root", data, "--size", "64x32", "--quiet"),
                   f"{data / 'market-annotation-train.csv'}: not a file, where the keypoint CSV belongs")


def test_a_build_inside_the_data_it_reads_is_refused_before_it_starts(sim_small, tiny_stages, tmp_path):
    """The build reads the data its stage II (or stage I) trained on where the config names none: an out inside that
    dataset is refused before anything is made there."""
    out = sim_small / "vm"
    with pytest.raises(UserError, match=f"{out}: lies inside {sim_small}, the data_root folder, a dataset"):
        build(BuildConfig(stage2_run=str(tiny_stages[2]), out=str(out), identities=2, images_per_id=2),
              progress=False)
    assert not out.exists()
