"""The torch device a worker computes on: ``cpu``, ``cuda`` or ``cuda:N``, checked once.

Used by the refinement (``RefineSettings.device``, ``mrepo refine/reconstruct --device``) and the
denoiser (``--denoise-device``). :func:`check_device_name` checks the spelling only (settings read
from a commit made on another machine stay readable); :func:`resolve_device` also needs CUDA to be
available for a CUDA device and says so in one line otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mrepo.store import InvalidInput

if TYPE_CHECKING:
    import torch

__all__ = ["check_device_name", "resolve_device"]

_NAME = re.compile(r"cpu|cuda(:[0-9]+)?")


def check_device_name(device: str, what: str = "device") -> str:
    """``device`` if it is spelled ``cpu``, ``cuda`` or ``cuda:N``; :class:`InvalidInput` otherwise."""
    if not isinstance(device, str) or not _NAME.fullmatch(device):
        raise InvalidInput(f"{what} {device!r}: use cpu, cuda or cuda:N")
    return device


def resolve_device(device: str, what: str = "device") -> torch.device:
    """The torch device ``device`` names; a CUDA device without CUDA (or without GPU N) is a one-line
    :class:`InvalidInput` naming ``what`` (e.g. ``refinement device``)."""
    import torch

    dev = torch.device(check_device_name(device, what))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInput(f"{what} {device!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInput(f"{what} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
