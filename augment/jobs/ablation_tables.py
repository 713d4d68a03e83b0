"""The reference re-ID ablation's outputs, from its rows (one per recipe x world x regime x seed): ``ablation.csv``,
``ablation.md`` (mean ± std and paired differences), the figures (drawn by ``ablation_figures``), the
provenance, the copies ``--package`` ships in the repository, and the tables of ``docs/results.md`` rendered from the
shipped ones."""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augment.jobs.ablation_figures import figures, scopes
from augment.jobs.provenance import REPO, git_commit, repo_relative
from generator.config import to_dict
from generator.errors import UserError
from generator.io import atomic_copy, atomic_path, atomic_write_text, write_or_check
from reid.ablation import paired

# the columns of an ablation.csv written before the glossary (docs/glossary.md): the recipe's name was `setting`, its
# setting `recipe`, its generated data `source`
OLD_COLUMNS = {"setting": "recipe", "recipe": "setting", "source": "generated"}


REFERENCE_WORLD = "reference"  # the world of the rows of an ablation.csv written before worlds were a column
# ablation.csv's columns, in order (any others follow)
COLUMNS = ("recipe", "world", "regime", "seed", "setting", "generated", "share", "label", "filter", "transforms",
           "steps", "rank1", "rank5", "mAP", "mINP", "device", "date")


def read_ablation(path: str | Path) -> pd.DataFrame:
    """The rows of an ``ablation.csv``, with the columns of one written under the old names renamed, and the world
    of one written before worlds were a column."""
    df = pd.read_csv(path)
    if "source" in df or "recipe" not in df:
        df = df.rename(columns={k: v for k, v in OLD_COLUMNS.items() if k in df})
    return with_worlds(df)


def with_worlds(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``world`` on every row (``reference`` where it has none)."""
    if "world" not in df:
        return df.assign(world=REFERENCE_WORLD)
    return df.assign(world=df.world.fillna(REFERENCE_WORLD))


def best_real_only(df: pd.DataFrame, regime: str) -> str:
    """The real-only recipe (no generated data) with the highest mean rank-1 in ``regime``: the anchor every recipe
    is compared with is real-only training with the best standard transforms, whichever set wins."""
    g = df[df.regime == regime]
    if "generated" in g:
        g = g[g.generated.fillna("") == ""]
    means = g.groupby("recipe", sort=False).rank1.mean()
    return str(means.idxmax()) if len(means) else "real"


def _difference(mean: float, se: float, n: int) -> str:
    """A paired difference in percent: ``mean ± SE``, or the one seed's difference ("" for no seed)."""
    if n == 0:
        return ""
    return f"{100 * mean:+.1f} ± {100 * se:.1f}" if n > 1 else f"{100 * mean:+.1f} (1 seed)"


def summary_table(df: pd.DataFrame) -> str:
    """Mean ± std of every recipe, and its paired differences to `real` and `cutpaste`; also to the best real-only
    recipe (by mean rank-1) where that is not `real` in some regime: `real` is meant to be real-only with the best
    standard transforms, and the table shows it when the data say otherwise. With rows of several worlds, a
    `world` column leads."""
    df = with_worlds(df)
    many = df.world.nunique() > 1
    best = {(w, regime): best_real_only(df[df.world == w], regime) for w, regime in scopes(df)}
    extra = any(b != "real" for b in best.values())
    lines = [("| world " if many else "") + "| regime | recipe | seeds | rank-1 | mAP | mINP | rank-1 vs real | "
             "mAP vs real | rank-1 vs cutpaste | mAP vs cutpaste |"
             + (" rank-1 vs best real-only | mAP vs best real-only |" if extra else ""),
             "| --- " * ((12 if extra else 10) + many) + "|"]

    def cell(g, m):
        return f"{100 * g[m].mean():.1f} ± {100 * g[m].std(ddof=1):.1f}" if len(g) > 1 else f"{100 * g[m].mean():.1f}"

    def diff(rows, regime, recipe, against, m):
        return "" if recipe == against else _difference(*paired(rows, regime, recipe, against, m))

    for world, regime in scopes(df):
        rows = df[df.world == world]
        for recipe, g in rows[rows.regime == regime].groupby("recipe", sort=False):
            against = ["real", "cutpaste"] + ([best[world, regime]] if extra else [])
            cells = [diff(rows, regime, recipe, a, m) for a in against for m in ("rank1", "mAP")]
            lines.append(("| " + world + " " if many else "") + f"| {regime} | {recipe} | {len(g)} | "
                         f"{cell(g, 'rank1')} | {cell(g, 'mAP')} | {cell(g, 'mINP')} | " + " | ".join(cells) + " |")
    bests = ", ".join(f"{world + ' ' if many else ''}{regime}: `{name}`" for (world, regime), name in best.items())
    return ("\n".join(lines) + "\n\n(percent; mean ± sample std over seeds; differences are paired by seed, mean "
            "± standard error; evaluated on the real query / gallery of each regime; best real-only (highest mean "
            f"rank-1 of the recipes without generated data): {bests})\n")


def pairs_table(df: pd.DataFrame, pairs: list[tuple[str, str]]) -> str:
    """The paired difference ``a - b`` of every pair of recipes, in every world and regime where both ran a seed."""
    df = with_worlds(df)
    many = df.world.nunique() > 1
    lines = [("| world " if many else "") + "| regime | recipe | against | seeds | rank-1 | mAP |",
             "| --- " * (6 + many) + "|"]
    for a, b in pairs:
        for world, regime in scopes(df):
            rows = df[df.world == world]
            (r1, r1_se, n), ap = (paired(rows, regime, a, b, m) for m in ("rank1", "mAP"))
            if n:
                lines.append(("| " + world + " " if many else "") + f"| {regime} | {a} | {b} | {n} | "
                             f"{_difference(r1, r1_se, n)} | {_difference(*ap)} |")
    return ("\n".join(lines) + "\n\n(percentage points; the paired difference recipe - against over the seeds both "
            "ran, mean ± standard error)\n")


def compare(a: pd.DataFrame, b: pd.DataFrame, against: list[str], names: tuple[str, str],
            skip_same: bool = False) -> pd.DataFrame:
    """Two ablations' rows (A, B) compared over the seeds both ran: for every regime and recipe of A that B also
    has, A - B of the same recipe and, for each of ``against``, A's recipe - B's recipe of that name (paired by seed,
    mean ± standard error, rank-1 / mAP). ``skip_same``: leave out a recipe whose runs are B's own (every paired
    seed's numbers equal: runs reused from B)."""
    a, b = with_worlds(a), with_worlds(b)
    many = a.world.nunique() > 1
    rows = []
    for (world, regime, recipe), g in a.groupby(["world", "regime", "recipe"], sort=False):
        bw = b[b.world == world]
        both = pd.concat([a[a.world == world].assign(recipe="A:" + a.recipe), bw.assign(recipe="B:" + bw.recipe)])
        other = bw[(bw.regime == regime) & (bw.recipe == recipe) & bw.seed.isin(g.seed)]
        if other.empty:
            continue
        if skip_same:
            mine = g[g.seed.isin(other.seed)].set_index("seed")[["rank1", "mAP"]].sort_index()
            if mine.equals(other.set_index("seed")[["rank1", "mAP"]].sort_index()):
                continue
        row = {**({"world": world} if many else {}), "regime": regime, "recipe": recipe,
               "seeds": int(other.seed.nunique()),
               f"{names[0]} rank-1 / mAP": _means(g[g.seed.isin(other.seed)]),
               f"{names[1]} rank-1 / mAP": _means(other)}
        for column, vs in [(f"vs {names[1]}, same recipe", recipe)] + [(f"vs {names[1]} {s}", s) for s in against]:
            cells = []
            for metric in ("rank1", "mAP"):
                mean, se, n = paired(both, regime, "A:" + recipe, "B:" + vs, metric)
                cells.append("n/a" if n == 0 else f"{100 * mean:+.1f}" + ("" if n < 2 else f" ± {100 * se:.1f}"))
            row[column] = " / ".join(cells)
        rows.append(row)
    return pd.DataFrame(rows)


def _means(g: pd.DataFrame) -> str:
    return f"{100 * g.rank1.mean():.1f} / {100 * g.mAP.mean():.1f}"


def markdown(t: pd.DataFrame) -> str:
    """``t`` as a markdown table."""
    lines = ["| " + " | ".join(t.columns) + " |", "| " + " | ".join("---" for _ in t.columns) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False)]) + "\n"


def runs_line(df: pd.DataFrame) -> str:
    """How many runs the rows hold and where they trained (their `device` column)."""
    devices = ", ".join(f"{n} on {d}" for d, n in df.device.fillna("unknown").value_counts().items()) \
        if "device" in df else ""
    dates = ", ".join(f"{n} on {d}" for d, n in sorted(df.date.fillna("unknown").value_counts().items())) \
        if "date" in df else ""
    return (f"{len(df)} runs" + (f" ({devices})" if devices else "") + (f"; trained {dates}" if dates else "")
            + ".\n")


def plateau(df: pd.DataFrame, regime: str, recipe: str) -> dict:
    """The mean learning curve of real-only ``recipe`` over seeds in ``regime``, and the first epoch whose rank-1 is
    within one standard error (at least 1 point) of the curve's best: where rank-1 stops rising. Rows reused from a
    shipped table carry no curve and are left out."""
    curves = [c for c in df[(df.regime == regime) & (df.recipe == recipe)]["curve"] if isinstance(c, list) and c]
    if not curves:
        return {}
    epochs = [p["epoch"] for p in curves[0]]
    r1 = np.array([[p["rank1"] for p in c] for c in curves if [p["epoch"] for p in c] == epochs])
    mean = r1.mean(0)
    se = r1.std(0, ddof=1) / np.sqrt(len(r1)) if len(r1) > 1 else np.zeros_like(mean)
    best = int(mean.argmax())
    stop = next(i for i in range(len(mean)) if mean[i] >= mean[best] - max(se[best], 0.01))
    return {"recipe": recipe, "epochs": epochs, "rank1_mean": [round(float(v), 4) for v in mean], "seeds": len(r1),
            "best_epoch": epochs[best], "plateau_epoch": epochs[stop]}


CMC_KEY = ["world", "regime", "recipe", "seed"]


def write_cmc(df: pd.DataFrame, path: Path) -> None:
    """The CMC of every row that has one, a row per run (``CMC_KEY``, then ``rank1``..``rankN``, fractions): shipped
    beside ``ablation.csv`` so that a later table, reusing these rows, can draw them."""
    has = df[[isinstance(c, list) for c in df["cmc"]]]
    cmc = pd.DataFrame([c for c in has["cmc"]], index=has.index)
    cmc.columns = [f"rank{k + 1}" for k in range(cmc.shape[1])]
    with atomic_path(path) as tmp:
        pd.concat([has[CMC_KEY], cmc], axis=1).to_csv(tmp, index=False, float_format="%.6f")


def read_cmc(path: Path) -> dict[tuple[str, str, str, int], list[float]]:
    """``write_cmc``'s file as (world, regime, recipe, seed) -> CMC; empty when there is none."""
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    ranks = [c for c in df.columns if c not in CMC_KEY]
    return {(r.world, r.regime, r.recipe, int(r.seed)): [float(getattr(r, c)) for c in ranks]
            for r in df.itertuples(index=False)}


def write_outputs(cfg, rows: list[dict], times: dict, command: str, plateaus_before: dict | None = None,
                  filters_before: dict | None = None, generator_before: dict | None = None) -> None:
    """The ablation's files under ``cfg.out`` from its ``rows``. ``plateaus_before``: (world, regime) -> the shipped
    provenance's plateau, kept where every anchor row of that world and regime is the shipped table's (no curve
    here); ``filters_before``: the shipped filter summaries, kept where no filter of that name ran here;
    ``generator_before``: the reference checkpoints of the shipped generator rows reused here (None: none reused)."""
    out = Path(cfg.out)
    df = pd.DataFrame(rows)
    df = df[[c for c in COLUMNS if c in df] + [c for c in df if c not in COLUMNS]]
    if "share" in df:  # a combined recipe's is text (0.25+0.125): the others as the float format writes them
        df["share"] = df.share.map(lambda v: f"{v:.6f}" if isinstance(v, float) else v)
    with atomic_path(out / "ablation.csv") as tmp:
        df.drop(columns=["cmc", "curve"]).to_csv(tmp, index=False, float_format="%.6f")
    write_cmc(df, out / "cmc.csv")
    atomic_write_text(out / "ablation.md", summary_table(df))
    many = df.world.nunique() > 1
    plateaus = {}
    for w, r in scopes(df):
        anchor = df[(df.world == w) & (df.regime == r) & (df.recipe == cfg.anchor)]
        shipped = len(anchor) and not any(isinstance(c, list) for c in anchor["curve"])  # no curve: shipped rows
        plateaus[f"{w}/{r}" if many else r] = plateau(df[df.world == w], r, cfg.anchor) or (
            (plateaus_before or {}).get((w, r), {}) if shipped else {})
    figures(df, plateaus, cfg.anchor, out)
    filters = dict(filters_before or {})
    for p in sorted(out.glob("*/*/generated/*-filtered-seed*/filter_summary.json")):  # <world>/<regime>/generated
        filters[f"{p.parent.parent.parent.parent.name}/{p.parent.parent.parent.name}/{p.parent.name}"] = \
            json.loads(p.read_text())
    prov = {"command": command,
            "config": repo_relative(to_dict(cfg)), "commit": git_commit(), "torch": torch.__version__,
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
            "run_devices": df.device.value_counts().to_dict() if len(df) else {},
            "date": time.strftime("%Y-%m-%d"), "runs": len(df),
            # rows without a CMC: reused from a shipped table that kept none for them (their runs are not here)
            "runs_shipped": int(sum(not isinstance(c, list) for c in df["cmc"])),
            # seconds each run trained, where it trained; under --jobs runs overlap, so the sum is not elapsed time
            "run_seconds_sum": round(sum(times.values()), 1), "run_seconds": times, "plateau": plateaus,
            "filters": filters, **generator_record(out, generator_before)}
    atomic_write_text(out / "provenance.json", json.dumps(prov, indent=1, default=str))


def generator_record(out: Path, before: dict | None = None) -> dict:
    """The provenance's record of the reference checkpoints the table's generated images came from: ``generator``
    (sha256 of each file) when one set made them all, from the install stamp of every world and regime under ``out``
    and the shipped rows reused (``before``); None when none did, or when several did (``generators`` then says
    which made each)."""
    made = {f"{p.parent.parent.parent.name}/{p.parent.parent.name}": json.loads(p.read_text()).get("sha256")
            for p in sorted(out.glob("*/*/generator/reference.json"))}  # <world>/<regime>/generator
    if before is not None:
        made["shipped rows"] = before
    distinct = {json.dumps(v, sort_keys=True) for v in made.values()}
    if len(distinct) > 1:
        return {"generator": None, "generators": made}
    return {"generator": next(iter(made.values()), None)}


def package(cfg, log=print) -> None:
    """Copy the ablation's table, rows and provenance to ``package`` (``reid/reference/``) and its figures beside
    ``figures`` (``docs/reid_reference_{cmc,curve,pairs}.png``), both in the repository; then rewrite the generated
    tables of ``docs/results.md`` from the shipped CSVs."""
    out = Path(cfg.out)
    if not (out / "ablation.csv").exists():
        raise UserError(f"{out}: no ablation.csv yet; run `vmarket reference-reid` first")
    dest, figs = REPO / cfg.package, REPO / cfg.figures
    dest.mkdir(parents=True, exist_ok=True)
    figs.parent.mkdir(parents=True, exist_ok=True)
    # each file through a temp file; the provenance, against which the rows are reused, goes first and comes back
    # last, so that a kill in between leaves no rows vouched for by another table's provenance
    (dest / "provenance.json").unlink(missing_ok=True)
    for name in ("ablation.csv", "ablation.md", "cmc.csv", "provenance.json"):
        if (out / name).is_file() or name != "cmc.csv":  # an out tabulated before the CMC was kept has none
            atomic_copy(out / name, dest / name)
    atomic_copy(out / "pairs.png", figs.with_name(f"{figs.name}_pairs.png"))  # from the rows: always whole
    if json.loads((out / "provenance.json").read_text()).get("runs_shipped", 0):
        log(f"kept the figures {figs}_*.png: some rows were reused from the shipped table, and the figures of the "
            f"runs here alone would leave those out")
    else:
        for name in ("cmc", "curve"):
            atomic_copy(out / f"{name}.png", figs.with_name(f"{figs.name}_{name}.png"))
    log(f"packaged {out} -> {dest} and {figs.parent}/")
    if write_results_doc(REPO):
        log(f"rewrote the generated tables of {RESULTS_DOC} from the shipped ablations")


# docs/results.md: its prose is written by hand, its tables between these markers are rendered from the shipped
# ablation.csv files (package() rewrites them; `make docs` too; a test fails when they are stale)
RESULTS_DOC = "docs/results.md"
BEGIN = "<!-- generated by vmarket reference-reid --package from {spec}: do not edit -->"
END = "<!-- end generated -->"
_BEGIN = re.compile("^" + re.escape(BEGIN).replace(re.escape("{spec}"), "(?P<spec>.+)") + "$")


def _shipped(repo: Path, path: str) -> pd.DataFrame:
    if not (repo / path).is_file():
        raise UserError(f"{RESULTS_DOC}: a generated table reads {path}, which is not in {repo}; fix the marker or "
                        f"ship that ablation (`vmarket reference-reid CONFIG --package`)")
    return read_ablation(repo / path)


def render_block(spec: str, repo: Path) -> str:
    """A generated table of docs/results.md from its marker's ``spec``:

    - ``CSV``: how many runs it holds and where they trained, and its summary table (``ablation.md``);
    - ``CSV; pairs: a vs b, c vs d``: the paired differences of those recipes within it;
    - ``CSV against OTHER; names: A, B; vs: r1, r2``: A - B recipe by recipe over the seeds both ran, and A's recipe
      against B's ``r1``, ``r2`` (``compare``), leaving out the recipes whose runs are B's own.

    CSV paths are relative to ``repo``."""
    head, *options = [part.strip() for part in spec.split(";")]
    opts: dict[str, list[str]] = {}
    for option in options:
        key, sep, value = (x.strip() for x in option.partition(":"))
        if not sep or key not in ("pairs", "names", "vs"):
            raise UserError(f"{RESULTS_DOC}: generated table {spec!r}: {option!r} is not one of 'pairs: a vs b, ...', "
                            f"'names: A, B', 'vs: recipe, ...'")
        opts[key] = [v.strip() for v in value.split(",") if v.strip()]
    path, _, other = (x.strip() for x in head.partition(" against "))
    df = _shipped(repo, path)
    if other:
        names = tuple(opts.get("names", ["A", "B"]))
        if len(names) != 2:
            raise UserError(f"{RESULTS_DOC}: generated table {spec!r}: names: give two, A's and B's")
        return markdown(compare(df, _shipped(repo, other), opts.get("vs", []), names, skip_same=True))
    if "pairs" in opts:
        pairs = [tuple(x.strip() for x in p.split(" vs ")) for p in opts["pairs"]]
        bad = next((p for p in pairs if len(p) != 2), None)
        if bad is not None:
            raise UserError(f"{RESULTS_DOC}: generated table {spec!r}: pair {' vs '.join(bad)!r} is not 'a vs b'")
        return pairs_table(df, pairs)
    return runs_line(df) + "\n" + summary_table(df)


def render_results_doc(doc_text: str, repo: Path) -> str:
    """``doc_text`` (docs/results.md) with the contents of every generated block rendered anew from the CSVs its
    marker names (under ``repo``); everything outside the blocks is kept as it is."""
    lines = doc_text.split("\n")
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        m = _BEGIN.match(lines[i].strip())
        i += 1
        if m is None:
            continue
        end = next((j for j in range(i, len(lines)) if lines[j].strip() == END), None)
        if end is None:
            raise UserError(f"{RESULTS_DOC} line {i}: a generated table without its end marker {END!r}")
        out += ["", render_block(m["spec"], repo).rstrip("\n"), ""]
        i = end
    return "\n".join(out)


def write_results_doc(repo: Path) -> bool:
    """Rewrite the generated tables of ``repo``'s docs/results.md from its shipped CSVs; whether the file changed
    (False, too, when the repository has no such file)."""
    doc = repo / RESULTS_DOC
    if not doc.is_file():
        return False
    text = doc.read_text()
    new = render_results_doc(text, repo)
    if new != text:
        atomic_write_text(doc, new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m augment.jobs.ablation_tables [--check]``: rewrite docs/results.md's generated tables from the
    shipped ablations (``make docs``); ``--check`` writes nothing and exits 1 when they are stale."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    doc = REPO / RESULTS_DOC
    try:
        text = render_results_doc(doc.read_text(), REPO)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return write_or_check(doc, text, args.check, "run `make docs`")


if __name__ == "__main__":
    raise SystemExit(main())
