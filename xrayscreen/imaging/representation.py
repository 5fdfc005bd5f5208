"""Model input representations and the working pixel scale.

A bundle names its representation; training and scoring both go through
:func:`model_input` so they can never disagree.

* ``"rgb"``: the display false-colour RGB, scaled to [-1, 1] (3 channels, like the
  paper's UBA data). Works for every scan kind, because every reader renders RGB.
* ``"rgb_attenuation"``: ``-log`` of the RGB channels (an attenuation-like
  transform of the rendering, dense matter -> large values), scaled to [-1, 1].
* ``"log_attenuation"``: raw dual-energy ``-log`` transmission, 2 channels;
  needs ``scan.raw`` with 2 channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from xrayscreen.errors import ConfigError, ScanError
from xrayscreen.imaging.scan import Scan

REPRESENTATIONS = {"rgb": 3, "rgb_attenuation": 3, "log_attenuation": 2}
#: The representations made from the rendered RGB alone (:func:`model_input_from_rgb`).
RGB_REPRESENTATIONS = ("rgb", "rgb_attenuation")

# Attenuation ceiling used to scale -log(T) into [-1, 1]; T = 1/255 for 8-bit RGB.
_MU_MAX_RGB = float(np.log(255.0))
_MU_MAX_RAW = 8.0


def channels_of(representation: str) -> int:
    """Number of model input channels for ``representation``."""
    try:
        return REPRESENTATIONS[representation]
    except KeyError:
        raise ConfigError(
            f"unknown representation {representation!r}; known: {sorted(REPRESENTATIONS)}"
        ) from None


@dataclass(frozen=True)
class WorkingScale:
    """How scans are resampled before windows are cut.

    Exactly one of the fields is set (or none, meaning native resolution):
    ``longer_side`` resizes so the longer image side has that many pixels (the
    SIXray protocol: 800); ``mm_per_pixel`` resamples to a physical pitch when the
    scan knows its own (falls back to native otherwise).
    """

    longer_side: int | None = None
    mm_per_pixel: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"longer_side": self.longer_side, "mm_per_pixel": self.mm_per_pixel}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WorkingScale:
        data = data or {}
        return cls(longer_side=data.get("longer_side"), mm_per_pixel=data.get("mm_per_pixel"))

    def factor(self, shape: tuple[int, int], pixel_mm: float | None = None) -> float:
        """Resize factor (new/old) for an image of ``shape`` = (H, W)."""
        if self.longer_side:
            return float(self.longer_side) / float(max(shape))
        if self.mm_per_pixel and pixel_mm:
            return float(pixel_mm) / float(self.mm_per_pixel)
        return 1.0


def resize(image: np.ndarray, factor: float, *, nearest: bool = False) -> np.ndarray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` array by ``factor`` (area filter when shrinking)."""
    if abs(factor - 1.0) < 1e-9:
        return image
    h, w = image.shape[:2]
    new = (max(1, round(w * factor)), max(1, round(h * factor)))
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, new, interpolation=interp)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def model_input(scan: Scan, representation: str, scale: WorkingScale | None = None) -> np.ndarray:
    """The model's view of a whole scan: ``(C, H', W')`` float32 in [-1, 1] at the working scale.

    Args:
        scan: The scan.
        representation: One of :data:`REPRESENTATIONS`.
        scale: Working scale; ``None`` keeps native resolution.

    Returns:
        Float32 array, channels first.

    Raises:
        ScanError: if the representation needs energies the scan lacks.
    """
    channels_of(representation)
    factor = scale.factor(scan.shape, scan.pixel_mm) if scale else 1.0
    if representation == "log_attenuation":
        if scan.raw is None or scan.raw.shape[0] != 2:
            raise ScanError(
                "this model needs raw dual-energy data (two channels); the scan is "
                f"{scan.kind.value} - use a model trained on the RGB representation"
            )
        raw = np.moveaxis(scan.raw, 0, -1)
        mu = -np.log(np.clip(resize(raw, factor), 1e-6, 1.0))
        x = np.clip(mu / _MU_MAX_RAW, 0.0, 1.0) * 2.0 - 1.0
        return np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32)
    rgb = resize(scan.rgb, factor).astype(np.float32) / 255.0
    if representation == "rgb":
        x = rgb * 2.0 - 1.0
    else:  # rgb_attenuation
        mu = -np.log(np.clip(rgb, 1.0 / 255.0, 1.0))
        x = mu / _MU_MAX_RGB * 2.0 - 1.0
    return np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32)


def model_input_from_rgb(rgb: torch.Tensor, representation: str) -> torch.Tensor:
    """:func:`model_input` of an RGB representation, on the tensor's device: ``(H, W, 3)``
    uint8 already at the working scale -> ``(3, H, W)`` float32 in [-1, 1].

    The scoring engine uploads a scan's uint8 RGB once (3 bytes a pixel) and converts it
    here, on the GPU when there is one, instead of uploading the float32 input (12 bytes a
    pixel) made on the host. Same arithmetic as :func:`model_input` (a test holds every
    8-bit level of both to within float32 rounding).

    Raises:
        ConfigError: for ``"log_attenuation"`` (raw energies, not RGB) or an unknown name.
    """
    channels_of(representation)  # an unknown name is refused as everywhere
    if representation not in RGB_REPRESENTATIONS:
        raise ConfigError(f"{representation!r} is not made from the RGB rendering")
    x = rgb.permute(2, 0, 1).to(torch.float32) / 255.0
    if representation == "rgb":
        return x * 2.0 - 1.0
    mu = -torch.log(x.clamp_(1.0 / 255.0, 1.0))
    return mu / _MU_MAX_RGB * 2.0 - 1.0


def attenuation_ceiling(representation: str) -> float | None:
    """The ``-log`` transmission a representation maps to +1 (``None`` for ``"rgb"``,
    whose values are the display grey level itself): the inverse of :func:`model_input`
    is ``T = exp(-(x + 1) / 2 * ceiling)``."""
    channels_of(representation)
    if representation == "rgb":
        return None
    return _MU_MAX_RAW if representation == "log_attenuation" else _MU_MAX_RGB


def grey_at_scale(scan: Scan, scale: WorkingScale | None = None) -> np.ndarray:
    """Protocol grey (mean RGB / 255) at the working scale, ``(H', W')`` float32."""
    factor = scale.factor(scan.shape, scan.pixel_mm) if scale else 1.0
    return resize(scan.rgb, factor).astype(np.float32).mean(axis=2) / 255.0
