"""Training module (installed as ``xrayscreen.training``): fit GANomaly on curated normal
scans, calibrate on held-out normal scans, write a model bundle.

Main entry points::

    from xrayscreen.training import TrainConfig, train, iter_train
    result = train(TrainConfig(epochs=5), ["normal_bags/"], "models/my_model")

No Qt here; the GUI consumes :func:`iter_train`'s progress events.
"""

from .config import TrainConfig
from .loop import GanomalyTrainer, TrainProgress
from .pipeline import TrainResult, default_work_dir, iter_train, train

__all__ = [
    "GanomalyTrainer",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "default_work_dir",
    "iter_train",
    "train",
]
