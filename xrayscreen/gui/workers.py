"""Background scoring: the engine's generator runs in a superqt worker thread.

The engine yields progress (with a partial result) between batches; the worker
re-emits each one on the GUI thread, so the heat map fills in while the window
stays responsive. Cancel sets the engine's ``threading.Event`` (stops inside a
scan) and asks the worker to quit at its next yield.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal
from superqt.utils import create_worker


def _score_job(engine: Any, scan: Any, stride: int, cancel: threading.Event):
    # A generator *function* so superqt picks its GeneratorWorker (yield -> signal).
    result = yield from engine.score_scan(scan, stride=stride, cancel=cancel)
    return result


class ScoringJob(QObject):
    """One scoring run of one scan.

    Signals:
        progress(done, total, partial_result_or_None)
        finished(result) - only when the run completed (not cancelled)
        failed(exception)
        cancelled()
        ended() - always last, whatever happened
    """

    progress = Signal(int, int, object)
    finished = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    ended = Signal()

    def __init__(self, engine: Any, scan: Any, stride: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cancel_event = threading.Event()
        self.started_at = time.perf_counter()
        self.elapsed = 0.0
        self.running = False
        self._worker = create_worker(
            _score_job,
            engine,
            scan,
            stride,
            self.cancel_event,
            _start_thread=False,
            _ignore_errors=True,  # we show them ourselves (errored -> failed)
        )
        self._worker.yielded.connect(self._on_yield)
        self._worker.returned.connect(self._on_return)
        self._worker.errored.connect(self._on_error)
        self._worker.aborted.connect(self._on_abort)
        self._worker.finished.connect(self._on_finished)

    def start(self) -> None:
        self.running = True
        self.started_at = time.perf_counter()
        self._worker.start()

    def cancel(self) -> None:
        """Stop as soon as possible (the current batch finishes first)."""
        self.cancel_event.set()
        self._worker.quit()

    # -- worker callbacks (GUI thread) -----------------------------------------------
    def _on_yield(self, p: Any) -> None:
        if self.cancel_event.is_set():
            return
        self.progress.emit(
            int(getattr(p, "done", 0)), int(getattr(p, "total", 0)), getattr(p, "partial", None)
        )

    def _on_return(self, result: Any) -> None:
        self.elapsed = time.perf_counter() - self.started_at
        if self.cancel_event.is_set():
            self.cancelled.emit()
        elif result is not None:
            self.finished.emit(result)

    def _on_error(self, exc: Exception) -> None:
        self.elapsed = time.perf_counter() - self.started_at
        if self.cancel_event.is_set():
            self.cancelled.emit()  # an engine may raise on cancel; that is not an error
        else:
            self.failed.emit(exc)

    def _on_abort(self) -> None:
        self.cancelled.emit()

    def _on_finished(self) -> None:
        self.running = False
        self.ended.emit()


def wait_for_workers(timeout_ms: int = 10000) -> bool:
    """Block until every pooled worker thread is idle (used on close and in tests)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
