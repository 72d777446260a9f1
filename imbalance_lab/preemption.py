"""Stopping at a step boundary when the run is told to stop: SIGTERM (``kill``, ``scancel``, a scheduler's
preemption) and SIGUSR2 (the signal submitit asks SLURM to send before a time limit, and that preemption
sends to submitit jobs).

While a run trains (:func:`signals_deferred`), such a signal only sets a flag; the training loop
(``fit_stack``) looks at it after every step. When it is set, the loop writes a checkpoint of exactly where it
is — the epoch, the step in it, the epoch's batch order and running sums, every member's weights, optimiser,
random generator — and then :meth:`Pending.finish` carries the signal on: the handler that was installed
before (submitit's: requeue the job and exit) is called, or :class:`Terminated` is raised. A requeued or
restarted run continues from that checkpoint, so at most the step in flight is redone. A signal that arrives
after the last step lets the run finish and write its results first.

Only the main thread can install signal handlers; elsewhere (a run started from a thread) nothing is
deferred and the signals keep their handlers.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Terminated(BaseException):
    """The run stopped on a signal after writing its checkpoint; ``where`` says where it stopped."""

    def __init__(self, signum: int, where: str):
        super().__init__(f"{signal.Signals(signum).name} {where}")
        self.signum, self.where = signum, where


class Pending:
    """The signal received while deferred (None: none), and the handlers it displaced."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def note(self, signum, frame) -> None:
        if self.signum is None:
            log.warning("%s received: stopping at the next step boundary, after writing a checkpoint",
                        signal.Signals(signum).name)
            self.signum = signum

    def finish(self, where: str, completed: bool = False) -> None:
        """Carry the signal on, once the checkpoint is written (or, ``completed``, the run finished): the
        previous handler if there was one (submitit's requeue-and-exit for SIGUSR2), else ``Terminated``. A
        SIGUSR2 (time limit, preemption) after the run completed needs nothing more: nothing is lost."""
        signum = self.signum
        if signum is None or (completed and signum == signal.SIGUSR2):
            return
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, None)
        raise Terminated(signum, where)


_current: Pending | None = None


def current() -> Pending | None:
    """The pending-signal record of the run training now in this process (None outside one)."""
    return _current


@contextmanager
def signals_deferred():
    """SIGTERM and SIGUSR2 set a flag instead of acting, until the block ends; yields the :class:`Pending`
    record. Nested use (a run inside a run's block) shares the outer record."""
    global _current
    if _current is not None or threading.current_thread() is not threading.main_thread():
        yield _current or Pending()
        return
    pending = Pending()
    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN:
            continue
        pending.previous[signum] = previous
        signal.signal(signum, pending.note)
    _current = pending
    try:
        yield pending
    finally:
        _current = None
        for signum, previous in pending.previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
