"""Parameters declared once.

A config dataclass field carries its default, its help text and its check
(:func:`setting`); :func:`validate` is the one validation every config runs in
``__post_init__``, and :func:`click_options` turns the fields into an entry point's
options. The MLproject is checked against those options by the test suite (names, types,
defaults), so a default lives in exactly one place: the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Check = Callable[[Any], bool]


def setting(default: Any, allowed: str, check: Check, help: str = "") -> Any:
    """A config field: ``default``, what is ``allowed`` (shown in errors) and its ``check``."""
    return dataclasses.field(default=default, metadata={"allowed": allowed, "check": check, "help": help})


def setting_of(config_cls: type, name: str) -> Any:
    """A fresh field declared exactly like ``config_cls.name``: for a config that embeds another's settings."""
    source = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    return dataclasses.field(default=source.default, metadata=dict(source.metadata))


def is_int(low: int | None = None) -> Check:
    return lambda v: (isinstance(v, int) and not isinstance(v, bool) or _is_np_int(v)) and (low is None or v >= low)


def is_number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
              high_open: bool = False) -> Check:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) and not _is_np_number(v) or not math.isfinite(v):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return high is None or (v < high if high_open else v <= high)

    return check


def is_range(low: float, high: float) -> Check:
    """A ``(low_value, high_value)`` pair of numbers with ``low <= low_value <= high_value <= high``."""
    number = is_number()
    return lambda v: (isinstance(v, (tuple, list)) and len(v) == 2 and all(map(number, v))
                      and low <= v[0] <= v[1] <= high)


FRACTION = ("a number in [0, 1]", is_number(0, 1))  # ``setting(default, *FRACTION, help)``


def one_of(*values: Any) -> Check:
    return lambda v: v in values


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_text(v: Any) -> bool:
    """A non-empty string."""
    return isinstance(v, str) and bool(v.strip())


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_np_int(v: Any) -> bool:
    import numpy as np

    return isinstance(v, np.integer)


def _is_np_number(v: Any) -> bool:
    import numpy as np

    return isinstance(v, np.number)


def validate(config: Any, extra: Mapping[str, tuple[bool, str]] | None = None) -> None:
    """Check every field of ``config`` that was declared with :func:`setting`, then ``extra``.

    Args:
        config: a dataclass instance.
        extra: ``{field: (ok, allowed)}`` for checks that involve several fields.

    Raises:
        ValueError: naming the first bad field, its value and what is allowed.
    """
    results = [(f.name, f.metadata["check"](getattr(config, f.name)), f.metadata["allowed"])
               for f in dataclasses.fields(config) if "check" in f.metadata]
    results += [(name, ok, allowed) for name, (ok, allowed) in (extra or {}).items()]
    for name, ok, allowed in results:
        if not ok:
            raise ValueError(f"{type(config).__name__}.{name}={getattr(config, name)!r} is invalid; "
                             f"allowed: {allowed}")


def _click_type(default: Any, allowed: str):
    import click

    if isinstance(default, bool):
        return click.BOOL
    if isinstance(default, int):
        return int
    if isinstance(default, float) or default is None:
        return float
    return str


def click_options(config_cls: type, *, only: Iterable[str] | None = None, skip: Iterable[str] = (),
                  defaults: Mapping[str, Any] | None = None) -> Callable:
    """Click options ``--field-name`` (also spelled ``--field_name``, as ``mlflow run`` passes a
    ``-P`` value the MLproject does not declare) for the scalar fields of ``config_cls``.

    Args:
        config_cls: a dataclass declared with :func:`setting` fields.
        only: these fields only (default: every scalar field).
        skip: fields to leave out.
        defaults: defaults that differ for this command (e.g. fewer folds per tuning trial).
    """
    import click

    defaults = dict(defaults or {})
    chosen = [f for f in dataclasses.fields(config_cls)
              if (only is None or f.name in set(only)) and f.name not in set(skip)
              and not isinstance(f.default, (tuple, list, dict))]
    unknown = set(defaults) - {f.name for f in chosen}
    if unknown:
        raise ValueError(f"defaults for fields {sorted(unknown)} that {config_cls.__name__} options do not have")
    options = []
    for f in chosen:
        default = defaults.get(f.name, f.default)
        help_text = f.metadata.get("help") or f.metadata.get("allowed", "")
        flags = ["--" + f.name.replace("_", "-")] + (["--" + f.name] if "_" in f.name else [])
        options.append(click.option(*flags, f.name, type=_click_type(f.default, ""),
                                    default=default, show_default=True, help=help_text))

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def from_options(config_cls: type, values: Mapping[str, Any], **overrides: Any) -> Any:
    """Build ``config_cls`` from a command's keyword arguments (other keys are ignored)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})
