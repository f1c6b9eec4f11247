"""A disk cache of transcripts, so that no clip is transcribed twice with the same settings.

The key is the SHA-256 of the audio file's bytes plus the transcriber's identity (model,
backend and decoding options). Each entry is one JSON file that carries a checksum of its
own payload; an entry that does not parse or whose checksum does not match is logged,
deleted and recomputed, never used. A cache that cannot be written (a read-only file system
under a served model) is used for what it holds and warned about once per directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from heardet.files import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_UNWRITABLE: set[Path] = set()  # cache roots already warned about, per process


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _payload_checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _read_entry(path: Path) -> dict[str, Any]:
    """An entry's payload. Raises ValueError (or OSError, KeyError, …) when it is unreadable,
    of another format version or its checksum does not match."""
    entry = json.loads(path.read_text(encoding="utf-8"))
    payload = entry["payload"]
    if entry.get("version") != FORMAT_VERSION or entry.get("checksum") != _payload_checksum(payload):
        raise ValueError("checksum mismatch")
    return payload


class TranscriptCache:
    """Transcripts on disk under ``root/<key[:2]>/<key>.json``.

    Args:
        root: cache directory (created when first written).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.unwritten = 0  # entries that could not be stored

    @staticmethod
    def key(audio_hash: str, identity: str) -> str:
        """The cache key of one clip for one transcriber identity."""
        return hashlib.sha256(f"v{FORMAT_VERSION}|{identity}|{audio_hash}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached payload for ``key``, or None (missing or corrupt; corrupt is removed)."""
        path = self._path(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            payload = _read_entry(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("transcript cache entry %s is corrupt (%s); recomputing it", path, exc)
            self.corrupt += 1
            self.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return payload

    def put(self, key: str, payload: dict[str, Any]) -> bool:
        """Store ``payload`` (JSON-serialisable) under ``key``, atomically.

        Returns:
            False when the cache cannot be written (logged once per cache directory): the
            caller goes on without caching.
        """
        path = self._path(key)
        entry = {"version": FORMAT_VERSION, "checksum": _payload_checksum(payload), "payload": payload}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(entry, ensure_ascii=False))
            return True
        except OSError as exc:
            self.unwritten += 1
            if self.root not in _UNWRITABLE:
                _UNWRITABLE.add(self.root)
                logger.warning("transcript cache %s cannot be written (%s); going on without storing transcripts",
                               self.root, exc.strerror or exc)
            return False


    def verify(self) -> tuple[int, list[Path]]:
        """Check every entry's checksum without changing anything: (entries that hold, the corrupt ones)."""
        good, bad = 0, []
        for path in sorted(self.root.glob("??/*.json")):
            try:
                _read_entry(path)
                good += 1
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                bad.append(path)
        return good, bad


def dataclass_payload(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(asdict(obj), ensure_ascii=False))
