"""xrayscreen: X-ray baggage screening with GANomaly anomaly heat maps.

The core (imaging, model, inference, decisions, training) imports no Qt; only
``xrayscreen.gui`` does.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
