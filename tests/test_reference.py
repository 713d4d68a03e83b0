"""The shipped reference checkpoints (generator/reference/) and the `vmarket reference` job that makes them."""
import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, run_main

from augment.jobs.reference import reference_checks
from generator.api import DisentangledModel, Sampler
from generator.config import load_config
from generator.data.dataset import person_dataset
from generator.errors import UserError
from generator.eval.image_metrics import ssim
from generator.eval.stage1_report import METRIC_DEFINITIONS, METRICS_VERSION, evaluate
from generator.io import load_checkpoint
from generator.shipped import (
    FILES,
    PROVENANCE,
    check_installed_from,
    default_dir,
    install,
    provenance,
    sha256_file,
    simulate_reference_data,
)
from generator.training.stage2 import Stage2Config


@pytest.fixture(scope="module")
def reference_data(tmp_path_factory):
    """The SimMarket the reference was trained and evaluated on (SimMarket is deterministic per seed)."""
    root = tmp_path_factory.mktemp("reference") / "sim"
    simulate_reference_data(root)
    return root


def test_shipped_checkpoints_match_provenance_and_decode(reference_data):
    ref = default_dir()
    prov = provenance(ref)  # raises unless every file matches its sha256
    for name in FILES.values():
        assert sha256_file(ref / name) == prov["files"][name]["sha256"]
    assert sum((ref / n).stat().st_size for n in FILES.values()) <= 48 * 2 ** 20
    snap = torch.load(ref / FILES["stage1"], map_location="cpu", weights_only=True)
    assert {v.dtype for v in snap["G"].values() if v.is_floating_point()} == {torch.float16}
    assert prov["steps"]["stage1"] == snap["step"]
    for key in ("command", "configs", "git_commits", "wall_time_s", "metrics", "checks"):
        assert key in prov, key
    assert prov["checks"] == reference_checks(prov["metrics"]["stage1"])

    # decode held-out people of the data the reference was trained on
    model = DisentangledModel.load(ref / FILES["stage1"], pose=ref / FILES["pose"])
    ds = person_dataset(reference_data, ("query",), size=model.size, heatmap_radius=model.heatmap_radius,
                        mask_radius=model.mask_radius)
    b = torch.utils.data.default_collate([ds.item(i) for i in range(0, len(ds), len(ds) // 64)][:64])
    f = model.encode(b["image"], b["keypoints"])
    rec = model.render(f).clamp(-1, 1)
    assert rec.shape == b["image"].shape and torch.isfinite(rec).all()
    # far better than the batch's mean image, and the SSIM the provenance records (512 images) within sampling noise
    l1 = (rec - b["image"]).abs().mean()
    l1_mean = (b["image"].mean(0, keepdim=True) - b["image"]).abs().mean()
    assert l1 < 0.5 * l1_mean, (float(l1), float(l1_mean))
    batch_ssim = float(ssim((rec + 1) / 2, (b["image"] + 1) / 2).mean())
    assert abs(batch_ssim - prov["metrics"]["stage1"]["reconstruction"]["ssim"]) < 0.05, batch_ssim
    people = model.decode(f.fg, f.bg, Sampler.load(ref / FILES["stage2"]).sample("pose", len(f), seed=0))
    assert people.shape == b["image"].shape and torch.isfinite(people).all()


@pytest.mark.slow
def test_shipped_stage1_rescores_to_its_provenance(reference_data, tmp_path):
    """Re-scoring the shipped stage I as the reference job did reproduces every metric (and so every check) that
    the provenance records: 512 images and 200 swap pairs, about 20 s on an idle 2-core CPU (wall_time_s)."""
    ref = default_dir()
    prov = provenance(ref)
    recorded = prov["metrics"]["stage1"]
    m = evaluate(ref / FILES["stage1"], reference_data, tmp_path / "eval", pairs=prov["reference_config"]["eval_pairs"],
                 limit=recorded["reconstruction"]["images"])
    for part in ("reconstruction", "swaps"):
        for k, v in recorded[part].items():  # the keys the provenance has; later evaluations add more
            assert m[part][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (part, k)
    assert reference_checks(m) == prov["checks"]


@pytest.mark.slow  # rescoring the shipped stage I: seconds
def test_rescore_records_new_metrics_and_keeps_the_superseded(capsys, tmp_path):
    """`vmarket reference --rescore` on a package whose provenance holds version-1 metrics (no metrics_version):
    the new metrics and checks replace them, the old ones are kept, the checkpoints are untouched; a second
    rescore does nothing. Scored on 16 images and 8 pairs here, to keep the test short."""
    pkg = tmp_path / "pkg"
    shutil.copytree(default_dir(), pkg)
    prov = provenance(pkg)
    old = copy.deepcopy(prov["superseded_metrics"][0]["stage1"]) if "superseded_metrics" in prov else None
    old = old or copy.deepcopy(prov["metrics"]["stage1"])
    old["reconstruction"]["images"] = 16
    for part in ("reconstruction", "swaps"):
        old[part].pop("metrics_version", None)
    prov = {k: v for k, v in prov.items() if k not in ("superseded_metrics", "rescored")}
    prov["metrics"]["stage1"], prov["reference_config"]["eval_pairs"] = old, 8
    (pkg / PROVENANCE).write_text(json.dumps(prov))
    before = {n: sha256_file(pkg / n) for n in FILES.values()}
    rc, out, err = run_main(capsys, "reference", "--set", f"package={pkg}", "--rescore", "--quiet")
    assert rc == 0, err[-3000:]
    new = provenance(pkg)
    assert {n: sha256_file(pkg / n) for n in FILES.values()} == before
    recon, swaps = new["metrics"]["stage1"]["reconstruction"], new["metrics"]["stage1"]["swaps"]
    assert recon["metrics_version"] == METRICS_VERSION and recon["images"] == 16 and swaps["pairs"] == 8
    assert new["superseded_metrics"] == [{"metrics_version": 1, "definition": METRIC_DEFINITIONS[1], "stage1": old,
                                         "checks": prov["checks"]}]
    assert new["checks"] == reference_checks(new["metrics"]["stage1"])
    assert new["rescored"]["metrics_version"] == METRICS_VERSION
    rc, out, err = run_main(capsys, "reference", "--set", f"package={pkg}", "--rescore", "--quiet")
    assert rc == 0 and "nothing to do" in out + err and provenance(pkg) == new


def test_changed_checkpoint_is_refused(tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(default_dir(), ref)
    data = bytearray((ref / FILES["pose"]).read_bytes())
    data[-100] ^= 0xFF
    (ref / FILES["pose"]).write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        provenance(ref)
    (ref / PROVENANCE).unlink()
    with pytest.raises(UserError, match="make reference"):
        provenance(ref)


def test_runs_installed_from_other_checkpoints_are_refused(tmp_path):
    check_installed_from([tmp_path], None)  # nothing installed: nothing to refuse
    stamp = {"reference": str(default_dir()), "data_root": "x",
             "sha256": {n: f["sha256"] for n, f in provenance()["files"].items()}}
    (tmp_path / "reference.json").write_text(json.dumps(stamp))
    check_installed_from([tmp_path], None)  # the same checkpoints
    stamp["sha256"][FILES["stage2"]] = "f" * 64
    (tmp_path / "reference.json").write_text(json.dumps(stamp))
    with pytest.raises(UserError, match=r"other reference checkpoints .*stage2\.pt sha256 ffffffffffff"):
        check_installed_from([tmp_path], None)


@pytest.mark.slow
def test_reference_job_trains_packages_and_reuses(tmp_path, capsys):
    """The console script trains and packages; the rerun (in this process: no second start of torch) reuses it."""
    from conftest import run_main

    out, pkg, figs = tmp_path / "runs", tmp_path / "pkg", tmp_path / "docs"
    args = ("reference", "tests/configs/reference_tiny.yaml", "--set", f"out={out}", "--set", f"package={pkg}",
            "--set", f"figures={figs}", "--quiet")
    rc, stdout, err = run_cli(*args)
    assert rc == 0, err[-3000:]
    prov = provenance(pkg)
    # the end of the L1 warm-up ships (ship_stage1), without a discriminator it never trained with, and stage II
    # learnt that model's embeddings
    assert prov["steps"] == {"stage1": 4, "pose": 50, "stage2": {"fg": 10, "bg": 10, "pose": 10}}
    assert prov["stage1_shipped"] == {"snapshot": "snapshot-l1.pt", "with_discriminator": False}
    assert prov["configs"]["stage2"]["stage1_run"].endswith("snapshot-l1.pt")
    assert "D" not in torch.load(pkg / FILES["stage1"], map_location="cpu", weights_only=True)
    assert [r["step"] for r in prov["held_out_ssim_during_training"]] == [4, 8]
    for name in FILES.values():
        assert prov["files"][name]["sha256"] == sha256_file(pkg / name)
    # the metrics are those of the checkpoints as shipped (fp16), evaluated in their own run directories
    assert prov["metrics"]["stage1"] == json.loads((out / "shipped" / "stage1" / "eval" / "metrics.json").read_text())
    assert prov["fp16_reconstruction_difference"]["max_grey_levels"] < 5
    assert prov["checks"] == reference_checks(prov["metrics"]["stage1"])
    assert (out / "stage1" / "snapshot-l1.pt").exists()  # the end of the L1 warm-up is kept
    for fig in ("stage1_grid.png", "swaps_vs_truth.png", "sampled_identities.png", "interpolation.png"):
        assert (figs / fig).stat().st_size > 0
    rc, stdout, err = run_main(capsys, *args)
    assert rc == 0, err[-3000:]
    assert stdout.count("reusing") == 3  # a rerun (or a resume after a kill) trains nothing that finished
    assert provenance(pkg)["metrics"] == prov["metrics"]  # the same weights, packaged again, score the same


@pytest.mark.slow
def test_reference_job_with_unlabelled_people_gives_them_to_every_stage_and_ships_clean_configs(tmp_path):
    """A reference with unlabelled people (as configs/reference/reference-48-unlabelled.yaml): stage I, the pose AE
    and stage II all learn them, stage II's embeddings of them carry no identity, each mapping trains its own way,
    and the shipped checkpoints install without the training run's data paths."""
    out, pkg = tmp_path / "runs", tmp_path / "pkg"
    rc, stdout, err = run_cli("reference", "tests/configs/reference_tiny.yaml", "--set", f"out={out}", "--set",
                              f"package={pkg}", "--set", "figures=''", "--set", "unlabelled_ids=8", "--set",
                              "ship_stage1=snapshot.pt", "--set", "stage2=configs/reference/stage2-per-factor.yaml",
                              "--quiet")
    assert rc == 0, err[-3000:]
    prov = provenance(pkg)
    unl = out / "data" / "sim-unlabelled"
    assert prov["unlabelled_data"]["identities"] == 8 and prov["unlabelled_data"]["people_seed"] == 1
    for job in ("stage1", "pose"):
        assert [Path(p).resolve() for p in prov["configs"][job]["data"]["unlabelled_roots"]] == [unl.resolve()]
    assert [Path(p).resolve() for p in prov["configs"]["stage2"]["unlabelled_roots"]] == [unl.resolve()]
    assert prov["configs"]["stage2"]["per_factor"] == load_config(
        Stage2Config, "configs/reference/stage2-per-factor.yaml").per_factor != []
    emb = load_checkpoint(out / "stage2" / "embeddings.pt")
    labelled = len(person_dataset(out / "data" / "sim-gen", ("train",), size=(64, 32)))
    others = len(person_dataset(unl, ("train",), size=(64, 32)))
    assert len(emb["pid"]) == labelled + others and others > 0
    assert (emb["pid"][:labelled] >= 0).all() and (emb["pid"][labelled:] == -1).all()
    installed = tmp_path / "installed"
    install(pkg, installed, out / "data" / "sim-gen", progress=False)
    for job in ("stage1", "pose"):
        assert yaml.safe_load((installed / job / "config.yaml").read_text())["data"]["unlabelled_roots"] == []
    assert yaml.safe_load((installed / "stage2" / "config.yaml").read_text())["unlabelled_roots"] == []
    assert len(load_checkpoint(installed / "stage2" / "embeddings.pt")["pid"]) == labelled


def test_a_provisional_provenance_is_taken_only_by_the_packaging_job(tmp_path):
    """Packaging writes a provisional provenance (the files alone) to evaluate the checkpoints as shipped; a kill
    before the full one leaves it. Everything but that job refuses it in one line instead of failing later on a
    missing key."""
    from generator.shipped import FILES, default_dir, provenance

    ref = tmp_path / "ref"
    ref.mkdir()
    for name in FILES.values():
        shutil.copyfile(default_dir() / name, ref / name)
    files = json.loads((default_dir() / "provenance.json").read_text())["files"]
    (ref / "provenance.json").write_text(json.dumps({"files": files, "provisional": True}))
    with pytest.raises(UserError, match="the packaging of these checkpoints did not finish"):
        provenance(ref)
    assert provenance(ref, provisional_ok=True)["files"] == files
