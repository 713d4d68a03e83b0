"""The reference docs that are rendered from the code are up to date."""
from augment.cli import build_parser
from augment.cli.reference_doc import DOC, render


def test_cli_reference_is_rendered_from_the_parser():
    assert DOC.read_text() == render(), "docs/cli.md is stale: run `make docs`"


def test_cli_reference_names_every_command_and_option():
    text = render()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        assert f"## vmarket {name}\n" in text
        for action in sp._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}" in text, (name, opt)


def test_a_stale_reference_is_reported(tmp_path, monkeypatch, capsys):
    from augment.cli import reference_doc

    stale = tmp_path / "cli.md"
    stale.write_text(render().replace("--per-image", "--per-picture"))
    monkeypatch.setattr(reference_doc, "DOC", stale)
    assert reference_doc.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert reference_doc.main([]) == 0 and reference_doc.main(["--check"]) == 0
    assert stale.read_text() == render()


def test_readme_headline_table_matches_the_shipped_ablation():
    """The README's small table quotes reid/reference/ablation.csv: its numbers are the CSV's, rounded as shown."""
    from pathlib import Path

    from augment.jobs.ablation_tables import read_ablation
    from reid.ablation import paired

    repo = Path(__file__).resolve().parents[1]
    every = read_ablation(repo / "reid" / "reference" / "ablation.csv")
    df = every[every.world == "reference"]  # the first table's world: the one the generator was trained on
    readme = (repo / "README.md").read_text()
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]]
           for line in readme.splitlines() if line.startswith("| ") and line.count("|") == 4}

    def mean(regime, recipe, rows=df):
        return f"{100 * rows[(rows.regime == regime) & (rows.recipe == recipe)].rank1.mean():.1f}"

    def diff(regime, recipe, rows=df):
        m, se, _ = paired(rows, regime, recipe, "cutpaste", "rank1")
        return f"{100 * m:+.1f} ± {100 * se:.1f}"

    real = row["real only, best standard transforms"]
    assert real == [mean("full", "real"), mean("cameras2", "real")]
    cut = row["cut-and-paste: the real person pasted into another camera's image (no generator)"]
    assert cut == [mean("full", "cutpaste"), mean("cameras2", "cutpaste")]
    generated = df.generated.fillna("")
    alone = df[generated.str.contains("hybrid|inpaint|mixed|remix|new") & ~generated.str.contains("cutpaste")]
    # the generator on top of the row above's cut-and-paste (at 0.25); on top of more pasting (cutpaste-s37+...)
    # has a sentence of its own, against pasting at that share
    combined = df[generated.str.startswith("cutpaste+") & ~df.recipe.str.startswith("cutpaste-s")]
    names = {"inpaint hybrid": "inpaint", "hybrid": "hybrid", "mixed hybrid": "mixed",
             "+ the hybrid": "cutpaste+hybrid", "+ remixes in new poses": "cutpaste+remix-newpose"}
    for label, rows in (("best generator recipe alone", alone), ("best: that cut-and-paste with the generator on top",
                                                                 combined)):
        for cell, regime in zip(row[label], ("full", "cameras2"), strict=True):
            value, recipe = cell.split(" (")[0].split(", ")
            name = names[recipe]
            assert value == mean(regime, name)
            assert f"({diff(regime, name)}" in cell
            g = rows[rows.regime == regime].groupby("recipe")
            complete = g.seed.nunique() == df.seed.nunique()  # a recipe still running its seeds is not compared yet
            assert g.rank1.mean()[complete].idxmax() == name  # it is the best one
    # the second world: the recipes the reference world picked, measured where neither they nor the generator were
    # tuned (the pick is not made again there)
    picked = {regime: names[c.split(" (")[0].split(", ")[1]]
              for c, regime in zip(row["best: that cut-and-paste with the generator on top"], ("full", "cameras2"),
                                   strict=True)}
    second = every[every.world == "seed1-textured"]
    assert row["real only"] == [mean("full", "real", second), mean("cameras2", "real", second)]
    assert row["cut-and-paste"] == [mean("full", "cutpaste", second), mean("cameras2", "cutpaste", second)]
    for cell, regime in zip(row["the generator alone: the hybrid"], ("full", "cameras2"), strict=True):
        assert cell == f"{mean(regime, 'hybrid', second)} ({diff(regime, 'hybrid', second)})"
    for cell, regime in zip(row["cut-and-paste with the generator on top, as the reference world picked"],
                            ("full", "cameras2"), strict=True):
        value, recipe = cell.split(" (")[0].split(", ")
        assert names[recipe] == picked[regime] and value == mean(regime, picked[regime], second)
        assert f"({diff(regime, picked[regime], second)}" in cell
    for cell, regime in zip(row["control: more pasted images instead (19 per batch, the combined recipes' total)"],
                            ("full", "cameras2"), strict=True):
        assert cell == f"{mean(regime, 'cutpaste-s37', second)} ({diff(regime, 'cutpaste-s37', second)})"
    for rows in (df, second):  # the headline's sentence on new identities on top of cut-and-paste, both worlds
        for regime in ("full", "cameras2"):
            assert diff(regime, "cutpaste+new", rows) in readme.split("`cutpaste+new`")[1].split("Alone,")[0]
        assert diff("cameras2", "cutpaste-s50", rows) in readme.split("`cutpaste-s50`")[1].split("Alone,")[0]
        for recipe in ("cutpaste-s37+remix-newpose", "cutpaste-s37+hybrid"):
            m, se, _ = paired(rows, "cameras2", recipe, "cutpaste-s50", "rank1")
            assert f"{100 * m:+.1f} ± {100 * se:.1f}" in readme.split(f"`{recipe}`")[1].split("Alone,")[0]
    m, se, _ = paired(second, "cameras2", "cutpaste-s37+hybrid", "cutpaste-s50", "mAP")
    assert f"({100 * m:+.1f} ± {100 * se:.1f} mAP)" in readme.split("`cutpaste-s37+hybrid`")[1].split("Alone,")[0]
    seeds = second[second.recipe.isin(["real", "cutpaste", "hybrid", *picked.values()])].groupby(
        ["regime", "recipe"]).seed.nunique()
    assert f"{seeds.min()} to {seeds.max()} seeds" in readme or f"{seeds.min()} seeds" in readme
