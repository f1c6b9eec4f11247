"""Where models run: ``auto`` means CUDA when there is one, else the CPU."""

from __future__ import annotations

from typing import Any

DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def is_device(value: Any) -> bool:
    """True for ``auto``, ``cpu``, ``cuda`` and ``cuda:N``."""
    return isinstance(value, str) and (value in ("auto", "cpu", "cuda") or
                                       value.startswith("cuda:") and value[5:].isdigit())


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other names unchanged.

    Raises:
        ValueError: not a device name, or CUDA asked for where there is none.
    """
    if not is_device(device):
        raise ValueError(f"device={device!r} is invalid; allowed: {DEVICE_CHOICES}")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; allowed here: 'auto' or 'cpu'")
    return device


def torch_device(device: str = "auto"):
    """:func:`resolve_device` as a ``torch.device``."""
    import torch

    return torch.device(resolve_device(device))
