"""The feature-matching term of stage I's adversarial phase (generator/training/loss.py) and the sharpness score of
reconstructions (generator/eval/image_metrics.edge_energy)."""
import json
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tiny import tiny_stage1

from generator.eval.image_metrics import edge_energy
from generator.models.stage1 import DCGANDiscriminator
from generator.simmarket.simulate import simulate
from generator.training import stage1
from generator.training.loss import Stage1Loss


def _loss(fm_weight: float) -> Stage1Loss:
    return Stage1Loss(torch.device("cpu"), nullcontext, fm_weight=fm_weight)


def test_discriminator_features_end_in_the_same_logit():
    torch.manual_seed(0)
    D = DCGANDiscriminator((64, 32), 8)
    x = torch.randn(3, 3, 64, 32)
    logit, feats = D.features(x)
    assert torch.allclose(logit, D(x))
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 16), (16, 8), (8, 4), (4, 2)]


def test_feature_matching_is_zero_on_the_truth_and_pulls_an_image_toward_it():
    """A planted case: with D fixed, descending the feature-matching loss alone moves a noisy copy of the real
    images toward them in pixels; its value is zero on the real images themselves, and no gradient reaches D."""
    torch.manual_seed(0)
    D = DCGANDiscriminator((64, 32), 8).eval().requires_grad_(False)
    real = torch.rand(4, 3, 64, 32) * 2 - 1
    loss = _loss(10.0)
    assert float(loss.adversarial_terms(D, real, real.clone())[1]) == 0.0
    assert float(_loss(0.0).adversarial_terms(D, real, real + 0.5)[1]) == 0.0  # off: not computed
    fake = (real + 0.5 * torch.randn_like(real)).requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=0.02)
    def distances():
        with torch.no_grad():
            return float(loss.adversarial_terms(D, real, fake)[1]), float((fake - real).abs().mean())

    fm0, l1_0 = distances()
    for _ in range(150):
        g_adv, fm = loss.adversarial_terms(D, real, fake)
        opt.zero_grad()
        fm.backward()
        opt.step()
    fm1, l1_1 = distances()
    assert fm1 < 0.1 * fm0, (fm0, fm1)  # measured: 0.0125 -> 0.0002
    assert l1_1 < 0.75 * l1_0, (l1_0, l1_1)  # measured: 0.40 -> 0.25
    assert all(p.grad is None for p in D.parameters())
    assert g_adv > 0


def test_stage1_trains_and_resumes_with_feature_matching(tmp_path):
    simulate(tmp_path / "sim", 6, seed=2, size=(64, 32), progress=False)
    cfg = tiny_stage1(tmp_path / "sim", **{"train.steps": 6, "train.fm_weight": 10.0, "train.l1_only_steps": 2,
                                           "train.log_every": 2, "train.snapshot_every": 3})
    stage1.train(cfg, tmp_path / "half", progress=False, stop_after=3)
    resumed = stage1.train(cfg, tmp_path / "half", resume=True, progress=False)
    whole = stage1.train(cfg, tmp_path / "whole", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(resumed["G"].state_dict().values(),
                                                 whole["G"].state_dict().values(), strict=True))
    recs = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    fm = [r["g_fm"] for r in recs if "g_fm" in r]
    assert fm[0] == 0 and all(v > 0 for v in fm[1:]) and len(fm) == 3  # from train.l1_only_steps on


def test_a_blurred_image_has_less_edge_energy_and_only_the_region_counts():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 8)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    everywhere = torch.ones(2, 16, 8, dtype=torch.bool)
    assert torch.all(edge_energy(blurred, everywhere) < 0.7 * edge_energy(x, everywhere))
    top = everywhere.clone()
    top[:, 8:] = False
    y = x.clone()
    y[:, :, 9:] = 0  # rows outside the region (and not next to it) change: the energy does not
    assert torch.allclose(edge_energy(y, top), edge_energy(x, top))
    assert torch.all(edge_energy(x, torch.zeros_like(top)) == 0)
