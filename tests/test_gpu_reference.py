"""The GPU-window job (benchmarks/gpu_reference.py) on the CPU: a time limit saves a resumable state, the runs
travel in bounded files (generator.training.transfer), and the next window continues them."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_stage1

from augment.cli import main as vmarket
from generator.errors import UserError
from generator.simmarket.simulate import simulate
from generator.training import stage1
from generator.training.transfer import INDEX, MIB, pack, unpack

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_reference", REPO / "benchmarks" / "gpu_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def half_run(tmp_path_factory):
    """A tiny stage-I run stopped at step 4 of 8, and the same run trained through."""
    base = tmp_path_factory.mktemp("transfer")
    simulate(base / "sim", 6, seed=3, size=(64, 32), progress=False)
    cfg = tiny_stage1(base / "sim", **{"train.steps": 8, "train.snapshot_every": 4})
    stage1.train(cfg, base / "half", progress=False, stop_after=4)
    stage1.train(cfg, base / "whole", progress=False)
    return cfg, base


def _weights(run):
    return torch.load(run / "snapshot.pt", map_location="cpu", weights_only=True)["G"]


def test_full_pack_resumes_exactly(half_run, tmp_path):
    cfg, base = half_run
    index = pack(base / "half", tmp_path / "packed", part_mib=0.5)
    assert index["level"] == "full" and len(index["parts"]) > 1
    assert all((tmp_path / "packed" / p["name"]).stat().st_size <= 0.5 * MIB for p in index["parts"])
    unpack(tmp_path / "packed", tmp_path / "run")
    for name in index["files"]:
        assert (tmp_path / "run" / name).read_bytes() == (base / "half" / name).read_bytes(), name
    stage1.train(cfg, tmp_path / "run", resume=True, progress=False)
    whole, resumed = _weights(base / "whole"), _weights(tmp_path / "run")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_compact_pack_fits_its_budget_and_resumes(half_run, tmp_path):
    cfg, base = half_run
    full = pack(base / "half", tmp_path / "full")["bytes"] / MIB
    index = pack(base / "half", tmp_path / "packed", budget_mib=0.5 * full)
    assert index["level"] in ("no-optimiser", "float16") and index["bytes"] <= 0.5 * full * MIB
    unpack(tmp_path / "packed", tmp_path / "run")
    state = torch.load(tmp_path / "run" / "state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 4 and set(state["dropped"]) == {"opt_g", "opt_d"}
    before = torch.load(base / "half" / "state.pt", map_location="cpu", weights_only=True)
    # a tensor stored once in the pack comes back in every file that held it
    assert all(torch.equal(before["G"][k].to(state["G"][k].dtype), state["G"][k]) for k in before["G"])
    out = stage1.train(cfg, tmp_path / "run", resume=True, progress=False)
    assert out["step"] == 8
    assert "restart from a packed state" in (tmp_path / "run" / "log.txt").read_text()
    with pytest.raises(UserError, match="budget"):
        pack(base / "half", tmp_path / "tiny", budget_mib=0.01)


def test_unpack_refuses_a_damaged_part(half_run, tmp_path):
    _, base = half_run
    index = pack(base / "half", tmp_path / "packed", part_mib=0.5)
    part = tmp_path / "packed" / index["parts"][1]["name"]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(UserError, match="sha256"):
        unpack(tmp_path / "packed", tmp_path / "run")
    (tmp_path / "packed" / INDEX).unlink()
    with pytest.raises(UserError, match=INDEX):
        unpack(tmp_path / "packed", tmp_path / "run")


def test_reference_time_limit_exits_3_with_a_resumable_state(tmp_path, capsys):
    args = ["reference", "tests/configs/reference_tiny.yaml", "--set", f"out={tmp_path / 'ref'}", "--set",
            f"package={tmp_path / 'pkg'}", "--set", f"figures={tmp_path / 'figs'}", "--quiet"]
    assert vmarket(args + ["--time-limit", "-1"]) == 2
    assert "--time-limit -1" in capsys.readouterr().err
    assert vmarket(args + ["--time-limit", "0"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "time limit" in err[0] and "run the same command again" in err[0]
    snap = torch.load(tmp_path / "ref" / "pose" / "snapshot.pt", map_location="cpu", weights_only=True)
    assert snap["step"] == 1  # the first stage saved the step it reached
    assert not (tmp_path / "pkg").exists()


@pytest.mark.slow
def test_gpu_script_stops_packs_and_the_next_window_finishes(tmp_path):
    script = _script()
    common = ["--config", "tests/configs/reference_tiny.yaml", "--work", str(tmp_path / "work"), "--quiet",
              "--part-mib", "4", "--budget-mib", "16"]
    assert script.main([str(tmp_path / "w1"), "--budget-s", "0", *common]) == 3
    s1 = json.loads((tmp_path / "w1" / "summary.json").read_text())
    assert s1["status"] == "stopped" and s1["steps"] == {"pose": 1}
    assert script.main([str(tmp_path / "w2"), "--resume-from", str(tmp_path / "w1"), "--budget-s", "900",
                        *common]) == 0
    s2 = json.loads((tmp_path / "w2" / "summary.json").read_text())
    assert s2["status"] == "finished" and s2["packed"]["level"] != "full"  # 43 MiB in full: compacted
    assert s2["steps"] == {"pose": 50, "stage1": 8, "stage2": {"fg": 10, "bg": 10, "pose": 10}}
    files = list((tmp_path / "w2").iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 4 * MIB for f in files)
    unpack(tmp_path / "w2", tmp_path / "back")
    assert "resumed at step 1" in (tmp_path / "back" / "pose" / "log.txt").read_text()
    prov = json.loads((tmp_path / "back" / "package" / "provenance.json").read_text())
    assert prov["steps"]["stage1"] == 4 and "gpu_reference" in prov["command"]  # the L1 warm-up's end ships
    index = json.loads((tmp_path / "w2" / INDEX).read_text())
    assert not any(name.startswith(("data/", "shipped/")) for name in index["files"])
    assert script.main([str(tmp_path / "w3"), "--part-mib", "1", *common[:-4]]) == 2  # 32 parts: too many files


def test_a_window_whose_runs_do_not_pack_still_returns_its_summary(tmp_path):
    """The window's only report when its runs exceed the budget: summary.json, saying why nothing else came back."""
    script = _script()
    rc = script.main([str(tmp_path / "w1"), "--budget-s", "0", "--config", "tests/configs/reference_tiny.yaml",
                      "--work", str(tmp_path / "work"), "--quiet", "--part-mib", "0.001", "--budget-mib", "0.001"])
    assert rc == 2
    summary = json.loads((tmp_path / "w1" / "summary.json").read_text())
    assert summary["status"] == "stopped" and "over the 0.001 MiB budget" in summary["packed"]["error"]
    assert [p.name for p in (tmp_path / "w1").iterdir()] == ["summary.json"]
