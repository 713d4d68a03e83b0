import json

import pytest
import torch

from reid.torchreid_adapter import market_records, merge_records, register_market
from reid.train import ReidTrainConfig, cpu_model, train_and_evaluate


def test_merged_dataset_offsets_and_counts(sim_root, sim_small):
    real = market_records(sim_root[0])
    virtual = market_records(sim_small, ("train",))
    merged, offset = merge_records(real["train"], virtual["train"])
    assert offset == max(p for _, p, _ in real["train"]) + 1
    assert len(merged) == len(real["train"]) + len(virtual["train"])
    real_ids = {p for _, p, _ in real["train"]}
    virt_ids = {p for _, p, _ in merged[len(real["train"]):]}
    assert len(real_ids | virt_ids) == len(real_ids) + len({p for _, p, _ in virtual["train"]})
    assert min(virt_ids) >= offset
    assert [c for _, _, c in merged[len(real["train"]):]] == [c for _, _, c in virtual["train"]]  # cameras kept
    with pytest.raises(Exception, match="collide"):
        merge_records(real["train"], virtual["train"], pid_offset=0)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_one_epoch_train_and_evaluate(sim_root, tmp_path, loss):
    name = register_market("sim_e2e", sim_root[0])
    cfg = ReidTrainConfig(epochs=1, batch=16, workers=0, size=[128, 64], loss=loss)
    out = train_and_evaluate(name, name, cfg, tmp_path / "run", seed=0, progress=False)
    assert 0 <= out["rank1"] <= 1 and 0 < out["mAP"] <= 1
    assert out["num_valid_queries"] == len(market_records(sim_root[0])["query"])
    assert json.loads((tmp_path / "run" / "result.json").read_text())["rank1"] == out["rank1"]
    assert (tmp_path / "run" / "state.pt").exists()
    # what trained it, as precisely as a CPU run's numbers depend on it: model, instruction set, threads
    assert out["device"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else
                             f"cpu {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), "
                             f"{torch.get_num_threads()} threads")


@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_steps_per_epoch_caps_and_extends_an_epoch(sim_small, loss):
    from reid.torchreid_adapter import (
        build_datamanager,
        build_engine,
        build_model,
        train_batches_per_epoch,
        train_one_epoch,
    )
    from reid.train import train_sampler

    torch.manual_seed(0)
    name = register_market("sim_steps", sim_small)
    train = market_records(sim_small)["train"]
    dm = build_datamanager(name, name, (64, 32), batch=8, workers=0, sampler=train_sampler(loss))
    natural = len(dm.train_loader)
    assert natural == train_batches_per_epoch(train, 8, train_sampler(loss))
    if loss == "softmax":
        assert natural == len(train) // 8  # torchreid drops the last partial batch
    model = build_model("osnet_x0_25", dm.num_train_pids, loss)
    engine, optimizer, _ = build_engine(loss, dm, model)
    optimiser_steps = []
    optimizer.register_step_post_hook(lambda *_: optimiser_steps.append(1))
    # 0: one pass (the identity sampler's pass may fall a little short of its estimated length)
    for steps in (0, 2, natural + 3):
        optimiser_steps.clear()
        ran = train_one_epoch(engine, 0, 1, progress=False, steps=steps)
        assert ran == len(optimiser_steps)
        if steps:
            assert ran == steps and engine.num_batches == steps  # torchreid's logging reads len(train_loader)
        else:
            assert ran == natural if loss == "softmax" else 0 < ran <= natural


def test_a_dataset_with_an_empty_split_is_refused_before_torchreid_sees_it(sim_root):
    from generator.errors import UserError
    from reid.torchreid_adapter import register_dataset

    rec = market_records(sim_root[0])
    for split in ("train", "query", "gallery"):
        parts = {s: (rec[s] if s != split else []) for s in ("train", "query", "gallery")}
        with pytest.raises(UserError, match=f"dataset 'vm_empty': its {split.replace('train', 'training')} split "
                                            "holds no images"):
            register_dataset("vm_empty", parts["train"], parts["query"], parts["gallery"])


def test_weights_from_a_checkpoint_of_torchreids_engine_are_read(tmp_path):
    """torchreid's engine saves its rank-1 as a numpy scalar beside the state dict; weights_only loading refuses
    such a file unless numpy scalars are allowed."""
    import numpy as np

    from reid.torchreid_adapter import _read_weights, build_model

    model = build_model("osnet_x0_25", 5)
    path = tmp_path / "model.pth.tar-3"
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "rank1": np.float32(0.5), "mAP": np.float64(0.4),
                "optimizer": None}, path)
    state = _read_weights(path)
    assert set(state) == set(model.state_dict())
    assert build_model("osnet_x0_25", 5, weights=str(path)).state_dict()["conv1.conv.weight"].equal(
        model.state_dict()["conv1.conv.weight"])


def test_a_later_stage_starts_from_the_features_never_the_classifier():
    """virtual->real fine-tunes from the virtual stage's model: its classifier's classes are other people, so it is
    not carried over, also when the two stages have as many identities."""
    from reid.torchreid_adapter import build_model
    from reid.train import start_from

    torch.manual_seed(0)
    before, after = build_model("osnet_x0_25", 7), build_model("osnet_x0_25", 7)
    fresh = {k: v.clone() for k, v in after.state_dict().items()}
    start_from(after, before.state_dict())
    for k, v in after.state_dict().items():
        source = fresh if k.startswith("classifier") else before.state_dict()
        assert v.equal(source[k]), k
    assert not fresh["classifier.weight"].equal(before.state_dict()["classifier.weight"])
