import pandas as pd
import pytest

from generator.errors import UserError
from reid.ablation import AblationConfig, run_ablation
from reid.torchreid_adapter import market_records, merge_records, train_batches_per_epoch
from reid.train import ReidTrainConfig


@pytest.mark.slow  # trains osnet three times
def test_matched_steps_gives_every_setting_the_real_step_count(sim_small, sim_root, tmp_path):
    real = market_records(sim_small)["train"]
    virtual = market_records(sim_root[0], ("train",))["train"]
    real_batches = train_batches_per_epoch(real, 8)
    # without matching the settings would differ: the test can fail
    assert train_batches_per_epoch(virtual, 8) != real_batches
    assert train_batches_per_epoch(merge_records(real, virtual)[0], 8) > real_batches
    train = ReidTrainConfig(epochs=2, batch=8, workers=0, size=[64, 32], device="cpu")
    cfg = AblationConfig(real_root=str(sim_small), virtual_root=str(sim_root[0]),
                         settings=["real", "virtual", "real+virtual"], seeds=[0], train=train, matched_steps=True,
                         out=str(tmp_path / "abl"))
    results = run_ablation(cfg, progress=False)
    assert [r["steps"] for r in results] == [2 * real_batches] * 3
    assert pd.read_csv(tmp_path / "abl" / "results.csv")["steps"].tolist() == [2 * real_batches] * 3
    assert "iteration-matched:" in (tmp_path / "abl" / "results.md").read_text()
    # a finished run trained to another budget is refused, never mixed into the table
    cfg.matched_steps = False
    with pytest.raises(UserError, match="steps_per_epoch"):
        run_ablation(cfg, progress=False)
