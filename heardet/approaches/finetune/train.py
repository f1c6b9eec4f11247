"""Fine-tune the Whisper encoder classifier (approach 3): stratified k-fold CV, then the final fit.

Each fold starts from the same pretrained weights (a deep copy of one base model), trains on
content-sized batches (:mod:`heardet.approaches.finetune.model`) with Adam in two parameter groups (encoder,
head) and cross-entropy, and scores its held-out clips the way inference does: whole when they
fit ``max_seconds``, else in overlapping windows, best window wins. The out-of-fold scores pick
the decision threshold when ``threshold=-1`` (else it is fixed, 0.5 by default).

Training crops: a clip longer than ``max_seconds`` is cut to a window that holds its phrase
(positives with bounds) or to a random window (negatives).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from heardet.approaches.finetune.features import (
    FeatureCache,
    crop_start,
    encode_clips,
    fixed_crop,
    pad_states,
    states_in_batches,
)
from heardet.approaches.finetune.model import (
    FRAME_HEADS,
    FRAME_SECONDS,
    HEAD_VOTES,
    LAYER_CHOICES,
    POOLINGS,
    EncoderClassifier,
    autocast,
    collate,
    cpu_has_bf16_units,
    load_pretrained,
    log_mel,
    peak_time,
    predict_audio,
    predict_frames,
    save_classifier,
    soft_max_pool,
)
from heardet.audio import SAMPLE_RATE, AudioError, load_audio
from heardet.augment import Banks, augment
from heardet.config import (
    is_bool,
    is_int,
    is_number,
    is_text,
    one_of,
    setting,
    validate,
)
from heardet.cv import CVResult, best_threshold, leave_one_engine_out
from heardet.cv import folds as cv_folds
from heardet.data import Bounds, Clip, groups_of
from heardet.devices import is_device, torch_device
from heardet.metrics import Scores, log_loss, score

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor

logger = logging.getLogger(__name__)

REFIT_MODES = ("all", "best_fold")
FIT_STAGE_A = ("own", "shared")  # where each extra fit's stage (b) starts (FinetuneConfig.fit_stage_a)
FIT_MERGES = ("vote", "average")  # how several fits make the saved model (FinetuneConfig.fit_merge)
MAX_SHIFT_S = 0.5  # augmentation: up to this much leading silence, seconds
OUTSIDE_MARGIN_S = 0.2  # FinetuneConfig.outside_weight: frames this close to a phrase's bounds are not "outside"

EncoderFactory = Callable[[str, float], tuple[EncoderClassifier, "WhisperFeatureExtractor"]]
StepCallback = Callable[[int | None, int, float], None]
FoldCallback = Callable[[int, float, Scores], None]


def is_threshold(value: object) -> bool:
    """A decision threshold in (0, 1), or -1 (chosen on the out-of-fold scores)."""
    return value == -1 or is_number(0, 1, low_open=True, high_open=True)(value)


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
        pooling: ``frames`` (per-frame logits, log-mean-exp pooling, phrase times) or ``mean``
            (masked mean pooling and a linear head, the original recipe).
        layers: ``all`` (a learned softmax-weighted mix of every encoder layer's output) or
            ``last`` (the final layer's, the original recipe).
        frame_head: what scores the frames (``pooling="frames"``): ``conv``, two convolutions that see
            180 ms, or ``gru``, a bidirectional GRU over the whole clip after the first convolution
            (:class:`~heardet.approaches.finetune.model.GRUFrameHead`).
        center: subtract each clip's mean encoder state (after the layer mix) from its frames before the
            head, so what is constant across a clip (voice, speech engine, channel) drops out
            (:class:`~heardet.approaches.finetune.model.EncoderClassifier`).
        top_layers: stage (b): after the head has trained on cached states (stage (a)), the
            encoder's top ``top_layers`` layers train too, at ``encoder_lr``, for ``top_epochs``
            epochs, run from the cached output of the layer beneath (0 = stage (a) only).
        top_epochs: epochs of stage (b).
        feature_dropout: in training, the share of each clip's feature channels (after the layer mix)
            zeroed, the same channels in every frame (:class:`~heardet.approaches.finetune.model.ChannelDropout`);
            an augmentation against leaning on one speech engine's sound (0 = off).
        style_mix: with frame pooling, the probability that a training batch's clips trade feature
            statistics: each channel's mean and spread over a clip become a random mix of its own and another
            clip's (:class:`~heardet.approaches.finetune.model.StyleMix`); meant against a speech engine's or a
            voice's sound, it lowered leave-one-engine-out F1 where measured (0 = off).
        outside_weight: with cached states and frame pooling, a training positive's frames away from
            its phrase (outside its bounds widened by :data:`OUTSIDE_MARGIN_S`) are also pooled as a clip
            of their own that must score "no phrase"; that loss is added at this weight (0 = off). It is
            the per-frame target from the bounds in the pooling's own terms: the rest of a positive
            clip is a negative, and the phrase's own frames are left to the clip label.
        hard_negative_weight: each training clip the data marks as a near miss (manifest ``kind``
            ``hard_negative``: a rhyme such as «не спишу», another form of the verb such as «не слышим») counts this
            many times in the loss (1 = like any clip). Clips without a kind count once.
        heads: stage (a) trains this many frame heads on the same cached states, the first with ``seed``, the
            others with ``seed + 1``, ``seed + 2``…, and the model scores with the mean of their phrase probabilities
            (:class:`~heardet.approaches.finetune.model.EncoderClassifier`). Each costs one head's training time; the
            encoder still runs once per clip. With stage (b) (``top_layers > 0``), the first head trains through
            both stages and the others after them, on the states of the encoder stage (b) trained
            (:func:`rerun_states`): every head reads the same encoder, as it runs at inference. The
            cross-validation folds (with ``refit="all"``) and the leave-one-engine-out fits train one head each
            (:func:`one_head`).
        head_vote: how several heads' phrase probabilities make the clip's: ``mean``, their mean, or ``min``, the
            lowest of them, so that a clip is called only when every head calls it. Heads of different seeds
            call the phrase alike but each flags a few near misses of its own (``benchmarks/quality.md``).
        fits: with stage (b) (``top_layers > 0``) and one head (or ``fit_merge="average"``), this many whole fits
            train one after the other, the first with ``seed``, the others with ``seed + 1``, ``seed + 2``…, each
            through stage (a) and stage (b) from the same pretrained encoder, so each ends with top layers of its
            own; the model scores with all of them as with several heads, combined by ``head_vote``
            (:meth:`~heardet.approaches.finetune.model.EncoderClassifier.add_fit`).
            Each costs one fit's training time, and scoring a clip costs about one more encoder pass per fit (its
            top layers run again). The cross-validation folds and leave-one-engine-out fits train one fit each
            (:func:`one_head`).
        fit_stage_a: with ``fits > 1``, where each fit's stage (b) starts: ``own``, a stage (a) head of its own
            seed; ``shared``, a copy of the first fit's stage (a) head (before its stage (b)), so that only stage
            (b) trains again per fit, from its own seed (batch order, dropout): one stage (a) in all instead of
            ``fits``.
        fit_merge: with ``fits > 1``, what the saved model keeps of them: ``vote``, every fit, their phrase
            probabilities combined by ``head_vote`` (scoring costs about one more encoder pass per fit); or
            ``average`` (with ``fit_stage_a="shared"``), one fit whose weights are the mean of theirs
            (:meth:`~heardet.approaches.finetune.model.EncoderClassifier.average_fits`), scoring at one fit's cost.
            With ``average``, ``heads > 1`` may go with ``fits > 1``: the extra heads train on the merged fit.
        fold_stage_b: with stage (b) (``top_layers > 0``), whether the cross-validation folds and the
            leave-one-engine-out fits train it too (True), or stage (a) only, on the frozen encoder (False, with
            ``refit="all"``): their scores then stand for the stage (a) model, below the final one, for a fraction
            of the minutes.
        cpu_bf16: with stage (b) (``top_layers > 0``) on a CPU that multiplies bf16 matrices in hardware (Intel
            AMX tiles), stage (b)'s training steps run in bf16 autocast, as every step does on CUDA: the encoder's
            top layers train in a little over half the time (``benchmarks/README.md``). The weights stay float32; the
            states that heads train on after stage (b), and scoring, stay float32. On a CPU without AMX it has no
            effect (a warning says so): bf16 there would be slower than float32.
        average_epochs: stage (a) ends with each head's weights (and the layer mix's) set to their mean over the
            ends of its last ``average_epochs`` epochs instead of their last values (0 = off): an average of the
            heads a run passes through, which a seed's luck sways less. It costs no training time.
        threshold: the saved model's decision threshold on the phrase probability, in (0, 1); -1
            chooses it on the out-of-fold scores (max macro F1). Those come from fold models
            trained on part of the clips, not from the final model, and the arg-max moves with a
            few clips: on a quick demo's data it landed between 0.05 and 0.96 over three seeds and
            two recipes, never better on test than 0.5 (``benchmarks/quality.md``), hence 0.5.

    Three ways to train:

    - ``encoder_lr=0``, no augmentation: the encoder is frozen. Each clip is encoded once
      (:mod:`heardet.approaches.finetune.features`, cached on disk) and only the head trains.
    - ``top_layers > 0`` (with ``layers="all"``, ``encoder_lr > 0``): the same, then stage (b),
      still on cached states: no audio passes through the lower layers again.
    - ``encoder_lr > 0``, ``top_layers=0``: the whole encoder trains from audio with the head, the
      original recipe (crops of ``max_seconds``, optional augmentation).
    """

    model: str = setting("whisper-base", "a non-empty name or path", is_text,
                         "Whisper name, Hugging Face id or local directory")
    n_folds: int = setting(5, "an integer >= 2", is_int(2))
    epochs: int = setting(1, "an integer >= 1", is_int(1))
    batch_size: int = setting(4, "an integer >= 1", is_int(1))
    encoder_lr: float = setting(1e-5, "a number >= 0", is_number(0))
    head_lr: float = setting(3e-4, "a number > 0", is_number(0, low_open=True))
    dropout: float = setting(0.2, "a number in [0, 1)", is_number(0, 1, high_open=True))
    max_seconds: float = setting(10.0, "seconds in [0.1, 30]", is_number(0.1, 30))
    freeze_encoder_steps: int = setting(0, "an integer >= 0", is_int(0))
    grad_clip: float = setting(1.0, "a number >= 0 (0 = off)", is_number(0))
    augment: bool = setting(False, "True or False", is_bool)
    seed: int = setting(42, "an integer >= 0", is_int(0))
    device: str = setting("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'", is_device)
    max_train_clips: int = setting(0, "an integer >= 0 (0 = all clips)", is_int(0))
    refit: str = setting("all", " or ".join(repr(m) for m in REFIT_MODES), one_of(*REFIT_MODES))
    eval_batch_size: int = setting(8, "an integer >= 1", is_int(1))
    pooling: str = setting("frames", " or ".join(repr(p) for p in POOLINGS), one_of(*POOLINGS),
                           "frames: per-frame scores, soft maximum, phrase times; mean: the original recipe")
    layers: str = setting("all", " or ".join(repr(c) for c in LAYER_CHOICES), one_of(*LAYER_CHOICES),
                          "all: a learned mix of every encoder layer's output; last: the final layer's (the recipe)")
    frame_head: str = setting("conv", " or ".join(repr(h) for h in FRAME_HEADS), one_of(*FRAME_HEADS),
                              "pooling=frames: conv, two convolutions (180 ms); gru, a bidirectional GRU over the clip")
    center: bool = setting(False, "True or False", is_bool,
                           "Subtract each clip's mean encoder state from its frames before the head.")
    top_layers: int = setting(0, "an integer >= 0", is_int(0),
                              "Stage (b): then train the encoder's top N layers at encoder_lr on cached states (0 = none).")
    top_epochs: int = setting(3, "an integer >= 1", is_int(1), "Epochs of stage (b) (top_layers > 0).")
    feature_dropout: float = setting(0.0, "a number in [0, 1)", is_number(0, 1, high_open=True),
                                     "Training drops this share of each clip's feature channels (all frames alike).")
    style_mix: float = setting(0.0, "a number in [0, 1] (0 = off)", is_number(0, 1),
                               "Probability that a training batch's clips trade feature statistics (pooling=frames).")
    outside_weight: float = setting(0.0, "a number >= 0 (0 = off)", is_number(0),
                                    "Weight of the loss on each training positive's frames away from its phrase.")
    hard_negative_weight: float = setting(1.0, "a number > 0", is_number(0, low_open=True),
                                          "Loss weight of training clips marked as near misses (kind hard_negative).")
    heads: int = setting(1, "an integer >= 1", is_int(1),
                         "Frame heads trained with successive seeds on cached encoder states; head_vote combines them.")
    head_vote: str = setting("mean", " or ".join(repr(v) for v in HEAD_VOTES), one_of(*HEAD_VOTES),
                             "heads > 1: mean, the heads' mean probability; min, the lowest (every head must call it)")
    fits: int = setting(1, "an integer >= 1", is_int(1),
                        "Stage (b): whole fits (their own top layers and head) from successive seeds; head_vote "
                        "combines them.")
    fit_stage_a: str = setting("own", " or ".join(repr(m) for m in FIT_STAGE_A), one_of(*FIT_STAGE_A),
                               "fits > 1: own, each fit's stage (b) starts from a stage (a) head of its own seed; "
                               "shared, from a copy of the first fit's")
    fit_merge: str = setting("vote", " or ".join(repr(m) for m in FIT_MERGES), one_of(*FIT_MERGES),
                             "fits > 1: vote, keep every fit (head_vote combines them); average, one fit of their "
                             "mean weights (fit_stage_a=shared)")
    fold_stage_b: bool = setting(True, "True or False", is_bool,
                                 "top_layers > 0: the folds and leave-one-engine-out fits train stage (b) too "
                                 "(False: stage (a) only)")
    cpu_bf16: bool = setting(False, "True or False", is_bool,
                             "top_layers > 0 on a CPU with AMX (bf16 matrix units): stage (b)'s training steps run in "
                             "bf16 autocast")
    average_epochs: int = setting(0, "an integer >= 0 (0 = off)", is_int(0),
                                  "Stage (a)'s head ends as the mean of its weights at its last N epochs' ends.")
    threshold: float = setting(0.5, "a number in (0, 1), or -1", is_threshold,
                               "Decision threshold of the saved model; -1 chooses it on the out-of-fold scores.")

    @property
    def frozen(self) -> bool:
        """The encoder never trains (``encoder_lr=0``, no augmentation): heads train on cached encoder states."""
        return self.encoder_lr == 0 and not self.augment

    @property
    def fixed_threshold(self) -> float | None:
        """:attr:`threshold`, or None when the out-of-fold scores are to choose it (-1)."""
        return None if self.threshold == -1 else self.threshold

    @property
    def cached(self) -> bool:
        """Training reads cached encoder states: a frozen encoder, or stage (b) on the top layers."""
        return self.frozen or self.top_layers > 0

    def __post_init__(self) -> None:
        validate(self, {"top_layers": (
            self.top_layers == 0 or (self.layers == "all" and self.encoder_lr > 0 and not self.augment),
            "0, or with layers='all', encoder_lr > 0 and augment=False (stage (b) trains the top layers at "
            "encoder_lr from every layer's cached output)"),
            "outside_weight": (self.outside_weight == 0 or (self.pooling == "frames" and self.cached),
                               "0, or with pooling='frames' and cached states (encoder_lr=0, or top_layers > 0): "
                               "the frames away from the phrase are known only in the fixed crops the cache holds"),
            "heads": (self.heads == 1 or (self.pooling == "frames" and self.cached),
                      "1, or with pooling='frames' and cached states (encoder_lr=0, or top_layers > 0): the heads "
                      "share one encoder's states"),
            "fits": (self.fits == 1 or (self.top_layers > 0 and self.pooling == "frames"
                                        and (self.heads == 1 or self.fit_merge == "average")),
                     "1, or with top_layers > 0 (stage (b)), pooling='frames' and heads=1 (each fit is one head on "
                     "top layers of its own) or fit_merge='average' (the heads train on the merged fit)"),
            "fit_stage_a": (self.fit_stage_a == "own" or self.fits > 1,
                            "'own', or 'shared' with fits > 1 (the fits share the first fit's stage (a) head)"),
            "fit_merge": (self.fit_merge == "vote" or (self.fits > 1 and self.fit_stage_a == "shared"),
                          "'vote', or 'average' with fits > 1 and fit_stage_a='shared' (only fits that started "
                          "from the same weights can be averaged)"),
            "fold_stage_b": (self.fold_stage_b or (self.top_layers > 0 and self.refit == "all"),
                             "True, or False with top_layers > 0 (stage (b)) and refit='all' (the folds then train "
                             "stage (a) only, and a best fold's model would be the final one)"),
            "cpu_bf16": (not self.cpu_bf16 or self.top_layers > 0,
                         "False, or True with top_layers > 0 (it applies to stage (b)'s training steps)"),
            "average_epochs": (self.average_epochs <= self.epochs and (self.average_epochs == 0 or self.cached),
                               f"0, or at most epochs ({self.epochs}) with cached states (encoder_lr=0, or "
                               "top_layers > 0): the average is of stage (a)'s heads"),
            "style_mix": (self.style_mix == 0 or self.pooling == "frames",
                          "0 with pooling='mean' (mixing each clip's statistics would replace the mean it classifies)"),
            "center": (not self.center or self.pooling == "frames",
                       "False with pooling='mean' (a centred clip's mean is zero: nothing would be left to classify)")})

    def torch_device(self) -> torch.device:
        """The device to train on (see :func:`heardet.devices.torch_device`)."""
        return torch_device(self.device)


def model_slug(model: str) -> str:
    """A name for files and registered models: ``whisper-base`` → ``whisper-base``;
    ``openai/whisper-small`` → ``openai-whisper-small``; a local directory → its name."""
    name = Path(model).name if Path(model).exists() else model
    return re.sub(r"[^0-9A-Za-z.-]+", "-", name).strip("-").lower()


@dataclass(frozen=True)
class LabelledAudio:
    """Training clips in memory: ``ids[i]`` names ``audios[i]`` (label ``labels[i]``, phrase ``bounds[i]``).

    Build it from clips on disk with :func:`prepare_examples`, or from arrays with :meth:`from_arrays`.
    """

    ids: tuple[str, ...]
    audios: tuple[np.ndarray, ...]
    labels: np.ndarray
    bounds: tuple[Bounds, ...]
    voices: tuple[str, ...] = ()  # one per clip when known (synth data): folds never split a voice
    engines: tuple[str, ...] = ()  # one per clip when known: for the leave-one-engine-out score
    banks: Banks = Banks()  # room impulse responses and background speech for training-time augmentation
    kinds: tuple[str, ...] = ()  # one per clip when known (synth data): ``hard_negative`` marks a near miss

    def __post_init__(self) -> None:
        sizes = {"ids": len(self.ids), "audios": len(self.audios), "labels": len(self.labels),
                 "bounds": len(self.bounds)}
        sizes.update({k: len(v) for k, v in (("voices", self.voices), ("engines", self.engines),
                                             ("kinds", self.kinds)) if v})
        if len(set(sizes.values())) != 1:
            raise ValueError(f"LabelledAudio needs one id, array, label and bounds (and voice, engine and kind, where "
                             f"given) per clip; got {sizes}")
        if not set(np.unique(self.labels).tolist()) <= {0, 1}:
            raise ValueError(f"labels must be 0 or 1, found {sorted(set(np.unique(self.labels).tolist()))}")
        if len(self.ids) < 2:
            raise ValueError(f"need at least 2 labelled clips, got {len(self.ids)}")

    @classmethod
    def from_arrays(cls, audios: Sequence[np.ndarray], labels: Sequence[int],
                    bounds: Sequence[Bounds] | None = None) -> LabelledAudio:
        """Mono float32 arrays at ``SAMPLE_RATE`` with a 0/1 label each (and phrase bounds, optional)."""
        bounds = list(bounds) if bounds is not None else [()] * len(audios)
        return cls(tuple(str(i) for i in range(len(audios))), tuple(np.asarray(a, dtype=np.float32) for a in audios),
                   np.asarray(list(labels), dtype=int), tuple(tuple(b) for b in bounds))

    def subset(self, rows: Sequence[int]) -> LabelledAudio:
        def pick(values: tuple) -> tuple:
            return tuple(values[i] for i in rows) if values else ()

        return LabelledAudio(pick(self.ids), pick(self.audios), self.labels[np.asarray(rows, dtype=int)],
                             pick(self.bounds), pick(self.voices), pick(self.engines), self.banks, pick(self.kinds))

    def subsample(self, max_clips: int, seed: int) -> LabelledAudio:
        """A stratified subsample of ``max_clips`` clips (all of them when 0 or more than there are)."""
        if not 0 < max_clips < len(self.ids):
            return self
        from sklearn.model_selection import train_test_split

        rows, _ = train_test_split(np.arange(len(self.ids)), train_size=max_clips, stratify=self.labels,
                                   random_state=seed)
        logger.info("Using a stratified subsample of %d of %d clips", max_clips, len(self.ids))
        return self.subset(np.sort(rows))


@dataclass
class FittedClassifier:
    """A trained classifier and what is needed to use and save it.

    Attributes:
        model: the trained :class:`~heardet.approaches.finetune.model.EncoderClassifier`.
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
    phrase_offsets: tuple[float, float] | None = None  # seconds before / after the peak frame (frame pooling)
    # cached training's seconds: encode, head (every head's stage (a)), top (stage (b)), rerun (the states after it)
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def save(self, out_dir: str | Path, config: FinetuneConfig) -> Path:
        """:func:`heardet.approaches.finetune.model.save_classifier` of this model."""
        return save_classifier(self.model, self.feature_extractor, config, self.threshold, out_dir,
                               phrase_offsets=self.phrase_offsets)


def prepare_examples(clips: Sequence[Clip], max_clips: int = 0, seed: int = 42,
                     progress: bool = True) -> LabelledAudio:
    """Load labelled clips from disk.

    Unreadable clips are skipped with a warning that names them. With ``max_clips`` > 0 a
    stratified subsample of that many clips is kept.

    Raises:
        ValueError: a clip without a 0/1 label, or fewer than 2 clips remain.
    """
    missing = [c.id for c in clips if c.label is None]
    if missing:
        more = " ..." if len(missing) > 5 else ""
        raise ValueError(f"training clips need labels (0/1); unlabelled: {missing[:5]}{more}")
    loaded, failed = [], []
    for clip in tqdm(clips, desc="loading clips", unit="clip", disable=not progress):
        try:
            loaded.append((clip, load_audio(clip.path)))
        except AudioError as exc:
            failed.append(str(exc))
    if failed:
        logger.warning("Skipped %d unreadable training clips: %s", len(failed), "; ".join(failed[:10]))
    kept = [c for c, _ in loaded]
    roots = {c.path.parent.parent for c in kept}
    examples = LabelledAudio(tuple(c.id for c in kept), tuple(a for _, a in loaded),
                             np.asarray([c.label for c in kept], dtype=int), tuple(tuple(c.bounds) for c in kept),
                             tuple(groups_of(kept, "voice") or ()), tuple(groups_of(kept, "engine") or ()),
                             Banks.of_dataset(roots.pop()) if len(roots) == 1 else Banks(),
                             tuple(groups_of(kept, "kind") or ()))
    return examples.subsample(max_clips, seed)


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


def augment_audio(audio: np.ndarray, max_seconds: float, rng: np.random.Generator, banks: Banks) -> np.ndarray:
    """Random leading silence (time shift), then the :mod:`heardet.augment` chain; the result fits ``max_seconds``."""
    room = int(round(max_seconds * SAMPLE_RATE)) - len(audio)
    shift = int(rng.integers(0, min(int(MAX_SHIFT_S * SAMPLE_RATE), room) + 1)) if room > 0 else 0
    return augment(np.concatenate([np.zeros(shift, dtype=np.float32), audio]), rng, banks)


def _set_encoder_trainable(model: EncoderClassifier, trainable: bool) -> None:
    for name, param in model.encoder.named_parameters():
        # Whisper's sinusoidal positions stay fixed, as in the stock model.
        param.requires_grad_(trainable and not name.startswith("embed_positions"))


def outside_frames(examples: LabelledAudio, states: Sequence[np.ndarray],
                   max_seconds: float) -> list[np.ndarray | None]:
    """For each cached clip, its frames away from its phrases (True), for positives with bounds whose crop has
    such frames; None for the rest. A frame is away when its centre is more than :data:`OUTSIDE_MARGIN_S`
    from every phrase's bounds, in the recording's time (the crop of :func:`features.fixed_crop`)."""
    masks: list[np.ndarray | None] = []
    for audio, label, bounds, state in zip(examples.audios, examples.labels, examples.bounds, states):
        if label != 1 or not bounds:
            masks.append(None)
            continue
        offset = crop_start(len(audio), bounds, max_seconds) / SAMPLE_RATE
        t = offset + (np.arange(state.shape[-2]) + 0.5) * FRAME_SECONDS
        away = np.ones(len(t), dtype=bool)
        for start, end in bounds:
            away &= (t < start - OUTSIDE_MARGIN_S) | (t > end + OUTSIDE_MARGIN_S)
        masks.append(away if away.any() else None)
    return masks


HARD_NEGATIVE = "hard_negative"  # the manifest kind of a near miss (heardet.synth)


def clip_weights(examples: LabelledAudio, config: FinetuneConfig) -> np.ndarray | None:
    """Each clip's weight in the training loss: ``config.hard_negative_weight`` for a near miss, 1 for any other
    clip; None when every clip weighs 1 (the weight is 1, or the clips carry no kind, which a warning says)."""
    if config.hard_negative_weight == 1:
        return None
    if not examples.kinds:
        logger.warning("FinetuneConfig.hard_negative_weight=%g has no effect: the training clips carry no kind "
                       "(a dataset's manifest.jsonl gives each clip one, %r for a near miss)",
                       config.hard_negative_weight, HARD_NEGATIVE)
        return None
    return np.where(np.asarray(examples.kinds) == HARD_NEGATIVE, config.hard_negative_weight, 1.0)


def _clip_loss(logits: torch.Tensor, target: torch.Tensor, weights: np.ndarray | None,
               rows: np.ndarray) -> torch.Tensor:
    """Cross-entropy of a batch's clip logits, each clip weighted by ``weights[rows]`` (all alike when None)."""
    if weights is None:
        return torch.nn.functional.cross_entropy(logits.float(), target)
    losses = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
    w = torch.as_tensor(weights[rows], dtype=losses.dtype, device=losses.device)
    return (losses * w).sum() / w.sum()


def _outside_loss(frames: torch.Tensor, masks: Sequence[np.ndarray | None]) -> torch.Tensor | None:
    """Mean log loss of "no phrase" for the soft maximum of each masked clip's away frames (None when none has them)."""
    rows = [k for k, m in enumerate(masks) if m is not None]
    if not rows:
        return None
    away = torch.zeros(len(rows), frames.shape[1], dtype=torch.bool, device=frames.device)
    for j, k in enumerate(rows):
        away[j, : len(masks[k])] = torch.as_tensor(masks[k], device=frames.device)
    pooled = soft_max_pool(frames[rows].float(), away)
    return torch.nn.functional.softplus(pooled).mean()  # binary cross-entropy against 0 on the pooled logit


def train_head(model: EncoderClassifier, states: Sequence[np.ndarray], labels: np.ndarray, config: FinetuneConfig,
               fold: int | None = None, progress: bool = True, on_step: StepCallback | None = None,
               top_layers: int = 0, first_step: int = 0,
               outside: Sequence[np.ndarray | None] | None = None, head: int = 0,
               weights: np.ndarray | None = None, fit: int = 0) -> int:
    """Train ``model`` in place on cached encoder ``states``; returns the steps taken.

    With ``top_layers=0`` this is stage (a): only the head (and layer mix) trains, at ``head_lr``,
    for ``epochs``. With ``top_layers > 0`` it is stage (b): the encoder's top layers run again from
    the cached states (:meth:`EncoderClassifier.rerun_top`) and train at ``encoder_lr`` together
    with the head, for ``top_epochs``. ``first_step`` numbers the steps on from an earlier stage.
    ``outside`` (:func:`outside_frames`, one per state) adds ``config.outside_weight`` times the loss on
    the positives' frames away from their phrase. ``head`` numbers the head in the progress bar (of ``config.heads``),
    ``fit`` the fit (of ``config.fits``).
    ``weights`` (:func:`clip_weights`, one per state) weigh each clip's loss. With ``config.average_epochs``, stage
    (a)'s trained weights end as their mean over the ends of the last that many epochs.
    """
    device = config.torch_device()
    model.to(device).train()
    seed = config.seed + (fold if fold is not None else 1000) + 7919 * top_layers
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    trained = model.head_parameters()
    groups = [{"params": trained, "lr": config.head_lr}]
    if top_layers:
        _set_encoder_trainable(model, False)
        top = model.top_parameters(top_layers)
        for param in top:
            param.requires_grad_(True)
        groups.append({"params": top, "lr": config.encoder_lr})
        trained = trained + top
    optimizer = torch.optim.Adam(groups)
    bf16 = bool(top_layers) and config.cpu_bf16
    if bf16 and device.type == "cpu" and not cpu_has_bf16_units():
        logger.warning("FinetuneConfig.cpu_bf16=True has no effect here: this CPU has no AMX tiles (bf16 matrix "
                       "units), so stage (b) trains in float32")
    n, step = len(states), first_step
    epochs = config.top_epochs if top_layers else config.epochs
    averaged = 0 if top_layers else config.average_epochs
    total: list[torch.Tensor] = []
    stage = f"top {top_layers} layers" if top_layers else "head" if config.heads == 1 else \
        f"head {head + 1} of {config.heads}"
    if config.fits > 1:  # more heads than one go with fits only once they are averaged into one
        stage = f"the fits averaged, {stage}" if head else f"fit {fit + 1} of {config.fits}, {stage}"
    desc = f"fold {fold} ({stage})" if fold is not None else f"final fit ({stage})"
    with tqdm(total=epochs * math.ceil(n / config.batch_size), desc=desc, unit="step",
              disable=not progress, leave=fold is None) as bar:
        lengths = np.array([x.shape[-2] for x in states], dtype=float)
        for epoch in range(epochs):
            # Batches of similar lengths (less padding), in random order; jitter varies them per epoch.
            order = np.argsort(lengths * rng.uniform(0.9, 1.1, size=n), kind="stable")
            batches = [order[b : b + config.batch_size] for b in range(0, n, config.batch_size)]
            for k in rng.permutation(len(batches)):
                rows = batches[k]
                hidden, valid = pad_states([states[i] for i in rows], device)
                target = torch.as_tensor(labels[rows], dtype=torch.long, device=device)
                with autocast(device, cpu_bf16=bf16):
                    logits, frames = model.classify_cached(hidden, valid, top_layers)
                loss = _clip_loss(logits, target, weights, rows)
                if outside is not None and config.outside_weight > 0:
                    extra = _outside_loss(frames, [outside[i] for i in rows])
                    if extra is not None:
                        loss = loss + config.outside_weight * extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
                optimizer.step()
                step += 1
                bar.update(1)
                if on_step is not None:
                    on_step(fold, step, float(loss.detach()))
            if epoch >= epochs - averaged:
                with torch.no_grad():
                    if not total:
                        total = [torch.zeros_like(p, dtype=torch.float32) for p in trained]
                    for summed, param in zip(total, trained):
                        summed.add_(param.detach().float())
    if total:
        with torch.no_grad():
            for param, summed in zip(trained, total):
                param.copy_(summed / averaged)
    if top_layers:
        _set_encoder_trainable(model, False)
    model.eval()
    return step - first_step


def train_cached(model: EncoderClassifier, states: Sequence[np.ndarray], labels: np.ndarray, config: FinetuneConfig,
                 fold: int | None = None, progress: bool = True, on_step: StepCallback | None = None,
                 outside: Sequence[np.ndarray | None] | None = None,
                 weights: np.ndarray | None = None) -> tuple[int, dict[str, float]]:
    """Stage (a), then stage (b) when ``config.top_layers`` asks for it; returns the steps and each stage's seconds.

    With ``config.heads > 1``, that many heads train one after the other, each from its own seed, and ``model``
    scores with them all (:meth:`~heardet.approaches.finetune.model.EncoderClassifier.add_head`). The first trains
    through stage (a) and stage (b); the others train as stage (a) heads after stage (b), on the states of the
    encoder it left (:func:`rerun_states`), since they score what that encoder outputs.

    With ``config.fits > 1``, that many fits train one after the other, each from its own seed through both
    stages on its own copy of the encoder as it was before stage (b), and ``model`` scores with them all
    (:meth:`~heardet.approaches.finetune.model.EncoderClassifier.add_fit`). With ``config.fit_stage_a="shared"``
    the fits after the first start stage (b) from a copy of the first fit's stage (a) head instead of training
    their own, and with ``config.fit_merge="average"`` they are then merged into one fit of their mean weights
    (:meth:`~heardet.approaches.finetune.model.EncoderClassifier.average_fits`); the extra heads of
    ``config.heads > 1`` train after that, on the states of the merged encoder."""
    started = time.perf_counter()
    steps = train_head(model, states, labels, config, fold, progress, on_step, outside=outside, weights=weights)
    seconds = {"head": time.perf_counter() - started}
    # Before stage (b): stage (a) left the encoder as pretrained, and the first fit's stage (a) head trained.
    before_b = copy.deepcopy(model) if config.fits > 1 else None
    if config.top_layers:
        started = time.perf_counter()
        steps += train_head(model, states, labels, config, fold, progress, on_step, config.top_layers, steps,
                            outside, weights=weights)
        seconds["top"] = time.perf_counter() - started
    for k in range(1, config.fits):
        if config.fit_stage_a == "shared":
            other, stages = copy.deepcopy(before_b), ((config.top_layers, "top"),)
        else:
            torch.manual_seed(config.seed + k)  # the fit's initial head weights
            other = before_b.fresh_head(copy.deepcopy(before_b.encoder))
            stages = ((0, "head"), (config.top_layers, "top"))
        seeded = dataclasses.replace(config, seed=config.seed + k)
        for top_layers, key in stages:
            started = time.perf_counter()
            steps += train_head(other, states, labels, seeded, fold, progress, on_step, top_layers, steps, outside,
                                weights=weights, fit=k)
            seconds[key] += time.perf_counter() - started
        model.add_fit(other, config.top_layers)
    if config.fits > 1 and config.fit_merge == "average":
        model.average_fits()
    if config.heads > 1:
        heads_read = states
        if config.top_layers:
            started = time.perf_counter()
            heads_read = rerun_states(model, states, config.top_layers, progress=progress)
            seconds["rerun"] = time.perf_counter() - started
        started = time.perf_counter()
        for k in range(1, config.heads):
            torch.manual_seed(config.seed + k)  # the head's initial weights
            other = model.fresh_head()
            steps += train_head(other, heads_read, labels, dataclasses.replace(config, seed=config.seed + k), fold,
                                progress, on_step, first_step=steps, outside=outside, head=k, weights=weights)
            model.add_head(other)
        seconds["head"] += time.perf_counter() - started
    return steps, seconds


def rerun_states(model: EncoderClassifier, states: Sequence[np.ndarray], top_layers: int, batch_size: int = 16,
                 progress: bool = True) -> list[np.ndarray]:
    """Cached states ``[layers, frames, d_model]`` as ``model``'s encoder gives them now: the top ``top_layers``
    layers (trained by stage (b)) run again from the layer beneath (:meth:`EncoderClassifier.rerun_top`). What
    heads trained after stage (b) read; float16, like the cache. Clips run in batches of similar lengths."""
    out: list[np.ndarray | None] = [None] * len(states)
    order = sorted(range(len(states)), key=lambda i: states[i].shape[-2])

    def run(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, valid = pad_states([states[i] for i in rows], model.device)
        with autocast(model.device):
            return model.rerun_top(hidden, valid, top_layers), valid

    for row, value in states_in_batches(model, order, batch_size, run, "stage (b)'s states", progress,
                                        leave=False):
        out[row] = value
    return out  # type: ignore[return-value]


def head_scores(model: EncoderClassifier, states: Sequence[np.ndarray], labels: np.ndarray,
                batch_size: int = 64, top_layers: int = 0) -> tuple[np.ndarray, float]:
    """Phrase probabilities from cached encoder states (the top layers run again when ``top_layers``), and their
    mean log loss."""
    probs = np.zeros(len(states))
    model.eval()
    with torch.no_grad(), autocast(model.device):
        for begin in range(0, len(states), batch_size):
            hidden, valid = pad_states(states[begin : begin + batch_size], model.device)
            logits = model.classify_cached(hidden, valid, top_layers)[0]
            probs[begin : begin + batch_size] = torch.softmax(logits.float(), -1)[:, 1].cpu()
    return probs, log_loss(labels, probs)


def encoder_states(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor, examples: LabelledAudio,
                   config: FinetuneConfig, progress: bool = True) -> list[np.ndarray]:
    """Each clip's frozen-encoder states (of :func:`features.fixed_crop`), through the feature cache."""
    crops = [fixed_crop(a, b, config.max_seconds) for a, b in zip(examples.audios, examples.bounds)]
    return encode_clips(model.to(config.torch_device()), feature_extractor, crops, config.eval_batch_size,
                        FeatureCache(), progress)


def train_model(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor, examples: LabelledAudio,
                config: FinetuneConfig, fold: int | None = None, progress: bool = True,
                on_step: StepCallback | None = None, weights: np.ndarray | None = None) -> int:
    """Train ``model`` in place on ``examples``; returns the number of optimiser steps.

    ``on_step(fold, step, loss)`` is called after every step (``fold`` is None for the final fit).
    ``weights`` (:func:`clip_weights`, one per clip) weigh each clip's loss.
    """
    device = config.torch_device()
    model.to(device).train()
    seed = config.seed + (fold if fold is not None else 1000)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder_params = [p for n, p in model.encoder.named_parameters() if not n.startswith("embed_positions")]
    optimizer = torch.optim.Adam([{"params": encoder_params, "lr": config.encoder_lr},
                                  {"params": model.head_parameters(), "lr": config.head_lr}])
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
                    clips = [augment_audio(c, config.max_seconds, rng, examples.banks) for c in clips]
                feats, lengths = collate([log_mel(feature_extractor, c) for c in clips], device)
                target = torch.as_tensor(examples.labels[rows], dtype=torch.long, device=device)
                with autocast(device):
                    logits = model(feats, lengths)
                loss = _clip_loss(logits, target, weights, rows)
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
    return probs, log_loss(examples.labels, probs)


def _base_model(config: FinetuneConfig,
                encoder_factory: EncoderFactory | None) -> tuple[EncoderClassifier, WhisperFeatureExtractor]:
    factory = encoder_factory or load_pretrained
    torch.manual_seed(config.seed)  # the head's initial weights
    model, feature_extractor = factory(config.model, config.dropout)
    model = model.with_head(config.pooling, config.layers, config.frame_head, config.center)
    model.channel_dropout.p = config.feature_dropout
    model.style_mix.p = config.style_mix
    model.head_vote = config.head_vote
    if config.max_seconds * 100 > model.max_frames:
        raise ValueError(f"FinetuneConfig.max_seconds={config.max_seconds!r} is invalid for {config.model!r}; "
                         f"allowed: at most {model.max_frames / 100:g}")
    if config.top_layers >= len(model.encoder.layers):
        raise ValueError(f"FinetuneConfig.top_layers={config.top_layers!r} is invalid for {config.model!r}; allowed: "
                         f"at most {len(model.encoder.layers) - 1} (its encoder has {len(model.encoder.layers)} layers, "
                         "and stage (b) starts from a cached layer beneath the ones it trains)")
    return model.cpu(), feature_extractor


def one_head(config: FinetuneConfig) -> FinetuneConfig:
    """``config`` with one frame head and one fit (stage (a) only with ``fold_stage_b=False``): what the
    cross-validation folds and leave-one-engine-out fits train.

    Their job is to estimate how one recipe does on clips it did not see; the final model's extra heads and fits
    (``FinetuneConfig.heads``, ``FinetuneConfig.fits``) average out the seed's noise in its decisions and would
    multiply those fits' minutes for it. The folds' out-of-fold scores thus stand for one head, a little below the
    mean of several. With ``fold_stage_b=False`` they train stage (a) only, on the frozen encoder."""
    held = dataclasses.replace(config, heads=1, fits=1, fit_stage_a="own", fit_merge="vote")
    if not config.fold_stage_b:
        held = dataclasses.replace(held, top_layers=0, encoder_lr=0.0, fold_stage_b=True, cpu_bf16=False)
    return held


@dataclass
class FinetuneCV:
    """The cross-validation, and with ``refit="best_fold"`` the best fold's trained model."""

    result: CVResult
    best_fold_model: FittedClassifier | None = None


def cross_validate(examples: LabelledAudio, config: FinetuneConfig | None = None,
                   encoder_factory: EncoderFactory | None = None, progress: bool = True,
                   on_step: StepCallback | None = None, on_fold: FoldCallback | None = None) -> FinetuneCV:
    """k-fold fine-tuning, folds grouped by voice when ``examples`` know their voices (:func:`heardet.cv.folds`);
    each fold starts from the same pretrained weights. With ``refit="all"`` each fold trains one head
    (:func:`one_head`), whatever ``config.heads`` says; with ``best_fold``, as many as the final model has.

    Args:
        examples: the labelled clips (``config.max_train_clips`` subsamples them).
        config: the run's settings (default :class:`FinetuneConfig`).
        encoder_factory: ``(model_name, dropout) -> (EncoderClassifier, WhisperFeatureExtractor)``;
            default :func:`heardet.approaches.finetune.model.load_pretrained`. Called once.
        progress: show tqdm bars.
        on_step: ``on_step(fold, step, loss)`` after every training step.
        on_fold: ``on_fold(fold, val_loss, scores)`` after every fold (scores at threshold 0.5).

    Returns:
        The :class:`~heardet.cv.CVResult` (out-of-fold scores, ``config.threshold`` or, when that is -1,
        the threshold chosen on them;
        ``extra`` holds per-fold ``seconds``, ``val_loss`` and ``steps``, the ``ids`` of the
        out-of-fold rows and, with ``refit="best_fold"``, ``best_fold``) and the best fold's model.
    """
    config = config or FinetuneConfig()
    if config.refit == "all":  # the final fit trains the heads; a best fold's model is the final model, heads and all
        config = one_head(config)
    examples = examples.subsample(config.max_train_clips, config.seed)
    folds = cv_folds(examples.labels, config.n_folds, config.seed, examples.voices or None)
    base, feature_extractor = _base_model(config, encoder_factory)
    started = time.perf_counter()
    states = encoder_states(base, feature_extractor, examples, config, progress) if config.cached else None
    outside = outside_frames(examples, states, config.max_seconds) if states and config.outside_weight else None
    weights = clip_weights(examples, config)
    oof = np.zeros(len(examples.ids))
    fold_scores: list[Scores] = []
    extra: dict[str, list] = {"seconds": [], "val_loss": [], "steps": [], "ids": list(examples.ids),
                              "encode_seconds": [time.perf_counter() - started] if states is not None else []}
    best: tuple[tuple[float, float], int, EncoderClassifier, int, float] | None = None
    for fold, (train_rows, val_rows) in enumerate(tqdm(folds, desc="folds", unit="fold", disable=not progress)):
        started = time.perf_counter()
        model = copy.deepcopy(base)
        val = examples.subset(val_rows)
        fold_weights = None if weights is None else weights[train_rows]
        if states is not None:
            steps, stage_seconds = train_cached(model, [states[i] for i in train_rows], examples.labels[train_rows],
                                                config, fold, progress, on_step,
                                                [outside[i] for i in train_rows] if outside else None, fold_weights)
            for name, value in stage_seconds.items():
                extra.setdefault(f"{name}_seconds", []).append(value)
            probs, val_loss = head_scores(model, [states[i] for i in val_rows], val.labels,
                                          top_layers=config.top_layers)
        else:
            steps = train_model(model, feature_extractor, examples.subset(train_rows), config, fold, progress,
                                on_step, fold_weights)
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
    threshold = config.fixed_threshold
    if threshold is None:
        threshold = best_threshold(examples.labels, oof)
    best_model = None
    if best is not None:
        _, fold, model, steps, seconds = best
        extra["best_fold"] = [fold]
        best_model = FittedClassifier(model, feature_extractor, threshold, fold, steps, seconds)
    return FinetuneCV(CVResult(tuple(fold_scores), oof, threshold, extra), best_model)


def fit(examples: LabelledAudio, config: FinetuneConfig | None = None,
        encoder_factory: EncoderFactory | None = None, cv: FinetuneCV | None = None,
        threshold: float | None = None, progress: bool = True,
        on_step: StepCallback | None = None) -> FittedClassifier:
    """The final model: trained on every labelled clip (``refit="all"``) or the CV's best fold.

    Args:
        examples, config, encoder_factory, progress, on_step: as for :func:`cross_validate`
            (``on_step`` gets ``fold=None``).
        cv: the cross-validation of the same clips; supplies the threshold, and the model
            itself when ``config.refit == "best_fold"``.
        threshold: decision threshold (default: the CV's, else ``config.threshold``, else 0.5).

    Raises:
        ValueError: ``refit="best_fold"`` without a ``cv`` from :func:`cross_validate` run with
            that setting.
    """
    config = config or FinetuneConfig()
    if config.refit == "best_fold":
        if cv is None or cv.best_fold_model is None:
            raise ValueError("FinetuneConfig.refit='best_fold' takes the model from cross_validate(); "
                             "pass cv=cross_validate(examples, config) run with refit='best_fold'")
        fitted = cv.best_fold_model
        if threshold is not None:
            fitted.threshold = float(threshold)
        return fitted
    if threshold is None:
        threshold = cv.result.threshold if cv is not None else config.fixed_threshold or 0.5
    examples = examples.subsample(config.max_train_clips, config.seed)
    started = time.perf_counter()
    model, feature_extractor = _base_model(config, encoder_factory)
    states, stage_seconds = None, {}
    weights = clip_weights(examples, config)
    if config.cached:
        states = encoder_states(model, feature_extractor, examples, config, progress)
        stage_seconds["encode"] = time.perf_counter() - started
        outside = outside_frames(examples, states, config.max_seconds) if config.outside_weight else None
        steps, trained = train_cached(model, states, examples.labels, config, None, progress, on_step, outside,
                                      weights)
        stage_seconds.update(trained)
    else:
        steps = train_model(model, feature_extractor, examples, config, None, progress, on_step, weights)
    seconds = time.perf_counter() - started
    logger.info("final fit on %d clips: %d steps, %.1f s (%s)", len(examples.ids), steps, seconds,
                ", ".join(f"{k} {v:.0f} s" for k, v in stage_seconds.items()) or "from audio")
    offsets = phrase_offsets(model, feature_extractor, examples, config, states)
    return FittedClassifier(model, feature_extractor, float(threshold), None, steps, seconds, offsets, stage_seconds)


def holdout_predictor(examples: LabelledAudio, config: FinetuneConfig,
                      encoder_factory: EncoderFactory | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``fit_predict(train_rows, held_out_rows)`` for leave-one-engine-out: a model of ``config`` (one head) fitted on
    every clip of ``train_rows`` (``refit="all"``, no subsample), and its phrase probabilities of ``held_out_rows``."""
    held_config = dataclasses.replace(one_head(config), refit="all", max_train_clips=0)

    def fit_predict(rows: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        held = fit(examples.subset(rows), held_config, encoder_factory, progress=False)
        return evaluate(held.model, held.feature_extractor, examples.subset(held_out), held_config)[0]

    return fit_predict


def engine_holdout(examples: LabelledAudio, config: FinetuneConfig, threshold: float,
                   encoder_factory: EncoderFactory | None = None) -> dict[str, Scores]:
    """Leave-one-engine-out macro F1 (:func:`heardet.cv.leave_one_engine_out`): a model fitted on every clip
    of the other engines (:func:`holdout_predictor`), scored on this engine's clips at ``threshold``."""
    return leave_one_engine_out(examples.engines or None, examples.labels,
                                holdout_predictor(examples, config, encoder_factory), threshold)


OFFSET_CLIPS = 200  # positives whose peak frames calibrate the phrase offsets


def phrase_offsets(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor, examples: LabelledAudio,
                   config: FinetuneConfig, states: Sequence[np.ndarray] | None = None) -> tuple[float, float] | None:
    """Median seconds from a phrase's start to the model's peak frame, and from the peak to its end, over
    (up to :data:`OFFSET_CLIPS`) training positives with bounds; None for mean pooling or without bounds."""
    if model.pooling != "frames":
        return None
    rows = [i for i in range(len(examples.ids)) if examples.labels[i] == 1 and examples.bounds[i]][:OFFSET_CLIPS]
    if not rows:
        return None
    crops = [fixed_crop(examples.audios[i], examples.bounds[i], config.max_seconds) for i in rows]
    if states is not None:
        with torch.no_grad():
            frames = [model.classify_cached(*pad_states([states[i]], model.device), config.top_layers)[1][0].float()
                      .cpu().numpy() for i in rows]
    else:
        frames = predict_frames(model, feature_extractor, crops, config.eval_batch_size)[1]
    before, after = [], []
    for i, crop, logits in zip(rows, crops, frames):
        t = peak_time(logits) + crop_start(len(examples.audios[i]), examples.bounds[i], config.max_seconds) / SAMPLE_RATE
        start, end = min(examples.bounds[i], key=lambda b: abs((b[0] + b[1]) / 2 - t))
        before.append(t - start)
        after.append(end - t)
    return float(max(0.0, np.median(before))), float(max(0.0, np.median(after)))

