"""The four non-learned window scores every model is judged against ("floors").

Computed on exactly the windows the model sees: the protocol image (longer side
800 px) padded bottom/right with air (white) to the window grid. With protocol grey
``g = mean(R, G, B) / 255`` per pixel:

* ``max_density``   = 1 - min g over the window (the darkest pixel: dense matter);
* ``mean_darkness`` = 1 - mean g over the window;
* ``edge_density``  = mean |Laplacian(g)| over the window, with the 4-neighbour
  kernel ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` (OpenCV ``Laplacian(ksize=1)``),
  applied to the padded image with reflected borders;
* ``blue_fraction`` = fraction of window pixels with B > G + 0.05, B > R + 0.05 and
  g < 0.8 (channels in 0..1): blue is metal in the scanners' false colour.

An operator already sees dark, dense regions; a learned detector is worth having
only where it beats these.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xrayscreen.inference.windows import WindowGrid

FLOOR_NAMES = ("max_density", "mean_darkness", "edge_density", "blue_fraction")
FLOOR_LABELS = {
    "max_density": "max density: 1 - min grey",
    "mean_darkness": "mean darkness: 1 - mean grey",
    "edge_density": "edge density: mean |Laplacian| (4-neighbour)",
    "blue_fraction": "blue (metal) pixel fraction",
}

LAPLACE_4 = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
BLUE_MARGIN = 0.05
BLUE_MAX_GREY = 0.8


def floor_scores(rgb_padded: torch.Tensor, grid: WindowGrid) -> dict[str, np.ndarray]:
    """All four floor scores for every window of one scan.

    Args:
        rgb_padded: ``(3, H, W)`` float32 RGB in 0..1 at the protocol scale, padded
            with 1.0 (air) to ``grid.padded_shape``.
        grid: The window grid.

    Returns:
        Name -> ``(N,)`` float32 scores in the grid's row-major order.
    """
    win, s = grid.window, grid.stride
    grey = rgb_padded.mean(dim=0)[None, None]  # (1, 1, H, W)
    r, g, b = rgb_padded[0], rgb_padded[1], rgb_padded[2]
    blue = ((b > g + BLUE_MARGIN) & (b > r + BLUE_MARGIN) & (grey[0, 0] < BLUE_MAX_GREY)).float()
    lap = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="reflect"), LAPLACE_4[None, None]).abs()

    def pool(x: torch.Tensor) -> np.ndarray:
        return F.avg_pool2d(x, win, s).flatten().numpy().astype(np.float32)

    min_grey = -F.max_pool2d(-grey, win, s).flatten().numpy()
    return {
        "max_density": (1.0 - min_grey).astype(np.float32),
        "mean_darkness": (1.0 - pool(grey)).astype(np.float32),
        "edge_density": pool(lap),
        "blue_fraction": pool(blue[None, None]),
    }
