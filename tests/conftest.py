import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory):
    """A small SimMarket dataset at <tmp>/market1501 (the name torchreid's market1501 expects)."""
    from generator.simmarket.dataset import simulate

    root = tmp_path_factory.mktemp("sim") / "market1501"
    summary = simulate(root, 24, seed=3, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def sim_small(tmp_path_factory):
    """A 64x32 SimMarket for tiny training runs."""
    from generator.simmarket.dataset import simulate

    root = tmp_path_factory.mktemp("sim64") / "market1501"
    simulate(root, 16, seed=5, size=(64, 32), progress=False)
    return root


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
