"""Fine-tune the Whisper encoder classifier (approach 3): stratified k-fold CV, then the final fit.

Each fold starts from the same pretrained weights (a deep copy of one base model), trains on
content-sized batches (:mod:`heardet.encoder_clf`) with Adam in two parameter groups (encoder,
head) and cross-entropy, and scores its held-out clips the way inference does: whole when they
fit ``max_seconds``, else in overlapping windows, best window wins. The out-of-fold scores pick
the decision threshold (max macro F1).

Training crops: a clip longer than ``max_seconds`` is cut to a window that holds its phrase
(positives with bounds) or to a random window (negatives).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from heardet.audio import SAMPLE_RATE, AudioError, load_audio
from heardet.cv import CVResult, best_threshold, stratified_folds
from heardet.data import Bounds, Clip
from heardet.encoder_clf import (EncoderClassifier, autocast, collate, load_pretrained, log_mel, predict_audio,
                                 save_classifier)
from heardet.metrics import Scores, score

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor

logger = logging.getLogger(__name__)

REFIT_MODES = ("all", "best_fold")
MAX_SHIFT_S = 0.5  # augmentation: up to this much leading silence, seconds
GAIN_DB = 6.0  # augmentation: gain drawn from [-GAIN_DB, +GAIN_DB] dB
SNR_DB = (10.0, 30.0)  # augmentation: white-noise signal-to-noise ratio range, dB

EncoderFactory = Callable[[str, float], tuple[EncoderClassifier, "WhisperFeatureExtractor"]]
StepCallback = Callable[[int | None, int, float], None]
FoldCallback = Callable[[int, float, Scores], None]


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that shapes a fine-tuning run (logged with ``mlflow.log_params(asdict(cfg))``).

    Attributes:
        model: Whisper checkpoint (name, hub id or directory) whose encoder is fine-tuned.
        n_folds: cross-validation folds (>= 2).
        epochs: passes over the training clips per fold and for the final fit.
        batch_size: training clips per step.
        encoder_lr: Adam learning rate of the encoder (0 keeps it frozen throughout).
        head_lr: Adam learning rate of the linear head.
        dropout: dropout before the head, in [0, 1).
        max_seconds: longest input the encoder sees, seconds (at most 30); longer clips are
            cropped for training and windowed for scoring.
        freeze_encoder_steps: the encoder stays frozen for this many steps, then trains.
        grad_clip: max gradient L2 norm (0 = no clipping).
        augment: on-the-fly noise, gain and time shift for training clips.
        seed: seed for folds, crops, augmentation and dropout.
        device: ``auto`` (CUDA with bf16 autocast when available, else CPU fp32), ``cpu``,
            ``cuda`` or ``cuda:N``.
        max_train_clips: use a stratified subsample of this many labelled clips (0 = all).
        refit: ``all`` trains the final model on every labelled clip; ``best_fold`` keeps the
            fold model with the best macro F1.
        eval_batch_size: windows per forward pass when scoring.
    """

    model: str = "whisper-base"
    n_folds: int = 5
    epochs: int = 1
    batch_size: int = 4
    encoder_lr: float = 1e-5
    head_lr: float = 3e-4
    dropout: float = 0.2
    max_seconds: float = 10.0
    freeze_encoder_steps: int = 0
    grad_clip: float = 1.0
    augment: bool = False
    seed: int = 42
    device: str = "auto"
    max_train_clips: int = 0
    refit: str = "all"
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v)

        checks = {
            "model": (isinstance(self.model, str) and bool(self.model.strip()), "a non-empty name or path"),
            "n_folds": (is_int(self.n_folds) and self.n_folds >= 2, "an integer >= 2"),
            "epochs": (is_int(self.epochs) and self.epochs >= 1, "an integer >= 1"),
            "batch_size": (is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            "encoder_lr": (is_num(self.encoder_lr) and self.encoder_lr >= 0, "a number >= 0"),
            "head_lr": (is_num(self.head_lr) and self.head_lr > 0, "a number > 0"),
            "dropout": (is_num(self.dropout) and 0 <= self.dropout < 1, "a number in [0, 1)"),
            "max_seconds": (is_num(self.max_seconds) and 0.1 <= self.max_seconds <= 30, "seconds in [0.1, 30]"),
            "freeze_encoder_steps": (is_int(self.freeze_encoder_steps) and self.freeze_encoder_steps >= 0,
                                     "an integer >= 0"),
            "grad_clip": (is_num(self.grad_clip) and self.grad_clip >= 0, "a number >= 0 (0 = off)"),
            "augment": (isinstance(self.augment, bool), "True or False"),
            "seed": (is_int(self.seed) and self.seed >= 0, "an integer >= 0"),
            "device": (isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda")
                                                         or self.device.startswith("cuda:")),
                       "'auto', 'cpu', 'cuda' or 'cuda:N'"),
            "max_train_clips": (is_int(self.max_train_clips) and self.max_train_clips >= 0,
                                "an integer >= 0 (0 = all clips)"),
            "refit": (self.refit in REFIT_MODES, " or ".join(repr(m) for m in REFIT_MODES)),
            "eval_batch_size": (is_int(self.eval_batch_size) and self.eval_batch_size >= 1, "an integer >= 1"),
        }
        for f in fields(self):
            ok, allowed = checks[f.name]
            if not ok:
                raise ValueError(f"FinetuneConfig.{f.name}={getattr(self, f.name)!r} is invalid; allowed: {allowed}")

    def torch_device(self) -> torch.device:
        """The device to train on; ``auto`` picks CUDA when there is one.

        Raises:
            ValueError: CUDA was asked for but is not available.
        """
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"FinetuneConfig.device={self.device!r} but CUDA is not available; "
                             "allowed here: 'auto' or 'cpu'")
        return torch.device(self.device)


@dataclass(frozen=True)
class LabelledAudio:
    """Training clips in memory: ``ids[i]`` names ``audios[i]`` (label ``labels[i]``, phrase ``bounds[i]``)."""

    ids: tuple[str, ...]
    audios: tuple[np.ndarray, ...]
    labels: np.ndarray
    bounds: tuple[Bounds, ...]

    def subset(self, rows: Sequence[int]) -> LabelledAudio:
        return LabelledAudio(tuple(self.ids[i] for i in rows), tuple(self.audios[i] for i in rows),
                             self.labels[np.asarray(rows, dtype=int)], tuple(self.bounds[i] for i in rows))


@dataclass
class FittedClassifier:
    """A trained classifier and what is needed to use and save it.

    Attributes:
        model: the trained :class:`~heardet.encoder_clf.EncoderClassifier`.
        feature_extractor: the checkpoint's ``WhisperFeatureExtractor``.
        threshold: decision threshold on the score.
        fold: the fold it came from (``refit="best_fold"``), or None when trained on all clips.
        steps: optimiser steps taken.
        seconds: wall time of its training.
    """

    model: EncoderClassifier
    feature_extractor: WhisperFeatureExtractor
    threshold: float
    fold: int | None
    steps: int
    seconds: float

    def save(self, out_dir: str | Path, config: FinetuneConfig) -> Path:
        """:func:`heardet.encoder_clf.save_classifier` of this model."""
        return save_classifier(self.model, self.feature_extractor, config, self.threshold, out_dir)


def prepare_examples(data: Sequence[Clip] | Sequence[np.ndarray], labels: Sequence[int] | None = None,
                     bounds: Sequence[Bounds] | None = None, max_clips: int = 0, seed: int = 42,
                     progress: bool = True) -> LabelledAudio:
    """Labelled audio from clips (loaded from disk) or from arrays with ``labels``.

    Unreadable clips are skipped with a warning that names them. With ``max_clips`` > 0 a
    stratified subsample of that many clips is kept.

    Raises:
        ValueError: labels missing or not 0/1, lengths disagree, or fewer than 2 clips remain.
    """
    if len(data) and isinstance(data[0], Clip):
        missing = [c.id for c in data if c.label is None]
        if missing:
            more = " ..." if len(missing) > 5 else ""
            raise ValueError(f"training clips need labels (0/1); unlabelled: {missing[:5]}{more}")
        ids, audios, ys, bs, failed = [], [], [], [], []
        for clip in tqdm(data, desc="loading clips", unit="clip", disable=not progress):
            try:
                audios.append(load_audio(clip.path))
            except AudioError as exc:
                failed.append(str(exc))
                continue
            ids.append(clip.id)
            ys.append(clip.label)
            bs.append(clip.bounds)
        if failed:
            logger.warning("Skipped %d unreadable training clips: %s", len(failed), "; ".join(failed[:10]))
    else:
        if labels is None or len(labels) != len(data):
            raise ValueError(f"{len(data)} audio arrays need as many labels, got "
                             f"{'none' if labels is None else len(labels)}")
        ids = [str(i) for i in range(len(data))]
        audios = [np.asarray(a, dtype=np.float32) for a in data]
        ys, bs = list(labels), list(bounds) if bounds is not None else [()] * len(data)
        if len(bs) != len(data):
            raise ValueError(f"{len(data)} audio arrays but {len(bs)} bounds")
    y = np.asarray(ys, dtype=int)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0 or 1, found {sorted(set(np.unique(y).tolist()))}")
    examples = LabelledAudio(tuple(ids), tuple(audios), y, tuple(tuple(b) for b in bs))
    if 0 < max_clips < len(examples.ids):
        from sklearn.model_selection import train_test_split

        rows, _ = train_test_split(np.arange(len(y)), train_size=max_clips, stratify=y, random_state=seed)
        examples = examples.subset(np.sort(rows))
        logger.info("Using a stratified subsample of %d of %d clips", max_clips, len(y))
    if len(examples.ids) < 2:
        raise ValueError(f"need at least 2 labelled clips, got {len(examples.ids)}")
    return examples


def training_crop(audio: np.ndarray, label: int, bounds: Bounds, max_seconds: float,
                  rng: np.random.Generator) -> np.ndarray:
    """A window of at most ``max_seconds``: around one phrase for a positive, anywhere for a negative."""
    size = int(round(max_seconds * SAMPLE_RATE))
    if len(audio) <= size:
        return audio
    last = len(audio) - size
    if label == 1 and bounds:
        start_s, end_s = bounds[int(rng.integers(len(bounds)))]
        first_sample, end_sample = int(start_s * SAMPLE_RATE), int(math.ceil(end_s * SAMPLE_RATE))
        lo, hi = max(0, end_sample - size), min(first_sample, last)
        start = int(rng.integers(lo, hi + 1)) if lo <= hi else min(max(0, first_sample), last)
    else:
        if label == 1:
            logger.debug("A long positive clip has no phrase bounds; cropping at random")
        start = int(rng.integers(0, last + 1))
    return audio[start : start + size]


def augment_audio(audio: np.ndarray, max_seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Random leading silence (time shift), gain and white noise; the result fits ``max_seconds``."""
    room = int(round(max_seconds * SAMPLE_RATE)) - len(audio)
    shift = int(rng.integers(0, min(int(MAX_SHIFT_S * SAMPLE_RATE), room) + 1)) if room > 0 else 0
    out = np.concatenate([np.zeros(shift, dtype=np.float32), audio]) * 10 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20)
    rms = float(np.sqrt(np.mean(out**2))) + 1e-8
    out = out + rng.normal(0.0, rms / 10 ** (rng.uniform(*SNR_DB) / 20), len(out))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _set_encoder_trainable(model: EncoderClassifier, trainable: bool) -> None:
    for name, param in model.encoder.named_parameters():
        # Whisper's sinusoidal positions stay fixed, as in the stock model.
        param.requires_grad_(trainable and not name.startswith("embed_positions"))


def train_model(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor, examples: LabelledAudio,
                config: FinetuneConfig, fold: int | None = None, progress: bool = True,
                on_step: StepCallback | None = None) -> int:
    """Train ``model`` in place on ``examples``; returns the number of optimiser steps.

    ``on_step(fold, step, loss)`` is called after every step (``fold`` is None for the final fit).
    """
    device = config.torch_device()
    model.to(device).train()
    seed = config.seed + (fold if fold is not None else 1000)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder_params = [p for n, p in model.encoder.named_parameters() if not n.startswith("embed_positions")]
    optimizer = torch.optim.Adam([{"params": encoder_params, "lr": config.encoder_lr},
                                  {"params": list(model.head.parameters()), "lr": config.head_lr}])
    loss_fn = torch.nn.CrossEntropyLoss()
    train_encoder = config.encoder_lr > 0
    _set_encoder_trainable(model, train_encoder and config.freeze_encoder_steps == 0)
    n = len(examples.ids)
    per_epoch = math.ceil(n / config.batch_size)
    step = 0
    desc = f"fold {fold}" if fold is not None else "final fit"
    with tqdm(total=config.epochs * per_epoch, desc=desc, unit="step", disable=not progress,
              leave=fold is None) as bar:
        for _ in range(config.epochs):
            order = rng.permutation(n)
            for begin in range(0, n, config.batch_size):
                if train_encoder and step == config.freeze_encoder_steps and step > 0:
                    logger.info("%s: unfreezing the encoder after %d steps", desc, step)
                    _set_encoder_trainable(model, True)
                rows = order[begin : begin + config.batch_size]
                clips = [training_crop(examples.audios[i], int(examples.labels[i]), examples.bounds[i],
                                       config.max_seconds, rng) for i in rows]
                if config.augment:
                    clips = [augment_audio(c, config.max_seconds, rng) for c in clips]
                feats, lengths = collate([log_mel(feature_extractor, c) for c in clips], device)
                target = torch.as_tensor(examples.labels[rows], dtype=torch.long, device=device)
                with autocast(device):
                    logits = model(feats, lengths)
                loss = loss_fn(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                   config.grad_clip)
                optimizer.step()
                step += 1
                value = float(loss.detach())
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if on_step is not None:
                    on_step(fold, step, value)
    model.eval()
    return step


def evaluate(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor, examples: LabelledAudio,
             config: FinetuneConfig) -> tuple[np.ndarray, float]:
    """Scores of ``examples`` as inference computes them (windowed), and their mean log loss."""
    results = predict_audio(model, feature_extractor, examples.audios, config.max_seconds, config.eval_batch_size)
    probs = np.array([r.score for r in results], dtype=float)
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    y = examples.labels
    return probs, float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _base_model(config: FinetuneConfig,
                encoder_factory: EncoderFactory | None) -> tuple[EncoderClassifier, WhisperFeatureExtractor]:
    factory = encoder_factory or load_pretrained
    torch.manual_seed(config.seed)  # the head's initial weights
    model, feature_extractor = factory(config.model, config.dropout)
    if config.max_seconds * 100 > model.max_frames:
        raise ValueError(f"FinetuneConfig.max_seconds={config.max_seconds!r} is invalid for {config.model!r}; "
                         f"allowed: at most {model.max_frames / 100:g}")
    return model.cpu(), feature_extractor


def cross_validate(data: Sequence[Clip] | Sequence[np.ndarray], labels: Sequence[int] | None = None,
                   bounds: Sequence[Bounds] | None = None, config: FinetuneConfig | None = None,
                   encoder_factory: EncoderFactory | None = None, progress: bool = True,
                   on_step: StepCallback | None = None, on_fold: FoldCallback | None = None) -> CVResult:
    """Stratified k-fold fine-tuning; each fold starts from the same pretrained weights.

    Args:
        data: :class:`~heardet.data.Clip` objects (loaded here), or 1-D float32 arrays at
            ``SAMPLE_RATE`` together with ``labels`` (and optionally ``bounds``).
        labels: 0/1 per array (ignored for clips).
        bounds: phrase bounds ``((start_s, end_s), ...)`` per array (ignored for clips).
        config: the run's settings (default :class:`FinetuneConfig`).
        encoder_factory: ``(model_name, dropout) -> (EncoderClassifier, WhisperFeatureExtractor)``;
            default :func:`heardet.encoder_clf.load_pretrained`. Called once.
        progress: show tqdm bars.
        on_step: ``on_step(fold, step, loss)`` after every training step.
        on_fold: ``on_fold(fold, val_loss, scores)`` after every fold (scores at threshold 0.5).

    Returns:
        :class:`~heardet.cv.CVResult` with out-of-fold scores and the threshold chosen on them.
        ``extra`` holds per-fold ``seconds``, ``val_loss`` and ``steps``, the ``ids`` of the
        out-of-fold rows, and with ``refit="best_fold"`` also ``best_fold`` and ``model``
        (a one-element list holding the :class:`FittedClassifier`).
    """
    config = config or FinetuneConfig()
    examples = prepare_examples(data, labels, bounds, config.max_train_clips, config.seed, progress)
    folds = stratified_folds(examples.labels, config.n_folds, config.seed)
    base, feature_extractor = _base_model(config, encoder_factory)
    oof = np.zeros(len(examples.ids))
    fold_scores: list[Scores] = []
    extra: dict[str, list] = {"seconds": [], "val_loss": [], "steps": [], "ids": list(examples.ids)}
    best: tuple[tuple[float, float], int, EncoderClassifier, int, float] | None = None
    for fold, (train_rows, val_rows) in enumerate(tqdm(folds, desc="folds", unit="fold", disable=not progress)):
        started = time.perf_counter()
        model = copy.deepcopy(base)
        steps = train_model(model, feature_extractor, examples.subset(train_rows), config, fold, progress, on_step)
        val = examples.subset(val_rows)
        probs, val_loss = evaluate(model, feature_extractor, val, config)
        oof[val_rows] = probs
        fold_score = score(val.labels, (probs >= 0.5).astype(int))
        seconds = time.perf_counter() - started
        fold_scores.append(fold_score)
        for key, value in (("seconds", seconds), ("val_loss", val_loss), ("steps", steps)):
            extra[key].append(value)
        logger.info("fold %d: macro F1 %.4f, val loss %.4f, %d steps, %.1f s",
                    fold, fold_score.macro_f1, val_loss, steps, seconds)
        if on_fold is not None:
            on_fold(fold, val_loss, fold_score)
        rank = (fold_score.macro_f1, -val_loss)
        if config.refit == "best_fold" and (best is None or rank > best[0]):
            best = (rank, fold, model, steps, seconds)
        else:
            del model
    threshold = best_threshold(examples.labels, oof)
    if best is not None:
        _, fold, model, steps, seconds = best
        extra["best_fold"] = [fold]
        extra["model"] = [FittedClassifier(model, feature_extractor, threshold, fold, steps, seconds)]
    return CVResult(tuple(fold_scores), oof, threshold, extra)


def fit(data: Sequence[Clip] | Sequence[np.ndarray], labels: Sequence[int] | None = None,
        bounds: Sequence[Bounds] | None = None, config: FinetuneConfig | None = None,
        encoder_factory: EncoderFactory | None = None, cv_result: CVResult | None = None,
        threshold: float | None = None, progress: bool = True,
        on_step: StepCallback | None = None) -> FittedClassifier:
    """The final model: trained on every labelled clip (``refit="all"``) or the CV's best fold.

    Args:
        data, labels, bounds, config, encoder_factory, progress, on_step: as for
            :func:`cross_validate` (``on_step`` gets ``fold=None``).
        cv_result: the cross-validation of the same data; supplies the threshold, and the
            model itself when ``config.refit == "best_fold"``.
        threshold: decision threshold (default: ``cv_result.threshold``, else 0.5).

    Raises:
        ValueError: ``refit="best_fold"`` without a ``cv_result`` from :func:`cross_validate`
            run with that setting.
    """
    config = config or FinetuneConfig()
    if config.refit == "best_fold":
        if cv_result is None or "model" not in cv_result.extra:
            raise ValueError("FinetuneConfig.refit='best_fold' takes the model from cross_validate(); "
                             "pass cv_result=cross_validate(..., config) run with refit='best_fold'")
        fitted = cv_result.extra["model"][0]
        if threshold is not None:
            fitted.threshold = float(threshold)
        return fitted
    if threshold is None:
        threshold = cv_result.threshold if cv_result is not None else 0.5
    examples = prepare_examples(data, labels, bounds, config.max_train_clips, config.seed, progress)
    started = time.perf_counter()
    model, feature_extractor = _base_model(config, encoder_factory)
    steps = train_model(model, feature_extractor, examples, config, None, progress, on_step)
    seconds = time.perf_counter() - started
    logger.info("final fit on %d clips: %d steps, %.1f s", len(examples.ids), steps, seconds)
    return FittedClassifier(model, feature_extractor, float(threshold), None, steps, seconds)

