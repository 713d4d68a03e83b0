"""The reference re-ID ablation's figures, from its rows (each with a ``world``): the CMC of every recipe,
real-only's learning curve, and every recipe's paired difference to cut-and-paste seed by seed
(``pair_differences``, ``pairs_figure``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reid.ablation import save_figure


def figures(df: pd.DataFrame, plateaus: dict[str, dict], anchor: str, out: Path) -> None:
    """``out/cmc.png`` (the mean CMC of every recipe, from the rows that carry one), ``out/curve.png`` (the anchor's
    learning curve in each regime, from ``plateaus``) and ``out/pairs.png`` (``pairs_figure`` against cutpaste)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs_figure(df, "cutpaste", out / "pairs.png")
    many = df.world.nunique() > 1
    df = df[[isinstance(c, list) for c in df["cmc"]]]  # rows reused from a shipped table carry no CMC
    where = scopes(df)
    fig, axes = plt.subplots(1, max(len(where), 1), figsize=(5 * max(len(where), 1), 3.8), dpi=120, squeeze=False)
    for ax, (world, regime) in zip(axes[0], where, strict=False):  # no CMC at all: one empty panel
        groups = df[(df.world == world) & (df.regime == regime)].groupby("recipe", sort=False)
        for i, (recipe, g) in enumerate(groups):
            cmc = 100 * np.array(list(g["cmc"])).mean(0)
            ax.plot(np.arange(1, len(cmc) + 1), cmc, marker="o", markersize=2.5, label=f"{recipe} ({len(g)})",
                    linestyle=("-", "--", ":")[i // 10 % 3])  # past the 10 colours, the line tells them apart
        ax.set(xlabel="rank", ylabel="matching rate (%)", title=f"CMC, {world + ' ' if many else ''}{regime}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, out / "cmc.png")
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for regime, p in plateaus.items():
        if p:
            ax.plot(p["epochs"], [100 * v for v in p["rank1_mean"]], marker="o", markersize=3,
                    label=f"{regime} (plateau at epoch {p['plateau_epoch']})")
    ax.set(xlabel="epoch", ylabel="rank-1 (%)", title=f"real only ({anchor}): learning curve, mean over seeds")
    ax.grid(alpha=0.3)
    if any(plateaus.values()):
        ax.legend(fontsize=8)
    save_figure(fig, out / "curve.png")


def scopes(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (world, regime) pairs of ``df``'s rows, in their order."""
    return list(dict.fromkeys(zip(df.world, df.regime, strict=True)))


def pair_differences(df: pd.DataFrame, against: str) -> pd.DataFrame:
    """Every recipe's paired differences to ``against`` (``df``: rows with a ``world``) in every world x regime where
    both ran a seed: one row per
    world, regime, recipe and metric (rank1, mAP) with the seeds' differences in points (``diffs``), their mean, two
    standard errors (``half``; 0 for one seed) and ``verdict``: ``above`` or ``below`` when the mean ± 2 SE of two or
    more seeds lies on one side of zero, else ``within``."""
    out = []
    for world, regime in scopes(df):
        rows = df[(df.world == world) & (df.regime == regime)]
        b = rows[rows.recipe == against].set_index("seed")
        for recipe, a in rows[rows.recipe != against].groupby("recipe", sort=False):
            a = a.set_index("seed")
            for metric in ("rank1", "mAP"):
                d = 100 * (a[metric] - b[metric]).dropna()
                if len(d) == 0:
                    continue
                many = len(d) > 1  # one seed has no spread to judge it by
                half = float(2 * d.std(ddof=1) / np.sqrt(len(d))) if many else 0.0
                mean = float(d.mean())
                verdict = "above" if many and mean - half > 0 else "below" if many and mean + half < 0 else "within"
                out.append({"world": world, "regime": regime, "recipe": recipe, "metric": metric,
                            "diffs": d.tolist(), "mean": mean, "half": half, "verdict": verdict})
    return pd.DataFrame(out, columns=["world", "regime", "recipe", "metric", "diffs", "mean", "half", "verdict"])


def pairs_figure(df: pd.DataFrame, against: str, path: Path) -> None:
    """``pair_differences`` drawn: one panel per world x regime and metric, each seed's difference a grey dot, the
    mean with a bar of ±2 standard errors (green: above zero, red: below) and the count of seeds beside it. Drawn
    from the table's rows alone, so shipped rows count as much as the runs here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = pair_differences(df, against)
    where = list(dict.fromkeys(zip(p.world, p.regime, strict=True)))
    recipes = list(dict.fromkeys(p.recipe))
    colour = {"above": "tab:green", "below": "tab:red", "within": "0.25"}
    fig, axes = plt.subplots(2, max(len(where), 1), figsize=(4.2 * max(len(where), 1), 1.4 + 0.3 * len(recipes)),
                             dpi=110, squeeze=False, sharey=True)
    for col, (world, regime) in enumerate(where):
        for ax, metric, name in ((axes[0, col], "rank1", "rank-1"), (axes[1, col], "mAP", "mAP")):
            for r in p[(p.world == world) & (p.regime == regime) & (p.metric == metric)].itertuples():
                y = recipes.index(r.recipe)
                ax.scatter(r.diffs, [y] * len(r.diffs), s=9, color="0.6", alpha=0.7, zorder=2)
                ax.errorbar(r.mean, y, xerr=r.half, fmt="o", color=colour[r.verdict], markersize=5, capsize=3,
                            zorder=3)
                ax.annotate(str(len(r.diffs)), (max(r.mean + r.half, max(r.diffs)), y), xytext=(4, -3),
                            textcoords="offset points", fontsize=6, color="0.4")
            ax.axvline(0, color="0.3", linewidth=0.8)
            ax.set_yticks(range(len(recipes)), recipes, fontsize=7)
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{name} - {against}, {world} {regime}", fontsize=9)
            ax.set_xlabel("points (dots: seeds; bar: mean ± 2 SE; number: seeds)", fontsize=7)
    if recipes:
        axes[0, 0].set_ylim(len(recipes) - 0.5, -0.5)  # the table's order, top to bottom (the axes share it)
    save_figure(fig, path)
