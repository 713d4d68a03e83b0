"""Other re-ID datasets in: DukeMTMC-reID, MSMT17 and CUHK03 (new protocol, detected and labelled) besides
Market-1501, as the generator's data.root and the re-ID ablation's real_root.

Tiny SimMarket datasets written in each layout (``vmarket simulate --layout``) are detected and read with the
counts, pids and cameras of their manifest, into the records torchreid's own dataset classes give; stage I and the
re-ID ablation train on them through the normal code paths; a mismatched folder is one line and exit code 2.
"""
import os
import shutil
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error, run_main
from scipy.io import loadmat, savemat
from tiny import tiny_pose, tiny_stage1

from augment.cli import main as cli_main
from augment.makers.cutpaste import cut_paste
from generator.config import load_config, save_config
from generator.data.dataset import person_dataset
from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv, yx_to_rcv
from generator.data.layouts import detect_format, keypoint_file, scan_dataset
from generator.errors import UserError
from generator.eval.stage1_report import evaluate
from generator.simmarket.simulate import simulate
from generator.training.pose_ae import train as train_pose
from generator.training.stage1 import Stage1Config
from generator.training.stage1 import train as train_stage1
from reid.ablation import AblationConfig, run_ablation
from reid.torchreid_adapter import import_torchreid, market_records
from reid.train import ReidTrainConfig

# layout -> (dataset folder simulate writes, the root we are given), under a folder laid out as torchreid's `root`
WHERE = {"market1501": ("market1501", "market1501"), "duke": ("dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid"),
         "msmt17": ("msmt17/MSMT17_V1", "msmt17"), "cuhk03": ("cuhk03", "cuhk03")}
# (layout simulate writes, format option): cuhk03 is read as detected (auto) and labelled (explicit)
CASES = [("market1501", "auto"), ("duke", "auto"), ("msmt17", "auto"), ("cuhk03", "auto"),
         ("cuhk03", "cuhk03_labeled")]
CASE_IDS = [f"{layout}-{fmt}" for layout, fmt in CASES]


@pytest.fixture(scope="module")
def tiny_layouts(tmp_path_factory):
    """{layout: (root, dataset folder, summary)}: the same 16-identity 64x32 SimMarket in each layout."""
    base = tmp_path_factory.mktemp("layouts")
    out = {}
    for layout, (folder, root) in WHERE.items():
        summary = simulate(base / folder, 16, seed=5, size=(64, 32), progress=False, layout=layout)
        out[layout] = (base / root, base / folder, summary)
    return out


def _expected_format(layout: str, fmt: str) -> str:
    return fmt if fmt != "auto" else {"cuhk03": "cuhk03_detected"}.get(layout, layout)


@pytest.mark.parametrize("layout, fmt", CASES, ids=CASE_IDS)
def test_layout_is_detected_and_read_with_the_manifests_pids_and_cameras(tiny_layouts, layout, fmt):
    root, folder, summary = tiny_layouts[layout]
    assert detect_format(root) == _expected_format(layout, "auto")
    records = scan_dataset(root, fmt=fmt)
    assert {r.layout for r in records} == {_expected_format(layout, fmt)}
    m = pd.read_csv(folder / "manifest.csv")
    m = m[m.pid != -1] if layout == "market1501" else m  # Market junk is dropped, as torchreid does
    assert len(m) == len(records) and (m.pid != -1).all()
    truth = {row.path: (row.split, row.pid, row.camid) for row in m.itertuples()}
    image_dir = "images_labeled" if fmt == "cuhk03_labeled" else "images_detected"
    for r in records:
        rel = Path(r.path).relative_to(folder.resolve()).as_posix()
        assert truth[rel.replace(image_dir, "images_detected")] == (r.split, r.pid, r.camid), r
    counts = Counter(r.split for r in records)
    assert counts["train"] == summary["train"] and counts["query"] == summary["query"]
    assert len({r.pid for r in records if r.split == "train"}) == summary["train_ids"]
    assert all(r.is_person for r in records if r.split != "gallery")
    if layout == "msmt17":  # MSMT17 numbers train and test identities from 0 each; rows named by sub-path
        assert min(r.pid for r in records if r.split == "train") == 0 == min(r.pid for r in records
                                                                            if r.split == "query")
        assert all(r.keypoint_name == Path(r.path).relative_to(Path(r.path).parents[1]).as_posix() for r in records)
    if layout == "cuhk03":
        assert {r.camid for r in records} == {1, 2}  # the two views
    for split in ("train", "query"):
        rows = read_keypoints_csv(keypoint_file(root, split, fmt))
        assert all(r.keypoint_name in rows for r in records if r.split == split)


def _sorted(records):
    return sorted((os.path.realpath(p), pid, cam) for p, pid, cam, *_ in records)


def _equal_up_to_train_relabelling(ours, theirs):
    """torchreid relabels training pids 0..N-1 (in set order); ours stay raw until register_dataset."""
    ours, theirs = _sorted(ours), _sorted(theirs)
    assert [(p, c) for p, _, c in ours] == [(p, c) for p, _, c in theirs]
    mapping = {}
    for (_, a, _), (_, b, _) in zip(ours, theirs, strict=True):
        assert mapping.setdefault(a, b) == b
    assert len(set(mapping.values())) == len(mapping)


@pytest.mark.parametrize("layout, fmt", CASES[1:], ids=CASE_IDS[1:])
def test_records_equal_torchreids_own_dataset_class(tiny_layouts, tmp_path, monkeypatch, layout, fmt):
    """Pointed at the same folder, torchreid's DukeMTMCreID / MSMT17 / CUHK03 give our records (Market-1501:
    tests/test_torchreid_market.py)."""
    import_torchreid()
    from torchreid.reid.data.datasets.image import cuhk03, dukemtmcreid, msmt17

    root, folder, _ = tiny_layouts[layout]
    ours = market_records(root, fmt=fmt)
    if layout == "duke":
        theirs = dukemtmcreid.DukeMTMCreID(root=str(root.parent), verbose=False)
    elif layout == "msmt17":
        theirs = msmt17.MSMT17(root=str(root.parent), verbose=False)
        assert [(os.path.realpath(p), pid, c) for p, pid, c, _ in theirs.train] == ours["train"]  # order kept too
    else:
        # torchreid needs cuhk03_release/cuhk-03.mat (h5py) only to extract images and the 20 classic splits: with
        # the images already extracted and the raw file stubbed empty, its own new-protocol code reads our .mat
        work = tmp_path / "cuhk03"
        shutil.copytree(folder, work)
        (work / "cuhk03_release").mkdir()
        (work / "cuhk03_release" / "cuhk-03.mat").touch()
        empty = {k: np.zeros((1, 0)) for k in ("detected", "labeled", "testsets")}
        monkeypatch.setitem(sys.modules, "h5py", types.SimpleNamespace(File=lambda *a, **k: empty))
        theirs = cuhk03.CUHK03(root=str(tmp_path), cuhk03_labeled=fmt == "cuhk03_labeled", verbose=False)
        ours = market_records(work, fmt=fmt)
    _equal_up_to_train_relabelling(ours["train"], theirs.train)
    assert _sorted(ours["query"]) == _sorted(theirs.query)
    assert _sorted(ours["gallery"]) == _sorted(theirs.gallery)


@pytest.mark.parametrize("layout, fmt", CASES, ids=CASE_IDS)
def test_stage1_and_pose_ae_train_a_step_on_each_layout(tiny_layouts, tmp_path, layout, fmt):
    root, folder, summary = tiny_layouts[layout]
    result = train_stage1(tiny_stage1(root, **{"train.steps": 1, "data.format": fmt}), tmp_path / "s1",
                          progress=False)
    assert result["step"] == 1 and (tmp_path / "s1" / "snapshot.pt").is_file()
    assert f"stage1: {summary['train']} images from {root}" in (tmp_path / "s1" / "log.txt").read_text()
    train_pose(tiny_pose(root, **{"train.steps": 1, "data.format": fmt}), tmp_path / "pose", progress=False)
    assert (tmp_path / "pose" / "snapshot.pt").is_file()
    if fmt == "auto" and layout != "market1501":  # the SimMarket evaluation finds each layout's keypoint rows
        report = evaluate(tmp_path / "s1", folder, tmp_path / "eval", pairs=2, limit=4)
        assert report["reconstruction"]["images"] == 4 and report["swaps"]


@pytest.mark.parametrize("layout, fmt", CASES, ids=CASE_IDS)
def test_reid_ablation_trains_an_epoch_with_real_root_in_each_layout(tiny_layouts, tmp_path, layout, fmt):
    root, _, summary = tiny_layouts[layout]
    train = ReidTrainConfig(epochs=1, steps_per_epoch=1, batch=8, workers=0, size=[64, 32], device="cpu")
    cfg = AblationConfig(real_root=str(root), real_format=fmt, settings=["real"], seeds=[0], train=train,
                         out=str(tmp_path / "abl"))
    (res,) = run_ablation(cfg, progress=False)
    assert res["steps"] == 1 and 0 <= res["rank1"] <= 1 and 0 < res["mAP"] <= 1
    assert "real_format: " + fmt in (tmp_path / "abl" / "config.yaml").read_text()


def test_each_splits_keypoint_rows_come_from_its_own_csv(tiny_layouts, tmp_path):
    """MSMT17 numbers train and test identities from 0, so a test row may carry a training image's name: each
    image takes the row of its own split's CSV."""
    _, folder, _ = tiny_layouts["msmt17"]
    data = tmp_path / "MSMT17_V1"
    shutil.copytree(folder, data)
    train_rows = read_keypoints_csv(data / "market-annotation-train.csv")
    test_rows = read_keypoints_csv(data / "market-annotation-test.csv")
    name = next(iter(train_rows))
    write_keypoints_csv(data / "market-annotation-test.csv", {**test_rows, name: np.full((18, 2), 7)})
    ds = person_dataset(tmp_path, ("train", "query", "gallery"), size=(64, 32))
    i = next(k for k, r in enumerate(ds.records) if r.split == "train" and r.keypoint_name == name)
    assert (ds.rcv[i] == yx_to_rcv(train_rows[name])).all()


def test_cut_and_paste_takes_duke_and_writes_msmt17_in_its_own_layout(tiny_layouts, tmp_path):
    root, _, summary = tiny_layouts["duke"]
    s = cut_paste(root, tmp_path / "cp", size=(64, 32), progress=False)
    assert s["images"] == summary["train"] and s["layout"] == "market1501"
    assert len(scan_dataset(tmp_path / "cp", ("train",))) == summary["train"]  # written in the Market-1501 layout
    root, _, summary = tiny_layouts["msmt17"]  # identities from 0, which Market-1501 names cannot carry
    s = cut_paste(root, tmp_path / "cp2", size=(64, 32), progress=False)
    assert s["images"] == summary["train"] and s["layout"] == "msmt17"
    written = scan_dataset(tmp_path / "cp2", ("train",))
    assert detect_format(tmp_path / "cp2") == "msmt17" and len(written) == summary["train"]
    assert {r.pid for r in written} == {r.pid for r in scan_dataset(root, ("train",))}


def _mini_duke(root, *names):
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (root / d).mkdir(parents=True)
    for n in names:
        (root / "bounding_box_train" / n).touch()
    return root


def _mini_cuhk03(root, **fields):
    root.mkdir()
    (root / "images_detected").mkdir()
    filelist = np.empty((1, 1), dtype=object)
    filelist[0, 0] = "1_001_1_01.png"
    config = {"filelist": filelist, "labels": np.array([[1]]), "train_idx": np.array([[1]]),
              "query_idx": np.array([[1]]), "gallery_idx": np.array([[1]]), **fields}
    savemat(str(root / "cuhk03_new_protocol_config_detected.mat"), {k: v for k, v in config.items() if v is not None})
    return root


def _mini_msmt17(root, line):
    (root / "train" / "0000").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "list_train.txt").write_text(line)
    return root


# a defective folder -> the format asked for, and what the one-line error must say
BAD = {
    "nothing": (lambda d: d.mkdir() or d, "auto", ["no re-ID dataset found", "list_train.txt"]),
    "duke_camera_9": (lambda d: _mini_duke(d, "0001_c9_f0000001.jpg"), "auto",
                      ["0001_c9_f0000001.jpg", "cameras with one digit, c1 to c8"]),
    "duke_bad_name": (lambda d: _mini_duke(d, "0001_c1_f0000001.jpg", "0001_x.jpg"), "duke",
                      ["0001_x.jpg", "not a DukeMTMC-reID image name"]),
    "msmt17_bad_line": (lambda d: _mini_msmt17(d, "0000/0000_000_01_0303morning_0015_0.jpg\n"), "auto",
                        ["list_train.txt:1", "RELATIVE/PATH.jpg PID"]),
    "msmt17_no_camera": (lambda d: _mini_msmt17(d, "0000/0000.jpg 0\n"), "msmt17",
                         ["list_train.txt:1", "no camera"]),
    "msmt17_missing_image": (lambda d: _mini_msmt17(d, "0000/0000_000_01_0303morning_0015_0.jpg 0\n"), "auto",
                             ["list_train.txt:1", "0000_000_01_0303morning_0015_0.jpg: missing image"]),
    "cuhk03_no_labels": (lambda d: _mini_cuhk03(d, labels=None), "auto", ["config_detected.mat", "no 'labels'"]),
    "cuhk03_missing_image": (lambda d: _mini_cuhk03(d), "auto", ["1_001_1_01.png: missing image"]),
    "cuhk03_labeled_not_there": (lambda d: _mini_cuhk03(d), "cuhk03_labeled",
                                 ["cuhk03_new_protocol_config_labeled.mat", "set data.format: cuhk03_detected"]),
    "msmt17_forced_on_duke": (lambda d: _mini_duke(d, "0001_c1_f0000001.jpg"), "msmt17",
                              ["holds DukeMTMC-reID, not MSMT17", "set data.format: duke"]),
}


@pytest.mark.parametrize("defect", BAD)
def test_bad_folder_is_a_user_error_naming_the_file_and_fix(tmp_path, defect):
    make, fmt, needles = BAD[defect]
    root = make(tmp_path / "data")
    with pytest.raises(UserError) as e:
        scan_dataset(root, fmt=fmt, fmt_key="data.format")  # as a config's key names the format
    for n in needles:
        assert n in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_format_choices_are_checked_where_the_config_loads():
    with pytest.raises(UserError, match="data.format: 'dukemtmc' is not a valid choice; use one of auto, market1501"):
        load_config(Stage1Config, None, ["data.format=dukemtmc"])
    with pytest.raises(UserError, match="real_format: 'msmt' is not a valid choice"):
        load_config(AblationConfig, None, ["real_format=msmt"])
    assert load_config(Stage1Config, None, ["data.format=cuhk03_labeled"]).data.format == "cuhk03_labeled"


@pytest.mark.timeout(120)  # torchreid retries an unreadable image forever: a regression fails, not hangs
def test_cli_refuses_an_msmt17_list_naming_a_missing_image(tmp_path, capsys):
    data = tmp_path / "msmt17"
    # `vmarket simulate --layout` and the refusal in this process (a subprocess costs seconds of imports)
    assert cli_main(["simulate", "--out", str(data), "--ids", "4", "--size", "64x32", "--layout", "msmt17",
                     "--quiet"]) == 0
    assert "in the msmt17 layout" in capsys.readouterr().out
    assert detect_format(data) == "msmt17" and (data / "list_val.txt").is_file()
    first = (data / "list_query.txt").read_text().splitlines()[0].split()[0]
    (data / "test" / first).unlink()
    cfg = tmp_path / "reid.yaml"
    cfg.write_text(f"real_root: {data}\nsettings: [real]\nseeds: [0]\nout: {tmp_path / 'abl'}\n"
                   "train: {epochs: 1, batch: 8, workers: 0}\n")
    one_line_error(*run_main(capsys, "reid", "ablate", "-c", cfg, "--quiet"), "list_query.txt:1",
                   f"{data / 'test' / first}: missing image", "restore it or remove the line")
    assert not (tmp_path / "abl").exists()


@pytest.mark.timeout(120)
def test_cli_refuses_a_forced_format_that_does_not_match(capsys, tiny_layouts, tmp_path):
    root, _, _ = tiny_layouts["duke"]
    cfg, run = tmp_path / "stage1.yaml", tmp_path / "run"
    save_config(tiny_stage1(root, **{"train.steps": 1, "data.format": "msmt17"}), cfg)
    one_line_error(*run_main(capsys, "train", "stage1", "-c", cfg, "--run-dir", run, "--quiet"),
                   str(root), "holds DukeMTMC-reID, not MSMT17 (data.format: msmt17)", "set data.format: duke")
    assert not run.exists()


def test_labels_that_contradict_the_names_are_refused_before_an_image_is_written(tiny_layouts, tmp_path, capsys):
    """An MSMT17 list line or a CUHK03 label that gives one of a person's images another label than its other images
    (or two persons one label) is refused by check and by every reader, naming the line; cut-and-paste would
    otherwise write the image under an identity it does not show."""
    ms = tmp_path / "msmt17"
    shutil.copytree(tiny_layouts["msmt17"][1], ms)
    lines = (ms / "list_train.txt").read_text().splitlines()
    person, label = lines[0].split()[0].split("/")[0], lines[0].split()[1]
    other = next(line.split()[1] for line in lines if line.split()[1] != label)
    (ms / "list_train.txt").write_text("\n".join([f"{lines[0].split()[0]} {other}", *lines[1:]]) + "\n")
    one_line_error(*run_main(capsys, "check", "--root", ms), f"list_train.txt:1: label {other}, while the other "
                   f"images of person {person} have label {label}; a person has one label: fix it")
    one_line_error(*run_main(capsys, "cutpaste", "--root", ms, "--out", tmp_path / "pasted", "--size", "64x32",
                             "--quiet"), "list_train.txt:1: label")
    assert not (tmp_path / "pasted").exists()
    # every image of one person relabelled as another: two persons, one label
    theirs = [line for line in lines if line.split()[0].split("/")[0] == person]
    (ms / "list_train.txt").write_text("\n".join(
        [f"{line.split()[0]} {other}" if line in theirs else line for line in lines]) + "\n")
    one_line_error(*run_main(capsys, "check", "--root", ms), f"label {other} is given to person", "two persons "
                   "cannot share a label")

    cu = tmp_path / "cuhk03"
    shutil.copytree(tiny_layouts["cuhk03"][1], cu)
    mat_path = cu / "cuhk03_new_protocol_config_detected.mat"
    mat = {k: v for k, v in loadmat(str(mat_path)).items() if not k.startswith("__")}
    names = [str(f.ravel()[0]) for f in mat["filelist"].ravel()]
    mat["labels"] = mat["labels"].copy()
    mat["labels"].ravel()[1] = 77
    savemat(str(mat_path), mat)
    one_line_error(*run_main(capsys, "check", "--root", cu), f"labels[1] (filelist {names[1]!r}): label 77, while "
                   f"the other images of person {'_'.join(names[1].split('_')[:2])} have label")
    mat["labels"] = mat["labels"] + 0.5
    savemat(str(mat_path), mat)
    one_line_error(*run_main(capsys, "check", "--root", cu), "labels are not whole numbers")
    for cut in (b"", mat_path.read_bytes()[:100], b"garbage\n"):  # empty, truncated, not MATLAB data
        mat_path.write_bytes(cut)
        one_line_error(*run_main(capsys, "check", "--root", cu), f"{mat_path}: unreadable .mat file",
                       "replace it with CUHK03's new-protocol file")
