"""Files and the terminal: atomic writes, checkpoint loading and progress bars, one helper per habit.

Every file the project writes goes to a temp name beside its target (``.NAME.PID.N.tmp``, which no scan of an
image folder picks up, since it does not end in ``.jpg``, and which no other writer shares, so two processes
writing the same file never collide) and is renamed into place when complete, so a kill never leaves a
truncated file under a valid name.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from generator.errors import UserError

_IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
_TEMP_COUNTER = itertools.count()  # temp names unique within a process; the pid makes them unique across processes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed onto ``path`` when the block succeeds, removed when it fails.

    Writers that infer a format from the file name must be given the format explicitly: the temp name ends in
    ``.tmp``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_TEMP_COUNTER)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path``'s parents that exists (``lexists``: a link that leads nowhere counts as there)."""
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            return parent
    return Path(path.absolute().anchor)


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be created in ``folder``, or None. ``os.access`` alone is not enough: root passes it for a
    read-only folder, and no one can write to a read-only file system or an immutable folder, so a probe folder is
    made and removed."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vmarket-probe-", dir=folder))
    except OSError as e:
        if e.errno == errno.ENOENT:  # the folder is there, but its file system makes nothing in it (/proc, /sys)
            return "its file system accepts no new files"
        return e.strerror or type(e).__name__
    return None


PERMISSION_FIX = "change its permissions, or use another path"
_WRITE_IN = os.W_OK | os.X_OK  # what making, renaming or removing a file needs of its folder


def access_denied(path: str | bytes | os.PathLike, need: str = "read or write", noun: str = "file") -> str:
    """The one-line defect behind a permission error (EACCES) on ``path``, naming the place that refuses:

    - the first folder on the way to ``path`` (links followed) that this user may not enter: the error names whatever
      path the failing call was given, often a file probed inside that folder;
    - where ``path`` is not there yet, the deepest folder that is, if this user may not write in it;
    - ``path`` itself, if this user may not ``need`` it (``need``: what the command does to it, "read" for an
      input; ``noun``: what it is, "config");
    - where ``path`` is there and may be read, its folder, if this user may not write in it (a removal or rename);
    - else ``path`` as given, without a guess.
    """
    given = os.fsdecode(path)
    plain = f"{given}: permission denied; {PERMISSION_FIX}"
    real = Path(os.path.realpath(given))  # a link's target is what the kernel refused
    here = Path(real.anchor)
    for part in real.parts[1:]:
        try:
            os.lstat(here / part)
        except PermissionError:
            return f"{here}: permission denied, this user may not enter that folder; {PERMISSION_FIX}"
        except OSError:  # not there (or a file in the way): what refused is the folder it would be made in
            if os.path.isdir(here) and not os.access(here, _WRITE_IN):
                return f"{here}: permission denied, this user may not write in that folder; {PERMISSION_FIX}"
            return plain
        here = here / part
    if os.path.isdir(real):
        if not os.access(real, os.R_OK | _WRITE_IN):
            return f"{real}: permission denied, this user may not list or write in that folder; {PERMISSION_FIX}"
        return plain
    if need == "read" or not os.access(real, os.R_OK | os.W_OK):
        return f"{real}: permission denied, this user may not {need} that {noun}; {PERMISSION_FIX}"
    if not os.access(real.parent, _WRITE_IN):
        return f"{real.parent}: permission denied, this user may not write in that folder; {PERMISSION_FIX}"
    return plain


def partial_path(path: str | os.PathLike) -> Path:
    """``.NAME.partial`` beside ``path``: where a job writes ``path``'s output until it is complete (then renames it
    onto ``path``), and where a killed job's work waits for the rerun that resumes it."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def folder_defect(path: str | os.PathLike) -> str | None:
    """What keeps ``path`` from being an input folder: "no such folder" (and, where a command that writes it was cut
    off, its unfinished ``.NAME.partial`` beside it) or "is a file, not a folder"; None if none."""
    path = Path(path)
    if path.is_dir():
        return None
    if path.exists():
        return "is a file, not a folder"
    partial = partial_path(path)
    try:
        stopped = partial.is_dir()
    except OSError:  # a name too long to carry the prefix and suffix: no command wrote it
        stopped = False
    if stopped:
        return (f"no such folder, only {partial.name} beside it, the unfinished work of a command that was stopped "
                "before it finished: run that command again to complete it")
    return "no such folder"


def check_output_folder(path: str | os.PathLike, key: str = "--out", beside: bool = False,
                        inputs: dict | None = None, datasets: Iterable[str] = ()) -> Path | None:
    """Refuse (UserError naming ``path`` and the option ``key`` that set it) an output folder that a job could not
    make or write, before the job starts: ``path`` is a file or a link that leads nowhere, one of its parents is a
    file, or the folder it would be made in (and ``path`` itself, when it exists) cannot be written. ``beside``: the
    job also writes next to ``path`` (a work folder renamed onto it when complete), so its parent must be writable.
    ``inputs`` ({what names an input, such as its option: its path}): ``path`` is none of the job's inputs and
    holds none, or the refusal of a non-empty ``path`` would advise deleting the input. ``datasets``: the names in
    ``inputs`` that are datasets, which ``path`` may not lie inside either (their scan would read what the job writes,
    and replacing the dataset would delete it); a run directory may hold its own outputs (RUN/eval).

    Returns the first of ``path`` and its parents that does not exist yet, the folder the job will create (None when
    ``path`` exists): a job that fails removes its own files, then the folders it made on the way
    (``remove_empty_folders``), so that a refused command leaves nothing behind."""
    path = Path(path)
    _check_name_lengths(path)
    if os.path.lexists(path):
        if path.is_symlink() and not path.exists():
            raise UserError(f"{path}: a symbolic link that leads nowhere (or to itself); choose another {key} or "
                            "remove the link")
        if not path.is_dir():
            raise UserError(f"{path}: is a file, not a folder; choose another {key} or remove the file")
    if beside and path.is_symlink():  # renamed into place, the output would replace the link, not fill its folder
        raise UserError(f"{path}: a symbolic link (to {os.path.realpath(path)}); the output is written beside it and "
                        f"renamed into place, which would replace the link: give the folder itself as {key}")
    if beside and path.expanduser().absolute().resolve() == Path.cwd().resolve():
        raise UserError(f"{path}: the current folder; the output is written beside it and renamed into place: choose "
                        f"a folder of its own as {key} (e.g. {key} out)")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise UserError(f"{ancestor}: is a file, not a folder, so {path} cannot be made; choose another {key}")
    folders = [ancestor]
    if path.is_dir():
        folders = [path, ancestor] if beside else [path]
    for folder in folders:
        reason = _unwritable(folder)
        if reason is not None:
            raise UserError(f"{folder}: cannot write there ({reason}); choose another {key} or make the folder "
                            "writable")
    _check_apart(path, key, inputs or {}, set(datasets))
    if path.exists():
        return None
    return next(p for p in [*reversed(path.absolute().parents), path.absolute()] if not os.path.lexists(p))


NAME_MAX, PATH_MAX = 255, 4096  # bytes of one name and of a whole path on Linux file systems
TOO_LONG_FIX = f"use a shorter name (at most {NAME_MAX} bytes a name, {PATH_MAX:,} a path)"  # and for ENAMETOOLONG


def _check_name_lengths(path: Path) -> None:
    """Refuse a path the file system could not make, before any of its folders is made (a job that made the short
    parents first and then failed on the long name would leave them behind)."""
    name = next((part for part in path.parts if len(os.fsencode(part)) > NAME_MAX), None)
    whole = len(os.fsencode(str(path.absolute())))
    if name is not None:
        raise UserError(f"{path}: the name {name[:40]}... is {len(os.fsencode(name))} bytes; {TOO_LONG_FIX}")
    if whole >= PATH_MAX:
        raise UserError(f"{path}: the path is {whole} bytes; {TOO_LONG_FIX}")


def _check_apart(out: Path, key: str, inputs: dict, datasets: set[str]) -> None:
    """``check_output_folder``'s refusal of an ``out`` that is one of ``inputs`` or holds one, or lies inside one of
    them that is a dataset (``datasets``: their names); empty paths skipped."""
    def resolved(p) -> Path | None:  # None for a link loop: check_output_folder or the input's reader names it
        try:
            return Path(p).expanduser().absolute().resolve()
        except (OSError, RuntimeError):
            return None

    o = resolved(out)
    for name, path in inputs.items():
        i = resolved(path) if path else None
        if o is None or i is None:
            continue
        if o == i:
            raise UserError(f"{out}: is the {name} folder itself; choose a new folder for {key}")
        if o in i.parents:
            raise UserError(f"{out}: holds {path}, the {name} folder; choose a {key} outside it")
        if name in datasets and i in o.parents:
            raise UserError(f"{out}: lies inside {path}, the {name} folder, a dataset that would then hold it; "
                            f"choose a {key} outside it")


def check_own_files(path: str | os.PathLike, names: Iterable[str], key: str = "--out", job: str = "this command"):
    """Refuse an existing folder ``path`` that holds anything but the files ``names`` that ``job`` writes there (and
    the temp files of its writes, ``atomic_path``): running the job again replaces its own files, never another's,
    such as a run's ``metrics.md`` when ``--out`` names the run."""
    path = Path(path)
    if not path.is_dir():
        return
    names = set(names)
    foreign = sorted(p.name for p in path.iterdir()
                     if p.name not in names and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserError(f"{path}: holds {foreign[0]}{more}, which {job} does not write; choose another {key} or empty "
                        f"the folder")


@contextlib.contextmanager
def removed_on_failure(work: str | os.PathLike | None, out: str | os.PathLike, created: str | os.PathLike | None):
    """A job's writing block: when it fails or is interrupted, its ``work`` folder (None: none yet) goes, and then the
    empty folders it made on the way to ``out`` (``created``, from ``check_output_folder``), so a refused or killed
    job leaves nothing behind."""
    try:
        yield
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        remove_empty_folders(Path(out).parent, created)
        raise


def remove_empty_folders(path: str | os.PathLike, top: str | os.PathLike | None) -> None:
    """Remove ``path`` and its parents up to ``top`` (a folder ``check_output_folder`` returned) while they are empty
    folders: what a refused job created on its way to its output, and nothing that holds a file."""
    if top is None:
        return
    path, top = Path(path).absolute(), Path(top).absolute()
    if path != top and top not in path.parents:
        return
    while True:
        try:
            path.rmdir()
        except OSError:  # not empty, or already gone
            if path.exists():
                return
        if path == top:
            return
        path = path.parent


def fresh_work_folder(out: str | os.PathLike, marker: str, what: str) -> Path:
    """``.OUT.partial`` beside ``out``, empty, holding the file ``marker`` (it marks the folder as an unfinished
    ``what``): a job writes its output there and renames it onto ``out`` when complete. A leftover of an unfinished
    run is cleared; a folder of that name without the marker is refused."""
    out = Path(out)
    work = partial_path(out)
    if work.exists():
        if not (work / marker).is_file():
            raise UserError(f"{work}: exists and is not an unfinished {what}; delete it")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / marker).write_text(f"unfinished {what}\n")
    return work


def read_json_object(path: str | os.PathLike, fix: str) -> dict:
    """The JSON object a job of the project wrote at ``path``; a file cut short by a kill, edited into something
    else or unreadable is a UserError naming it and ``fix``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({type(e).__name__}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not the JSON object vmarket writes; {fix}")
    return data


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """A hard link ``dst`` to ``src``; a copy where links are not possible (another file system, or not allowed),
    written beside ``dst`` and renamed, so that a killed copy leaves no cut-short file under the name. Whether it
    linked; a ``dst`` that exists is an error (FileExistsError), never replaced."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        if os.path.lexists(dst):  # also where linking failed for another reason first
            raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
        atomic_copy(src, dst, metadata=True)
        return False


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike, metadata: bool = False) -> None:
    """Copy ``src`` to ``dst`` through a temp file beside it (``metadata``: with its times and mode, as
    ``shutil.copy2``)."""
    with atomic_path(dst) as tmp:
        (shutil.copy2 if metadata else shutil.copyfile)(src, tmp)


def write_or_check(path: Path, text: str, check: bool, fix: str) -> int:
    """A rendered file: with ``check``, 0 when ``path`` holds ``text`` and 1 (with a line on stderr naming ``fix``)
    when it is stale; else ``path`` is (re)written and 0 returned."""
    if check:
        if path.is_file() and path.read_text() == text:
            return 0
        sys.stderr.write(f"{path}: stale; {fix}\n")
        return 1
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    print(f"{path}: up to date")
    return 0


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_save_image(image: Image.Image | np.ndarray, path: str | os.PathLike, **save_kwargs) -> None:
    """A PIL image or (H, W, 3) uint8 array to ``path`` (format from its suffix: .jpg or .png), atomically."""
    path = Path(path)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    with atomic_path(path) as tmp:
        image.save(tmp, format=_IMAGE_FORMATS[path.suffix.lower()], **save_kwargs)


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The checkpoint at ``path``; ``mmap``: its tensors mapped from the file, not read, for a caller that wants the
    numbers beside them (a step)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder, where a checkpoint file is needed; name the checkpoint's .pt file")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint missing; train the stage first or point at a run directory that has it")
    # our checkpoints hold tensors, dicts, lists and numbers only, so weights_only loading works
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}): check that the path names a "
                        f"checkpoint this project wrote; if it does, the file is cut short or damaged: train it "
                        f"again") from None


def progress_bar(iterable: Iterable | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             total: int | None = None, initial: int = 0, mininterval: float = 1.0, leave: bool = True) -> tqdm:
    """The progress bar of every long loop (tqdm); ``enabled=False`` hides it (``--quiet``, non-main ranks)."""
    return tqdm(iterable, desc=desc, unit=unit, disable=not enabled, total=total, initial=initial,
                mininterval=mininterval, leave=leave)
