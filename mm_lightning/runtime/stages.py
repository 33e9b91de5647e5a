"""What each Lightning stage (fit, validate, test, predict) does of mmengine's setup as it starts.

:class:`StageStart` is the part of :class:`~mm_lightning.ConfigModule` that runs these steps, in mmengine's order:
each stage's config checks (once), the run's outputs opened and its loops bound to the loaders before
``before_run``, and, where training starts or continues, room for checkpoints and the accumulation counters.
Each step gets the run it acts on (the module, through its
:class:`~mm_lightning.runtime.contract.RunModule` protocol).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Set, Union

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from mmengine.optim import OptimWrapper

from mm_lightning.config.validation import LIGHTNING_STAGES, validate_config
from mm_lightning.runtime.contract import RunModule
from mm_lightning.runtime.data import config_datamodule
from mm_lightning.runtime.fidelity import check_after_validation, neutralise
from mm_lightning.runtime.trainer_settings import take_trainer_settings
from mm_lightning.state import disk
from mm_lightning.translate.progress import bar_draws

__all__ = ['StageStart']


class StageStart:
    """The steps a stage runs as it starts, and which config checks have run."""

    def __init__(self) -> None:
        self._checked_stages: Set[str] = set()

    def check_stage(self, module: RunModule, stage: str) -> None:
        """The config checks of what a Lightning ``stage`` (fit, validate, test) runs, once, before it starts."""
        for part in LIGHTNING_STAGES.get(stage, ()):
            if part not in self._checked_stages:
                validate_config(module.keywords, stages=(part,))
                self._checked_stages.add(part)

    def callbacks(self, module: RunModule, trainer: pl.Trainer, bridge: Callback) -> List[Callback]:
        """``module``'s ``configure_callbacks``: the hook ``bridge``, once per Trainer. Lightning asks for it before
        checking the Trainer itself, so a fit takes the Trainer's own length, cadence, accumulation and clipping
        into the config here, then checks the config (see :mod:`mm_lightning.runtime.trainer_settings`)."""
        if trainer.state.fn == TrainerFn.FITTING:
            take_trainer_settings(module, trainer)
            self.check_stage(module, 'fit')
            if module.loops.has_eval('val'):
                check_after_validation(trainer)
        # a later stage on the same Trainer finds the bridge there: returning it again would replace it, with
        # Lightning's warning that configure_callbacks overrides the Trainer's callbacks
        callbacks = getattr(trainer, 'callbacks')  # set in the Trainer's __init__, not declared
        return [] if any(callback is bridge for callback in callbacks) else [bridge]

    def prepare_run(self, module: RunModule, trainer: pl.Trainer, stage: str) -> None:
        """What a run needs before ``before_run``: config checked, outputs opened, loops bound to the loaders."""
        self.check_stage(module, stage)
        neutralise(trainer)
        module.context.open(module.cfg, module.hooks.info(), bar_draws=bar_draws(trainer))
        if stage == 'fit':  # training writes checkpoints; a resume (config or Trainer's ckpt_path) continues them
            module.context.warn_of_overwrites(resuming=bool(module.resume) or trainer.ckpt_path is not None)
        module.loops.bind(module.model, module.runner, config_datamodule(trainer), stage)

    def begin_training(self, module: RunModule, ckpt_path: Union[str, Path, None]) -> None:
        """Where training starts or continues, whichever way its checkpoint was restored (``ckpt_path``: the
        Lightning checkpoint the Trainer restored, if it did): room for checkpoints and the accumulation counters
        from the loop's iteration."""
        progress = module.training_progress
        if ckpt_path is not None:
            module.context.logger.info(f'Continuing from the Lightning checkpoint {ckpt_path} (epoch '
                                       f'{progress.epoch}, iter {progress.iter}); load_from/resume in the config '
                                       'are not used')
        disk.check_room(module)  # before any training time is spent
        if isinstance(module.optim_wrapper, OptimWrapper):  # DeepSpeedOptimWrapper counts nothing: its engine does
            module.optim_wrapper.initialize_count_status(module.model, progress.iter, progress.max_iters)
