"""Training-only outputs (cut-and-paste, builds) load in the pinned torchreid (0.2.5) beside a real dataset, keeping
the real identities, and every loading snippet the project writes or documents runs as written.

Everything goes through torchreid's own classes (``ImageDataManager``, its engine): no mocks."""
import re
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from augment.makers.build_config import BuildConfig
from augment.makers.builder import build
from augment.makers.cutpaste import cut_paste
from generator.config import load_config
from generator.errors import UserError
from generator.simmarket.simulate import simulate
from reid.extra_training import extra_training_records, register_with_extra_training
from reid.torchreid_adapter import (
    build_datamanager,
    build_engine,
    build_model,
    builtin_market1501,
    import_torchreid,
    market_records,
    train_one_epoch,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_code(text: str) -> str:
    """The code block of a README.txt that `loading_readme` wrote: the indented lines from `import os`."""
    lines = text.splitlines()
    start = lines.index("    import os")
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def run_snippet(code: str) -> dict:
    """``code`` executed as a user would run it (its own globals); what it defined."""
    scope: dict = {"__name__": "__snippet__"}
    exec(compile(code, "<snippet>", "exec"), scope)
    return scope


def train_labels_by_path(dm) -> dict[str, int]:
    return {path: pid for path, pid, *_ in dm.train_loader.dataset.train}


def assert_real_identities_kept(real, extra, dm, name):
    """``dm`` trains on the real training split plus every image of ``extra``, each labelled as its real identity
    (the manifest's pid), with no identity added; its test set is the real query and gallery."""
    real_rec = market_records(real)
    real_pids = sorted({p for _, p, _ in real_rec["train"]})
    assert dm.num_train_pids == len(real_pids)
    labels = train_labels_by_path(dm)
    m = pd.read_csv(extra / "manifest.csv")
    assert len(labels) == len(real_rec["train"]) + len(m)
    label_of_real_pid = {pid: labels[path] for path, pid, _ in real_rec["train"]}
    assert sorted(label_of_real_pid) == real_pids
    for row in m.itertuples():
        assert labels[str((extra / row.path).resolve())] == label_of_real_pid[row.pid]
    assert len(dm.test_loader[name]["query"].dataset) == len(real_rec["query"])
    assert len(dm.test_loader[name]["gallery"].dataset) == len(real_rec["gallery"])


def test_training_only_output_is_refused_by_torchreids_market1501(real_and_cutpaste, tmp_path):
    """What the README.txt says: torchreid's own Market1501 cannot load a cut-and-paste output (empty query)."""
    _, cp = real_and_cutpaste
    shutil.copytree(cp, tmp_path / "market1501")
    with pytest.raises(IndexError):
        builtin_market1501(tmp_path)


def test_cutpaste_readme_snippet_keeps_real_identities_and_trains(real_and_cutpaste):
    real, cp = real_and_cutpaste
    text = (cp / "README.txt").read_text()
    assert "training-only" in text and "IndexError" in text
    scope = run_snippet(readme_code(text))
    assert_real_identities_kept(real, cp, scope["datamanager"], scope["name"])
    # torchreid's engine trains on it (in-process loading: no worker processes)
    dm = build_datamanager(scope["name"], scope["name"], (64, 32), batch=4, workers=0)
    model = build_model("osnet_x0_25", dm.num_train_pids)
    engine, _, _ = build_engine("softmax", dm, model)
    assert train_one_epoch(engine, 0, 1, progress=False, steps=1) == 1


def test_msmt17_cutpaste_readme_snippet_keeps_real_identities(tmp_path):
    """Cut-and-paste of MSMT17 data (pids from 0) is written in MSMT17's layout and still joins its real pids."""
    real, cp = tmp_path / "real", tmp_path / "cp"
    simulate(real, 6, seed=11, size=(64, 32), progress=False, layout="msmt17")
    cut_paste(real, cp, per_image=1, seed=0, size=(64, 32), progress=False)
    scope = run_snippet(readme_code((cp / "README.txt").read_text()))
    assert_real_identities_kept(real, cp, scope["datamanager"], scope["name"])


def test_new_identities_are_offset_and_sets_combine(real_and_cutpaste, tmp_path):
    real, cp = real_and_cutpaste
    new = tmp_path / "new"
    shutil.copytree(cp, new)
    m = pd.read_csv(new / "manifest.csv")
    m["origin"] = "virtual"  # the same images, as a Virtual Market of new identities
    m.to_csv(new / "manifest.csv", index=False)
    real_train = market_records(real)["train"]
    top = max(p for _, p, _ in real_train)
    rec = extra_training_records(real, [cp, new])
    extra_new = rec["train"][len(real_train) + len(m):]
    assert len(extra_new) == len(m)
    assert {p for _, p, _ in extra_new} == {p + top + 1 for p in m.pid}  # past every real pid
    assert sorted(rec["train"][len(real_train):len(real_train) + len(m)]) == sorted(
        (str((cp / p).resolve()), pid, cam - 1) for p, pid, cam in zip(m.path, m.pid, m.camid, strict=True))
    name = register_with_extra_training("extra_new_test", real, [cp, new])
    dm = build_datamanager(name, name, (64, 32), batch=4, workers=0)
    assert dm.num_train_pids == len({p for _, p, _ in real_train}) + m.pid.nunique()
    assert {p for _, p, _ in extra_training_records(real, new, new_pid_offset=1000)["train"][len(real_train):]} \
        == {p + 1000 for p in m.pid}
    with pytest.raises(UserError, match="collide"):
        extra_training_records(real, new, new_pid_offset=0)


def test_what_the_extra_images_show_must_be_known(real_and_cutpaste, tmp_path):
    real, cp = real_and_cutpaste
    bare = tmp_path / "bare"
    shutil.copytree(cp / "bounding_box_train", bare / "bounding_box_train")
    with pytest.raises(UserError, match="identities='real'"):
        extra_training_records(real, bare)
    n_real = len(market_records(real)["train"])
    assert len(extra_training_records(real, bare, identities="real")["train"]) == n_real + len(
        list((bare / "bounding_box_train").iterdir()))
    with pytest.raises(UserError, match="identities="):
        extra_training_records(real, bare, identities="maybe")
    other = tmp_path / "other"
    simulate(other, 4, seed=2, size=(64, 32), progress=False)  # its own identities, origin "sim"
    with pytest.raises(UserError, match="origin 'sim'"):
        extra_training_records(real, other)
    wrong = tmp_path / "wrong"  # cut-and-paste of a real identity the real set does not have
    shutil.copytree(cp, wrong)
    src = next((wrong / "bounding_box_train").iterdir())
    src.rename(src.with_name("0999" + src.name[4:]))
    m = pd.read_csv(wrong / "manifest.csv")
    m.loc[m.path == f"bounding_box_train/{src.name}", "path"] = f"bounding_box_train/0999{src.name[4:]}"
    m.to_csv(wrong / "manifest.csv", index=False)
    with pytest.raises(UserError, match="real identity 999, which is no training identity"):
        extra_training_records(real, wrong)


@pytest.mark.parametrize("fg_mode", ["real", "sample"])
def test_build_readme_snippet_loads(tiny_stages, sim_small, tmp_path, fg_mode):
    """A default build (test_share 0) is training-only; its README.txt code registers it beside the real data:
    a remix build keeps the real identities, a sampled one adds its own."""
    out = tmp_path / "vm"
    sets = [f"stage2_run={tiny_stages[2]}", f"out={out}", f"fg_mode={fg_mode}", "images_per_id=2", "seed=1",
            "identities=0" if fg_mode == "real" else "identities=3"]
    build(load_config(BuildConfig, None, sets), progress=False)
    text = (out / "README.txt").read_text()
    assert "training-only" in text and "IndexError" in text
    dm = run_snippet(readme_code(text))["datamanager"]
    real_ids = len({p for _, p, _ in market_records(sim_small)["train"]})
    assert dm.num_train_pids == real_ids + (0 if fg_mode == "real" else 3)
    assert len(dm.train_loader.dataset.train) == len(market_records(sim_small)["train"]) + len(
        pd.read_csv(out / "manifest.csv"))


def readme_md_snippets() -> list[str]:
    """Every python code block of README.md and docs/*.md that loads data into torchreid."""
    text = "".join(p.read_text() for p in [README, *sorted((README.parent / "docs").glob("*.md"))])
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if "import torchreid" in b or "reid.extra_training" in b]


def test_readme_md_snippets_run(real_and_cutpaste, tmp_path, monkeypatch):
    """Each snippet runs as written, from a folder holding the data where the README's own commands put it: the real
    set at ``vmarket cutpaste``'s --root and the cut-and-paste set at its --out."""
    real, cp = real_and_cutpaste
    snippets = readme_md_snippets()
    assert snippets, "README.md shows how to load an output in torchreid"
    command = re.search(r"vmarket cutpaste --root (\S+) --out (\S+)", README.read_text())
    assert command, "README.md shows the cut-and-paste command the snippets load the output of"
    root, out = (tmp_path / command.group(1), tmp_path / command.group(2))
    for path, target in ((root, real), (out, cp)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    import_torchreid()
    for code in snippets:
        dm = run_snippet(code)["datamanager"]
        assert dm.num_train_pids == len({p for _, p, _ in market_records(real)["train"]})
        assert len(dm.train_loader.dataset.train) == len(market_records(real)["train"]) + len(
            pd.read_csv(cp / "manifest.csv"))


def test_simulated_cuhk03_loads_through_register_market_not_torchreids_class(tmp_path):
    """`vmarket simulate --layout cuhk03` writes CUHK03's new protocol with the images already extracted; torchreid's
    CUHK03 class also wants the raw cuhk03_release/cuhk-03.mat (h5py), so the project's registration loads it."""
    import_torchreid()
    from torchreid.reid.data.datasets.image.cuhk03 import CUHK03

    from reid.torchreid_adapter import register_market

    root = tmp_path / "cuhk03"
    simulate(root, 6, seed=3, size=(64, 32), progress=False, layout="cuhk03")
    with pytest.raises(RuntimeError, match="cuhk03_release"):
        CUHK03(root=str(tmp_path), verbose=False)
    for fmt in ("cuhk03_detected", "cuhk03_labeled"):
        name = register_market(f"sim_{fmt}", root, fmt=fmt)
        dm = build_datamanager(name, name, (64, 32), batch=4, workers=0)
        rec = market_records(root, fmt=fmt)
        assert dm.num_train_pids == len({p for _, p, _ in rec["train"]})
        assert len(dm.test_loader[name]["gallery"].dataset) == len(rec["gallery"])
