"""torchreid's own market1501 class, not our parser, loads a SimMarket dataset."""
from collections import Counter

import pandas as pd
import pytest

from generator.errors import UserError
from reid.torchreid_adapter import builtin_market1501


def test_torchreid_loads_simmarket(sim_root):
    root, summary = sim_root
    ds = builtin_market1501(root.parent)
    m = pd.read_csv(root / "manifest.csv")
    kept = m[m.pid != -1]  # torchreid drops junk
    assert len(ds.train) == summary["train"]
    assert len(ds.query) == summary["query"]
    assert len(ds.gallery) == summary["gallery"] - summary["junk"] == int((kept.split == "gallery").sum())
    assert ds.num_train_pids == summary["train_ids"]
    assert len({pid for _, pid, _, _ in ds.query}) == summary["test_ids"]
    assert ds.num_train_cams == m[m.split == "train"].camid.nunique()
    cams = Counter(cam + 1 for _, _, cam, _ in ds.gallery)
    assert cams == Counter(kept[kept.split == "gallery"].camid)


def test_adapter_refuses_to_download(tmp_path):
    with pytest.raises(UserError, match="market1501"):
        builtin_market1501(tmp_path)
    assert not (tmp_path / "market1501").exists()
