import json

import numpy as np
import pytest
import torch
from conftest import one_line_error, run_main
from skimage.metrics import structural_similarity

from generator.api import DisentangledModel, interpolate, swap
from generator.data.dataset import person_dataset
from generator.eval.image_metrics import mask_ssim, nan_mean, region_scores, ssim
from generator.eval.stage1_report import EVAL_FILES


def test_ssim_properties():
    torch.manual_seed(0)
    a = torch.rand(3, 3, 32, 16)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert (ssim(a, noisy) < 0.9).all()
    # a per-image metric does not depend on the batch it is computed in
    assert torch.allclose(ssim(a[:1], noisy[:1]), ssim(a, noisy)[:1], atol=1e-6)
    region = torch.zeros(3, 32, 16, dtype=torch.bool)
    region[:, :13] = True
    b = a.clone()
    b[:, :, 13:] = 0  # differences outside the region do not count
    sc = region_scores(b, a, region)
    assert torch.allclose(sc["l1"], torch.zeros(3)) and torch.allclose(sc["colour"], torch.zeros(3), atol=1e-4)
    # the SSIM of a region and of its complement make up the whole-image SSIM, weighted by their areas inside the
    # valid part of the map (rows 5..26): 8 of its 22 rows are inside the region
    inside, outside = region_scores(noisy, a, region)["ssim"], region_scores(noisy, a, ~region)["ssim"]
    assert torch.allclose(8 / 22 * inside + 14 / 22 * outside, ssim(noisy, a), atol=1e-5)


@pytest.mark.parametrize("size", [(64, 32), (128, 64), (11, 11)])
def test_ssim_matches_scikit_image(size):
    """The library definition: scikit-image's Gaussian SSIM (window 11, sigma 1.5, population covariance) with the
    border cropped, on images in [0, 1] with data_range 1, which equals scoring uint8 images with data_range 255 as
    the PG2 and Ma et al. evaluations do. (SSIM's luminance term is not shift-invariant, so [-1, 1] with data_range
    2 is a different number.)"""
    g = torch.Generator().manual_seed(size[0])
    a = torch.rand(4, 3, *size, generator=g)
    cases = [(a, (a + s * torch.randn(a.shape, generator=g)).clamp(0, 1)) for s in (0.02, 0.2, 1.0)]
    cases.append((a, torch.nn.functional.avg_pool2d(a, 3, 1, 1)))  # blur, the generator's typical error
    cases.append((a, torch.zeros_like(a)))
    for x, y in cases:
        ours = ssim(x, y)
        for i in range(len(x)):
            ref = structural_similarity(x[i].double().numpy(), y[i].double().numpy(), gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)
            assert abs(float(ours[i]) - ref) < 1e-4, (size, i, float(ours[i]), ref)


def test_images_without_a_person_are_left_out_of_person_metrics():
    """An empty mask (a distractor, no person) scores NaN in mask-SSIM and person-region SSIM instead of 1.0 and 0,
    and nan_mean averages over the rest and counts it."""
    torch.manual_seed(0)
    a = torch.rand(3, 3, 64, 32)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    mask = torch.zeros(3, 1, 64, 32)
    mask[:2, :, 10:50, 8:24] = 1
    ms = mask_ssim(a, b, mask)
    assert torch.isfinite(ms[:2]).all() and torch.isnan(ms[2])
    person = region_scores(a, b, mask[:, 0] > 0.5)["ssim"]
    assert torch.isfinite(person[:2]).all() and torch.isnan(person[2])
    mean, left_out = nan_mean(ms)
    assert left_out == 1 and mean == pytest.approx(float(ms[:2].mean()))
    assert nan_mean(torch.tensor([float("nan")]))[1] == 1


def test_api_round_trip_and_swaps(sim_small, tiny_stages):
    s1, pose, _ = tiny_stages
    model = DisentangledModel.load(s1, pose=pose)
    ds = person_dataset(sim_small, ("train",), size=(64, 32), heatmap_radius=2, mask_radius=4)
    b = torch.utils.data.default_collate([ds.item(i) for i in range(3)])
    f = model.encode(b["image"], b["keypoints"])
    assert f.fg.shape == (3, 224) and f.bg.shape == (3, 128) and f.pose.shape == (3, 32)
    out = model.render(f)
    assert out.shape == (3, 3, 64, 32)
    # decoding equals the training-time forward pass
    G = model.G
    ref, _, _ = G(b["image"], b["pose_mask"], b["roi_boxes"], b["roi_visible"], b["pose_maps"])
    assert torch.allclose(out, ref, atol=1e-5)
    g = model.encode(b["image"].flip(0), b["keypoints"].flip(0))
    s = swap(f, g, "fg")
    assert torch.equal(s.fg, g.fg) and torch.equal(s.bg, f.bg) and torch.equal(s.keypoints, f.keypoints)
    s = swap(f, g, "pose")
    assert torch.equal(s.keypoints, g.keypoints) and torch.equal(s.pose, g.pose)
    kp = model.keypoints_from_pose(f.pose)
    assert kp.shape == (3, 18, 3)
    assert model.decode(f.fg, f.bg, f.pose).shape == (3, 3, 64, 32)
    path = interpolate(f.fg[0], g.fg[0], 5)
    assert path.shape == (5, 224) and torch.allclose(path[0], f.fg[0]) and torch.allclose(path[-1], g.fg[0])


def test_eval_cli_writes_table(capsys, tiny_stages, tmp_path):
    out = tmp_path / "eval"  # not the default RUN/eval: the trained stages are shared by other tests
    rc, stdout, err = run_main(capsys, "eval", "stage1", "--run", tiny_stages[0], "--pairs", 12, "--limit", 16, "--out",
                               out)
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["swaps"]["pairs"] == 12
    for k in ("pose", "background", "foreground"):
        assert np.isfinite(m["swaps"][f"{k}/model/l1"]) and m["swaps"][f"{k}/copy_source/l1"] > 0
    assert "copy the source" in (out / "metrics.md").read_text()
    r = m["reconstruction"]
    assert r["images"] == 16 and all(-1 <= r[k] <= 1 for k in ("ssim", "person_ssim", "background_ssim"))
    assert "inside the person / outside" in (out / "metrics.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(EVAL_FILES)  # what the --out check allows
    assert not (tiny_stages[0] / "eval").exists()
    # again: it replaces its own files; into a folder holding anything else (the run, whose metrics.md and
    # config.yaml are its own): refused before it writes
    (out / "metrics.md").write_text("old\n")
    rc, stdout, err = run_main(capsys, "eval", "stage1", "--run", tiny_stages[0], "--pairs", 2, "--limit", 4, "--out",
                               out)
    assert rc == 0 and "copy the source" in (out / "metrics.md").read_text(), err
    (out / "notes.txt").write_text("mine\n")
    before = (out / "metrics.md").read_bytes()
    one_line_error(*run_main(capsys, "eval", "stage1", "--run", tiny_stages[0], "--out", out),
                   f"{out}: holds notes.txt, which `vmarket eval stage1` does not write", "--out")
    assert (out / "metrics.md").read_bytes() == before
    one_line_error(*run_main(capsys, "eval", "stage1", "--run", tiny_stages[0], "--out", tiny_stages[0]),
                   f"{tiny_stages[0]}: is the --run folder itself; choose a new folder for --out")


def test_an_evaluation_stopped_halfway_does_not_look_finished(tiny_stages, sim_small, tmp_path, monkeypatch):
    """metrics.json marks a finished evaluation (the pipeline reuses it): a rerun stopped after its first figures
    must not leave the earlier run's metrics.json beside them."""
    from generator.eval import stage1_report
    from generator.training import stage2_report

    out = tmp_path / "eval"
    stage1_report.evaluate(tiny_stages[0], sim_small, out, pairs=4, limit=8)
    stage2_report.report(tiny_stages[2], tmp_path / "eval2")
    assert (out / "metrics.json").is_file() and (tmp_path / "eval2" / "metrics.json").is_file()

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage1_report, "reconstruction_metrics", killed)
    monkeypatch.setattr(stage2_report, "embedding_quality", killed)
    with pytest.raises(KeyboardInterrupt):
        stage1_report.evaluate(tiny_stages[0], sim_small, out, pairs=4, limit=8)
    with pytest.raises(KeyboardInterrupt):
        stage2_report.report(tiny_stages[2], tmp_path / "eval2")
    assert (out / "grid.png").is_file() and not (out / "metrics.json").exists()
    assert not (tmp_path / "eval2" / "metrics.json").exists()
