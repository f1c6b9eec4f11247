"""Synthetic training data: Russian TTS clips of the phrase, its near misses and ordinary speech.

``text`` (what is said) → ``plan`` (every random choice of a clip) → ``voices`` (espeak-ng,
festival, and the speaker transforms that make new voices of them) → :mod:`heardet.augment`
(noise, background speech, rooms, phone line, codecs, gain) → ``generate`` (the dataset on
disk, resumable by manifest).
"""

from heardet.synth.config import SynthConfig, SynthReport
from heardet.synth.generate import synthesize
from heardet.synth.voices import check_tts

__all__ = ["SynthConfig", "SynthReport", "check_tts", "synthesize"]
