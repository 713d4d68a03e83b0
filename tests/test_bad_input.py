"""Bad data on the paths that read it: the file's own defect is named first, and nothing hangs.

torchreid's ``read_image`` retries an unreadable file forever, so the re-ID ablation must refuse such a file
before torchreid sees it; every subprocess here runs under a timeout so that a regression fails instead of
hanging the suite.
"""
import shutil

import pytest
from conftest import one_line_error, run_cli

TIMEOUT_S = 240  # the refusal takes seconds; a hang would run until killed


def _run(*args):
    return run_cli(*args, timeout=TIMEOUT_S)


def _zero_byte(folder):
    bad = folder / "0001_c1s1_999999_01.jpg"
    bad.write_bytes(b"")
    return bad


def _text_as_jpeg(folder):
    bad = folder / "0001_c1s1_999998_01.jpg"
    bad.write_text("not an image\n")
    return bad


def _truncated_jpeg(folder):
    src = sorted(folder.glob("*.jpg"))[0]
    bad = folder / "0001_c2s1_999997_01.jpg"
    bad.write_bytes(src.read_bytes()[:300])
    return bad


@pytest.mark.parametrize("make", [_zero_byte, _text_as_jpeg, _truncated_jpeg])
def test_check_names_the_broken_image_not_its_keypoint_row(copy, make):
    bad = make(copy / "bounding_box_train")  # a stray file: no keypoint row either
    line = one_line_error(*_run("check", "--root", copy, "--quiet"), str(bad), "unreadable image")
    assert "keypoint" not in line


def test_camera_zero_is_refused_by_check_and_reid(copy, tmp_path):
    src = sorted((copy / "bounding_box_train").glob("*.jpg"))[0]
    bad = copy / "bounding_box_train" / f"{src.name[:6]}0{src.name[7:]}"  # PPPP_c0s...
    shutil.copy(src, bad)
    one_line_error(*_run("check", "--root", copy, "--quiet"), str(bad), "camera 0")
    cfg = _reid_config(tmp_path, copy)
    one_line_error(*_run("reid", "ablate", "-c", cfg, "--quiet"), str(bad), "camera 0")


def _reid_config(tmp_path, real_root):
    cfg = tmp_path / "reid.yaml"
    cfg.write_text(f"real_root: {real_root}\nsettings: [real]\nseeds: [0]\nout: {tmp_path / 'reid'}\n"
                   "train: {epochs: 1, batch: 8, workers: 0}\n")
    return cfg


@pytest.mark.parametrize("make, split", [(_text_as_jpeg, "bounding_box_train"), (_truncated_jpeg, "bounding_box_test")])
def test_reid_ablate_refuses_an_unreadable_image_instead_of_hanging(copy, tmp_path, make, split):
    bad = make(copy / split)
    one_line_error(*_run("reid", "ablate", "-c", _reid_config(tmp_path, copy), "--quiet"), str(bad),
                    "unreadable image")
    assert not (tmp_path / "reid" / "results.csv").exists()
