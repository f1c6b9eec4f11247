"""Approach 3: a Whisper encoder with a classification head, run on content-sized input.

Two heads (``pooling``):

- ``frames`` (default): every encoder frame (20 ms) gets a phrase logit; the clip's logit is their
  log-mean-exp over the valid frames, a soft maximum, so a 0.6 s phrase in a 6 s clip is not
  averaged away. The frames around the peak say where the phrase is (:attr:`ClipScore.phrase_start_s`).
  ``frame_head`` says what computes the frame logits: ``conv``, two 1-D convolutions
  (``d_model -> 128 -> 1``, kernel 5; each frame sees 180 ms), or ``gru``, the first convolution,
  then a bidirectional GRU over the whole clip, so a frame's logit can depend on what was said
  before and after it: «я слышу» and «не слышу» end in the same word (:class:`GRUFrameHead`).
- ``mean``: ``mean over the frames that hold audio -> Dropout -> Linear(d_model, 2)``, the
  original competition recipe.

Which encoder states the head sees (``layers``): ``last``, the final layer's (the original
recipe), or ``all``, a learned softmax-weighted sum of every layer's output, layer-normalised.
The final layer is shaped for Whisper's decoder; the middle layers keep more of the sound, and
the mix lets the head pick (``benchmarks/quality.py`` measures both).

``heads``: with frame pooling, the model may hold several heads (each its own layer mix and frame
head) trained with different seeds on the same encoder's states (frozen, or as stage (b) left it: the
heads after the first train once it has). The encoder runs once; the
clip's phrase probability is the mean of the heads' (``head_vote="mean"``) or the lowest of theirs
(``head_vote="min"``: a clip is called only when every head calls it), and its frame logits the mean of
theirs either way. One head's decisions on clips it never saw move with its seed (``benchmarks/quality.md``):
heads of different seeds call the phrase's own clips alike, but each flags a few near misses that the others
score near zero, so the lowest of their probabilities drops what only some of them flag. Only the first
head ever trains inside the model: the others are trained on their own and added with
:meth:`EncoderClassifier.add_head`.

``fits``: with stage (b), the model may also hold several whole fits: each trained from its own seed
through stage (a) and stage (b), so each has its own copy of the encoder's top layers (and final layer
norm), layer mix and frame head, on the lower layers they share. The shared layers run once; each fit's
top layers run again from the shared layers' output, so a clip costs about one more encoder pass per
fit. Their phrase probabilities make the clip's as several heads' do (``head_vote``), and their frame
logits are averaged. Two stage (b) fits of different seeds differ more than two heads on one encoder
(``benchmarks/quality.md``). Only the first fit ever trains inside the model: the others are trained
as models of their own and added with :meth:`EncoderClassifier.add_fit`. Fits whose stage (b) runs all
started from the same weights (one stage (a) head) can instead be merged into one fit of their mean weights
(:meth:`EncoderClassifier.average_fits`), which scores at one fit's cost.

``center``: subtract each clip's mean state (over its valid frames, after the layer mix) from
every frame before the head. What is constant across a clip (the voice, the speech engine, the
channel) then drops out and the head sees how each frame differs from the rest of its clip, as
cepstral mean normalisation does for MFCCs. Long audio is centred per window.

Stock Whisper pads every input to 30 s (3000 mel frames); here a batch is padded only to its
longest clip, which makes a 5 s clip several times cheaper (`benchmarks/finetune_speed.py`). The stock
``WhisperEncoder.forward`` refuses such input, so :meth:`EncoderClassifier.encode` runs the
encoder's own submodules with the positional embeddings sliced.

Padding never changes a clip's score: padded mel frames are zeros, conv1's output beyond a
clip's length is zeroed before conv2 (so conv2 sees the zeros of its own padding), padded
keys are masked in self-attention and only valid frames are pooled.

Recordings longer than ``max_seconds`` are scored in overlapping windows
(:func:`heardet.audio.iter_windows`); a clip's score is its best window's.

Training and cross-validation live in :mod:`heardet.approaches.finetune.train`. This module imports torch;
``import heardet`` does not import this module.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from heardet.approaches.finetune.gru import gru_pair
from heardet.audio import iter_windows
from heardet.devices import torch_device

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor

logger = logging.getLogger(__name__)

N_CLASSES = 2
WEIGHTS_FILE = "model.safetensors"
META_FILE = "encoder_classifier.json"
# 2 added ``pooling``, 3 ``layers``, 4 ``frame_head``, 5 ``center``, 6 ``heads``, 7 ``head_vote``, 8 ``fits`` and
# ``fit_layers``; a file of an older version loads as: 1 mean pooling, 1-2 the last layer, 1-3 conv, 1-4 uncentred,
# 1-5 one head, 1-6 the heads' mean, 1-7 one fit.
FORMAT_VERSION = 8
POOLINGS = ("frames", "mean")
FRAME_HEADS = ("conv", "gru")
LAYER_CHOICES = ("last", "all")
HEAD_VOTES = ("mean", "min")  # how several heads' phrase probabilities make the clip's (see the module docstring)
FRAME_SECONDS = 0.02  # one encoder output frame (conv2 halves Whisper's 10 ms mel frames)
FRAME_HIDDEN = 128  # channels of the frame head's first convolution
FRAME_KERNEL = 5  # frames each convolution sees (100 ms)
FRAME_GRU = 64  # hidden units of each direction of the GRU frame head
LOCALISE_SHARE = 0.5  # the phrase spans the frames around the peak whose probability is >= this share of the peak's



@dataclass(frozen=True)
class ClipScore:
    """The score of one recording.

    Attributes:
        score: probability of the phrase (max over windows for a long recording).
        label: 1 when ``score >= threshold``, else 0.
        window: index of the window that scored highest (0 for a clip that fits one window).
        start_s: where that window starts in the recording, seconds.
        end_s: where it ends, seconds.
        phrase_start_s: where the phrase starts in the recording (frame pooling only), seconds.
        phrase_end_s: where it ends; both None for a mean-pooling model.
    """

    score: float
    label: int
    window: int
    start_s: float
    end_s: float
    phrase_start_s: float | None = None
    phrase_end_s: float | None = None


@dataclass
class LoadedClassifier:
    """What :func:`load_classifier` rebuilds from a directory.

    Attributes:
        model: the :class:`EncoderClassifier`, in eval mode on the requested device.
        feature_extractor: the ``WhisperFeatureExtractor`` it was trained with.
        threshold: decision threshold on the score.
        max_seconds: window length used for long recordings.
        meta: everything else saved with it (training config, format version, ...).
    """

    model: EncoderClassifier
    feature_extractor: WhisperFeatureExtractor
    threshold: float
    max_seconds: float
    meta: dict[str, Any]

    def predict(self, audios: Sequence[np.ndarray], batch_size: int = 8, progress: bool = False) -> list[ClipScore]:
        """:func:`predict_audio` with this classifier's own threshold, window length and phrase offsets."""
        offsets = self.meta.get("phrase_offsets")
        return predict_audio(self.model, self.feature_extractor, audios, self.max_seconds, batch_size,
                             self.threshold, progress=progress, phrase_offsets=tuple(offsets) if offsets else None)


class _FirstConv(nn.Module):
    """What both frame heads start with: ``Conv1d(d_model, 128, 5) -> GELU -> Dropout``, zero past each clip's end."""

    def __init__(self, d_model: int, dropout: float = 0.2):
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, FRAME_HIDDEN, FRAME_KERNEL, padding=FRAME_KERNEL // 2)
        self.dropout = nn.Dropout(dropout)

    def first(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``hidden [batch, frames, d_model]`` -> ``[batch, 128, frames]``, zero past each clip's end."""
        mask = valid.unsqueeze(1).to(hidden.dtype)  # each conv sees zeros past the end, as in its own padding
        x = self.conv1(hidden.transpose(1, 2) * mask)
        return self.dropout(nn.functional.gelu(x)) * mask


class FrameHead(_FirstConv):
    """Per-frame phrase logits: ``Conv1d(d_model, 128, 5) -> GELU -> Dropout -> Conv1d(128, 1, 5)``."""

    def __init__(self, d_model: int, dropout: float = 0.2):
        super().__init__(d_model, dropout)
        self.conv2 = nn.Conv1d(FRAME_HIDDEN, 1, FRAME_KERNEL, padding=FRAME_KERNEL // 2)

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``hidden [batch, frames, d_model]`` -> logits ``[batch, frames]``; padded frames see zeros."""
        return self.conv2(self.first(hidden, valid)).squeeze(1)


class GRUFrameHead(_FirstConv):
    """Per-frame phrase logits with the whole clip as context: ``Conv1d(d_model, 128, 5) -> GELU -> Dropout``,
    then a bidirectional GRU (64 units each way) over the valid frames; ``Linear`` of the convolution's
    and the GRU's outputs, side by side, gives each frame's logit.

    The two directions are two one-way GRUs (``ahead``, ``behind``) over padded batches: ``behind`` reads each
    clip's valid frames reversed in place, so in both directions the padding follows the valid frames and never
    reaches their outputs, which are zeroed past each clip's end. That is what a bidirectional ``nn.GRU`` gives on
    packed sequences, to float rounding, in less than half its time on a CPU; a head saved with one ``gru``
    module loads into the two (:meth:`_split_bidirectional`). The GRUs run in float32 outside any autocast
    (recurrent kernels do not all take bf16). Where gradients are taken on a CPU, the two run side by side in
    :func:`~heardet.approaches.finetune.gru.gru_pair`, the same outputs to float rounding in under half the time."""

    def __init__(self, d_model: int, dropout: float = 0.2):
        super().__init__(d_model, dropout)
        self.ahead = nn.GRU(FRAME_HIDDEN, FRAME_GRU, batch_first=True)
        self.behind = nn.GRU(FRAME_HIDDEN, FRAME_GRU, batch_first=True)
        self.out = nn.Linear(FRAME_HIDDEN + 2 * FRAME_GRU, 1)
        self._register_load_state_dict_pre_hook(self._split_bidirectional)

    @staticmethod
    def _split_bidirectional(state_dict, prefix, *args) -> None:
        """Rename a saved bidirectional ``gru``'s weights to ``ahead`` (forward) and ``behind`` (``_reverse``)."""
        for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
            name = key[len(prefix + "gru."):]
            module = "behind" if name.endswith("_reverse") else "ahead"
            state_dict[f"{prefix}{module}.{name.removesuffix('_reverse')}"] = state_dict.pop(key)

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``hidden [batch, frames, d_model]`` -> logits ``[batch, frames]``; padded frames see zeros."""
        x = self.first(hidden, valid).transpose(1, 2).float()
        with torch.autocast(x.device.type, enabled=False):
            reverse = reversed_order(valid)  # its own inverse: the same gather puts the outputs back
            backwards = x.gather(1, reverse.unsqueeze(-1).expand_as(x))
            if x.device.type == "cpu" and torch.is_grad_enabled():  # training: both directions in one loop
                ahead, behind = gru_pair(self.ahead, self.behind, x, backwards)
            else:
                ahead, behind = self.ahead(x)[0], self.behind(backwards)[0]
            behind = behind.gather(1, reverse.unsqueeze(-1).expand_as(behind))
            context = torch.cat([ahead, behind], dim=-1) * valid.unsqueeze(-1)
            return self.out(self.dropout(torch.cat([x, context], dim=-1))).squeeze(-1)


def reversed_order(valid: torch.Tensor) -> torch.Tensor:
    """Frame indices ``[batch, frames]`` that put each row's valid frames (``valid``, a prefix) in reverse order and
    leave its padded frames where they were."""
    lengths = valid.sum(dim=1, keepdim=True)
    position = torch.arange(valid.shape[1], device=valid.device).unsqueeze(0)
    return torch.where(position < lengths, lengths - 1 - position, position)


def make_frame_head(kind: str, d_model: int, dropout: float) -> nn.Module:
    """A fresh frame head of ``kind`` (``conv`` or ``gru``)."""
    return GRUFrameHead(d_model, dropout) if kind == "gru" else FrameHead(d_model, dropout)


def soft_max_pool(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Log-mean-exp of ``logits [batch, frames]`` over the valid frames: between their mean and their max."""
    masked = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    count = valid.sum(dim=1).clamp(min=1).to(logits.dtype)
    return torch.logsumexp(masked, dim=1) - torch.log(count)


class LayerMix(nn.Module):
    """A learned softmax-weighted sum of the encoder layers' outputs ``[batch, layers, frames, d]``, layer-normalised."""

    def __init__(self, n_layers: int, d_model: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.weights, dim=0).to(stacked.dtype)
        return self.norm(torch.einsum("l,bltd->btd", weights, stacked))


class ChannelDropout(nn.Module):
    """In training, zero a random share ``p`` of the feature channels of each clip, the same channels in
    every frame (the rest scaled by ``1 / (1 - p)``); the identity in eval mode and at ``p=0``.

    An augmentation of the encoder states (``FinetuneConfig.feature_dropout``): the head cannot lean
    on a few channels that carry one speech engine's sound. Off by default (the original recipe has
    none); the full profile trains with 0.3, which over three seeds raised held-out test F1 on each
    (``benchmarks/quality.py --only a,afd``, ``benchmarks/quality.md``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"feature dropout must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return hidden
        keep = torch.rand(hidden.shape[0], 1, hidden.shape[-1], device=hidden.device) >= self.p
        return hidden * keep.to(hidden.dtype) / (1.0 - self.p)


class StyleMix(nn.Module):
    """In training, with probability ``p`` per batch, give each clip feature statistics mixed with another
    clip's of the batch: each channel's mean and standard deviation over the clip's valid frames become
    ``λ·own + (1 - λ)·other's``, ``λ ~ Beta(0.1, 0.1)`` per clip; the identity in eval mode, at ``p=0`` and for a
    batch of one. MixStyle (Zhou et al., "Domain generalization with MixStyle", ICLR 2021) on the frame
    features.

    An augmentation of the encoder states (``FinetuneConfig.style_mix``). The intent: if what sets a speech
    engine or a voice apart shows in each channel's level and spread over a clip, the head meets new mixes
    of those and must lean on the frame-to-frame pattern that says the phrase. Measured on the full
    profile's data (one seed), it raised test F1 but lowered leave-one-engine-out F1 both ways
    (``benchmarks/quality.md``, ``style_mix``), so it is off by default. Unlike MixStyle's reference code the
    statistics are not detached: gradients pass through them, as in that measurement. Padded frames come
    out changed; the frame heads mask their input (``_FirstConv.first``)."""

    ALPHA = 0.1  # the Beta distribution's two parameters: most λ near 0 or 1, a few near the middle

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"style mix probability must be in [0, 1], got {p!r}")
        self.p = p

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        batch = hidden.shape[0]
        if not self.training or self.p == 0.0 or batch < 2 or float(torch.rand(())) >= self.p:
            return hidden
        mean = masked_mean(hidden, valid).unsqueeze(1)
        std = (masked_mean((hidden - mean) ** 2, valid).unsqueeze(1) + 1e-5).sqrt()
        other = torch.randperm(batch, device=hidden.device)
        lam = torch.distributions.Beta(self.ALPHA, self.ALPHA).sample((batch, 1, 1)).to(hidden.device, hidden.dtype)
        mixed_mean = lam * mean + (1.0 - lam) * mean[other]
        mixed_std = lam * std + (1.0 - lam) * std[other]
        return (hidden - mean) / std * mixed_std + mixed_mean


class Readout(nn.Module):
    """One more head of an :class:`EncoderClassifier`: its own layer mix (or None) and frame head."""

    def __init__(self, head: nn.Module, mix: nn.Module | None):
        super().__init__()
        self.head = head
        self.mix = mix


class TopFit(nn.Module):
    """One more fit of an :class:`EncoderClassifier`: its own copy of the encoder's top layers and final layer
    norm (as its stage (b) trained them), its layer mix (or None) and its frame head."""

    def __init__(self, layers: nn.ModuleList, layer_norm: nn.Module, head: nn.Module, mix: nn.Module | None):
        super().__init__()
        self.layers = layers
        self.layer_norm = layer_norm
        self.head = head
        self.mix = mix


class EncoderClassifier(nn.Module):
    """Whisper encoder -> a frame head with soft-maximum pooling, or masked mean pooling -> ``Linear(d_model, 2)``.

    Args:
        encoder: a ``transformers`` ``WhisperEncoder`` (e.g. ``model.model.encoder`` of a
            ``WhisperForConditionalGeneration``); it is used, not copied.
        dropout: dropout probability before the head.
        pooling: ``frames`` or ``mean`` (see the module docstring).
        layers: ``last`` or ``all`` (a learned mix of every layer's output; see the module docstring).
        frame_head: ``conv`` or ``gru``, what scores the frames (``pooling="frames"``; see the module docstring).
        center: subtract each clip's mean state from its frames before the head (see the module docstring).
        heads: how many heads score the frames (``pooling="frames"``; see the module docstring). The first is
            ``head`` and ``mix``; the others, ``extra_heads``, start untrained here and are filled by loading saved
            weights (a model being trained gets them from :meth:`add_head`).
        head_vote: ``mean`` or ``min``, how several heads' (or fits') phrase probabilities make the clip's (see the
            module docstring); :attr:`head_vote` may be set later, as training does once its heads are added.
        fits: how many fits score the frames (``layers="all"``; see the module docstring). The first is this
            model's own encoder and head; the others, ``extra_fits``, start as untrained copies here and are
            filled by loading saved weights (a model being trained gets them from :meth:`add_fit`).
        fit_layers: with ``fits > 1``, how many of the encoder's top layers each fit has of its own.
    """

    def __init__(self, encoder: nn.Module, dropout: float = 0.2, pooling: str = "mean", layers: str = "last",
                 frame_head: str = "conv", center: bool = False, heads: int = 1, head_vote: str = "mean",
                 fits: int = 1, fit_layers: int = 0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
        if frame_head not in FRAME_HEADS:
            raise ValueError(f"frame_head must be one of {FRAME_HEADS}, got {frame_head!r}")
        if center and pooling == "mean":
            raise ValueError("center=True needs pooling='frames': a centred clip's mean is zero")
        if not isinstance(heads, int) or heads < 1 or (heads > 1 and pooling != "frames"):
            raise ValueError(f"heads must be an integer >= 1, and 1 with pooling='mean', got {heads!r}")
        if head_vote not in HEAD_VOTES:
            raise ValueError(f"head_vote must be one of {HEAD_VOTES}, got {head_vote!r}")
        if not isinstance(fits, int) or fits < 1 or (fits > 1 and (pooling != "frames" or layers != "all" or not
                                                                   1 <= fit_layers < len(encoder.layers))):
            raise ValueError(f"fits must be an integer >= 1, and 1 unless pooling='frames', layers='all' and "
                             f"fit_layers in [1, {len(encoder.layers) - 1}], got fits={fits!r}, "
                             f"fit_layers={fit_layers!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.layers = layers
        self.frame_head = frame_head
        self.center = bool(center)
        self.head_vote = head_vote
        self.dropout = nn.Dropout(dropout)
        d_model = encoder.config.d_model
        self.head = make_frame_head(frame_head, d_model, dropout) if pooling == "frames" else \
            nn.Linear(d_model, N_CLASSES)
        self.mix = LayerMix(len(encoder.layers), d_model) if layers == "all" else None
        self.channel_dropout = ChannelDropout()  # training sets its ``p`` (FinetuneConfig.feature_dropout)
        self.style_mix = StyleMix()  # training sets its ``p`` (FinetuneConfig.style_mix)
        self.extra_heads = nn.ModuleList(
            Readout(make_frame_head(frame_head, d_model, dropout),
                    LayerMix(len(encoder.layers), d_model) if layers == "all" else None) for _ in range(heads - 1))
        self.extra_fits = nn.ModuleList(
            TopFit(copy.deepcopy(encoder.layers[len(encoder.layers) - fit_layers :]), copy.deepcopy(encoder.layer_norm),
                   make_frame_head(frame_head, d_model, dropout), LayerMix(len(encoder.layers), d_model))
            for _ in range(fits - 1))

    @property
    def heads(self) -> int:
        """How many heads score the frames (the first, and :attr:`extra_heads`)."""
        return 1 + len(self.extra_heads)

    @property
    def fits(self) -> int:
        """How many fits score the frames (the first, and :attr:`extra_fits`)."""
        return 1 + len(self.extra_fits)

    @property
    def fit_layers(self) -> int:
        """How many top layers each of :attr:`extra_fits` has of its own (0 with one fit)."""
        return len(self.extra_fits[0].layers) if self.extra_fits else 0

    def head_parameters(self) -> list[nn.Parameter]:
        """What the first head trains: the head, and the layer mix when there is one (not :attr:`extra_heads`)."""
        return [*self.head.parameters(), *(self.mix.parameters() if self.mix is not None else ())]

    def add_head(self, other: EncoderClassifier) -> None:
        """Score with ``other``'s head too, from now on: its layer mix and frame head join :attr:`extra_heads`.

        ``other`` must read the same encoder (trained on the same frozen states) with the same kind of head.
        """
        if other.encoder is not self.encoder or other.head_kind != self.head_kind:
            raise ValueError(f"add_head needs a head of the same kind {self.head_kind} on this model's own encoder")
        if self.pooling != "frames" or other.heads != 1:
            raise ValueError("add_head adds one frame-pooling head at a time")
        self.extra_heads.append(Readout(other.head, other.mix).to(self.device))

    def add_fit(self, other: EncoderClassifier, top_layers: int) -> None:
        """Score with ``other``'s fit too, from now on: its encoder's top ``top_layers`` layers and final layer norm,
        its layer mix and its frame head join :attr:`extra_fits`; its lower layers are never run.

        ``other`` must be a one-head, one-fit model of the same kind whose encoder is a copy of this one's below
        those layers (stage (b) of another seed, started from the same encoder), the same ``top_layers`` as the
        fits already added.
        """
        total = len(self.encoder.layers)
        if other.encoder is self.encoder or other.head_kind != self.head_kind or self.layers != "all":
            raise ValueError(f"add_fit needs a fit of the same kind {self.head_kind} (layers='all') on its own "
                             "copy of this model's encoder")
        if other.heads != 1 or other.fits != 1:
            raise ValueError("add_fit adds one fit of one head at a time")
        if not 1 <= top_layers < total or (self.extra_fits and top_layers != self.fit_layers):
            raise ValueError(f"add_fit: top_layers must be in [1, {total - 1}] and the same for every fit "
                             f"({self.fit_layers or 'none yet'}), got {top_layers!r}")
        self.extra_fits.append(TopFit(nn.ModuleList(other.encoder.layers[total - top_layers :]),
                                      other.encoder.layer_norm, other.head, other.mix).to(self.device))

    def average_fits(self) -> None:
        """Merge :attr:`extra_fits` into the first fit: each weight of the fits' top layers, final layer norm,
        layer mix and frame head becomes its mean over every fit, and the model is left with one fit, scoring
        at one fit's cost. A weight average of fine-tunes ("model soup", Wortsman et al., ICML 2022) only
        means something for fits that started from the same weights (``FinetuneConfig.fit_stage_a="shared"``:
        one stage (a) head, stage (b) runs of different seeds); for fits of their own stage (a) heads it would
        average unrelated heads, which nothing here can tell from the weights, hence the caller's choice.
        """
        if not self.extra_fits:
            raise ValueError("average_fits needs a model of several fits (add_fit)")
        total = len(self.encoder.layers)
        first = TopFit(nn.ModuleList(self.encoder.layers[total - self.fit_layers :]), self.encoder.layer_norm,
                       self.head, self.mix)
        merged = first.state_dict()
        others = [f.state_dict() for f in self.extra_fits]
        for name, value in merged.items():
            if value.is_floating_point():  # an integer buffer (a step count) stays the first fit's
                merged[name] = torch.stack([value, *(o[name] for o in others)]).mean(dim=0)
        first.load_state_dict(merged)
        self.extra_fits = nn.ModuleList()

    @classmethod
    def from_pretrained(cls, name_or_bundle: Any, dropout: float = 0.2, device: str = "cpu",
                        pooling: str = "mean") -> EncoderClassifier:
        """Build from a Whisper checkpoint, with a freshly initialised head.

        Args:
            name_or_bundle: a name or directory for :func:`heardet.whisper.hub.load_whisper`,
                a ``WhisperBundle``, or a loaded ``WhisperForConditionalGeneration``.
            dropout: dropout before the head.
            device: where to load a checkpoint given by name.
            pooling: ``frames`` or ``mean``.
        """
        return cls(_whisper_model(name_or_bundle, device).model.encoder, dropout, pooling)

    @property
    def head_kind(self) -> tuple[str, str, str, bool]:
        """``(pooling, layers, frame_head, center)``: what a head of this model reads and how it scores."""
        return self.pooling, self.layers, self.frame_head, self.center

    def with_head(self, pooling: str, layers: str = "last", frame_head: str = "conv",
                  center: bool = False) -> EncoderClassifier:
        """This encoder with a fresh head of ``pooling`` on ``layers`` (itself when it already has that head)."""
        if (pooling, layers, frame_head, bool(center)) == self.head_kind:
            return self
        return EncoderClassifier(self.encoder, self.dropout.p, pooling, layers, frame_head, center).to(self.device)

    def fresh_head(self, encoder: nn.Module | None = None) -> EncoderClassifier:
        """This encoder (or ``encoder``, a copy of it for another fit) with a new, untrained head of the same kind
        (one head), for :meth:`add_head` (:meth:`add_fit`) once trained."""
        encoder = self.encoder if encoder is None else encoder
        fresh = EncoderClassifier(encoder, self.dropout.p, *self.head_kind).to(self.device)
        fresh.channel_dropout.p = self.channel_dropout.p
        fresh.style_mix.p = self.style_mix.p
        return fresh

    @property
    def max_frames(self) -> int:
        """The most mel frames the encoder's positional embeddings cover (3000 = 30 s)."""
        return int(self.encoder.config.max_source_positions * 2)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the encoder on content-sized features.

        Args:
            features: log-mel features ``[batch, n_mels, frames]``, zero beyond each length.
            lengths: valid mel frames per clip ``[batch]``.

        Returns:
            hidden states ``[batch, frames_out, d_model]`` (``[batch, layers, frames_out, d_model]``,
            every layer's output, when ``layers="all"``) and the boolean mask of valid output frames
            ``[batch, frames_out]`` (conv2 halves the frame rate).
        """
        enc = self.encoder
        frames = features.shape[-1]
        if frames > self.max_frames:
            raise ValueError(f"{frames} mel frames exceed the encoder's {self.max_frames} "
                             f"({self.max_frames // 100} s); score long audio in windows")
        features = features.to(enc.conv1.weight.dtype)
        lengths = lengths.to(features.device)
        in_mask = torch.arange(frames, device=features.device)[None, :] < lengths[:, None]
        x = nn.functional.gelu(enc.conv1(features))
        x = x * in_mask[:, None, :].to(x.dtype)  # conv2 must see zeros past the end, as in its own padding
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        out_frames = x.shape[1]
        valid = torch.arange(out_frames, device=x.device)[None, :] < ((lengths + 1) // 2)[:, None]
        x = x + enc.embed_positions.weight[:out_frames]
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        attn_mask = key_mask(valid, x.dtype)
        outputs = []
        for layer in enc.layers:
            if not (self.training and enc.layerdrop > 0.0 and torch.rand([]) < enc.layerdrop):
                x = layer(x, attn_mask)
            outputs.append(x)
        last = enc.layer_norm(x)
        if self.mix is None:
            return last, valid
        return torch.stack([*outputs[:-1], last], dim=1), valid

    def top_parameters(self, n: int) -> list[nn.Parameter]:
        """The parameters of the encoder's top ``n`` layers and of its final layer norm (what stage (b) trains)."""
        return [p for layer in self.encoder.layers[len(self.encoder.layers) - n :] for p in layer.parameters()] + \
            list(self.encoder.layer_norm.parameters())

    def rerun_top(self, stacked: torch.Tensor, valid: torch.Tensor, n: int,
                  fit: TopFit | None = None) -> torch.Tensor:
        """Every layer's output as :meth:`encode` gives it (``layers="all"``), with the top ``n`` layers run
        again, and so trainable, from cached states ``[batch, layers, frames, d_model]`` of the layer beneath.

        This is stage (b) of training on a CPU: the lower layers' outputs come from the feature cache
        and only the top ``n`` layers run, forward and backward. Inference runs the whole encoder
        from audio (:meth:`encode`), which computes the same thing. With ``fit`` (one of
        :attr:`extra_fits`), that fit's own top layers and layer norm run instead of the encoder's.
        """
        enc = self.encoder
        total = len(enc.layers)
        if fit is not None and len(fit.layers) != n:
            raise ValueError(f"this fit has {len(fit.layers)} top layers of its own, not {n}")
        top_layers, layer_norm = (enc.layers[total - n :], enc.layer_norm) if fit is None else \
            (fit.layers, fit.layer_norm)
        if self.mix is None:
            raise ValueError("rerun_top needs every layer's cached output (layers='all')")
        if not 1 <= n < total:
            raise ValueError(f"top layers must be in [1, {total - 1}] for a {total}-layer encoder, got {n!r}")
        x = stacked[:, total - n - 1]
        attn_mask = key_mask(valid, x.dtype)
        outputs = list(stacked.unbind(dim=1))[: total - n]
        for layer in top_layers:
            x = layer(x, attn_mask)
            outputs.append(x)
        outputs[-1] = layer_norm(x)
        return torch.stack(outputs, dim=1)

    def classify(self, hidden: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class logits ``[batch, 2]`` from encoder states (index 1 = the phrase is said), and the
        frame logits ``[batch, frames]`` (None for mean pooling). Cached states come in here too.

        With several heads or fits, the clip's phrase probability is the mean of theirs or the lowest
        (:attr:`head_vote`), and the frame logits the mean of theirs. Each of :attr:`extra_fits` reads ``hidden``
        with its own top layers run again from the shared layers' output (:meth:`rerun_top`)."""
        if self.pooling == "mean":
            return self.head(self.dropout(masked_mean(self._features(hidden, valid, self.mix), valid))), None
        clip, frames = self._frames(hidden, valid, self.head, self.mix)
        if self.extra_heads or self.extra_fits:
            scored = [(clip, frames), *(self._frames(hidden, valid, r.head, r.mix) for r in self.extra_heads),
                      *(self._frames(self.rerun_top(hidden, valid, self.fit_layers, f), valid, f.head, f.mix)
                        for f in self.extra_fits)]
            probabilities = torch.stack([torch.sigmoid(c.float()) for c, _ in scored])
            if self.head_vote not in HEAD_VOTES:  # an attribute, so checked where it is used too
                raise ValueError(f"head_vote must be one of {HEAD_VOTES}, got {self.head_vote!r}")
            probability = probabilities.mean(dim=0) if self.head_vote == "mean" else probabilities.amin(dim=0)
            clip = torch.logit(probability, eps=1e-6).to(clip.dtype)
            frames = torch.stack([f for _, f in scored]).mean(dim=0)
        return torch.stack([torch.zeros_like(clip), clip], dim=-1), frames

    def _features(self, hidden: torch.Tensor, valid: torch.Tensor, mix: nn.Module | None) -> torch.Tensor:
        """What a head reads: the layer mix (when there is one), centred if asked; in training, statistics mixed
        between clips and channel dropout."""
        if mix is not None:
            hidden = mix(hidden)
        if self.center:  # padded frames need no zeroing: the frame heads mask their input (``_FirstConv.first``)
            hidden = hidden - masked_mean(hidden, valid).unsqueeze(1)
        return self.channel_dropout(self.style_mix(hidden, valid))

    def _frames(self, hidden: torch.Tensor, valid: torch.Tensor, head: nn.Module,
                mix: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame head's clip logit ``[batch]`` (soft maximum) and frame logits ``[batch, frames]``."""
        frames = head(self.dropout(self._features(hidden, valid, mix)), valid)
        return soft_max_pool(frames, valid), frames

    def classify_cached(self, hidden: torch.Tensor, valid: torch.Tensor,
                        top_layers: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`classify` of cached states, the top ``top_layers`` layers run again first (:meth:`rerun_top`)."""
        return self.classify(self.rerun_top(hidden, valid, top_layers) if top_layers else hidden, valid)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, 2]`` (index 1 = the phrase is said)."""
        return self.classify(*self.encode(features, lengths))[0]


def key_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The encoder layers' additive attention mask ``[batch, 1, query, key]`` from the valid frames
    ``[batch, frames]``: padded keys get the dtype's minimum."""
    blocked = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, torch.finfo(dtype).min)
    return blocked[:, None, None, :].expand(-1, 1, valid.shape[1], -1)


def peak_time(frame_logits: np.ndarray) -> float:
    """Seconds into the window of the centre of the frame that scores highest."""
    return (int(np.argmax(frame_logits)) + 0.5) * FRAME_SECONDS


def localise(frame_logits: np.ndarray, offsets: tuple[float, float] | None = None) -> tuple[float, float]:
    """(start_s, end_s) of the phrase in a window.

    The frame head fires sharply on one part of the phrase (for «не слышу», its last syllable), so
    with ``offsets`` = (seconds before, seconds after) the peak — measured on the training clips'
    bounds when the model was fitted — the phrase is placed around the peak; without them, it is
    the run of frames around the peak whose probability is at least :data:`LOCALISE_SHARE` of the peak's.
    """
    if offsets is not None:
        t, end = peak_time(frame_logits), len(frame_logits) * FRAME_SECONDS
        return max(0.0, t - offsets[0]), min(end, t + offsets[1])
    probs = 1.0 / (1.0 + np.exp(-np.asarray(frame_logits, dtype=np.float64)))
    peak = int(np.argmax(probs))
    keep = probs >= probs[peak] * LOCALISE_SHARE
    start, end = peak, peak
    while start > 0 and keep[start - 1]:
        start -= 1
    while end + 1 < len(keep) and keep[end + 1]:
        end += 1
    return start * FRAME_SECONDS, (end + 1) * FRAME_SECONDS


def masked_mean(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [batch, frames, dim]`` over the frames where ``valid [batch, frames]`` is true."""
    weights = valid.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _bundle(name_or_bundle: Any, device: str) -> Any:
    """The ``WhisperBundle`` itself, or the one a name or directory loads (loading is heavy: lazy)."""
    if isinstance(name_or_bundle, str | Path):
        from heardet.whisper.hub import load_whisper

        return load_whisper(str(name_or_bundle), device=device)
    return name_or_bundle


def _whisper_model(name_or_bundle: Any, device: str = "cpu") -> Any:
    """A ``WhisperForConditionalGeneration`` from a name, a bundle or the model itself."""
    if isinstance(name_or_bundle, str | Path) or hasattr(name_or_bundle, "processor"):
        return _bundle(name_or_bundle, device).model
    if hasattr(name_or_bundle, "model") and hasattr(name_or_bundle.model, "encoder"):
        return name_or_bundle
    raise TypeError(f"expected a Whisper name, WhisperBundle or WhisperForConditionalGeneration, "
                    f"got {type(name_or_bundle).__name__}")


def load_pretrained(name_or_bundle: Any, dropout: float = 0.2,
                    device: str = "cpu") -> tuple[EncoderClassifier, WhisperFeatureExtractor]:
    """An :class:`EncoderClassifier` and its feature extractor from one Whisper checkpoint.

    This is the default ``encoder_factory`` of :mod:`heardet.approaches.finetune.train`.
    """
    if not isinstance(name_or_bundle, str | Path) and not hasattr(name_or_bundle, "processor"):
        raise TypeError("load_pretrained needs a name or a WhisperBundle (for the feature extractor)")
    bundle = _bundle(name_or_bundle, device)
    return EncoderClassifier.from_pretrained(bundle, dropout), bundle.processor.feature_extractor


def log_mel(feature_extractor: WhisperFeatureExtractor, audio: np.ndarray) -> np.ndarray:
    """Whisper log-mel features of one clip, sized to its content: ``[n_mels, len(audio) // hop]``.

    Same mel filters and normalisation as Whisper's extractor, but no padding to 30 s.
    Clips shorter than one FFT frame are zero-padded to it.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < feature_extractor.n_fft:
        audio = np.pad(audio, (0, feature_extractor.n_fft - len(audio)))
    out = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, padding="longest",
                            truncation=False, return_tensors="np", return_attention_mask=False)
    return out.input_features[0].astype(np.float32, copy=False)


def collate(features: Sequence[np.ndarray],
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[n_mels, frames]`` features zero-padded to the longest: ``[batch, n_mels, frames]``, lengths."""
    if not features:
        raise ValueError("collate needs at least one clip")
    lengths = [f.shape[-1] for f in features]
    batch = np.zeros((len(features), features[0].shape[0], max(lengths)), dtype=np.float32)
    for row, feats in zip(batch, features):
        row[:, : feats.shape[-1]] = feats
    return (torch.from_numpy(batch).to(device), torch.tensor(lengths, dtype=torch.long, device=device))


@functools.cache  # a property of the machine: asked once, not on every training step
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles). There, bf16 autocast trains the
    encoder's layers in a little over half the time of float32; without them it would be slower."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent means unknown
    return bool(probe is not None and probe())


def autocast(device: torch.device | str, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; on a CPU only with ``cpu_bf16`` (stage (b)'s training steps,
    ``FinetuneConfig.cpu_bf16``) where it has AMX tiles; nothing elsewhere (float32)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if kind == "cpu" and cpu_bf16 and cpu_has_bf16_units():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_proba(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor,
                  audios: Sequence[np.ndarray], batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Probability of the phrase for clips that each fit the encoder (no windowing), batched.

    Clips are batched by length (less padding); padding does not change a clip's score.
    """
    return predict_frames(model, feature_extractor, audios, batch_size, progress)[0]


def predict_frames(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor,
                   audios: Sequence[np.ndarray], batch_size: int = 8,
                   progress: bool = False) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """:func:`predict_proba`, plus each clip's frame logits (None for mean pooling)."""
    order = np.argsort([len(a) for a in audios], kind="stable")
    probs = np.zeros(len(audios), dtype=np.float64)
    frames: list[np.ndarray | None] = [None] * len(audios)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(model.device):
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress or len(starts) < 2):
                rows = order[start : start + batch_size]
                feats, lengths = collate([log_mel(feature_extractor, audios[i]) for i in rows], model.device)
                hidden, valid = model.encode(feats, lengths)
                logits, frame_logits = model.classify(hidden, valid)
                probs[rows] = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
                if frame_logits is not None:
                    counts = valid.sum(dim=1).tolist()
                    for row, values, n in zip(rows, frame_logits.float().cpu().numpy(), counts):
                        frames[row] = values[:n]
    finally:
        model.train(was_training)
    return probs, frames


def predict_audio(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor,
                  audios: Sequence[np.ndarray], max_seconds: float = 10.0, batch_size: int = 8,
                  threshold: float = 0.5, hop_s: float | None = None, progress: bool = False,
                  phrase_offsets: tuple[float, float] | None = None) -> list[ClipScore]:
    """Score recordings of any length; long ones in overlapping windows, best window wins.

    Args:
        model: an :class:`EncoderClassifier`.
        feature_extractor: the checkpoint's ``WhisperFeatureExtractor``.
        audios: 1-D float32 arrays at ``SAMPLE_RATE``.
        max_seconds: window length; recordings up to this long are scored whole.
        batch_size: windows per forward pass (windows of all recordings are batched together,
            shortest first).
        threshold: ``label = score >= threshold``.
        hop_s: window hop (default: three quarters of ``max_seconds``).
        progress: show a tqdm bar over batches.
        phrase_offsets: seconds before and after the peak frame that the phrase spans (see :func:`localise`).

    Returns:
        One :class:`ClipScore` per recording, in input order.
    """
    if not 0 < max_seconds * 100 <= model.max_frames:
        raise ValueError(f"max_seconds must be in (0, {model.max_frames / 100:g}], got {max_seconds!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    windows = [(clip, window) for clip, audio in enumerate(audios)
               for window in iter_windows(np.asarray(audio, dtype=np.float32), max_seconds, hop_s)]
    scores, frames = predict_frames(model, feature_extractor, [w.audio for _, w in windows], batch_size, progress)
    best: dict[int, ClipScore] = {}
    for (clip, window), value, frame_logits in zip(windows, scores, frames):
        if clip not in best or value > best[clip].score:
            where = localise(frame_logits, phrase_offsets) if frame_logits is not None and len(frame_logits) else None
            best[clip] = ClipScore(float(value), int(value >= threshold), window.index, window.start_s, window.end_s,
                                   *((window.start_s + where[0], window.start_s + where[1]) if where else (None, None)))
    return [best[clip] for clip in range(len(audios))]


def save_classifier(model: EncoderClassifier, feature_extractor: WhisperFeatureExtractor, config: Any,
                    threshold: float, out_dir: str | Path, max_seconds: float | None = None,
                    phrase_offsets: tuple[float, float] | None = None) -> Path:
    """Write a classifier that :func:`load_classifier` rebuilds without the hub.

    Files: ``model.safetensors`` (encoder + head weights), ``encoder_classifier.json`` (the
    encoder's ``WhisperConfig``, dropout, threshold, max_seconds, training config) and the
    feature extractor's ``preprocessor_config.json``.

    Args:
        model: an :class:`EncoderClassifier`.
        feature_extractor: its ``WhisperFeatureExtractor``.
        config: the training config (a dataclass such as ``FinetuneConfig``, a dict, or None).
        threshold: decision threshold on the score.
        out_dir: directory to write (created if missing).
        max_seconds: window length for long audio (default: ``config.max_seconds``, else 10).
        phrase_offsets: seconds before and after the peak frame that the phrase spans (frame pooling).

    Returns:
        ``out_dir`` as a Path.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_dict = asdict(config) if is_dataclass(config) else dict(config or {})
    if max_seconds is None:
        max_seconds = float(config_dict.get("max_seconds", 10.0))
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    meta = {
        "format_version": FORMAT_VERSION,
        "encoder_config": model.encoder.config.to_dict(),
        "dropout": float(model.dropout.p),
        "pooling": model.pooling,
        "layers": model.layers,
        "frame_head": model.frame_head,
        "center": model.center,
        "heads": model.heads,
        "head_vote": model.head_vote,
        "fits": model.fits,
        "fit_layers": model.fit_layers,
        "n_classes": N_CLASSES,
        "threshold": float(threshold),
        "max_seconds": float(max_seconds),
        "phrase_offsets": list(phrase_offsets) if phrase_offsets else None,
        "finetune_config": config_dict,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    feature_extractor.save_pretrained(str(out))
    logger.info("Saved encoder classifier to %s", out)
    return out


def load_classifier(directory: str | Path, device: str = "cpu") -> LoadedClassifier:
    """Rebuild a classifier written by :func:`save_classifier`, offline.

    Args:
        directory: what :func:`save_classifier` wrote.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).

    Raises:
        FileNotFoundError: the directory lacks one of the files, named in the message.
    """
    from safetensors.torch import load_file
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    root = Path(directory)
    for name in (WEIGHTS_FILE, META_FILE, "preprocessor_config.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} is not a saved encoder classifier: {name} is missing")
    meta = json.loads((root / META_FILE).read_text())
    if meta.get("format_version") not in range(1, FORMAT_VERSION + 1):
        raise ValueError(f"{root / META_FILE}: format_version {meta.get('format_version')!r}, "
                         f"this heardet reads 1 to {FORMAT_VERSION}")
    encoder = WhisperEncoder(WhisperConfig.from_dict(meta["encoder_config"]))
    model = EncoderClassifier(encoder, meta["dropout"], meta.get("pooling", "mean"), meta.get("layers", "last"),
                              meta.get("frame_head", "conv"), bool(meta.get("center", False)),
                              int(meta.get("heads", 1)), meta.get("head_vote", "mean"), int(meta.get("fits", 1)),
                              int(meta.get("fit_layers", 0)))
    model.load_state_dict(load_file(str(root / WEIGHTS_FILE)), strict=True)
    model.to(torch_device(device)).eval()
    feature_extractor = WhisperFeatureExtractor.from_pretrained(str(root))
    return LoadedClassifier(model, feature_extractor, float(meta["threshold"]), float(meta["max_seconds"]), meta)

