"""Frozen-encoder features, computed once per clip and kept on disk: the cheap training stage.

With the encoder frozen (``encoder_lr=0``), a clip's encoder states never change, so they are
computed once (content-sized, :meth:`EncoderClassifier.encode`) and stored under
``$HEARDET_CACHE/features`` keyed by the audio, the encoder's weights and the layers kept (the
last, or every layer's output for a layer-mixing head). Heads
then train for many epochs in minutes, and Optuna trials cost seconds instead of minutes.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from heardet.approaches.finetune.model import EncoderClassifier, collate, log_mel
from heardet.audio import SAMPLE_RATE
from heardet.files import atomic_write_bytes

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the key names the layers kept


def cache_root() -> Path:
    from heardet.whisper.hub import cache_dir

    return cache_dir() / "features"


def encoder_fingerprint(model: EncoderClassifier) -> str:
    """A short hash of the encoder's weights: two encoders share cached features only if it matches."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.encoder.state_dict().items()):
        if name.endswith(("conv1.weight", "layer_norm.weight", "fc2.bias")):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def crop_start(n_samples: int, bounds: Sequence[tuple[float, float]], max_seconds: float) -> int:
    """Where :func:`fixed_crop` starts, in samples."""
    size = int(round(max_seconds * SAMPLE_RATE))
    if n_samples <= size or not bounds:
        return 0
    middle = int((bounds[0][0] + bounds[0][1]) / 2 * SAMPLE_RATE)
    return min(max(0, middle - size // 2), n_samples - size)


def fixed_crop(audio: np.ndarray, bounds: Sequence[tuple[float, float]], max_seconds: float) -> np.ndarray:
    """The window a frozen encoder sees in training: the whole clip when it fits ``max_seconds``, else a
    window centred on the first phrase (or the clip's start when it has none). Deterministic, so cacheable."""
    start = crop_start(len(audio), bounds, max_seconds)
    return audio[start : start + int(round(max_seconds * SAMPLE_RATE))]


class FeatureCache:
    """Encoder states ``[frames, d_model]`` or ``[layers, frames, d_model]`` (float16 ``.npy``) under
    ``root/<key[:2]>/<key>.npy``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(audio: np.ndarray, identity: str) -> str:
        data = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
        return hashlib.sha256(f"v{FORMAT_VERSION}|{identity}|".encode() + data).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            value = np.load(path) if path.is_file() else None
        except (ValueError, OSError):  # a torn write: recompute it
            value = None
        self.hits += value is not None
        self.misses += value is None
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, value.astype(np.float16))
        atomic_write_bytes(path, buffer.getvalue())


def encode_clips(model: EncoderClassifier, feature_extractor, audios: Sequence[np.ndarray], batch_size: int = 8,
                 cache: FeatureCache | None = None, progress: bool = True) -> list[np.ndarray]:
    """Encoder states of each clip (each must fit the encoder), from ``cache`` where it has them.

    Returns:
        One float16 array ``[frames, d_model]`` per clip (``[layers, frames, d_model]`` when the model
        mixes layers), in input order: the values the cache stores, at half the memory of float32
        (:func:`pad_states` widens each batch to float32).
    """
    identity = f"{encoder_fingerprint(model)}|{type(feature_extractor).__name__}|{model.layers}"
    keys = [FeatureCache.key(a, identity) for a in audios] if cache is not None else [None] * len(audios)
    out: list[np.ndarray | None] = [cache.get(k) if cache is not None else None for k in keys]
    todo = sorted((i for i, v in enumerate(out) if v is None), key=lambda i: len(audios[i]))

    def run(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode(*collate([log_mel(feature_extractor, audios[i]) for i in rows], model.device))

    for row, states in states_in_batches(model, todo, batch_size, run, "encoding", progress):
        out[row] = states  # as stored: a cached run trains the same
        if cache is not None:
            cache.put(keys[row], states)
    if cache is not None and audios:
        logger.info("encoder features: %d cached, %d computed (%s)", len(audios) - len(todo), len(todo), cache.root)
    return [np.asarray(v, dtype=np.float16) for v in out]


def states_in_batches(model: EncoderClassifier, rows: Sequence[int], batch_size: int,
                      run: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]], desc: str,
                      progress: bool = True, leave: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """``(row, states)`` for each of ``rows``, in batches of ``batch_size`` given to ``run`` (which returns the
    batch's padded states ``[batch, ..., frames, d_model]`` and valid mask ``[batch, frames]``): each row's
    valid frames, float16 as the cache stores them. ``model`` runs in eval mode without gradients, and is put
    back in the mode it was in when the iteration ends. Rows sorted by length pad least. ``leave``: the progress
    bar stays on screen when done."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            starts = range(0, len(rows), batch_size)
            for start in tqdm(starts, desc=desc, unit="batch", disable=not progress or not rows, leave=leave):
                batch = list(rows[start : start + batch_size])
                hidden, valid = run(batch)
                for row, states, n in zip(batch, hidden.float().cpu().numpy(), valid.sum(dim=1).tolist()):
                    yield row, states[..., :n, :].astype(np.float16)
    finally:
        model.train(was_training)


def pad_states(states: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[..., frames, d_model]`` arrays zero-padded to the longest: ``[batch, ..., frames, d_model]``
    and the valid mask ``[batch, frames]``."""
    longest = max(s.shape[-2] for s in states)
    # Filled in torch: its float16 -> float32 copy is vectorised, numpy's not (a quarter of the time per batch).
    batch = torch.zeros((len(states), *states[0].shape[:-2], longest, states[0].shape[-1]), dtype=torch.float32)
    valid = torch.zeros((len(states), longest), dtype=torch.bool)
    for row, s in enumerate(states):
        batch[row, ..., : s.shape[-2], :] = torch.from_numpy(np.asarray(s))
        valid[row, : s.shape[-2]] = True
    return batch.to(device), valid.to(device)
