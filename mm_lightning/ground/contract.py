"""What the hook bridge, the checkpoint functions and the runner view need of a run's LightningModule.

:class:`~mm_lightning.ConfigModule` is the one implementation. The three read and drive it through
this protocol, so none of them imports the module (which builds all three), and the type checker holds
the module to it: a member renamed on one side is an error on the other.

The parts whose classes live in the runtime, above this layer (the hooks, the run context, the training
progress, the runner view), are ``Any`` here; :class:`mm_lightning.runtime.contract.RunModule` is this
protocol with their classes, what the runtime's own modules take.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Protocol

import lightning.pytorch as pl
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner.base_loop import BaseLoop

__all__ = ['RunModule']


class RunModule(Protocol):
    """A config-built run as a LightningModule: its parts, its position, and the steps mmengine orders."""

    #: The run's config and the runner keywords it was built from.
    cfg: Config
    keywords: Mapping[str, Any]
    #: The parts: mmengine's model (a ``BaseModel`` or an ``nn.Module`` with its step methods), the hooks,
    #: and the run's identity and outputs.
    model: BaseModel
    hooks: Any
    context: Any
    #: The optim wrapper and parameter schedulers: configs until the Trainer builds them, then mmengine objects.
    optim_wrapper: Any
    param_schedulers: Any
    #: ``load_from``/``resume`` as configured; whether they were applied and whether training state was.
    load_from: Optional[str]
    resume: Any
    loaded: bool
    resumed: bool
    #: The last evaluation's metrics per mode (``'val'``, ``'test'``), as mmengine returns them.
    metrics: Dict[str, dict]

    @property
    def runner(self) -> Any:
        """The mmengine runner its hooks receive."""

    @property
    def attached_trainer(self) -> Optional[pl.Trainer]:
        """The Trainer running it, or None before one does."""

    @property
    def train_loop(self) -> Optional[BaseLoop]:
        """mmengine's training loop, once built over the training loader (None before)."""

    @property
    def progress(self) -> Any:
        """Lightning's driver of the training loop, built with it (None before)."""

    @property
    def training_progress(self) -> Any:
        """``progress``, once a fit has built the training loop (raises before)."""

    @property
    def built_train_loop(self) -> BaseLoop:
        """``train_loop``, once a fit has built it (raises before)."""

    @property
    def has_training(self) -> bool:
        """Whether it is configured to train."""

    def train(self, mode: bool = True) -> Any:
        """``nn.Module.train``: mmengine's loops set the model's mode at their own points."""

    # -- the steps the bridge calls, in mmengine's order -----------------------------------------------
    def prepare_run(self, trainer: pl.Trainer, stage: str) -> None:
        """Config checked, outputs opened, loops bound to the loaders, before ``before_run``."""

    def initialize_weights(self, stage: str) -> None:
        """``init_weights``, before the strategy wraps the model."""

    def configure_model(self) -> None:
        """Shard the model where the strategy shards."""

    def begin_training(self) -> None:
        """Room for checkpoints, the accumulation counters and compile, where training starts or continues."""

    # -- what the checkpoint functions call back ------------------------------------------------------
    def build_optimization(self) -> None:
        """The optim wrapper and schedulers, built from their configs (a resume before the Trainer did)."""

    def set_resume_state(self, state: Dict[str, Any], meta: Dict[str, Any]) -> None:
        """Progress, data position and random state from a checkpoint of either format."""
