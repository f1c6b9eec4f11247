"""What a heardet model accepts from a request: which file paths and URIs it may open, and how
much audio one request may carry.

A model inside ``mlflow models serve`` takes requests from strangers, so by default it opens no
file and fetches no URI that a request names, and it refuses requests over the size limits.
The operator widens or narrows this with environment variables read when the model loads:

- ``HEARDET_ALLOWED_ROOTS``: directories (``os.pathsep``-separated) under which a ``path`` cell
  may name a file; unset: none when served, any elsewhere.
- ``HEARDET_ALLOW_REMOTE_URIS``: ``true`` lets ``path`` cells name ``s3://``, ``runs:/``,
  ``models:/`` and other URIs, downloaded with the server's credentials; default: false when
  served, true elsewhere.
- ``HEARDET_MAX_ROWS``, ``HEARDET_MAX_ROW_BYTES``, ``HEARDET_MAX_ROW_SECONDS``: the most rows
  per request, bytes of audio file per row and seconds of audio per row (``0``: no limit);
  defaults when served 256 rows, 32 MiB, 600 s; no limits elsewhere.

In the library, the CLI and ``mlflow.pyfunc.load_model`` (outside a scoring server) paths and
URIs are accepted as before.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from heardet.audio import is_remote

SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"  # set by `mlflow models serve` for its scoring server
ALLOWED_ROOTS_ENV = "HEARDET_ALLOWED_ROOTS"
ALLOW_REMOTE_ENV = "HEARDET_ALLOW_REMOTE_URIS"
MAX_ROWS_ENV = "HEARDET_MAX_ROWS"
MAX_ROW_BYTES_ENV = "HEARDET_MAX_ROW_BYTES"
MAX_ROW_SECONDS_ENV = "HEARDET_MAX_ROW_SECONDS"

SERVED_MAX_ROWS = 256
SERVED_MAX_ROW_BYTES = 32 * 1024 * 1024  # a 10-minute 16-bit 16 kHz mono WAV is 19.2 MB
SERVED_MAX_ROW_SECONDS = 600.0
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class LimitExceeded(ValueError):
    """A request is over one of the operator's limits (the message names the limit and its variable)."""


class Refused(ValueError):
    """A ``path`` cell that this model may not open (the message says why, never whether it exists)."""


@dataclass(frozen=True)
class InputPolicy:
    """What one model accepts.

    Attributes:
        allowed_roots: directories a ``path`` may lie under (resolved, symlinks followed);
            None: any path.
        allow_remote: whether a ``path`` may be a URI that MLflow downloads.
        max_rows: rows per request (None: no limit).
        max_row_bytes: bytes of the audio file of one row (None: no limit).
        max_row_seconds: seconds of audio in one row, read from the file's header (None: no limit).
    """

    allowed_roots: tuple[Path, ...] | None = None
    allow_remote: bool = True
    max_rows: int | None = None
    max_row_bytes: int | None = None
    max_row_seconds: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "InputPolicy":
        """The policy the environment asks for: the served defaults inside ``mlflow models serve``.

        Raises:
            ValueError: a variable that does not parse, naming it and what it should hold.
        """
        env = os.environ if environ is None else environ
        served = bool(env.get(SERVER_MODEL_PATH_ENV))
        roots_text = env.get(ALLOWED_ROOTS_ENV)
        if roots_text is None:
            roots = () if served else None
        else:
            roots = tuple(Path(os.path.realpath(Path(p).expanduser())) for p in roots_text.split(os.pathsep) if p)
        return cls(
            allowed_roots=roots,
            allow_remote=_flag(env, ALLOW_REMOTE_ENV, default=not served),
            max_rows=_limit(env, MAX_ROWS_ENV, SERVED_MAX_ROWS if served else None, int),
            max_row_bytes=_limit(env, MAX_ROW_BYTES_ENV, SERVED_MAX_ROW_BYTES if served else None, int),
            max_row_seconds=_limit(env, MAX_ROW_SECONDS_ENV, SERVED_MAX_ROW_SECONDS if served else None, float),
        )

    def check_rows(self, n: int) -> None:
        """Raises LimitExceeded when a request of ``n`` rows is over ``max_rows``."""
        if self.max_rows is not None and n > self.max_rows:
            raise LimitExceeded(f"{n} rows in one request; this model takes at most {self.max_rows} "
                                f"({MAX_ROWS_ENV}); split the request")

    def check_bytes(self, row: int, size: int) -> None:
        """Raises LimitExceeded when row ``row``'s audio file of ``size`` bytes is over ``max_row_bytes``."""
        if self.max_row_bytes is not None and size > self.max_row_bytes:
            raise LimitExceeded(f"row {row}: {size} bytes of audio; this model takes at most "
                                f"{self.max_row_bytes} bytes per row ({MAX_ROW_BYTES_ENV})")

    def check_seconds(self, row: int, source: bytes | str) -> None:
        """Raises LimitExceeded when the header of row ``row``'s audio says it is over ``max_row_seconds``.

        Audio whose header cannot be read is left to the decoder, which reports it per row."""
        if self.max_row_seconds is None:
            return
        seconds = header_seconds(source)
        if seconds is not None and seconds > self.max_row_seconds:
            raise LimitExceeded(f"row {row}: {seconds:.1f} s of audio; this model takes at most "
                                f"{self.max_row_seconds:g} s per row ({MAX_ROW_SECONDS_ENV}); "
                                "scan long recordings with `heardet scan`")

    def check_path(self, text: str) -> str:
        """``text`` as the path or URI to open, when this policy lets a request name it.

        Raises:
            Refused: a remote URI while ``allow_remote`` is false, or a path outside ``allowed_roots``.
        """
        if text.startswith("file://"):
            text = text[len("file://"):]
        elif is_remote(text):
            if not self.allow_remote:
                raise Refused(f"this model does not fetch URIs named in a request (operator: {ALLOW_REMOTE_ENV})")
            return text
        if self.allowed_roots is None:
            return text
        if not self.allowed_roots:
            raise Refused(f"this model does not open file paths named in a request; send the audio bytes "
                          f"(operator: {ALLOWED_ROOTS_ENV})")
        real = Path(os.path.realpath(text))
        if not any(real == root or root in real.parents for root in self.allowed_roots):
            raise Refused(f"path is outside the directories this model may read ({ALLOWED_ROOTS_ENV})")
        return str(real)


def header_seconds(source: bytes | str) -> float | None:
    """Duration from an audio header (a file path or the file's bytes), or None when it has none we read."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        return info.frames / info.samplerate if info.samplerate > 0 else None
    except Exception:  # noqa: BLE001 - not audio, or a format libsndfile cannot parse: the decoder says why
        return None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def _limit(env: Mapping[str, str], name: str, default, kind):
    value = env.get(name)
    if value is None:
        return default
    try:
        parsed = kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a {'whole ' if kind is int else ''}number >= 0 "
                         "(0: no limit)") from None
    if parsed < 0:
        raise ValueError(f"{name}={value!r}: expected a number >= 0 (0: no limit)")
    return parsed or None
