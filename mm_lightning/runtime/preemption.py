"""SIGTERM (preemption): the run stops at a safe point, on every rank at once, with one whole checkpoint.

Lightning's own SIGTERM handler runs a collective inside the signal handler, which can
interleave with training's collectives (a mismatch, or a hang when only one rank is
signalled), and each rank then stops wherever it happens to be: inside a validation, a
file would hold EMAHook's swapped-in weights and a random state taken mid-validation.

Here the handler only notes the signal (and forwards it to processes Lightning launched,
as Lightning's does). At the safe points the hook bridge offers, after a training
iteration's hooks and counters and after a validation, the ranks agree with one
reduction (any rank signalled). If one was, every rank takes part in one resumable
checkpoint of that moment and the run ends (exit status 0; ``FlexibleRunner.train``
returns). A rank that has died makes that reduction fail with the process group's
error instead of hanging, and the last whole checkpoint stays.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ['Preemption', 'stop']


class Preemption:
    """The SIGTERM flag of one fit, and the agreement of the ranks on it."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer
        self.signalled = False

    @classmethod
    def install(cls, trainer: pl.Trainer) -> Optional['Preemption']:
        """Replace Lightning's SIGTERM handler for this fit (Lightning restores the original at teardown).

        Signals reach only the main thread: elsewhere nothing is installed and Lightning's handling stays.
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        preemption = cls(trainer)
        signal.signal(signal.SIGTERM, preemption._note)
        return preemption

    def _note(self, signum: int, frame: Optional[FrameType]) -> None:
        launcher = self.trainer.strategy.launcher
        if not self.signalled and launcher is not None:
            launcher.kill(signum)
        self.signalled = True

    def agreed(self) -> bool:
        """Whether any rank was signalled: a collective, called by every rank at the same safe point."""
        return self.trainer.strategy.reduce_boolean_decision(self.signalled, all=False)


def stop() -> None:
    """End the fit as Lightning ends one on SIGTERM (its exception is a ``SystemExit`` with status 0)."""
    raise SIGTERMException()
