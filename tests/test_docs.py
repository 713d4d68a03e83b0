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


PLATES = "the real person over the generator's plates: the hybrid"  # the hybrid rows' label


def test_readme_headline_table_matches_the_shipped_ablation():
    """The README's two small tables and its headline quote the shipped ablations: rows marked 32ch
    reid/reference/ablation.csv, rows marked 48ch reid/reference/48ch/ablation.csv (the shipped generator); their
    numbers are the CSVs', rounded as shown."""
    from pathlib import Path

    import pandas as pd

    from augment.jobs.ablation_tables import read_ablation
    from reid.ablation import paired

    repo = Path(__file__).resolve().parents[1]
    old, new = (read_ablation(repo / "reid" / "reference" / p / "ablation.csv") for p in ("", "48ch"))
    readme = (repo / "README.md").read_text()
    first, second_table = readme.split("## The result in one table")[1].split("| second world |")
    second_table, third_table = second_table.split("| new world |")

    def rows_of(text):
        return {line.split("|")[1].strip().strip("*"): [c.strip().strip("*") for c in line.split("|")[2:4]]
                for line in text.splitlines() if line.startswith("| ") and line.count("|") == 4}

    def mean(regime, recipe, rows):
        return f"{100 * rows[(rows.regime == regime) & (rows.recipe == recipe)].rank1.mean():.1f}"

    def diff(regime, recipe, rows, against="cutpaste", metric="rank1"):
        m, se, _ = paired(rows, regime, recipe, against, metric)
        return f"{100 * m:+.1f} ± {100 * se:.1f}"

    def cell(regime, recipe, rows):
        return f"{mean(regime, recipe, rows)} ({diff(regime, recipe, rows)})"

    regimes = ("full", "cameras2")
    # the headline sentence: the 48ch remixes on top against cut-and-paste (rank-1 and mAP), against as many pasted
    # images, and image for image at pasting's best share; the 32ch ones against the same controls
    head = readme.split("**What the generator adds over cut-and-paste:**")[1].split("The full tables")[0]
    for world, table in (("reference", rows_of(first)), ("seed1-textured", rows_of(second_table))):
        o, n = old[old.world == world], new[new.world == world]
        real = table["real only, best standard transforms" if world == "reference" else "real only"]
        assert real == [mean(r, "real", o) for r in regimes] == [mean(r, "real", n) for r in regimes]
        paste = table["cut-and-paste: the real person pasted into another camera's image (no generator)"
                      if world == "reference" else "cut-and-paste"]
        assert paste == [mean(r, "cutpaste", o) for r in regimes] == [mean(r, "cutpaste", n) for r in regimes]
        assert table["cut-and-paste + remixes in new poses (48ch)"] == [cell(r, "cutpaste+remix-newpose", n)
                                                                         for r in regimes]
        assert table[f"{PLATES} (48ch)"] == [cell(r, "hybrid", n) for r in regimes]
        control = next(k for k in table if k.startswith("control: more pasted images instead"))
        assert table[control] == [cell(r, "cutpaste-s37", o) for r in regimes]
        for r in regimes:
            for metric in ("rank1", "mAP"):
                assert diff(r, "cutpaste+remix-newpose", n, metric=metric) in head
            assert diff(r, "cutpaste+remix-newpose", n, "cutpaste-s37") in head
        for metric in ("rank1", "mAP"):
            assert diff("cameras2", "cutpaste-s37+remix-newpose", n, "cutpaste-s50", metric) in head
        assert diff("cameras2", "cutpaste+remix-newpose", o, "cutpaste-s37") in head
        assert diff("cameras2", "cutpaste-s37+remix-newpose", o, "cutpaste-s50") in head
    # the 32-channel rows of the reference world: the best generator recipe alone, and on top of cut-and-paste (at
    # 0.25), among the recipes with every seed
    df, table = old[old.world == "reference"], rows_of(first)
    generated = df.generated.fillna("")
    alone = df[generated.str.contains("hybrid|inpaint|mixed|remix|new") & ~generated.str.contains("cutpaste")]
    combined = df[generated.str.startswith("cutpaste+") & ~df.recipe.str.startswith("cutpaste-s")]
    names = {"inpaint hybrid": "inpaint", "hybrid": "hybrid", "mixed hybrid": "mixed",
             "+ the hybrid": "cutpaste+hybrid", "+ remixes in new poses": "cutpaste+remix-newpose"}
    for label, rows in (("best generator recipe alone (32ch)", alone),
                        ("cut-and-paste at a quarter of each batch, the generator on top (32ch)", combined)):
        for text, regime in zip(table[label], regimes, strict=True):
            value, recipe = text.split(" (")[0].split(", ")
            assert value == mean(regime, names[recipe], df) and f"({diff(regime, names[recipe], df)}" in text
            g = rows[rows.regime == regime].groupby("recipe")
            complete = g.seed.nunique() == df.seed.nunique()  # a recipe still running its seeds is not compared yet
            assert g.rank1.mean()[complete].idxmax() == names[recipe]  # it is the best one
    second = old[old.world == "seed1-textured"]
    assert rows_of(second_table)[f"{PLATES} (32ch)"] == [cell(r, "hybrid", second) for r in regimes]
    quoted = new[(new.world == "seed1-textured")
                 & new.recipe.isin(["real", "cutpaste", "hybrid", "cutpaste+remix-newpose", "cutpaste-s37"])]
    seeds = pd.concat([quoted, second[second.recipe == "hybrid"]]).groupby(["regime", "recipe"]).seed.nunique()
    assert seeds.min() == seeds.max() and f"{seeds.min()} seeds per row" in readme
    # the world new to the shipped generator (seed2-textured): its rows, and the headline's pairs there
    third, table = new[new.world == "seed2-textured"], rows_of(third_table)
    assert table["real only, best standard transforms"] == [mean(r, "real", third) for r in regimes]
    assert table["real only, flip alone"] == [mean(r, "real-flip", third) for r in regimes]
    assert table["cut-and-paste"] == [mean(r, "cutpaste", third) for r in regimes]
    for label, recipe in ((f"{PLATES} (48ch)", "hybrid"),
                          ("cut-and-paste + the hybrid (48ch)", "cutpaste+hybrid"),
                          ("cut-and-paste + new identities (48ch)", "cutpaste+new"),
                          ("cut-and-paste + remixes in new poses (48ch)", "cutpaste+remix-newpose"),
                          ("control: more pasted images instead (19 per batch)", "cutpaste-s37"),
                          ("pasting at half of each batch", "cutpaste-s50"),
                          ("half of each batch pasted, 8 of those 32 images the generator's remixes instead (48ch)",
                           "cutpaste-s37+remix-newpose")):
        assert table[label] == [cell(r, recipe, third) for r in regimes]
    for r in regimes:
        for metric in ("rank1", "mAP"):
            assert diff(r, "cutpaste+remix-newpose", third, metric=metric) in head
            assert diff(r, "cutpaste-s37+remix-newpose", third, "cutpaste-s50", metric) in head
        assert diff(r, "cutpaste+remix-newpose", third, "cutpaste-s37") in head
    quoted = third[third.recipe.isin(["real", "real-flip", "cutpaste", "hybrid", "cutpaste+hybrid", "cutpaste+new",
                                      "cutpaste+remix-newpose", "cutpaste-s37", "cutpaste-s50",
                                      "cutpaste-s37+remix-newpose"])]
    seeds = quoted.groupby(["regime", "recipe"]).seed.nunique()
    assert len(seeds) == 20 and seeds.min() == seeds.max()
    # the summary at the top: cut-and-paste over real-only, the remixes on top of it and the longer control, both
    # regimes, in the reference world and in the world new to the generator
    short = readme.split("**In short.**")[1].split("\n\n")[0]
    ref = new[new.world == "reference"]
    long = read_ablation(repo / "reid" / "reference" / "48ch-long" / "ablation.csv")  # 60 epochs, both worlds
    assert long.groupby(["world", "regime", "recipe"]).seed.nunique().min() == 5  # the summary quotes no "so far"
    for r in regimes:
        for rows, recipe, against in ((ref, "cutpaste", "real"), (ref, "cutpaste+remix-newpose", "cutpaste"),
                                      (ref, "real->cutpaste", "cutpaste"),
                                      (third, "cutpaste+remix-newpose", "cutpaste"),
                                      (third, "real->cutpaste", "cutpaste"),
                                      (long[long.world == "seed2-textured"], "cutpaste+remix-newpose", "cutpaste"),
                                      (long[long.world == "reference"], "cutpaste+remix-newpose", "cutpaste")):
            assert diff(r, recipe, rows, against) in short, (r, recipe)
    # what the plates and the new identities add there, as the paragraph after the headline says
    after = readme.split("The generator's plates stay near cut-and-paste")[1].split("The full tables")[0]
    for r in regimes:
        assert diff(r, "hybrid", third) in after and diff(r, "cutpaste+new", third) in after
    assert diff("full", "cutpaste+new", third, "cutpaste-s37") in after
    assert diff("cameras2", "cutpaste+hybrid", third) in after
    assert f"{seeds.min()} seeds per row" in second_table  # the third table's intro ends the second's part
