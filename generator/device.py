"""The device a job runs on, from its name (``auto``, ``cpu``, ``cuda``, ``cuda:N``), checked against this machine."""
from __future__ import annotations

import torch

from generator.config import DEVICE
from generator.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """The device every job runs on: ``auto`` is CUDA when present, else the CPU; ``cpu``, ``cuda`` or ``cuda:N``
    as named. A name that is none of these, or a GPU this machine does not have, is refused with the fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE.fullmatch(str(name)):
        raise UserError(f"device {name!r}: not a device; use auto, cpu, cuda or cuda:N")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: this machine has no CUDA GPU that torch {torch.__version__} can use; use "
                        f"cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from "
                        f"0; use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev
