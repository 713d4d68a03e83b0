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


def test_a_copy_cut_short_leaves_nothing_under_its_name(tmp_path, monkeypatch):
    """link_or_copy falls back to a copy where a hard link is refused; a copy killed half-way leaves no cut-short
    file under the name (which a rerun would take for done), and the old file stays whole."""
    import os
    import shutil

    import generator.io as io_module

    src = tmp_path / "a.jpg"
    src.write_bytes(b"x" * 1000)

    def no_links(a, b):
        raise OSError("cross-device link")

    def half_then_killed(a, b, **kwargs):
        with open(b, "wb") as f:
            f.write(b"x" * 500)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(shutil, "copy2", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        io_module.link_or_copy(src, tmp_path / "b.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]
    monkeypatch.undo()
    io_module.link_or_copy(src, tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").read_bytes() == src.read_bytes()
    (tmp_path / "c.jpg").write_bytes(b"old")
    monkeypatch.setattr(shutil, "copyfile", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        io_module.atomic_copy(src, tmp_path / "c.jpg")
    assert (tmp_path / "c.jpg").read_bytes() == b"old"
