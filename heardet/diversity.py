"""How varied a dataset is, and whether its test split is honest: counts per engine, voice, near miss,
carrier frame and augmentation step, from the manifest that :mod:`heardet.synth` writes.

``heardet validate`` prints :meth:`Diversity.render`; its warnings name a split dominated by one
voice, and test voices or frames that the train split also uses (a test score on them flatters).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DOMINANT_SHARE = 0.2  # a split where one voice says more than this share of the clips gets a warning
SHOWN = 8  # most common values listed per facet
AUGMENT_STEPS = ("reverb", "speech", "noise_snr_db", "telephone", "codec", "clipping_percentile")
STEP_NAMES = {"reverb": "room", "speech": "background speech", "noise_snr_db": "noise", "telephone": "phone line",
              "codec": "codec", "clipping_percentile": "clipping"}


def _facets(meta: Mapping[str, Any]) -> dict[str, list[str]]:
    facets = {
        "engine": [meta.get("engine")],
        "voice": [meta.get("voice")],
        "base voice": [f"{meta.get('engine')}/{(meta.get('voice_settings') or {}).get('base')}"],
        "frame": [meta.get("frame")],
        "position": [meta.get("position")],
        "tempo": [meta.get("tempo")],
        "repeats": [str(meta.get("repeats"))],
        "near miss": [meta.get("middle")] if meta.get("kind") == "hard_negative" else [],
    }
    facets["augmentation"] = step_words(meta.get("augmentation")) or ["none"]
    return {k: [str(v) for v in values if v is not None] for k, values in facets.items()}


def step_words(augmentation: Mapping[str, Any] | None, levels: bool = False) -> list[str]:
    """The augmentation steps a clip's manifest records, in words (``room``, ``phone line gsm``, ``codec opus``);
    with ``levels``, background speech and noise with their SNR (``background speech 7.0 dB``)."""
    augmentation = augmentation or {}
    words = []
    for step in AUGMENT_STEPS:
        value = augmentation.get(step)
        if value is None:
            continue
        if step in ("telephone", "codec"):
            words.append(f"{STEP_NAMES[step]} {value}")
        elif levels and step in ("speech", "noise_snr_db"):
            snr = augmentation.get("speech_snr_db") if step == "speech" else value
            words.append(f"{STEP_NAMES[step]} {snr:.1f} dB" if snr is not None else STEP_NAMES[step])
        else:
            words.append(STEP_NAMES[step])
    return words


@dataclass
class Diversity:
    """Counts per split and facet (``counts[split][facet][value]``), and the warnings they raise."""

    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)
    clips: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = ["  diversity (from manifest.jsonl):"]
        facets = list(next(iter(self.counts.values()), {}))
        for facet in facets:
            lines.append(f"    {facet}:")
            for split, by_facet in self.counts.items():
                counter, n = by_facet[facet], self.clips[split]
                if not counter:
                    continue
                shown = ", ".join(f"{value} {count} ({100 * count / n:.0f}%)" for value, count in
                                  counter.most_common(SHOWN))
                more = f" … {len(counter) - SHOWN} more" if len(counter) > SHOWN else ""
                lines.append(f"      {split:5s} {len(counter)} distinct: {shown}{more}")
        lines += [f"  WARNING {w}" for w in self.warnings]
        return "\n".join(lines)


def diversity(metas: Mapping[str, Sequence[Mapping[str, Any]]]) -> Diversity | None:
    """The diversity of a dataset, given each split's manifest facts (``Clip.meta``); None when no clip has any."""
    splits = {name: [m for m in rows if m] for name, rows in metas.items()}
    if not any(splits.values()):
        return None
    report = Diversity()
    for name, clips in splits.items():
        if not clips:
            continue
        counts: dict[str, Counter] = {}
        for meta in clips:
            for facet, values in _facets(meta).items():
                counts.setdefault(facet, Counter()).update(values)
        report.counts[name], report.clips[name] = counts, len(clips)
        voice, top = counts["voice"].most_common(1)[0] if counts["voice"] else ("", 0)
        if top > DOMINANT_SHARE * len(clips) and len(clips) >= 20:
            report.warnings.append(f"{name}: voice {voice} says {top} of {len(clips)} clips "
                                   f"({100 * top / len(clips):.0f}% > {100 * DOMINANT_SHARE:.0f}%)")
    if {"train", "test"} <= set(report.counts):
        for facet, what in (("voice", "voices"), ("frame", "carrier frames")):
            shared = sorted(set(report.counts["train"][facet]) & set(report.counts["test"][facet]))
            if shared:
                report.warnings.append(f"{len(shared)} test {what} also occur in train (test F1 on them flatters): "
                                       + ", ".join(shared[:5]) + (" …" if len(shared) > 5 else ""))
    return report
