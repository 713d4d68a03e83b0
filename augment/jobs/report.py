"""``report.md`` of a pipeline run: every number read from a file the run wrote, with its figures copied beside it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from augment.gallery.collect import read_dataset
from augment.gallery.figure import triplet_figure
from augment.jobs.ablation_tables import REFERENCE_WORLD, read_ablation
from augment.jobs.provenance import REPO, repo_relative
from augment.jobs.reid_recipes import uses_generator
from generator.config import from_dict
from generator.errors import UserError
from generator.io import atomic_write_text, load_checkpoint, read_json_object
from generator.models.stage1 import Stage1ModelConfig
from reid.ablation import paired


def _copy(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst.name


def _models_paragraph(out: Path, cfg, prov: dict | None) -> str:
    s1 = load_checkpoint(out / "stage1" / "snapshot.pt")
    m = from_dict(Stage1ModelConfig, s1["config"]["model"])
    size = f"{s1['config']['data']['size'][0]}x{s1['config']['data']['size'][1]}"
    if prov is None:
        return (f"Models: **trained from scratch in this run** (`--from-scratch`) inside the demo budget: stage I "
                f"{s1['step']} steps at {size}, {m.channels} channels, so the generator is small and briefly trained.")
    wall = prov["wall_time_s"]
    data = prov["data"]
    same = (data["identities"], data["seed"]) == (cfg.sim_ids, cfg.sim_seed)
    return (f"Models: **the reference checkpoints shipped with the package** "
            f"({cfg.reference or 'generator/reference/'}, "
            f"sha256-verified against its `provenance.json`), trained by `make reference`: "
            f"stage I {prov['steps']['stage1']} steps at {size}, {m.channels} channels "
            f"({prov.get('stage1_shipped', {}).get('snapshot', 'snapshot.pt')} of the "
            f"{s1['config']['train']['steps']}-step run that took {wall.get('stage1', 0) / 60:.0f} min); "
            f"the pose AE and stage II in "
            f"{(wall.get('pose', 0) + wall.get('stage2', 0)) / 60:.0f} min (machine: {prov['machine']['processor']}, "
            f"{prov['machine']['threads']} threads, CUDA {prov['machine']['cuda']}). "
            f"They were trained on SimMarket seed "
            f"{data['seed']} with {data['identities']} identities ({data['train_ids']} for training)"
            + (", the same data as this run's training split." if same else
               f", not this run's data (seed {cfg.sim_seed}, {cfg.sim_ids} identities).")
            + " `vmarket pipeline --from-scratch` trains every stage in the run instead.")


REFERENCE_REID = REPO / "reid" / "reference"


def check_reference_recipe(name: str, reference: Path = REFERENCE_REID) -> None:
    """A pipeline's ``reference_recipe`` names a recipe of the shipped reference ablation (when one is shipped)."""
    if not name or not (reference / "provenance.json").is_file():
        return
    names = [r["name"] for r in json.loads((reference / "provenance.json").read_text())["config"]["recipes"]]
    if name not in names:
        raise UserError(f"reference_recipe {name!r}: not a recipe of the reference ablation ({reference}); use one "
                        f"of {', '.join(names)}, or '' for the recipe of the same settings")


def _reference_row(ref: pd.DataFrame, regime: str, setting: str, rcfg, transforms: str,
                   generated: str = "remix") -> str | None:
    """The reference ablation's recipe for the demo's ``setting`` (same setting, generated data, share, labels,
    transforms); ``generated``: what the pipeline's remix folder holds (remix, hybrid, inpaint, or cutpaste for the
    baseline run beside it)."""
    rows = ref[(ref.regime == regime) & (ref.setting == setting) & (ref.transforms == transforms)]
    if setting != "real":
        data = "+".join(generated if p == "remix" else p for p in setting.split("+")[1:])  # real+remix -> remix
        share = pd.to_numeric(rows.share, errors="coerce")  # a combined recipe's (0.25+0.125) is none of these
        rows = rows[(rows.generated == data) & ~rows["filter"].astype(bool) & (share == rcfg.virtual_share)
                     & (rows.label == rcfg.virtual_label)]
    names = list(dict.fromkeys(rows.recipe))
    return names[0] if names else None


def _reference_world(ref: dict, sim_seed: int) -> tuple[str, int]:
    """The world of the reference ablation's config ``ref`` that the demo's SimMarket seed is, else its first, and
    that world's seed (a config written before worlds were a key has one world, ``reference``, of its sim_seed)."""
    worlds = ref.get("worlds") or [{"name": REFERENCE_WORLD, "sim_seed": ref.get("sim_seed", 0)}]
    world = next((w for w in worlds if w["sim_seed"] == sim_seed and w.get("style", "flat") == "flat"), worlds[0])
    return world["name"], world["sim_seed"]


def _checkpoint_difference(there: dict | None, here: dict | None) -> tuple[str, str]:
    """The first reference checkpoint whose sha256 differs, as (there, here); equal strings when none does."""
    if not there and not here:
        return "not recorded", "not recorded"
    if not there or not here:
        return ("not recorded" if not there else "recorded"), ("not recorded" if not here else "installed")
    name = next((n for n in sorted(there.keys() | here.keys()) if there.get(n) != here.get(n)), None)
    if name is None:
        return "the same", "the same"
    return f"{name} {str(there.get(name))[:12]}", f"{name} {str(here.get(name))[:12]}"


def _uses_generator(ref: dict, name: str | None) -> bool:
    """Whether the reference ablation's recipe ``name`` trains on images the generator made (``source``: an older
    provenance's name for ``generated``)."""
    r = next((r for r in ref.get("recipes", []) if r["name"] == name), {})
    return uses_generator(r.get("generated") or r.get("source") or "")


def _differences(ref: dict, cfg, rcfg, names: dict, generators: tuple[dict | None, dict | None] = (None, None)
                 ) -> list[str]:
    """How the demo's re-ID differs from the reference ablation's runs of the same recipe ([] when it does not).
    ``generators``: the sha256 of the reference checkpoints the ablation's generated images came from, and of those
    this run installed (None: not recorded, or not installed)."""
    t = ref["train"]
    seed = _reference_world(ref, cfg.sim_seed)[1]
    pairs = [("SimMarket identities", ref["sim_ids"], cfg.sim_ids), ("SimMarket seed", seed, cfg.sim_seed),
             ("size", list(t["size"]), list(rcfg.train.size)), ("re-ID data size", list(t["size"]),
                                                                   list(cfg.reid_size)),
             ("model", t["model"], rcfg.train.model), ("loss", t["loss"], rcfg.train.loss),
             ("epochs", t["epochs"], rcfg.train.epochs), ("lr", t["lr"], rcfg.train.lr),
             ("batch", t["batch"], rcfg.train.batch), ("iteration-matched", True, rcfg.matched_steps),
             ("generator", "the shipped reference", "trained from scratch" if cfg.from_scratch else
              "the shipped reference")]
    if not cfg.from_scratch:
        pairs.append(("reference checkpoints (sha256)", *_checkpoint_difference(*generators)))
    for r in ref["recipes"]:
        if r["name"] in names.values() and r.get("generated", r.get("source")):  # source: an older provenance's
            pairs.append(("label smoothing", r.get("epsilon", 0.1), rcfg.virtual_epsilon))
    return [f"{what}: {a} there, {b} here" for what, a, b in pairs if a != b]


def _own_runs(out: Path, baseline: bool) -> tuple[pd.DataFrame, list[str]]:
    """The demo's re-ID rows (with ``baseline``, its cut-and-paste run beside them as setting ``real+cutpaste``) and
    their tables."""
    own = pd.read_csv(out / "reid" / "results.csv")
    tables = [(out / "reid" / "results.md").read_text()]
    if baseline:
        paste = pd.read_csv(out / "reid-cutpaste" / "results.csv").assign(setting="real+cutpaste")
        own = pd.concat([own, paste], ignore_index=True)
        tables += ["Beside it, cut-and-paste (each real person pasted into another camera's image, no generator) "
                   "at the same share, labels, seed and steps:", "",
                   (out / "reid-cutpaste" / "results.md").read_text().replace("real+remix", "real+cutpaste")]
    return own, tables


def _paired_own(own: pd.DataFrame, a: str, b: str) -> tuple[dict, int]:
    """This run's ``a - b`` in points per metric, paired by seed, and the seeds paired."""
    x, y = own[own.setting == a].set_index("seed"), own[own.setting == b].set_index("seed")
    d = {m: 100 * (x[m] - y[m]).dropna() for m in ("rank1", "mAP")}
    return d, len(d["rank1"])


def _ref_paired(ref: pd.DataFrame, regime: str, a: str, b: str) -> tuple[str, int, float]:
    """The reference ablation's ``a - b`` in ``regime``, paired by seed, in words ("+x ± se rank-1, +y ± se mAP",
    points, mean ± SE); the seeds paired; rank-1's standard error (a fraction)."""
    (r1, r1_se, k), (ap, ap_se, _) = (paired(ref, regime, a, b, m) for m in ("rank1", "mAP"))
    return f"{100 * r1:+.1f} ± {100 * r1_se:.1f} rank-1, {100 * ap:+.1f} ± {100 * ap_se:.1f} mAP", k, r1_se


def _against_reference(d: dict, n: int, ref: pd.DataFrame, regime: str, a: str, b: str) -> str:
    """The reference ablation's paired ``a - b`` beside this run's ``d`` over ``n`` seeds, and whether this run
    separates the two on its own (beyond twice the difference's seed-to-seed spread)."""
    words, k, r1_se = _ref_paired(ref, regime, a, b)
    sd = 100 * r1_se * np.sqrt(k)  # the paired difference's spread from seed to seed
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    text = (f" **Reference ablation** (shipped, {k} seeds, regime `{regime}`, recipe `{a}` against `{b}`): "
            f"{words} (mean ± SE); the difference moves by {sd:.1f} rank-1 points (std) from seed to seed.")
    if n and abs(d["rank1"].mean()) > 2 * sd / np.sqrt(n):
        return text + (f" This run's difference is more than twice that spread (over {seeds}) from zero, so this "
                       "run separates the two on its own.")
    return text + (f" This run's difference is within twice that spread (over {seeds}) of zero: it cannot "
                   "separate the two on its own; the reference table below is the evidence.")


def _shipped_tables(root: Path) -> list[tuple[Path, dict]]:
    """The ablations shipped under ``root`` (``root`` itself, then its folders: another generator's, another size's,
    a longer schedule's), each with its provenance."""
    if not root.is_dir():
        return []
    found = []
    for table in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (table / "ablation.csv").is_file() and (table / "provenance.json").is_file():
            found.append((table, json.loads((table / "provenance.json").read_text())))
    return found


def reference_table(installed: dict | None, reference: Path, shipped: list[tuple[Path, dict]]) -> Path:
    """The shipped ablation to set a run beside: of ``reference`` and the ablations shipped in its folders
    (``shipped``, ``_shipped_tables``), the first whose generated images came from the reference checkpoints this run
    installed (``installed``: their sha256), else ``reference`` itself."""
    if not installed:
        return reference
    return next((table for table, prov in shipped if prov.get("generator") == installed), reference)


def _installed(stamp: Path) -> dict:
    """The sha256 of the reference checkpoints a run installed, from its ``reference.json``."""
    fix = "delete it and run again: the reference checkpoints are installed anew"
    stamped = read_json_object(stamp, fix)
    if not isinstance(stamped.get("sha256"), dict):
        raise UserError(f"{stamp}: no sha256 of the installed checkpoints; {fix}")
    return stamped["sha256"]


def reid_section(out: Path, cfg, rcfg, reference: Path = REFERENCE_REID) -> str:
    """The demo's own re-ID table (the generated recipe, and cut-and-paste beside it), what it shows on its own,
    and the shipped reference ablation beside it: the one under ``reference`` made with the generator this run
    installed, where one is shipped."""
    own, tables = _own_runs(out, getattr(cfg, "cutpaste_baseline", False))
    lines = ["### This run", "", *tables]
    settings = list(dict.fromkeys(own.setting))
    stamp = out / "reference.json"  # the reference checkpoints this run installed (generator.shipped.install)
    installed = _installed(stamp) if stamp.is_file() else None
    shipped = _shipped_tables(reference)  # read once: the table to compare with, and the longer ones beside it
    reference = reference_table(installed, reference, shipped)
    if not (reference / "ablation.csv").is_file():
        return "\n".join(lines + ["(no reference ablation shipped with this package: `make reference-reid`)", ""])
    prov = json.loads((reference / "provenance.json").read_text())
    full = read_ablation(reference / "ablation.csv")
    world = _reference_world(prov["config"], cfg.sim_seed)[0]
    ref = full[full.world == world]
    regime = next((r["name"] for r in prov["config"]["regimes"]
                   if r["train_cameras"] == cfg.sim_train_cameras), None)
    transforms = "+".join(rcfg.train.transforms)
    generated = getattr(cfg, "generated", "remix")
    names = {s: _reference_row(ref, regime, s, rcfg, transforms, generated) for s in settings if s != "real+cutpaste"}
    asked = getattr(cfg, "reference_recipe", "")
    if asked and "real+remix" in names:  # the recipe the config names, if the reference ablation ran it here
        names["real+remix"] = asked if asked in set(ref[ref.regime == regime].recipe) else None
    if "real+cutpaste" in settings:
        names["real+cutpaste"] = _reference_row(ref, regime, "real+remix", rcfg, transforms, "cutpaste") \
            if regime else None
    with_generator = _differences(prov["config"], cfg, rcfg, names, (prov.get("generator"), installed))
    without = _differences(prov["config"], cfg, rcfg, names)  # for recipes that use no generator
    base = "real"
    for s in [s for s in settings if s != base] if base in settings else []:
        differ = with_generator if _uses_generator(prov["config"], names.get(s)) else without
        d, n = _paired_own(own, s, base)
        text = (f"**This run** ({n} seed{'s' if n != 1 else ''}): {s} − {base} = {d['rank1'].mean():+.1f} rank-1, "
                f"{d['mAP'].mean():+.1f} mAP (points, paired by seed).")
        ref_name, ref_base, beyond = names.get(s), names.get(base), ""
        if ref_name and ref_base and differ:
            text += (f" The reference ablation's `{ref_name}` is not the same experiment ({'; '.join(differ)}), so "
                     "this run is not set against it; with one seed it cannot tell the two apart on its own.")
        elif ref_name and ref_base:
            text += _against_reference(d, n, ref, regime, ref_name, ref_base)
        else:
            text += " The reference ablation has no run of this recipe in this data regime to compare with."
        if s != "real+cutpaste" and "real+cutpaste" in settings:
            text += _against_cutpaste(own, s, ref, regime, ref_name, names["real+cutpaste"], differ)
            if ref_name and names["real+cutpaste"] and not differ:
                beyond = _elsewhere(shipped, reference, prov, full, world, regime, ref_name, names["real+cutpaste"])
        elif s != "real+cutpaste" and ref_name and "cutpaste" in set(ref[ref.regime == regime].recipe):
            words, k, _ = _ref_paired(ref, regime, ref_name, "cutpaste")
            mean = ref[(ref.regime == regime) & (ref.recipe == "cutpaste")]
            text += (f" **Against cut-and-paste**, the baseline that needs no generator (reference ablation, "
                     f"`cutpaste`, {k} seeds, rank-1 {100 * mean.rank1.mean():.1f}): `{ref_name}` {words}.")
        if s != "real+cutpaste" and ref_name:
            text += _against_longer(ref, regime, ref_name)
        lines += [text, ""] + ([beyond, ""] if beyond else [])
    devices = ", ".join(f"{v} on {k}" for k, v in prov.get("run_devices", {}).items())
    lines += [f"### The reference ablation (shipped with the package, `{repo_relative(str(reference), REPO)}/`)", "",
              f"`{prov['command']}`: {prov['runs']} runs ({devices}), {prov['date']}; SimMarket "
              f"{prov['config']['sim_ids']} identities, {prov['config']['train']['model']} at "
              f"{prov['config']['train']['size'][0]}x{prov['config']['train']['size'][1]}, "
              f"{prov['config']['train']['epochs']} epochs. Not this run's numbers.", "",
              (reference / "ablation.md").read_text()]
    return "\n".join(lines)


LONGER = "real->cutpaste"  # the reference ablation's control for steps: cut-and-paste trained twice as long


def _against_longer(ref: pd.DataFrame, regime: str, ref_name: str) -> str:
    """The reference ablation's ``ref_name`` against cut-and-paste trained twice as long (``LONGER``), where it ran
    that control in ``regime``: what the generator's recipe is worth once the baseline spends as many steps again."""
    if ref_name == LONGER or LONGER not in set(ref[ref.regime == regime].recipe):
        return ""
    words, k, _ = _ref_paired(ref, regime, ref_name, LONGER)
    if k == 0:
        return ""
    return (f" **Against cut-and-paste trained twice as long** (reference ablation, `{LONGER}`: a first stage on the "
            f"real data, then real + cut-and-paste; no generator; {k} seeds): `{ref_name}` {words}: this run and the "
            "recipe set beside it train as many optimiser steps as real-only, the control twice as many.")


def _pairs_by_world(df: pd.DataFrame, regime: str, a: str, b: str, worlds: list[str]) -> list[str]:
    """``a - b`` in ``regime`` for each of ``worlds`` that has it paired over two seeds or more, in words."""
    found = []
    for world in worlds:
        words, k, _ = _ref_paired(df[df.world == world], regime, a, b)
        if k > 1:
            found.append(f"`{world}` {words} ({k} seeds)")
    return found


def _named(config: dict, key: str, names: list[str]) -> list[dict | None]:
    """The entries of ``config[key]`` (recipes, worlds) of these names, None where one is not there."""
    return [next((x for x in config.get(key) or [] if x["name"] == n), None) for n in names]


def _same_but_epochs(config: dict, other: dict, recipes: list[str]) -> bool:
    """Whether two ablation configs train ``recipes`` alike on the same data, epochs aside: the other training
    settings, identities and regimes, those recipes, and every world ``other`` holds, as ``config`` defines them."""
    def rest(c: dict) -> tuple:
        return {k: v for k, v in c.get("train", {}).items() if k != "epochs"}, c.get("sim_ids"), c.get("regimes")
    worlds = [w["name"] for w in other.get("worlds") or []]
    return (rest(other) == rest(config) and _named(other, "recipes", recipes) == _named(config, "recipes", recipes)
            and _named(other, "worlds", worlds) == _named(config, "worlds", worlds))


def _longer_tables(shipped: list[tuple[Path, dict]], reference: Path, prov: dict, recipes: list[str]
                   ) -> list[tuple[Path, dict]]:
    """Of the ``shipped`` ablations (with their provenance), those beside ``reference`` (``prov``: its provenance)
    that trained ``recipes`` with the same generator on the same data as it did, for more epochs."""
    if not prov.get("generator"):
        return []
    epochs = prov["config"]["train"]["epochs"]
    return [(table, other) for table, other in shipped
            if table != reference and other.get("generator") == prov["generator"]
            and other["config"].get("train", {}).get("epochs", 0) > epochs
            and _same_but_epochs(prov["config"], other["config"], recipes)]


def _elsewhere(shipped: list[tuple[Path, dict]], reference: Path, prov: dict, full: pd.DataFrame, world: str,
               regime: str, a: str, b: str) -> str:
    """The reference ablation's ``a - b`` in ``regime`` beyond the demo's world and schedule: in its other worlds,
    and in the ``shipped`` tables that train the same recipes with the same generator for longer. One
    world and one schedule can flatter a recipe (the generator's own training people; a schedule too short for the
    baseline); these say how far the demo's answer carries."""
    text = []
    others = _pairs_by_world(full, regime, a, b, [w for w in dict.fromkeys(full.world) if w != world])
    if others:
        own = ", the world the shipped generator was trained on" if world == REFERENCE_WORLD else ""
        text.append(f"**In the reference ablation's other worlds** (this run's is `{world}`{own}; what each world "
                    f"is: docs/results.md), `{a}` against `{b}`, regime `{regime}`: {'; '.join(others)}.")
    for table, other in _longer_tables(shipped, reference, prov, [a, b]):
        longer = read_ablation(table / "ablation.csv")
        found = _pairs_by_world(longer, regime, a, b, list(dict.fromkeys([world, *longer.world])))
        if found:
            missing = "" if world in set(longer.world) else f" (not run in `{world}`)"
            text.append(f"**Re-ID trained for {other['config']['train']['epochs']} epochs** instead of "
                        f"{prov['config']['train']['epochs']} (`{repo_relative(str(table), REPO)}/`, the same "
                        f"generator and data), `{a}` against `{b}`, regime `{regime}`{missing}: {'; '.join(found)}.")
    return " ".join(text)


def _against_cutpaste(own: pd.DataFrame, s: str, ref: pd.DataFrame, regime: str, ref_name: str | None,
                      ref_paste: str | None, differ: list[str]) -> str:
    """This run's generated recipe ``s`` against its own cut-and-paste run, and the reference ablation's same pair."""
    d, n = _paired_own(own, s, "real+cutpaste")
    text = (f" **Against cut-and-paste** (this run, {n} seed{'s' if n != 1 else ''}, the baseline that needs no "
            f"generator): {s} − real+cutpaste = {d['rank1'].mean():+.1f} rank-1, {d['mAP'].mean():+.1f} mAP.")
    if ref_name and ref_paste and not differ:
        return text + _against_reference(d, n, ref, regime, ref_name, ref_paste)
    why = "is not the same experiment" if ref_name and ref_paste else "has no run of this pair in this data regime"
    return text + (f" The reference ablation {why}, so nothing says how far this difference moves from seed to seed: "
                   "this run alone cannot tell the two apart.")


def _gallery_lines(out: Path, triplets: Path | None) -> list[str]:
    """The report's pointer to the Virtual Market's gallery, and its figure of what made a few of the images."""
    lines = []
    if (out / "gallery" / "index.html").is_file():
        lines += ["Browse it: [gallery/index.html](gallery/index.html), a static page (open it from disk, no server): "
                  "every identity's real images, then each generated image beside what made it, with filters by "
                  "origin and camera.", ""]
    if triplets is not None:
        lines += ["What made a few of its images (rows: one generated image each; columns: the pictures it was made "
                  "from, then the image; c*N*: camera):", "", f"![what made the images](figures/{triplets.name})", ""]
    return lines


def write_report(out: Path, cfg, prov: dict | None, times: dict, rcfg) -> Path:
    """``report.md`` of the pipeline run under ``out`` (``cfg`` its PipelineConfig), with figures copied beside it;
    every number is read from a file the run wrote."""
    figs = out / "figures"
    s1_run, s2_run, vm = out / "stage1", out / "stage2", out / "virtual_market"
    recon = _copy(s1_run / "eval" / "grid.png", figs / "stage1_grid.png")
    swaps = _copy(s1_run / "eval" / "swaps.png", figs / "swaps_vs_truth.png")
    ids = _copy(s2_run / "samples" / "b_identities.png", figs / "sampled_identities.png")
    interp = _copy(s2_run / "samples" / "d_interpolation.png", figs / "interpolation.png")
    people = _copy(s2_run / "samples" / "a_sampled_people.png", figs / "sampled_people.png")
    cmc = _copy(out / "reid" / "cmc.png", figs / "cmc.png")
    sim = read_json_object(out / "data" / "sim-reid" / "simmarket.json",
                           f"delete {out / 'data' / 'sim-reid'} and run again: it is simulated anew")
    readme = (vm / "README.txt").read_text().splitlines()
    triplets = triplet_figure(read_dataset(vm), figs / "triplets.png")
    lines = [
        "# Virtual Market demo report",
        "",
        _models_paragraph(out, cfg, prov),
        "",
        f"Data: SimMarket seed {sim['seed']}, {sim['identities']} identities "
        f"({sim['train_ids']} train / {sim['test_ids']} test), "
        f"{sim['images']} images at {sim['height']}x{sim['width']} for re-ID"
        + (f", each training identity seen by {cfg.sim_train_cameras} of the cameras (the test split keeps all)"
           if getattr(cfg, "sim_train_cameras", 0) else "")
        + ", and the same dataset at "
        f"{cfg.gen_size[0]}x{cfg.gen_size[1]} for the generator.",
        "",
        "## Stage I: reconstructions and factor swaps",
        "",
        "Held-out people. Rows: input | reconstruction | foreground swap | background swap | pose swap "
        "(donor: the previous column's person).",
        "",
        f"![stage I grid](figures/{recon})",
        "",
        "Counterfactual swaps beside SimMarket's true render. Rows: source A | donor B | pose swap | its truth | "
        "background swap | its truth | foreground swap | its truth.",
        "",
        f"![swaps vs truth](figures/{swaps})",
        "",
        (s1_run / "eval" / "metrics.md").read_text(),
        "## Stage II: sampling",
        "",
        "Fully sampled people:",
        "",
        f"![sampled people](figures/{people})",
        "",
        "Sampled identities (one sampled foreground per row, sampled backgrounds and poses):",
        "",
        f"![sampled identities](figures/{ids})",
        "",
        "Interpolation strips (rows: foreground, background, pose):",
        "",
        f"![interpolation](figures/{interp})",
        "",
        (s2_run / "eval" / "metrics.md").read_text(),
        "## The Virtual Market",
        "",
        *[f"    {line}" for line in readme[:9]],
        "",
        *_gallery_lines(out, triplets),
        "## Re-ID (evaluated on SimMarket's real test split)",
        "",
        reid_section(out, cfg, rcfg),
        f"![CMC](figures/{cmc})",
        "",
        "## Time per stage (seconds, this machine)",
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *[f"| {k} | {v:.0f} |" for k, v in times.items()],
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
