"""Files the project wrote and a user kept: one cut short by a kill, edited by hand or not the JSON object it was is
refused in one line naming it and the fix (exit 2), never a traceback; nothing else is touched."""
import json

import pytest
from conftest import one_line_error, run_main

from augment.makers.build_config import BuildConfig
from augment.makers.builder import build
from augment.makers.cutpaste import cut_paste
from generator.config import load_config
from generator.errors import UserError
from generator.io import read_json_object
from generator.shipped import check_installed_from

DAMAGE = {"cut short": '{"config_hash": "ab', "a list": "[1, 2]", "empty": ""}


@pytest.mark.parametrize("damage", DAMAGE)
def test_read_json_object_names_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "x.json"
    path.write_text(DAMAGE[damage])
    with pytest.raises(UserError, match=r"x.json: not (readable JSON|the JSON object vmarket writes).*; do this"):
        read_json_object(path, "do this")
    path.write_text('{"a": 1}')
    assert read_json_object(path, "do this") == {"a": 1}


def test_a_damaged_cutpaste_json_is_one_line(sim_small, tmp_path, capsys):
    out = tmp_path / "cp"
    cut_paste(sim_small, out, size=(64, 32), progress=False)
    argv = ["cutpaste", "--root", str(sim_small), "--out", str(out), "--size", "64x32", "--quiet"]
    assert run_main(capsys, *argv)[0] == 0  # already complete
    made = json.loads((out / "cutpaste.json").read_text())
    (out / "cutpaste.json").write_text(json.dumps(made)[:40])
    one_line_error(*run_main(capsys, *argv), "cutpaste.json: not readable JSON", f"delete {out}")
    del made["summary"]
    (out / "cutpaste.json").write_text(json.dumps(made))
    one_line_error(*run_main(capsys, *argv), "cutpaste.json: no summary", f"delete {out}")


def test_a_damaged_build_json_is_one_line(tiny_stages, tmp_path, capsys):
    out = tmp_path / "vm"
    sets = [f"stage2_run={tiny_stages[2]}", f"out={out}", "identities=2", "images_per_id=2", "quality_keep=1.0"]
    build(load_config(BuildConfig, None, sets), progress=False)
    (out / "build.json").write_text("[]")
    argv = ["build", "-c", "/dev/null", "--quiet", *[a for s in sets for a in ("--set", s)]]
    one_line_error(*run_main(capsys, *argv), "build.json: not the JSON object vmarket writes", f"delete {out}")


def test_a_damaged_install_stamp_is_one_line(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "reference.json").write_text('{"sha256": ')
    with pytest.raises(UserError, match="reference.json: not readable JSON .*; delete .*gen"):
        check_installed_from([tmp_path / "gen"])


@pytest.mark.parametrize("name, damage", [
    ("simmarket.json", lambda p: p.write_text(p.read_text()[:30])),
    ("identities.json", lambda p: p.write_text('[{"colour": 1}]')),
    ("manifest.csv", lambda p: p.write_text("path,split\nx.jpg,query\n")),
    ("poses.npz", lambda p: p.write_bytes(p.read_bytes()[:200])),
])
def test_a_damaged_simmarket_is_one_line_naming_the_file(tiny_stages, sim_small, tmp_path, capsys, name, damage):
    """`vmarket eval stage1` re-renders swaps from the SimMarket's own files: a damaged one is named, with the fix."""
    import shutil

    from generator.simmarket.simulate import SimMarket

    root = tmp_path / "sim"
    shutil.copytree(sim_small, root)
    SimMarket(root)  # whole, it loads
    damage(root / name)
    with pytest.raises(UserError, match=f"{name}: not as `vmarket simulate` wrote it"):
        SimMarket(root)
    rc, out, err = run_main(capsys, "eval", "stage1", "--run", str(tiny_stages[0]), "--data", str(root), "--pairs", "4",
                            "--limit", "8", "--out", str(tmp_path / "eval"))
    one_line_error(rc, out, err, f"{name}: not as `vmarket simulate` wrote it", "simulate")


@pytest.mark.parametrize("which, damage", [
    ("stage1", lambda s: s["G"].pop(next(iter(s["G"])))),  # a weight the model needs is missing
    ("stage1", lambda s: s["config"]["model"].update(channels=s["config"]["model"]["channels"] * 2)),  # shapes differ
    ("pose", lambda s: s["model"].update({k: v[:1] for k, v in s["model"].items()})),
    ("stage2", lambda s: s.pop("dims")),
])
def test_a_snapshot_that_does_not_fit_the_model_is_one_line(tiny_stages, tmp_path, which, damage):
    """A snapshot from another version of the models, or edited, is refused naming it, not with a state-dict
    traceback."""
    import shutil

    import torch

    from generator.api import DisentangledModel, Sampler
    from generator.io import atomic_save

    runs = {}
    for name, run in zip(("stage1", "pose", "stage2"), tiny_stages, strict=True):
        runs[name] = tmp_path / name
        shutil.copytree(run, runs[name])

    def load():
        DisentangledModel.load(runs["stage1"], pose=runs["pose"])
        Sampler.load(runs["stage2"])

    load()  # as trained, they load
    snap = torch.load(runs[which] / "snapshot.pt", map_location="cpu", weights_only=True)
    damage(snap)
    atomic_save(snap, runs[which] / "snapshot.pt")
    kind = {"stage1": "stage-I", "pose": "pose-AE", "stage2": "stage-II"}[which]
    with pytest.raises(UserError, match=f"{which}/snapshot.pt: its config or weights do not fit this version's "
                                        f"{kind} model .*train the {kind} run again"):
        load()


def test_a_simmarket_manifest_without_a_column_its_swap_pairs_need_is_one_line(sim_small, tmp_path):
    import shutil

    import pandas as pd

    from generator.simmarket.simulate import SimMarket

    root = tmp_path / "sim"
    shutil.copytree(sim_small, root)
    df = pd.read_csv(root / "manifest.csv")
    df.drop(columns=["visible_joints"]).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(UserError, match=r"manifest.csv: not as `vmarket simulate` wrote it \(KeyError: .visible_j"):
        SimMarket(root)


def test_an_install_stamp_without_its_checkpoints_sha256_is_one_line(tmp_path):
    from augment.jobs.report import _installed

    stamp = tmp_path / "reference.json"
    stamp.write_text(json.dumps({"reference": "x"}))
    with pytest.raises(UserError, match="reference.json: no sha256 of the installed checkpoints; delete it"):
        _installed(stamp)
    stamp.write_text(json.dumps({"sha256": {"stage1.pt": "ab"}}))
    assert _installed(stamp) == {"stage1.pt": "ab"}
