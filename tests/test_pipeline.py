import json
import re

import pytest
from conftest import run_cli

HYBRID = ["generated=hybrid", "combined_share=0", "reference_recipe=''"]  # the demo with the hybrid alone


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    rc, out, err = run_cli("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={tmp_path / 'demo'}",
                           "--quiet", cwd=None)
    assert rc == 0, err[-3000:]
    demo = tmp_path / "demo"
    report = (demo / "report.md").read_text()
    for fig in re.findall(r"\]\(figures/([^)]+)\)", report):
        assert (demo / "figures" / fig).exists(), fig
    assert len(re.findall(r"\]\(figures/", report)) == 7
    # the Virtual Market's gallery, linked from the report, and its figure of what made a few images
    assert "](gallery/index.html)" in report and (demo / "gallery" / "index.html").is_file()
    assert json.loads((demo / "gallery" / "gallery.json").read_text())["items"] == len(
        (demo / "virtual_market" / "manifest.csv").read_text().splitlines()) - 1
    # every number of the ablation table comes from the run's own results
    results = (demo / "reid" / "results.md").read_text()
    assert results in report
    assert (demo / "stage1" / "eval" / "metrics.md").read_text() in report
    assert (demo / "stage2" / "eval" / "metrics.md").read_text() in report
    times = json.loads((demo / "times.json").read_text())
    assert set(times) >= {"data", "stage1", "pose", "stage2", "build", "gallery", "reid"}
    # a rerun reuses every finished stage
    rc, out, err = run_cli("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}")
    assert rc == 0, err[-3000:]
    assert out.count("reusing") >= 4


@pytest.mark.slow
def test_pipeline_with_reference_checkpoints(tmp_path, capsys):
    """The default: the shipped reference models, nothing trained but the re-ID baselines; here with the hybrid as
    the generated images (the from-scratch test has the builder's remixes): the real people over plates the
    installed stage I decodes, at the re-ID size, with their real pids. The run goes through the console script;
    the rerun and the refusals run in this process (``run_main``: no second start of Python and torch)."""
    import pandas as pd
    from conftest import run_main

    demo = tmp_path / "demo"
    args = ("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}", "--set", "from_scratch=false",
            "--set", "generated=hybrid", "--quiet")
    rc, out, err = run_cli(*args)
    assert rc == 0, err[-3000:]
    assert not (demo / "stage1" / "state.pt").exists()  # installed, not trained
    m = pd.read_csv(demo / "virtual_market" / "manifest.csv")
    assert (m.origin == "hybrid").all() and (m.pid == [int(p.split("/")[-1][:4]) for p in m.source]).all()
    report = (demo / "report.md").read_text()
    assert "over generated background plates (hybrid)" in report
    assert "](gallery/index.html)" in report and "](figures/triplets.png)" in report
    assert "the reference checkpoints shipped with the package" in report
    assert (demo / "stage1" / "eval" / "metrics.md").read_text() in report
    for fig in re.findall(r"\]\(figures/([^)]+)\)", report):
        assert (demo / "figures" / fig).exists(), fig
    rc, out, err = run_main(capsys, *args[:-1])
    assert rc == 0, err[-3000:]
    assert "reusing" in out
    # one output folder holds one kind of run: from scratch on top of reference models is refused
    rc, out, err = run_main(capsys, "pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}",
                            "--from-scratch")
    assert rc == 2 and "reference checkpoints" in err and err.count("\n") == 1
    rc, out, err = run_main(capsys, "pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}", "--set",
                            "generated=remixes")
    assert rc == 2 and "generated" in err and "remix, hybrid, inpaint" in err
    # a run installed from other checkpoints (an older shipped generator) is not continued with these
    stamp = json.loads((demo / "reference.json").read_text())
    stamp["sha256"]["stage1.pt"] = "0" * 64
    (demo / "reference.json").write_text(json.dumps(stamp))
    before = sorted(p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file())
    rc, out, err = run_main(capsys, *args)
    assert rc == 2 and "other reference checkpoints" in err and "stage1.pt sha256 000000000000" in err, err
    assert err.count("\n") == 1
    assert sorted(p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()) == before


def test_pipeline_refuses_simmarket_of_other_settings(tmp_path):
    """A data folder from an earlier run with other SimMarket settings is refused, not silently reused."""
    from augment.jobs.steps import simulate_data
    from generator.errors import UserError

    root = tmp_path / "sim"
    simulate_data(((root, (64, 32)),), 8, 0, progress=False, log=lambda *a: None)
    simulate_data(((root, (64, 32)),), 8, 0, progress=False, log=lambda *a: None)  # the same: reused
    with pytest.raises(UserError, match="train_cameras.*delete"):
        simulate_data(((root, (64, 32)),), 8, 0, progress=False, log=lambda *a: None, train_cameras=2)
    with pytest.raises(UserError, match="'height': 64"):
        simulate_data(((root, (128, 64)),), 8, 0, progress=False, log=lambda *a: None)
    from generator.simmarket.simulate import simulate

    simulate(root, 8, seed=0, size=(64, 32), overwrite=True, progress=False, style="textured")
    with pytest.raises(UserError, match="'style': 'textured'"):
        simulate_data(((root, (64, 32)),), 8, 0, progress=False, log=lambda *a: None)


def _fake_reference(ref, diffs):
    """A reference ablation of 5 seeds: the hybrid (the demo's recipe) beats real by ``diffs`` rank-1 points (and 1
    mAP point); remix-s50 by 3 and 1; cut-and-paste scores 20 - seed rank-1."""
    import pandas as pd

    rows = []
    for seed, d in enumerate(diffs):
        common = {"regime": "cameras2", "seed": seed, "transforms": "random_flip", "filter": False}
        rows.append({**common, "recipe": "real", "setting": "real", "generated": "", "share": 0.0, "label": "",
                     "rank1": 0.05, "mAP": 0.07})
        rows.append({**common, "recipe": "hybrid", "setting": "real+remix", "generated": "hybrid", "share": 0.25,
                     "label": "smooth", "rank1": 0.05 + d / 100, "mAP": 0.08})
        rows.append({**common, "recipe": "remix-s50", "setting": "real+remix", "generated": "remix", "share": 0.5,
                     "label": "smooth", "rank1": 0.08, "mAP": 0.08})
        rows.append({**common, "recipe": "cutpaste", "setting": "real+remix", "generated": "cutpaste", "share": 0.25,
                     "label": "smooth", "rank1": 0.20 - seed / 100, "mAP": 0.10})
    ref.mkdir()
    pd.DataFrame(rows).to_csv(ref / "ablation.csv", index=False)
    (ref / "ablation.md").write_text("| the reference table |\n")
    train = {"size": [64, 32], "model": "osnet_x0_25", "loss": "softmax", "epochs": 30, "lr": 0.003, "batch": 32}
    prov = {"command": "vmarket reference-reid", "runs": 10, "date": "2026-11-26", "run_devices": {"cpu": 10},
            "config": {"sim_ids": 200, "sim_seed": 0, "train": train,
                       "regimes": [{"name": "full", "train_cameras": 0}, {"name": "cameras2", "train_cameras": 2}],
                       "recipes": [{"name": "real"}, {"name": "remix-s50", "generated": "remix", "epsilon": 0.1},
                                   {"name": "hybrid", "generated": "hybrid", "epsilon": 0.1},
                                   {"name": "cutpaste", "generated": "cutpaste", "epsilon": 0.1}]}}
    (ref / "provenance.json").write_text(json.dumps(prov))


def test_report_sets_the_demo_beside_the_reference(tmp_path):
    """The demo's paired difference against the reference's: separated when beyond twice the reference's seed
    spread, said to be inseparable when within it, and not compared at all when the settings differ."""
    import pandas as pd

    from augment.jobs.pipeline import PipelineConfig
    from augment.jobs.report import reid_section
    from generator.config import load_config
    from reid.ablation import AblationConfig

    out, ref = tmp_path / "demo", tmp_path / "ref"
    (out / "reid").mkdir(parents=True)
    (out / "reid" / "results.md").write_text("| the demo table |\n")
    _fake_reference(ref, [10, 12, 14, 11, 13])  # spread: std 1.6 points
    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [*HYBRID, "cutpaste_baseline=false"])
    rcfg = load_config(AblationConfig, "configs/demo/reid.yaml")

    def section(diff, cfg=cfg, rcfg=rcfg):
        pd.DataFrame([{"setting": "real", "seed": 0, "rank1": 0.04, "mAP": 0.07},
                      {"setting": "real+remix", "seed": 0, "rank1": 0.04 + diff / 100, "mAP": 0.09}]
                     ).to_csv(out / "reid" / "results.csv", index=False)
        return reid_section(out, cfg, rcfg, reference=ref)

    text = section(11.0)  # the demo's configs: the hybrid at a quarter of every batch
    assert "+11.0 rank-1" in text and "recipe `hybrid`" in text and "+12.0 ± 0.7 rank-1" in text
    assert "separates the two on its own" in text and "| the reference table |" in text
    # and against the baseline that needs no generator: (5 + d) - (20 - seed) = -5, -2, +1, -1, +2 points
    assert "**Against cut-and-paste**" in text
    assert "rank-1 18.0): `hybrid` -1.0 ± 1.2 rank-1, -2.0 ± 0.0 mAP" in text
    assert "| the demo table |" in text
    assert "cannot separate the two on its own" in section(2.0)
    # a demo of generator remixes at half of every batch is set beside the reference's remixes, not its hybrid
    remix = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [*HYBRID, "generated=remix",
                                                                             "cutpaste_baseline=false"])
    text = section(11.0, remix, load_config(AblationConfig, "configs/demo/reid.yaml", ["virtual_share=0.5"]))
    assert "recipe `remix-s50`" in text and "`hybrid`" not in text and "+3.0 ± 0.0 rank-1" in text
    other = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [*HYBRID, "sim_ids=100",
                                                                            "cutpaste_baseline=false"])
    text = section(11.0, other)
    assert "not the same experiment" in text and "SimMarket identities: 200 there, 100 here" in text
    # the reference checkpoints this run installed against those the ablation's generated images came from
    prov = json.loads((ref / "provenance.json").read_text())
    (ref / "provenance.json").write_text(json.dumps(prov | {"generator": {"stage1.pt": "b" * 64}}))
    (out / "reference.json").write_text(json.dumps({"sha256": {"stage1.pt": "a" * 64}}))
    text = section(11.0)
    assert "not the same experiment" in text and "+12.0 ± 0.7 rank-1" not in text
    assert "reference checkpoints (sha256): stage1.pt bbbbbbbbbbbb there, stage1.pt aaaaaaaaaaaa here" in text
    (out / "reference.json").write_text(json.dumps({"sha256": {"stage1.pt": "b" * 64}}))
    assert "+12.0 ± 0.7 rank-1" in section(11.0)
    # an ablation shipped in a folder of the reference one, made with the checkpoints installed here, is the one set
    # beside the run (the same experiment); the reference one stays where none is
    _fake_reference(ref / "48ch", [20, 20, 20, 20, 20])
    prov = json.loads((ref / "48ch" / "provenance.json").read_text())
    (ref / "48ch" / "provenance.json").write_text(json.dumps(prov | {"generator": {"stage1.pt": "a" * 64}}))
    assert "+12.0 ± 0.7 rank-1" in section(11.0) and "48ch" not in section(11.0)
    (out / "reference.json").write_text(json.dumps({"sha256": {"stage1.pt": "a" * 64}}))
    text = section(11.0)
    assert "+20.0 ± 0.0 rank-1" in text and f"shipped with the package, `{ref / '48ch'}/`" in text
    assert "not the same experiment" not in text


def test_report_sets_the_generated_recipe_beside_its_own_cut_and_paste_run(tmp_path):
    """With the cut-and-paste run beside the demo's (reid-cutpaste/), the report gives both tables, this run's
    generated - cut-and-paste, and says plainly whether one seed separates them against the reference ablation's
    spread of the same pair (hybrid - cutpaste there: -5, -2, +1, -1, +2 points; std 2.7)."""
    import pandas as pd

    from augment.jobs.pipeline import PipelineConfig, baseline_config
    from augment.jobs.report import reid_section
    from generator.config import load_config
    from reid.ablation import AblationConfig

    out, ref = tmp_path / "demo", tmp_path / "ref"
    for run in ("reid", "reid-cutpaste"):
        (out / run).mkdir(parents=True)
        (out / run / "results.md").write_text(f"| setting | {run} |\n| real+remix | x |\n")
    _fake_reference(ref, [10, 12, 14, 11, 13])
    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [*HYBRID, f"out={out}"])
    rcfg = load_config(AblationConfig, "configs/demo/reid.yaml")
    paste = baseline_config(cfg, rcfg)
    assert paste.settings == ["real+remix"] and paste.remix_root == str(out / "cutpaste")
    assert (paste.virtual_share, paste.virtual_label, paste.seeds) == (rcfg.virtual_share, rcfg.virtual_label,
                                                                       rcfg.seeds)

    def section(generated_minus_paste):
        pd.DataFrame([{"setting": "real", "seed": 0, "rank1": 0.04, "mAP": 0.07},
                      {"setting": "real+remix", "seed": 0, "rank1": 0.20, "mAP": 0.15}]
                     ).to_csv(out / "reid" / "results.csv", index=False)
        pd.DataFrame([{"setting": "real+remix", "seed": 0, "rank1": 0.20 - generated_minus_paste / 100,
                       "mAP": 0.15}]).to_csv(out / "reid-cutpaste" / "results.csv", index=False)
        return reid_section(out, cfg, rcfg, reference=ref)

    text = section(8.0)
    assert "| setting | reid-cutpaste |\n| real+cutpaste | x |" in text  # its table, its setting named
    assert "real+remix − real+cutpaste = +8.0 rank-1, +0.0 mAP" in text
    assert "recipe `hybrid` against `cutpaste`): -1.0 ± 1.2 rank-1" in text
    assert text.count("separates the two on its own") == 3  # each against real, and against cut-and-paste
    text = section(2.0)
    assert "real+remix − real+cutpaste = +2.0 rank-1" in text and "cannot separate the two on its own" in text
    # cut-and-paste itself is set beside real-only, as the reference ablation's `cutpaste` recipe
    assert "real+cutpaste − real = +14.0 rank-1" in text and "recipe `cutpaste` against `real`" in text
    # an ablation made with other reference checkpoints: the generated recipe is not set against it, cut-and-paste
    # (no generator) still is
    prov = json.loads((ref / "provenance.json").read_text())
    (ref / "provenance.json").write_text(json.dumps(prov | {"generator": {"stage1.pt": "b" * 64}}))
    (out / "reference.json").write_text(json.dumps({"sha256": {"stage1.pt": "a" * 64}}))
    text = section(2.0)
    assert "`hybrid` is not the same experiment (reference checkpoints (sha256)" in text
    assert "recipe `hybrid` against `cutpaste`" not in text
    assert "real+cutpaste − real = +14.0 rank-1" in text and "recipe `cutpaste` against `real`" in text


def test_a_combined_demo_recipe_is_cut_and_paste_with_the_generated_images_on_top(tmp_path):
    from augment.jobs.pipeline import PipelineConfig, baseline_config, combined_config
    from generator.config import load_config
    from generator.errors import UserError
    from reid.ablation import AblationConfig

    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [f"out={tmp_path}", "combined_share=0.125"])
    rcfg = load_config(AblationConfig, "configs/demo/reid.yaml")
    combined = combined_config(cfg, rcfg, "remix")
    assert combined.remix_root == str(tmp_path / "cutpaste") and combined.virtual_share == rcfg.virtual_share
    (more,) = combined.more_generated
    assert (more.root, more.kind, more.share, more.label) == (str(tmp_path / "virtual_market"), "remix", 0.125,
                                                               rcfg.virtual_label)
    # the cut-and-paste run beside it is cut-and-paste alone, at the same share
    paste = baseline_config(cfg, combined)
    assert paste.more_generated == [] and paste.remix_root == str(tmp_path / "cutpaste")
    with pytest.raises(UserError, match="combined_share: 0.8 with the reid config's virtual_share 0.25"):
        combined_config(load_config(PipelineConfig, None, ["combined_share=0.8"]), rcfg, "remix")


def _combined_demo_runs(out):
    """The combined demo's two re-ID runs under ``out``, one seed: real 5 and real+remix 30 rank-1, and beside them
    cut-and-paste alone at 25."""
    import pandas as pd

    for run, r1 in (("reid", 0.30), ("reid-cutpaste", 0.25)):
        (out / run).mkdir(parents=True)
        (out / run / "results.md").write_text(f"| {run} |\n")
        pd.DataFrame([{"setting": "real", "seed": 0, "rank1": 0.05, "mAP": 0.07}] * (run == "reid")
                     + [{"setting": "real+remix", "seed": 0, "rank1": r1, "mAP": 0.2}]
                     ).to_csv(out / run / "results.csv", index=False)


def test_report_of_the_combined_demo_names_its_reference_recipe(tmp_path):
    """The demo's default: cut-and-paste with the generator's remixes on top, set beside the reference ablation's
    recipe the config names (cutpaste+remix-newpose), against real-only and against cut-and-paste."""
    import pandas as pd

    from augment.jobs.pipeline import PipelineConfig
    from augment.jobs.report import reid_section
    from generator.config import load_config
    from reid.ablation import AblationConfig

    out, ref = tmp_path / "demo", tmp_path / "ref"
    _fake_reference(ref, [10, 12, 14, 11, 13])
    rows = pd.read_csv(ref / "ablation.csv")
    combined = rows[rows.recipe == "cutpaste"].assign(recipe="cutpaste+remix-newpose",
                                                       generated="cutpaste+remix-newpose", share="0.25+0.125",
                                                       rank1=lambda d: d.rank1 + 0.03)
    pd.concat([rows, combined]).to_csv(ref / "ablation.csv", index=False)
    _combined_demo_runs(out)
    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [f"out={out}"])
    assert cfg.combined_share and cfg.reference_recipe == "cutpaste+remix-newpose"
    text = reid_section(out, cfg, load_config(AblationConfig, "configs/demo/reid.yaml"), reference=ref)
    assert "recipe `cutpaste+remix-newpose` against `real`" in text
    assert "recipe `cutpaste+remix-newpose` against `cutpaste`): +3.0 ± 0.0 rank-1" in text
    assert "real+remix − real+cutpaste = +5.0 rank-1" in text


@pytest.mark.parametrize("generated, fg_mode, key", [
    ("remix", "real", "remix_root"),  # the builder's remixes of the real identities, real pids
    ("remix", "sample", "virtual_root"), ("remix", "remix", "virtual_root"),  # new identities: classes of their own
    # the pasted kinds show the real people whatever the (unused) build config says
    ("hybrid", "sample", "remix_root"), ("inpaint", "remix", "remix_root"), ("hybrid", "real", "remix_root"),
])
def test_the_generated_images_are_labelled_by_what_made_them(generated, fg_mode, key):
    from augment.jobs.pipeline import generated_key

    assert generated_key(generated, fg_mode) == key


def test_report_sets_the_reference_recipe_beside_cut_and_paste_trained_twice_as_long(tmp_path):
    """Where the reference ablation ran the control for steps (``real->cutpaste``) in the demo's regime, the report
    gives the recipe against it too: a gain at the one-stage schedule may be what more steps alone buy."""
    import pandas as pd

    from augment.jobs.pipeline import PipelineConfig
    from augment.jobs.report import reid_section
    from generator.config import load_config
    from reid.ablation import AblationConfig

    out, ref = tmp_path / "demo", tmp_path / "ref"
    (out / "reid").mkdir(parents=True)
    (out / "reid" / "results.md").write_text("| the demo table |\n")
    _fake_reference(ref, [10, 12, 14, 11, 13])
    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [*HYBRID, "cutpaste_baseline=false"])
    rcfg = load_config(AblationConfig, "configs/demo/reid.yaml")
    pd.DataFrame([{"setting": "real", "seed": 0, "rank1": 0.04, "mAP": 0.07},
                  {"setting": "real+remix", "seed": 0, "rank1": 0.15, "mAP": 0.09}]
                 ).to_csv(out / "reid" / "results.csv", index=False)
    assert "twice as long" not in reid_section(out, cfg, rcfg, reference=ref)  # no such control shipped
    rows = pd.read_csv(ref / "ablation.csv")
    longer = rows[rows.recipe == "cutpaste"].assign(recipe="real->cutpaste", setting="real->real+remix", rank1=0.25)
    pd.concat([rows, longer]).to_csv(ref / "ablation.csv", index=False)
    text = reid_section(out, cfg, rcfg, reference=ref)
    # hybrid 0.15, 0.17, 0.19, 0.16, 0.18 against 0.25: -10, -8, -6, -9, -7 points; mAP 0.08 against 0.10
    assert "**Against cut-and-paste trained twice as long** (reference ablation, `real->cutpaste`" in text
    assert "5 seeds): `hybrid` -8.0 ± 0.7 rank-1, -2.0 ± 0.0 mAP" in text


def test_report_gives_the_reference_pair_in_its_other_worlds_and_at_a_longer_schedule(tmp_path):
    """Beside the demo's world and schedule, the report gives the reference ablation's same pair (the recipe against
    cut-and-paste) in the table's other worlds, and in a table shipped with it that trained the same generator's
    recipes on the same data for more epochs; tables of another generator, of as many epochs or of another learning
    rate are left out."""
    import pandas as pd

    from augment.jobs.pipeline import PipelineConfig
    from augment.jobs.report import reid_section
    from generator.config import load_config
    from reid.ablation import AblationConfig

    out, ref = tmp_path / "demo", tmp_path / "ref"
    _fake_reference(ref, [10, 12, 14, 11, 13])
    rows = pd.read_csv(ref / "ablation.csv").assign(world="reference")
    paste = rows[rows.recipe == "cutpaste"]
    combined = paste.assign(recipe="cutpaste+remix-newpose", generated="cutpaste+remix-newpose", share="0.25+0.125",
                            rank1=lambda d: d.rank1 + 0.03)
    # the unseen world: +1..+5 points over cut-and-paste, seed by seed (mean 3.0, SE 0.7)
    unseen = pd.concat([paste, combined.assign(rank1=lambda d: d.rank1 - 0.03 + (d.seed + 1) / 100)]
                       ).assign(world="seed2-textured")
    pd.concat([rows, combined, unseen]).to_csv(ref / "ablation.csv", index=False)
    prov = json.loads((ref / "provenance.json").read_text())
    prov["generator"] = {"stage1.pt": "a" * 64}
    prov["config"]["worlds"] = [{"name": "reference", "sim_seed": 0}, {"name": "seed2-textured", "sim_seed": 2}]
    (ref / "provenance.json").write_text(json.dumps(prov))
    train = prov["config"]["train"]
    for name, generator, gain, changed in (("long", prov["generator"], -0.01, {"epochs": 60}),
                                           ("other", {"stage1.pt": "b" * 64}, 0.09, {"epochs": 60}),
                                           ("short", prov["generator"], 0.07, {}),
                                           ("lr", prov["generator"], 0.08, {"epochs": 60, "lr": 0.01})):
        table = ref / name
        table.mkdir()
        pd.concat([paste, paste.assign(recipe="cutpaste+remix-newpose", rank1=paste.rank1 + gain)]
                  ).assign(world="reference").to_csv(table / "ablation.csv", index=False)
        config = {**prov["config"], "train": {**train, **changed}}
        (table / "provenance.json").write_text(json.dumps({**prov, "generator": generator, "config": config}))
    _combined_demo_runs(out)
    (out / "reference.json").write_text(json.dumps({"sha256": prov["generator"]}))
    cfg = load_config(PipelineConfig, "configs/demo/pipeline.yaml", [f"out={out}"])
    text = reid_section(out, cfg, load_config(AblationConfig, "configs/demo/reid.yaml"), reference=ref)
    assert ("**In the reference ablation's other worlds** (this run's is `reference`, the world the shipped generator "
            "was trained on;") in text
    assert "`cutpaste+remix-newpose` against `cutpaste`, regime `cameras2`: `seed2-textured` +3.0 ± 0.7 rank-1" in text
    assert "**Re-ID trained for 60 epochs** instead of 30 (`" in text
    assert "regime `cameras2`: `reference` -1.0 ± 0.0 rank-1" in text
    assert not any(f"+{g}.0 ± 0.0 rank-1" in text for g in (7, 8, 9))  # as many epochs, another lr, another generator
    prov.pop("generator")  # a table that records no generator has no longer table of the same one
    (ref / "provenance.json").write_text(json.dumps(prov))
    (out / "reference.json").unlink()
    assert "Re-ID trained for" not in reid_section(out, cfg, load_config(AblationConfig, "configs/demo/reid.yaml"),
                                                   reference=ref)
