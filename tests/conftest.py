"""Shared fixtures and helpers. Two tiers, by the ``slow`` marker (the rule is in pyproject.toml's ``markers``):

- fast (``make test-fast``, ``-m "not slow"``, under 3 minutes on an idle 2-core CPU): unit tests, refusals of bad
  input, and tiny trainings of a few steps that check bookkeeping. A command runs in this process (``run_main``);
  ``run_cli`` (a fresh interpreter: seconds of torch imports each) only where the subprocess is what is tested.
- slow (``@pytest.mark.slow``; ``make test``/CI runs both tiers, under 8 minutes): end to end and training-heavy:
  whole ``vmarket`` jobs (pipeline, reference, reference-reid), kill-and-resume, DDP with gloo, trainings that must
  move a metric or run a full epoch, anything else over ~5 s.

A session or module fixture costs once per tier that uses it (``tiny_stages``: a second or two idle); one that only
slow tests use is never built by the fast tier, so an expensive fixture belongs with slow tests or must be cheap.
"""
import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory):
    """A small SimMarket dataset at <tmp>/market1501 (the name torchreid's market1501 expects)."""
    from generator.simmarket.simulate import simulate

    root = tmp_path_factory.mktemp("sim") / "market1501"
    summary = simulate(root, 24, seed=3, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def sim_small(tmp_path_factory):
    """A 64x32 SimMarket for tiny training runs."""
    from generator.simmarket.simulate import simulate

    root = tmp_path_factory.mktemp("sim64") / "market1501"
    simulate(root, 16, seed=5, size=(64, 32), progress=False)
    return root


@pytest.fixture(scope="session")
def real_and_cutpaste(tmp_path_factory):
    """A tiny simulated real set (6 identities, 3 of them training; junk and distractor images too) and a
    cut-and-paste set made from it. Read only: a test that changes one works on a copy."""
    from augment.makers.cutpaste import cut_paste
    from generator.simmarket.simulate import simulate

    base = tmp_path_factory.mktemp("extra")
    real = base / "real"
    simulate(real, 6, seed=11, size=(64, 32), progress=False)
    cp = base / "cutpaste"
    cut_paste(real, cp, per_image=1, seed=0, size=(64, 32), progress=False)
    return real, cp


@pytest.fixture(scope="session")
def tiny_stages(sim_small, tmp_path_factory):
    """Tiny trained stage I, pose AE and stage II (seconds), for the builder and report tests."""
    from tiny import tiny_pose, tiny_stage1, tiny_stage2

    from generator.training.pose_ae import train as train_pose
    from generator.training.stage1 import train as train_stage1
    from generator.training.stage2 import train as train_stage2

    d = tmp_path_factory.mktemp("stages")
    train_stage1(tiny_stage1(sim_small, **{"train.steps": 6, "train.l1_only_steps": 2}), d / "s1", progress=False)
    train_pose(tiny_pose(sim_small, **{"train.steps": 200}), d / "pose", progress=False)
    train_stage2(tiny_stage2(d / "s1", d / "pose", **{"train.steps": 20}), d / "s2", progress=False)
    return d / "s1", d / "pose", d / "s2"


@pytest.fixture
def copy(sim_root, tmp_path):
    """A writable copy of the small SimMarket, for tests that plant bad files in it."""
    root, _ = sim_root
    dst = tmp_path / "data"
    shutil.copytree(root, dst)
    return dst


def run_cli(*args, cwd=None, timeout=None):
    """Run `vmarket` in a subprocess; returns (exit code, stdout, stderr). ``timeout``: seconds before the test
    fails instead of hanging."""
    p = subprocess.run([sys.executable, "-m", "augment.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def run_main(capsys, *args):
    """Run `vmarket` in this process (``augment.cli.main``), for tests of what a command does rather than of the
    console script: (exit code, stdout, stderr), the output since the last read. Seconds faster than ``run_cli``,
    which starts Python and imports torch again."""
    from augment.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse refuses its own errors this way
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, out, err, *needles):
    """Assert the CLI refused with exit code 2 and one line (no traceback) holding every needle; that line."""
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
