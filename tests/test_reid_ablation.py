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
    import json

    from reid.ablation import stage_dir

    done = json.loads((stage_dir(cfg.out, "virtual", 0) / "result.json").read_text())
    assert (done["train_set"], done["test_set"]) == ("vm_virtual", "vm_real")  # trained on virtual, tested on real
    # a finished run trained to another budget is refused, never mixed into the table
    cfg.matched_steps = False
    with pytest.raises(UserError, match="steps_per_epoch"):
        run_ablation(cfg, progress=False)


def test_a_finished_stage_is_read_whatever_its_result_calls_the_datasets(tmp_path):
    """A stage's result.json names the datasets it trained and was evaluated on: `train_set` and `test_set`, and in
    results written before the glossary torchreid's `source` and `target`. Both are read; the row carries neither."""
    import json

    from reid.ablation import finished_result, stage_dir

    cfg = AblationConfig(out=str(tmp_path), settings=["real"], seeds=[0], train=ReidTrainConfig(epochs=1))
    t = cfg.train
    done = {"rank1": 0.5, "mAP": 0.4, "mINP": 0.2, "cmc": [0.5], "epochs": 1, "steps_per_epoch": 0, "steps": 10,
            "transforms": list(t.transforms), "model": t.model, "loss": t.loss, "lr": t.lr, "batch": t.batch,
            "size": list(t.size)}
    path = stage_dir(tmp_path, "real", 0) / "result.json"
    path.parent.mkdir(parents=True)
    for names in ({"train_set": "vm_real", "test_set": "vm_real"}, {"source": "vm_real", "target": "vm_real"}):
        path.write_text(json.dumps({**done, **names}))
        row = finished_result(cfg, "real", 0)
        assert row["setting"] == "real" and row["rank1"] == 0.5 and row["steps"] == 10
        assert not {"train_set", "test_set", "source", "target"} & set(row)
