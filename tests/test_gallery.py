"""`vmarket browse`: the static gallery of every kind of dataset the project writes, rendered in headless Chromium
(file://, no server): every thumbnail loads, each identity's counts are its manifest's, the filters hide what they
should; a folder that is no dataset, or a manifest naming missing files, is one line and writes nothing."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import one_line_error, run_main
from gallery_page import CHROMIUM, CHROMIUM_ARGS, Page
from PIL import Image

import augment.gallery.page as page_module
import reid.consistency as consistency
from augment.gallery.collect import read_dataset
from augment.gallery.figure import triplet_figure
from augment.makers.build_config import BuildConfig
from augment.makers.builder import build
from augment.makers.cutpaste import cut_paste
from generator.config import load_config
from generator.data.dataset import person_dataset
from generator.data.market import parse_name, scan_market
from generator.errors import UserError
from generator.io import atomic_save
from generator.training.runs import capture_state
from reid.torchreid_adapter import build_model


# ---------------------------------------------------------------------------------------------------- the datasets
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


def _cut(sim_root, out, **kw):
    cut_paste(sim_root[0], out, progress=False, **kw)
    return out


@pytest.fixture(scope="module")
def cutpaste_set(sim_root, made):
    return _cut(sim_root, made / "cp", per_image=2, seed=1)


@pytest.fixture(scope="module")
def hybrid_set(sim_root, tiny_stages, made):
    return _cut(sim_root, made / "hy", seed=1, plates="generator", stage1_run=tiny_stages[0])


@pytest.fixture(scope="module")
def mixed_set(sim_root, tiny_stages, made):
    return _cut(sim_root, made / "mx", seed=2, plates="mixed", stage1_run=tiny_stages[0])


def _build(tiny_stages, out, *sets):
    cfg = load_config(BuildConfig, None, [f"stage2_run={tiny_stages[2]}", f"out={out}", "seed=1", "novelty_tau=0.0001",
                                          "bg_sample_share=0.5", "pose_sample_share=0.25", *sets])
    build(cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def remix_set(tiny_stages, made):
    """A build of fg_mode real: remixes of every real training identity of sim_small."""
    return _build(tiny_stages, made / "remix", "fg_mode=real", "identities=0", "images_per_id=3")


@pytest.fixture(scope="module")
def new_set(tiny_stages, made):
    """A build of fg_mode remix: new identities, each a perturbed real foreground."""
    return _build(tiny_stages, made / "new", "fg_mode=remix", "identities=4", "images_per_id=3")


@pytest.fixture(scope="module")
def filter_set(sim_root, cutpaste_set, made):
    """The identity-consistency filter of the cut-and-paste set, with features that place every fourth generated
    image (by frame) nearest another identity, so that the output holds kept and rejected images."""
    root = sim_root[0]
    pids = sorted({r.pid for r in scan_market(root, ("train",))})
    torch.manual_seed(0)
    state = made / "reid" / "state.pt"
    state.parent.mkdir()
    atomic_save(capture_state({"model": build_model("osnet_x0_25", len(pids), "softmax")}, epoch=1, steps=1,
                              steps_per_epoch=0, mix=None), state)
    generated = str(cutpaste_set.resolve())

    def features(model, paths, size, device="cpu", progress=True, desc=""):
        rows = []
        for p in paths:
            n = parse_name(p)
            rows.append((pids.index(n.pid) + (str(Path(p).resolve()).startswith(generated) and n.frame % 4 == 0))
                        % len(pids))
        return torch.nn.functional.one_hot(torch.tensor(rows), len(pids)).float()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(consistency, "extract_image_features", features)
        consistency.filter_generated(state, root, cutpaste_set, made / "filtered", size=(128, 64), progress=False)
    return made / "filtered"


# ---------------------------------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM}: Chromium is not installed, so the gallery cannot be rendered; install it with "
                    "`apt-get install -y chromium` (Debian and Ubuntu; .ci/run does), or set VMARKET_CHROMIUM to a "
                    "Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install -e '.[dev]' (no browser download is "
                    "needed: the test launches the system's Chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _browse(capsys, dataset: Path, out: Path, *extra) -> dict:
    rc, printed, err = run_main(capsys, "browse", dataset, "--out", out, "--quiet", *extra)
    assert rc == 0, err
    assert printed.strip().endswith(str(out / "index.html")) and len(printed.strip().splitlines()) == 1
    return json.loads((out / "gallery.json").read_text())


def _real_counts(root: Path) -> dict[int, int]:
    return pd.Series([r.pid for r in scan_market(root, ("train",))]).value_counts().to_dict()


def _check_counts(shown: list[dict], manifest: pd.DataFrame) -> None:
    """Each identity once, in pid order, with its manifest's count of images, and a card for each."""
    assert [s["pid"] for s in shown] == sorted(manifest.pid.unique().tolist())
    assert {s["pid"]: s["generated"] for s in shown} == manifest.groupby("pid").size().to_dict()
    assert all(len(s["cards"]) == s["generated"] for s in shown)


# ---------------------------------------------------------------------------------------------------- the tests
def test_cutpaste_gallery_pages_counts_and_thumbnails(browser, cutpaste_set, sim_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(page_module, "PAGE_ITEMS", 20)  # several pages, each of a chunk of its own
    info = _browse(capsys, cutpaste_set, tmp_path / "gallery")
    m = pd.read_csv(cutpaste_set / "manifest.csv")
    assert info["pages"] > 2 and len(list((tmp_path / "gallery" / "data").glob("chunk-*.js"))) == info["pages"]
    real = _real_counts(sim_root[0])
    # one thumbnail per file: each generated image, and each real image however often it is a source or donor
    shown_real = {r.path for r in scan_market(sim_root[0], ("train",)) if r.pid in set(m.pid)}
    donors = {str(sim_root[0] / d) for d in m.donor}
    assert info["thumbnails"] == len(m) + len(shown_real | donors)
    page = Page(browser, tmp_path / "gallery")
    shown = page.walk()
    _check_counts(shown, m)
    assert all(s["real"] == len(s["realShown"]) == real[s["pid"]] for s in shown)
    assert all(s["roles"] == ["source", "donor"] * s["generated"] for s in shown)
    page.tab.close()


def test_hybrid_gallery(browser, hybrid_set, tmp_path, capsys):
    _browse(capsys, hybrid_set, tmp_path / "gallery")
    page = Page(browser, tmp_path / "gallery")
    shown = page.walk()
    m = pd.read_csv(hybrid_set / "manifest.csv")
    _check_counts(shown, m)
    assert {c[0] for s in shown for c in s["cards"]} == {"hybrid"}
    assert "generated plate" in page.tab.inner_text("main")
    page.tab.close()


def test_origin_and_camera_filters_hide_the_others(browser, mixed_set, tmp_path, capsys):
    _browse(capsys, mixed_set, tmp_path / "gallery")
    m = pd.read_csv(mixed_set / "manifest.csv")
    assert set(m.origin) == {"cutpaste", "hybrid"}
    page = Page(browser, tmp_path / "gallery")
    for origin in ("hybrid", "cutpaste"):
        page.click("origin", origin)
        shown = page.walk()
        ours = m[m.origin == origin]
        assert [s["pid"] for s in shown] == sorted(ours.pid.unique().tolist())
        assert {c[0] for s in shown for c in s["cards"]} == {origin}
        assert sum(len(s["cards"]) for s in shown) == len(ours)
        assert all(s["realShown"] == [] for s in shown)  # the real images are an origin of their own
        assert all(s["generated"] == (m.pid == s["pid"]).sum() for s in shown)  # the counts stay the identity's
    page.click("origin", "real")
    shown = page.walk()
    assert shown and all(s["cards"] == [] and s["realShown"] for s in shown)
    page.click("origin", "all")
    cam = int(m.camid.mode()[0])
    page.click("camera", str(cam))
    shown = page.walk()
    assert sum(len(s["cards"]) for s in shown) == (m.camid == cam).sum()
    assert {c[1] for s in shown for c in s["cards"]} == {cam} and {c for s in shown for c in s["realShown"]} == {cam}
    page.tab.close()


def test_remix_build_gallery_shows_source_pose_and_background(browser, remix_set, sim_small, tmp_path, capsys):
    m = pd.read_csv(remix_set / "manifest.csv", keep_default_na=False)
    # the builder's manifest names the real image of each bank background and pose, relative to the data root
    records = person_dataset(sim_small, ("train",), size=(64, 32)).records
    names = [os.path.relpath(r.path, sim_small) for r in records]
    for r in m.itertuples():
        assert r.bg_image == (names[int(r.bg_key)] if r.bg_source == "bank" else "")
        assert r.pose_image == (names[int(r.pose_key)] if r.pose_source == "bank" else "")
        assert r.fg_image == ""
    assert set(m.bg_source) == {"bank", "phi_bg"}
    _browse(capsys, remix_set, tmp_path / "gallery")
    page = Page(browser, tmp_path / "gallery")
    shown = page.walk()
    _check_counts(shown, m)
    real = _real_counts(sim_small)
    assert all(s["real"] == real[s["pid"]] for s in shown)
    assert sum(s["sampled"] for s in shown) == (m.bg_source == "phi_bg").sum() + (m.pose_source == "phi_pose").sum()
    assert all(s["roles"] == ["source", "pose", "background"] * s["generated"] for s in shown)
    page.tab.close()


def test_new_identity_build_gallery(browser, new_set, sim_small, tmp_path, capsys):
    m = pd.read_csv(new_set / "manifest.csv", keep_default_na=False)
    records = person_dataset(sim_small, ("train",), size=(64, 32)).records
    for r in m.itertuples():  # the real image a remix perturbed
        assert r.fg_image == os.path.relpath(records[int(r.fg_source.split(":")[1])].path, sim_small)
    _browse(capsys, new_set, tmp_path / "gallery")
    page = Page(browser, tmp_path / "gallery")
    shown = page.walk()
    _check_counts(shown, m)
    assert all(s["real"] == 0 and s["roles"][:1] == ["foreground"] for s in shown)
    page.tab.close()


def test_filter_gallery_shows_kept_and_rejected_with_the_reason(browser, filter_set, cutpaste_set, tmp_path, capsys):
    rejected = pd.read_csv(filter_set / "filter_rejected.csv")
    kept = pd.read_csv(filter_set / "manifest.csv")
    assert len(rejected) and len(kept)
    _browse(capsys, filter_set, tmp_path / "gallery")
    page = Page(browser, tmp_path / "gallery")
    shown = page.walk()
    _check_counts(shown, pd.read_csv(cutpaste_set / "manifest.csv"))  # every image the filter judged
    page.click("kept", "rejected")
    shown = page.walk()
    cards = [c for s in shown for c in s["cards"]]
    assert len(cards) == len(rejected) and {c[2] for c in cards} == {"rejected"}
    assert sorted(r for s in shown for r in s["reasons"]) == sorted(f"rejected: {r}" for r in rejected.reason)
    page.click("kept", "kept")
    assert sum(len(s["cards"]) for s in page.walk()) == len(kept)
    page.tab.close()


def test_simmarket_gallery(browser, sim_root, tmp_path, capsys):
    info = _browse(capsys, sim_root[0], tmp_path / "gallery")
    m = pd.read_csv(sim_root[0] / "manifest.csv")
    assert info["thumbnails"] == len(m)
    page = Page(browser, tmp_path / "gallery")
    shown = page.walk()
    _check_counts(shown, m)
    assert {c[0] for s in shown for c in s["cards"]} == {"sim"}
    page.tab.close()


def test_the_pid_box_finds_train_and_test_people_numbered_apart(browser, tmp_path, capsys, monkeypatch):
    """The page's pid box: "test 2" goes to test person 2, a bare "2" to the first person numbered 2 (training
    person 2), and a pid the page does not show is reported on the box, with no script error."""
    from generator.simmarket.simulate import simulate

    simulate(tmp_path / "msmt", 6, seed=0, size=(64, 32), layout="msmt17", progress=False)
    monkeypatch.setattr(page_module, "PAGE_ITEMS", 1)  # one identity a page
    _browse(capsys, tmp_path / "msmt", tmp_path / "gallery")
    page = Page(browser, tmp_path / "gallery")
    names = page.tab.locator("section.identity .pid")

    def find(text: str) -> tuple[list[str], str]:
        page.tab.fill("#pid", text)
        page.tab.press("#pid", "Enter")
        page.tab.wait_for_selector("body[data-state=ready]")
        return names.all_text_contents(), page.tab.evaluate("document.getElementById('pid').validationMessage")

    assert find("test 2") == (["test pid 2"], "")
    assert find("2") == (["train pid 2"], "")
    assert find("test pid 0") == (["test pid 0"], "")
    assert find("99")[1] == "99 is not shown with these filters"
    assert page.errors == []
    page.tab.close()


def test_a_simmarket_in_msmt17s_layout_keeps_its_train_and_test_people_apart(tmp_path):
    """MSMT17's layout numbers training and test people apart, each from 0, and has no distractors: training
    person 0 is a person (not "distractors"), and is not test person 0. Each card holds one SimMarket person."""
    from generator.simmarket.simulate import simulate

    simulate(tmp_path / "msmt", 6, seed=0, size=(64, 32), layout="msmt17", progress=False)
    m = pd.read_csv(tmp_path / "msmt" / "manifest.csv")
    g = read_dataset(tmp_path / "msmt")
    parts = m.split.map(lambda s: "train" if s == "train" else "test")
    assert len(g.identities) == len(set(zip(parts, m.pid, strict=True))) == m.identity.nunique()
    assert {i.label for i in g.identities} == {"SimMarket identity"}
    assert g.summary[0][1] == str(len(g.identities))  # every card counted as an identity
    people = m.set_index("path").identity
    for ident in g.identities:
        assert len({people[item.result.title] for item in ident.items}) == 1  # one person per card
    records = [page_module._identity_record(i, {"sim": 0}, lambda p: 0, lambda n: 0) for i in g.identities]
    assert len({entry[0] for _, entry in records}) == len(records)  # the page's keys are unique
    shown = {rec[4] for rec, _ in records}
    assert {"train pid 0", "test pid 0"} <= shown


def test_the_triplet_figure(cutpaste_set, tmp_path):
    path = triplet_figure(read_dataset(cutpaste_set), tmp_path / "t.png", rows=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width == 4 + 3 * (64 + 4) and im.height > 3 * 128


# ---------------------------------------------------------------------------------------------------- bad input
def _nothing_written(out: Path) -> None:
    assert not out.exists() and not (out.parent / f".{out.name}.partial").exists()


def test_a_folder_that_is_no_dataset_is_one_line(tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    out = tmp_path / "g"
    rc, o, e = run_main(capsys, "browse", tmp_path / "stuff", "--out", out)
    one_line_error(rc, o, e, str(tmp_path / "stuff"), "not a dataset vmarket wrote", "--out folder of vmarket")
    rc, o, e = run_main(capsys, "browse", tmp_path / "nowhere", "--out", out)
    one_line_error(rc, o, e, "no such folder")
    _nothing_written(out)


def test_a_manifest_naming_missing_files_is_one_line_and_writes_nothing(cutpaste_set, sim_small, tmp_path, capsys):
    data = tmp_path / "cp"
    shutil.copytree(cutpaste_set, data)
    m = pd.read_csv(data / "manifest.csv")
    (data / m.path[3]).unlink()
    out = tmp_path / "out" / "g"
    rc, o, e = run_main(capsys, "browse", data, "--out", out)
    one_line_error(rc, o, e, "manifest.csv", "1 image(s) that are not there", Path(m.path[3]).name)
    _nothing_written(out)
    assert not out.parent.exists()  # nor the folder it would have made on the way
    # real data that is not the data the images were made from: the sources and donors are missing there
    rc, o, e = run_main(capsys, "browse", cutpaste_set, "--out", out, "--real", sim_small)
    one_line_error(rc, o, e, str(sim_small), "sources or donors", "--real")
    rc, o, e = run_main(capsys, "browse", cutpaste_set, "--out", out, "--real", tmp_path / "none")
    one_line_error(rc, o, e, "--real", "no such folder")
    _nothing_written(out)
    # a manifest without the columns every manifest has
    pd.read_csv(data / "manifest.csv").drop(columns=["origin"]).to_csv(data / "manifest.csv", index=False)
    rc, o, e = run_main(capsys, "browse", data, "--out", out)
    one_line_error(rc, o, e, "lacks the column(s) origin")
    _nothing_written(out)


def test_out_is_refused_unless_empty_or_a_gallery(cutpaste_set, tmp_path, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, o, e = run_main(capsys, "browse", cutpaste_set, "--out", out)
    one_line_error(rc, o, e, str(out), "not empty and not a gallery")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    again = tmp_path / "g2"
    first = _browse(capsys, cutpaste_set, again)
    second = _browse(capsys, cutpaste_set, again)  # an earlier gallery is replaced
    assert first == second and not (tmp_path / ".g2.old").exists() and not (tmp_path / ".g2.partial").exists()


def test_an_unfinished_build_or_a_lost_generated_folder_is_one_line(remix_set, filter_set, tmp_path, capsys):
    build_copy = tmp_path / "vm"
    shutil.copytree(remix_set, build_copy)
    (build_copy / "README.txt").unlink()
    rc, o, e = run_main(capsys, "browse", build_copy, "--out", tmp_path / "g")
    one_line_error(rc, o, e, "unfinished build", "vmarket build")
    filtered = tmp_path / "filtered"
    shutil.copytree(filter_set, filtered)
    s = json.loads((filtered / "filter_summary.json").read_text())
    s["generated_root"] = str(tmp_path / "gone")
    (filtered / "filter_summary.json").write_text(json.dumps(s))
    rc, o, e = run_main(capsys, "browse", filtered, "--out", tmp_path / "g")
    one_line_error(rc, o, e, "rejected images live there")
    _nothing_written(tmp_path / "g")


def test_the_real_data_is_found_relative_to_the_dataset(cutpaste_set, sim_root, tmp_path):
    """A dataset made with relative paths, moved with its data, finds that data from its own folder."""
    data = tmp_path / "outputs" / "data"
    shutil.copytree(sim_root[0], data)
    cp = tmp_path / "outputs" / "cp"
    shutil.copytree(cutpaste_set, cp)
    meta = json.loads((cp / "cutpaste.json").read_text())
    meta["config"]["root"] = "outputs/data"
    (cp / "cutpaste.json").write_text(json.dumps(meta))
    (cp / "README.txt").unlink()
    g = read_dataset(cp)
    assert g.real_root.resolve() == data.resolve()
    assert np.all([p.path.is_file() for it in g.items() for _, p in it.parts])
    meta["config"]["root"] = "outputs/elsewhere"
    (cp / "cutpaste.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"\(outputs/elsewhere\) is not there; pass --real REAL_ROOT"):
        read_dataset(cp)
