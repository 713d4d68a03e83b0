"""The whole pipeline on SimMarket: data, stage I, pose AE, stage II, a Virtual Market and its gallery, the re-ID
ablation (with cut-and-paste, which needs no generator, trained beside the generated recipe) and ``report.md``.
Each stage is resumable, and a rerun reuses the stages that finished (the gallery, a few seconds, is written
again).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from augment.gallery.collect import read_dataset
from augment.gallery.page import write_gallery
from augment.jobs.report import check_reference_recipe, write_report
from augment.jobs.steps import (
    StageTimer,
    evaluate_generator,
    generator_configs,
    job_config,
    simulate_data,
    train_generator,
)
from augment.makers.build_config import BuildConfig
from augment.makers.builder import build
from augment.makers.cutpaste import cut_paste
from augment.makers.plates import PLATES_OF
from generator.config import MIN_IDS, TOO_FEW_IDS, ConfigValueError, check_size
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import check_output_folder
from generator.shipped import check_installed_from, install, provenance
from generator.simmarket.world import NUM_CAMERAS
from reid.ablation import AblationConfig, MoreGenerated, run_ablation
from reid.torchreid_adapter import check_model


@dataclass
class PipelineConfig:
    out: str = "outputs/demo"  # everything the pipeline writes goes under this folder
    sim_ids: int = 200  # SimMarket identities (half train, half test)
    sim_seed: int = 0
    sim_train_cameras: int = 0  # each training identity seen by this many cameras (0: all); the test split keeps all
    gen_size: tuple[int, int] = (64, 32)  # resolution the generator trains at
    reid_size: tuple[int, int] = (128, 64)  # resolution of the real re-ID data
    # job configs (in a config file: relative to its folder); their data and run paths are redirected under `out`
    stage1: str = "configs/demo/stage1.yaml"
    pose: str = "configs/demo/pose.yaml"
    stage2: str = "configs/demo/stage2.yaml"
    build: str = "configs/demo/build.yaml"
    reid: str = "configs/demo/reid.yaml"
    set: list[str] = field(default_factory=list)  # overrides per job, e.g. "stage1:train.steps=300"
    eval_pairs: int = 200  # counterfactual swap pairs scored after stage I
    from_scratch: bool = False  # train every generator stage in this run instead of using the reference checkpoints
    reference: str = ""  # folder of reference checkpoints ('' = those shipped with the package)
    # the generated training images: remix (generator remixes of the real identities, written by the build config),
    # hybrid (each real person pasted over a person-free plate stage I decodes for another camera) or inpaint (over
    # another camera's image with its own person filled in by such a plate); augment.makers.cutpaste writes the last two
    generated: str = "remix"
    # re-ID also trains real + cut-and-paste (each real person pasted into another camera's image: no generator) at
    # the generated recipe's share, labels, seed and steps, beside it: what the generator adds over pasting
    cutpaste_baseline: bool = True
    # > 0: a combined recipe: every batch gets cut-and-paste at the reid config's virtual_share, and the generated
    # images on top at this share (0: the generated images alone)
    combined_share: float = 0.0
    # the reference ablation's recipe the demo's generated run repeats, set beside it in the report ('': the recipe
    # of the same setting, generated data, share and labels)
    reference_recipe: str = ""
    CONFIG_FILES: typing.ClassVar = ("stage1", "pose", "stage2", "build", "reid")

    def __post_init__(self):
        check_size(self, "gen_size", "reid_size")
        if self.generated not in GENERATED:
            raise ConfigValueError("generated", f"{self.generated!r}: use one of {', '.join(GENERATED)}")
        if not 0 <= self.combined_share < 1:
            raise ConfigValueError("combined_share", f"{self.combined_share}: use a share of the batch in [0, 1)")
        if self.sim_ids < MIN_IDS:
            raise ConfigValueError("sim_ids", f"{self.sim_ids}: {TOO_FEW_IDS}")
        if not 0 <= self.sim_train_cameras <= NUM_CAMERAS:
            raise ConfigValueError("sim_train_cameras", f"{self.sim_train_cameras}: use 1..{NUM_CAMERAS} (0: every "
                                                        f"identity keeps 2-6 cameras)")
        if self.eval_pairs < 1:
            raise ConfigValueError("eval_pairs", f"{self.eval_pairs}: score at least 1 swap pair")


GENERATED = ("remix", "hybrid", "inpaint")


def generated_key(generated: str, fg_mode: str) -> str:
    """The re-ID config key of the pipeline's generated images: ``remix_root`` for images of the real training
    identities under their real pids (the builder's remixes, fg_mode: real; the pasted kinds, hybrid and inpaint,
    whatever the build config says, since the builder does not make them), ``virtual_root`` for a build of new
    identities (fg_mode: sample or remix), which are classes of their own."""
    return "remix_root" if generated != "remix" or fg_mode == "real" else "virtual_root"


def run_pipeline(cfg: PipelineConfig, progress: bool = True, log=print) -> Path:
    out = Path(cfg.out)
    gen_root, reid_root = out / "data" / "sim-gen", out / "data" / "sim-reid"
    s2_run, vm = out / "stage2", out / "virtual_market"
    # every job config (and every JOB:KEY=VALUE in `set`) is loaded before anything is written: a bad key fails now,
    # not after an hour of training
    s1cfg, pcfg, s2cfg = generator_configs(out, gen_root, cfg.gen_size, cfg.stage1, cfg.pose, cfg.stage2, cfg.set)
    bcfg = job_config(BuildConfig, cfg.build, [f"stage2_run={s2_run}", f"out={vm}"], cfg.set, "build")
    generated = generated_key(cfg.generated, bcfg.fg_mode)
    rcfg = job_config(AblationConfig, cfg.reid, [f"real_root={reid_root}", f"{generated}={vm}",
                                                  f"out={out / 'reid'}"], cfg.set, "reid")
    if cfg.combined_share:
        rcfg = combined_config(cfg, rcfg, "remix" if generated == "remix_root" else "new")
    # everything that can be refused is refused before anything is written: the names, the checkpoints, the re-ID
    # model and device (trained last, an hour later), and an out that holds another kind of run
    check_reference_recipe(cfg.reference_recipe)
    if not cfg.from_scratch:
        provenance(cfg.reference or None)  # the reference checkpoints are there and whole, before any data is made
        check_installed_from([out], cfg.reference or None)  # a run made with other checkpoints is not continued
    check_model(rcfg.train.model, rcfg.train.weights or None)
    resolve_device(rcfg.train.device)
    check_output_folder(out, "out")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in ("times.json", "data")):
        raise UserError(f"{out}: not empty, and not a pipeline's output (no times.json or data/); choose another out "
                        f"(--set out=...) or empty the folder")
    if cfg.from_scratch and (out / "reference.json").exists():
        raise UserError(f"{out}: holds a run made with the reference checkpoints; give --from-scratch another "
                        "out (--set out=...) or delete the folder")
    if not cfg.from_scratch and (out / "stage1" / "state.pt").exists():
        raise UserError(f"{out}: holds stages trained from scratch; rerun with --from-scratch, or give the "
                        "reference run another out (--set out=...)")
    out.mkdir(parents=True, exist_ok=True)
    stage = StageTimer(out)
    stage("data", lambda: simulate_data(((gen_root, cfg.gen_size), (reid_root, cfg.reid_size)), cfg.sim_ids,
                                        cfg.sim_seed, progress, log, cfg.sim_train_cameras))
    prov = None
    if cfg.from_scratch:
        train_generator(out, gen_root, s1cfg, pcfg, s2cfg, cfg.eval_pairs, stage, progress, log)
    else:
        prov = stage("reference", lambda: install(cfg.reference or None, out, gen_root, progress))
        log(f"[reference] using the reference checkpoints from {cfg.reference or 'the package'} "
            f"(stage I {prov['steps']['stage1']} steps)")
        evaluate_generator(out, gen_root, cfg.eval_pairs, stage, progress, log)

    def virtual():
        if cfg.generated != "remix":  # the real people, pasted at the re-ID size over the generator's plates
            s = cut_paste(reid_root, vm, size=tuple(cfg.reid_size), plates=PLATES_OF[cfg.generated],
                          stage1_run=out / "stage1", progress=progress)
            verb = "reusing" if s.get("already_complete") else "wrote"
            log(f"[build] {verb} {s['images']} {cfg.generated} images of {s['identities']} identities -> {vm}")
            return
        # always through build(): it skips the identities already written and refuses a folder built
        # from another config, so a rerun never reuses a stale Virtual Market
        s = build(bcfg, progress=progress)
        verb = "reusing" if s["rendered_now"] == 0 else "built"
        log(f"[build] {verb} {s.get('images', 0)} images of {s['identities']} identities -> {vm}")

    stage("build", virtual)

    def gallery():
        s = write_gallery(read_dataset(vm), out / "gallery", progress=progress)
        log(f"[gallery] {s['items']} images of {s['identities']} identities -> {s['index']}")

    stage("gallery", gallery)

    if cfg.cutpaste_baseline or cfg.combined_share:
        def paste():
            s = cut_paste(reid_root, out / "cutpaste", size=tuple(cfg.reid_size), plates=PLATES_OF["cutpaste"],
                          progress=progress)
            verb = "reusing" if s.get("already_complete") else "wrote"
            log(f"[cutpaste] {verb} {s['images']} cut-and-paste images of {s['identities']} identities")

        stage("cutpaste", paste)

    def reid():
        run_ablation(rcfg, progress=progress)
        if cfg.cutpaste_baseline:  # the same real batches, with pasted images in the generated ones' place
            run_ablation(baseline_config(cfg, rcfg), progress=progress)

    stage("reid", reid)
    report_path = write_report(out, cfg, prov, stage.times, rcfg)
    log(f"[report] {report_path}")
    return report_path


def baseline_config(cfg: PipelineConfig, rcfg: AblationConfig) -> AblationConfig:
    """The cut-and-paste run beside the pipeline's re-ID: real + the pasted images at the generated recipe's share,
    labels, seed and steps (``<out>/reid-cutpaste``)."""
    return replace(rcfg, remix_root=str(Path(cfg.out) / "cutpaste"), settings=["real+remix"], more_generated=[],
                   out=str(Path(cfg.out) / "reid-cutpaste"))


def combined_config(cfg: PipelineConfig, rcfg: AblationConfig, kind: str) -> AblationConfig:
    """The re-ID of a combined recipe: cut-and-paste (``<out>/cutpaste``) at the reid config's share, and the
    pipeline's generated images (``<out>/virtual_market``, real identities or new ones: ``kind``) on top at
    ``combined_share``, under the reid config's labels."""
    try:
        return replace(rcfg, remix_root=str(Path(cfg.out) / "cutpaste"), virtual_root="", more_generated=[
            MoreGenerated(str(Path(cfg.out) / "virtual_market"), kind, cfg.combined_share, rcfg.virtual_label,
                          rcfg.virtual_epsilon)])
    except ConfigValueError as e:
        raise UserError(f"combined_share: {cfg.combined_share} with the reid config's virtual_share "
                        f"{rcfg.virtual_share}: {e.reason}") from None
