"""The :class:`Scan` value every reader returns and every consumer takes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np


class ScanKind(str, Enum):
    """What the source file held."""

    PSEUDO_COLOUR = "pseudo_colour"  # false-colour RGB composite exported by a scanner (SIXray)
    GREYSCALE = "greyscale"  # single-energy transmission image
    DUAL_ENERGY = "dual_energy"  # two transmission channels (high, low)
    SIMULATED = "simulated"  # produced by xrayscreen's own simulator (dual-energy)


@dataclass
class Scan:
    """One bag scan.

    Attributes:
        rgb: Display image, ``(H, W, 3)`` uint8 (false colour for dual-energy sources).
        kind: What the source was.
        raw: Transmission channels ``(C, H, W)`` float32 in 0..1 (1 = unattenuated):
            ``C == 2`` is (high, low) energy, ``C == 1`` single energy; ``None`` for
            pseudo-colour composites, which carry no energies.
        pixel_mm: Pixel pitch in millimetres when the source says so, else ``None``.
        paths: Source file(s).
        sha256: Hash of the source bytes (of all files, in order), the scan's identity
            in the decision log and the training pool.
        meta: Reader-specific details (bit depth, DICOM tags, ...).
    """

    rgb: np.ndarray
    kind: ScanKind
    raw: np.ndarray | None = None
    pixel_mm: float | None = None
    paths: tuple[Path, ...] = ()
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.raw is not None:
            if self.raw.ndim != 3 or self.raw.shape[1:] != self.rgb.shape[:2]:
                raise ValueError(
                    f"raw must be (C, H, W) matching rgb {self.rgb.shape[:2]}, got {self.raw.shape}"
                )
        if not self.sha256:
            self.sha256 = hashlib.sha256(np.ascontiguousarray(self.rgb).tobytes()).hexdigest()

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return self.rgb.shape[0], self.rgb.shape[1]

    @property
    def name(self) -> str:
        """A short display name (first source file name, or the hash prefix)."""
        return self.paths[0].name if self.paths else self.sha256[:12]

    def grey(self) -> np.ndarray:
        """``(H, W)`` float32 grey level in 0..1 (mean of R, G, B / 255): the protocol's grey."""
        return self.rgb.astype(np.float32).mean(axis=2) / 255.0
