"""Run directories, resumable states and logs (the EDM / stylegan habit of self-describing runs).

A run lives in ``outputs/<job>/<NNNNN>-<desc>/`` and holds ``config.yaml``,
``log.txt``, ``metrics.jsonl``, PNG grids, ``snapshot.pt`` (weights + config,
for inference) and ``state.pt`` (optimisers, step, RNG, for exact resume).
Every file is written through ``generator.io``'s atomic helpers, so a kill never
leaves a truncated checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

from generator.config import DataConfig, load_config, to_dict
from generator.errors import UserError
from generator.io import atomic_write_text, load_checkpoint
from generator.simmarket.simulate import simulate


def new_run_dir(parent: str | os.PathLike, desc: str) -> Path:
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in parent.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    run = parent / f"{max(ids, default=-1) + 1:05d}-{desc}"
    run.mkdir()
    return run


def latest_run_dir(parent: str | os.PathLike, desc: str) -> Path | None:
    parent = Path(parent)
    if not parent.is_dir():
        return None
    runs = sorted(p for p in parent.iterdir()
                  if re.match(rf"^\d{{5}}-{re.escape(desc)}$", p.name) and (p / "state.pt").exists())
    return runs[-1] if runs else None


def rng_state() -> dict:
    """Every RNG a training step may draw from: torch (CPU, and each CUDA device when present), numpy, Python."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy()),
        "python": torch.from_numpy(np.frombuffer(json.dumps(random.getstate()).encode(), dtype=np.uint8).copy()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_state():
    s = np.random.get_state()
    return [s[0], s[1].tolist(), s[2], s[3], s[4]]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    s = json.loads(bytes(state["numpy"].numpy()).decode())
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    p = json.loads(bytes(state["python"].numpy()).decode())
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        # a state saved with more devices than this process sees restores the devices it has
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


class RunLog:
    """Appends human lines to ``log.txt`` and JSON records to ``metrics.jsonl``."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = run_dir, enabled
        self.t0 = time.time()

    def line(self, text: str) -> None:
        if self.enabled:
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}\n")

    def metrics(self, record: dict) -> None:
        if self.enabled:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int | dict[str, int]) -> None:
        """On resume: drop metric records written after the state being resumed (they will be redone).

        ``step``: the step resumed from, or ``{factor: step}`` for logs whose records carry a ``factor`` (stage II
        trains its mappings one after another, so each factor resumes from its own step).
        """
        path = self.run_dir / "metrics.jsonl"
        if not (self.enabled and path.exists()):
            return
        keep = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-append: dropped, as a step after the state is
            if not isinstance(rec, dict):
                continue
            upto = step.get(rec.get("factor"), 0) if isinstance(step, dict) else step
            if rec.get("step", 0) <= upto:
                keep.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def _each(obj, fn):
    return {k: fn(v) for k, v in obj.items()} if isinstance(obj, dict) else fn(obj)


def capture_state(objects: dict, **extra) -> dict:
    """A resumable state: ``state_dict()`` of every named module / optimiser (or dict of them), the RNGs, ``extra``."""
    return {**{name: _each(obj, lambda o: o.state_dict()) for name, obj in objects.items()}, "rng": rng_state(),
            **extra}


def _differences(here, there, key: str = "") -> list[tuple[str, object, object]]:
    if isinstance(here, dict) and isinstance(there, dict):
        return [d for k in here if k in there for d in _differences(here[k], there[k], f"{key}.{k}" if key else k)]
    return [] if here == there else [(key, here, there)]


def not_a_run_of(run_dir: str | os.PathLike, job: str, error: Exception) -> UserError:
    """The refusal of a resume whose run's ``config.yaml`` is not a config of ``job`` (``error``: why not)."""
    defect = str(error).splitlines()[0].split("; ")[0]
    return UserError(f"{run_dir}: not a run of `vmarket train {job}` ({defect}); pass the folder of a {job} run to "
                     "--resume, or start a new run")


def check_resume(run_dir: str | os.PathLike, cfg, job: str, fixed: tuple[str, ...] = ("model",)) -> None:
    """Refuse (UserError) a resume that could not load ``run_dir``'s state, before anything there changes: a run of
    another job (its ``config.yaml`` is not a ``type(cfg)`` config), or a config whose ``fixed`` sections (the
    shapes of the trained weights) differ from the run's. Other settings (steps, schedules) may change on resume."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return
    try:
        before = load_config(type(cfg), path)
    except UserError as e:
        raise not_a_run_of(run_dir, job, e) from None
    now, then = to_dict(cfg), to_dict(before)
    changed = [d for section in fixed for d in _differences(now[section], then[section], section)]
    if changed:
        key, value, was = changed[0]
        more = f" (and {len(changed) - 1} more model settings)" if len(changed) > 1 else ""
        raise UserError(f"{run_dir}: {key} is {value!r} here but the run was trained with {was!r}{more}; resume "
                        f"with the run's own {'/'.join(fixed)} settings (its config.yaml), or start a new run")


def restore_state(run_dir: Path, objects: dict) -> dict | None:
    """Load ``run_dir/state.pt`` into the named objects (the inverse of ``capture_state``) and restore the RNGs;
    the state, or None when the run has none yet. The objects a packed state names in ``dropped`` (optimisers,
    ``generator.training.transfer``) keep their fresh state."""
    path = Path(run_dir) / "state.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path)
    for name, obj in objects.items():
        if name in state.get("dropped", ()):
            continue
        if name not in state:  # e.g. a run begun without the identity loss, resumed with it
            raise UserError(f"{path}: holds no {name!r} state, so it was saved under another configuration; resume "
                            "with the configuration the run began with, or start a new run")
        try:
            if isinstance(obj, dict):
                for k, o in obj.items():
                    o.load_state_dict(state[name][k])
            else:
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:  # weights of other shapes, or an optimiser of others
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            if lines[0].startswith("Error(s) in loading") and len(lines) > 1:  # torch's heading; the first defect
                lines = lines[1:]
            raise UserError(f"{path}: its {name!r} state does not fit this configuration ({lines[0][:200]}); resume "
                            "with the configuration the run began with, or start a new run") from None
    set_rng_state(state["rng"])
    return state


def prepare_data(data: DataConfig, progress: bool = True) -> Path:
    """The dataset root, simulating SimMarket first when the config asks for it and it is missing (in the layout
    data.format names; Market-1501 for auto)."""
    root = Path(data.root)
    if not root.exists() and data.simulate_ids > 0:
        layout = "market1501" if data.format == "auto" else data.format.split("_")[0]  # cuhk03_labeled: cuhk03
        simulate(root, data.simulate_ids, seed=data.simulate_seed, size=tuple(data.size), progress=progress,
                 layout=layout)
    return root
