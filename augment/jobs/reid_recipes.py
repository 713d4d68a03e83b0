"""What the reference re-ID ablation is asked for: its worlds, data regimes and recipes (``ReidReferenceConfig``,
checked when it loads), and which of its runs the shipped ablation already holds (``Shipped``)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from augment.jobs.ablation_tables import REFERENCE_WORLD, read_ablation, read_cmc
from augment.jobs.provenance import REPO
from augment.makers.plates import PLATES_OF
from generator.config import MIN_IDS, TOO_FEW_IDS, ConfigValueError, to_dict
from generator.errors import UserError
from generator.shipped import FILES, checkpoint_sha256
from generator.simmarket.world import NUM_CAMERAS
from reid.train import ReidTrainConfig

# a recipe's generated data, one kind or several joined by '+' ('': real-only); remix-newpose: remixes in poses of
# other identities only (a pose the identity was never seen in)
KINDS = (*PLATES_OF, "remix", "remix-newpose", "new")
LabelName = Literal["onehot", "smooth", "lsro"]


FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a world's or regime's name: it names a folder under out


def _check_folder_name(name: str) -> None:
    if not FOLDER_NAME.fullmatch(name):
        raise ConfigValueError("name", f"{name!r}: use letters, digits, '-', '_' and '.' (it names a folder under out)")


def uses_generator(generated: str) -> bool:
    """Whether a recipe of these generated kinds (``generated``, e.g. ``cutpaste+hybrid``) trains on images the
    generator made: cut-and-paste alone does not, so its rows do not depend on the reference checkpoints."""
    return any(k and k != "cutpaste" for k in (generated or "").split("+"))


@dataclass
class World:
    name: str = "reference"  # its rows' `world` in ablation.csv, and its folder under out
    sim_seed: int = 0  # SimMarket seed: the scenes, cameras and people (0: the world the generator was trained on)
    style: Literal["flat", "textured"] = "flat"  # how SimMarket draws its people

    def __post_init__(self):
        _check_folder_name(self.name)


@dataclass
class Regime:
    name: str = "full"
    train_cameras: int = 0  # SimMarket --train-cameras: 0 keeps every camera, k limits each training identity to k

    def __post_init__(self):
        _check_folder_name(self.name)
        if not 0 <= self.train_cameras <= NUM_CAMERAS:
            raise ConfigValueError("train_cameras", f"{self.train_cameras}: use 1..{NUM_CAMERAS} (0: every training "
                                                    f"identity keeps all its cameras)")


@dataclass
class Recipe:
    name: str = "real"  # the recipe: its row's `recipe` in ablation.csv
    setting: str = "real"  # what reid.ablation trains on: real, real+remix, real+new, real+remix+new, A->B
    # its kinds of generated data, joined by '+': cutpaste | hybrid | inpaint | mixed | remix | remix-newpose | new
    # ('' for real-only). One share: the kinds are one pool (at most one real-identity kind, and new)
    generated: str = ""
    # generated share of every batch; a list (a combined recipe): one share per kind, each its own part of the batch
    share: float | list[float] = 0.25
    label: LabelName | list[LabelName] = "smooth"  # a list: one label treatment per kind
    epsilon: float = 0.1
    filter: bool = False  # the identity-consistency filter (reid.consistency) on the generated images
    transforms: list[str] | None = None  # None: train.transforms
    RENAMED: ClassVar[dict[str, str]] = {"source": "generated"}  # a config's old key -> its key now (refused)

    def __post_init__(self):
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise ConfigValueError("name", f"{self.name!r}: it names a folder under out; use no '/' or '\\' and "
                                           f"do not start it with '.'")
        bad = next((k for k in self.kinds if k not in KINDS), None)
        if bad is not None:
            raise ConfigValueError("recipes", f"{self.name}: generated {self.generated!r}: {bad!r} is not one of "
                                              f"{', '.join(KINDS)} (kinds are joined by '+')")
        if min(self.shares) < 0 or sum(self.shares) >= 1:
            raise ConfigValueError("recipes", f"{self.name}: share {self.share}: each share at least 0 and their sum "
                                              f"below 1 (they are parts of every batch)")
        if isinstance(self.label, list) and not isinstance(self.share, list):
            raise ConfigValueError("recipes", f"{self.name}: a label per kind needs a share per kind; give share as a "
                                              f"list too")
        if self.combined:
            if len(self.kinds) < 2 or len(self.shares) != len(self.kinds) or len(self.labels) != len(self.kinds):
                raise ConfigValueError("recipes", f"{self.name}: a share list is for two kinds or more: give one share "
                                                  f"(and one label, or a single label) per kind of {self.generated!r}")
            first = "new" if self.kinds[0] == "new" else "remix"
            if self.setting != f"real+{first}":
                raise ConfigValueError("recipes", f"{self.name}: a combined recipe's setting is real+{first} (its "
                                                  f"first kind, {self.kinds[0]}; the others join every batch), not "
                                                  f"{self.setting!r}")
        elif sum(k != "new" for k in self.kinds) > 1:
            raise ConfigValueError("recipes", f"{self.name}: {self.generated!r} holds several kinds of real-identity "
                                              f"images; give share as a list, one share per kind")

    @property
    def kinds(self) -> list[str]:
        return self.generated.split("+") if self.generated else []

    @property
    def uses_generator(self) -> bool:
        return uses_generator(self.generated)

    @property
    def combined(self) -> bool:
        """Several kinds, each its own part of the batch (a share per kind)."""
        return isinstance(self.share, list)

    @property
    def shares(self) -> list[float]:
        return list(self.share) if isinstance(self.share, list) else [self.share]

    @property
    def labels(self) -> list[str]:
        return list(self.label) if isinstance(self.label, list) else [self.label] * max(len(self.kinds), 1)


@dataclass
class ReidReferenceConfig:
    out: str = "outputs/reference/reid"
    sim_ids: int = 200  # SimMarket identities (half train, half test), the data the reference generator trained on
    # the SimMarket worlds, each with rows of its own (`world`); every world runs unless --world names some
    worlds: list[World] = field(default_factory=lambda: [World()])
    regimes: list[Regime] = field(default_factory=lambda: [Regime("full", 0), Regime("cameras2", 2)])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    train: ReidTrainConfig = field(default_factory=ReidTrainConfig)
    finetune_epochs: int = 0  # virtual->real: epochs of the fine-tuning stage (0: train.epochs)
    curve_every: int = 2  # the real-only recipe evaluates every that many epochs (its plateau)
    remix_images_per_id: int = 12  # generator remixes per real training identity
    new_identities: int = 300  # new identities (Phi_fg samples) and their images each
    new_images_per_id: int = 16
    filter_new_tau: float = 0.9  # the filter drops a new-identity image this near (cosine) a real identity
    recipes: list[Recipe] = field(default_factory=lambda: [Recipe()])
    # the real-only recipe that runs first in every seed: it records the learning curve (the plateau), and its model
    # of the same seed scores the identity-consistency filter
    anchor: str = "real"
    reference: str = ""  # generator checkpoints ('' = those shipped with the package)
    # the generator the table's rows are of: the sha256 of the reference checkpoints stage1.pt, pose.pt and stage2.pt,
    # in that order ([] = whichever `reference` holds); run or packaged with other checkpoints, the table is refused
    generator_sha256: list[str] = field(default_factory=list)
    package: str = "reid/reference"  # where --package copies the table, rows and provenance (in the repository)
    # the shipped ablation whose rows are reused ('' = package): another table's runs that this config would train
    # the same way (its real-only and cut-and-paste runs, for one) are not trained again
    reuse: str = ""
    figures: str = "docs/reid_reference"  # and the figures: <figures>_{cmc,curve,pairs}.png
    RENAMED: ClassVar[dict[str, str]] = {"sim_seed": "worlds"}  # a world's sim_seed: worlds: [{sim_seed: 0}]

    def __post_init__(self):
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ConfigValueError("recipes", f"recipe names repeat: {names}")
        for need in ("real", "cutpaste"):
            if need not in names:
                raise ConfigValueError("recipes", f"no recipe named {need!r}: the table compares every recipe "
                                                  f"with it")
        anchor = next((r for r in self.recipes if r.name == self.anchor), None)
        if anchor is None or anchor.generated or anchor.setting != "real":
            real = [r.name for r in self.recipes if not r.generated and r.setting == "real"]
            raise ConfigValueError("anchor", f"{self.anchor!r} is not a real-only recipe of the config; use one of "
                                             f"{', '.join(real) or '(none: add a real-only recipe)'}")
        if not self.regimes or len({r.name for r in self.regimes}) != len(self.regimes):
            raise ConfigValueError("regimes", "give at least one regime, each with a name of its own")
        if self.sim_ids < MIN_IDS:
            raise ConfigValueError("sim_ids", f"{self.sim_ids}: {TOO_FEW_IDS}")
        if self.finetune_epochs < 0 or self.curve_every < 0:
            key = "finetune_epochs" if self.finetune_epochs < 0 else "curve_every"
            raise ConfigValueError(key, f"{getattr(self, key)}: use 0 or a number of epochs")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigValueError("seeds", f"{self.seeds}: give at least one seed, none twice")
        if not self.worlds or len({w.name for w in self.worlds}) != len(self.worlds):
            raise ConfigValueError("worlds", "give at least one world, each with a name of its own")
        if self.generator_sha256 and (len(self.generator_sha256) != len(FILES) or not all(
                isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h) for h in self.generator_sha256)):
            raise ConfigValueError("generator_sha256", f"{self.generator_sha256}: give the sha256 (64 hex digits) of "
                                                       f"{', '.join(FILES.values())}, in that order, or [] for any")


FRESH = "fresh.json"  # in ``out``: the recipes a run was asked to train here again (``--fresh``), kept for later ones


def read_fresh(cfg: ReidReferenceConfig) -> list[str]:
    """The recipes of ``cfg`` that a run of it trained fresh (``out/fresh.json``; names no longer in the config are
    left out)."""
    path = Path(cfg.out) / FRESH
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: not a JSON list of recipe names; fix it or delete it (the recipes a run trained "
                        f"here again with --fresh: their shipped rows are not reused)")
    return [n for n in names if any(r.name == n for r in cfg.recipes)]


def shipped_tables(cfg: ReidReferenceConfig) -> list[str]:
    """The shipped ablations this config reads (its package, then the table it reuses)."""
    return list(dict.fromkeys(p for p in (cfg.package, cfg.reuse) if p))


def shipped_seconds(cfg: ReidReferenceConfig) -> dict:
    """The seconds each shipped run trained (``run_seconds`` of the shipped tables' provenance; the package's where
    both hold a run); {} where none is shipped or readable."""
    seconds: dict = {}
    for table in reversed(shipped_tables(cfg)):
        path = REPO / table / "provenance.json"
        try:
            recorded = json.loads(path.read_text()).get("run_seconds", {})
        except (OSError, ValueError, AttributeError):
            continue  # a pace to estimate with, no more: the table itself is checked where its rows are read
        if isinstance(recorded, dict):
            seconds.update(recorded)
    return seconds


class Shipped:
    """The rows of the shipped ablations (``package``, then ``reuse``: each one's ``ablation.csv`` and
    ``provenance.json``) that this config would train the same way: a run whose row is there is not trained again
    (``run``'s ``reuse``; where both hold a run, ``package``'s row). A row counts when the provenance's config agrees
    with this one on everything but the recipes, seeds and worlds; its recipe of that name is this config's recipe
    (and, for a filtered recipe, so is the anchor whose model scores the filter); and its world is drawn as one of
    this config's worlds (the same sim_seed and style; the row takes that world's name here; a table shipped before
    worlds were a key holds the world of its ``sim_seed``, drawn flat); and, for a recipe that uses the generator,
    its provenance records the reference checkpoints this config uses (``generator``). Such rows carry no CMC curve
    or learning curve; the provenance's plateaus of those worlds come with them.

    ``pinned``: the ``reuse`` table's rows of the recipes that need no generator (real-only, cut-and-paste), unless
    ``fresh`` names them. They are the runs that table compares, so they stand in this table even where the same run
    was trained here as well (a filtered recipe trains the anchor here for its model: ``--no-shipped``), and every
    difference to them pairs with the very runs the reused table pairs."""

    SAME = ("sim_ids", "regimes", "train", "finetune_epochs", "curve_every", "remix_images_per_id", "new_identities",
            "new_images_per_id", "filter_new_tau", "anchor", "reference")

    def __init__(self, cfg: ReidReferenceConfig, fresh: list[str] = ()):
        """``fresh``: recipes whose shipped rows are not reused (trained here again); with those an earlier run of
        ``out`` was given (``read_fresh``)."""
        unknown = sorted(set(fresh) - {r.name for r in cfg.recipes})
        if unknown:
            raise UserError(f"--fresh {','.join(fresh)}: no recipe named {unknown[0]!r}; the config's recipes are "
                            f"{', '.join(r.name for r in cfg.recipes)}")
        if cfg.reuse and not (REPO / cfg.reuse).is_dir():
            raise UserError(f"reuse: {cfg.reuse}: no such folder in {REPO}; name the folder of a shipped ablation "
                            "(such as reid/reference), or set reuse: '' (the config's package)")
        fresh = [*fresh, *(n for n in read_fresh(cfg) if n not in fresh)]
        self.rows: dict[tuple[str, str, str, int], dict] = {}
        self.plateaus: dict[tuple[str, str], dict] = {}  # (world, regime) -> the shipped anchor's plateau
        self.filters: dict[str, dict] = {}  # "<world>/<regime>/<filtered data>" -> its shipped filter summary
        self.generator: dict | None = None  # the reference checkpoints of the generator rows reused (sha256)
        self.pinned: dict[tuple[str, str, str, int], dict] = {}
        self.seconds: dict[tuple[str, str, str, int], float] = {}  # the seconds a reused row's run trained, if known
        sources = shipped_tables(cfg)
        self.summary = "; ".join(self._read(REPO / p, cfg, fresh, pin=p == cfg.reuse and p != cfg.package)
                                 for p in sources) + (
            f"; training {', '.join(fresh)} here again" if fresh else "")

    def _read(self, dest: Path, cfg: ReidReferenceConfig, fresh: list[str], pin: bool = False) -> str:
        """Take the rows of the shipped ablation at ``dest`` that no earlier source gave; what was reused, in words.
        ``pin``: its rows of the recipes that need no generator are ``pinned``."""
        if not (dest / "ablation.csv").is_file() or not (dest / "provenance.json").is_file():
            return f"no shipped ablation at {dest} to reuse rows from"
        provenance = json.loads((dest / "provenance.json").read_text())
        shipped = provenance.get("config", {})
        mine = to_dict(cfg)
        differ = [k for k in self.SAME if shipped.get(k) != mine[k]]
        if differ:
            return (f"the shipped ablation ({dest}) was trained with other {', '.join(differ)}: none of its rows is "
                    "reused")
        # rows of the recipes that use the generator are reused only when their generated images came from the same
        # reference checkpoints (a table whose provenance records none: not reused)
        made_with = provenance.get("generator")
        try:
            same_generator = made_with is not None and made_with == checkpoint_sha256(cfg.reference or None)
        except UserError:  # no reference checkpoints where the config points: none of them is the same
            same_generator = False
        skipped = reused = 0
        recipes = {r["name"]: r for r in shipped.get("recipes", [])}
        anchor_same = recipes.get(cfg.anchor) == to_dict(next(r for r in cfg.recipes if r.name == cfg.anchor))
        worlds = shipped.get("worlds") or [{"name": REFERENCE_WORLD, "sim_seed": shipped.get("sim_seed", 0)}]
        here = {}  # a shipped world's name -> this config's world drawn the same way
        for w in worlds:
            drawn = (w.get("sim_seed", 0), w.get("style", "flat"))
            here[w["name"]] = next((m.name for m in cfg.worlds if (m.sim_seed, m.style) == drawn), None)
        many = len(worlds) > 1
        for key, value in provenance.get("plateau", {}).items():
            world, _, regime = key.rpartition("/") if many else (worlds[0]["name"], "", key)
            if here.get(world) and value:
                self.plateaus.setdefault((here[world], regime), value)
        for key, value in provenance.get("filters", {}).items():  # <regime>/<name> in a table without worlds
            parts = key.split("/")
            world = here.get(parts[0] if len(parts) == 3 else worlds[0]["name"])
            if world:
                self.filters.setdefault("/".join([world, *parts[-2:]]), value)
        cmc = read_cmc(dest / "cmc.csv")  # the shipped runs' CMC, where it was kept
        seconds = provenance.get("run_seconds")
        seconds = seconds if isinstance(seconds, dict) else {}
        for row in read_ablation(dest / "ablation.csv").to_dict("records"):
            world = here.get(row["world"])
            recipe = next((r for r in cfg.recipes if r.name == row["recipe"] and r.name not in fresh), None)
            if world is None or recipe is None or recipes.get(recipe.name) != to_dict(recipe):
                continue
            if recipe.filter and not anchor_same:  # scored by another anchor's model than this config's
                continue
            key = (world, row["regime"], row["recipe"], int(row["seed"]))
            pinned = pin and not recipe.uses_generator
            if key in self.rows and not pinned:  # an earlier source's row of the same run
                continue
            if recipe.uses_generator:
                if not same_generator:
                    skipped += 1
                    continue
                self.generator = made_with
            row = {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}  # NaN: an empty cell
            row = {**row, "world": world, "generated": row.get("generated", ""), "label": row.get("label", ""),
                   "device": row.get("device", ""), "date": row.get("date", provenance.get("date", "")),
                   "cmc": cmc.get((row["world"], row["regime"], row["recipe"], int(row["seed"]))), "curve": None}
            run = f"{row['regime']}/{row['recipe']}/seed{int(row['seed'])}"  # a table before worlds: no world
            took = seconds.get(f"{row['world']}/{run}", seconds.get(run))
            if pinned:
                self.pinned[key] = row
            if key not in self.rows:
                self.rows[key] = row
                reused += 1
            if isinstance(took, (int, float)) and (pinned or key not in self.seconds):
                self.seconds[key] = float(took)
        pinned = len(self.pinned) if pin else 0  # one source pins: the other table
        return (f"reusing {reused} rows of the shipped ablation ({dest}) for runs trained the same way"
                + (f", and its {pinned} rows without the generator over the same runs here" if pinned else "")
                + (f"; not the {skipped} of the generator's recipes: their images came from other reference "
                   f"checkpoints than these, or from checkpoints the shipped provenance does not record"
                   if skipped else ""))

    def row(self, world: World, regime: Regime, recipe: Recipe, seed: int) -> dict | None:
        return self.rows.get((world.name, regime.name, recipe.name, seed))

    def pinned_row(self, world: World, regime: Regime, recipe: Recipe, seed: int) -> dict | None:
        """The reused table's row of this run, where it stands over a run here (``pinned``)."""
        return self.pinned.get((world.name, regime.name, recipe.name, seed))
