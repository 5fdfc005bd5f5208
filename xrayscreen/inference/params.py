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
