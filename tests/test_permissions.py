"""Permission errors name the place that refuses and what to do, in one line with exit code 2.

The tests run as root, whom file permissions do not stop, so ``deny`` plants the errors a user without the rights
gets: the calls Python makes to reach a path (stat, lstat, scandir, listdir, open) raise PermissionError inside a
folder that user may not enter, and open raises it for a file that user may not read.
"""
import builtins
import errno
import io
import os
from pathlib import Path

import pytest
from conftest import one_line_error, run_main

from generator.io import access_denied


@pytest.fixture
def deny(monkeypatch):
    """deny(locked=FOLDER, files=(FILE, ...)): FOLDER cannot be entered or listed, each FILE cannot be opened."""
    def plant(locked=None, files=()):
        locked = Path(locked).absolute() if locked is not None else None
        files = {Path(f).absolute() for f in files}

        def refused(path, listing: bool, opening: bool) -> bool:
            if isinstance(path, int):  # a file descriptor: already open
                return False
            p = Path(os.fsdecode(path)).absolute()
            inside = locked is not None and (locked in p.parents or (listing and p == locked))
            return inside or (opening and p in files)

        def wrap(fn, listing=False, opening=False):
            def call(path=".", *args, **kwargs):
                if refused(path, listing, opening):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
                return fn(path, *args, **kwargs)
            return call

        for name in ("stat", "lstat"):
            monkeypatch.setattr(os, name, wrap(getattr(os, name)))
        for name in ("scandir", "listdir"):
            monkeypatch.setattr(os, name, wrap(getattr(os, name), listing=True))
        opener = wrap(io.open, opening=True)
        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(io, "open", opener)
    return plant


def test_a_dataset_this_user_may_not_enter_is_named_not_a_file_probed_inside_it(capsys, copy, deny):
    deny(locked=copy)
    line = one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"),
                          f"{copy}: permission denied, this user may not enter that folder", "change its permissions")
    assert f"{copy}/" not in line  # not a marker file the layout probe asked for


def test_cutpaste_from_a_dataset_this_user_may_not_enter_names_it_and_writes_nothing(capsys, copy, deny, tmp_path):
    out = tmp_path / "out"
    deny(locked=copy)
    one_line_error(*run_main(capsys, "cutpaste", "--root", copy, "--out", out, "--size", "64x32", "--quiet"),
                   f"{copy}: permission denied, this user may not enter that folder")
    assert not out.exists()


def test_an_output_below_a_folder_this_user_may_not_enter_names_that_folder(capsys, tmp_path, deny, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    deny(locked=locked)
    one_line_error(*run_main(capsys, "simulate", "--ids", "4", "--size", "64x32", "--out", locked / "a" / "b",
                             "--quiet"), f"{locked}: permission denied, this user may not enter that folder")
    monkeypatch.undo()  # root again, to look inside
    assert list(locked.iterdir()) == []


def test_an_image_this_user_may_not_read_is_a_permission_to_change_not_a_file_to_replace(capsys, copy, deny):
    victim = sorted((copy / "query").glob("*.jpg"))[0]
    deny(files=[victim])
    line = one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"),
                          f"{victim}: permission denied, this user may not read that file", "change its permissions")
    assert "replace or remove" not in line


def test_a_config_or_keypoint_file_this_user_may_not_read_says_so(capsys, copy, deny, tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(Path("configs/demo/build.yaml").read_text())
    keypoints = copy / "market-annotation-train.csv"
    deny(files=[config, keypoints])
    one_line_error(*run_main(capsys, "build", "-c", config), "cannot read config",
                   f"{config}: permission denied, this user may not read that file")
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), "cannot read keypoint file",
                   f"{keypoints}: permission denied, this user may not read that file")


def test_a_path_not_there_yet_names_the_deepest_folder_that_is(tmp_path):
    """Creating tmp/a/b failed with permission denied and tmp/a is not there: tmp is the folder that refused."""
    assert access_denied(tmp_path / "a" / "b").startswith(f"{tmp_path}: permission denied, this user may not write")
    assert "may not list or write in that folder" in access_denied(tmp_path)
