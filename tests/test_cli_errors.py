"""Bad input gives one line naming the file and the fix, exit code 2, no traceback and nothing half-written.

Every command runs in this process (``run_main``); test_config_errors.py checks the same through `vmarket` in a
subprocess.
"""
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import one_line_error, run_main
from PIL import Image

from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv
from generator.data.market import SPLIT_DIRS


def test_check_passes_on_good_data(capsys, copy):
    rc, out, err = run_main(capsys, "check", "--root", copy, "--quiet")
    assert rc == 0, err
    assert out.startswith("ok:")


def test_malformed_name(capsys, copy):
    bad = copy / "bounding_box_train" / "person_7.jpg"
    shutil.copy(next((copy / "bounding_box_train").glob("*.jpg")), bad)
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), str(bad), "PPPP_cCsS_FFFFFF_BB")


def test_missing_keypoint_row(capsys, copy):
    csv = copy / "market-annotation-train.csv"
    lines = csv.read_text().splitlines()
    dropped = lines.pop(3).split(":")[0]
    csv.write_text("\n".join(lines) + "\n")
    line = one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), dropped, "no keypoint row", str(csv))
    assert "-1" in line  # says how to fix: -1 for undetected joints


def test_unreadable_image(capsys, copy):
    victim = sorted((copy / "query").glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg at all")
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), str(victim), "unreadable")


def test_wrong_size_image(capsys, copy):
    victim = sorted((copy / "bounding_box_test").glob("*.jpg"))[0]
    Image.fromarray(np.zeros((100, 50, 3), np.uint8)).save(victim)
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), str(victim), "100x50", "128x64")


def test_empty_split(capsys, copy):
    for f in (copy / "query").glob("*.jpg"):
        f.unlink()
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), str(copy / "query"), "empty split")


@pytest.mark.parametrize("args, needle", [
    (["simulate", "--out", "X", "--ids", "4", "--colour", "red"], "--colour"),
    (["simulate", "--out", "X", "--ids", "four"], "--ids"),
    (["simulate", "--out", "X", "--ids", "4", "--size", "128by64"], "--size"),
    (["simulate", "--out", "X", "--ids", "1"], "--ids"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_options_write_nothing(capsys, tmp_path, monkeypatch, args, needle):
    args = [str(tmp_path / "out") if a == "X" else a for a in args]
    monkeypatch.chdir(tmp_path)
    one_line_error(*run_main(capsys, *args), needle)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*"))


def test_simulate_refuses_non_empty_out(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(*run_main(capsys, "simulate", "--out", out, "--ids", "4", "--quiet"), str(out), "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_simulate_cli(capsys, tmp_path):
    rc, out, err = run_main(capsys, "simulate", "--out", tmp_path / "s", "--ids", "6", "--seed", "1", "--size",
                            "64x32", "--quiet")
    assert rc == 0, err
    assert "6 identities" in out and "img/s" in out
    assert Image.open(next((tmp_path / "s" / "bounding_box_train").glob("*.jpg"))).size == (32, 64)


def test_check_reports_images_without_a_person(copy, capsys):
    """Person images whose keypoint rows show no person are a class of their own, counted and named; distractors,
    which may show no one, are not in it."""
    rc, out, err = run_main(capsys, "check", "--root", copy, "--quiet")
    assert rc == 0 and len(out.splitlines()) == 1, err
    planted = []
    for csv, split, joints in (("market-annotation-train.csv", "train", 0), ("market-annotation-test.csv", "query", 2)):
        kps = read_keypoints_csv(copy / csv)
        name = next(n for n in sorted(kps)
                    if not n.startswith(("0000", "-1")) and (copy / SPLIT_DIRS[split] / n).exists())
        kps[name][:] = -1
        if joints:
            kps[name][:joints] = [[30, 32], [40, 32]]  # nose and neck: one limb
        write_keypoints_csv(copy / csv, kps)
        planted.append(f"{split}/{name}")
    rc, out, err = run_main(capsys, "check", "--root", copy, "--quiet")
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("ok:") and len(lines) == 2, err
    assert lines[1].startswith("no visible person: 2 of ") and all(p in lines[1] for p in planted)


def test_a_keypoint_csv_with_a_byte_order_mark_is_read(capsys, copy):
    csv = copy / "market-annotation-train.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # as a spreadsheet's "UTF-8 CSV" export writes it
    rc, out, err = run_main(capsys, "check", "--root", copy, "--quiet")
    assert rc == 0, err


def test_a_negative_coordinate_other_than_minus_one_is_a_joint_outside_the_image(capsys, copy):
    """-1 marks a missing joint; -5 is a place above the image (read as a missing joint before, without a word). It is
    judged as any joint outside the images: one is left out and reported, a CSV full of them refused."""
    csv = copy / "market-annotation-train.csv"
    kps = read_keypoints_csv(csv)
    name = next(iter(kps))
    kps[name][3] = [-5, 12]
    write_keypoints_csv(csv, kps)
    rc, out, err = run_main(capsys, "check", "--root", copy, "--quiet")
    assert rc in (0, None), err
    assert f"1 joints outside the images left out as missing, in 1 rows ({name})" in out
    kps[name][3] = [-1, 12]  # the missing mark on one coordinate stays a missing joint, not reported
    write_keypoints_csv(csv, kps)
    rc, out, err = run_main(capsys, "check", "--root", copy, "--quiet")
    assert rc in (0, None) and "outside the images" not in out, err
    for yx in kps.values():  # every visible joint moved above the image: the CSV does not fit these images
        yx[yx[:, 0] >= 0, 0] = -3
    write_keypoints_csv(csv, kps)
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), f"{csv}: ",
                   "visible joints lie outside the 128x64 (HxW) images (y from -3 to -3")


def test_an_image_filed_under_another_split_names_the_csv_that_has_its_row(capsys, copy):
    moved = sorted((copy / "bounding_box_train").glob("*.jpg"))[0]
    shutil.copy(moved, copy / "bounding_box_test" / moved.name)
    one_line_error(*run_main(capsys, "check", "--root", copy, "--quiet"), moved.name,
                   "market-annotation-train.csv has a row of that name", "rows are matched per split")


def test_an_output_folder_on_a_file_system_that_makes_nothing_is_named_as_such():
    from generator.errors import UserError
    from generator.io import check_output_folder

    with pytest.raises(UserError, match="accepts no new files"):
        check_output_folder("/proc/vmarket-out", "--out")


@pytest.mark.parametrize("command", [("simulate", "--ids", "4", "--size", "64x32"), ("cutpaste", "--root", "DATA")])
def test_a_name_the_file_system_refuses_is_one_line_and_leaves_nothing(tmp_path, capsys, copy, command):
    """A path component over the file system's 255 bytes, under a folder that does not exist yet: one line naming
    the path and the fix, exit 2, and not even the short parent folder is made."""
    out = tmp_path / "made" / ("a" * 300) / "x"
    command = [str(copy) if a == "DATA" else a for a in command]
    one_line_error(*run_main(capsys, *command, "--out", out, "--quiet"),
                   str(out), "use a shorter name (at most 255 bytes a name")
    assert not (tmp_path / "made").exists()


def test_a_nul_character_in_a_config_path_is_refused_by_name(tmp_path, capsys):
    """YAML's "\\0" escape puts a NUL into a string, which no path can hold (os functions raise ValueError, not
    OSError): the config loader refuses it, naming the key."""
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", "configs/demo/reid.yaml", "--set", 'real_root="sim\\0b"',
                             "--quiet"), "real_root", "NUL character")


def test_a_job_key_on_a_config_that_runs_no_jobs_says_so(capsys):
    """JOB:KEY=VALUE is for configs with a set list; on another config the message says that, not "unknown key"."""
    one_line_error(*run_main(capsys, "reference-reid", "configs/reference/reid-48.yaml", "--status", "--set",
                             "cutpaste:share=0.3"), "JOB:KEY=VALUE sets a key of one job", "runs none")


def test_a_real_root_that_holds_no_dataset_is_named_before_the_generated_folders(tmp_path, capsys):
    """An empty real_root is the defect to name, not the generated folder that would be made from it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", "configs/demo/reid.yaml", "--set", f"real_root={empty}",
                             "--set", f"remix_root={tmp_path / 'not made'}", "--quiet"),
                   f"real_root: {empty}: no re-ID dataset found")


@pytest.mark.slow  # a subprocess: seconds of imports
def test_a_command_stopped_by_sigterm_cleans_up_as_after_ctrl_c(tmp_path):
    """`kill` or `timeout` (SIGTERM) stops a command the way Ctrl-C does: the unfinished output it was writing goes
    (here simulate's work folder beside --out), and it exits 143."""
    out = tmp_path / "sim"
    work = tmp_path / ".sim.partial"
    proc = subprocess.Popen([sys.executable, "-m", "augment.cli", "simulate", "--out", str(out), "--ids", "600",
                             "--size", "64x32", "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not work.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert work.is_dir(), "simulate did not start writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().endswith("terminated")
    assert not work.exists() and not out.exists()
