"""Speed and memory of approach 3 on CPU: content-sized windows vs. padding every clip to 30 s.

Measures, for Whisper MODEL's encoder classifier on clips from DATA:
- one training step (forward + backward + Adam, batch 4) on content-sized batches vs. the
  same clips zero-padded to 30 s (what the stock WhisperEncoder requires);
- inference speed (× real time) over the test clips both ways;
- peak resident memory of the process;
- with ``--fits N``, inference speed of the frame model (GRU head on every layer's output) with one fit and
  with N fits of ``--fit-layers`` top layers each (``FinetuneConfig.fits``), over the same clips: the
  weights are untrained, which costs what trained ones do;
- with ``--head-clips N``, a stage (a) training step of the full profile's frame head (every layer's output, the
  GRU head, feature dropout 0.3, batch 16) on the cached encoder states of N train clips (their first 8 s), with
  the GRU's two directions run by ``gru_pair`` (what training uses on a CPU) and by the two ``nn.GRU`` modules
  one after the other, side by side on the same batches; with ``--top-layers K`` too, a stage (b) step (the
  encoder's top K layers run again from the cached states and trained with the head) in float32 and in bf16
  autocast (``FinetuneConfig.cpu_bf16``, on a CPU with AMX).

    python benchmarks/finetune_speed.py data --model whisper-base --clips 40 [--fits 3 --fit-layers 5]
        [--head-clips 320 [--top-layers 5]]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from heardet.approaches.finetune import model as model_module
from heardet.approaches.finetune.features import FeatureCache, encode_clips
from heardet.approaches.finetune.model import (
    collate,
    load_pretrained,
    log_mel,
    predict_audio,
)
from heardet.approaches.finetune.train import FinetuneConfig, train_head
from heardet.audio import SAMPLE_RATE, load_audio


def pad30(audio: np.ndarray) -> np.ndarray:
    return np.pad(audio, (0, max(0, 30 * SAMPLE_RATE - len(audio))))


def step_seconds(model, fe, audios, repeats: int = 3) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    labels = torch.tensor([i % 2 for i in range(len(audios))])
    times = []
    model.train()
    for _ in range(repeats):
        start = time.perf_counter()
        feats, lengths = collate([log_mel(fe, a) for a in audios])
        loss = torch.nn.functional.cross_entropy(model(feats, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def head_step_seconds(name: str, data: Path, clips: int, top_layers: int = 0) -> dict[str, float]:
    """Seconds per stage (a) step of the full profile's GRU frame head on ``clips`` train clips' cached states,
    with ``gru_pair`` and with the two ``nn.GRU`` modules called one after the other (one epoch each); with
    ``top_layers``, seconds per stage (b) step in float32 and with ``cpu_bf16``."""
    config = FinetuneConfig(model=name, pooling="frames", layers="all", frame_head="gru", feature_dropout=0.3,
                            epochs=1, batch_size=16, head_lr=1e-3, max_seconds=8.0, average_epochs=0)
    base, fe = load_pretrained(name)
    audios = [load_audio(p)[: 8 * SAMPLE_RATE] for p in sorted((data / "wav_train").glob("*.wav"))[:clips]]
    states = encode_clips(base.with_head("frames", "all", "gru"), fe, audios, cache=FeatureCache(), progress=False)
    labels = np.array([i % 2 for i in range(len(states))])
    paired = model_module.gru_pair

    def one_by_one(first, second, x_first, x_second):
        return first(x_first)[0], second(x_second)[0]

    result = {}
    try:
        for label, recurrence in (("gru_pair", paired), ("two_modules", one_by_one)):
            model_module.gru_pair = recurrence
            torch.manual_seed(0)
            frames = base.with_head("frames", "all", "gru")
            frames.channel_dropout.p = config.feature_dropout
            start = time.perf_counter()
            steps = train_head(frames, states, labels, config, progress=False)
            result[f"head_step_s_{label}"] = round((time.perf_counter() - start) / steps, 4)
    finally:
        model_module.gru_pair = paired
    if top_layers:
        result["cpu_has_bf16_units"] = model_module.cpu_has_bf16_units()
        for label, bf16 in (("float32", False), ("cpu_bf16", True)):
            stage_b = dataclasses.replace(config, encoder_lr=2e-5, top_layers=top_layers, top_epochs=1, cpu_bf16=bf16)
            torch.manual_seed(0)
            frames = base.with_head("frames", "all", "gru")
            start = time.perf_counter()
            steps_b = train_head(frames, states, labels, stage_b, progress=False, top_layers=top_layers)
            result[f"top{top_layers}_step_s_{label}"] = round((time.perf_counter() - start) / steps_b, 4)
        result[f"speedup_top{top_layers}_step"] = round(result[f"top{top_layers}_step_s_float32"]
                                                        / result[f"top{top_layers}_step_s_cpu_bf16"], 2)
    result["head_frames_mean"] = round(float(np.mean([s.shape[-2] for s in states])), 1)
    result["head_steps"] = steps
    result["speedup_head_step"] = round(result["head_step_s_two_modules"] / result["head_step_s_gru_pair"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--clips", type=int, default=40, help="test clips scored each way")
    parser.add_argument("--fits", type=int, default=1, help="also time the frame model with one fit and with N")
    parser.add_argument("--fit-layers", type=int, default=5, help="top encoder layers each fit has of its own")
    parser.add_argument("--head-clips", type=int, default=0,
                        help="also time the full profile's frame head training on N train clips' cached states")
    parser.add_argument("--top-layers", type=int, default=0,
                        help="with --head-clips, also time a stage (b) step on this many top layers, float32 and bf16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/finetune_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, fe = load_pretrained(args.model)
    train = [load_audio(p) for p in sorted((args.data / "wav_train").glob("*.wav"))[:4]]
    test = [load_audio(p) for p in sorted((args.data / "wav_test").glob("*.wav"))[: args.clips]]
    audio_s = sum(len(a) for a in test) / SAMPLE_RATE
    result = {"model": args.model, "threads": torch.get_num_threads(),
              "train_batch_seconds": [round(len(a) / SAMPLE_RATE, 2) for a in train]}
    result["step_s_content"] = round(step_seconds(model, fe, train), 3)
    result["step_s_padded_30s"] = round(step_seconds(model, fe, [pad30(a) for a in train]), 3)
    model.eval()
    for name, audios, window in (("content", test, 10.0), ("padded_30s", [pad30(a) for a in test], 30.0)):
        start = time.perf_counter()
        predict_audio(model, fe, audios, max_seconds=window, batch_size=8)
        seconds = time.perf_counter() - start
        result[f"infer_x_real_time_{name}"] = round(audio_s / seconds, 2)
        result[f"infer_s_per_clip_{name}"] = round(seconds / len(audios), 3)
    if args.fits > 1:
        frames = model.with_head("frames", "all", "gru").eval()
        for n in (1, args.fits):
            while frames.fits < n:
                frames.add_fit(frames.fresh_head(copy.deepcopy(frames.encoder)), args.fit_layers)
            start = time.perf_counter()
            predict_audio(frames, fe, test, max_seconds=10.0, batch_size=8)
            result[f"infer_x_real_time_frames_{n}_fits"] = round(audio_s / (time.perf_counter() - start), 2)
        result["fit_layers"] = args.fit_layers
    if args.head_clips:
        result.update(head_step_seconds(args.model, args.data, args.head_clips, args.top_layers))
    result["speedup_train"] = round(result["step_s_padded_30s"] / result["step_s_content"], 2)
    result["speedup_infer"] = round(result["infer_x_real_time_content"] / result["infer_x_real_time_padded_30s"], 2)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
