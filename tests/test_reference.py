"""The shipped reference checkpoints (generator/reference/) and the `vmarket reference` job that makes them."""
import json
import shutil

import pytest
import torch
from conftest import run_cli

from generator.errors import UserError
from generator.shipped import FILES, PROVENANCE, default_dir, provenance, sha256_file


def test_shipped_checkpoints_match_provenance_and_decode(tmp_path):
    from generator.api import DisentangledModel, Sampler
    from generator.data.dataset import market_dataset
    from generator.eval.image_metrics import ssim
    from generator.simmarket.dataset import simulate

    ref = default_dir()
    prov = provenance(ref)  # raises unless every file matches its sha256
    for name in FILES.values():
        assert sha256_file(ref / name) == prov["files"][name]["sha256"]
    assert sum((ref / n).stat().st_size for n in FILES.values()) <= 20 * 2 ** 20
    snap = torch.load(ref / FILES["stage1"], map_location="cpu", weights_only=True)
    assert {v.dtype for v in snap["G"].values() if v.is_floating_point()} == {torch.float16}
    assert prov["steps"]["stage1"] == snap["step"]
    for key in ("command", "configs", "git_commits", "wall_time_s", "metrics", "checks"):
        assert key in prov, key

    # decode held-out people of the data the reference was trained on (SimMarket is deterministic per seed)
    data = prov["data"]
    root = tmp_path / "sim"
    simulate(root, data["identities"], seed=data["seed"], size=(data["height"], data["width"]), progress=False)
    model = DisentangledModel.load(ref / FILES["stage1"], pose=ref / FILES["pose"])
    ds = market_dataset(root, ("query",), size=model.size, heatmap_radius=model.heatmap_radius,
                        mask_radius=model.mask_radius)
    b = torch.utils.data.default_collate([ds.item(i) for i in range(0, len(ds), len(ds) // 64)][:64])
    f = model.encode(b["image"], b["keypoints"])
    rec = model.render(f).clamp(-1, 1)
    assert rec.shape == b["image"].shape and torch.isfinite(rec).all()
    # far better than the batch's mean image, and the SSIM the provenance records (512 images) within sampling noise
    l1 = (rec - b["image"]).abs().mean()
    l1_mean = (b["image"].mean(0, keepdim=True) - b["image"]).abs().mean()
    assert l1 < 0.5 * l1_mean, (float(l1), float(l1_mean))
    batch_ssim = float(ssim((rec + 1) / 2, (b["image"] + 1) / 2).mean())
    assert abs(batch_ssim - prov["metrics"]["stage1"]["reconstruction"]["ssim"]) < 0.05, batch_ssim
    people = model.decode(f.fg, f.bg, Sampler.load(ref / FILES["stage2"]).sample("pose", len(f), seed=0))
    assert people.shape == b["image"].shape and torch.isfinite(people).all()


def test_changed_checkpoint_is_refused(tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(default_dir(), ref)
    data = bytearray((ref / FILES["pose"]).read_bytes())
    data[-100] ^= 0xFF
    (ref / FILES["pose"]).write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        provenance(ref)
    (ref / PROVENANCE).unlink()
    with pytest.raises(UserError, match="make reference"):
        provenance(ref)


@pytest.mark.slow
def test_reference_job_trains_packages_and_reuses(tmp_path):
    out, pkg, figs = tmp_path / "runs", tmp_path / "pkg", tmp_path / "docs"
    args = ("reference", "tests/configs/reference_tiny.yaml", "--set", f"out={out}", "--set", f"package={pkg}",
            "--set", f"figures={figs}", "--quiet")
    rc, stdout, err = run_cli(*args)
    assert rc == 0, err[-3000:]
    prov = provenance(pkg)
    # the end of the L1 warm-up ships (ship_stage1), without a discriminator it never trained with, and stage II
    # learnt that model's embeddings
    assert prov["steps"] == {"stage1": 4, "pose": 50, "stage2": {"fg": 10, "bg": 10, "pose": 10}}
    assert prov["stage1_shipped"] == {"snapshot": "snapshot-l1.pt", "with_discriminator": False}
    assert prov["configs"]["stage2"]["stage1_run"].endswith("snapshot-l1.pt")
    assert "D" not in torch.load(pkg / FILES["stage1"], map_location="cpu", weights_only=True)
    assert [r["step"] for r in prov["held_out_ssim_during_training"]] == [4, 8]
    for name in FILES.values():
        assert prov["files"][name]["sha256"] == sha256_file(pkg / name)
    # the metrics are those of the checkpoints as shipped (fp16), evaluated in their own run directories
    assert prov["metrics"]["stage1"] == json.loads((out / "shipped" / "stage1" / "eval" / "metrics.json").read_text())
    assert prov["fp16_reconstruction_difference"]["max_grey_levels"] < 5
    assert set(prov["checks"]) == {"reconstruction_ssim_at_least_0.70", "pose_swap_l1_below_copy_source",
                                   "background_swap_l1_below_copy_source", "foreground_swap_l1_below_copy_source"}
    assert (out / "stage1" / "snapshot-l1.pt").exists()  # the end of the L1 warm-up is kept
    for fig in ("stage1_grid.png", "swaps_vs_truth.png", "sampled_identities.png", "interpolation.png"):
        assert (figs / fig).stat().st_size > 0
    rc, stdout, err = run_cli(*args)
    assert rc == 0, err[-3000:]
    assert stdout.count("reusing") == 3  # a rerun (or a resume after a kill) trains nothing that finished
    assert provenance(pkg)["metrics"] == prov["metrics"]  # the same weights, packaged again, score the same
