"""CTranslate2 Whisper files: read a ``model.bin`` and convert it to Hugging Face format.

:func:`read_ct2` parses CTranslate2's binary format (version 6) into numpy arrays without
CTranslate2 itself; :func:`convert_ct2_to_hf` turns a float CTranslate2 Whisper directory into
a transformers ``WhisperForConditionalGeneration`` + ``WhisperProcessor``. torch and
transformers are imported only when converting.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from heardet.files import atomic_dir

logger = logging.getLogger(__name__)

CT2_FORMAT_VERSION = 6
CONVERTER_VERSION = 1  # bump when the conversion output changes: cached conversions are redone
MARKER_FILE = "heardet_conversion.json"  # the stamp heardet leaves in a directory it built (read by heardet.whisper.hub)
# CTranslate2 dtype ids -> numpy dtypes (5 = bfloat16, read as uint16 and widened to float32).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}


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
    path = Path(path) / "model.bin" if Path(path).is_dir() else Path(path)
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
        pos += length
        return data[pos - length:pos - 1].decode("utf-8")

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
    aliases = {text(): text() for _ in range(take("<I"))}  # alias -> target, evaluated in order
    info["n_variables"] = len(variables)
    return variables, aliases, info


def is_ct2_dir(path: Path) -> bool:
    """A directory with a model.bin and no Hugging Face config (which would name its model_type)."""
    config = path / "config.json"
    return (path / "model.bin").is_file() and not (config.is_file() and '"model_type"' in config.read_text())


# CT2 -> HF names inside one layer (docs/architecture.md, "Whisper conversion"): (HF suffix, CT2 suffix, how). "qkv"/"kv" are
# projections stacked on rows; HF's k_proj has no bias (CT2 stores zeros; a key bias would add
# the same q.b_k to every score of a query, which softmax ignores).
_SELF_ATTN_FFN = (("self_attn", "self_attention/linear_0", "qkv"),
                  ("self_attn.out_proj", "self_attention/linear_1", "linear"),
                  ("self_attn_layer_norm", "self_attention/layer_norm", "norm"),
                  ("fc1", "ffn/linear_0", "linear"), ("fc2", "ffn/linear_1", "linear"),
                  ("final_layer_norm", "ffn/layer_norm", "norm"))
_CROSS_ATTN = (("encoder_attn.q_proj", "attention/linear_0", "linear"), ("encoder_attn", "attention/linear_1", "kv"),
               ("encoder_attn.out_proj", "attention/linear_2", "linear"),
               ("encoder_attn_layer_norm", "attention/layer_norm", "norm"))


def _state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str], n_enc: int,
                n_dec: int) -> dict[str, np.ndarray]:
    """Hugging Face state dict (float32) from CTranslate2 Whisper variables."""
    sd: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        target = aliases.get(name, name)
        if target not in variables:
            raise ValueError(f"model.bin has no variable {name!r}: not a CTranslate2 Whisper model?")
        used.add(target)
        return np.asarray(variables[target], dtype=np.float32)

    def put(hf: str, ct2: str, how: str) -> None:
        if how == "norm":
            sd[f"{hf}.weight"], sd[f"{hf}.bias"] = get(f"{ct2}/gamma"), get(f"{ct2}/beta")
        elif how == "linear":
            sd[f"{hf}.weight"], sd[f"{hf}.bias"] = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        else:
            projs = ("q_proj", "k_proj", "v_proj") if how == "qkv" else ("k_proj", "v_proj")
            weights, biases = np.split(get(f"{ct2}/weight"), len(projs)), np.split(get(f"{ct2}/bias"), len(projs))
            for proj, weight, bias in zip(projs, weights, biases):
                sd[f"{hf}.{proj}.weight"] = weight
                if proj != "k_proj":
                    sd[f"{hf}.{proj}.bias"] = bias

    put("model.encoder.conv1", "encoder/conv1", "linear")
    put("model.encoder.conv2", "encoder/conv2", "linear")
    for side, n_layers, table in (("encoder", n_enc, _SELF_ATTN_FFN), ("decoder", n_dec, _SELF_ATTN_FFN + _CROSS_ATTN)):
        sd[f"model.{side}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        for i in range(n_layers):
            for hf, ct2, how in table:
                put(f"model.{side}.layers.{i}.{hf}", f"{side}/layer_{i}/{ct2}", how)
        put(f"model.{side}.layer_norm", f"{side}/layer_norm", "norm")
    sd["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd["proj_out.weight"] = get("decoder/projection/weight")
    leftover = sorted(n for n in variables if n not in used and variables[n].ndim > 0)
    if leftover:
        raise ValueError(f"model.bin variables with no Hugging Face counterpart: {leftover[:5]}")
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
    """Convert a CTranslate2 Whisper directory to a Hugging Face one, atomically.

    Writes ``WhisperForConditionalGeneration`` (float32), its generation config (languages,
    suppressed tokens, alignment heads from CTranslate2's ``config.json``) and a
    ``WhisperProcessor`` whose tokenizer has the timestamp tokens ``<|0.00|>…<|30.00|>`` and
    ``<|endoftext|>`` as pad token, in a temporary directory renamed to ``out_dir``.

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
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        raise FileExistsError(f"{out_dir} exists and is not a heardet conversion; choose an empty or new directory")
    started = time.perf_counter()
    variables, aliases, info = read_ct2(ct2_dir)
    if info["spec"] != "WhisperSpec":
        raise ValueError(f"{ct2_dir} holds a CTranslate2 {info['spec']}, not a Whisper model")
    if any(name.endswith("_scale") for name in variables):
        raise ValueError(f"{ct2_dir} is quantized (int8); convert the model with float16 or float32 weights")
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    suppress, suppress_begin = ct2_config.get("suppress_ids") or [], ct2_config.get("suppress_ids_begin") or []
    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or []]

    def layers(side: str) -> int:
        return len({m.group(1) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))})

    def heads(side: str) -> int:  # Whisper's heads are 64 wide when the count is not stored
        return int(variables[f"{side}/num_heads"]) if f"{side}/num_heads" in variables else d_model // 64

    sd = _state_dict(variables, aliases, layers("encoder"), layers("decoder"))
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
        encoder_attention_heads=heads("encoder"), decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=source_positions,
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=suppress, begin_suppress_tokens=suppress_begin,
        tie_word_embeddings=aliases.get("decoder/projection/weight") == "decoder/embeddings/weight",
    )
    model = WhisperForConditionalGeneration(config)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{ct2_dir}: the weights do not fit a Whisper of this shape: {exc}") from exc
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=config.max_target_positions, no_timestamps_token_id=no_ts, prev_sot_token_id=ids["<|startofprev|>"],
        suppress_tokens=suppress, begin_suppress_tokens=suppress_begin,
        alignment_heads=ct2_config.get("alignment_heads"), is_multilingual=bool(lang_ids),
        max_initial_timestamp_index=50, return_timestamps=False,
        **({"lang_to_id": {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
            "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}}
           if lang_ids else {}),  # English-only models have neither
    )
    # The feature extractor's window is what the encoder's positions cover (30 s for OpenAI's models).
    chunk = source_positions * 2 * 160 / 16_000
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins,
                                        chunk_length=int(chunk) if chunk.is_integer() else 30)
    processor = WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps(conversion_stamp(ct2_dir)))
    logger.info("Converted %s to Hugging Face format in %s (%.1f s)", ct2_dir, out_dir, time.perf_counter() - started)
    return out_dir


def conversion_stamp(ct2_dir: Path) -> dict[str, Any]:
    stat = (ct2_dir / "model.bin").stat()
    return {"converter_version": CONVERTER_VERSION, "source": str(ct2_dir.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns}
