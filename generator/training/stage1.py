"""Stage-I training (Sec. 3.1): disentangled reconstruction with 20 x L1 + DCGAN adversarial loss
(``generator.training.loss.Stage1Loss``).

``train(cfg, run_dir)`` is the one entry point; the CLI makes the run directory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from generator.api import checked_snapshot
from generator.config import ConfigValueError, DataConfig, check_ranges, save_config, to_dict
from generator.data.dataset import PersonDataset, StepBatchSampler, check_images, person_dataset
from generator.data.keypoints import outside_note
from generator.data.layouts import scan_dataset
from generator.errors import UserError
from generator.eval.grids import save_grid, swap_grid
from generator.eval.stage1_report import held_out_batch, held_out_ssim
from generator.io import atomic_copy, atomic_save, progress_bar
from generator.models.stage1 import DCGANDiscriminator, Stage1ModelConfig, build_generator
from generator.pose import NO_PERSON
from generator.training.identity import IdentityTerm, identity_labels
from generator.training.loss import Stage1Loss
from generator.training.runs import RunLog, capture_state, check_resume, prepare_data, restore_state
from generator.training.runtime import Runtime, barrier, cleanup, setup_runtime, time_up, unwrap, wrap_ddp


@dataclass
class Stage1TrainConfig:
    steps: int = 120000  # generator steps
    batch: int = 16  # images per step (per process under DDP)
    lr: float = 2e-5  # Adam learning rate of G and D
    beta1: float = 0.5
    beta2: float = 0.999
    lr_halve_every: int = 50000  # halve the learning rate every this many steps
    warmup_steps: int = 0  # linear learning-rate warm-up
    l1_weight: float = 20.0  # weight of the L1 reconstruction loss
    adv_weight: float = 1.0  # weight of the generator's adversarial loss
    l1_only_steps: int = 0  # steps of pure L1 before the adversarial term starts
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: Literal["bf16", "none"] = "bf16"  # bf16 autocast on CUDA | none (fp32)
    channels_last: bool = True  # channels_last memory format (faster on CUDA and on CPU)
    log_every: int = 50  # steps between metric records
    eval_every: int = 0  # steps between held-out reconstruction SSIM records (0: never)
    eval_images: int = 128  # held-out (query + gallery) images of that check
    sample_every: int = 1000  # steps between PNG grids
    snapshot_every: int = 1000  # steps between snapshot + state
    grid_size: int = 8  # people in each sample grid
    # identity loss on remixed people (generator/training/identity.py; beyond the paper): its weight (0: off),
    # the step it starts at (its classifier trains on the real images from step 0), the classifier's Adam rate
    id_weight: float = 0.0
    id_start: int = 0
    id_lr: float = 1e-3
    # feature matching in the adversarial phase (beyond the paper, as in pix2pixHD; generator/training/loss.py):
    # its weight (0: off)
    fm_weight: float = 0.0
    # the SSIM loss beside L1 (beyond the paper, as in Zhao et al. 2017; generator/training/loss.py): its weight
    # (0: off)
    ssim_weight: float = 0.0
    init_from: str = ""  # a stage-I run directory or snapshot whose generator weights start the run (fine-tuning; same
    # model config)

    def __post_init__(self):
        check_ranges(self, positive=("steps", "batch", "lr", "lr_halve_every", "log_every", "snapshot_every",
                                     "grid_size", "sample_every", "eval_images"),
                     non_negative=("warmup_steps", "l1_only_steps", "eval_every", "id_weight", "id_start",
                                   "id_lr", "fm_weight", "l1_weight", "adv_weight", "ssim_weight"),
                     below_one=("beta1", "beta2"))
        if self.fm_weight > 0 and self.adv_weight <= 0:
            raise ConfigValueError("fm_weight", f"{self.fm_weight} with train.adv_weight {self.adv_weight}: "
                                   "feature matching compares the discriminator's activations, and the "
                                   "discriminator trains only in the adversarial phase; set train.adv_weight > 0 "
                                   "or train.fm_weight to 0")


@dataclass
class Stage1Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: Stage1ModelConfig = field(default_factory=Stage1ModelConfig)
    train: Stage1TrainConfig = field(default_factory=Stage1TrainConfig)

    def __post_init__(self):
        h, w = self.data.size
        if self.model.roi_size > max(h, w):  # a body part's crop, resampled to roi_size x roi_size
            raise ConfigValueError("model.roi_size", f"{self.model.roi_size}: larger than the images ({h}x{w}), "
                                   "whose body parts it crops; use at most the image height (the paper: 48 at "
                                   "128x64, the reference: 24 at 64x32)")


def learning_rate(t: Stage1TrainConfig, step: int) -> float:
    lr = t.lr * 0.5 ** (step // t.lr_halve_every)
    if t.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / t.warmup_steps)
    return lr


@dataclass
class Stage1Nets:
    """Stage I's networks and optimisers, the identity term when the run has one, and the DDP wrappers of G and D
    (``Gd``, ``Dd``; the modules themselves in one process)."""
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ident: IdentityTerm | None = None
    Gd: nn.Module | None = None
    Dd: nn.Module | None = None

    @property
    def trained(self) -> dict:
        """Every module and optimiser the state holds, by name."""
        trained = {"G": self.G, "D": self.D, "opt_g": self.opt_g, "opt_d": self.opt_d}
        if self.ident is not None:
            trained.update(C=self.ident.classifier, opt_c=self.ident.opt)
        return trained


def train(cfg: Stage1Config, run_dir: Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, deadline: float | None = None) -> dict:
    """Train stage I; write grids, snapshot and state to ``run_dir``.
    Training images whose pose shows no person (``generator.pose.shows_person``) are kept, and counted in the
    log: stage I reads no label, so none is mislabelled, and with no pose mask (or a fragment of one) the image is
    the background branch's to reconstruct, from (nearly) empty pose maps and the "no person" foreground: the
    input cut-and-paste's person-free plates are decoded from. A person the keypoints missed is then learnt as
    background; to leave such images out, delete their rows from the keypoint CSV and set
    ``data.skip_missing_keypoints``.
    ``stop_after``: stop early at that step (tests). ``deadline``: a wall-clock time (``time.time()``) at which to
    save the state and stop, for jobs that must end inside a fixed window; ``resume`` continues them."""
    t = cfg.train
    rt = setup_runtime(t.device, t.amp, t.channels_last)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume(run_dir, cfg, "stage1")
    log = RunLog(run_dir, enabled=rt.is_main)
    ds, labelled = load_data(cfg, rt, log, progress)
    nets = build_nets(cfg, rt, ds, labelled)
    start = restore(nets, cfg, run_dir, log, resume)
    if rt.is_main:  # after the state is restored: a refused resume leaves the run's config as it was
        save_config(cfg, run_dir / "config.yaml")
    nets.Gd, nets.Dd = wrap_ddp(nets.G, rt), wrap_ddp(nets.D, rt)
    end = t.steps if stop_after is None else min(t.steps, stop_after)
    loader = make_loader(cfg, rt, ds, start, end)
    probes = make_probes(cfg, rt, ds, log)
    if rt.is_main:
        sources = ", ".join(map(str, [Path(cfg.data.root), *cfg.data.unlabelled_roots]))
        log.line(f"stage1: {len(ds)} images from {sources}, "
                 f"G {sum(p.numel() for p in nets.G.parameters()) / 1e6:.1f}M params, "
                 f"D {sum(p.numel() for p in nets.D.parameters()) / 1e6:.1f}M, device {rt.device}, "
                 f"world {rt.world_size}")
    loss = Stage1Loss(rt.device, rt.autocast, l1_weight=t.l1_weight, adv_weight=t.adv_weight,
                      l1_only_steps=t.l1_only_steps, id_weight=t.id_weight, id_start=t.id_start, ident=nets.ident,
                      fm_weight=t.fm_weight, ssim_weight=t.ssim_weight)
    end = run_steps(cfg, rt, nets, loss, loader, log, run_dir, probes, start, end, progress, deadline)
    if rt.is_main:
        log.line(f"stage1 finished at step {end}" if end == t.steps or end == stop_after
                 else f"stage1 stopped at its time limit at step {end} of {t.steps}; resume continues it")
    barrier(rt)
    cleanup(rt)
    return {"step": end, "run_dir": str(run_dir), "G": nets.G, "D": nets.D}


def load_data(cfg: Stage1Config, rt: Runtime, log: RunLog, progress: bool) -> tuple[PersonDataset, int]:
    """(training images, how many of them are labelled): the images of ``data.root``'s splits, then those of the
    unlabelled roots, each decoded once first, so that a broken file is named for what it is (before its missing
    keypoint row). The main process simulates a missing SimMarket root first."""
    t = cfg.train
    if rt.is_main:
        prepare_data(cfg.data, progress)
    barrier(rt)
    root = Path(cfg.data.root)
    size = tuple(cfg.data.size)
    layout = {"fmt": cfg.data.format, "fmt_key": "data.format"}  # the dataset layout, and how errors name it
    check_images(scan_dataset(root, tuple(cfg.data.splits), fmt=cfg.data.format, fmt_key="data.format"), size,
                 progress=progress and rt.is_main)
    kw = {"size": size, "heatmap_radius": cfg.data.heatmap_radius, "mask_radius": cfg.data.mask_radius,
          "skip_missing_keypoints": cfg.data.skip_missing_keypoints}
    ds = person_dataset(root, tuple(cfg.data.splits), **kw, **layout)
    labelled = len(ds)  # the images after these (unlabelled roots) carry no identity
    for extra in cfg.data.unlabelled_roots:  # training images of other people; their labels are never read
        check_images(scan_dataset(Path(extra), ("train",), fmt="auto", fmt_key="data.unlabelled_roots"), size,
                     progress=progress and rt.is_main)
        ds.extend(person_dataset(extra, ("train",), **kw, fmt="auto", fmt_key="data.unlabelled_roots"))
    if ds.skipped_missing:
        log.line(f"data: {ds.skipped_missing} training images without a keypoint row left out "
                 "(data.skip_missing_keypoints)")
    if ds.joints_outside:
        log.line(f"data: {outside_note(ds.joints_outside, ds.rows_outside)}")
    nobody = len(ds.without_person())
    if nobody:
        log.line(f"data: {nobody} training images show no person ({NO_PERSON}); kept, for the background branch")
    if len(ds) < t.batch:
        raise UserError(f"{root}: {len(ds)} training images, fewer than a batch of {t.batch}; lower train.batch")
    if t.id_weight > 0 and rt.world_size > 1:
        raise UserError("train.id_weight > 0: the identity loss runs in one process; set it to 0 under torchrun")
    return ds, labelled


def build_nets(cfg: Stage1Config, rt: Runtime, ds: PersonDataset, labelled: int) -> Stage1Nets:
    """G, D and their Adam optimisers, seeded with ``train.seed``; the identity term (over the identities of the
    first ``labelled`` images of ``ds``) when ``train.id_weight`` > 0."""
    t, m = cfg.train, cfg.model
    torch.manual_seed(t.seed)
    G = build_generator(m, tuple(cfg.data.size)).to(rt.device)
    D = DCGANDiscriminator(tuple(cfg.data.size), m.disc_channels).to(rt.device)
    if rt.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    ident = None
    if t.id_weight > 0:
        ident = IdentityTerm(identity_labels([r.pid for r in ds.records], labelled), rt.device, t.id_lr)
    return Stage1Nets(G, D, opt_g, opt_d, ident)


def restore(nets: Stage1Nets, cfg: Stage1Config, run_dir: Path, log: RunLog, resume: bool) -> int:
    """The step training starts at: with ``resume``, the state of ``run_dir`` (when it has one) is loaded into
    ``nets`` and the log cut back to its step; without a state, ``train.init_from``'s generator weights (when
    set) start a run at step 0."""
    t = cfg.train
    state = restore_state(run_dir, nets.trained) if resume else None
    if state is None and t.init_from:
        nets.G.load_state_dict(initial_weights(Path(t.init_from), cfg.model))
    if state is None:
        return 0
    start = int(state["step"])
    log.truncate_after(start)
    log.line(f"resumed at step {start}" + (f"; {', '.join(state['dropped'])} restart from a packed state"
                                            if state.get("dropped") else ""))
    return start


def make_loader(cfg: Stage1Config, rt: Runtime, ds: PersonDataset, start: int, end: int
                ) -> torch.utils.data.DataLoader:
    """The batches of steps ``start`` to ``end`` (this rank's share under DDP)."""
    t = cfg.train
    sampler = StepBatchSampler(len(ds), t.batch, t.seed, cfg.data.flip, start, end, rt.rank, rt.world_size)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=cfg.data.workers,
                                       persistent_workers=False, pin_memory=rt.device.type == "cuda")


def make_probes(cfg: Stage1Config, rt: Runtime, ds: PersonDataset, log: RunLog) -> tuple[dict, dict | None]:
    """(grid batch, held-out batch): the people of the sample grids, spread over the dataset (names sort by
    identity, so the swaps mix different people); the held-out images of the SSIM check (main process, with
    ``train.eval_every`` > 0; else None, and when the held-out splits cannot be read the log says why)."""
    t = cfg.train
    grid_idx = torch.linspace(0, len(ds) - 1, min(t.grid_size, len(ds))).long().tolist()
    grid_batch = rt.to_device(torch.utils.data.default_collate([ds.item(i) for i in grid_idx]))
    held_out = None
    if rt.is_main and t.eval_every > 0:
        try:
            held_out = rt.to_device(held_out_batch(Path(cfg.data.root), tuple(cfg.data.size), cfg.data.heatmap_radius,
                                                   cfg.data.mask_radius, t.eval_images, fmt=cfg.data.format,
                                                   fmt_key="data.format"))
        except UserError as e:
            log.line(f"data: no held-out SSIM during training: {e}")
    return grid_batch, held_out


def train_step(nets: Stage1Nets, loss: Stage1Loss, batch: dict, step: int, t: Stage1TrainConfig
               ) -> dict[str, torch.Tensor]:
    """One training step on ``batch``: the identity classifier's step (with an identity term), the generator's
    step with the discriminator frozen, then the discriminator's step on the same fakes (pix2pix order; only
    in the adversarial phase). The terms to log, by name."""
    for opt in (nets.opt_g, nets.opt_d):
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, step)
    zero = torch.zeros((), device=loss.device)
    c_loss, id_acc = nets.ident.update(batch) if nets.ident is not None else (zero, zero)
    nets.D.requires_grad_(False)
    loss_g, fake, terms = loss.generator(nets.G, nets.D, batch, step, nets.Gd)
    nets.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    nets.opt_g.step()
    nets.D.requires_grad_(True)
    d_loss = torch.zeros((), device=loss.device)
    if loss.adversarial(step):
        d_loss = loss.discriminator(nets.Dd, batch["image"], fake)
        nets.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        nets.opt_d.step()
    logged = {"l1": terms["l1"], "g_adv": terms["g_adv"], "d_loss": d_loss}
    for name in ("g_fm", "d_ssim"):
        if name in terms:
            logged[name] = terms[name]
    if nets.ident is not None:
        logged.update(g_id=terms["g_id"], id_classifier=c_loss, id_acc_real=id_acc)
    return logged


class Meter:
    """The means of the logged terms over the steps since the last metric record, and the images per second."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums, self.steps, self.images, self.t_last = {}, 0, 0, time.time()

    def add(self, terms: dict[str, torch.Tensor], images: int) -> None:
        self.images += images
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())  # note: a CPU-GPU sync point, once per step
        self.steps += 1

    def record(self, step: int, lr: float) -> tuple[dict, float]:
        """(the metric record of step ``step``, images per second); the sums start again."""
        ips = self.images / max(time.time() - self.t_last, 1e-9)
        rec = {"step": step, "lr": lr, "images_per_s": round(ips, 2),
               **{k: round(v / self.steps, 5) for k, v in self.sums.items()}}
        self.reset()
        return rec, ips


def run_steps(cfg: Stage1Config, rt: Runtime, nets: Stage1Nets, loss: Stage1Loss, loader, log: RunLog,
              run_dir: Path, probes: tuple[dict, dict | None], start: int, end: int, progress: bool,
              deadline: float | None) -> int:
    """Train the steps of ``loader`` (``start`` to ``end``), with their metric records, held-out checks, grids
    and checkpoints; the step training stopped at (``end``, or the step at which ``deadline`` passed)."""
    t = cfg.train
    bar = progress_bar(total=end, initial=start, desc="stage1", unit="step", enabled=progress and rt.is_main)
    meter = Meter()
    for step, batch in enumerate(loader, start=start):
        batch = rt.to_device(batch)
        terms = train_step(nets, loss, batch, step, t)
        done = step + 1
        meter.add(terms, len(batch["image"]) * rt.world_size)
        bar.update(1)
        if done % t.log_every == 0 or done == end:
            rec, ips = meter.record(done, learning_rate(t, step))
            log.metrics(rec)
            bar.set_postfix(l1=f"{rec['l1']:.4f}", d=f"{rec['d_loss']:.3f}", ips=f"{ips:.1f}")
        observe(cfg, rt, nets.G, probes, log, run_dir, done, end)
        stop = done < end and time_up(deadline, rt)
        if done % t.snapshot_every == 0 or done == end or done == t.l1_only_steps or stop:
            checkpoint(run_dir, cfg, nets, done, rt.is_main)
        if stop:
            end = done
            break
    bar.close()
    return end


def observe(cfg: Stage1Config, rt: Runtime, G: nn.Module, probes: tuple[dict, dict | None], log: RunLog,
            run_dir: Path, done: int, end: int) -> None:
    """After step ``done``, when due: the held-out SSIM record and log line, and the sample grid's PNG."""
    t = cfg.train
    grid_batch, held_out = probes
    if held_out is not None and (done % t.eval_every == 0 or done == end):
        G.eval()
        rec = held_out_ssim(G, held_out)
        G.train()
        log.metrics({"step": done, **rec})
        log.line(f"step {done}: held-out SSIM {rec['eval_ssim']:.4f}, mask-SSIM {rec['eval_mask_ssim']:.4f}"
                 + (f" ({rec['eval_without_person']} images without a person left out)"
                    if rec["eval_without_person"] else ""))
    if rt.is_main and (done % t.sample_every == 0 or done == end):
        G.eval()
        save_grid(swap_grid(G, grid_batch), len(grid_batch["image"]), run_dir / f"grid-{done:07d}.png")
        G.train()


def checkpoint(run_dir: Path, cfg: Stage1Config, nets: Stage1Nets, done: int, is_main: bool) -> None:
    """The snapshot and state of step ``done``; at the end of an L1 warm-up followed by an adversarial phase,
    also ``snapshot-l1.pt``, a copy of the snapshot kept beside the final model so the phases can be compared."""
    t = cfg.train
    save_snapshot(run_dir, cfg, nets.trained, done, is_main)
    if is_main and done == t.l1_only_steps < t.steps and t.adv_weight > 0:  # before the state that moves past it
        atomic_copy(run_dir / "snapshot.pt", run_dir / "snapshot-l1.pt")
    save_state(nets.trained, done, is_main, run_dir)


def initial_weights(path: Path, m: Stage1ModelConfig) -> dict:
    """The generator weights of the stage-I snapshot ``path`` (``train.init_from``: a run directory or its snapshot
    file); refused unless its model config equals ``m``."""
    where, snap = checked_snapshot(path, "stage-I")
    path = Path(where)
    theirs = {**to_dict(Stage1ModelConfig()), **snap["config"]["model"]}
    diff = sorted(k for k, v in to_dict(m).items() if theirs.get(k) != v)
    if diff:
        raise UserError(f"{path}: its model config differs in {', '.join(diff)}; train.init_from needs the same model")
    return snap["G"]


def save_snapshot(run_dir: Path, cfg: Stage1Config, trained: dict, step: int, is_main: bool) -> None:
    """The snapshot: G and the config."""
    if is_main:
        atomic_save({"kind": "stage1", "config": to_dict(cfg), "step": step, "G": unwrap(trained["G"]).state_dict()},
                    run_dir / "snapshot.pt")


def save_state(trained: dict, step: int, is_main: bool, run_dir: Path) -> None:
    """The state a resumed run starts from: every module and optimiser in ``trained``, RNGs, step."""
    if is_main:
        atomic_save(capture_state({k: unwrap(v) for k, v in trained.items()}, kind="stage1", step=step),
                    run_dir / "state.pt")
