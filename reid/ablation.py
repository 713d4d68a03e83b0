"""The re-ID ablation: what does a Virtual Market add to real training data?

Settings say what a run trains on; every one is evaluated on the real test split (query / gallery):
``real``, ``virtual``, ``real+virtual`` (merged, virtual pids offset, cameras kept)
and ``virtual->real`` (pre-train on virtual, fine-tune on real); any setting written
the same way (stages separated by ``->``, each one of ``TRAIN_SETS``) can be added. Each
runs over several seeds; finished runs are reused, so a killed ablation resumes. With
``matched_steps`` every stage trains as many optimiser steps per epoch as one pass over
the real training data, so settings with more images do not simply train longer.

Generated images under control (``reid.mixed``): ``real+remix`` (remixes of the real
identities from ``remix_root``, carrying the real pids), ``real+new`` (the new identities
of ``virtual_root``) and ``real+remix+new`` (both) train on the real batches of the
real-only run, each with ``virtual_share`` of generated images appended, labelled by
``virtual_label``; ``more_generated`` adds further kinds to those batches, each from a folder of its own at its
own share and label treatment (a combined recipe: cut-and-paste and the generator's remixes, say). Their epochs
are the real data's, so they are iteration-matched to ``real`` with or without ``matched_steps``;
``virtual_share: 0`` without ``more_generated`` is the real-only run, bit for bit (a control).
``real+virtual`` stays the pooled one-hot merge it always was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from generator.config import ConfigValueError, DataFormat, check_unique, save_config
from generator.data.layouts import resolve_layout
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import atomic_path, atomic_write_text, check_output_folder, folder_defect, read_json_object
from reid.consistency import NEW_ORIGIN, REAL_ORIGINS
from reid.extra_training import manifest_origins
from reid.mixed import LabelTreatment, Mix, generated_pool, parts_per_batch
from reid.torchreid_adapter import check_model, market_records, merge_records, register_dataset, train_batches_per_epoch
from reid.train import ReidTrainConfig, train_and_evaluate, train_sampler

MIXED = ("real+remix", "real+new", "real+remix+new")  # real batches with generated images appended (reid.mixed)
TRAIN_SETS = ("real", "virtual", "real+virtual", *MIXED)  # what one stage of a setting trains on
USES_VIRTUAL = {"virtual", "real+virtual", "real+new", "real+remix+new"}  # the train sets that read virtual_root
USES_REMIX = {"real+remix", "real+remix+new"}  # the train sets that read remix_root


@dataclass
class MoreGenerated:
    """A further kind of generated image in every batch of the mixed training sets (a combined mix)."""
    root: str = ""  # a build or cut-and-paste folder (Market-1501 layout, or MSMT17's for MSMT17 data)
    kind: Literal["remix", "new"] = "remix"  # remix: real identities with their real pids; new: identities of its own
    share: float = 0.125  # its share of every batch
    label: LabelTreatment = "smooth"
    epsilon: float = 0.1


@dataclass
class AblationConfig:
    real_root: str = ""  # real data (Market-1501, Duke, MSMT17, CUHK03 or SimMarket); its query / gallery: the test set
    real_format: DataFormat = "auto"  # layout of real_root (generator.data.layouts); auto: detected from its contents
    virtual_root: str = ""  # a Virtual Market build (Market-1501 layout)
    remix_root: str = ""  # a build of remixes of the real training identities (fg_mode: real), with their real pids
    settings: list[str] = field(default_factory=lambda: ["real", "virtual", "real+virtual", "virtual->real"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    train: ReidTrainConfig = field(default_factory=ReidTrainConfig)
    finetune_epochs: int = 0  # epochs of each later stage of an `A->B` setting (0: train.epochs)
    # true: every setting trains as many optimiser steps as train.epochs over the real data (iteration-matched)
    matched_steps: bool = False
    # real+remix / real+new / real+remix+new: the generated share of every batch, in [0, 1) (0: the real-only run)
    virtual_share: float = 0.25
    virtual_label: LabelTreatment = "onehot"  # generated images' targets: onehot, smooth (virtual_epsilon) or lsro
    virtual_epsilon: float = 0.1  # label smoothing of virtual_label: smooth
    virtual_triplet: bool = False  # with train.loss: triplet, remixes join the triplet term (new identities never)
    more_generated: list[MoreGenerated] = field(default_factory=list)  # further kinds in every mixed training set
    out: str = "outputs/reid/ablation"

    def __post_init__(self):
        """Every setting is a chain of known training sets, and the generated-image fields are in range; checked
        when the config loads."""
        if self.finetune_epochs < 0:
            raise ConfigValueError("finetune_epochs", f"{self.finetune_epochs}: use 0 (train.epochs) or a number of "
                                                      f"epochs")
        for name in ("settings", "seeds"):
            if not getattr(self, name):
                raise ConfigValueError(name, f"empty; name at least one (e.g. {name}: "
                                             f"{['real'] if name == 'settings' else [0]})")
        check_unique(self, "settings", "seeds")
        for s in self.settings:
            bad = next((st for st in (t.strip() for t in s.split("->")) if st not in TRAIN_SETS), None)
            if bad is not None:
                raise ConfigValueError("settings", f"{s!r}: stage {bad!r} is not one of {', '.join(TRAIN_SETS)} "
                                                   f"(stages are joined by '->', e.g. virtual->real)")
        if not 0 <= self.virtual_share < 1:
            raise ConfigValueError("virtual_share", f"{self.virtual_share}: use a share of the batch in [0, 1)")
        total = self.virtual_share + sum(m.share for m in self.more_generated)
        if self.more_generated and (min(m.share for m in self.more_generated) < 0 or total >= 1):
            raise ConfigValueError("more_generated", f"shares {[m.share for m in self.more_generated]}: each in "
                                                     f"[0, 1), their sum with virtual_share below 1")
        if not 0 <= self.virtual_epsilon <= 1:
            raise ConfigValueError("virtual_epsilon", f"{self.virtual_epsilon}: use a smoothing in [0, 1]")
        if self.virtual_triplet and self.train.loss != "triplet":
            raise ConfigValueError("virtual_triplet", "needs train.loss: triplet (the softmax loss has no triplet "
                                                      "term)")


def parse_setting(text: str) -> list[str]:
    stages = [s.strip() for s in text.split("->")]
    for s in stages:
        if s not in TRAIN_SETS:
            raise UserError(f"setting {text!r}: stage {s!r} is not one of {', '.join(TRAIN_SETS)} "
                            f"(stages are joined by '->')")
    return stages


def _slug(setting: str) -> str:
    return setting.replace("->", "_then_").replace("+", "_plus_")


def stage_dir(out: str | Path, setting: str, seed: int, stage: int = 0) -> Path:
    """Where ``run_ablation`` (with ``out``) trains stage ``stage`` of ``setting`` for ``seed``: its ``state.pt`` and
    ``result.json``."""
    return Path(out) / _slug(setting) / f"seed{seed}" / f"stage{stage}-{_slug(parse_setting(setting)[stage])}"


def check_kind(root, records: list, kind: str, given_as: str, fix: str) -> str:
    """Refuse generated images given as ``kind`` (remix: images of the real training identities, under their
    classes; new: identities of their own) whose folder's manifest says they show the other kind: read as given,
    every one would train under a class that is not the person shown. A folder without a manifest, or of origins of
    neither kind (a SimMarket's), is taken as given. Returns the folder as a results table names it: its name, and
    the origins its manifest gives (``cutpaste_market (cutpaste)``: what a setting such as real+remix was given)."""
    manifest, origins = manifest_origins(root)
    other = (NEW_ORIGIN,) if kind == "remix" else REAL_ORIGINS  # the other kind; any other origin (sim): as given
    wrong = next(((path, origins[Path(path).name]) for path, _, _ in records
                  if origins.get(Path(path).name) in other), None)
    if wrong is not None:
        shows = "a new identity" if kind == "remix" else "a real identity"
        raise UserError(f"{wrong[0]}: {manifest} gives it origin {wrong[1]!r} ({shows}), but {given_as} takes its "
                        f"folder as {'real identities' if kind == 'remix' else 'new identities'}; give that folder as "
                        f"{fix}")
    kinds = sorted(set(origins.values()))
    name = Path(root).resolve().name
    return f"{name} ({', '.join(kinds)})" if kinds else name


def check_roots(cfg: AblationConfig, needed: set[str]) -> None:
    """Refuse a dataset folder the settings read that is missing (or a file), before any is read: one line naming
    its config key and what makes it."""
    if not cfg.real_root:
        raise UserError("real_root: set it to a re-ID dataset (Market-1501, DukeMTMC-reID, MSMT17, CUHK03 or a "
                        "SimMarket; its query / gallery are the test set)")
    if defect := folder_defect(cfg.real_root):
        raise UserError(f"real_root: {cfg.real_root}: {defect}; set real_root to the root of a re-ID dataset "
                        "(--set real_root=...)")
    try:  # a folder that holds no dataset is named before the generated folders that would be made from it
        resolve_layout(cfg.real_root, cfg.real_format, "real_format")
    except UserError as e:
        raise UserError(f"real_root: {e}") from None
    roots = []
    if needed & USES_VIRTUAL and cfg.virtual_root:
        roots.append((cfg.virtual_root, "virtual_root", "make it with `vmarket build` (new identities, fg_mode: "
                      "sample) or set virtual_root to such a build"))
    if needed & USES_REMIX and cfg.remix_root:
        roots.append((cfg.remix_root, "remix_root", "make it with `vmarket cutpaste --root "
                      f"{cfg.real_root} --out {cfg.remix_root}` or a `vmarket build` of fg_mode: real, or set "
                      "remix_root to such a folder"))
    if needed & set(MIXED):
        roots += [(m.root, f"more_generated[{i}].root", "make it first (`vmarket build` of a config whose out it is, "
                   "or `vmarket cutpaste`), or drop the entry (--set \"more_generated=[]\" drops them all)")
                  for i, m in enumerate(cfg.more_generated) if m.root]
    for root, key, fix in roots:
        if defect := folder_defect(root):
            raise UserError(f"{key}: {root}: {defect}; {fix}")


def register_train_sets(cfg: AblationConfig, needed: set[str], progress: bool = False
                        ) -> tuple[dict[str, str], dict[str, Mix], list]:
    """torchreid dataset names for the training sets the settings use (all share the real query / gallery, the
    test set), the generated images of each mixed training set (trained on the real dataset), and the real training
    records."""
    check_roots(cfg, needed)
    real = market_records(cfg.real_root, progress=progress, fmt=cfg.real_format, fmt_key="real_format")
    names = {"real": register_dataset("vm_real", real["train"], real["query"], real["gallery"])}
    virtual = remix = []
    described = {}  # "new" / "remix" -> its folder as the results table names it
    if needed & USES_VIRTUAL:
        if not cfg.virtual_root:
            raise UserError("virtual_root: the settings use virtual data; set it to a Virtual Market build")
        virtual = market_records(cfg.virtual_root, ("train",), progress=progress)["train"]
        described["new"] = check_kind(cfg.virtual_root, virtual, "new", "virtual_root", "remix_root")
    if needed & {"virtual", "real+virtual"}:
        names["virtual"] = register_dataset("vm_virtual", virtual, real["query"], real["gallery"])
        merged, _ = merge_records(real["train"], virtual)
        names["real+virtual"] = register_dataset("vm_real_virtual", merged, real["query"], real["gallery"])
    if needed & USES_REMIX:
        if not cfg.remix_root:
            raise UserError("remix_root: the settings use remixes of the real identities; set it to a build made "
                            "with fg_mode: real")
        remix = market_records(cfg.remix_root, ("train",), progress=progress)["train"]
        described["remix"] = check_kind(cfg.remix_root, remix, "remix", "remix_root", "virtual_root")
    more = []
    if needed & set(MIXED):
        for m in cfg.more_generated:
            if not m.root:
                raise UserError("more_generated: every entry needs a root (a generated data folder)")
            records = market_records(m.root, ("train",), progress=progress)["train"]
            check_kind(m.root, records, m.kind, f"more_generated kind {m.kind}",
                       f"kind {'new' if m.kind == 'remix' else 'remix'}")
            pool = generated_pool(real["train"], records if m.kind == "remix" else [],
                                  records if m.kind == "new" else [], m.label)
            more.append(Mix(pool, m.share, m.label, m.epsilon, cfg.virtual_triplet, data=Path(m.root).name))
    mixes = {}
    for train_set in needed & set(MIXED):
        pool = generated_pool(real["train"], remix if "remix" in train_set else [],
                              virtual if "new" in train_set else [], cfg.virtual_label)
        mixes[train_set] = Mix(pool, cfg.virtual_share, cfg.virtual_label, cfg.virtual_epsilon, cfg.virtual_triplet,
                               more=more, data=" + ".join(described[k] for k in ("remix", "new") if k in train_set))
        names[train_set] = names["real"]
    return names, mixes, real["train"]


def run_ablation(cfg: AblationConfig, progress: bool = True) -> list[dict]:
    stages_of = {s: parse_setting(s) for s in cfg.settings}
    check_output_folder(cfg.out, "out", inputs={"real_root": cfg.real_root, "virtual_root": cfg.virtual_root,
                                                "remix_root": cfg.remix_root},
                       datasets=["real_root", "virtual_root", "remix_root"])  # before the data is read
    check_ablation_folder(Path(cfg.out))
    check_model(cfg.train.model, cfg.train.weights or None)
    if any(not (stage_dir(cfg.out, s, seed, k) / "result.json").is_file()
           for s, stages in stages_of.items() for seed in cfg.seeds for k in range(len(stages))):
        resolve_device(cfg.train.device)  # a run is left to train here (a finished table is read on any machine)
    needed = {st for stages in stages_of.values() for st in stages}
    names, mixes, real_train = register_train_sets(cfg, needed, progress)
    train = cfg.train
    if cfg.matched_steps:
        real_batches = train_batches_per_epoch(real_train, train.batch, train_sampler(train.loss))
        if real_batches == 0:
            raise UserError(f"matched_steps: the real training set ({len(real_train)} images) gives no full batch of "
                            f"train.batch={train.batch}; lower train.batch")
        train = replace(train, steps_per_epoch=real_batches)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    results = []
    for setting, stages in stages_of.items():
        for seed in cfg.seeds:
            init, steps = None, 0
            for k, train_set in enumerate(stages):
                run = stage_dir(out, setting, seed, k)
                tcfg = train if k == 0 or not cfg.finetune_epochs else replace(train, epochs=cfg.finetune_epochs)
                res = train_and_evaluate(names[train_set], names["real"], tcfg, run, seed, init_from=init,
                                         progress=progress, mix=mixes.get(train_set))
                init = run / "state.pt"
                steps += res["steps"]
            results.append(_combined(setting, seed, steps, res))
            if progress:
                print(f"{setting} seed {seed}: rank-1 {res['rank1']:.3f}, mAP {res['mAP']:.3f}")
    data = {setting: mixes[stages[-1]].data for setting, stages in stages_of.items() if stages[-1] in mixes}
    write_results(results, out, matched=cfg.matched_steps, data=data)
    return results


def check_ablation_folder(out: Path) -> None:
    """Refuse an ``out`` that holds files but is no ablation's output (its ``config.yaml`` names ``settings``): the
    runs and tables would be written among another job's files, or into a dataset."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        config = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = None
    if not isinstance(config, dict) or "settings" not in config:
        raise UserError(f"{out}: not empty, and not a re-ID ablation's output (no config.yaml of one); choose another "
                        "out (--set out=...) or empty the folder")


def _combined(setting: str, seed: int, steps: int, res: dict) -> dict:
    """One row of run_ablation's results: the last stage's metrics, the optimiser steps of every stage."""
    skip = ("train_set", "test_set", "source", "target", "steps", "mix")  # source / target: an older result.json's
    mix = dict(res.get("mix") or {})
    more = mix.pop("more", [])  # a combined mix's further kinds: one column each of counts and data, '+'-joined
    if more:
        mix["more_generated_per_batch"] = "+".join(str(m["generated_per_batch"]) for m in more)
        mix["more_data"] = "+".join(m.get("data", "") for m in more)
    return {"setting": setting, "seed": seed, "steps": steps, **{k: v for k, v in res.items() if k not in skip},
            **mix}


def finished_result(cfg: AblationConfig, setting: str, seed: int, steps_per_epoch: int | None = None) -> dict | None:
    """run_ablation's row for ``setting`` and ``seed`` once every stage has finished, read from the stages'
    ``result.json`` without reading any generated data (a run trained on another machine, whose generated images are
    not here); None while a stage is missing. A run trained otherwise than ``cfg`` asks is refused, as training
    refuses to reuse it: epochs, transforms, the mix (share, labels, generated images per batch, triplet), the
    training hyper-parameters the result records, and, when given, ``steps_per_epoch`` (it needs the real data)."""
    stages = parse_setting(setting)
    steps, res = 0, {}
    t = cfg.train
    for k, train_set in enumerate(stages):
        path = stage_dir(cfg.out, setting, seed, k) / "result.json"
        if not path.is_file():
            return None
        res = read_json_object(path, f"delete {path.parent} to train it again")
        # the day it trained (a CPU run's numbers depend on the machine and day): a result written before it was
        # recorded has its file's date
        res.setdefault("date", time.strftime("%Y-%m-%d", time.localtime(path.stat().st_mtime)))
        asked = {"epochs": t.epochs if k == 0 or not cfg.finetune_epochs else cfg.finetune_epochs,
                 "transforms": list(t.transforms), "model": t.model, "loss": t.loss, "lr": t.lr, "batch": t.batch,
                 "size": list(t.size)}
        if steps_per_epoch is not None:
            asked["steps_per_epoch"] = steps_per_epoch
        done = {key: res.get(key) for key in asked}
        done["transforms"] = list(res.get("transforms", ["random_flip"]))  # as training reads an older result
        for key in ("model", "loss", "lr", "batch", "size"):  # results written before these were recorded
            if key not in res:
                done[key] = asked[key]
        if train_set in MIXED:
            counts = parts_per_batch(t.batch, [cfg.virtual_share] + [m.share for m in cfg.more_generated])
            asked["mix"] = {"virtual_share": cfg.virtual_share, "virtual_label": cfg.virtual_label,
                            "virtual_epsilon": cfg.virtual_epsilon, "virtual_triplet": cfg.virtual_triplet,
                            "generated_per_batch": counts[0]}
            if cfg.more_generated:
                asked["mix"]["more"] = [{"data": Path(m.root).name, "virtual_share": m.share, "virtual_label": m.label,
                                         "virtual_epsilon": m.epsilon, "generated_per_batch": n}
                                        for m, n in zip(cfg.more_generated, counts[1:], strict=True)]
            mix = res.get("mix") or {}
            done["mix"] = {key: mix.get(key) for key in asked["mix"] if key != "more"}
            if "more" in asked["mix"] or "more" in mix:
                asked_more = asked["mix"].get("more", [])
                done["mix"]["more"] = [
                    # a result written before the further kinds' data was recorded: its data is taken as asked
                    {"data": m.get("data", asked_more[i]["data"] if i < len(asked_more) else None),
                     **{key: m.get(key) for key in ("virtual_share", "virtual_label", "virtual_epsilon",
                                                    "generated_per_batch")}}
                    for i, m in enumerate(mix.get("more", []))] or None
        elif res.get("mix"):
            asked["mix"], done["mix"] = None, res["mix"]
        if done != asked:
            diff = ", ".join(f"{key} {done[key]} (the config: {asked[key]})" for key in asked
                             if done[key] != asked[key])
            raise UserError(f"{path}: trained with {diff}; delete that run folder or write to another out")
        steps += res["steps"]
    return _combined(setting, seed, steps, res)


def write_results(results: list[dict], out: Path, matched: bool = False, data: dict[str, str] | None = None) -> None:
    """``results.csv``, ``results.md`` and ``cmc.png`` in ``out``; ``data``: {mixed setting: the generated data its
    batches were given (``check_kind``'s name of each folder)}, named in the table's notes."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "cmc"} for r in results])
    with atomic_path(out / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    atomic_write_text(out / "results.md", results_table(df, matched=matched, data=data))
    cmc_plot(results, out / "cmc.png")


def _cell(g, column: str) -> str:
    """``mean ± std`` over the seeds of one setting's ``column``, in percent (the value alone for one seed)."""
    if len(g) == 1:
        return f"{100 * g[column].mean():.1f}"
    return f"{100 * g[column].mean():.1f} ± {100 * g[column].std(ddof=1):.1f}"


def paired(df: pd.DataFrame, regime: str, recipe: str, against: str, metric: str,
           by: str = "recipe") -> tuple[float, float, int]:
    """Mean and standard error of ``recipe - against`` over the seeds both have in ``regime``; and that count.
    ``df``: the rows of a reference ablation (one per recipe x regime x seed), ``by`` the column naming the recipe."""
    a = df[(df.regime == regime) & (df[by] == recipe)].set_index("seed")[metric]
    b = df[(df.regime == regime) & (df[by] == against)].set_index("seed")[metric]
    d = (a - b).dropna()
    if len(d) == 0:
        return float("nan"), float("nan"), 0
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, len(d)


def results_table(df, matched: bool = False, data: dict[str, str] | None = None) -> str:
    lines = ["| setting | seeds | steps | rank-1 | rank-5 | mAP | mINP |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for setting, g in df.groupby("setting", sort=False):
        steps = "/".join(dict.fromkeys(str(int(v)) for v in g["steps"]))  # one unless seeds differ
        lines.append(f"| {setting} | {len(g)} | {steps} | {_cell(g, 'rank1')} | {_cell(g, 'rank5')} | "
                     f"{_cell(g, 'mAP')} | {_cell(g, 'mINP')} |")
    budget = ("iteration-matched: every stage trains as many optimiser steps per epoch as one pass over the real "
              "training data" if matched else
              "epoch-matched, not iteration-matched: each setting trains its epochs over its own data")
    mixed = ""
    if "generated_per_batch" in df:  # settings with generated images appended to the real batches (reid.mixed)
        for setting, g in df[df["generated_per_batch"].notna()].groupby("setting", sort=False):
            r = g.iloc[0]
            label = f"smooth eps {r.virtual_epsilon:g}" if r.virtual_label == "smooth" else r.virtual_label
            more = r.get("more_generated_per_batch")
            given = f" of {data[setting]}" if data and data.get(setting) else ""
            mixed += (f"; {setting}: {int(r.generated_per_batch)} generated images{given} appended to every real "
                      f"batch (share {r.virtual_share:g}), labels {label}"
                      + (f", then {more} of {r.more_data} (more_generated)" if isinstance(more, str) else "")
                      + (", remixes in the triplet term" if r.virtual_triplet else ""))
    return ("\n".join(lines) + "\n\n(percent, mean ± sample std over seeds; evaluated on the real query / gallery; "
            f"steps: optimiser steps over all stages; {budget}{mixed})\n")


def cmc_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for setting in dict.fromkeys(r["setting"] for r in results):
        curves = np.array([r["cmc"] for r in results if r["setting"] == setting])
        ranks = np.arange(1, curves.shape[1] + 1)
        ax.plot(ranks, 100 * curves.mean(0), marker="o", markersize=3, label=setting)
        if len(curves) > 1:
            ax.fill_between(ranks, 100 * curves.min(0), 100 * curves.max(0), alpha=0.15)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC on the real test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """``fig`` laid out and written to ``path`` as PNG, atomically, then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
