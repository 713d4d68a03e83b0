"""Generated images joining real ones in re-ID training (reid.mixed): label treatments, batch composition, the
triplet mask, and s = 0 training bit for bit as the real-only run. Tiny SimMarket, osnet_x0_25 at 64x32."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import one_line_error

import reid.train
from augment.cli import main
from generator.config import load_config
from generator.errors import UserError
from generator.io import load_checkpoint
from reid.ablation import AblationConfig, run_ablation
from reid.mixed import (
    Mix,
    MixedLoader,
    generated_per_batch,
    generated_pool,
    soft_cross_entropy,
    soft_targets,
    train_labels,
)
from reid.torchreid_adapter import (
    build_datamanager,
    build_engine,
    build_model,
    image_reader,
    import_torchreid,
    market_records,
    register_dataset,
    train_one_epoch,
)
from reid.train import ReidTrainConfig, seed_everything, train_and_evaluate, train_sampler

BATCH = 8


@pytest.fixture(scope="module")
def sources(sim_small, sim_root):
    """Real training records (sim_small), remixes (a copy of the real train split: same pids) and new identities
    (sim_root's training identities), and the registered real dataset."""
    real = market_records(sim_small)
    name = register_dataset("mixed_real", real["train"], real["query"], real["gallery"])
    new = market_records(sim_root[0], ("train",))["train"]
    return real["train"], real["train"], new, name


def _loader(name: str, loss: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_datamanager(name, name, (64, 32), batch=BATCH, workers=0, sampler=train_sampler(loss))


def test_generated_per_batch():
    assert generated_per_batch(8, 0.0) == 0
    assert generated_per_batch(8, 0.25) == 3  # 8 / 11 real, 3 / 11 = 27 % generated
    assert generated_per_batch(32, 0.25) == 11
    assert generated_per_batch(32, 0.5) == 32
    with pytest.raises(UserError, match="virtual_share"):
        generated_per_batch(8, 1.0)


def test_label_treatments(sources):
    real, remix, new, _ = sources
    num_real = len({p for _, p, _ in real})
    labels = torch.tensor([0, 3, num_real - 1])
    # LSRO: uniform over the real classes, no class added
    lsro = generated_pool(real, [], new, "lsro")
    assert lsro.num_classes == num_real and (lsro.labels == -1).all()
    t = soft_targets(labels, torch.from_numpy(lsro.labels[:4]), lsro.num_classes, num_real, "lsro")
    assert t.shape == (3 + 4, num_real)
    assert torch.allclose(t[3:], torch.full((4, num_real), 1 / num_real))
    # a remix under LSRO shows a real identity: it keeps that identity's class, only the new identities are uniform
    both = generated_pool(real, remix[:2], new[:2], "lsro")
    t = soft_targets(labels, torch.from_numpy(both.labels), both.num_classes, num_real, "lsro")
    real_class = train_labels(real)
    assert torch.equal(t[3:5].argmax(1), torch.tensor([real_class[p] for _, p, _ in remix[:2]]))
    assert torch.equal(t[3:5].max(1).values, torch.ones(2))
    assert torch.allclose(t[5:], torch.full((2, num_real), 1 / num_real))
    # one-hot / smooth new identities: a class each past the real ones
    onehot = generated_pool(real, [], new, "onehot")
    num_new = len({p for _, p, _ in new})
    assert onehot.num_classes == num_real + num_new and onehot.labels.min() == num_real
    eps, gen = 0.2, torch.from_numpy(onehot.labels[:5])
    t = soft_targets(labels, gen, onehot.num_classes, num_real, "smooth", eps)
    c = onehot.num_classes
    assert torch.allclose(t[3:].gather(1, gen[:, None]), torch.full((5, 1), 1 - eps + eps / c))
    assert torch.allclose(t[3:].sum(1), torch.ones(5))
    assert torch.allclose(t[3:].min(1).values, torch.full((5,), eps / c))
    t = soft_targets(labels, gen, c, num_real, "onehot")
    assert torch.equal(t[3:], torch.nn.functional.one_hot(gen, c).float())
    # real rows keep torchreid's smoothed cross-entropy, bit for bit
    logits = torch.randn(3, c)
    criterion = import_torchreid().losses.CrossEntropyLoss(num_classes=c, use_gpu=False, label_smooth=True)
    ours = soft_cross_entropy(logits, soft_targets(labels, torch.empty(0, dtype=torch.long), c, num_real))
    assert torch.equal(ours, criterion(logits, labels))


def test_remixes_carry_their_source_pid_into_the_real_class(sources):
    real, remix, new, name = sources
    pool = generated_pool(real, remix, [], "onehot")
    assert pool.num_classes == pool.num_real  # no class added
    ds = import_torchreid().data.datasets.init_image_dataset(name, verbose=False)
    torchreid_label = {path: label for path, label, *_ in ds.train}
    assert pool.remix.all() and [int(k) for k in pool.labels] == [torchreid_label[p] for p in pool.paths]
    stranger = [(remix[0][0], 9999, 0)]
    with pytest.raises(UserError, match="no real training identity"):
        generated_pool(real, stranger, [], "onehot")


@pytest.mark.parametrize("loss, triplet", [("softmax", False), ("triplet", True)])
def test_batch_composition(sources, loss, triplet):
    real, remix, new, name = sources
    dm = _loader(name, loss)
    seed_everything(1)  # torch: RandomSampler and flips; python and numpy: RandomIdentitySampler
    real_only = list(dm.train_loader)
    pool = generated_pool(real, remix, new, "onehot")
    mixed = MixedLoader(dm.train_loader, Mix(pool, 0.25, triplet=triplet), seed=0, load_image=image_reader(dm))
    seed_everything(1)
    batches = list(mixed)
    assert len(batches) == len(real_only) == len(mixed) and mixed.step == len(batches)
    g = generated_per_batch(BATCH, 0.25)
    remixes_drawn = 0
    for r, b in zip(real_only, batches, strict=True):
        img, paths, pids = r["img"], r["impath"], r["pid"]
        assert len(b["img"]) == len(b["pid"]) == len(b["target"]) == len(b["in_triplet"]) == BATCH + g
        # the real part is the real-only run's batch: same images, same flips, same order
        assert torch.equal(b["img"][:BATCH], img) and b["impath"][:BATCH] == list(paths)
        assert torch.equal(b["pid"][:BATCH], pids)
        generated = b["impath"][BATCH:]
        assert set(generated) <= set(pool.paths)
        is_remix = torch.tensor([pool.remix[pool.paths.index(p)] for p in generated])
        remixes_drawn += int(is_remix.sum())
        assert b["in_triplet"][:BATCH].all()
        assert torch.equal(b["in_triplet"][BATCH:], is_remix & triplet)  # new identities never
        if triplet:  # the remixes are of identities in the real part: they have real positives
            assert set(b["pid"][BATCH:][is_remix].tolist()) <= set(pids.tolist())
    assert remixes_drawn and remixes_drawn < g * len(batches)  # both kinds were drawn
    # the generated draws are a function of (seed, step): a resumed run draws the same
    mixed.step = 1
    again = mixed.combine(real_only[1])
    assert again["impath"][BATCH:] == batches[1]["impath"][BATCH:]
    assert torch.equal(again["img"][BATCH:], batches[1]["img"][BATCH:])


@pytest.mark.parametrize("asked", [False, True])
def test_triplet_term_leaves_generated_images_out_unless_asked(sources, asked):
    real, remix, new, name = sources
    dm = _loader(name, "triplet")
    pool = generated_pool(real, remix, new, "lsro")
    mixed = MixedLoader(dm.train_loader, Mix(pool, 0.5, "lsro", triplet=asked), seed=0, load_image=image_reader(dm))
    model = build_model("osnet_x0_25", mixed.num_classes, "triplet")
    engine, _, _ = build_engine("triplet", dm, model, mixed_loader=mixed)
    seen, criterion_t = [], engine.criterion_t
    engine.criterion_t = lambda features, pids: seen.append(pids.clone()) or criterion_t(features, pids)
    batches = []
    mixed.combine = (lambda combine: lambda real: batches.append(combine(real)) or batches[-1])(mixed.combine)
    train_one_epoch(engine, 0, 1, progress=False, steps=2)
    for pids, b in zip(seen, batches, strict=True):
        remix_rows = [pool.remix[pool.paths.index(p)] for p in b["impath"][BATCH:]]
        assert len(pids) == BATCH + (sum(remix_rows) if asked else 0)
        assert (pids >= 0).all()  # no LSRO image (class -1) in the triplet term
    assert any(len(p) > BATCH for p in seen) == asked


def _weights(run_dir):
    return load_checkpoint(run_dir / "state.pt")["model"]


def _inputs_of_training(monkeypatch):
    """Every training batch the model is given, recorded through a forward pre-hook."""
    seen, build = [], reid.train.build_model

    def hooked(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].clone()) if m.training else None)
        return model

    monkeypatch.setattr(reid.train, "build_model", hooked)
    return seen


@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_share_zero_is_real_only_bit_for_bit(sim_small, tmp_path, monkeypatch, loss):
    seen = _inputs_of_training(monkeypatch)
    train = ReidTrainConfig(epochs=2, steps_per_epoch=2, batch=BATCH, workers=0, size=[64, 32], device="cpu",
                            loss=loss)
    cfg = AblationConfig(real_root=str(sim_small), remix_root=str(sim_small), settings=["real", "real+remix"],
                         seeds=[0], train=train, virtual_share=0.0, virtual_label="smooth",
                         out=str(tmp_path / "abl"))
    real, mixed = run_ablation(cfg, progress=False)
    assert len(seen) == 2 * 4 and all(torch.equal(a, b) for a, b in zip(seen[:4], seen[4:], strict=True))
    for key in ("rank1", "rank5", "mAP", "mINP", "cmc", "steps"):
        assert real[key] == mixed[key], key
    assert mixed["generated_per_batch"] == 0 and mixed["virtual_share"] == 0
    runs = tmp_path / "abl"
    a, b = _weights(runs / "real/seed0/stage0-real"), _weights(runs / "real_plus_remix/seed0/stage0-real_plus_remix")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    done = json.loads((runs / "real_plus_remix/seed0/stage0-real_plus_remix/result.json").read_text())
    assert done["mix"]["virtual_share"] == 0 and done["rank1"] == real["rank1"]
    table = (runs / "results.md").read_text()
    assert f"real+remix: 0 generated images of {Path(sim_small).name} (sim) appended" in table
    # a finished run is never reused for another recipe
    cfg.virtual_share = 0.25
    with pytest.raises(UserError, match="generated images"):
        run_ablation(cfg, progress=False)


def test_mixed_run_keeps_the_real_batches_and_resumes_exactly(sources, sim_small, tmp_path, monkeypatch):
    """At s = 0.25 the real part of every step is the real-only run's batch; a run killed after an epoch resumes
    to the same weights."""
    real, remix, new, name = sources
    seen = _inputs_of_training(monkeypatch)
    cfg = ReidTrainConfig(epochs=2, steps_per_epoch=2, batch=BATCH, workers=0, size=[64, 32], device="cpu")
    train_and_evaluate(name, name, cfg, tmp_path / "real", seed=0, progress=False)
    real_batches = list(seen)
    mix = Mix(generated_pool(real, remix, new, "lsro"), 0.25, "lsro")
    seen.clear()
    out = train_and_evaluate(name, name, cfg, tmp_path / "mixed", seed=0, progress=False, mix=mix)
    g = generated_per_batch(BATCH, 0.25)
    assert out["mix"]["generated_per_batch"] == g and out["train_ids"] == mix.pool.num_real
    assert [len(x) for x in seen] == [BATCH + g] * 4
    assert all(torch.equal(x[:BATCH], r) for x, r in zip(seen, real_batches, strict=True))
    # killed after the first epoch, then resumed
    epochs, once = [], reid.train.train_one_epoch

    def killed_in_epoch_two(*args, **kwargs):
        if epochs:
            raise KeyboardInterrupt
        epochs.append(1)
        return once(*args, **kwargs)

    monkeypatch.setattr(reid.train, "train_one_epoch", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(name, name, cfg, tmp_path / "resumed", seed=0, progress=False, mix=mix)
    monkeypatch.setattr(reid.train, "train_one_epoch", once)
    resumed = train_and_evaluate(name, name, cfg, tmp_path / "resumed", seed=0, progress=False, mix=mix)
    a, b = _weights(tmp_path / "mixed"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed["rank1"] == out["rank1"]


@pytest.mark.parametrize("data, needles", [
    ({"virtual_share": 1.0}, ("virtual_share", "[0, 1)")),
    ({"virtual_label": "soft"}, ("virtual_label", "lsro")),
    ({"virtual_epsilon": 1.5}, ("virtual_epsilon",)),
    ({"virtual_triplet": True}, ("virtual_triplet", "train.loss: triplet")),
    ({"settings": ["real+remixes"]}, ("real+remix",)),
])
def test_config_refused_in_one_line(tmp_path, monkeypatch, capsys, data, needles):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"real_root": "nowhere", "out": str(tmp_path / "out"), **data}))
    rc = main(["reid", "ablate", "-c", str(config), "--quiet"])
    one_line_error(rc, *capsys.readouterr(), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_mixed_settings_need_their_roots(sim_small, tmp_path):
    cfg = AblationConfig(real_root=str(sim_small), settings=["real+remix"], out=str(tmp_path / "abl"))
    with pytest.raises(UserError, match="remix_root"):
        run_ablation(cfg, progress=False)
    cfg.settings = ["real+new"]
    with pytest.raises(UserError, match="virtual_root"):
        run_ablation(cfg, progress=False)


def test_pool_draws_cover_the_pool_before_repeating(sources):
    real, remix, new, _ = sources
    pool = generated_pool(real, remix, new, "lsro")
    mix = Mix(pool, 0.5)

    class _Real:
        batch_size = BATCH

    loader = MixedLoader(_Real(), mix, seed=3, load_image=None)
    n = len(pool.paths)
    drawn = np.concatenate([loader.draws[0](step)[0] for step in range(n // BATCH)])
    assert len(set(drawn.tolist())) == len(drawn)  # one shuffled pass: no image twice


def test_generated_images_get_the_train_transforms_without_touching_the_real_part(sources):
    """Generated images get the configured random transforms (the flip excepted) from RNGs seeded by their key:
    the same key reads the same tensor, another key another one, and the global RNGs (the real part's sampler and
    flips) do not move."""
    real, remix, _, name = sources
    dm = _loader(name, "softmax")
    path = remix[0][0]
    plain = image_reader(dm)(path, 7)
    assert torch.equal(plain, image_reader(dm, ("random_flip",))(path, 123))  # the flip is reid.mixed's own
    read = image_reader(dm, ("random_flip", "random_crop", "color_jitter", "random_erase"))
    torch.manual_seed(5)
    import random
    random.seed(5)
    before = (torch.get_rng_state(), random.getstate())
    a, b = read(path, 1), read(path, 1)
    others = [read(path, k) for k in range(2, 8)]
    assert torch.equal(a, b) and a.shape == plain.shape
    assert any(not torch.equal(a, o) for o in others) and not torch.equal(a, plain)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]


def test_train_transforms_are_checked_and_recorded(sources, tmp_path):
    _, _, _, name = sources
    with pytest.raises(UserError, match="transforms.*'random_rotate'.*random_erase"):
        ReidTrainConfig(transforms=["random_flip", "random_rotate"])
    with pytest.raises(UserError, match=r"^--set 'train.transforms=\[random_flop\]': train.transforms: 'random_flop'"):
        load_config(AblationConfig, None, ["train.transforms=[random_flop]"])  # the override named, not a file
    cfg = ReidTrainConfig(size=(64, 32), batch=BATCH, epochs=1, steps_per_epoch=2, workers=0,
                          transforms=["random_flip", "random_erase"])
    res = train_and_evaluate(name, name, cfg, tmp_path / "run", seed=0, progress=False)
    assert res["transforms"] == ["random_flip", "random_erase"]
    # a finished run is never reused for other transforms
    with pytest.raises(UserError, match="train.transforms"):
        train_and_evaluate(name, name, ReidTrainConfig(size=(64, 32), batch=BATCH, epochs=1, steps_per_epoch=2,
                                                       workers=0), tmp_path / "run", seed=0, progress=False)


def test_learning_curve_leaves_training_unchanged(sources, tmp_path):
    """eval_every records rank-1 / mAP along the way without moving any RNG: the run ends with the same weights
    and metrics as the run without it."""
    _, _, _, name = sources
    base = dict(size=(64, 32), batch=BATCH, epochs=3, steps_per_epoch=2, workers=0)
    plain = train_and_evaluate(name, name, ReidTrainConfig(**base), tmp_path / "plain", seed=0, progress=False)
    curve = train_and_evaluate(name, name, ReidTrainConfig(**base, eval_every=1), tmp_path / "curve", seed=0,
                               progress=False)
    assert [p["epoch"] for p in curve["curve"]] == [1, 2, 3] and [p["steps"] for p in curve["curve"]] == [2, 4, 6]
    assert curve["curve"][-1]["rank1"] == curve["rank1"] == plain["rank1"] and curve["mAP"] == plain["mAP"]
    a = load_checkpoint(tmp_path / "plain" / "state.pt")["model"]
    b = load_checkpoint(tmp_path / "curve" / "state.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_never_reused_for_another_epoch_count(sources, tmp_path):
    _, _, _, name = sources
    base = dict(size=(64, 32), batch=BATCH, steps_per_epoch=1, workers=0)
    train_and_evaluate(name, name, ReidTrainConfig(**base, epochs=1), tmp_path / "run", seed=0, progress=False)
    with pytest.raises(UserError, match="train.epochs=1, the config asks for 2"):
        train_and_evaluate(name, name, ReidTrainConfig(**base, epochs=2), tmp_path / "run", seed=0, progress=False)


@pytest.mark.parametrize("new_label", ["smooth", "lsro"])
def test_combined_batches_hold_each_kind_at_its_count_under_its_own_label(sim_small, sim_root, tmp_path, new_label):
    """A combined mix (cut-and-paste of the real people, then new identities): every batch is the real-only run's
    batch, then exactly the configured count of cut-and-paste images, then of new identities. Each pasted image
    carries the class of the real person it shows (its manifest's source image's pid), each new identity the
    class or target its label treatment gives."""
    import pandas as pd

    from augment.makers.cutpaste import cut_paste
    from reid.mixed import parts_per_batch, train_labels

    pasted = tmp_path / "cutpaste"
    cut_paste(sim_small, pasted, size=(64, 32), progress=False)
    real = market_records(sim_small)
    name = register_dataset("combined_real", real["train"], real["query"], real["gallery"])
    paste_records = market_records(pasted, ("train",))["train"]
    new = market_records(sim_root[0], ("train",))["train"]
    classes = train_labels(real["train"])
    num_real = len(classes)
    paste = Mix(generated_pool(real["train"], paste_records, [], "smooth"), 0.25, "smooth")
    more = Mix(generated_pool(real["train"], [], new, new_label), 0.125, new_label)
    mix = Mix(paste.pool, 0.25, "smooth", more=[more])
    counts = parts_per_batch(BATCH, [0.25, 0.125])
    assert counts == [3, 2] and mix.summary(BATCH)["more"][0]["generated_per_batch"] == 2
    dm = _loader(name, "softmax")
    seed_everything(1)
    real_only = list(dm.train_loader)
    mixed = MixedLoader(dm.train_loader, mix, seed=0, load_image=image_reader(dm))
    assert mixed.num_classes == num_real + (len({p for _, p, _ in new}) if new_label == "smooth" else 0)
    seed_everything(1)
    batches = list(mixed)
    manifest = pd.read_csv(pasted / "manifest.csv").set_index("path")
    source_pid = {str(pasted / p): int(Path(s).name[:4]) for p, s in manifest.source.items()}
    new_pid = {path: pid for path, pid, _ in new}
    new_classes = train_labels(new)
    for r, b in zip(real_only, batches, strict=True):
        assert len(b["img"]) == len(b["pid"]) == len(b["target"]) == BATCH + sum(counts)
        assert torch.equal(b["img"][:BATCH], r["img"]) and torch.equal(b["pid"][:BATCH], r["pid"])
        pasted_paths, new_paths = b["impath"][BATCH:BATCH + 3], b["impath"][BATCH + 3:]
        assert set(pasted_paths) <= set(source_pid) and set(new_paths) <= set(new_pid)
        for k, path in enumerate(pasted_paths):  # the class of the real person the pasted image shows
            assert int(b["pid"][BATCH + k]) == classes[source_pid[path]]
            assert b["target"][BATCH + k].argmax() == classes[source_pid[path]]
        for k, path in enumerate(new_paths, start=BATCH + 3):
            if new_label == "lsro":  # no class: uniform over the real classes
                assert int(b["pid"][k]) == -1
                assert torch.allclose(b["target"][k][:num_real], torch.full((num_real,), 1 / num_real))
            else:  # a class of its own past the real ones, smoothed
                assert int(b["pid"][k]) == num_real + new_classes[new_pid[path]]
                assert b["target"][k].argmax() == num_real + new_classes[new_pid[path]]
                assert b["target"][k].max() == pytest.approx(0.9 + 0.1 / mixed.num_classes)


def test_the_results_table_names_what_a_mixed_setting_was_given(sim_small, tmp_path):
    """real+remix takes any images of the real identities: the table says which (the folder, its manifest's
    origins), so that cut-and-paste given as remix_root is not read as the generator's remixes."""
    import pandas as pd

    from augment.makers.cutpaste import cut_paste
    from reid.ablation import check_kind, results_table

    def describe_data(root):  # how check_kind names a folder given as remix_root (no image of it refused)
        return check_kind(root, [], "remix", "remix_root", "virtual_root")

    pasted = tmp_path / "pasted"
    cut_paste(sim_small, pasted, size=(64, 32), progress=False)
    assert describe_data(pasted) == "pasted (cutpaste)"
    assert describe_data(sim_small) == f"{Path(sim_small).name} (sim)"  # a SimMarket's own people
    (tmp_path / "bare" / "bounding_box_train").mkdir(parents=True)
    assert describe_data(tmp_path / "bare") == "bare"  # no manifest: the folder alone
    row = {"setting": "real+remix", "seed": 0, "steps": 4, "rank1": 0.5, "rank5": 0.6, "mAP": 0.4, "mINP": 0.2,
           "generated_per_batch": 3, "virtual_share": 0.25, "virtual_label": "smooth", "virtual_epsilon": 0.1,
           "virtual_triplet": False}
    table = results_table(pd.DataFrame([row]), data={"real+remix": describe_data(pasted)})
    assert "real+remix: 3 generated images of pasted (cutpaste) appended to every real batch" in table


def test_combined_shares_are_checked():
    from reid.ablation import MoreGenerated

    with pytest.raises(UserError, match="more_generated"):
        AblationConfig(virtual_share=0.5, more_generated=[MoreGenerated(share=0.5)])
    with pytest.raises(UserError, match="sum is below 1"):
        from reid.mixed import parts_per_batch
        parts_per_batch(8, [0.6, 0.4])
