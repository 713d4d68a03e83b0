import numpy as np
import torch

from generator.data.dataset import person_dataset
from generator.pose import FLIP_PERM


def test_items(sim_root):
    root, summary = sim_root
    ds = person_dataset(root, ("train",))
    assert len(ds) == summary["train"]
    it = ds[0]
    assert it["image"].shape == (3, 128, 64) and -1 <= it["image"].min() and it["image"].max() <= 1
    assert it["pose_maps"].shape == (18, 128, 64)
    assert it["pose_mask"].shape == (1, 128, 64) and it["pose_mask"].sum() > 100
    assert it["roi_boxes"].shape == (7, 4) and it["roi_visible"].shape == (7,)
    assert it["pose_vector"].shape == (54,)
    assert it["pid"] > 0 and 1 <= it["camid"] <= 6
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 128, 64) and batch["pid"].shape == (4,)


def test_flip_item(sim_root):
    root, _ = sim_root
    ds = person_dataset(root, ("query", "gallery"))
    a, b = ds.item(3), ds.item(3, flip=True)
    assert torch.equal(b["image"], a["image"].flip(-1))
    assert torch.equal(b["pose_maps"], a["pose_maps"][FLIP_PERM].flip(-1))
    assert np.isclose(b["pose_mask"].sum(), a["pose_mask"].sum(), rtol=0.05)
    ds.flip_prob = 1.0
    assert torch.equal(ds[3]["image"], b["image"])
