"""Typed errors shared by the core. Every message is meant to be read by a user."""


class XrayscreenError(Exception):
    """Base class for all errors this package raises on purpose."""


class ScanError(XrayscreenError):
    """A scan could not be read: unknown format, corrupt file, absurd header, ..."""


class BundleError(XrayscreenError):
    """A model bundle is missing, corrupt, unsafe (pickle) or inconsistent."""


class ConfigError(XrayscreenError, ValueError):
    """An invalid setting, e.g. an input size the architecture cannot build."""
