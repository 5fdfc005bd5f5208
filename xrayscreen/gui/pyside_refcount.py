"""Guard against a PySide6 reference-count bug that aborts Python 3.11 (``none_dealloc``).

With PySide6 6.12.0 on CPython 3.11 (the versions on the project's machine), every
call of a ``void`` Qt method from Python (``QLabel.setText``, ``QTimer.setInterval``,
``QPainter.drawRect``, ``QPainterPath.lineTo`` ...) returns ``None`` without taking
a reference to it, so ``None``'s reference count drops by one per call. It starts
at a few thousand: a few thousand Qt calls later CPython aborts with "Fatal Python
error: none_dealloc: deallocating None". (Measured: 20,000 ``QTimer.setInterval``
calls abort a fresh interpreter; a live loss plot gets there in about a minute.)

From CPython 3.12 on, ``None`` is immortal (PEP 683) and the bug is harmless, which
is presumably why the bindings ship with it. On older interpreters this module
gives ``None`` the same property the only way available from Python: it detects
the leak with a short probe and, if present, raises ``None``'s reference count by
2**40, which no process can exhaust. It changes nothing when the probe shows no
leak, and nothing on 3.12+ or non-CPython interpreters.
"""

from __future__ import annotations

import ctypes
import sys

_BANK = 1 << 40
_applied = False


def none_leaks_per_call(calls: int = 64) -> float:
    """How many references to ``None`` one void Qt call loses (0.0 when the bindings are fine)."""
    from PySide6.QtCore import QTimer

    t = QTimer()
    before = sys.getrefcount(None)
    for _ in range(calls):
        t.setInterval(1)
    return (before - sys.getrefcount(None)) / calls


def guard_none_refcount() -> bool:
    """Make ``None`` effectively immortal if this PySide6 leaks its references.

    Returns:
        True when the guard is (now or already) in place, False when not needed.
    """
    global _applied
    if _applied:
        return True
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if none_leaks_per_call() <= 0.5:
        return False
    # CPython <= 3.11 release builds: ob_refcnt is the first Py_ssize_t of every object.
    ctypes.c_ssize_t.from_address(id(None)).value += _BANK
    _applied = True
    return True
