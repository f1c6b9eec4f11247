"""Whisper models: names and the offline bundle (``hub``), CTranslate2 → Hugging Face
conversion (``ct2``), transcription backends (``asr``) and the transcript cache (``cache``)."""
