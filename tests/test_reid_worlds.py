"""The reference ablation's worlds, combined recipes and the shipped rows it reuses: config checks, the tables
with a world column, and a run that trains only what the shipped table does not hold."""
import json
from pathlib import Path

import pandas as pd
import pytest

import augment.jobs.reid_recipes as recipes_module
from augment.jobs import reference_reid
from augment.jobs.ablation_figures import pair_differences, pairs_figure
from augment.jobs.ablation_tables import (
    generator_record,
    pairs_table,
    read_ablation,
    runs_line,
    summary_table,
)
from augment.jobs.reference_reid import GeneratedData, _ablation_config
from augment.jobs.reid_recipes import Recipe, Regime, ReidReferenceConfig, Shipped, World
from generator.config import load_config, to_dict
from generator.errors import UserError
from generator.shipped import checkpoint_sha256

BASE = [Recipe("real"), Recipe("cutpaste", setting="real+remix", generated="cutpaste")]


def test_combined_recipes_are_checked():
    combined = Recipe("c+h", setting="real+remix", generated="cutpaste+hybrid", share=[0.25, 0.125])
    assert combined.combined and combined.kinds == ["cutpaste", "hybrid"] and combined.labels == ["smooth"] * 2
    with pytest.raises(UserError, match="one share .* per kind"):
        Recipe("x", setting="real+remix", generated="cutpaste+hybrid", share=[0.25])
    with pytest.raises(UserError, match="setting is real\\+remix .* not 'real\\+new'"):
        Recipe("x", setting="real+new", generated="cutpaste+new", share=[0.25, 0.1])
    with pytest.raises(UserError, match="setting is real\\+remix"):  # the kinds after the first join no stage
        Recipe("x", setting="virtual->real+remix", generated="cutpaste+new", share=[0.25, 0.1])
    with pytest.raises(UserError, match="sum below 1"):
        Recipe("x", setting="real+remix", generated="cutpaste+hybrid", share=[0.6, 0.5])
    with pytest.raises(UserError, match="at least 0"):
        Recipe("x", setting="real+remix", generated="cutpaste+hybrid", share=[-0.1, 0.5])
    with pytest.raises(UserError, match="needs a share per kind"):
        Recipe("x", setting="real+remix", generated="cutpaste", label=["smooth"])
    with pytest.raises(UserError, match="two kinds or more"):
        Recipe("x", setting="real+remix", generated="cutpaste", share=[0.25])
    with pytest.raises(UserError, match="names a folder"):
        World("../up")
    with pytest.raises(UserError, match="several kinds of real-identity images"):
        Recipe("x", setting="real+remix", generated="cutpaste+hybrid", share=0.25)
    with pytest.raises(UserError, match="'paste' is not one of"):
        Recipe("x", setting="real+remix", generated="cutpaste+paste", share=[0.25, 0.1])
    # one share for pasting and new identities: one pool, as before (the pre-training recipe reads both)
    assert not Recipe("p", setting="virtual->real+remix", generated="cutpaste+new").combined
    with pytest.raises(UserError, match="each with a name of its own"):
        ReidReferenceConfig(recipes=BASE, worlds=[World("a"), World("a", 1)])


def test_a_combined_recipe_becomes_a_base_kind_and_more_generated(tmp_path):
    cfg = ReidReferenceConfig(out=str(tmp_path), recipes=BASE + [Recipe(
        "c+n", setting="real+remix", generated="cutpaste+new", share=[0.25, 0.125], label=["smooth", "lsro"])])
    data = GeneratedData(cfg, World("w2", 1, "textured"), Regime("full", 0), False, print)
    data.made |= {"real", "cutpaste", "new"}  # the paths, not the data
    acfg = _ablation_config(cfg, cfg.recipes[2], data, seed=3)
    assert acfg.remix_root.endswith("w2/full/generated/cutpaste") and not acfg.virtual_root
    assert (acfg.virtual_share, acfg.virtual_label) == (0.25, "smooth")
    (more,) = acfg.more_generated
    assert more.root.endswith("w2/full/generated/new") and (more.kind, more.share, more.label) == ("new", 0.125,
                                                                                                   "lsro")
    assert acfg.out.endswith("w2/full/runs/c+n")


def test_a_world_is_its_own_simmarket(tmp_path):
    cfg = ReidReferenceConfig(out=str(tmp_path), sim_ids=8, recipes=BASE)
    textured = GeneratedData(cfg, World("w2", 1, "textured"), Regime("full", 0), False, lambda *a: None).real()
    meta = json.loads((textured / "simmarket.json").read_text())
    assert textured == tmp_path / "w2" / "full" / "sim" and (meta["seed"], meta["style"]) == (1, "textured")
    with pytest.raises(UserError, match="key 'sim_seed' is now 'worlds'"):
        (tmp_path / "old.yaml").write_text("sim_seed: 1\nrecipes: [{name: real}, {name: cutpaste}]\n")
        load_config(ReidReferenceConfig, tmp_path / "old.yaml")


def _rows(world: str, gain: float) -> list[dict]:
    return [{"recipe": recipe, "world": world, "regime": "full", "seed": seed, "rank1": r1, "mAP": r1 - 0.05,
             "mINP": 0.1, "generated": "" if recipe == "real" else recipe}
            for seed in range(3) for recipe, r1 in (("real", 0.3 + 0.01 * seed), ("cutpaste", 0.4 + 0.01 * seed),
                                                    ("c+h", 0.4 + gain + 0.012 * seed))]


def test_tables_pair_within_each_world():
    df = pd.DataFrame(_rows("reference", 0.03) + _rows("w2", -0.02))
    table = summary_table(df)
    assert table.splitlines()[0].startswith("| world | regime | recipe |")
    line = next(r for r in table.splitlines() if r.startswith("| w2 | full | c+h |"))
    assert line.split("|")[10].strip() == "-1.8 ± 0.1"  # against w2's cut-and-paste, not the reference world's
    assert "| reference | full | c+h | cutpaste | 3 | +3.2 ± 0.1 |" in pairs_table(df, [("c+h", "cutpaste")])
    # one world: the table has no world column, as before worlds were a key
    assert summary_table(pd.DataFrame(_rows("reference", 0.03))).splitlines()[0].startswith("| regime |")


def test_the_pairs_figure_pairs_by_seed_within_each_world(tmp_path):
    """The figure of every recipe against cut-and-paste: differences seed by seed within a world, their mean ± 2 SE,
    and which side of zero that bar lies on."""
    rows = _rows("reference", 0.03) + _rows("w2", -0.02)
    rows += [{**r, "recipe": "noisy", "rank1": r["rank1"] + (0.05 if r["seed"] % 2 else -0.04)}
             for r in _rows("w2", 0.0) if r["recipe"] == "cutpaste"]
    p = pair_differences(pd.DataFrame(rows), "cutpaste").set_index(["world", "regime", "recipe", "metric"])
    up, down = p.loc[("reference", "full", "c+h", "rank1")], p.loc[("w2", "full", "c+h", "rank1")]
    assert up.diffs == pytest.approx([3.0, 3.2, 3.4]) and up.verdict == "above"
    assert down["mean"] == pytest.approx(-1.8) and down.verdict == "below"
    assert p.loc[("w2", "full", "noisy", "rank1")].verdict == "within"  # -4, +5, -4: its bar spans zero
    assert p.loc[("reference", "full", "real", "rank1")].verdict == "below"  # -10 at every seed: no spread at all
    one = pair_differences(pd.DataFrame([r for r in rows if r["seed"] == 0]), "cutpaste")
    assert set(one.verdict) == {"within"} and set(one.half) == {0.0}  # one seed: no spread to judge by
    assert ("w2", "full", "cutpaste", "rank1") not in p.index  # never against itself
    pairs_figure(pd.DataFrame(rows), "cutpaste", tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").read_bytes()[:4] == b"\x89PNG"


def _ship(repo, cfg: ReidReferenceConfig, rows: list[dict], provenance_config: dict) -> None:
    dest = repo / cfg.package
    dest.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(dest / "ablation.csv", index=False)
    curve = {"recipe": "real", "epochs": [9, 18], "rank1_mean": [0.2, 0.3], "seeds": 5, "best_epoch": 18,
             "plateau_epoch": 18}
    (dest / "provenance.json").write_text(json.dumps({"config": provenance_config, "plateau": {"full": curve},
                                                     "date": "2026-11-26",
                                                     "filters": {"full/hybrid-filtered-seed0": {"kept": 0.6}}}))


def test_shipped_rows_are_reused_only_for_the_same_training(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE + [Recipe(
        "c+h", setting="real+remix", generated="cutpaste+hybrid", share=[0.25, 0.125])], anchor="real",
        worlds=[World("reference"), World("w2", 1, "textured")])
    # a table shipped before worlds were a key: no world column, its world by sim_seed in the provenance
    old = {k: v for k, v in to_dict(cfg).items() if k != "worlds"} | {"sim_seed": 0}
    old["recipes"] = [to_dict(r) for r in BASE]
    rows = [{k: v for k, v in r.items() if k != "world"} | {"device": "cpu"} for r in _rows("reference", 0.0)
            if r["recipe"] != "c+h"]
    _ship(tmp_path / "repo", cfg, rows, old)
    # the shipped CMC of some runs (the cut-and-paste ones; the anchor's and the rest were shipped without)
    pd.DataFrame([{"world": "reference", "regime": "full", "recipe": "cutpaste", "seed": s, "rank1": 0.4 + s / 100,
                   "rank2": 0.6} for s in range(3)]).to_csv(tmp_path / "repo" / cfg.package / "cmc.csv", index=False)
    shipped = Shipped(cfg)
    assert len(shipped.rows) == 6 and {k[0] for k in shipped.rows} == {"reference"}
    assert shipped.row(World("reference"), Regime("full", 0), BASE[1], 1)["cmc"] == pytest.approx([0.41, 0.6])
    assert shipped.row(World("reference"), Regime("full", 0), BASE[0], 1)["cmc"] is None
    assert shipped.row(World("reference"), Regime("full", 0), BASE[1], 2)["rank1"] == pytest.approx(0.42)
    # a table shipped before rows had a date: its rows are dated by its provenance
    assert shipped.row(World("reference"), Regime("full", 0), BASE[1], 2)["date"] == "2026-11-26"
    assert shipped.row(World("w2", 1, "textured"), Regime("full", 0), BASE[1], 2) is None
    # --fresh: a recipe trained here again reuses none of its shipped rows
    assert {k[2] for k in Shipped(cfg, ["cutpaste"]).rows} == {"real"}
    with pytest.raises(UserError, match="--fresh paste: no recipe named 'paste'"):
        Shipped(cfg, ["paste"])
    # --package-only: the shipped rows make the table; their runs are not here, so only the CMC shipped with them
    # is there to draw, and it is written out again for the next table
    df = reference_reid.collect(cfg, log=lambda *a: None)
    assert len(df) == 6 and set(df.world) == {"reference"}
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["runs_shipped"] == 3  # the rows without a CMC
    assert (pd.read_csv(tmp_path / "out" / "cmc.csv").round(6).to_dict("records")
            == pd.read_csv(tmp_path / "repo" / cfg.package / "cmc.csv").round(6).to_dict("records"))
    assert prov["plateau"]["full"]["plateau_epoch"] == 18  # the anchor's curves are the shipped runs': kept
    assert prov["filters"] == {"reference/full/hybrid-filtered-seed0": {"kept": 0.6}}  # and so are their filters
    table = read_ablation(tmp_path / "out" / "ablation.csv")
    assert list(table.columns[:3]) == ["recipe", "world", "regime"] and set(table.date) == {"2026-11-26"}
    assert runs_line(table) == "6 runs (6 on cpu); trained 6 on 2026-11-26.\n"
    with pytest.raises(UserError, match="no finished run yet"):
        reference_reid.collect(cfg, log=lambda *a: None, reuse=False)
    # another recipe definition, or other training, reuses nothing of it
    changed = old | {"recipes": [to_dict(BASE[0]), to_dict(Recipe("cutpaste", setting="real+remix",
                                                                   generated="cutpaste", share=0.5))]}
    (tmp_path / "repo" / cfg.package / "provenance.json").write_text(json.dumps({"config": changed}))
    assert {k[2] for k in Shipped(cfg).rows} == {"real"}
    changed = old | {"train": to_dict(cfg.train) | {"epochs": 3}}
    (tmp_path / "repo" / cfg.package / "provenance.json").write_text(json.dumps({"config": changed}))
    assert not Shipped(cfg).rows


def test_shipped_rows_of_the_generator_are_reused_only_for_the_same_reference_checkpoints(tmp_path, monkeypatch):
    """A row whose images came from the generator is reused only when the shipped table's provenance names the
    reference checkpoints this config uses; rows without the generator (real-only, cut-and-paste) are reused
    whatever it names."""
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE + [Recipe(
        "c+h", setting="real+remix", generated="cutpaste+hybrid", share=[0.25, 0.125])], anchor="real")
    _ship(tmp_path / "repo", cfg, _rows("reference", 0.0), to_dict(cfg))
    prov_path = tmp_path / "repo" / cfg.package / "provenance.json"

    def made_with(generator):
        prov = json.loads(prov_path.read_text())
        prov.pop("generator", None)
        prov_path.write_text(json.dumps(prov | ({"generator": generator} if generator else {})))
        return Shipped(cfg)

    assert {k[2] for k in made_with(checkpoint_sha256()).rows} == {"real", "cutpaste", "c+h"}
    for other in (None, checkpoint_sha256() | {"stage1.pt": "0" * 64}):  # not recorded, or another generator
        shipped = made_with(other)
        assert {k[2] for k in shipped.rows} == {"real", "cutpaste"}
        assert "not the 3 of the generator's recipes" in shipped.summary


def test_rows_are_reused_from_the_package_then_from_another_shipped_table(tmp_path, monkeypatch):
    """``reuse`` names a second shipped table: a config packaged elsewhere (another generator's recipes) takes the
    runs that need no generator from it, its own package's rows first, and none of its generator rows made with
    other checkpoints."""
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    combined = Recipe("c+h", setting="real+remix", generated="cutpaste+hybrid", share=[0.25, 0.125])
    main = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE + [combined], anchor="real")
    _ship(tmp_path / "repo", main, _rows("reference", 0.0), to_dict(main) | {"generator": None})
    prov = json.loads((tmp_path / "repo" / main.package / "provenance.json").read_text())
    (tmp_path / "repo" / main.package / "provenance.json").write_text(json.dumps(prov | {
        "generator": checkpoint_sha256() | {"stage1.pt": "0" * 64}}))  # made by another generator
    cfg = ReidReferenceConfig(out=str(tmp_path / "out2"), recipes=BASE + [combined], anchor="real",
                              package="reid/reference/48ch", reuse=main.package)
    shipped = Shipped(cfg)
    assert {k[2] for k in shipped.rows} == {"real", "cutpaste"} and shipped.generator is None
    assert "no shipped ablation at" in shipped.summary and "reusing 6 rows" in shipped.summary
    # once packaged, its own rows (this generator's) come first; the other table fills in what it lacks
    own = [r | {"rank1": r["rank1"] + 0.5} for r in _rows("reference", 0.0) if r["recipe"] != "real"]
    _ship(tmp_path / "repo", cfg, own, to_dict(cfg) | {"generator": None})
    prov = json.loads((tmp_path / "repo" / cfg.package / "provenance.json").read_text())
    (tmp_path / "repo" / cfg.package / "provenance.json").write_text(json.dumps(prov | {
        "generator": checkpoint_sha256()}))
    shipped = Shipped(cfg)
    assert {k[2] for k in shipped.rows} == {"real", "cutpaste", "c+h"} and shipped.generator == checkpoint_sha256()
    assert shipped.row(World("reference"), Regime("full", 0), BASE[1], 1)["rank1"] == pytest.approx(0.91)
    assert shipped.row(World("reference"), Regime("full", 0), BASE[0], 1)["rank1"] == pytest.approx(0.31)
    # but in the table, the other table's runs without the generator stand: every difference to them pairs with the
    # runs that table pairs, over its package's rows and over a run here of the same recipe (a filtered recipe
    # trains the anchor here for its model)
    world, full = World("reference"), Regime("full", 0)
    assert shipped.pinned_row(world, full, BASE[1], 1)["rank1"] == pytest.approx(0.41)
    assert shipped.pinned_row(world, full, combined, 1) is None  # the generator's rows: its own package's
    here = {("reference", "full", "real", 0): {"recipe": "real", "world": "reference", "regime": "full", "seed": 0,
                                               "rank1": 0.99, "mAP": 0.9}}
    table = {(r["recipe"], r["seed"]): r["rank1"] for r in reference_reid._table_rows(cfg, shipped, here)}
    assert table[("real", 0)] == pytest.approx(0.30) and table[("cutpaste", 1)] == pytest.approx(0.41)
    assert table[("c+h", 1)] == pytest.approx(0.912)  # the generator's rows: its own package's
    data = GeneratedData(cfg, world, full, False, lambda *a: None)
    assert reference_reid._one_run(cfg, BASE[0], 2, data, shipped)[0]["rank1"] == pytest.approx(0.32)
    assert {k[2] for k in Shipped(cfg, ["cutpaste"]).pinned} == {"real"}  # --fresh: trained here, its rows stand
    # a config that would train otherwise than the other table reuses none of it
    other = ReidReferenceConfig(out=str(tmp_path / "out3"), recipes=BASE, anchor="real", package="reid/x",
                                reuse=main.package, curve_every=5)
    assert not Shipped(other).rows and "other curve_every" in Shipped(other).summary


def test_the_table_records_the_one_generator_that_made_its_images_and_refuses_an_out_of_another(tmp_path):
    def installed(scope, sha, out=tmp_path):
        (out / scope / "generator").mkdir(parents=True)
        (out / scope / "generator" / "reference.json").write_text(json.dumps({"sha256": sha}))

    a, b = {"stage1.pt": "a" * 64}, {"stage1.pt": "b" * 64}
    assert generator_record(tmp_path) == {"generator": None}  # no generator installed: none recorded
    installed("reference/full", a)
    installed("w2/full", a)
    assert generator_record(tmp_path) == {"generator": a} == generator_record(tmp_path, a)
    mixed = generator_record(tmp_path, b)  # shipped rows of another generator beside these runs
    assert mixed["generator"] is None and mixed["generators"]["shipped rows"] == b
    # an out whose generator was installed from other checkpoints than the config's is refused before anything
    out = tmp_path / "out"
    cfg = ReidReferenceConfig(out=str(out), recipes=BASE, anchor="real",
                              worlds=[World("reference"), World("w2", 1, "textured")])
    installed("reference/full", checkpoint_sha256(), out)
    installed("w2/cameras2", checkpoint_sha256() | {"stage2.pt": "c" * 64}, out)
    for job in (lambda: reference_reid.collect(cfg, log=lambda *a: None),
                lambda: reference_reid.run(cfg, progress=False, log=lambda *a: None)):
        with pytest.raises(UserError, match=r"w2/cameras2/generator: installed from other reference checkpoints"):
            job()
    assert not (out / "config.yaml").exists()


def test_a_finished_combined_run_is_reused_only_for_the_same_kinds(tmp_path):
    """finished_result compares the further kinds' data (their folder's name), shares and labels."""
    import time

    from reid.ablation import AblationConfig, MoreGenerated, finished_result, stage_dir
    from reid.train import ReidTrainConfig

    def cfg(kind):
        return AblationConfig(settings=["real+remix"], virtual_share=0.25, virtual_label="smooth",
                              train=ReidTrainConfig(batch=32), out=str(tmp_path),
                              more_generated=[MoreGenerated(f"/x/{kind}", "remix", 0.125, "smooth")])

    run = stage_dir(tmp_path, "real+remix", 0)
    run.mkdir(parents=True)
    mix = {"virtual_share": 0.25, "virtual_label": "smooth", "virtual_epsilon": 0.1, "virtual_triplet": False,
           "generated_per_batch": 13, "more": [{"data": "hybrid", "virtual_share": 0.125, "virtual_label": "smooth",
                                                "virtual_epsilon": 0.1, "generated_per_batch": 6}]}
    t = ReidTrainConfig(batch=32)
    result = {"epochs": t.epochs, "transforms": list(t.transforms), "steps": 10, "rank1": 0.5, "rank5": 0.6,
              "mAP": 0.4, "mINP": 0.2, "cmc": [0.5], "mix": mix}
    (run / "result.json").write_text(json.dumps(result))
    row = finished_result(cfg("hybrid"), "real+remix", 0)
    assert row["more_data"] == "hybrid"
    assert row["date"] == time.strftime("%Y-%m-%d")  # a result without its date: the day its file was written
    with pytest.raises(UserError, match="trained with mix"):
        finished_result(cfg("remix-newpose"), "real+remix", 0)
    # a result written before the further kinds' data was recorded is taken as the config's
    del mix["more"][0]["data"]
    (run / "result.json").write_text(json.dumps(result))
    assert finished_result(cfg("remix-newpose"), "real+remix", 0) is not None
    mix["more"][0]["virtual_share"] = 0.1
    (run / "result.json").write_text(json.dumps(result))
    with pytest.raises(UserError, match="trained with mix"):
        finished_result(cfg("hybrid"), "real+remix", 0)


def test_collect_reads_a_finished_combined_run_without_its_data(tmp_path):
    """--package-only tabulates a combined run from its result alone: the further kind is named by its folder."""
    from reid.ablation import stage_dir

    recipe = Recipe("c+h", setting="real+remix", generated="cutpaste+hybrid", share=[0.25, 0.125])
    cfg = ReidReferenceConfig(out=str(tmp_path), recipes=BASE + [recipe], regimes=[Regime("full", 0)], seeds=[0])
    run = stage_dir(tmp_path / "reference" / "full" / "runs" / "c+h", "real+remix", 0)
    run.mkdir(parents=True)
    t = cfg.train
    mix = {"virtual_share": 0.25, "virtual_label": "smooth", "virtual_epsilon": 0.1, "virtual_triplet": False,
           "generated_per_batch": 13, "more": [{"data": "hybrid", "virtual_share": 0.125, "virtual_label": "smooth",
                                                "virtual_epsilon": 0.1, "generated_per_batch": 6}]}
    (run / "result.json").write_text(json.dumps({
        "epochs": t.epochs, "transforms": list(t.transforms), "steps": 10, "rank1": 0.5, "rank5": 0.6, "mAP": 0.4,
        "mINP": 0.2, "cmc": [0.5], "mix": mix, "date": "2026-12-05"}))
    (df,) = [reference_reid.collect(cfg, log=lambda *a: None, reuse=False)]
    assert list(df.recipe) == ["c+h"] and df.share[0] == "0.25+0.125" and df.date[0] == "2026-12-05"


def test_the_log_marks_a_shipped_row_as_shipped_whether_or_not_it_has_a_cmc(tmp_path):
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE, anchor="real")
    (tmp_path / "out").mkdir()
    lines: list[str] = []
    results = reference_reid._Results(cfg, lines.append, "cmd")
    row = {"world": "w2", "regime": "full", "recipe": "real", "seed": 0, "rank1": 0.3, "mAP": 0.25}
    results.record((0, 0, 0), row | {"cmc": [0.3, 0.4]}, None, True)  # a shipped anchor keeps its CMC
    results.record((0, 0, 1), row | {"recipe": "cutpaste", "cmc": []}, None, False)  # finished here before
    results.record((1, 0, 1), row | {"recipe": "cutpaste", "seed": 1, "cmc": [0.5]}, 12.0)  # trained now
    assert lines == ["[w2/full] real seed 0: rank-1 30.0, mAP 25.0 (shipped)",
                     "[w2/full] cutpaste seed 0: rank-1 30.0, mAP 25.0",
                     "[w2/full] cutpaste seed 1: rank-1 30.0, mAP 25.0"]
    assert json.loads((tmp_path / "out" / "times.json").read_text()) == {"w2/full/cutpaste/seed1": 12.0}


def test_status_counts_the_runs_here_shipped_and_missing_and_times_the_rest(tmp_path, monkeypatch):
    """``--status`` trains, reads and writes nothing: it says which runs are finished here or shipped, which are
    missing (with their seeds), and what the missing ones cost at the pace of the runs here."""
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    filtered = Recipe("h-f", setting="real+remix", generated="hybrid", filter=True)
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE + [filtered], anchor="real", seeds=[0, 1, 2],
                              regimes=[Regime("full", 0)], worlds=[World("reference"), World("w2", 1, "textured")])
    _ship(tmp_path / "repo", cfg, [r for r in _rows("reference", 0.0) if r["recipe"] == "real"], to_dict(cfg))
    here = {("w2", "real", 0), ("w2", "real", 1), ("w2", "cutpaste", 0)}  # finished in w2

    def finished(acfg, setting, seed, steps_per_epoch=None):
        parts = Path(acfg.out).parts
        return {"rank1": 0.5} if (parts[-4], parts[-1], seed) in here else None

    monkeypatch.setattr(reference_reid, "finished_result", finished)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "times.json").write_text(json.dumps({
        "w2/full/real/seed0": 100.0, "w2/full/real/seed1": 120.0, "w2/full/cutpaste/seed0": 200.0}))
    text = reference_reid.status(cfg)
    assert text.startswith(f"{cfg.out}: 6 of 18 runs finished (here or shipped)")
    assert "| reference | full | 0 | 3 | 0 | 6 |" in text and "| w2 | full | 3 | 0 | 0 | 6 |" in text
    assert ("- reference/full: cutpaste (seeds 0-2); h-f (seeds 0-2, and real again first: the filter's model is "
            "not here)") in text
    assert "- w2/full: real (seed 2); cutpaste (seeds 1-2); h-f (seeds 0-2)\n" in text  # its anchor trains first
    # the pace is the regime's, in any world: real's seed 2 at real's median (110 s), cutpaste's 5 runs at its own
    # (200 s), h-f's 6 at the regime's (120 s; no h-f run here): 1,830 s; and the reference world's 3 anchor runs that
    # h-f's runs train again for its model, at real's: 330 s more
    assert "about 0.6 h of training left" in text
    assert len([line for line in text.splitlines() if line.startswith("- ")]) == 2
    assert "nothing left to train" not in text and not (tmp_path / "out" / "ablation.csv").exists()
    # without the shipped rows: the anchor's are missing as well, and the filter needs nothing more
    bare = reference_reid.status(cfg, reuse=False, worlds=["reference"])
    assert bare.startswith(f"{cfg.out}: 0 of 9 runs finished (here)") and "again first" not in bare
    with pytest.raises(UserError, match="no world named 'w3'"):
        reference_reid.status(cfg, worlds=["w3"])


def test_status_times_a_recipe_with_no_run_here_at_its_shipped_pace(tmp_path, monkeypatch):
    """On a machine with few runs of its own, ``--status`` times a missing run from the seconds the shipped runs took
    (their provenance's ``run_seconds``): scaled by this machine's pace against theirs in a regime it has runs of, and
    said apart, at their own pace, in a regime it has none of."""
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE + [Recipe("r2", transforms=["random_flip"])],
                              anchor="real", seeds=[0, 1], regimes=[Regime("full", 0), Regime("cameras2", 2)])
    shipped_rows = [r | {"regime": regime} for r in _rows("reference", 0.0) if r["recipe"] == "real" and r["seed"] < 2
                    for regime in ("full", "cameras2")]
    _ship(tmp_path / "repo", cfg, shipped_rows, to_dict(cfg))
    prov = tmp_path / "repo" / cfg.package / "provenance.json"
    # shipped: real 100 s a run in both regimes, cutpaste 300 s at full coverage and 200 s camera-limited, r2 100 s
    # at full coverage (a run of another seed)
    prov.write_text(json.dumps(json.loads(prov.read_text()) | {"run_seconds": {
        "reference/full/real/seed0": 100.0, "reference/full/real/seed1": 100.0, "reference/full/cutpaste/seed0": 300.0,
        "reference/full/r2/seed3": 100.0, "reference/cameras2/real/seed0": 100.0,
        "reference/cameras2/cutpaste/seed0": 200.0}}))
    (tmp_path / "out").mkdir()
    # here: one r2 run at full coverage, in 200 s: this machine takes 200 / 100 of the shipped runs' time for r2
    (tmp_path / "out" / "times.json").write_text(json.dumps({"reference/full/r2/seed0": 200.0}))
    here = {("full", "r2", 0)}
    monkeypatch.setattr(reference_reid, "finished_result", lambda acfg, setting, seed, steps_per_epoch=None:
                        {"rank1": 0.5} if (*Path(acfg.out).parts[-3::2], seed) in here else None)
    text = reference_reid.status(cfg)
    assert text.startswith(f"{cfg.out}: 5 of 12 runs finished (here or shipped)")
    # full: cutpaste's 2 runs at its shipped 300 s x 200 / 100, r2's seed 1 at its own 200 s: 1,400 s here
    assert "about 0.4 h of training left at this machine's pace" in text
    # cameras2, with no run here: cutpaste's 2 runs at its shipped 200 s, r2's 2 at the regime's shipped median
    # (150 s, of real's 100 and cutpaste's 200): 700 s
    assert ("and about 0.2 h for 4 runs at the pace of the shipped runs (their median seconds in provenance.json "
            f"of {cfg.package}") in text
    assert "with no run here to time" not in text
    # no shipped seconds and no run of the regime here: that regime's runs are counted, not timed
    prov.write_text(json.dumps({k: v for k, v in json.loads(prov.read_text()).items() if k != "run_seconds"}))
    text = reference_reid.status(cfg)
    assert "4 runs of recipes and regimes with no run here to time" in text and "pace of the shipped" not in text


def test_recipes_trained_fresh_stay_fresh_for_every_later_command(tmp_path, monkeypatch):
    """``--fresh`` is recorded in ``out``: a resume, ``--package-only`` and ``--status`` take those recipes' runs
    here, not the other table's pinned rows, without being told again."""
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    main = ReidReferenceConfig(out=str(tmp_path / "main"), recipes=BASE, anchor="real", seeds=[0, 1, 2],
                               regimes=[Regime("full", 0)])
    _ship(tmp_path / "repo", main, _rows("reference", 0.0), to_dict(main))
    out = tmp_path / "out"
    cfg = ReidReferenceConfig(out=str(out), recipes=BASE, anchor="real", seeds=[0, 1, 2], regimes=[Regime("full", 0)],
                              package="reid/reference/48ch", reuse=main.package)
    shipped = Shipped(cfg)
    assert {k[2] for k in shipped.pinned} == {"real", "cutpaste"}
    assert "and its 6 rows without the generator over the same runs here" in shipped.summary

    def one_run(c, recipe, seed, data, shipped):
        return ({"recipe": recipe.name, "world": "reference", "regime": "full", "seed": seed, "rank1": 0.9,
                 "mAP": 0.8}, 1.0, False)

    monkeypatch.setattr(reference_reid, "_one_run", one_run)
    monkeypatch.setattr(reference_reid, "write_outputs", lambda *a, **k: None)
    reference_reid.run(cfg, progress=False, log=lambda *a: None, only=["cutpaste"], fresh=["cutpaste"])
    assert json.loads((out / "fresh.json").read_text()) == ["cutpaste"]
    later = Shipped(cfg)  # no --fresh given this time
    assert {k[2] for k in later.pinned} == {"real"} and all(k[2] != "cutpaste" for k in later.rows)
    (out / "fresh.json").write_text('{"cutpaste": 1}')
    with pytest.raises(UserError, match="fresh.json: not a JSON list of recipe names"):
        Shipped(cfg)


def test_the_seconds_of_reused_runs_stay_in_the_tables_provenance(tmp_path, monkeypatch):
    """The table written from rows of a shipped table keeps the seconds those runs trained (their provenance's
    run_seconds), beside the seconds of the runs here: a package made on a machine that trained few of its runs
    keeps the time of the rest."""
    monkeypatch.setattr(recipes_module, "REPO", tmp_path / "repo")
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE, anchor="real", seeds=[0, 1, 2],
                              regimes=[Regime("full", 0)])
    _ship(tmp_path / "repo", cfg, [r for r in _rows("reference", 0.0) if r["recipe"] != "c+h"], to_dict(cfg))
    prov = tmp_path / "repo" / cfg.package / "provenance.json"
    prov.write_text(json.dumps(json.loads(prov.read_text()) | {"run_seconds": {
        "reference/full/real/seed0": 100.0, "full/cutpaste/seed1": 250.0}}))  # the second as a table before worlds
    shipped = Shipped(cfg)
    written = {}
    monkeypatch.setattr(reference_reid, "write_outputs", lambda c, rows, times, *a: written.update(times))
    rows = [shipped.rows[k] for k in sorted(shipped.rows)]
    reference_reid._write(cfg, rows, {"reference/full/cutpaste/seed2": 300.0}, "cmd", shipped)
    assert written == {"reference/full/real/seed0": 100.0, "reference/full/cutpaste/seed1": 250.0,
                       "reference/full/cutpaste/seed2": 300.0}


def test_a_filtered_run_whose_anchor_row_is_shipped_trains_the_anchor_here_first(tmp_path, monkeypatch):
    """The filter scores with the anchor's model of the same seed; where the anchor's row came from the shipped table,
    that model is not on this machine: the filtered run trains the anchor's run here first, then itself."""
    from reid.ablation import stage_dir

    filtered = Recipe("h-f", setting="real+remix", generated="hybrid", filter=True)
    cfg = ReidReferenceConfig(out=str(tmp_path / "out"), recipes=BASE + [filtered], anchor="real", seeds=[0],
                              regimes=[Regime("full", 0)], worlds=[World("reference")])
    logs: list[str] = []
    regime_data = GeneratedData(cfg, cfg.worlds[0], cfg.regimes[0], False, logs.append)
    model = stage_dir(reference_reid._runs(cfg, cfg.worlds[0], cfg.regimes[0], "real"), "real", 0) / "state.pt"
    trained: list[str] = []

    def run_ablation(acfg, progress=False):  # what each run trains, in order; the anchor's leaves its model
        trained.append(acfg)
        if acfg == "real":
            model.parent.mkdir(parents=True)
            model.write_bytes(b"weights")
        return [{"rank1": 0.5}]

    monkeypatch.setattr(reference_reid, "_found_row", lambda *a, **k: ("", None))  # neither finished nor shipped
    monkeypatch.setattr(reference_reid, "_ablation_config", lambda cfg, recipe, *a, **k: recipe.name)
    monkeypatch.setattr(reference_reid, "run_ablation", run_ablation)
    monkeypatch.setattr(reference_reid, "_row", lambda recipe, *a: {"recipe": recipe.name})
    row, _, shipped = reference_reid._one_run(cfg, filtered, 0, regime_data)
    assert trained == ["real", "h-f"] and row == {"recipe": "h-f"} and not shipped
    assert logs == ["[reference/full] real seed 0: its row is shipped, its model is not here: trained here for h-f's "
                    "filter"]
    reference_reid._one_run(cfg, filtered, 0, regime_data)  # the model is here now: the anchor is not trained again
    assert trained == ["real", "h-f", "h-f"]
