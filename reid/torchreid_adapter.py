"""The one place torchreid (PyPI 0.2.5, a repackaging of upstream 1.4.0) is imported.

Its quirks are handled here: modules live under ``torchreid.reid.*``; it warns
at import that the Cython ranking is missing; its built-in ``market1501``
starts a download when ``<root>/market1501`` is missing and parses pid and
camera with ``([-\\d]+)_c(\\d)`` searched over the *whole path*; its train loader drops the last partial
batch, and ``RandomIdentitySampler``'s length is an estimate (an epoch may yield fewer batches).

Generated images join real ones (``reid.mixed``) through the one engine subclass here: torchreid's softmax or
triplet engine whose training step reads soft targets and a triplet mask from ``reid.mixed.MixedLoader`` batches.
"""
from __future__ import annotations

import contextlib
import io
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from generator.data.dataset import check_images
from generator.data.layouts import scan_dataset
from generator.errors import UserError
from generator.io import progress_bar
from reid.mixed import soft_cross_entropy, train_labels

_TORCHREID_NAME_RE = re.compile(r"([-\d]+)_c(\d)")


def import_torchreid():
    """``torchreid``, imported without its Cython warning (our evaluation does not use its ranking)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cython evaluation", category=UserWarning)
        import torchreid
        import torchreid.reid.metrics.rank  # noqa: F401  (the warning is raised here)
    return torchreid


# the prefix of the identity classifier's parameters in every torchreid model (classifier.weight, classifier.0.*,
# classifier_global.*): the one part of a model that is tied to its training set's identities
CLASSIFIER = "classifier"


def torchreid_evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """torchreid's own ranking (``evaluate_rank``, its Python code, Market-1501 protocol): the reference our
    evaluation (``reid.metrics``) is checked against. (CMC, mAP)."""
    rank = import_torchreid().reid.metrics.rank
    return rank.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                              use_metric_cuhk03=False, use_cython=False)


def builtin_market1501(root: str | os.PathLike, verbose: bool = False, **kwargs):
    """torchreid's own ``Market1501`` over ``<root>/market1501`` (never a download).

    ``root`` is the folder *above* ``market1501/``, as torchreid expects; inside
    it, torchreid uses ``Market-1501-v15.09.15/`` when present, else the split folders directly.
    """
    root = Path(root).resolve()
    dataset_dir = root / "market1501"
    if not dataset_dir.is_dir():
        raise UserError(
            f"{dataset_dir}: missing; torchreid's market1501 reads <root>/market1501/ (and would try a download "
            "without it): move or link the dataset there"
        )
    if _TORCHREID_NAME_RE.search(str(dataset_dir)):
        raise UserError(
            f"{dataset_dir}: the path itself matches torchreid's '<pid>_c<cam>' pattern, so it would misread every "
            "pid; move the dataset to a path without '<digits>_c<digit>'"
        )
    torchreid = import_torchreid()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The current data structure is deprecated")
        return torchreid.reid.data.datasets.image.market1501.Market1501(root=str(root), verbose=verbose, **kwargs)


# ---------------------------------------------------------------------------------------------
# datasets: plug-ins through torchreid's register_image_dataset


def market_records(root, splits=("train", "query", "gallery"), progress: bool = False, fmt: str = "auto",
                   fmt_key: str | None = None) -> dict[str, list[tuple[str, int, int]]]:
    """torchreid records ``(path, pid, camid)`` with 0-based cameras, per split, of a dataset in layout ``fmt``
    (auto: detected; Market-1501, DukeMTMC-reID, MSMT17 or CUHK03, generator.data.layouts): what torchreid's own
    dataset class of that layout gives, training pids not yet relabelled; Market-1501 junk is dropped as torchreid
    does. ``fmt_key`` names the format option in errors.

    Every image is decoded once first: torchreid's ``read_image`` retries an unreadable file forever, so a
    truncated JPEG or a stray non-image would hang training; here it is a UserError naming the file.
    """
    records = scan_dataset(root, splits, fmt=fmt, fmt_key=fmt_key)
    check_images(records, progress=progress, desc=f"checking {Path(root).name}")
    out: dict[str, list] = {s: [] for s in splits}
    for r in records:
        out[r.split].append((r.path, r.pid, r.camid - 1))
    return out


def merge_records(real: list, virtual: list, pid_offset: int | None = None) -> tuple[list, int]:
    """Real + virtual training records; virtual pids shifted by ``pid_offset`` (default: past the largest real pid),
    camera ids kept."""
    if pid_offset is None:
        pid_offset = max((p for _, p, _ in real), default=0) + 1
    real_pids = {p for _, p, _ in real}
    shifted = [(path, pid + pid_offset, cam) for path, pid, cam in virtual]
    clash = real_pids & {p for _, p, _ in shifted}
    if clash:
        raise UserError(f"pid offset {pid_offset} makes virtual ids collide with real ids (e.g. {min(clash)}); "
                        f"use a larger offset")
    return real + shifted, pid_offset


def register_dataset(name: str, train: list, query: list, gallery: list) -> str:
    """Register ``name`` with torchreid; train pids are relabelled 0..N-1 as torchreid expects."""
    for split, records in (("training", train), ("query", query), ("gallery", gallery)):
        if not records:  # torchreid would fail on its first record (IndexError) when the data manager is built
            raise UserError(f"dataset {name!r}: its {split} split holds no images (a folder of junk images, pid -1, "
                            f"alone counts as empty); re-ID training and evaluation need images in train, query "
                            f"and gallery")
    torchreid = import_torchreid()
    from torchreid.reid.data.datasets.dataset import ImageDataset

    pid2label = train_labels(train)
    train_l = [(path, pid2label[pid], cam) for path, pid, cam in train]

    class _Dataset(ImageDataset):
        def __init__(self, root="", **kwargs):
            super().__init__(train_l, list(query), list(gallery), **kwargs)

    _Dataset.__name__ = f"VirtualMarket_{name}"
    registry = vars(torchreid.reid.data.datasets)["__image_datasets"]
    if name in registry and not registry[name].__name__.startswith("VirtualMarket_"):
        raise UserError(f"dataset name {name!r} is one of torchreid's built-in datasets; choose another")
    registry.pop(name, None)  # re-registering one of ours (a second run in the same process) replaces it
    torchreid.data.register_image_dataset(name, _Dataset)
    return name


def register_market(name: str, root, fmt: str = "auto") -> str:
    """A re-ID dataset with a test split (real, SimMarket in any layout ``market_records`` reads, a build with
    ``test_share`` > 0) as torchreid dataset ``name``. A training-only set (a build, a cut-and-paste output) joins
    a real dataset through ``reid.extra_training.register_with_extra_training`` instead."""
    rec = market_records(root, fmt=fmt)
    return register_dataset(name, rec["train"], rec["query"], rec["gallery"])


# torchreid's train-time transforms (``build_transforms``), in the order it applies them
TRANSFORMS = ("random_flip", "random_crop", "random_patch", "color_jitter", "random_erase")


def build_datamanager(source: str, target: str, size=(128, 64), batch: int = 32, workers: int = 2,
                      sampler: str = "RandomSampler", num_instances: int = 4, use_gpu: bool = False,
                      transforms: tuple[str, ...] = ("random_flip",)):
    torchreid = import_torchreid()
    with contextlib.redirect_stdout(io.StringIO()):  # torchreid prints a dataset summary banner
        return torchreid.data.ImageDataManager(
            root="", sources=source, targets=target, height=size[0], width=size[1], transforms=list(transforms),
            batch_size_train=batch, batch_size_test=128, workers=workers, train_sampler=sampler,
            num_instances=num_instances, use_gpu=use_gpu)


# ---------------------------------------------------------------------------------------------
# models and engines


MODELS = {"osnet_x0_25": "CPU default", "osnet_x1_0": "GPU", "resnet50": "GPU"}


def check_model(name: str, weights: str | None = None) -> None:
    """Refuse a model torchreid does not have, or a ``weights`` file that is not there: before a job writes."""
    if name not in import_torchreid().models.__model_factory:
        raise UserError(f"model {name!r}: unknown to torchreid; try one of {', '.join(MODELS)}")
    if weights:
        _read_weights(Path(weights))


def _numpy_scalars_allowed():
    """A checkpoint torchreid's engine saved holds numpy scalars (its rank-1) beside the state dict: while loading
    under ``weights_only`` they are allowed, by either of the names numpy 1 and 2 pickle them under, and nothing
    else that is not a tensor, a container or a number. (A torch without ``safe_globals`` allows nothing more.)"""
    if not hasattr(torch.serialization, "safe_globals"):
        return contextlib.nullcontext()
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtypes = [t for t in vars(getattr(np, "dtypes", np)).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    return torch.serialization.safe_globals([scalar, (scalar, "numpy.core.multiarray.scalar"),
                                             (scalar, "numpy._core.multiarray.scalar"), np.dtype, *dtypes])


def _read_weights(path: Path) -> dict:
    """The tensors of a state-dict file (a torchreid checkpoint's ``state_dict`` entry, or the dict itself)."""
    if not path.is_file():
        raise UserError(f"{path}: weights file missing; give a local state-dict file (nothing is downloaded)")
    try:
        with _numpy_scalars_allowed():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: the file is not a state dict torch can read
        raise UserError(f"{path}: not a readable state-dict file ({type(e).__name__}); give a .pth/.pt file saved "
                        "with torch.save(model.state_dict()), or a checkpoint of torchreid's engine") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: holds no tensors by name; give a file saved with torch.save(model.state_dict())")
    return state


def build_model(name: str, num_classes: int, loss: str = "softmax", weights: str | None = None):
    """A torchreid model with ``pretrained=False`` (no download); ``weights``: a local state-dict file to start from."""
    torchreid = import_torchreid()
    check_model(name)
    model = torchreid.models.build_model(name=name, num_classes=num_classes, loss=loss, pretrained=False)
    if weights:
        path = Path(weights)
        state = _read_weights(path)
        own = model.state_dict()
        usable = {k.removeprefix("module."): v for k, v in state.items()
                  if k.removeprefix("module.") in own and own[k.removeprefix("module.")].shape == v.shape}
        if not usable:
            raise UserError(f"{path}: none of its tensors fits {name} (names or shapes differ); give weights of "
                            f"that model")
        model.load_state_dict(usable, strict=False)
    return model


def build_engine(kind: str, datamanager, model, lr: float = 0.0015, epochs: int = 10, use_gpu: bool = False,
                 margin: float = 0.3, mixed_loader=None):
    """A torchreid softmax or triplet engine. It always gets a scheduler (torchreid's engines crash on save
    without one).

    ``mixed_loader``: a ``reid.mixed.MixedLoader``; the engine then trains on its batches (real + generated) with
    ``reid.mixed``'s soft-target cross-entropy over every row and torchreid's triplet term over the rows marked
    ``in_triplet``. On batches with no generated image that step is torchreid's own, bit for bit.
    """
    torchreid = import_torchreid()
    optimizer = torchreid.optim.build_optimizer(model, optim="adam", lr=lr)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="single_step",
                                                   stepsize=max(1, int(epochs * 0.75)))
    if kind not in ("softmax", "triplet"):
        raise UserError(f"engine {kind!r}: use softmax or triplet")
    if kind == "softmax":
        base = torchreid.engine.ImageSoftmaxEngine
        args = {"label_smooth": True}
    else:
        base = torchreid.engine.ImageTripletEngine
        args = {"margin": margin, "weight_t": 1.0, "weight_x": 1.0, "label_smooth": True}
    if mixed_loader is not None:
        base = _mixed_engine(base, triplet=kind == "triplet")
    engine = base(datamanager, model, optimizer=optimizer, scheduler=scheduler, use_gpu=use_gpu, **args)
    if mixed_loader is not None:
        engine.train_loader = mixed_loader
    return engine, optimizer, scheduler


def _mixed_engine(base, triplet: bool):
    """``base`` (torchreid's softmax or triplet engine) with a training step over ``MixedLoader`` batches."""

    class MixedEngine(base):
        def forward_backward(self, data):
            imgs, pids, targets, in_triplet = data["img"], data["pid"], data["target"], data["in_triplet"]
            every_row = bool(in_triplet.all())
            if self.use_gpu:
                imgs, pids, targets, in_triplet = imgs.cuda(), pids.cuda(), targets.cuda(), in_triplet.cuda()
            outputs = self.model(imgs)
            if not triplet:
                loss = self.compute_loss(soft_cross_entropy, outputs, targets)
            else:  # torchreid's ImageTripletEngine step, in its order, with the triplet term over in_triplet rows
                outputs, features = outputs
                if not every_row:
                    features, pids = features[in_triplet], pids[in_triplet]
                loss = 0
                loss += self.weight_t * self.compute_loss(self.criterion_t, features, pids)
                loss += self.weight_x * self.compute_loss(soft_cross_entropy, outputs, targets)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return {"loss": loss.item()}

    return MixedEngine


def image_reader(datamanager, transforms: tuple[str, ...] = ()):
    """``(path, key) -> (3, H, W)`` tensor for a generated training image: torchreid's train transforms
    ``transforms`` except the flip (``reid.mixed`` flips generated images with a generator of its own), then resize,
    to tensor and normalise as its test transform does. The random transforms draw from RNGs seeded by ``key``
    inside a fork of the global ones, so the real part of the batch (whose sampler and flips use the global RNGs)
    is untouched and a resumed run reads the same images; with none asked for, ``key`` is unused."""
    import_torchreid()
    from torchreid.reid.data.transforms import build_transforms
    from torchreid.reid.utils import read_image

    randomised = [t for t in transforms if t != "random_flip"]
    if not randomised:
        transform = datamanager.transform_te
        return lambda path, key=0: transform(read_image(path))
    with contextlib.redirect_stdout(io.StringIO()):  # torchreid prints the transforms it builds
        transform, _ = build_transforms(datamanager.height, datamanager.width, transforms=randomised)

    def read(path: str, key: int = 0) -> torch.Tensor:
        image = read_image(path)
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(key)
                random.seed(key)
                return transform(image)
        finally:
            random.setstate(state)

    return read


def train_batches_per_epoch(records: list, batch: int, sampler: str = "RandomSampler", num_instances: int = 4) -> int:
    """``len(train_loader)`` of torchreid's train loader over ``records``: its sampler's length over ``batch``,
    rounded down, as its DataLoader drops the last partial batch (``drop_last=True``).

    For ``RandomIdentitySampler`` that length is torchreid's own estimate; an epoch may yield a few batches fewer.
    """
    import_torchreid()
    from torchreid.reid.data.sampler import build_train_sampler

    return len(build_train_sampler(records, sampler, batch_size=batch, num_instances=num_instances)) // batch


def _cycle(loader, n: int):
    """``n`` batches of ``loader``, iterating it again (a fresh shuffle) whenever it runs out."""
    done = 0
    while True:
        before = done
        for batch in loader:
            yield batch
            done += 1
            if done == n:
                return
        if done == before:
            raise UserError(f"the training set yields no batch: it has fewer images than batch={loader.batch_size} "
                            "(torchreid drops the last partial batch); lower train.batch")


def train_one_epoch(engine, epoch: int, max_epoch: int, progress: bool = True, steps: int = 0) -> int:
    """One epoch of torchreid's own training step, with a progress bar and without its print-outs; the number
    of batches (optimiser steps) it ran.

    ``steps`` > 0: exactly that many batches, cycling the loader; torchreid's logging reads ``len(train_loader)``.
    """
    engine.epoch, engine.max_epoch = epoch, max_epoch
    loader = engine.train_loader
    seen = 0

    class _Bar:
        def __len__(self):
            return steps or len(loader)

        def __iter__(self):
            nonlocal seen
            batches = _cycle(loader, steps) if steps else loader
            for batch in progress_bar(batches, total=len(self), desc=f"epoch {epoch + 1}/{max_epoch}", unit="batch",
                                     enabled=progress, leave=False, mininterval=0.1):
                seen += 1
                yield batch

    engine.train_loader = _Bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            engine.train(print_freq=10 ** 9)
    finally:
        engine.train_loader = loader
    return seen
