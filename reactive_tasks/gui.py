"""GUI helpers: a Qt scheduler that ``observe_on`` can use with events from any thread.

reactivex's ``QtScheduler`` starts a ``QTimer`` on the thread that calls it; under Qt 6 a timer
started on a thread without a Qt event loop (such as the engine's asyncio thread) never fires, so
``observe_on(QtScheduler(QtCore))`` silently delivers nothing (RxPY issues #233 and #551). The
scheduler here first hops to the GUI thread through a queued signal. Tk, GTK and wx need no help:
use reactivex's own ``TkinterScheduler``, ``GtkScheduler`` and ``WxScheduler``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from reactivex import abc, typing
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.scheduler.mainloop import QtScheduler

__all__ = ["qt_scheduler"]

_T = TypeVar("_T")


def qt_scheduler(qtcore: ModuleType) -> QtScheduler:
    """A ``QtScheduler`` safe to call from any thread; create it on the GUI thread.

    ``qtcore`` is the binding's QtCore module (``from PySide6 import QtCore``), as reactivex's
    own ``QtScheduler`` takes it.
    """
    signal: Any = getattr(qtcore, "Signal", None) or qtcore.pyqtSignal
    slot: Any = getattr(qtcore, "Slot", None) or qtcore.pyqtSlot
    queued: Any = qtcore.Qt.ConnectionType.QueuedConnection

    class Relay(qtcore.QObject):  # type: ignore[misc,name-defined]
        """Runs callables on the thread it lives in: a queued signal crosses threads."""

        call = signal(object)

        def __init__(self) -> None:
            super().__init__()
            self.call.connect(self._run, queued)

        @slot(object)  # type: ignore[untyped-decorator]
        def _run(self, fn: Callable[[], None]) -> None:
            fn()

    return _GuiThreadQtScheduler(qtcore, Relay())


class _GuiThreadQtScheduler(QtScheduler):
    """``QtScheduler`` that moves calls from other threads onto the GUI thread first."""

    def __init__(self, qtcore: ModuleType, relay: Any) -> None:
        super().__init__(qtcore)
        self._gui_thread = threading.get_ident()
        self._relay = relay

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_T],
        state: _T | None = None,
    ) -> abc.DisposableBase:
        if threading.get_ident() == self._gui_thread:
            return super().schedule_relative(duetime, action, state)
        inner = SingleAssignmentDisposable()
        cancelled = threading.Event()
        schedule_here = super().schedule_relative

        def on_gui_thread() -> None:
            if not cancelled.is_set():
                inner.disposable = schedule_here(duetime, action, state)

        self._relay.call.emit(on_gui_thread)
        return CompositeDisposable(inner, Disposable(cancelled.set))
