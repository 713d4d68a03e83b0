"""Bad input through every command that reads or writes it (data, configs, output folders), run in this process
(``run_main``): exit code 2, one line naming the file or option and the fix, and nothing left in the output's
parent (no half-written output, no empty folder the refused command made on its way there)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import one_line_error, run_main
from test_bad_input import _first, _reid_config, _stray, text_named_jpg
from tiny import tiny_pose, tiny_stage1, tiny_stage2

from generator.config import save_config
from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv
from generator.data.layouts import parse_duke_name
from generator.data.market import parse_name
from generator.errors import UserError

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
    if command == "export":
        return ["export", data, "--out", out, "--quiet"], None
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


DATA_COMMANDS = ("check", "train stage1", "train pose", "build", "cutpaste", "reid", "keypoints", "export")
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
                   "cutpaste", "reid", "pipeline", "reference-reid", "export")


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


def _beside_invocation(command, data, out, tmp_path, stages):
    if command == "browse":
        return ["browse", data, "--out", out, "--quiet"]
    if command == "filter":  # the output is checked before the model is read
        return ["filter", "--model", tmp_path / "state.pt", "--real-root", data, "--generated", data, "--out", out,
                "--quiet"]
    return _invocation(command, data, out, tmp_path, stages)[0]


@pytest.mark.parametrize("command", ("simulate", "cutpaste", "export", "browse", "filter"))
def test_an_output_written_beside_and_renamed_refuses_a_link_and_the_current_folder(capsys, sim_small, tmp_path,
                                                                                     tiny_stages, monkeypatch, command):
    """These commands write OUT's contents beside it and rename them onto it: that would replace a link to a folder
    (not fill the folder), and the current folder cannot be replaced."""
    (tmp_path / "target").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    _refused(capsys, _beside_invocation(command, sim_small, link, tmp_path, tiny_stages), link, str(link),
             "symbolic link", "folder itself")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    args = _beside_invocation(command, sim_small, Path("."), tmp_path, tiny_stages)
    one_line_error(*run_main(capsys, *args), "the current folder")
    assert not any(here.iterdir()) and not any((tmp_path / "target").iterdir())


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
