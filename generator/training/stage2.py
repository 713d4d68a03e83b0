"""Stage II (Sec. 3.2): adversarial mappings Phi_fg, Phi_bg, Phi_pose from Gaussian noise to embeddings.

Stage I and the pose autoencoder are frozen; their encoders turn the training
images into the real embeddings once, and the mappings train on those. The
official objective is WGAN with weight clipping 0.01, RMSProp and 5 critic
steps per mapping step; WGAN-GP is an option (``generator.training.loss.Stage2Loss``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from generator.api import DisentangledModel, Sampler, checked_snapshot, real_embeddings
from generator.config import ConfigValueError, check_ranges, from_dict, save_config, to_dict
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import atomic_save, load_checkpoint, progress_bar
from generator.models.stage2 import (
    FACTORS,
    Stage2ModelConfig,
    build_critic,
    build_mapping,
    factor_settings,
    mapping_width,
    split_factor_entry,
)
from generator.training.loss import Stage2Loss
from generator.training.runs import RunLog, capture_state, check_resume, restore_state
from generator.training.runtime import TimeLimitReached, launch_rank, time_up


@dataclass
class Stage2TrainConfig:
    steps: int = 120000  # mapping steps per factor
    batch: int = 32
    critic_steps: int = 5  # critic updates per mapping update
    objective: Literal["wgan", "wgan-gp"] = "wgan"  # wgan (weight clipping, RMSProp) | wgan-gp (gradient penalty, Adam)
    lr: float = 2e-5  # RMSProp (wgan) or Adam (wgan-gp) learning rate
    clip: float = 0.01  # weight clipping of the WGAN critic
    gp_weight: float = 10.0  # gradient penalty weight of WGAN-GP
    holdout: float = 0.1  # share of embeddings kept out of training, for the metrics
    seed: int = 0
    device: str = "cpu"
    log_every: int = 200
    snapshot_every: int = 2000

    def __post_init__(self):
        check_ranges(self, positive=("steps", "batch", "lr", "critic_steps", "log_every", "snapshot_every"),
                     non_negative=("clip", "gp_weight"), below_one=("holdout",))


@dataclass
class Stage2Config:
    stage1_run: str = ""  # run directory (or snapshot) of stage I
    pose_run: str = ""  # run directory (or snapshot) of the pose autoencoder
    data_root: str = ""  # images to embed (default: stage I's data.root), train split
    # the training splits of other people to embed too (pid -1, identities never read): the mappings then learn
    # every person stage I saw, e.g. the unlabelled roots it trained on
    unlabelled_roots: list[str] = field(default_factory=list)
    factors: list[Literal["fg", "bg", "pose"]] = field(default_factory=lambda: list(FACTORS))  # mappings to train
    model: Stage2ModelConfig = field(default_factory=Stage2ModelConfig)
    train: Stage2TrainConfig = field(default_factory=Stage2TrainConfig)
    # settings of one mapping that differ from the model and train sections, "FACTOR:KEY=VALUE" each, e.g.
    # "fg:model.gaussian_start=true" or "bg:train.objective=wgan-gp" (generator.models.stage2.FACTOR_KEYS)
    per_factor: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.factors:
            raise ConfigValueError("factors", "empty; name at least one of fg, bg, pose")
        for entry in self.per_factor:  # each entry well formed
            try:
                split_factor_entry(entry)
            except UserError as e:
                raise ConfigValueError("per_factor", str(e).removeprefix("per_factor: ")) from None
        for f in FACTORS:  # each mapping's settings in range
            try:
                _factor_sections(self, f)
            except (UserError, ConfigValueError) as e:
                raise ConfigValueError("per_factor", f"{f}: {e}") from None


def _factor_sections(cfg: Stage2Config, factor: str) -> tuple[Stage2ModelConfig, Stage2TrainConfig]:
    """The model and train sections of ``cfg`` with the ``per_factor`` entries of ``factor`` applied."""
    d = factor_settings(to_dict(cfg), factor)
    return from_dict(Stage2ModelConfig, d["model"], "model"), from_dict(Stage2TrainConfig, d["train"], "train")


def factor_config(cfg: Stage2Config, factor: str) -> Stage2Config:
    """``cfg`` with the ``per_factor`` entries of ``factor`` applied: the settings its mapping trains with."""
    if not cfg.per_factor:
        return cfg
    model, train = _factor_sections(cfg, factor)
    return replace(cfg, model=model, train=train)


def split_holdout(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(round(n * share)))
    return perm[k:], perm[:k]


def train(cfg: Stage2Config, run_dir: Path, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          factors: list[str] | None = None, deadline: float | None = None) -> dict:
    """Train the mappings of ``factors`` one after another; ``stop_after`` and ``deadline`` as in stage I's
    ``train`` (a deadline stops the factor in training and leaves the rest for the resumed run)."""
    t = cfg.train
    factors = factors or cfg.factors
    if launch_rank()[1] > 1:  # no process group here: every rank would train the same mappings into one run
        raise UserError(f"WORLD_SIZE={launch_rank()[1]}: stage II trains in one process (its mappings are small); "
                        "run it without torchrun")
    check_job(cfg, factors)
    run_dir = Path(run_dir)
    if resume:
        check_resume(run_dir, cfg, "stage2", fixed=("model", "per_factor"))
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir)
    device = resolve_device(t.device)
    emb = load_embeddings(cfg, run_dir, progress, deadline)
    train_idx, _ = split_holdout(len(emb["fg"]), t.holdout, t.seed)
    trained = build_trained(cfg, {f: emb[f][train_idx] for f in FACTORS}, device)
    steps = restore(trained, run_dir, log) if resume else None
    save_config(cfg, run_dir / "config.yaml")  # after the state is restored: a refused resume leaves it as it was
    if steps is None:
        steps = {f: 0 for f in FACTORS}
    end = t.steps if stop_after is None else min(t.steps, stop_after)
    for f in factors:
        train_factor(cfg, f, emb[f][train_idx].to(device), trained, steps, end, run_dir, emb, log, progress,
                     deadline)
        if steps[f] < end:
            break
    _save(run_dir, cfg, trained, steps, emb)
    log.line(f"stage2 finished: steps {steps}" if all(steps[f] >= end for f in factors)
             else f"stage2 stopped at its time limit: steps {steps} of {t.steps}; resume continues it")
    return {"step": min(steps[f] for f in factors), "steps": steps, "run_dir": str(run_dir),
            "nets": trained["nets"], "critics": trained["critics"]}


def check_job(cfg: Stage2Config, factors: list[str]) -> None:
    """Refuse an unknown factor, and a config without the stage-I and pose-autoencoder runs."""
    for f in factors:
        if f not in FACTORS:
            raise UserError(f"factor {f!r}: use fg, bg or pose")
    if not cfg.stage1_run or not cfg.pose_run:
        raise UserError("stage2 needs stage1_run and pose_run (run directories of the trained stage I and pose AE)")


def load_embeddings(cfg: Stage2Config, run_dir: Path, progress: bool, deadline: float | None = None) -> dict:
    """The real embeddings of every factor: ``run_dir/embeddings.pt`` when present, else computed by the frozen
    stage I and pose autoencoder and saved there; that takes a while, and after ``deadline`` (``time.time()``
    seconds) it is left to the next run (``TimeLimitReached``)."""
    cache = run_dir / "embeddings.pt"
    if cache.exists():
        emb = load_checkpoint(cache)
        then = emb.get("unlabelled_roots")
        if then is None:  # a cache made before it recorded its roots: it embedded some iff it holds pid -1 rows
            same = bool((emb["pid"] < 0).any()) == bool(cfg.unlabelled_roots)
        else:
            same = then == list(cfg.unlabelled_roots)
        if not same:
            raise UserError(f"{cache}: embeds other unlabelled roots ({then if then is not None else 'some'}) than "
                            f"the config names ({cfg.unlabelled_roots}); train stage II with these in a new run "
                            f"directory")
        return emb
    # checked before the embedding only: it is saved whole, so a limit that cut it would throw its work away, and a
    # limit shorter than one embedding would never get past it (seconds on a GPU, a minute or two on a CPU)
    if time_up(deadline):
        raise TimeLimitReached("the time limit came before stage II embedded its training images")
    emb = real_embeddings(cfg.stage1_run, cfg.pose_run, cfg.data_root or None, progress=progress,
                          unlabelled_roots=cfg.unlabelled_roots, device=resolve_device(cfg.train.device))
    atomic_save({**emb, "unlabelled_roots": list(cfg.unlabelled_roots)}, cache)
    return {**emb, "unlabelled_roots": list(cfg.unlabelled_roots)}


def _optimiser(params, t: Stage2TrainConfig) -> torch.optim.Optimizer:
    """RMSProp for ``wgan``, Adam (betas 0.5, 0.9) for ``wgan-gp``."""
    if t.objective == "wgan":
        return torch.optim.RMSprop(params, lr=t.lr)
    if t.objective == "wgan-gp":
        return torch.optim.Adam(params, lr=t.lr, betas=(0.5, 0.9))
    raise UserError(f"train.objective {t.objective!r}: use wgan or wgan-gp")


def build_trained(cfg: Stage2Config, train_emb: dict, device: torch.device) -> dict[str, dict]:
    """The mappings (``nets``), critics and their optimisers (``opt_g``, ``opt_c``) of every factor, each a dict by
    factor, seeded with ``train.seed``: what the state holds. ``train_emb``: the training embeddings by factor
    (their sizes; under ``model.gaussian_start`` the Gaussian each mapping starts from)."""
    torch.manual_seed(cfg.train.seed)
    c = {f: factor_config(cfg, f) for f in FACTORS}  # each mapping's own settings
    nets = {f: build_mapping(train_emb[f].shape[1], mapping_width(c[f].model, f), c[f].model.blocks,
                             c[f].model.gaussian_start, c[f].model.z_std) for f in FACTORS}
    for f in FACTORS:
        if c[f].model.gaussian_start:
            nets[f].fit(train_emb[f])
    nets = {f: n.to(device) for f, n in nets.items()}
    critics = {f: build_critic(train_emb[f].shape[1], c[f].model.critic_width).to(device) for f in FACTORS}
    opt_g = {f: _optimiser(nets[f].parameters(), c[f].train) for f in FACTORS}
    opt_c = {f: _optimiser(critics[f].parameters(), c[f].train) for f in FACTORS}
    return {"nets": nets, "critics": critics, "opt_g": opt_g, "opt_c": opt_c}


def restore(trained: dict[str, dict], run_dir: Path, log: RunLog) -> dict[str, int] | None:
    """The steps of every factor in ``run_dir``'s state, loaded into ``trained``, with the log cut back to them;
    None when the run has no state yet."""
    state = restore_state(run_dir, trained)
    if state is None:
        return None
    steps = dict(state["steps"])
    log.truncate_after(steps)
    log.line(f"resumed at steps {steps}" + (f"; {', '.join(state['dropped'])} restart from a packed state"
                                             if state.get("dropped") else ""))
    return steps


def train_factor(cfg: Stage2Config, f: str, real_all: torch.Tensor, trained: dict[str, dict], steps: dict[str, int],
                 end: int, run_dir: Path, emb: dict, log: RunLog, progress: bool, deadline: float | None) -> None:
    """Train factor ``f``'s mapping, with its own settings (``factor_config``), from ``steps[f]`` to ``end`` on its
    real embeddings ``real_all``, advancing ``steps[f]``, with its metric records and checkpoints; it stops early
    when ``deadline`` passes."""
    t = cfg.train
    own = factor_config(cfg, f)
    loss = Stage2Loss(own.train.objective, own.train.gp_weight)
    bar = progress_bar(total=end, initial=steps[f], desc=f"stage2 {f}", unit="step", enabled=progress)
    t_last, acc = time.time(), {"w_dist": 0.0, "n": 0}
    for step in range(steps[f], end):
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + FACTORS.index(f) * 100_003 + step)
        w_dist = mapping_step(own, f, real_all, trained, loss, g)
        steps[f] = done = step + 1
        acc["w_dist"] += w_dist
        acc["n"] += 1
        bar.update(1)
        if done % t.log_every == 0 or done == end:
            rec = {"factor": f, "step": done, "w_dist": round(acc["w_dist"] / acc["n"], 6),
                   "steps_per_s": round(acc["n"] / max(time.time() - t_last, 1e-9), 1)}
            log.metrics(rec)
            bar.set_postfix(w=f"{rec['w_dist']:.4f}")
            t_last, acc = time.time(), {"w_dist": 0.0, "n": 0}
        if done < end and time_up(deadline):
            break  # saved once, after the loop
        if done % t.snapshot_every == 0 or done == end:
            _save(run_dir, cfg, trained, steps, emb)
    bar.close()


def mapping_step(cfg: Stage2Config, f: str, real_all: torch.Tensor, trained: dict[str, dict], loss: Stage2Loss,
                 g: torch.Generator) -> float:
    """``train.critic_steps`` critic updates (weights clipped under wgan), then one update of factor ``f``'s
    mapping, drawing the real batches and the noise from ``g``; the Wasserstein estimate on the last critic
    batch."""
    t, m = cfg.train, cfg.model
    phi, critic = trained["nets"][f], trained["critics"][f]
    opt_g, opt_c = trained["opt_g"][f], trained["opt_c"][f]
    device, dim = real_all.device, real_all.shape[1]
    for _ in range(t.critic_steps):
        real = real_all[torch.randint(len(real_all), (t.batch,), generator=g).to(device)]
        z = (torch.randn(t.batch, dim, generator=g) * m.z_std).to(device)
        with torch.no_grad():
            fake = phi(z)
        loss_c = loss.critic(critic, real, fake)
        opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        opt_c.step()
        if t.objective == "wgan":
            with torch.no_grad():
                for p in critic.parameters():
                    p.clamp_(-t.clip, t.clip)
    z = (torch.randn(t.batch, dim, generator=g) * m.z_std).to(device)
    critic.requires_grad_(False)
    loss_g = loss.mapping(critic, phi(z))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    critic.requires_grad_(True)
    return loss.distance(loss_c, critic, real, fake)


def _save(run_dir: Path, cfg: Stage2Config, trained: dict[str, dict], steps: dict[str, int], emb: dict) -> None:
    """The snapshot (the mappings, their embedding sizes and the config) and the state (``trained``, RNGs, steps)."""
    dims = {f: int(emb[f].shape[1]) for f in FACTORS}
    atomic_save({"kind": "stage2", "config": to_dict(cfg), "steps": steps, "dims": dims,
                 "nets": {f: n.state_dict() for f, n in trained["nets"].items()}}, run_dir / "snapshot.pt")
    atomic_save(capture_state(trained, kind="stage2", steps=steps), run_dir / "state.pt")


def load_stage2(run: Path):
    """A trained stage-II run: (its config, the mappings' ``Sampler``, the ``DisentangledModel`` of its stage I and
    pose AE)."""
    _, snap = checked_snapshot(Path(run) / "snapshot.pt", "stage-II")
    cfg = from_dict(Stage2Config, snap["config"], str(run))
    return cfg, Sampler.load(run), DisentangledModel.load(cfg.stage1_run, pose=cfg.pose_run)
