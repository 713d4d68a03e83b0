"""Atomic writes: the target appears whole or not at all, and writers of the same file never share a temp name."""
import multiprocessing as mp

import pytest

from generator.io import atomic_path, atomic_write_text


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_overlapping_writers_of_one_file_do_not_collide(tmp_path):
    target = tmp_path / "config.yaml"
    with atomic_path(target) as first:
        with atomic_path(target) as second:  # another writer of the same file while the first one is open
            assert first != second
            second.write_text("second")
        first.write_text("first")
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def _write(path, text, n):
    for _ in range(n):
        atomic_write_text(path, text)


def test_processes_writing_one_file_never_fail(tmp_path):
    """Two processes rewriting one file (two seeds of one ablation writing its config.yaml) both finish."""
    target = tmp_path / "config.yaml"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write, args=(target, f"writer {i}\n" * 200, 300)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert target.read_text() in (f"writer {i}\n" * 200 for i in range(2))
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
