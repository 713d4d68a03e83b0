"""The plain model a gallery is written from: identities, each with its real images and the items (generated or
simulated images) shown beside the pictures that made them, and the dataset-level counts."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# the roles of the pictures beside a result, in the order a card shows them (the result last)
ROLES = ("source", "foreground", "donor", "pose", "background")
ROLE_NOTES = {
    "source": "the real image whose person the result shows",
    "foreground": "the real image whose foreground a new identity perturbs",
    "donor": "the image whose camera and background the result takes",
    "pose": "the image whose pose the result takes",
    "background": "the image whose background the result takes",
}
# what each manifest origin means on the page ("real": the real training images of an identity)
ORIGIN_NOTES = {
    "real": "real training images of the identity",
    "sim": "SimMarket image",
    "cutpaste": "cut-and-paste over the donor image",
    "hybrid": "cut-and-paste over a plate stage I decodes from the donor",
    "inpaint": "cut-and-paste over the donor with its own person filled in",
    "remix": "generator remix of a real identity",
    "virtual": "new identity sampled by the generator",
}


@dataclass
class Picture:
    """One image on the page: a file (``path``), or, where a factor was sampled rather than taken from an image,
    no file and a ``note`` saying what was sampled."""

    path: Path | None
    camid: int = 0  # 0: not known
    title: str = ""  # the name shown on hover (a path relative to its dataset)
    note: str = ""  # what the picture is beyond its role ("plate decoded from it", "Phi_bg sample")


@dataclass
class Item:
    """A generated or simulated image, with the pictures that made it as ``(role, picture)`` pairs."""

    result: Picture
    origin: str
    split: str = "train"
    parts: list[tuple[str, Picture]] = field(default_factory=list)
    kept: bool | None = None  # a filter's decision (None: the dataset was not filtered)
    reason: str = ""  # why the filter dropped it


@dataclass
class Identity:
    """One person: ``pid`` as the dataset labels it; ``kind`` real (a real training identity), new (sampled by the
    generator) or sim (a SimMarket person; pid 0 holds the distractors and -1 the junk images). ``part``: train or
    test where the dataset numbers its training and test people apart (MSMT17's layout: its training person 0 and
    test person 0 are two people, and neither is a distractor); ``key`` the number the page knows it by, unique
    within the gallery (the pid, or past every training pid for such a test person)."""

    pid: int
    kind: str
    real: list[Picture] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    part: str = ""
    key: int | None = None

    @property
    def label(self) -> str:
        if self.is_no_one:
            return "distractors" if self.pid == 0 else "junk"
        return {"real": "real identity", "new": "new identity", "sim": "SimMarket identity"}[self.kind]

    @property
    def is_no_one(self) -> bool:
        """SimMarket's distractors and junk, in the layouts that have them."""
        return self.kind == "sim" and self.pid <= 0 and not self.part

    @property
    def shown(self) -> str:
        """How the page names it: ``pid 7``, or ``test pid 7`` where training and test people are numbered apart."""
        return f"{self.part + ' ' if self.part else ''}pid {self.pid}"


@dataclass
class Gallery:
    """A dataset read for its gallery: ``kind`` cutpaste, build, filter or simmarket; ``summary`` the counts shown at
    the top of the page as ``(label, value, note)``."""

    title: str
    kind: str
    dataset: Path
    real_root: Path | None
    identities: list[Identity]
    summary: list[tuple[str, str, str]] = field(default_factory=list)
    filtered: bool = False  # items carry a filter's kept / rejected decision

    def items(self):
        return (item for ident in self.identities for item in ident.items)

    def origins(self) -> list[str]:
        """The origins on the page: real (when some identity shows its real images), then those of the items."""
        found = list(dict.fromkeys(item.origin for item in self.items()))
        return (["real"] if any(i.real for i in self.identities) else []) + found

    def cameras(self) -> list[int]:
        cams = {p.camid for i in self.identities for p in i.real}
        cams |= {item.result.camid for item in self.items()}
        return sorted(c for c in cams if c > 0)


def find_folder(recorded: str | os.PathLike | None, dataset: Path) -> Path | None:
    """The folder a dataset recorded (as it was given when the dataset was made: absolute, or relative to where the
    command ran): as recorded, else relative to the dataset folder or one of its parents; None when not found."""
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_absolute():
        return path if path.is_dir() else None
    for base in (Path.cwd(), dataset, *dataset.resolve().parents):
        if (base / path).is_dir():
            return base / path
    return None


def readme_real_root(folder: Path) -> str | None:
    """The real dataset a README.txt's loading code names (``real_root="..."``, an absolute path), or None."""
    readme = folder / "README.txt"
    if not readme.is_file():
        return None
    found = re.search(r'real_root="([^"]+)"', readme.read_text())
    return found.group(1) if found else None


def count(n: int) -> str:
    return f"{n:,}"
