"""The run contract with the runtime's own classes: :class:`mm_lightning.ground.contract.RunModule`, whose
hooks, run context, training progress and runner view are typed here, where those classes live, with the
parts of the module that only the runtime reaches: its loops (:class:`~mm_lightning.runtime.loop_binding.LoopBinding`)
and its resume state (:class:`~mm_lightning.runtime.resume.ResumeState`).

The hook bridge, the runner view and the module's own parts take this protocol; the checkpoint functions (a layer
below) take ground's, the same members with those four as ``Any`` and without the runtime's two parts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol

from mm_lightning.ground import contract

if TYPE_CHECKING:  # the view, the hooks and the loops' driver import nothing of the module either
    from mm_lightning.runtime.context import RunContext
    from mm_lightning.runtime.hooks import HookList
    from mm_lightning.runtime.loop_binding import LoopBinding
    from mm_lightning.runtime.loops import TrainProgress
    from mm_lightning.runtime.resume import ResumeState
    from mm_lightning.runtime.view import RunnerView

__all__ = ['RunModule']


class RunModule(contract.RunModule, Protocol):
    """A config-built run as a LightningModule (see :class:`mm_lightning.ground.contract.RunModule`)."""

    hooks: HookList
    context: RunContext
    #: The run's loops over its loaders (``train_cfg`` and the evaluation configs, and the loops built of them),
    #: and what a checkpoint restores where the run continues.
    loops: LoopBinding
    resume_state: ResumeState

    @property
    def progress(self) -> Optional[TrainProgress]:
        """Lightning's driver of the training loop, once a fit has built it."""

    @property
    def runner(self) -> RunnerView:
        """The mmengine runner its hooks receive."""

    @property
    def training_progress(self) -> TrainProgress:
        """``progress``, once a fit has built the training loop (raises before)."""
