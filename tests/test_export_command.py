"""`vmarket export`: every exported image sits under the pid of the person it shows, a test split's identities stay
apart from the training ones, the MSMT17 export loads in torchreid, and bad input is one line with nothing left."""
import errno
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import one_line_error, run_main

import augment.makers.export as export_module
from augment.makers.build_output import export_build
from generator.data.layouts import scan_dataset
from generator.simmarket.simulate import simulate
from reid.torchreid_adapter import import_torchreid


def exported(folder: Path) -> dict[str, tuple[str, int]]:
    """{file name: (split, pid)} of an imagefolder export, read from where each file sits."""
    files = {}
    for path in folder.glob("*/*/*.jpg"):
        split, pid = path.parent.parent.name, int(path.parent.name)
        assert path.name not in files, path
        files[path.name] = (split, pid)
    return files


def test_a_cutpaste_output_exports_every_image_under_its_real_pid(capsys, real_and_cutpaste, tmp_path):
    _, cp = real_and_cutpaste
    out = tmp_path / "if"
    rc, stdout, err = run_main(capsys, "export", cp, "--out", out, "--quiet")
    assert rc == 0, err
    manifest = pd.read_csv(cp / "manifest.csv")
    files = exported(out)
    assert len(files) == len(manifest) and {s for s, _ in files.values()} == {"train"}  # training-only: no test
    for row in manifest.itertuples():
        name = Path(row.path).name
        assert files[name] == ("train", row.pid)  # the manifest's pid: the person the image shows
        assert os.path.samefile(out / "train" / f"{row.pid:04d}" / name, cp / row.path)  # a hard link
    assert "imagefolder export" in (out / "README.txt").read_text()
    assert f"{len(manifest)} images of {manifest.pid.nunique()} identities" in stdout
    assert not (tmp_path / ".if.partial").exists()


def test_a_dataset_with_a_test_split_keeps_its_splits_apart_and_leaves_out_junk(capsys, real_and_cutpaste, tmp_path):
    real, _ = real_and_cutpaste
    out = tmp_path / "if"
    rc, stdout, err = run_main(capsys, "export", real, "--out", out, "--quiet")
    assert rc == 0, err
    records = scan_dataset(real, keep_junk=True)
    person = [r for r in records if r.is_person]
    files = exported(out)
    assert len(files) == len(person) < len(records)  # junk and distractors show no identity: left out
    for r in person:
        assert files[r.name] == (r.split, r.pid)
    pids = {s: {p for split, p in files.values() if split == s} for s in ("train", "query", "gallery")}
    assert pids["train"] and pids["query"] and not pids["train"] & (pids["query"] | pids["gallery"])
    assert f"{len(records) - len(person)} junk or distractor images left out" in stdout


def test_the_msmt17_export_loads_in_torchreids_msmt17(capsys, real_and_cutpaste, tmp_path):
    real, _ = real_and_cutpaste
    rc, _, err = run_main(capsys, "export", real, "--out", tmp_path / "m", "--to", "msmt17", "--quiet")
    assert rc == 0, err
    import_torchreid()
    from torchreid.reid.data.datasets.image.msmt17 import MSMT17

    ds = MSMT17(root=str(tmp_path / "m"), verbose=False)
    person = [r for r in scan_dataset(real) if r.is_person]
    for split, rows in (("train", ds.train), ("query", ds.query), ("gallery", ds.gallery)):
        mine = [r for r in person if r.split == split]
        assert len(rows) == len(mine)
        # labels 0..N-1 over the sorted pids: each row's folder is its real pid, its label that pid's rank
        group = mine if split == "train" else [r for r in person if r.split != "train"]
        ranks = {pid: i for i, pid in enumerate(sorted({r.pid for r in group}))}
        for path, label, _, _ in rows:
            assert label == ranks[int(Path(path).parent.name)]
    assert ds.num_train_pids == len({r.pid for r in person if r.split == "train"})


def test_a_builds_imagefolder_export_is_split_by_split(tmp_path):
    """A build with a test split: imagefolder/train/ holds its training identities alone."""
    out = tmp_path / "vm"
    rows = []
    for split, pid, cam in (("train", 1, 1), ("train", 1, 2), ("train", 2, 3), ("query", 3, 1), ("gallery", 3, 2)):
        folder = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}[split]
        name = f"{pid:04d}_c{cam}s1_{len(rows):06d}_01.jpg"
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / folder / name).write_bytes(b"jpeg")
        rows.append({"path": f"{folder}/{name}", "split": split, "pid": pid, "camid": cam})
    export_build(out, pd.DataFrame(rows), "imagefolder")
    assert exported(out / "imagefolder") == {Path(r["path"]).name: (r["split"], r["pid"]) for r in rows}
    assert not list(out.glob(".*partial"))


def test_bad_exports_are_one_line_and_leave_nothing(capsys, real_and_cutpaste, tmp_path):
    real, cp = real_and_cutpaste
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("x")
    one_line_error(*run_main(capsys, "export", cp, "--out", tmp_path / "full"), "full", "not empty")
    one_line_error(*run_main(capsys, "export", real, "--out", real / "inside"), "inside", "lies inside", "DATASET")
    assert not (real / "inside").exists()
    (tmp_path / "empty").mkdir()
    one_line_error(*run_main(capsys, "export", tmp_path / "empty", "--out", tmp_path / "new" / "x"), "empty")
    assert not (tmp_path / "new").exists()
    rc, _, err = run_main(capsys, "export", cp, "--out", tmp_path / "y", "--to", "zip")
    assert rc == 2 and "invalid choice" in err


def test_a_killed_export_leaves_nothing_under_out_and_runs_again(capsys, real_and_cutpaste, tmp_path, monkeypatch):
    _, cp = real_and_cutpaste
    out = tmp_path / "new" / "if"
    calls = []

    def dies_on_the_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        os.link(src, dst)
        return True

    monkeypatch.setattr(export_module, "link_or_copy", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        export_module.export_dataset(cp, out, progress=False)
    assert list(tmp_path.iterdir()) == []  # no OUT, no work folder, no parent it made
    monkeypatch.undo()
    # a kill -9 leaves the work folder behind: the rerun clears it and starts over
    (tmp_path / "new" / ".if.partial" / "train").mkdir(parents=True)
    (tmp_path / "new" / ".if.partial" / ".vmarket-export").write_text("unfinished vmarket export\n")
    rc, _, err = run_main(capsys, "export", cp, "--out", out, "--quiet")
    assert rc == 0, err
    assert len(exported(out)) == len(pd.read_csv(cp / "manifest.csv"))
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["if"]


def test_a_test_identity_in_the_training_split_is_refused(capsys, real_and_cutpaste, tmp_path):
    """Its images would join train/ beside the query's: ImageFolder would train on a test identity."""
    real, _ = real_and_cutpaste
    data = tmp_path / "data"
    shutil.copytree(real, data)
    query = sorted((data / "query").glob("*.jpg"))[0]
    shutil.copy(query, data / "bounding_box_train" / query.name)
    one_line_error(*run_main(capsys, "export", data, "--out", tmp_path / "out"), query.name,
                   "the training split holds too")
    assert not (tmp_path / "out").exists()


def test_an_msmt17_layout_counts_its_train_and_test_people_apart(capsys, tmp_path):
    """MSMT17 numbers the training and the test identities from 0 each: the same number is two people."""
    data = tmp_path / "msmt"
    simulate(data, 8, seed=2, size=(64, 32), progress=False, layout="msmt17")
    rc, stdout, err = run_main(capsys, "export", data, "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    person = [r for r in scan_dataset(data) if r.is_person]
    assert {r.pid for r in person if r.split == "train"} & {r.pid for r in person if r.split != "train"}
    assert "of 8 identities" in stdout
    files = exported(tmp_path / "out")
    assert len(files) == len(person) and all(files[r.name] == (r.split, r.pid) for r in person)


def test_copies_across_file_systems_are_counted_and_a_training_only_msmt17_export_says_what_loads_it(
        capsys, real_and_cutpaste, tmp_path, monkeypatch):
    _, cp = real_and_cutpaste

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    rc, stdout, err = run_main(capsys, "export", cp, "--out", tmp_path / "m", "--to", "msmt17", "--quiet")
    assert rc == 0, err
    n = len(pd.read_csv(cp / "manifest.csv"))
    assert "; copies (no hard link possible);" in stdout
    assert "no query" in stdout and "register_with_extra_training" in stdout
    assert len(list((tmp_path / "m" / "msmt17" / "MSMT17_V1" / "train").glob("*/*.jpg"))) == n


def test_an_output_that_is_a_link_or_the_current_folder_is_refused(capsys, real_and_cutpaste, tmp_path, monkeypatch):
    """The export is renamed onto OUT: it would replace a link, and the current folder cannot be replaced."""
    _, cp = real_and_cutpaste
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    one_line_error(*run_main(capsys, "export", cp, "--out", tmp_path / "link"), "symbolic link", "folder itself")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    one_line_error(*run_main(capsys, "export", cp, "--out", "."), "the current folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "link", "target"]
    assert not any((tmp_path / "here").iterdir()) and not any((tmp_path / "target").iterdir())


def test_an_index_that_names_an_image_twice_is_refused(capsys, tmp_path):
    data = tmp_path / "msmt"
    simulate(data, 6, seed=2, size=(64, 32), progress=False, layout="msmt17")
    lst = next(data.rglob("list_train.txt"))
    first = lst.read_text().splitlines()[0]
    lst.write_text(lst.read_text() + first + "\n")
    one_line_error(*run_main(capsys, "export", data, "--out", tmp_path / "out"), "named twice", "duplicate")
    assert not (tmp_path / "out").exists()


def test_the_msmt17_export_keeps_each_images_suffix(capsys, tmp_path):
    """CUHK03 images are PNGs: their MSMT17 names end in .png, as the bytes are."""
    data = tmp_path / "cuhk"
    simulate(data, 6, seed=2, size=(64, 32), progress=False, layout="cuhk03")
    sources = {Path(r.path).suffix for r in scan_dataset(data) if r.is_person}
    rc, _, err = run_main(capsys, "export", data, "--out", tmp_path / "m", "--to", "msmt17", "--quiet")
    assert rc == 0, err
    written = {p.suffix for p in (tmp_path / "m" / "msmt17" / "MSMT17_V1").glob("*/*/*.*")}
    assert written == sources == {".png"}


def test_a_builds_export_is_written_once_and_a_killed_ones_work_is_cleared(tmp_path):
    out = tmp_path / "vm"
    (out / "bounding_box_train").mkdir(parents=True)
    (out / "bounding_box_train" / "0001_c1s1_000000_01.jpg").write_bytes(b"jpeg")
    df = pd.DataFrame([{"path": "bounding_box_train/0001_c1s1_000000_01.jpg", "split": "train", "pid": 1,
                        "camid": 1}])
    (out / ".imagefolder.partial" / "train" / "0009").mkdir(parents=True)  # what a killed shard left
    export_build(out, df, "imagefolder")
    assert exported(out / "imagefolder") == {"0001_c1s1_000000_01.jpg": ("train", 1)}
    assert not list(out.glob(".*partial"))
    (out / "imagefolder" / "train" / "0001" / "kept.jpg").write_bytes(b"x")  # a finished export is kept as it is
    export_build(out, df, "imagefolder")
    assert (out / "imagefolder" / "train" / "0001" / "kept.jpg").exists()


@pytest.mark.parametrize("links", [True, False], ids=["link", "copy"])
def test_link_or_copy_never_replaces_a_file(tmp_path, monkeypatch, links):
    from generator.io import link_or_copy

    (tmp_path / "src").write_text("new")
    (tmp_path / "dst").write_text("old")
    if not links:
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    with pytest.raises(FileExistsError):
        link_or_copy(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_text() == "old"
    assert link_or_copy(tmp_path / "src", tmp_path / "other") is links and (tmp_path / "other").read_text() == "new"


def test_the_export_command_an_outputs_readme_gives_runs_as_written(capsys, real_and_cutpaste, tmp_path):
    _, cp = real_and_cutpaste
    text = " ".join((cp / "README.txt").read_text().split())
    folder = re.search(r"vmarket export (\S+) --out DIR", text).group(1)
    assert Path(folder) == cp.resolve()
    rc, _, err = run_main(capsys, "export", folder, "--out", tmp_path / "if", "--quiet")
    assert rc == 0, err
    assert len(exported(tmp_path / "if")) == len(pd.read_csv(cp / "manifest.csv"))
