"""Bad input on the paths that read or write it (data, configs, output folders): the file's own defect is named
first, in one line, nothing is left behind, and nothing hangs.

torchreid's ``read_image`` retries an unreadable file forever, so the re-ID ablation must refuse such a file
before torchreid sees it; every command here runs in this process (``run_main``: a subprocess would spend seconds
importing torch) under a timeout (pytest-timeout) so that a regression fails instead of hanging the suite.
"""
import shutil

import numpy as np
import pytest
from conftest import one_line_error, run_main
from PIL import Image
from tiny import tiny_stage1
from torch._utils import ExceptionWrapper

from generator.config import save_config
from generator.data.keypoints import leave_out_joints_outside, read_keypoints_csv, write_keypoints_csv
from generator.errors import UserError

TIMEOUT_S = 240  # the refusal takes seconds; a hang would run until killed


def _run(capsys, *args):
    """``vmarket args`` in this process; the test that calls it runs under ``@_timeout``."""
    return run_main(capsys, *args)


_timeout = pytest.mark.timeout(TIMEOUT_S)


def _stray(root, name="0001_c1s1_999999_01.jpg"):
    """A new file in the training folder: it has no keypoint row either, so a check that looks at keypoints first
    would name the wrong defect."""
    return root / "bounding_box_train" / name


def _first(root, split="bounding_box_train"):
    return sorted((root / split).glob("*.jpg"))[0]


def malformed_name(root):
    bad = _stray(root, "person_7.jpg")
    shutil.copy(_first(root), bad)
    return [str(bad), "PPPP_cCsS_FFFFFF_BB"]


def camera_zero(root):
    src = _first(root)
    bad = _stray(root, f"{src.name[:6]}0{src.name[7:]}")  # PPPP_c0s...
    shutil.copy(src, bad)
    return [str(bad), "camera 0"]


def zero_byte_image(root):
    _stray(root).write_bytes(b"")
    return [str(_stray(root)), "unreadable image"]


def text_named_jpg(root):
    _stray(root).write_text("not an image\n")
    return [str(_stray(root)), "unreadable image"]


def truncated_jpeg(root):
    _stray(root).write_bytes(_first(root).read_bytes()[:300])
    return [str(_stray(root)), "unreadable image"]


def wrong_image_size(root):
    victim = _first(root)
    Image.fromarray(np.zeros((100, 50, 3), np.uint8)).save(victim)
    return [str(victim), "100x50", "128x64"]


def missing_keypoint_row(root):
    csv = root / "market-annotation-train.csv"
    lines = csv.read_text().splitlines()
    dropped = lines.pop(3).split(":")[0]
    csv.write_text("\n".join(lines) + "\n")
    return [dropped, "no keypoint row", "-1", "--skip-missing-keypoints"]


def missing_keypoint_file(root):
    (root / "market-annotation-train.csv").unlink()
    return ["market-annotation-train.csv", "keypoint file missing"]


def malformed_keypoint_row(root):
    csv = root / "market-annotation-train.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].split(":")[0] + ": [1, 2]"
    csv.write_text("\n".join(lines) + "\n")
    return [f"{csv}:3", "expected"]


def _rescale_rows(csv, scale, rows=None):
    """Multiply the visible coordinates of the first ``rows`` rows (all: None) of a keypoint CSV by ``scale``, as a
    CSV written for images of another size has them; the names of the rows changed."""
    table = read_keypoints_csv(csv)
    names = list(table)[:rows]
    for n in names:
        yx = table[n]
        table[n] = np.where(yx >= 0, yx * scale, yx)
    write_keypoints_csv(csv, table)
    return names


def held_out_keypoints_at_another_size(root):
    _rescale_rows(root / "market-annotation-test.csv", 2)
    return [f"{root / 'market-annotation-test.csv'}: ", "outside the 128x64"]


def keypoints_at_another_size(root):
    _rescale_rows(root / "market-annotation-train.csv", 2)
    return ["market-annotation-train.csv", "outside the 128x64", "another size", "vmarket keypoints"]


def empty_split(root):
    for f in (root / "bounding_box_train").glob("*.jpg"):
        f.unlink()
    return [str(root / "bounding_box_train"), "empty split"]


def missing_split_folder(root):
    shutil.rmtree(root / "query")
    return [str(root / "query"), "missing split folder"]


# defect -> the commands that read what it breaks (a re-ID model reads no keypoints and resizes every image)
DEFECTS = {
    malformed_name: ("check", "train", "reid"),
    camera_zero: ("check", "train", "reid"),
    zero_byte_image: ("check", "train", "reid"),
    text_named_jpg: ("check", "train", "reid"),
    truncated_jpeg: ("check", "train", "reid"),
    wrong_image_size: ("check", "train"),
    missing_keypoint_row: ("check", "train"),
    missing_keypoint_file: ("check", "train"),
    malformed_keypoint_row: ("check", "train"),
    keypoints_at_another_size: ("check", "train"),
    held_out_keypoints_at_another_size: ("check",),  # named alone, though the training CSV is fine; stage I: below
    empty_split: ("check", "train", "reid"),
    missing_split_folder: ("check", "reid"),  # stage I trains on the train split alone
}


def _command(command, root, tmp_path):
    """The CLI arguments of ``command`` on the dataset ``root``, and the folder it would write to."""
    out = tmp_path / "out"
    if command == "check":
        return ["check", "--root", root, "--quiet"], out
    if command == "train":
        cfg = tmp_path / "stage1.yaml"
        save_config(tiny_stage1(root, **{"data.size": "[128,64]", "train.steps": 1}), cfg)
        return ["train", "stage1", "-c", cfg, "--run-dir", out, "--quiet"], out
    return ["reid", "ablate", "-c", _reid_config(tmp_path, root, out), "--quiet"], out


@pytest.mark.parametrize("defect, command", [(d, c) for d, cs in DEFECTS.items() for c in cs],
                         ids=lambda x: getattr(x, "__name__", x))
@_timeout
def test_every_data_command_refuses_bad_data_in_one_line(capsys, copy, tmp_path, defect, command):
    """For each defect and each command that reads the data: exit 2, one line naming the file (the defect itself,
    not a keypoint row a stray file never had) and the fix, no traceback, no hang, nothing written."""
    needles = defect(copy)
    args, out = _command(command, copy, tmp_path)
    line = one_line_error(*_run(capsys, *args), *needles)
    if "keypoint" not in defect.__name__:
        assert "keypoint" not in line
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), sorted(out.rglob("*"))


def _reid_config(tmp_path, real_root, out=None):
    cfg = tmp_path / "reid.yaml"
    cfg.write_text(f"real_root: {real_root}\nsettings: [real]\nseeds: [0]\nout: {out or tmp_path / 'reid'}\n"
                   "train: {epochs: 1, batch: 8, workers: 0}\n")
    return cfg


def _drop_rows(csv, keep):
    """Remove the keypoint rows whose image name fails ``keep``; the names removed."""
    lines = csv.read_text().splitlines()
    kept = [ln for ln in lines if ":" not in ln or ln.startswith("name:") or keep(ln.split(":")[0])]
    csv.write_text("\n".join(kept) + "\n")
    return [ln.split(":")[0] for ln in lines if ln not in kept]


@_timeout
def test_junk_and_distractors_need_no_keypoint_row(capsys, copy):
    """Junk (-1) and distractor (0000) images are never trained on: without a row the dataset still checks."""
    dropped = _drop_rows(copy / "market-annotation-test.csv", lambda n: not n.startswith(("-1_", "0000_")))
    assert any(n.startswith("-1_") for n in dropped) and any(n.startswith("0000_") for n in dropped)
    rc, out, err = _run(capsys, "check", "--root", copy, "--quiet")
    assert rc == 0, err
    assert f"without a keypoint row: {len(dropped)} junk / distractor images" in out


@_timeout
def test_skip_missing_keypoints_leaves_person_images_out_and_logs_the_count(capsys, tmp_path, sim_small):
    data = tmp_path / "data"
    shutil.copytree(sim_small, data)
    dropped = _drop_rows(data / "market-annotation-train.csv", lambda n: not n.startswith(("0001_", "0002_")))
    assert len(dropped) >= 2
    # refused by default, naming the image and the way out
    one_line_error(*_run(capsys, "check", "--root", data, "--size", "64x32", "--quiet"), "no keypoint row",
                   "--skip-missing-keypoints")
    rc, out, err = _run(capsys, "check", "--root", data, "--size", "64x32", "--quiet", "--skip-missing-keypoints")
    assert rc == 0 and f"{len(dropped)} person images (left out" in out, err
    cfg, run = tmp_path / "stage1.yaml", tmp_path / "run"
    save_config(tiny_stage1(data, **{"train.steps": 2}), cfg)
    one_line_error(*_run(capsys, "train", "stage1", "-c", cfg, "--run-dir", run, "--quiet"), "no keypoint row")
    assert not run.exists()  # nothing half-written: the refused run leaves no run directory
    rc, out, err = _run(capsys, "train", "stage1", "-c", cfg, "--run-dir", run, "--quiet",
                        "--skip-missing-keypoints")
    assert rc == 0, err[-3000:]
    assert f"data: {len(dropped)} training images without a keypoint row left out" in (run / "log.txt").read_text()
    assert "skip_missing_keypoints: true" in (run / "config.yaml").read_text()


@_timeout
def test_train_stage1_refuses_a_broken_image_before_it_writes_anything(capsys, tmp_path, sim_small):
    """Stage I decodes every training image before it starts: a broken file is named at once, not when a
    DataLoader worker first loads it (or never, when no step samples it), and no run directory is left."""
    data = tmp_path / "data"
    shutil.copytree(sim_small, data)
    victim = sorted((data / "bounding_box_train").glob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[:200])  # it keeps its keypoint row
    cfg, run = tmp_path / "stage1.yaml", tmp_path / "run"
    save_config(tiny_stage1(data, **{"train.steps": 1, "data.workers": 1}), cfg)
    one_line_error(*_run(capsys, "train", "stage1", "-c", cfg, "--run-dir", run, "--quiet"), str(victim),
                   "unreadable image")
    assert not run.exists()


def test_user_error_from_a_dataloader_worker_keeps_its_one_line_message():
    """torch re-creates a worker's exception from its formatted traceback; UserError keeps the original message."""
    try:
        raise UserError("/data/x.jpg: unreadable image (OSError); replace or remove the file")
    except UserError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(UserError) as e:
        wrapped.reraise()
    assert str(e.value) == "/data/x.jpg: unreadable image (OSError); replace or remove the file"


@_timeout
def test_a_few_joints_outside_the_image_are_left_out_and_reported(capsys, tmp_path, sim_small):
    """A joint or two past the border (a CSV's rounding, a stray detection) is no reason to refuse a dataset: it is
    left out as missing, never drawn as a pose map at the image's edge, and `check`, stage I's log and the pose AE's
    vectors all see it so. A whole CSV at another size is refused (DEFECTS above)."""
    from tiny import tiny_pose

    from generator.data.dataset import person_dataset
    from generator.training.pose_ae import pose_vectors

    data = tmp_path / "data"
    shutil.copytree(sim_small, data)
    csv = data / "market-annotation-train.csv"
    name = next(iter(read_keypoints_csv(csv)))
    table = read_keypoints_csv(csv)
    yx = table[name]
    joint = int(np.flatnonzero((yx >= 0).all(axis=1))[0])
    yx[joint] = (70, 10)  # below the 64-row image
    write_keypoints_csv(csv, table)

    ds = person_dataset(data, ("train",), size=(64, 32))
    i = next(k for k, r in enumerate(ds.records) if r.keypoint_name == name)
    assert ds.joints_outside == 1 and ds.rows_outside == [name]
    assert ds.rcv[i][joint].tolist() == [0, 0, 0]
    assert not ds.item(i)["pose_maps"][joint].any()  # no map drawn for it

    rc, out, err = _run(capsys, "check", "--root", data, "--size", "64x32", "--quiet")
    assert rc == 0, err
    assert f"1 joints outside the images left out as missing, in 1 rows ({name})" in out

    vectors = pose_vectors(data, ("train",), (64, 32), min_visible=0, flip=False)
    assert float(vectors[..., 0::3].max()) <= 1.0  # every row coordinate inside the image: r/H*2-1 <= 1

    cfg, run = tmp_path / "stage1.yaml", tmp_path / "run"
    save_config(tiny_stage1(data, **{"train.steps": 1}), cfg)
    rc, out, err = _run(capsys, "train", "stage1", "-c", cfg, "--run-dir", run, "--quiet")
    assert rc == 0, err[-3000:]
    assert f"data: 1 joints outside the images left out as missing, in 1 rows ({name})" in (run / "log.txt").read_text()

    _rescale_rows(csv, 2)  # now the whole CSV: the pose AE refuses it too
    pose_cfg = tmp_path / "pose.yaml"
    save_config(tiny_pose(data, **{"train.steps": 1}), pose_cfg)
    one_line_error(*_run(capsys, "train", "pose", "-c", pose_cfg, "--run-dir", tmp_path / "pose", "--quiet"),
                   "outside the 64x32", "market-annotation-train.csv")
    assert not (tmp_path / "pose").exists()



@_timeout
def test_stage1_says_why_it_has_no_held_out_check(capsys, tmp_path, sim_small):
    """A held-out split stage I cannot read (its CSV at another size) does not stop training on a sound training
    split, but the run's log says why there is no held-out SSIM, naming that CSV, instead of dropping it silently."""
    data = tmp_path / "data"
    shutil.copytree(sim_small, data)
    _rescale_rows(data / "market-annotation-test.csv", 2)
    cfg, run = tmp_path / "stage1.yaml", tmp_path / "run"
    save_config(tiny_stage1(data, **{"train.steps": 1, "train.eval_every": 1}), cfg)
    rc, out, err = _run(capsys, "train", "stage1", "-c", cfg, "--run-dir", run, "--quiet")
    assert rc == 0, err[-3000:]
    log = (run / "log.txt").read_text()
    assert "data: no held-out SSIM during training:" in log and "market-annotation-test.csv" in log
    assert "held-out SSIM 0" not in log


def test_a_row_of_joints_outside_is_not_a_csv_at_another_size():
    """The refusal needs more than 1% of a CSV's joints outside and more than one row's worth: one stray row in a
    small dataset is left out as missing, two rows' worth is refused."""
    rcv = np.zeros((5, 18, 3), np.float32)
    rcv[..., 2] = 1
    rcv[..., 0], rcv[..., 1] = 10, 5
    rcv[0, :, 0] = 64  # one whole row on the border of a 64-row image
    n, rows = leave_out_joints_outside(rcv, list("abcde"), (64, 32), "kp.csv")
    assert (n, rows) == (18, ["a"]) and not rcv[0, :, 2].any() and rcv[1:, :, 2].all()
    rcv[:2, :, 2], rcv[:2, :, 0] = 1, 64
    with pytest.raises(UserError, match="kp.csv: 36 of 90 visible joints lie outside the 64x32"):
        leave_out_joints_outside(rcv, list("abcde"), (64, 32), "kp.csv")
