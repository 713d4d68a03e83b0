"""Bad input on the paths that read or write it (data, configs, output folders): the file's own defect is named
first, in one line, nothing is left behind, and nothing hangs.

torchreid's ``read_image`` retries an unreadable file forever, so the re-ID ablation must refuse such a file
before torchreid sees it; every command here runs in this process (``run_main``: a subprocess would spend seconds
importing torch) under a timeout (pytest-timeout) so that a regression fails instead of hanging the suite.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error, run_main
from PIL import Image
from tiny import tiny_pose, tiny_stage1, tiny_stage2
from torch._utils import ExceptionWrapper

from generator.config import save_config
from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv
from generator.data.layouts import parse_duke_name
from generator.data.market import parse_name
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


# ---------------------------------------------------------------------------------------------------------------------
# Bad input through every command that reads or writes it, run in this process (``run_main``): exit code 2, one line
# naming the file or option and the fix, and nothing left in the output's parent (no half-written output, no empty
# folder the refused command made on its way there).

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def small(sim_small, tmp_path):
    """A writable copy of the 64x32 SimMarket the tiny stages trained on (``build`` reads it in real mode)."""
    dst = tmp_path / "data"
    shutil.copytree(sim_small, dst)
    return dst


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _yaml(path, text):
    path.write_text(text)
    return path


def _invocation(command, data, out, tmp_path, stages):
    """The CLI arguments of ``command`` reading the dataset ``data`` and writing ``out``, and its config file
    (None for a command without one)."""
    cfg = tmp_path / f"{command.replace(' ', '-')}.yaml"
    if command == "simulate":
        return ["simulate", "--out", out, "--ids", "4", "--size", "64x32", "--quiet"], None
    if command == "check":
        return ["check", "--root", data, "--size", "64x32", "--quiet"], None
    if command.startswith("train"):
        job = command.split()[1]
        if job == "stage1":
            save_config(tiny_stage1(data, **{"train.steps": 1}), cfg)
        elif job == "pose":
            save_config(tiny_pose(data, **{"train.steps": 1}), cfg)
        else:
            save_config(tiny_stage2(stages[0], stages[1], **{"train.steps": 1, "data_root": str(data)}), cfg)
        where = "--run-dir" if command.endswith("--run-dir") else "--out"
        return ["train", job, "-c", cfg, where, out, "--quiet"], cfg
    if command == "build":  # real mode: the remixes of the real identities read the dataset
        _yaml(cfg, f"stage2_run: {stages[2]}\nout: {out}\nfg_mode: real\ndata_root: {data}\nidentities: 0\n"
                   "images_per_id: 2\n")
        return ["build", "-c", cfg, "--quiet"], cfg
    if command == "cutpaste":
        return ["cutpaste", "--root", data, "--out", out, "--size", "64x32", "--quiet"], None
    if command == "reid":
        return ["reid", "ablate", "-c", _reid_config(tmp_path, data, out), "--quiet"], tmp_path / "reid.yaml"
    if command == "pipeline":
        jobs = "".join(f"{job}: {REPO / 'configs/demo' / job}.yaml\n" for job in ("stage1", "pose", "stage2", "build",
                                                                                 "reid"))
        return ["pipeline", _yaml(cfg, f"out: {out}\nsim_ids: 4\n{jobs}"), "--quiet"], cfg
    if command == "reference-reid":
        _yaml(cfg, f"out: {out}\nsim_ids: 4\nseeds: [0]\nrecipes:\n  - {{name: real}}\n"
                   "  - {name: cutpaste, setting: real+remix, generated: cutpaste}\n")
        return ["reference-reid", cfg, "--quiet"], cfg
    if command == "reference":
        return ["reference", _yaml(cfg, f"out: {out}\n"), "--quiet"], cfg
    assert command == "keypoints"
    return ["keypoints", "--root", data, "--out", out.with_suffix(".csv"), "--quiet"], None


def _refused(capsys, args, out, *needles):
    """Run the CLI with ``args``; assert the one-line refusal holding ``needles`` and that ``out``'s parent is as it
    was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    before = _listing(out.parent)
    line = one_line_error(*run_main(capsys, *args), *needles)
    assert _listing(out.parent) == before, line
    return line


def symlink_loop(data):
    link = _stray(data)
    link.symlink_to(link.name)  # a link to itself
    return [str(link), "symbolic link", "remove it"]


def camera_out_of_range(data):
    bad = _stray(data, "0001_c12s1_999999_01.jpg")
    shutil.copy(_first(data), bad)
    return [str(bad), "camera 12", "c1 to c9"]


def header_only_csv(data):
    csv = data / "market-annotation-train.csv"
    csv.write_text("name:keypoints_y:keypoints_x\n")
    return [str(csv), "has a header and no rows", f"vmarket keypoints --root {data}"]


def stray_text_file(data):
    return text_named_jpg(data)


DATA_COMMANDS = ("check", "train stage1", "train pose", "build", "cutpaste", "reid", "keypoints")
DATA_DEFECTS = {
    symlink_loop: DATA_COMMANDS,
    camera_out_of_range: DATA_COMMANDS,
    # the re-ID model reads no keypoints; `vmarket keypoints` replaces the file (with --overwrite)
    header_only_csv: ("check", "train stage1", "train pose", "build", "cutpaste"),
    # the image itself is named, not the keypoint row a stray file never had
    stray_text_file: ("build", "cutpaste"),
}


@pytest.mark.parametrize("defect, command", [(d, c) for d, cs in DATA_DEFECTS.items() for c in cs],
                         ids=lambda x: getattr(x, "__name__", x))
def test_bad_data_is_refused_by_every_command_that_reads_it(capsys, small, tmp_path, tiny_stages, defect, command):
    needles = defect(small)
    out = tmp_path / "outputs" / "new" / "out"  # its parents are missing too: none may be left behind
    line = _refused(capsys, _invocation(command, small, out, tmp_path, tiny_stages)[0], out.parent, *needles)
    if defect is not header_only_csv:
        assert "keypoint" not in line.split(": error: ", 1)[1]


CONFIG_COMMANDS = ("train stage1", "train pose", "train stage2", "build", "reid", "pipeline", "reference-reid",
                   "reference")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "# caf\xe9\n".encode("latin-1")],
                         ids=["binary", "latin1"])
@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_a_config_that_is_not_utf8_text_is_refused(capsys, sim_small, tmp_path, tiny_stages, command, content):
    out = tmp_path / "outputs" / "out"
    args, cfg = _invocation(command, sim_small, out, tmp_path, tiny_stages)
    cfg.write_bytes(cfg.read_bytes() + content if content.startswith(b"#") else content)
    _refused(capsys, args, out, str(cfg), "not a UTF-8 text file")


OUTPUT_COMMANDS = ("simulate", "train stage1", "train stage1 --run-dir", "train pose", "train stage2", "build",
                   "cutpaste", "reid", "pipeline", "reference-reid")


@pytest.fixture
def unwritable(tmp_path):
    """A folder nothing can be created in: read-only by its mode and, since root ignores modes, immutable
    (chattr +i) when the tests run as root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        try:
            made = subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0
        except FileNotFoundError:
            made = False
        if not made:  # as root only the immutable flag makes a folder unwritable; without it the check is not run
            ro.chmod(0o755)
            pytest.fail("as root a read-only mode is not enforced: this test needs `chattr +i` (e2fsprogs) on a file "
                        "system that supports it")
    yield ro
    if immutable:
        subprocess.run(["chattr", "-i", str(ro)], check=True)
    ro.chmod(0o755)


@pytest.mark.parametrize("command", (*OUTPUT_COMMANDS, "keypoints"))
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_work(capsys, sim_small, tmp_path, tiny_stages,
                                                                            unwritable, command):
    out = unwritable / "out"
    _refused(capsys, _invocation(command, sim_small, out, tmp_path, tiny_stages)[0], out, str(unwritable),
             "cannot write there")


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_an_output_path_that_is_a_file_is_refused_as_a_file(capsys, sim_small, tmp_path, tiny_stages, command):
    out = tmp_path / "outputs" / "out"
    out.parent.mkdir()
    out.write_text("a file\n")
    _refused(capsys, _invocation(command, sim_small, out, tmp_path, tiny_stages)[0], out, str(out), "is a file")
    assert out.read_text() == "a file\n"


@pytest.mark.parametrize("command", (*OUTPUT_COMMANDS, "keypoints"))
def test_an_output_path_under_a_file_is_refused(capsys, sim_small, tmp_path, tiny_stages, command):
    blocker = tmp_path / "outputs" / "a-file"
    blocker.parent.mkdir()
    blocker.write_text("a file\n")
    out = blocker / "out"
    _refused(capsys, _invocation(command, sim_small, out, tmp_path, tiny_stages)[0], blocker, str(blocker),
             "is a file")


def test_a_failed_simulate_leaves_no_work_folder_and_no_parent_it_made(tmp_path, monkeypatch):
    import generator.simmarket.simulate as sim

    def disk_full(path, image, jpeg_quality=95):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sim, "_write_image", disk_full)
    with pytest.raises(OSError, match="No space"):
        sim.simulate(tmp_path / "new" / "deeper" / "out", 4, size=(64, 32), progress=False)
    assert _listing(tmp_path) == []


def test_simulate_allows_more_than_1501_identities_in_layouts_without_that_limit(tmp_path, monkeypatch, capsys):
    import generator.simmarket.simulate as sim

    one_line_error(*run_main(capsys, "simulate", "--out", tmp_path / "m", "--ids", "2000", "--quiet"), "--ids 2000",
                   "1501", "--layout msmt17")

    class Accepted(Exception):
        pass

    def accepted(*args, **kwargs):
        raise Accepted

    monkeypatch.setattr(sim, "make_identities", accepted)  # past every check: the dataset itself is not needed
    for layout in ("msmt17", "cuhk03"):
        with pytest.raises(Accepted):
            sim.simulate(tmp_path / layout, 2000, layout=layout, progress=False)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("parse, name, cameras", [(parse_name, "0001_c12s1_000001_01.jpg", "c1 to c9"),
                                                  (parse_name, "0001_c01s1_000001_01.jpg", "c1 to c9"),
                                                  (parse_duke_name, "0001_c12_f0000001.jpg", "c1 to c8"),
                                                  (parse_duke_name, "0001_c01_f0000001.jpg", "c1 to c8")])
def test_a_camera_out_of_range_is_named_with_the_allowed_range(parse, name, cameras):
    with pytest.raises(UserError, match=f"camera {name.split('_c')[1][:2]} in the name.*{cameras}"):
        parse(name)


def _no_person_source(data):
    """One training image's keypoint row emptied (all -1): a source that shows no person. Returns its name."""
    csv = data / "market-annotation-train.csv"
    kps = read_keypoints_csv(csv)
    name = sorted(kps)[0]
    kps[name][:] = -1
    write_keypoints_csv(csv, kps)
    return name


@pytest.mark.parametrize("command", ("check", "train stage1", "cutpaste"))
def test_a_source_that_shows_no_person_is_reported_and_never_labelled(capsys, small, tmp_path, tiny_stages, command):
    """The documented policy per command: `check` names it, stage I keeps it and counts it (it reads no label),
    cut-and-paste skips it as a person and counts the skip, so no output shows it under its pid. The builder
    reads its people from stage II's embeddings, not the keypoint files: tests/test_remix.py plants them there."""
    name = _no_person_source(small)
    out = tmp_path / "outputs" / "out"
    args, _ = _invocation(command, small, out, tmp_path, tiny_stages)
    rc, stdout, err = run_main(capsys, *args)
    assert rc == 0, err
    if command == "check":
        assert "no visible person: 1 of" in stdout and name in stdout
    elif command == "train stage1":
        log = next(out.rglob("log.txt")).read_text()
        assert "1 training images show no person" in log
    else:
        assert "1 of" in stdout and "no visible person" in stdout
        manifest = pd.read_csv(out / "manifest.csv")
        assert not manifest[["source", "donor"]].astype(str).map(lambda s: s.endswith(name)).any().any()
        assert json.loads((out / "cutpaste.json").read_text())["summary"]["skipped_no_person"] == 1
