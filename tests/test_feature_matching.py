"""The feature-matching term of stage I's adversarial phase (generator/training/loss.py) and the sharpness score of
reconstructions (generator/eval/image_metrics.edge_energy)."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from tiny import stage1_resumed_and_whole, tiny_stage1

from generator.errors import UserError
from generator.eval.image_metrics import edge_energy
from generator.models.stage1 import DCGANDiscriminator
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


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_feature_matching_is_zero_on_the_truth_and_pulls_an_image_toward_it(mode):
    """A planted case: with D fixed (in either mode: train mode normalises by the batch), descending the
    feature-matching loss alone moves a noisy copy of the real images toward them in pixels; its value is zero on
    the real images themselves, and no gradient reaches the real images."""
    torch.manual_seed(0)
    D = DCGANDiscriminator((64, 32), 8).train(mode == "train").requires_grad_(False)
    real = (torch.rand(4, 3, 64, 32) * 2 - 1).requires_grad_(True)
    loss = _loss(10.0)
    assert float(loss.adversarial_terms(D, real, real.detach().clone())[1]) == 0.0
    assert float(_loss(0.0).adversarial_terms(D, real, real.detach() + 0.5)[1]) == 0.0  # off: not computed
    fake = (real.detach() + 0.5 * torch.randn_like(real)).requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=0.02)

    def distances():
        with torch.no_grad():
            return float(loss.adversarial_terms(D, real, fake)[1]), float((fake - real).abs().mean())

    fm0, l1_0 = distances()
    for _ in range(150):
        _, fm = loss.adversarial_terms(D, real, fake)
        opt.zero_grad()
        fm.backward()
        opt.step()
    fm1, l1_1 = distances()
    assert fm1 < 0.1 * fm0, (fm0, fm1)  # measured: 0.0125 -> 0.0002 in eval mode
    # measured: 0.40 -> 0.25 in eval mode, 0.40 -> 0.36 in train mode, whose batch norm forgives a shift or scale
    # of a whole channel of the batch
    assert l1_1 < (0.75 if mode == "eval" else 0.95) * l1_0, (l1_0, l1_1)
    assert real.grad is None  # the real activations are targets


def test_the_target_pass_leaves_the_running_statistics_alone():
    """D's batch-norm running statistics (used where D runs in eval mode: the builder's quality filter) move with
    the generated batch the adversarial term passes through D, as without feature matching, and not with the real
    images' target pass."""
    torch.manual_seed(0)
    real, fake = torch.rand(4, 3, 64, 32) * 2 - 1, torch.randn(4, 3, 64, 32)
    stats = []
    for fm_weight in (0.0, 10.0):
        torch.manual_seed(1)
        D = DCGANDiscriminator((64, 32), 8).requires_grad_(False)
        _loss(fm_weight).adversarial_terms(D, real, fake)
        stats.append([m.running_mean.clone() for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d)])
        assert all(m.momentum == 0.1 for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d))  # restored
    assert all(torch.equal(a, b) for a, b in zip(*stats, strict=True))
    assert any(a.abs().sum() > 0 for a in stats[0])  # the generated batch did move them


def test_feature_matching_needs_the_adversarial_phase(tmp_path):
    with pytest.raises(UserError, match="train.fm_weight: 10.0 with train.adv_weight 0.0"):
        tiny_stage1(tmp_path, **{"train.fm_weight": 10.0, "train.adv_weight": 0.0})


def test_stage1_trains_and_resumes_with_feature_matching(tmp_path):
    resumed, whole, recs = stage1_resumed_and_whole(tmp_path, **{"train.fm_weight": 10.0,
                                                                 "train.l1_only_steps": 2})
    assert all(torch.equal(a, b) for a, b in zip(resumed["G"].state_dict().values(),
                                                 whole["G"].state_dict().values(), strict=True))
    fm = [r["g_fm"] for r in recs if "g_fm" in r]
    assert fm[0] == 0 and all(v > 0 for v in fm[1:]) and len(fm) == 3  # from train.l1_only_steps on


def test_a_blurred_image_has_less_edge_energy_and_only_the_region_counts():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 8)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    everywhere = torch.ones(2, 16, 8, dtype=torch.bool)
    assert torch.all(edge_energy(blurred, everywhere) < 0.7 * edge_energy(x, everywhere))
    assert torch.all(edge_energy(x, torch.zeros_like(everywhere)) == 0)
    # only pairs of pixels both inside the region count: changing every pixel outside it, the row and the
    # column next to its edge included, leaves the energy as it was
    top, left = everywhere.clone(), everywhere.clone()
    top[:, 8:] = False
    left[:, :, 4:] = False
    below, right = x.clone(), x.clone()
    below[:, :, 8:] = 0
    right[:, :, :, 4:] = 0
    assert torch.allclose(edge_energy(below, top), edge_energy(x, top))
    assert torch.allclose(edge_energy(right, left), edge_energy(x, left))
    assert not torch.allclose(edge_energy(below, everywhere), edge_energy(x, everywhere))
