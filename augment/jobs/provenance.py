"""What a job records about the code and the command that made its outputs."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository (or the installed tree) holding augment/


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def repo_relative(obj, root: Path | None = None):
    """``obj`` (a JSON-like dict / list / str) with every string that is an absolute path inside ``root`` made
    relative to it. ``root`` defaults to the working directory, the repository root where ``make reference`` runs,
    so that a provenance file names paths in the repository, not on the machine that trained it."""
    root = Path.cwd() if root is None else Path(root)
    if isinstance(obj, dict):
        return {k: repo_relative(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [repo_relative(v, root) for v in obj]
    if isinstance(obj, str) and Path(obj).is_absolute():
        try:
            return Path(obj).relative_to(root).as_posix()
        except ValueError:  # outside the repository (e.g. a temporary directory): kept absolute
            return obj
    return obj
