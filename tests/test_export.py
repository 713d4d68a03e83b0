"""Builds of more than 1501 identities: the MSMT17 list-layout export loads in torchreid's msmt17 dataset, the
build's Market-1501 folder joins a real dataset through register_with_extra_training (as its README.txt says),
and the ablation trains on the build."""
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from augment.makers.build_config import BuildConfig
from augment.makers.build_output import MSMT17_README, export_build, query_gallery_split
from augment.makers.export import msmt17_records
from generator.config import load_config
from reid.extra_training import register_with_extra_training
from reid.torchreid_adapter import import_torchreid, market_records

IDS = 2000


@pytest.fixture(scope="module")
def big_build(tmp_path_factory):
    """A Market-layout build folder of 2,000 identities x 2 tiny images (what the builder writes), + its manifest."""
    out = tmp_path_factory.mktemp("big") / "vm"
    (out / "bounding_box_train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(1, IDS + 1):
        colour = rng.integers(0, 255, 3)
        for k, cam in enumerate((1 + pid % 6, 1 + (pid + 3) % 6)):
            name = f"{pid:04d}_c{cam}s1_{2 * pid + k:06d}_01.jpg"
            Image.fromarray(np.broadcast_to(colour, (16, 8, 3)).astype(np.uint8)).save(out / "bounding_box_train" /
                                                                                        name)
            rows.append({"path": f"bounding_box_train/{name}", "split": "train", "pid": pid, "camid": cam})
    return out, pd.DataFrame(rows)


def test_msmt17_records_number_labels_per_group():
    df = pd.DataFrame({"src": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"],
                       "split": ["train", "train", "train", "query", "gallery"], "pid": [7, 3, 7, 9, 9],
                       "camid": [1, 2, 6, 3, 4]})
    recs = msmt17_records(df)
    assert recs["train"] == [("train/0007/0007_000_01_vm_0000_0.jpg", 1, 1),
                             ("train/0003/0003_000_02_vm_0000_0.jpg", 0, 2),
                             ("train/0007/0007_001_06_vm_0001_0.jpg", 1, 6)]
    assert recs["query"] == [("test/0009/0009_000_03_vm_0000_0.jpg", 0, 3)]
    assert recs["gallery"] == [("test/0009/0009_001_04_vm_0001_0.jpg", 0, 4)]


def test_2000_identities_load_in_torchreid(big_build):
    out, df = big_build
    export_build(out, df, "msmt17")
    assert not list(out.glob(".*partial"))
    import_torchreid()
    from torchreid.reid.data.datasets.image.msmt17 import MSMT17

    (out / "msmt17" / "MSMT17_V1" / "list_query.txt").write_text("0001/0001_000_02_vm_0000_0.jpg 0\n")
    (out / "msmt17" / "MSMT17_V1" / "list_gallery.txt").write_text("0001/0001_001_05_vm_0001_0.jpg 0\n")
    for name in ("0001_000_02_vm_0000_0.jpg", "0001_001_05_vm_0001_0.jpg"):  # a test split, as test_share > 0 has
        (out / "msmt17" / "MSMT17_V1" / "test" / "0001").mkdir(parents=True, exist_ok=True)
        (out / "msmt17" / "MSMT17_V1" / "test" / "0001" / name).write_bytes(
            (out / "msmt17" / "MSMT17_V1" / "train" / "0001" / name).read_bytes())
    ds = MSMT17(root=str(out), verbose=False)
    assert len(ds.train) == 2 * IDS and ds.num_train_pids == IDS
    assert {c for _, _, c, _ in ds.train} == set(range(6))  # 0-based, as torchreid's msmt17 reads them
    # the first identity's images, by label and camera, are the build's pid 1 in cameras 2 and 5
    first = sorted((p, c) for p, pid, c, _ in ds.train if pid == 0)
    assert [c for _, c in first] == [1, 4] and all("/0001/0001_" in p for p, _ in first)
    for name in ("list_query.txt", "list_gallery.txt"):
        (out / "msmt17" / "MSMT17_V1" / name).write_text("")  # back to the training-only build's export


def test_a_training_only_build_joins_a_real_dataset_with_all_its_identities(big_build, sim_small):
    """torchreid's market1501 stops at pid 1501 and needs a query; the project's registration takes any pid count."""
    out, df = big_build
    name = register_with_extra_training("big_extra", sim_small, out, identities="new")
    ds = import_torchreid().data.datasets.init_image_dataset(name, mode="train", verbose=False)
    real = market_records(sim_small)
    assert ds.num_train_pids == len({p for _, p, _ in real["train"]}) + IDS
    assert len(ds.train) == len(real["train"]) + 2 * IDS and len(ds.query) == len(real["query"])
    assert "register_with_extra_training" in MSMT17_README


def test_the_ablation_trains_on_a_2000_identity_build(capsys, big_build, sim_small, tmp_path):
    from conftest import run_main

    out, _ = big_build
    cfg = tmp_path / "reid.yaml"
    cfg.write_text(yaml.safe_dump({
        "real_root": str(sim_small), "virtual_root": str(out), "settings": ["virtual"], "seeds": [0],
        "train": {"size": [64, 32], "batch": 8, "epochs": 1, "steps_per_epoch": 2, "workers": 0},
        "out": str(tmp_path / "runs")}))
    rc, stdout, err = run_main(capsys, "reid", "ablate", "-c", cfg, "--quiet")
    assert rc == 0, err[-2000:]
    res = pd.read_csv(tmp_path / "runs" / "results.csv")
    assert list(res.setting) == ["virtual"] and int(res.train_ids.iloc[0]) == IDS


def test_build_config_accepts_2000_identities_with_the_msmt17_export():
    cfg = load_config(BuildConfig, None, ["identities=2000", "export_msmt17=true"])
    assert cfg.export_msmt17 and cfg.identities == 2000


@pytest.mark.parametrize("cams", [[3], [3, 3], [3, 3, 3], [1, 2], [1, 2, 3], [1, 1, 2], [2, 1, 1, 4, 4]])
def test_every_query_of_a_built_test_identity_has_a_gallery_match_from_another_camera(cams):
    """The Market-1501 protocol drops gallery images of the query's own camera: a query is made only where one of
    the identity's gallery images comes from another camera, and an identity seen by one camera is gallery alone."""
    splits = query_gallery_split(cams)
    queries = [c for c, s in zip(cams, splits, strict=True) if s == "query"]
    gallery = [c for c, s in zip(cams, splits, strict=True) if s == "gallery"]
    assert all(any(g != q for g in gallery) for q in queries)
    assert bool(queries) == (len(set(cams)) > 1)  # every identity seen by two cameras has a query
