"""``report.md`` of a pipeline run: every number read from a file the run wrote, with its figures copied beside it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from generator.config import from_dict
from generator.io import atomic_write_text, load_checkpoint
from generator.models.stage1 import Stage1ModelConfig


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


def write_report(out: Path, cfg, prov: dict | None, times: dict) -> Path:
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
    sim = json.loads((out / "data" / "sim-reid" / "simmarket.json").read_text())
    readme = (vm / "README.txt").read_text().splitlines()
    lines = [
        "# Virtual Market demo report",
        "",
        _models_paragraph(out, cfg, prov),
        "",
        f"Data: SimMarket seed {sim['seed']}, {sim['identities']} identities "
        f"({sim['train_ids']} train / {sim['test_ids']} test), "
        f"{sim['images']} images at {sim['height']}x{sim['width']} for re-ID, and the same dataset at "
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
        "## Re-ID ablation (evaluated on SimMarket's real test split)",
        "",
        (out / "reid" / "results.md").read_text(),
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
