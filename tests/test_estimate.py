"""`vmarket keypoints`: the joint conversions, the resumable CSV writer (in every dataset layout), and the
estimators' refusals."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error, run_main
from PIL import Image
from torchvision.models.detection import keypointrcnn_resnet50_fpn

from augment.cli import main
from generator.data import estimate, estimators
from generator.data.dataset import person_dataset
from generator.data.estimate import write_keypoints
from generator.data.estimators import (
    KEYPOINTRCNN_WEIGHTS,
    KeypointRCNNEstimator,
    coco17_to_rcv,
    load_keypointrcnn,
    mediapipe33_to_rcv,
)
from generator.data.keypoints import rcv_to_yx, read_keypoints_csv, yx_to_rcv
from generator.data.layouts import keypoint_file, keypoint_path, scan_dataset
from generator.data.market import scan_market
from generator.errors import UserError
from generator.simmarket.simulate import simulate


def test_coco17_to_18():
    xy = np.zeros((17, 2))
    scores = np.full(17, 5.0)
    xy[0] = (20.5, 10.5)  # nose at pixel (row 10, col 20): torchvision's frame is shifted by half a pixel
    xy[5] = (40.5, 30.5)  # left shoulder
    xy[6] = (20.5, 31.5)  # right shoulder
    xy[1] = (25.5, 8.5)  # left eye, score below the threshold
    scores[1] = 1.0
    xy[9] = (70.5, 50.5)  # left wrist, outside the 128x64 image
    xy[16] = (10.5, 127.4)  # right ankle on the last row
    yx = rcv_to_yx(coco17_to_rcv(xy, scores, 128, 64, threshold=2.0))
    assert yx.shape == (18, 2)
    assert yx[0].tolist() == [10, 20]
    assert yx[5].tolist() == [30, 40] and yx[2].tolist() == [31, 20]  # Lsho, Rsho
    assert yx[1].tolist() == [30, 30]  # neck: the shoulders' midpoint (30.5, 30) rounded half to even
    assert yx[14].tolist() == [-1, -1]  # Leye below the threshold
    assert yx[7].tolist() == [-1, -1]  # Lwri outside the image
    assert yx[10].tolist() == [127, 10]  # Rank
    # one shoulder missing: no neck
    scores[6] = 0.0
    yx = rcv_to_yx(coco17_to_rcv(xy, scores, 128, 64, threshold=2.0))
    assert yx[1].tolist() == [-1, -1] and yx[2].tolist() == [-1, -1] and yx[5].tolist() == [30, 40]


def test_coco17_to_18_batched_and_missing_as_zero():
    xy = np.random.default_rng(0).uniform(0, 60, (3, 17, 2))
    scores = np.random.default_rng(1).uniform(0, 4, (3, 17))
    rcv = coco17_to_rcv(xy, scores, 128, 64)
    assert rcv.shape == (3, 18, 3)
    for i in range(3):
        assert np.array_equal(rcv[i], coco17_to_rcv(xy[i], scores[i], 128, 64))
    missing = rcv[..., 2] == 0
    assert (rcv[missing] == 0).all()  # the project's (0, 0, 0) for a missing joint
    assert np.array_equal(yx_to_rcv(rcv_to_yx(rcv)), rcv)  # whole pixels: the CSV round trip is exact


def test_mediapipe33_to_18():
    lm = np.zeros((33, 3))
    lm[:, 2] = 0.9
    h, w = 128, 64

    def at(row, col):  # normalised (x, y) of a pixel centre
        return ((col + 0.5) / w, (row + 0.5) / h)

    lm[0, :2] = at(12, 32)  # nose
    lm[2, :2] = at(10, 34)  # left eye
    lm[5, :2] = at(10, 30)  # right eye
    lm[7, :2] = at(11, 38)  # left ear
    lm[8, :2] = at(11, 26)  # right ear
    lm[11, :2] = at(30, 44)  # left shoulder
    lm[12, :2] = at(30, 20)  # right shoulder
    lm[15, :2] = at(60, 50)  # left wrist
    lm[15, 2] = 0.2  # ... not visible
    lm[23, :2] = at(64, 40)  # left hip
    lm[24, :2] = at(64, 24)  # right hip
    lm[28, :2] = (0.5, 1.2)  # right ankle below the image
    yx = rcv_to_yx(mediapipe33_to_rcv(lm, h, w))
    assert yx[0].tolist() == [12, 32]
    assert yx[1].tolist() == [30, 32]  # neck
    assert yx[2].tolist() == [30, 20] and yx[5].tolist() == [30, 44]  # Rsho, Lsho
    assert yx[14].tolist() == [10, 34] and yx[15].tolist() == [10, 30]  # Leye, Reye
    assert yx[16].tolist() == [11, 38] and yx[17].tolist() == [11, 26]  # Lear, Rear
    assert yx[8].tolist() == [64, 24] and yx[11].tolist() == [64, 40]  # Rhip, Lhip
    assert yx[7].tolist() == [-1, -1]  # Lwri: visibility below 0.5
    assert yx[10].tolist() == [-1, -1]  # Rank: outside the image
    assert rcv_to_yx(mediapipe33_to_rcv(lm, h, w, threshold=0.1))[7].tolist() == [60, 50]


class FakeEstimator:
    """Deterministic poses from the image content; optionally dies after ``die_after`` calls (a kill)."""

    name = "fake"

    def __init__(self, die_after: int | None = None):
        self.calls, self.images, self.die_after = 0, 0, die_after

    def __call__(self, images):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.images += len(images)
        out = np.zeros((len(images), 18, 3), np.float32)
        for i, im in enumerate(images):
            m = int(im.mean())
            out[i, :, 0] = (np.arange(18) * 7 + m) % im.shape[0]
            out[i, :, 1] = (np.arange(18) * 3 + m) % im.shape[1]
            out[i, :, 2] = (np.arange(18) + m) % 5 != 0
        out[..., :2] *= out[..., 2:]
        return out


def test_resume_after_kill_equals_uninterrupted_run(copy, tmp_path):
    records = scan_market(copy, keep_junk=True)
    full = tmp_path / "full.csv"
    s = write_keypoints(copy, FakeEstimator(), out=full, batch=7, progress=False)
    assert s["images"] == len(records) and s["estimated_now"] == len(records)

    killed = tmp_path / "killed.csv"
    with pytest.raises(KeyboardInterrupt):
        write_keypoints(copy, FakeEstimator(die_after=3), out=killed, batch=7, progress=False)
    partial = tmp_path / ".killed.csv.partial"
    assert not killed.exists() and partial.exists()  # nothing under the final name
    with open(partial, "a") as f:
        f.write("0001_c1s1_000000_00.jpg: [1, 2")  # a row torn by the kill
    again = FakeEstimator()
    s = write_keypoints(copy, again, out=killed, batch=7, progress=False)
    assert s["done_before"] == 21 and again.images == len(records) - 21
    assert killed.read_bytes() == full.read_bytes()
    assert not partial.exists()
    rows = read_keypoints_csv(full)
    assert list(rows) == [r.name for r in records]  # every image, junk included, in scan order


def test_a_broken_first_image_leaves_no_checkpoint(copy, tmp_path):
    first = scan_market(copy, keep_junk=True)[0]
    Path(first.path).write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match="unreadable image"):
        write_keypoints(copy, FakeEstimator(), out=out / "k.csv", batch=4, progress=False)
    assert list(out.iterdir()) == []  # neither the CSV nor a checkpoint of a run that never began


def test_default_files_pass_check_and_refuse_overwrite(copy, capsys):
    for f in ("market-annotation-train.csv", "market-annotation-test.csv"):
        (copy / f).unlink()
    s = write_keypoints(copy, FakeEstimator(), batch=16, progress=False)
    assert sorted(s["outputs"]) == [str(copy / "market-annotation-test.csv"), str(copy / "market-annotation-train.csv")]
    train = read_keypoints_csv(copy / "market-annotation-train.csv")
    assert set(train) == {r.name for r in scan_market(copy, ("train",))}
    assert main(["check", "--root", str(copy), "--quiet"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("ok: ")
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        write_keypoints(copy, FakeEstimator(), progress=False)
    write_keypoints(copy, FakeEstimator(), overwrite=True, progress=False)


class SparseEstimator(FakeEstimator):
    """FakeEstimator, but every third image of a batch shows two joints alone: no person (``shows_person``)."""

    def __call__(self, images):
        out = super().__call__(images)
        out[::3, 2:] = 0
        return out


def test_keypoints_counts_the_images_without_a_person_as_check_does(copy, capsys):
    """The person images whose pose shows no person, junk and distractors left out: `vmarket keypoints` and `vmarket
    check` give one count."""
    for f in ("market-annotation-train.csv", "market-annotation-test.csv"):
        (copy / f).unlink()
    s = write_keypoints(copy, SparseEstimator(), batch=6, progress=False)
    records = scan_market(copy, keep_junk=True)
    assert s["person_images"] == sum(r.is_person for r in records) < len(records)  # the copy holds junk
    assert 0 < s["no_person"] < s["person_images"]
    assert main(["check", "--root", str(copy), "--quiet"]) == 0, capsys.readouterr().err
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("no visible person: "))
    assert line.startswith(f"no visible person: {s['no_person']} of {s['person_images']} person images")


def test_a_checkpoint_without_rows_does_not_license_replacing_a_csv(copy, tmp_path):
    target = tmp_path / "k.csv"
    target.write_text("keep me\n")
    (tmp_path / ".k.csv.partial").write_text('{"estimator": "fake", "csv": "k.csv"}\n')  # begun, no row finished
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        write_keypoints(copy, FakeEstimator(), out=target, progress=False)
    assert target.read_text() == "keep me\n"
    with pytest.raises(KeyboardInterrupt):  # a run over an existing CSV with --overwrite, killed after a batch ...
        write_keypoints(copy, FakeEstimator(die_after=1), out=target, batch=4, overwrite=True, progress=False)
    s = write_keypoints(copy, FakeEstimator(), out=target, batch=4, progress=False)  # ... resumes without it
    assert s["done_before"] == 4 and target.read_text().startswith("name:")


def test_partial_of_another_estimator_is_refused(copy, tmp_path):
    target = tmp_path / "k.csv"
    with pytest.raises(KeyboardInterrupt):
        write_keypoints(copy, FakeEstimator(die_after=1), out=target, batch=4, progress=False)
    other = FakeEstimator()
    other.name = "other"
    with pytest.raises(UserError, match="--estimator fake"):
        write_keypoints(copy, other, out=target, progress=False)


def test_cli_keypoints_summary(copy, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("augment.cli.data_commands.make_estimator", lambda name, weights, device: FakeEstimator())
    assert main(["keypoints", "--root", str(copy), "--out", str(tmp_path / "k.csv"), "--batch", "5",
                 "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("keypoints (mediapipe): ") and "joints detected" in line and line.endswith("k.csv")


def test_keypoints_refuses_images_of_several_sizes_before_estimating(copy, tmp_path, monkeypatch, capsys):
    """Raw crops (DukeMTMC-reID, MSMT17, CUHK03) differ in size; the generator reads one, and keypoints estimated
    before a resize would not follow it: refused in one line before the estimator loads, nothing written."""
    loaded = []
    monkeypatch.setattr("augment.cli.data_commands.make_estimator",
                        lambda name, weights, device: loaded.append(name) or FakeEstimator())
    odd = sorted((copy / "bounding_box_train").glob("*.jpg"))[0]
    with Image.open(odd) as im:
        small = im.resize((20, 40))
    small.save(odd)
    one_line_error(*run_main(capsys, "keypoints", "--root", copy, "--out", tmp_path / "k.csv", "--quiet"),
                   f"{copy}: images of 2 sizes (HxW: 128x64: ", f"40x20: 1; e.g. {odd})",
                   "resize every image to one size (e.g. 128x64) first")
    assert not loaded and not list(tmp_path.glob("*k.csv*"))


def test_a_checkpoint_made_before_the_images_were_resized_is_refused(copy, tmp_path):
    """A killed run's checkpoint holds rows in the pixels of the images it saw; after the images are resized, resuming
    from it would write those rows for the new images without a word."""
    target = tmp_path / "k.csv"
    with pytest.raises(KeyboardInterrupt):
        write_keypoints(copy, FakeEstimator(die_after=1), out=target, batch=4, progress=False)
    partial = tmp_path / ".k.csv.partial"
    assert json.loads(partial.read_text().splitlines()[0])["size"] == [128, 64]
    for image in [*copy.glob("*/*.jpg")]:  # every image resized, as a user would before estimating again
        with Image.open(image) as im:
            small = im.resize((32, 64))
        small.save(image)
    with pytest.raises(UserError, match=r"checkpoint of an unfinished run on images of 128x64 \(HxW\), and the "
                                        r"images are 64x32 now: its rows are in the old pixels; delete the file"):
        write_keypoints(copy, FakeEstimator(), out=target, progress=False)
    partial.unlink()
    assert write_keypoints(copy, FakeEstimator(), out=target, progress=False)["done_before"] == 0


def test_keypointrcnn_without_weights_is_one_line(copy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: nothing to find, nothing fetched
    rc = main(["keypoints", "--root", str(copy), "--estimator", "keypointrcnn", "--out", str(tmp_path / "k.csv")])
    line = one_line_error(rc, *capsys.readouterr(), "Keypoint R-CNN weights missing", KEYPOINTRCNN_WEIGHTS.url,
                          "--weights", str(tmp_path / "torch" / "hub" / "checkpoints"))
    assert "vmarket keypoints" in line
    assert not (tmp_path / ".k.csv.partial").exists()
    rc = main(["keypoints", "--root", str(copy), "--estimator", "keypointrcnn"])  # the dataset's CSVs exist
    one_line_error(rc, *capsys.readouterr(), "market-annotation-train.csv: exists; pass --overwrite")


def test_keypointrcnn_bad_weights_files(tmp_path):
    with pytest.raises(UserError, match="weights missing"):
        load_keypointrcnn(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable weights file"):
        load_keypointrcnn(tmp_path / "junk.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not Keypoint R-CNN ResNet-50 FPN weights"):
        load_keypointrcnn(tmp_path / "other.pth")


def test_keypointrcnn_estimator_with_a_random_model(sim_root):
    root, _ = sim_root
    images = [estimate.load_image(r.path) for r in scan_market(root, ("query",))[:2]]
    # small and quick: a few proposals and one detection per image
    model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=128, max_size=128,
                                      box_score_thresh=0.0, rpn_pre_nms_top_n_test=20, rpn_post_nms_top_n_test=5,
                                      box_detections_per_img=1)
    rcv = KeypointRCNNEstimator(model=model, device="cpu", threshold=-1e9)(images)
    assert rcv.shape == (2, 18, 3)
    vis = rcv[..., 2] > 0
    assert ((rcv[..., 0] <= 127) & (rcv[..., 1] <= 63) & (rcv[..., :2] >= 0).all(-1))[vis].all()
    assert (rcv[~vis] == 0).all()


def test_mediapipe_on_simmarket(sim_root):
    pytest.importorskip("mediapipe")
    root, _ = sim_root
    recs = [r for r in scan_market(root, ("train",)) if r.pid > 0][:8]
    truth = read_keypoints_csv(root / "market-annotation-train.csv")
    est = estimators.MediaPipeEstimator()
    rcv = est([estimate.load_image(r.path) for r in recs])
    est.close()
    found = rcv[..., 2].any(1)
    assert found.sum() >= 4
    gt = np.stack([yx_to_rcv(truth[r.name]) for r in recs])
    both = (rcv[..., 2] > 0) & (gt[..., 2] > 0)
    err = np.linalg.norm(rcv[..., :2] - gt[..., :2], axis=-1)[both]
    assert np.median(err) < 8  # pixels, at 128x64


def test_pck_on_hand_written_cases():
    true = np.zeros((2, 18, 3))
    true[0, [1, 8, 11, 0, 4], :] = [[20, 30, 1], [60, 25, 1], [60, 35, 1], [10, 30, 1], [50, 10, 1]]  # torso 40 px
    true[1, [0, 4], :] = [[5, 5, 1], [9, 9, 1]]  # no hips: left out
    pred = true.copy()
    pred[0, 0, :2] += [0, 19]  # 19 px off: within 0.5 torso (20 px), not within 0.2 (8 px)
    pred[0, 4, :2] += [21, 0]  # 21 px off: a miss at 0.5
    pred[0, 8, 2] = 0  # not found: wrong
    pred[0, 5] = [30, 30, 1]  # a joint the truth does not have: not counted
    assert estimators.pck(pred, true, 0.5) == (0.6, 5)  # hits: neck, left hip, nose; misses: right hip, wrist
    assert estimators.pck(pred, true, 0.2) == (0.4, 5)
    assert estimators.pck(true, true, 0.01) == (1.0, 5)
    assert np.isnan(estimators.pck(pred[1:], true[1:])[0])
    with pytest.raises(ValueError, match="must be"):
        estimators.pck(pred[:, :17], true[:, :17])


LAYOUT_CASES = [("market1501", "auto"), ("duke", "auto"), ("msmt17", "auto"), ("cuhk03", "auto"),
                ("cuhk03", "cuhk03_labeled")]


@pytest.fixture(scope="module")
def layouts_truth(tmp_path_factory):
    """{layout: (dataset folder, {image content hash: true (18, 2) yx})}: a tiny SimMarket in each layout."""
    base = tmp_path_factory.mktemp("kp_layouts")
    out = {}
    for layout in ("market1501", "duke", "msmt17", "cuhk03"):
        root = base / layout
        simulate(root, 6, seed=4, size=(64, 32), progress=False, layout=layout)
        truth = {}
        for r in scan_dataset(root, keep_junk=True):
            truth[_image_key(estimate.load_image(r.path))] = read_keypoints_csv(
                keypoint_file(root, r.split))[r.keypoint_name]
        out[layout] = (root, truth)
    return out


def _image_key(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


class TruthEstimator:
    """SimMarket's true keypoints, looked up by image content: exact, and as fast as an estimator gets."""

    name = "truth"

    def __init__(self, truth):
        self.truth = truth

    def __call__(self, images):
        return np.stack([yx_to_rcv(self.truth[_image_key(im)]) for im in images])


@pytest.mark.parametrize("layout, fmt", LAYOUT_CASES, ids=[f"{a}-{b}" for a, b in LAYOUT_CASES])
def test_keypoints_in_every_layout_land_where_training_reads_them(layouts_truth, tmp_path, monkeypatch, capsys,
                                                                 layout, fmt):
    src, truth = layouts_truth[layout]
    root = tmp_path / layout
    shutil.copytree(src, root)
    for csv in root.rglob("market-annotation-*.csv"):
        csv.unlink()
    with pytest.raises(UserError, match="keypoint file missing") as e:
        person_dataset(root, ("train",), fmt=fmt)
    fix = f"vmarket keypoints --root {root}" + (" --format cuhk03_labeled" if fmt == "cuhk03_labeled" else "")
    assert f"`{fix}`" in str(e.value)
    monkeypatch.setattr("augment.cli.data_commands.make_estimator", lambda name, weights, device: TruthEstimator(truth))
    assert main(["keypoints", *fix.split()[2:], "--quiet"]) == 0, capsys.readouterr().err
    written = capsys.readouterr().out.strip().rsplit("-> ", 1)[1].split(", ")
    assert sorted(written) == sorted({str(keypoint_path(root, s, fmt)) for s in ("train", "query")})
    # the consumers: `vmarket check`, and the dataset stage I trains on, with every image's true pose
    assert main(["check", "--root", str(root), "--format", fmt, "--size", "64x32", "--quiet"]) == 0, \
        capsys.readouterr().err
    ds = person_dataset(root, ("train", "query", "gallery"), size=(64, 32), fmt=fmt, keep_junk=True)
    assert len(ds.records) == len(scan_dataset(root, fmt=fmt, keep_junk=True))
    for r, rcv in zip(ds.records, ds.rcv, strict=True):
        assert np.array_equal(rcv, yx_to_rcv(truth[_image_key(estimate.load_image(r.path))])), r.path


def test_mediapipe_keypoints_on_msmt17_read_by_check(layouts_truth, tmp_path, capsys):
    """The default estimator end to end on the layout whose rows are keyed by list entry, not file name."""
    pytest.importorskip("mediapipe")
    root = tmp_path / "msmt17"
    shutil.copytree(layouts_truth["msmt17"][0], root)
    for csv in root.rglob("market-annotation-*.csv"):
        csv.unlink()
    assert main(["keypoints", "--root", str(root), "--quiet"]) == 0, capsys.readouterr().err
    assert "keypoints (mediapipe): " in capsys.readouterr().out
    rows = read_keypoints_csv(root / "market-annotation-train.csv")
    assert list(rows) == [r.keypoint_name for r in scan_dataset(root, ("train",))]
    assert main(["check", "--root", str(root), "--size", "64x32", "--quiet"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("out", ["kp/", "kp", "kp.jpg"])
def test_an_out_that_is_no_csv_file_is_refused(copy, out):
    """`--out kp/` would write a file named kp; one named kp.jpg among the images would be read as an image."""
    from generator.data.estimate import plan_keypoints

    with pytest.raises(UserError, match="ending in .csv"):
        plan_keypoints(copy, out)
    # a CSV may lie among the images (CUHK03's own keypoint files do): only images are read there
    plan = plan_keypoints(copy, copy / "bounding_box_train" / "k.csv")
    assert list(plan.groups) == [copy / "bounding_box_train" / "k.csv"] and plan.size == (128, 64)
