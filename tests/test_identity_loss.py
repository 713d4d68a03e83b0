"""The identity loss on remixed people (generator/training/identity.py) and its place in stage-I training."""

import pytest
import torch
from tiny import stage1_resumed_and_whole, tiny_stage1

from generator.data.dataset import person_dataset
from generator.simmarket.simulate import simulate
from generator.training import stage1
from generator.training.identity import IGNORE, IdentityTerm, identity_labels, remix


def test_identity_labels_rank_the_labelled_pids_and_ignore_the_rest():
    labels = identity_labels([7, 3, 7, 12, 3, 5, 5], labelled=5)
    assert labels.tolist() == [1, 0, 1, 2, 0, IGNORE, IGNORE]


def test_no_identity_is_asked_of_a_remix_without_a_person_or_into_an_empty_pose():
    kps = torch.zeros(4, 18, 3)
    kps[:, [1, 2, 5, 8, 11], 2] = 1  # neck, shoulders, hips: a person
    kps[1] = 0  # image 1 shows no one
    term = IdentityTerm(torch.tensor([0, 1, 2, 3]), torch.device("cpu"), lr=1e-3, ch=4)
    batch = {"index": torch.arange(4), "keypoints": kps}
    assert term.targets(batch).tolist() == [0, IGNORE, 2, 3]
    assert term.targets(batch, remixed=True).tolist() == [0, IGNORE, IGNORE, 3]  # remix 2 is drawn in pose 1


@pytest.mark.slow
def test_identity_loss_moves_remixes_toward_their_identity(tmp_path):
    """A planted case: a classifier trained on the real images of 4 people scores a tiny stage I's remixes; a few
    generator steps on the identity loss alone raise the classifier's probability of the right person (and its
    re-ID feature's similarity to that person's real images) against the same steps without it."""
    simulate(tmp_path / "sim", 4, seed=1, size=(64, 32), progress=False)
    ds = person_dataset(tmp_path / "sim", ("train",), size=(64, 32), heatmap_radius=2, mask_radius=4)
    batch = torch.utils.data.default_collate([ds.item(i) for i in range(0, len(ds), max(1, len(ds) // 32))][:32])
    labels = identity_labels([r.pid for r in ds.records], len(ds))
    torch.manual_seed(0)
    term = IdentityTerm(labels, torch.device("cpu"), lr=3e-3, ch=8)
    for _ in range(60):
        _, acc = term.update(batch)
    assert acc > 0.9  # the classifier knows the real people
    y = term.targets(batch)

    def scores(G):
        with torch.no_grad():
            _, fg, bg = G(batch["image"], batch["pose_mask"], batch["roi_boxes"], batch["roi_visible"],
                          batch["pose_maps"])
            term.classifier.eval()
            out = remix(G, batch, fg, bg)
            p = term.classifier(out).softmax(1).gather(1, y[:, None]).mean()
            f, f_real = term.classifier.features(out), term.classifier.features(batch["image"])
            term.classifier.train()
        same = (y[:, None] == y[None]).float()
        sim = torch.nn.functional.normalize(f) @ torch.nn.functional.normalize(f_real).T
        return float(p), float((sim * same).sum() / same.sum() - (sim * (1 - same)).sum() / (1 - same).sum())

    def trained(id_weight):
        torch.manual_seed(0)
        G = stage1.build_generator(tiny_stage1(tmp_path / "sim").model, (64, 32))
        opt = torch.optim.Adam(G.parameters(), lr=1e-3)
        for _ in range(25):
            fake, fg, bg = G(batch["image"], batch["pose_mask"], batch["roi_boxes"], batch["roi_visible"],
                             batch["pose_maps"])
            loss = (fake - batch["image"]).abs().mean() + id_weight * term.loss(remix(G, batch, fg, bg), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return scores(G)

    (p0, gap0), (p1, gap1) = trained(0.0), trained(1.0)
    assert p1 > p0 + 0.1, (p0, p1)
    assert gap1 > gap0, (gap0, gap1)


def test_stage1_trains_and_resumes_with_the_identity_loss(tmp_path):
    resumed, whole, recs = stage1_resumed_and_whole(tmp_path, **{"train.id_weight": 1.0, "train.id_start": 2})
    assert all(torch.equal(a, b) for a, b in zip(resumed["G"].state_dict().values(),
                                                 whole["G"].state_dict().values(), strict=True))
    assert [r["g_id"] == 0 for r in recs if "g_id" in r] == [True, False, False]  # starts at train.id_start
    assert all(0 <= r["id_acc_real"] <= 1 for r in recs if "id_acc_real" in r)
    state = torch.load(tmp_path / "whole" / "state.pt", map_location="cpu", weights_only=True)
    assert {"C", "opt_c"} <= state.keys()
