"""The identity-consistency filter (reid.consistency): a planted image of the wrong identity is dropped, a new
identity too near a real one is dropped, and the filtered folder is a Market-1501 training set with its report."""
import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import one_line_error
from PIL import Image

import reid.consistency as C
from augment.cli import main
from augment.makers.plates import ORIGINS
from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv
from generator.data.manifest import write_manifest
from generator.data.market import format_name, parse_name
from generator.errors import UserError
from generator.io import atomic_save
from generator.training.runs import capture_state
from reid.torchreid_adapter import build_model, import_torchreid, market_records

SIZE = (64, 32)


def _onehot(index: list[int], dim: int, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    f = torch.nn.functional.one_hot(torch.tensor(index), dim).float()
    if noise:
        f = f + noise * torch.randn(f.shape, generator=torch.Generator().manual_seed(seed))
    return f


def test_identity_centroids_are_normalised_means():
    feats = torch.tensor([[2.0, 0.0], [0.0, 5.0], [3.0, 4.0], [0.0, 1.0]])
    ids, cent = C.identity_centroids(feats, np.array([7, 7, 3, 3]))
    assert ids.tolist() == [3, 7]
    assert torch.allclose(cent.norm(dim=1), torch.ones(2))
    # pid 7: mean of (1, 0) and (0, 1), normalised; the 5x scale of one feature does not weigh it more
    assert torch.allclose(cent[1], torch.tensor([1.0, 1.0]) / 2 ** 0.5)
    assert torch.allclose(cent[0], torch.nn.functional.normalize(torch.tensor([0.6, 1.8]), dim=0))


def test_keep_drops_a_planted_image_of_the_wrong_identity():
    real_pids = np.repeat([2, 5, 9], 4)
    real = _onehot([0] * 4 + [1] * 4 + [2] * 4, 3, noise=0.1)
    # generated: two good images of pid 2 and 5 each, and one of pid 5 (its features) labelled pid 2
    gen = _onehot([0, 0, 1, 1, 1], 3, noise=0.1, seed=1)
    gen_pids = np.array([2, 2, 5, 5, 2])
    keep, reasons = C.consistency_keep(gen, gen_pids, real, real_pids, new_tau=0.9)
    assert keep.tolist() == [True, True, True, True, False]
    assert reasons[:4].tolist() == [""] * 4
    assert reasons[4].startswith("nearer pid 5 (cos ") and "vs own" in reasons[4]


def test_keep_new_identities_near_a_real_one_are_dropped():
    real_pids = np.repeat([2, 5, 9], 4)
    real = _onehot([0] * 4 + [1] * 4 + [2] * 4, 4, noise=0.05)
    near = _onehot([2], 4) + 0.1 * _onehot([3], 4)  # cos 0.995 to pid 9's centroid
    far = _onehot([3], 4) + 0.3 * _onehot([0], 4)  # cos ~0.29 to pid 2's, the nearest
    keep, reasons = C.consistency_keep(torch.cat([near, far]), np.array([101, 102]), real, real_pids, new_tau=0.9)
    assert keep.tolist() == [False, True]
    assert reasons[0].startswith("near real pid 9 (cos 0.99") and reasons[1] == ""
    # new identities whose pid numbers repeat real ones (a Virtual Market build numbers them 1..N): told by is_new
    keep2, reasons2 = C.consistency_keep(torch.cat([near, far]), np.array([2, 5]), real, real_pids, new_tau=0.9,
                                         is_new=np.array([True, True]))
    assert keep2.tolist() == [False, True] and reasons2[0] == reasons[0]
    # the threshold is inclusive, and a looser one keeps both
    cos = float(torch.nn.functional.cosine_similarity(near, C.identity_centroids(real, real_pids)[1][2:3]))
    assert not C.consistency_keep(near, np.array([101]), real, real_pids, new_tau=cos - 1e-6)[0][0]
    assert C.consistency_keep(torch.cat([near, far]), np.array([101, 102]), real, real_pids, new_tau=0.999)[0].all()


def test_keep_is_deterministic():
    g = torch.Generator().manual_seed(3)
    real, gen = torch.randn(60, 16, generator=g), torch.randn(200, 16, generator=g)
    real_pids = np.repeat(np.arange(1, 13), 5)
    gen_pids = np.concatenate([np.random.default_rng(0).integers(1, 13, 150), np.arange(500, 550)])
    a = C.consistency_keep(gen, gen_pids, real, real_pids, new_tau=0.3)
    b = C.consistency_keep(gen.clone(), gen_pids.copy(), real.clone(), real_pids.copy(), new_tau=0.3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert 0 < a[0][:150].sum() < 150 and 0 < a[0][150:].sum() < 50  # both rules drop some and keep some


@pytest.fixture(scope="module")
def state(sim_small, tmp_path_factory):
    """A state.pt of an (untrained) osnet_x0_25 over sim_small's training identities, as reid.train saves it."""
    pids = {p for _, p, _ in market_records(sim_small, ("train",))["train"]}
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", len(pids), "softmax")
    path = tmp_path_factory.mktemp("reid_run") / "state.pt"
    atomic_save(capture_state({"model": model}, epoch=1, steps=1, steps_per_epoch=0, mix=None), path)
    return path


def test_features_follow_torchreids_test_transform(sim_small, state):
    paths = [r[0] for r in market_records(sim_small, ("train",))["train"][:3]]
    with contextlib.redirect_stdout(io.StringIO()):  # torchreid prints its transforms
        _, transform_te = import_torchreid().reid.data.transforms.build_transforms(*SIZE)
    with Image.open(paths[0]) as im:
        assert torch.equal(C.eval_transform(SIZE)(im.convert("RGB")), transform_te(im.convert("RGB")))
    model = C.load_reid_model(state)
    assert not model.training
    f = C.extract_image_features(model, paths, SIZE, progress=False)
    assert f.shape == (3, 512) and torch.isfinite(f).all()
    assert torch.equal(f, C.extract_image_features(model, paths, SIZE, progress=False))
    with pytest.raises(UserError, match="does not fit model 'osnet_x0_5'"):
        C.load_reid_model(state, "osnet_x0_5")


def _generated(sim_small, root):
    """A generated folder over sim_small: remixes (copies) of real pids A and B, one image of B planted under A, and
    two new identities (manifest origin `virtual`) numbered A and B, one of them a copy of real pid C. Returns the
    folder and each generated name's true identity (a real pid, or 'far')."""
    real = market_records(sim_small, ("train",))["train"]
    pids = sorted({p for _, p, _ in real})
    a, b, c = pids[:3]
    first = {p: [path for path, q, _ in real if q == p] for p in (a, b, c)}
    d = root / "bounding_box_train"
    d.mkdir(parents=True)
    truth, rows, kps = {}, [], {}
    real_kps = read_keypoints_csv(sim_small / "market-annotation-train.csv")

    def add(src, pid, seq, frame, origin, true):
        name = format_name(pid, parse_name(src).camid, seq, frame, 1)
        shutil.copy(src, d / name)
        truth[name] = true
        rows.append({"path": f"bounding_box_train/{name}", "split": "train", "pid": pid,
                     "camid": parse_name(name).camid, "origin": origin})
        kps[name] = real_kps[os.path.basename(src)]
        return name

    for p in (a, b):
        for j in range(2):
            add(first[p][j], p, 0, j + 1, "remix", p)
    planted = add(first[b][0], a, 0, 99, "remix", b)  # pid B's person, labelled A
    far = add(first[c][0], a, 1, 1, "virtual", "far")  # a new identity numbered A, near no real one
    near = add(first[c][1], b, 1, 2, "virtual", c)  # a new identity numbered B, a copy of real pid C
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    write_keypoints_csv(root / "market-annotation-train.csv", kps)
    return truth, (a, b, c), planted, far, near, pids


def _fake_features(gen, truth: dict, pids: list[int]):
    """extract_image_features returning one-hot features of each image's true identity ('far': a dimension of its
    own): real images by the pid in their name, generated ones (under ``gen``) by ``truth``."""
    gen = str(gen.resolve())

    def extract(model, paths, size, device="cpu", progress=True, desc=""):
        true = [truth[os.path.basename(p)] if p.startswith(gen) else parse_name(p).pid for p in paths]
        return _onehot([len(pids) if t == "far" else pids.index(t) for t in true], len(pids) + 1)
    return extract


def test_filter_generated_drops_the_planted_image(sim_small, state, tmp_path, monkeypatch, capsys):
    gen = tmp_path / "generated"
    truth, (a, b, c), planted, far, near, pids = _generated(sim_small, gen)
    monkeypatch.setattr(C, "extract_image_features", _fake_features(gen, truth, pids))
    out = tmp_path / "filtered"
    s = C.filter_generated(state, sim_small, gen, out, size=SIZE, new_tau=0.9, progress=False)
    assert (s["images"], s["kept"], s["rejected"]) == (7, 5, 2) and s["rejection_rate"] == pytest.approx(2 / 7)
    assert (s["remix_images"], s["remix_kept"], s["new_images"], s["new_kept"]) == (5, 4, 2, 1)
    assert s["new_tau"] == 0.9 and s["model_state"] == str(state.resolve())
    # layout: the kept images under their names (hard links), empty test splits, no partial folder left
    kept = sorted(p.name for p in (out / "bounding_box_train").iterdir())
    assert kept == sorted(set(truth) - {planted, near}) and planted not in kept and far in kept
    assert all(os.path.samefile(out / "bounding_box_train" / n, gen / "bounding_box_train" / n) for n in kept)
    assert not any((out / "query").iterdir()) and not any((out / "bounding_box_test").iterdir())
    assert not (tmp_path / ".filtered.partial").exists() and not (out / C._PARTIAL_MARKER).exists()
    assert [os.path.basename(r[0]) for r in market_records(out, ("train",))["train"]] == kept
    # per-identity report: a remix and a new identity may share a pid number
    report = pd.read_csv(out / "filter_report.csv")
    assert list(report.columns) == ["pid", "kind", "generated", "kept", "rejected", "rejection_rate"]
    rows = {(r.kind, r.pid): (r.generated, r.kept, r.rejected, round(r.rejection_rate, 4)) for r in report.itertuples()}
    assert rows == {("new", a): (1, 1, 0, 0.0), ("new", b): (1, 0, 1, 1.0), ("remix", a): (3, 2, 1, 0.3333),
                    ("remix", b): (2, 2, 0, 0.0)}
    rejected = pd.read_csv(out / "filter_rejected.csv").set_index("name")
    assert rejected.loc[planted, "reason"].startswith(f"nearer pid {b} (cos 1.000 vs own 0.000)")
    assert rejected.loc[near, "reason"] == f"near real pid {c} (cos 1.000)"
    assert json.loads((out / "filter_summary.json").read_text()) == s
    assert sorted(pd.read_csv(out / "manifest.csv").path) == [f"bounding_box_train/{n}" for n in kept]
    assert sorted(read_keypoints_csv(out / "market-annotation-train.csv")) == kept
    # the CLI: one summary line; a second run into the same --out is refused
    out2 = tmp_path / "filtered2"
    argv = ["filter", "--model", str(state), "--real-root", str(sim_small), "--generated", str(gen), "--size", "64x32",
            "--quiet"]
    assert main([*argv, "--out", str(out2)]) == 0
    line = capsys.readouterr().out.strip()
    assert "7 images" in line and "kept 5" in line and "28.6%" in line and line.endswith(str(out2))
    assert sorted(p.name for p in (out2 / "bounding_box_train").iterdir()) == kept
    one_line_error(main([*argv, "--out", str(out2)]), *capsys.readouterr(), str(out2), "not empty")
    # `vmarket check` reads the output as the training-only set it is (it used to stop at the empty query/)
    assert main(["check", "--root", str(out2), "--size", "64x32", "--quiet"]) == 0
    assert "a training-only set, by its filter_summary.json" in capsys.readouterr().out


def test_filter_generated_refusals(sim_small, state, tmp_path, capsys):
    gen = tmp_path / "generated"
    (gen / "bounding_box_train").mkdir(parents=True)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="bounding_box_train: empty split"):  # no generated training images
        C.filter_generated(state, sim_small, gen, out, size=SIZE, progress=False)
    argv = ["filter", "--real-root", str(sim_small), "--generated", str(sim_small), "--size", "64x32", "--quiet"]
    rc = main([*argv, "--model", str(tmp_path / "run" / "state.pt"), "--out", str(out)])
    one_line_error(rc, *capsys.readouterr(), str(tmp_path / "run" / "state.pt"), "missing")
    rc = main([*argv, "--model", str(state), "--out", str(out), "--new-tau", "1.5"])
    one_line_error(rc, *capsys.readouterr(), "--new-tau 1.5")
    (out / "x").mkdir(parents=True)
    rc = main([*argv, "--model", str(state), "--out", str(out)])
    one_line_error(rc, *capsys.readouterr(), str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["x"] and not (tmp_path / ".out.partial").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    # a generated folder whose manifest.csv was emptied: one line naming it, nothing written
    shutil.copytree(sim_small, gen, dirs_exist_ok=True)
    (gen / "manifest.csv").write_text("")
    rc = main([*argv[:3], "--generated", str(gen), *argv[5:], "--model", str(state), "--out", str(tmp_path / "o2")])
    one_line_error(rc, *capsys.readouterr(), "manifest.csv: unreadable manifest (EmptyDataError)")
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("origin", ["remix", *ORIGINS])  # every origin the builder and cut-and-paste write
def test_a_real_identitys_image_of_an_unknown_pid_is_refused(tmp_path, origin):
    """Every source that keeps the real pid (the remix and every cut-and-paste plate) names it in the manifest's
    origin; such an image whose pid is no real training identity was made from other data: refused, not taken for a
    new identity. A new identity ("virtual") of that pid is new."""
    (tmp_path / "bounding_box_train").mkdir()
    names = [format_name(5, 1, 0, 1, 1), format_name(9, 2, 0, 2, 1)]
    write_manifest(pd.DataFrame({"path": [f"bounding_box_train/{n}" for n in names], "split": "train",
                                 "pid": [5, 9], "camid": [1, 2], "origin": [origin, "virtual"]}),
                   tmp_path / "manifest.csv")
    records = [(str(tmp_path / "bounding_box_train" / n), pid, 0) for n, pid in zip(names, (5, 9), strict=True)]
    assert C.generated_is_new(records, tmp_path, {5, 9}).tolist() == [False, True]
    with pytest.raises(UserError, match=f"a {origin} of pid 5"):
        C.generated_is_new(records, tmp_path, {9})


def test_filter_scores_at_the_runs_own_model_and_size(sim_small, state, tmp_path, monkeypatch, capsys):
    """A re-ID run's result.json says which model and input size it trained with: filter scores with those when
    --model-name and --size are left out, and refuses others (a model scored at another size still runs, and ranks
    silently worse), before anything is written."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(state, run / "state.pt")
    (run / "result.json").write_text(json.dumps({"model": "osnet_x0_25", "size": list(SIZE), "rank1": 0.1}))
    gen = tmp_path / "generated"
    truth, _, _, _, _, pids = _generated(sim_small, gen)
    fake = _fake_features(gen, truth, pids)
    sizes = []
    monkeypatch.setattr(C, "extract_image_features", lambda *a, **k: sizes.append(a[2]) or fake(*a, **k))
    s = C.filter_generated(run, sim_small, gen, tmp_path / "f1", progress=False)
    assert s["size"] == list(SIZE) and s["model"] == "osnet_x0_25" and set(sizes) == {tuple(SIZE)}
    argv = ["filter", "--model", str(run / "state.pt"), "--real-root", str(sim_small), "--generated", str(gen),
            "--out", str(tmp_path / "f2"), "--quiet"]
    one_line_error(main([*argv, "--size", "128x64"]), *capsys.readouterr(), "--size 128x64",
                   f"trained with size {SIZE[0]}x{SIZE[1]}", "result.json", f"pass --size {SIZE[0]}x{SIZE[1]}")
    one_line_error(main([*argv, "--model-name", "resnet50"]), *capsys.readouterr(), "--model-name resnet50",
                   "osnet_x0_25")
    assert not (tmp_path / "f2").exists()
    assert main([*argv, "--size", f"{SIZE[0]}x{SIZE[1]}"]) == 0  # the run's own, given: fine
    assert json.loads((tmp_path / "f2" / "filter_summary.json").read_text())["size"] == list(SIZE)
    (run / "result.json").write_text("{not json")  # a result that cannot be read is named, not passed over
    one_line_error(main([*argv[:-3], "--out", str(tmp_path / "f3"), "--quiet"]), *capsys.readouterr(),
                   f"{run / 'result.json'}: not a readable re-ID result")
    assert not (tmp_path / "f3").exists()


def test_filter_keeps_an_msmt17_layout_folder_in_msmt17_layout(tmp_path, monkeypatch, capsys):
    """Cut-and-paste (and the builder's remixes) of MSMT17 data are written in MSMT17's layout, pids from 0: the
    filtered folder keeps that layout (list_train.txt with each kept image's pid, the keypoint CSV keyed by list
    entry), so person 0 stays person 0, and it loads where the generated folder did."""
    from augment.makers.cutpaste import cut_paste
    from generator.data.dataset import person_dataset
    from generator.data.layouts import scan_dataset
    from generator.simmarket.simulate import simulate

    data = tmp_path / "msmt"
    simulate(data, 6, seed=0, size=SIZE, layout="msmt17", progress=False)
    gen = tmp_path / "cp"
    cut_paste(data, gen, seed=1, size=SIZE, progress=False)
    real = market_records(data, ("train",))["train"]
    pids = sorted({p for _, p, _ in real})
    generated = scan_dataset(gen, ("train",))
    planted = generated[0]  # shows its pid's person, but scores as the next pid's
    truth = {str(Path(r.path).resolve()): r.pid for r in generated}
    truth[str(Path(planted.path).resolve())] = pids[(pids.index(planted.pid) + 1) % len(pids)]
    for path, pid, _ in real:
        truth[str(Path(path).resolve())] = pid

    def extract(model, paths, size, device="cpu", progress=True, desc=""):
        return _onehot([pids.index(truth[str(Path(p).resolve())]) for p in paths], len(pids))

    monkeypatch.setattr(C, "extract_image_features", extract)
    torch.manual_seed(0)
    state = tmp_path / "run" / "state.pt"
    state.parent.mkdir()
    atomic_save(capture_state({"model": build_model("osnet_x0_25", len(pids), "softmax")}, epoch=1, steps=1,
                              steps_per_epoch=0, mix=None), state)
    out = tmp_path / "filtered"
    s = C.filter_generated(state, data, gen, out, size=SIZE, progress=False)
    assert (s["images"], s["kept"], s["layout"]) == (len(generated), len(generated) - 1, "msmt17")
    kept = scan_dataset(out, ("train",))
    assert {r.layout for r in kept} == {"msmt17"} and not (out / "bounding_box_train").exists()
    before = {Path(r.path).name: r for r in generated}
    assert sorted(before) == sorted([Path(r.path).name for r in kept] + [Path(planted.path).name])
    for r in kept:  # the same entry, pid and camera as generated, a link to the same file
        g = before[Path(r.path).name]
        assert (r.pid, r.camid, r.key) == (g.pid, g.camid, g.key) and os.path.samefile(r.path, g.path)
    assert 0 in {r.pid for r in kept}
    m = pd.read_csv(out / "manifest.csv")
    assert sorted(m.path) == sorted(Path(r.path).relative_to(out.resolve()).as_posix() for r in kept)
    assert len(person_dataset(out, ("train",))) == len(kept)  # keypoints keyed by list entry, one per kept image
    assert "MSMT17_V1/list_train.txt" in (out / "README.txt").read_text()
    # a generated folder whose lists sit in its root (no MSMT17_V1/): the kept rows' paths are rewritten to where
    # the filter puts the images
    s = C.filter_generated(state, data, data, tmp_path / "sim-kept", size=SIZE, progress=False)
    m = pd.read_csv(tmp_path / "sim-kept" / "manifest.csv")
    assert s["kept"] == s["images"] == len(real) == len(m) > 0
    assert all((tmp_path / "sim-kept" / p).is_file() and p.startswith("MSMT17_V1/train/") for p in m.path)
    # `vmarket check` knows a filter's output for the training-only set it is, manifest or not
    (tmp_path / "sim-kept" / "manifest.csv").unlink()
    assert main(["check", "--root", str(tmp_path / "sim-kept"), "--size", "64x32", "--quiet"]) == 0
    assert f"train {len(real)} / " in capsys.readouterr().out
    # every image rejected: an empty list beside its (empty) image folder, which reads as an empty training split
    generated_paths = {str(Path(r.path).resolve()) for r in generated}

    def every_one_wrong(model, paths, *args, **kwargs):  # each generated image scores as the next pid
        return _onehot([(pids.index(truth[str(Path(p).resolve())]) + (str(Path(p).resolve()) in generated_paths))
                        % len(pids) for p in paths], len(pids))

    monkeypatch.setattr(C, "extract_image_features", every_one_wrong)
    s = C.filter_generated(state, data, gen, tmp_path / "none", size=SIZE, progress=False)
    assert s["kept"] == 0 and (tmp_path / "none" / "MSMT17_V1" / "train").is_dir()
    with pytest.raises(UserError, match="list_train.txt: empty list"):
        scan_dataset(tmp_path / "none", ("train",))
