"""The reference re-ID ablation's bookkeeping: its config checks, paired differences with standard errors, the
plateau of real-only's learning curve, and the table. (The runs themselves are reid.ablation's, tested there.)"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augment.jobs.ablation_tables import plateau, summary_table
from augment.jobs.reid_recipes import Recipe, Regime, ReidReferenceConfig, World
from generator.config import load_config
from generator.errors import UserError
from reid.ablation import paired


def _rows():
    rows = []
    for seed in range(5):
        for recipe, r1 in (("real", 0.30), ("cutpaste", 0.45), ("hybrid", 0.44), ("real-jitter", 0.34)):
            r1 = r1 + 0.01 * seed + (0.002 * seed if recipe == "hybrid" else 0.0)
            rows.append({"recipe": recipe, "regime": "full", "seed": seed, "rank1": r1, "mAP": r1 - 0.05,
                         "mINP": r1 - 0.2, "cmc": [r1, r1 + 0.1], "curve": None,
                         "generated": recipe if recipe in ("cutpaste", "hybrid") else ""})
    return pd.DataFrame(rows)


def test_paired_difference_and_standard_error():
    df = _rows()
    mean, se, n = paired(df, "full", "hybrid", "real", "rank1")
    d = np.array([0.14 + 0.002 * s for s in range(5)])
    assert n == 5 and mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    # only the seeds both have are paired
    mean, se, n = paired(df[~((df.recipe == "real") & (df.seed == 4))], "full", "hybrid", "real", "rank1")
    assert n == 4 and mean == pytest.approx(d[:4].mean())
    assert paired(df, "cameras2", "hybrid", "real", "rank1")[2] == 0


def test_summary_table_reports_both_comparisons():
    table = summary_table(_rows())
    line = next(r for r in table.splitlines() if "| hybrid |" in r)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[:3] == ["full", "hybrid", "5"]
    assert cells[6] == "+14.4 ± 0.1" and cells[8] == "-0.6 ± 0.1"  # rank-1 vs real, vs cutpaste
    real = [c.strip() for c in next(r for r in table.splitlines() if "| real |" in r).split("|")[1:-1]]
    assert real[6] == "" and real[8] != ""
    # against the best real-only recipe (real-jitter here, not `real`): hybrid +10.4, real itself -4.0
    assert cells[10] == "+10.4 ± 0.1" and real[10] == "-4.0 ± 0.0" and "full: `real-jitter`" in table
    # where `real` is the best real-only recipe, the table has no separate columns for it
    table = summary_table(_rows()[lambda d: d.recipe != "real-jitter"])
    assert "best real-only |" not in table.splitlines()[0] and "full: `real`" in table
    assert all(len(r.split("|")) == 12 for r in table.splitlines()[:5])


def test_plateau_is_where_rank1_stops_rising():
    curve = [0.10, 0.25, 0.33, 0.36, 0.365, 0.362]
    rows = [{"recipe": "real", "regime": "full", "seed": s,
             "curve": [{"epoch": 4 * (i + 1), "rank1": v + 0.01 * ((s + i) % 3 - 1)} for i, v in enumerate(curve)]}
            for s in range(5)]
    p = plateau(pd.DataFrame(rows), "full", "real")
    assert p["seeds"] == 5 and p["epochs"] == [4, 8, 12, 16, 20, 24]
    assert p["best_epoch"] == 20 and p["plateau_epoch"] == 16
    assert plateau(pd.DataFrame(rows), "cameras2", "real") == {}
    assert plateau(pd.DataFrame(rows), "full", "real-flip") == {}


def test_config_checks(tmp_path):
    with pytest.raises(UserError, match="no recipe named 'cutpaste'"):
        ReidReferenceConfig(recipes=[Recipe("real")])
    with pytest.raises(UserError, match="'flip' is not a real-only recipe"):
        ReidReferenceConfig(recipes=[Recipe("real"), Recipe("cutpaste", generated="cutpaste")], anchor="flip")
    with pytest.raises(UserError, match="'cutpaste' is not a real-only recipe"):
        ReidReferenceConfig(recipes=[Recipe("real"), Recipe("cutpaste", generated="cutpaste")], anchor="cutpaste")
    with pytest.raises(UserError, match="'pre' is not a real-only recipe"):
        ReidReferenceConfig(recipes=[Recipe("real"), Recipe("cutpaste", generated="cutpaste"),
                                     Recipe("pre", setting="real->real")], anchor="pre")
    with pytest.raises(UserError, match="recipe names repeat"):
        ReidReferenceConfig(recipes=[Recipe("real"), Recipe("cutpaste"), Recipe("real")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes:\n  - {name: real}\n  - {name: cutpaste, generated: paste}\n")
    with pytest.raises(UserError, match="generated 'paste': 'paste' is not one of"):
        load_config(ReidReferenceConfig, bad)
    cfg = load_config(ReidReferenceConfig, "configs/reference/reid.yaml")
    assert len(cfg.seeds) >= 5 and {r.name for r in cfg.regimes} == {"full", "cameras2"}
    assert {"real", "cutpaste", "hybrid", cfg.anchor} <= {r.name for r in cfg.recipes}
    # `real` is real-only with the best standard transforms (flip + colour jitter), the anchor flip alone
    real = next(r for r in cfg.recipes if r.name == "real")
    assert not real.generated and real.transforms == ["random_flip", "color_jitter"]


def test_a_recipe_key_renamed_is_refused_naming_its_new_name(tmp_path, monkeypatch, capsys):
    """A config written before the glossary (docs/glossary.md), whose recipes name their generated data
    `source:`, is refused in one line naming the key it is now; nothing is written."""
    from conftest import one_line_error, run_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yaml").write_text("recipes:\n  - {name: real}\n"
                                       "  - {name: cutpaste, setting: real+remix, source: cutpaste}\n")
    with pytest.raises(UserError, match=r"key 'recipes\[1\]\.source' is now 'recipes\[1\]\.generated'"):
        load_config(ReidReferenceConfig, tmp_path / "old.yaml")
    rc, out, err = run_main(capsys, "reference-reid", "old.yaml", "--quiet")
    one_line_error(rc, out, err, "old.yaml", "'recipes[1].source' is now 'recipes[1].generated'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.yaml"], "something was written"


@pytest.mark.slow
def test_reference_reid_end_to_end(tmp_path, monkeypatch, capsys):
    """A tiny reference ablation through the CLI: a camera-limited SimMarket, the shipped generator installed on
    it, the cut-and-paste baseline and the filtered hybrid, 2 seeds; then a rerun reuses every run, and --package
    ships the outputs (into a temporary repository root). The runs that train go through the console script; those
    that reuse or refuse run in this process (``run_main``), which saves starting Python and torch each time."""
    import json

    from conftest import run_cli, run_main

    # one thread everywhere: a CPU run's numbers depend on its thread count, and --jobs 2 gives each worker 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = tmp_path / "reid.yaml"
    cfg.write_text(f"""out: {tmp_path / 'out'}
sim_ids: 16
regimes: [{{name: c2, train_cameras: 2}}]
seeds: [0, 1]
curve_every: 1
anchor: flip
train: {{model: osnet_x0_25, size: [64, 32], batch: 8, epochs: 2, workers: 0}}
recipes:
  - {{name: real, transforms: [random_flip, color_jitter]}}
  - {{name: flip}}
  - {{name: cutpaste, setting: real+remix, generated: cutpaste, share: 0.25, label: smooth}}
  - {{name: hybrid-filtered, setting: real+remix, generated: hybrid, share: 0.25, label: smooth, filter: true}}
""")
    rc, out, err = run_cli("reference-reid", cfg, "--quiet", timeout=900)
    assert rc == 0, err[-2000:]
    df = pd.read_csv(tmp_path / "out" / "ablation.csv")
    assert len(df) == 8 and set(df.recipe) == {"real", "flip", "cutpaste", "hybrid-filtered"}
    assert set(df.regime) == {"c2"} and set(df.setting) == {"real", "real+remix"}
    assert {"recipe", "regime", "seed", "setting", "generated", "rank1", "mAP", "mINP"} <= set(df.columns)
    assert (df.steps == df.steps.iloc[0]).all()  # iteration-matched: the same optimiser steps for every recipe
    sim = tmp_path / "out" / "reference" / "c2" / "sim"
    cams = {}
    for p in (sim / "bounding_box_train").glob("*.jpg"):
        cams.setdefault(p.name[:4], set()).add(p.name[6])
    assert cams and all(len(c) == 2 for c in cams.values())
    for seed in (0, 1):
        summary = json.loads((tmp_path / "out" / "reference" / "c2" / "generated" / f"hybrid-filtered-seed{seed}" /
                              "filter_summary.json").read_text())
        assert summary["model_state"].endswith(f"runs/flip/real/seed{seed}/stage0-real/state.pt")  # the anchor's
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["runs"] == 8 and len(prov["filters"]) == 2
    assert prov["command"] == f"vmarket reference-reid {cfg}"  # the config the runs were made with, as a user types it
    assert prov["plateau"]["c2"]["epochs"] == [1, 2] and prov["plateau"]["c2"]["recipe"] == "flip"
    assert "cutpaste" in (tmp_path / "out" / "ablation.md").read_text()
    before = (tmp_path / "out" / "ablation.csv").read_text()
    rc, out, err = run_main(capsys, "reference-reid", cfg, "--quiet", "--only", "cutpaste")
    assert rc == 0 and "| c2 | cutpaste | 2 |" in out, err[-2000:]
    rc, out, err = run_main(capsys, "reference-reid", cfg, "--quiet", "--only", "nothing")
    assert rc == 2 and "no recipe named 'nothing'" in err
    rc, out, err = run_main(capsys, "reference-reid", cfg, "--quiet")  # every run reused
    assert rc == 0 and (tmp_path / "out" / "ablation.csv").read_text() == before
    _workers_reuse_the_runs(tmp_path, cfg, before, capsys)
    # ... and still refused when trained otherwise than the config asks
    rc, out, err = run_main(capsys, "reference-reid", cfg, "--quiet", "--set", "train.epochs=3")
    assert rc == 2 and "trained with epochs 2 (the config: 3)" in err, err[-2000:]
    _package_ships_beside(tmp_path, cfg, before, monkeypatch)


def _workers_reuse_the_runs(tmp_path, cfg, before, capsys):
    """The same rows from worker processes, and from finished runs whose data is not here."""
    import json
    import shutil

    from conftest import run_cli, run_main

    import augment.jobs.reference_reid as rr

    # in worker processes, recipe by recipe, the generated data reused (recognised without the generator) and
    # filtered again by the anchor's finished model: the same rows
    for recipe in ("cutpaste", "hybrid-filtered"):
        shutil.rmtree(tmp_path / "out" / "reference" / "c2" / "runs" / recipe)
    shutil.rmtree(tmp_path / "out" / "reference" / "c2" / "generator")
    for p in (tmp_path / "out" / "reference" / "c2" / "generated").glob("*-filtered-seed*"):
        shutil.rmtree(p)
    (tmp_path / "out" / "times.json").unlink()
    rc, out, err = run_cli("reference-reid", cfg, "--quiet", "--jobs", "2", timeout=600)
    assert rc == 0, err[-2000:]
    assert (tmp_path / "out" / "ablation.csv").read_text() == before
    assert len(json.loads((tmp_path / "out" / "times.json").read_text())) == 4  # the runs trained again
    rc, out, err = run_main(capsys, "reference-reid", cfg, "--quiet", "--jobs", "0")
    assert rc == 2 and "--jobs 0" in err
    # finished runs are read without their data (trained elsewhere, the generated images not copied here) ...
    for p in (tmp_path / "out" / "reference" / "c2" / "generated").glob("*-filtered-seed*"):
        shutil.rmtree(p / "bounding_box_train")
    rc, out, err = run_main(capsys, "reference-reid", cfg, "--quiet")
    assert rc == 0 and (tmp_path / "out" / "ablation.csv").read_text() == before, err[-2000:]
    (tmp_path / "out" / "ablation.csv").unlink()
    rr.collect(load_config(ReidReferenceConfig, cfg), log=lambda *a: None)  # --package-only: tabulate, train nothing
    assert (tmp_path / "out" / "ablation.csv").read_text() == before


def _package_ships_beside(tmp_path, cfg, before, monkeypatch):
    """--package copies the outputs into the repository and renders docs/results.md's tables."""
    from augment.jobs import ablation_tables

    (tmp_path / "repo" / "docs").mkdir(parents=True)
    marker = ablation_tables.BEGIN.format(spec="reid/reference/ablation.csv")
    (tmp_path / "repo" / "docs" / "results.md").write_text(f"# Results\n\n{marker}\n{ablation_tables.END}\n")
    monkeypatch.setattr(ablation_tables, "REPO", tmp_path / "repo")
    ablation_tables.package(load_config(ReidReferenceConfig, cfg), log=lambda *a: None)
    assert (tmp_path / "repo" / "reid" / "reference" / "ablation.csv").read_text() == before
    assert "| c2 | cutpaste | 2 |" in (tmp_path / "repo" / "docs" / "results.md").read_text()  # its table rendered
    assert (tmp_path / "repo" / "docs" / "reid_reference_cmc.png").stat().st_size > 0
    assert (tmp_path / "repo" / "docs" / "reid_reference_pairs.png").stat().st_size > 0  # always redrawn
    cmc = (tmp_path / "repo" / "reid" / "reference" / "cmc.csv").read_text()
    assert cmc.startswith("world,regime,recipe,seed,rank1,")  # each run's CMC, shipped with its row
    # a second ablation (another generator, say) ships beside the first, not over it
    ablation_tables.package(load_config(ReidReferenceConfig, cfg, ["package=reid/reference/other",
                                                                   "figures=docs/other"]), log=lambda *a: None)
    assert (tmp_path / "repo" / "reid" / "reference" / "other" / "ablation.csv").read_text() == before
    assert (tmp_path / "repo" / "docs" / "other_curve.png").stat().st_size > 0

def test_a_filter_scored_by_another_model_is_refused(tmp_path):
    """Filtered generated data made with another recipe's model (the anchor changed) is not reused silently."""
    import json

    from augment.jobs.reference_reid import GeneratedData

    cfg = ReidReferenceConfig(out=str(tmp_path), recipes=[Recipe("real"), Recipe("flip"), Recipe(
        "cutpaste", generated="cutpaste")], anchor="flip")
    src = GeneratedData(cfg, World(), Regime("full", 0), False, print)
    out = tmp_path / "reference" / "full" / "generated" / "hybrid-filtered-seed0"
    out.mkdir(parents=True)
    state = tmp_path / "reference" / "full" / "runs" / "{}" / "real" / "seed0" / "stage0-real" / "state.pt"
    (out / "filter_summary.json").write_text(json.dumps({"model_state": str(state).format("real")}))
    with pytest.raises(UserError, match="not the anchor's model"):
        src.filtered("hybrid", Path(str(state).format("flip")), 0)
    # the same model elsewhere (another machine's path) is the same filter
    (out / "filter_summary.json").write_text(json.dumps({"model_state": "/elsewhere/full/runs/flip/real/seed0/"
                                                                        "stage0-real/state.pt"}))
    assert src.filtered("hybrid", Path(str(state).format("flip")), 0) == out


@pytest.mark.slow  # generated data at another size, and re-ID training on it: seconds
def test_reid_at_another_size_than_the_generator(tmp_path):
    """Re-ID at 128x64 with the 64x32 reference generator: the generator encodes the same people rendered again at
    its own size, so its remixes carry the re-ID data's pids and the hybrid is written at the re-ID size."""
    from PIL import Image

    from augment.jobs.reference_reid import GeneratedData
    from reid.torchreid_adapter import market_records
    from reid.train import ReidTrainConfig

    def train(root):
        return market_records(root, ("train",))["train"]

    cfg = ReidReferenceConfig(out=str(tmp_path), sim_ids=16, remix_images_per_id=2,
                              train=ReidTrainConfig(size=(128, 64)),
                              recipes=[Recipe("real"), Recipe("cutpaste", setting="real+remix",
                                                              generated="cutpaste")])
    src = GeneratedData(cfg, World(), Regime("c2", 2), False, lambda *a: None)
    real, gen = train(src.real()), train(src.gen_data())
    assert src.gen_data() == tmp_path / "reference" / "c2" / "sim-gen"
    assert [(Path(p).name, pid, cam) for p, pid, cam in real] == [(Path(p).name, pid, cam) for p, pid, cam in gen]
    assert Image.open(real[0][0]).size == (64, 128) and Image.open(gen[0][0]).size == (32, 64)
    remix = train(src.generated("remix"))
    assert remix and {pid for _, pid, _ in remix} == {pid for _, pid, _ in real}
    hybrid = train(src.generated("hybrid"))
    assert len(hybrid) == len(real) and Image.open(hybrid[0][0]).size == (64, 128)
    # at the generator's own size the re-ID data is what the generator reads
    same = GeneratedData(ReidReferenceConfig(out=str(tmp_path / "same"), sim_ids=16,
                                             train=ReidTrainConfig(size=(64, 32)), recipes=cfg.recipes),
                         World(), Regime("c2", 2), False, lambda *a: None)
    assert same.gen_data() == same.real()


def test_compare_ablations_pairs_seeds_across_tables(tmp_path):
    """benchmarks/compare_ablations.py: A - B per recipe over the seeds both ran, and against B's named recipes."""
    import subprocess
    import sys

    def table(rows, recipe="recipe"):
        return pd.DataFrame([{"regime": "c2", recipe: s, "seed": k, "rank1": r, "mAP": m} for s, k, r, m in rows])

    a = table([("hybrid", 0, 0.30, 0.20), ("hybrid", 1, 0.34, 0.22), ("hybrid", 2, 0.50, 0.50)])
    # B written before the glossary, the recipe in a `setting` column: read as a recipe all the same
    b = table([("hybrid", 0, 0.20, 0.20), ("hybrid", 1, 0.20, 0.20), ("real", 0, 0.10, 0.10), ("real", 1, 0.12, 0.10)],
              recipe="setting")
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "compare_ablations.py"), str(tmp_path / "a.csv"),
                          str(tmp_path / "b.csv"), "--against", "real", "--names", "big,small"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    # seeds 0 and 1 only (seed 2 is A's alone): hybrid 32.0 vs 20.0, differences +10 and +14 rank-1
    assert "| c2 | hybrid | 2 | 32.0 / 21.0 | 20.0 / 20.0 | +12.0 ± 2.0 / +1.0 ± 1.0 | +21.0 ± 1.0 / +11.0 ± 1.0 |" \
        in out, out


def test_results_doc_is_rendered_from_the_shipped_ablations():
    """docs/results.md's tables between generated markers are the shipped ablations' own: `vmarket reference-reid
    --package` (or `make docs`) rewrites them, and a table edited by hand or left behind by a new CSV fails here."""
    from augment.jobs.ablation_tables import BEGIN, RESULTS_DOC, render_results_doc

    repo = Path(__file__).resolve().parents[1]
    doc = (repo / RESULTS_DOC).read_text()
    for csv in ("ablation.csv", "128x64/ablation.csv", "unlabelled/ablation.csv", "unlabelled-only/ablation.csv"):
        assert BEGIN.format(spec=f"reid/reference/{csv}").split(":")[0] in doc, csv
    assert render_results_doc(doc, repo) == doc, f"{RESULTS_DOC} is stale: run `make docs`"


def test_results_doc_blocks(tmp_path):
    """Each kind of generated table comes from the CSV its marker names; what a hand put inside is replaced, the prose
    around is kept; a table without its end marker, or one naming a CSV that is not there, is refused."""
    from augment.jobs.ablation_tables import BEGIN, END, render_results_doc

    a = _rows().drop(columns=["cmc", "curve"])
    a.to_csv(tmp_path / "a.csv", index=False)
    b = a.copy()
    b.loc[b.recipe == "hybrid", "rank1"] -= 0.01  # B's hybrid is another run; its real is A's own
    b.to_csv(tmp_path / "b.csv", index=False)

    def block(spec, inside="| stale |"):
        return f"{BEGIN.format(spec=spec)}\n{inside}\n{END}"

    doc = "\n\n".join(["# prose 12.3", block("a.csv"), "more prose", block("a.csv; pairs: hybrid vs real"),
                        block("a.csv against b.csv; names: A, B; vs: real"), "the end\n"])
    out = render_results_doc(doc, tmp_path)
    assert "| stale |" not in out and out.startswith("# prose 12.3\n") and out.endswith("the end\n")
    assert "\n20 runs.\n" in out and "| full | hybrid | 5 |" in out  # the summary table
    assert "| full | hybrid | real | 5 | +14.4 ± 0.1 |" in out  # the pairs
    assert "| full | hybrid | 5 | 46.4 / 41.4 | 45.4 / 41.4 | +1.0 ± 0.0 / +0.0 ± 0.0 |" in out  # A against B
    assert "| full | real | 5 | 32.0 / 27.0" not in out  # runs that are B's own are left out
    assert render_results_doc(out, tmp_path) == out
    with pytest.raises(UserError, match="without its end marker"):
        render_results_doc(BEGIN.format(spec="a.csv") + "\n| x |\n", tmp_path)
    with pytest.raises(UserError, match="c.csv, which is not in"):
        render_results_doc(block("c.csv"), tmp_path)
    with pytest.raises(UserError, match="is not 'a vs b'"):
        render_results_doc(block("a.csv; pairs: hybrid"), tmp_path)


def test_a_table_pinned_to_a_generator_refuses_other_checkpoints(tmp_path):
    """generator_sha256 names the generator a table is of: each shipped config pins the checkpoints its packaged
    table's provenance records, a run with other checkpoints is refused in one line naming the file, and a malformed
    pin is refused when the config loads."""
    import json

    from augment.jobs.reference_reid import check_generators
    from generator.shipped import checkpoint_sha256

    files = ("stage1.pt", "pose.pt", "stage2.pt")
    pins = {}
    for path in sorted(Path("configs/reference").glob("reid*.yaml")):
        cfg = pins[path.name] = load_config(ReidReferenceConfig, path)
        package = Path(cfg.package)
        if not (package / "provenance.json").is_file():  # a table not shipped yet records no generator to agree with
            assert cfg.generator_sha256, path
            continue
        made_with = json.loads((package / "provenance.json").read_text()).get("generator")
        if made_with is None and (package / "generator_provenance.json").is_file():  # a generator of its own
            made_with = {f: v["sha256"] for f, v in json.loads(
                (package / "generator_provenance.json").read_text())["files"].items()}
        if made_with is not None:
            assert cfg.generator_sha256 == [made_with[f] for f in files], path
    # the 128x64 table records no generator: it was made with the 32-channel one, as the main table
    assert pins["reid-128x64.yaml"].generator_sha256 == pins["reid.yaml"].generator_sha256
    assert len({tuple(c.generator_sha256) for c in pins.values()}) == 4  # 32ch, 48ch and the two unlabelled ones
    here = list(checkpoint_sha256().values())
    check_generators(ReidReferenceConfig(out=str(tmp_path / "a"), recipes=[Recipe("real"), Recipe("cutpaste")],
                                         generator_sha256=here))
    other = [here[0], "0" * 64, here[2]]
    with pytest.raises(UserError, match=f"whose pose.pt has sha256 000000000000, and generator/reference holds "
                                        f"{here[1][:12]}; restore those checkpoints"):
        check_generators(ReidReferenceConfig(out=str(tmp_path / "b"), recipes=[Recipe("real"), Recipe("cutpaste")],
                                             generator_sha256=other))
    assert not (tmp_path / "b").exists()
    for bad in (here[:2], [*here[:2], "xyz"]):
        with pytest.raises(UserError, match="generator_sha256: .* give the sha256 \\(64 hex digits\\) of stage1.pt, "
                                            "pose.pt, stage2.pt"):
            ReidReferenceConfig(recipes=[Recipe("real"), Recipe("cutpaste")], generator_sha256=bad)


def test_packaging_puts_the_provenance_back_last(tmp_path, monkeypatch):
    """The shipped rows are reused against their provenance: packaging removes the old provenance first and copies
    the new one last, so that a kill in between leaves rows that nothing vouches for, never new rows under the old
    table's provenance."""
    from types import SimpleNamespace

    import augment.jobs.ablation_tables as T

    out, dest = tmp_path / "out", tmp_path / "pkg"
    out.mkdir()
    dest.mkdir()
    for name in ("ablation.csv", "ablation.md", "cmc.csv"):
        (out / name).write_text(f"new {name}")
    (out / "provenance.json").write_text('{"runs_shipped": 1}')
    (out / "pairs.png").write_bytes(b"png")
    (dest / "provenance.json").write_text("old")
    (dest / "ablation.csv").write_text("old")
    cfg = SimpleNamespace(out=str(out), package=str(dest), figures=str(tmp_path / "docs" / "fig"))
    monkeypatch.setattr(T, "write_results_doc", lambda repo: False)
    copy = T.atomic_copy

    def killed_at_the_provenance(src, dst, **kwargs):
        if Path(dst).name == "provenance.json":
            raise KeyboardInterrupt
        copy(src, dst, **kwargs)

    monkeypatch.setattr(T, "atomic_copy", killed_at_the_provenance)
    with pytest.raises(KeyboardInterrupt):
        T.package(cfg, log=lambda msg: None)
    assert not (dest / "provenance.json").exists() and (dest / "ablation.csv").read_text() == "new ablation.csv"
    monkeypatch.setattr(T, "atomic_copy", copy)
    T.package(cfg, log=lambda msg: None)
    assert (dest / "provenance.json").read_text() == '{"runs_shipped": 1}'
    assert (tmp_path / "docs" / "fig_pairs.png").read_bytes() == b"png"
