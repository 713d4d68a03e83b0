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
    """deny(locked=FOLDER, files=(FILE, ...), readonly=(FOLDER, ...)): FOLDER cannot be entered or listed, each FILE
    cannot be opened or read, and nothing can be made in, renamed in or removed from each readonly FOLDER."""
    def plant(locked=None, files=(), readonly=()):
        locked = Path(locked).absolute() if locked is not None else None
        files = {Path(f).absolute() for f in files}
        readonly = {Path(f).absolute() for f in readonly}

        def path_of(path):
            return None if isinstance(path, int) else Path(os.fsdecode(path)).absolute()  # int: an open descriptor

        def refused(path, listing: bool, opening: bool) -> bool:
            p = path_of(path)
            inside = p is not None and locked is not None and (locked in p.parents or (listing and p == locked))
            return inside or (opening and p in files)

        def wrap(fn, listing=False, opening=False):
            def call(path=".", *args, **kwargs):
                if refused(path, listing, opening):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
                return fn(path, *args, **kwargs)
            return call

        real_access = os.access

        def access(path, mode, **kwargs):
            p = path_of(path)
            if refused(path, True, bool(mode & os.R_OK)) or (p in readonly and mode & os.W_OK):
                return False
            return real_access(path, mode, **kwargs)

        for name in ("stat", "lstat"):
            monkeypatch.setattr(os, name, wrap(getattr(os, name)))
        for name in ("scandir", "listdir"):
            monkeypatch.setattr(os, name, wrap(getattr(os, name), listing=True))
        opener = wrap(io.open, opening=True)
        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(io, "open", opener)
        monkeypatch.setattr(os, "access", access)
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
                          f"{victim}: permission denied, this user may not read that image", "change its permissions")
    assert "replace or remove" not in line


def test_a_config_or_keypoint_file_this_user_may_not_read_says_so(capsys, copy, deny, tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(Path("configs/demo/build.yaml").read_text())
    keypoints = copy / "market-annotation-train.csv"
    deny(files=[config, keypoints])
    one_line_error(*run_main(capsys, "build", "-c", config),
                   f"{config}: permission denied, this user may not read that config; change its permissions")
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"),
                   f"{keypoints}: permission denied, this user may not read that keypoint file")


def test_a_path_not_there_yet_names_the_deepest_folder_if_it_refuses_else_no_guess(tmp_path, deny):
    """Making tmp/a/b failed and tmp/a is not there: tmp refused, if this user may not write in it."""
    made = tmp_path / "a" / "b"
    assert access_denied(made) == f"{made}: permission denied; change its permissions, or use another path"
    deny(readonly=[tmp_path])
    assert access_denied(tmp_path / "a" / "b").startswith(f"{tmp_path}: permission denied, this user may not write "
                                                          "in that folder;")


def test_a_bare_name_or_a_file_in_the_way_is_named_as_given(tmp_path, deny, monkeypatch):
    """A relative name the failing call was given (shutil.rmtree names a file by its bare name) that is not in the
    working folder, a path through a file, and a path as bytes: the path as given, no folder blamed."""
    monkeypatch.chdir(tmp_path)
    deny(readonly=[tmp_path / "elsewhere"])
    assert access_denied("a.jpg").startswith("a.jpg: permission denied; ")
    (tmp_path / "file").write_text("x")
    assert access_denied(tmp_path / "file" / "x").startswith(f"{tmp_path / 'file' / 'x'}: permission denied; ")
    assert access_denied(os.fsencode(tmp_path / "a.jpg")).startswith(f"{tmp_path / 'a.jpg'}: permission denied; ")


def test_a_file_that_may_be_read_in_a_folder_that_may_not_be_written_names_the_folder(tmp_path, deny):
    """Removing or renaming a file needs its folder: that folder refused, not the file."""
    victim = tmp_path / "x.jpg"
    victim.write_text("x")
    deny(readonly=[tmp_path])
    assert access_denied(victim).startswith(f"{tmp_path}: permission denied, this user may not write in that folder")
    deny(files=[victim])
    assert access_denied(victim, "read", "image").startswith(f"{victim}: permission denied, this user may not read "
                                                             "that image")


def test_a_link_into_a_folder_this_user_may_not_enter_names_that_folder(tmp_path, deny):
    locked = tmp_path / "locked"
    (locked / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(locked / "data")
    deny(locked=locked)
    assert access_denied(tmp_path / "link" / "x.jpg").startswith(f"{locked}: permission denied, this user may not "
                                                                 "enter that folder")
