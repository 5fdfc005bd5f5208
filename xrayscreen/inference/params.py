"""Reading a bundle's score settings (``ScoreSpec.params``): one place for the lookup and
the "not a number" error, so each setting's reader only states its own range."""

from __future__ import annotations

from typing import Any

from xrayscreen.errors import ConfigError


def of(spec: Any) -> dict[str, Any]:
    """A spec's ``params`` (an empty dict when it has none)."""
    return getattr(spec, "params", None) or {}


def number(spec: Any, key: str, default: float, what: str = "a number") -> float:
    """``params[key]`` (or ``default``) as a float.

    Raises:
        ConfigError: ``"<key> must be <what>, got <value>"`` when it is not a number.
    """
    raw = of(spec).get(key, default)
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {what}, got {raw!r}") from None


def weight(spec: Any, key: str, max_weight: float) -> float:
    """``params[key]`` as a weight in [0, ``max_weight``] (0.0 when unset = off).

    Raises:
        ConfigError: for a non-numeric weight or one outside the range (NaN included).
    """
    w = number(spec, key, 0.0)
    if not 0.0 <= w <= max_weight:  # also rejects NaN
        raise ConfigError(f"{key} must be in [0, {max_weight:g}], got {of(spec)[key]!r}")
    return w
