import os
import subprocess
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory):
    """A small SimMarket dataset at <tmp>/market1501 (the name torchreid's market1501 expects)."""
    from generator.simmarket import simulate

    root = tmp_path_factory.mktemp("sim") / "market1501"
    summary = simulate(root, 24, seed=3, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def sim_small(tmp_path_factory):
    """A 64x32 SimMarket for tiny training runs."""
    from generator.simmarket import simulate

    root = tmp_path_factory.mktemp("sim64") / "market1501"
    simulate(root, 16, seed=5, size=(64, 32), progress=False)
    return root


def run_cli(*args, cwd=None):
    """Run `vmarket` in a subprocess; returns (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "augment.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr
