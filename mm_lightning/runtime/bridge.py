"""mmengine's order of events on Lightning's: the callback that calls a run's mmengine hooks.

============================  =====================================================
Lightning                     mmengine
============================  =====================================================
setup                         (work_dir and log opened), before_run, init weights
                              (before the strategy wraps the model); while a Lightning
                              progress bar draws, mmengine's INFO lines go to the log
                              file only, until teardown
on_fit_start                  load_from / resume
on_train_start                the accumulation counters, compile, before_train; on
                              resume: before_train_epoch when the run stopped
                              inside an epoch (or is iteration-based),
                              the saved random state and accumulated gradients, the
                              end of an epoch whose
                              batches were all trained, a validation that was due
on_train_epoch_start          before_train_epoch, then ``train()`` (once, iteration-based)
on_train_batch_start          before_train_iter
on_train_batch_end            after_train_iter; after an epoch's last batch the loader
                              is run to its end, after_train_epoch, *then* validation
on_train_epoch_end            after_train_epoch (iteration-based only)
on_validation_start / _end    before_val, before_val_epoch (train mode) /
                              after_val_epoch(metrics), after_val; the loop's
                              run_iter calls the iteration hooks (a loop with its
                              own run calls all of them)
on_train_end / on_fit_end     after_train / after_run
on_train_batch_end, after a    SIGTERM on any rank (:mod:`mm_lightning.runtime.preemption`): a
validation (safe points)      resumable checkpoint of that moment, then the run ends
============================  =====================================================

The bridge holds no run state of its own: progress lives in mmengine's training loop object
and its driver (the module's ``progress``) and in the datamodule's ``train_stream``, both
saved in checkpoints.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from mm_lightning.ground.internals import position_fit_loop, run_fit_validation
from mm_lightning.runtime.contract import RunModule
from mm_lightning.runtime.data import config_datamodule
from mm_lightning.runtime.fidelity import (
    check_epoch_length,
    restore_validation_cadence,
    schedule_validation,
)
from mm_lightning.runtime.loops import TrainProgress
from mm_lightning.runtime.metrics import scalar_metrics
from mm_lightning.runtime.preemption import Preemption, stop
from mm_lightning.translate.loggers import left_to_lightning, log_training_tag
from mm_lightning.translate.progress import bar_draws, quiet_console, quiets_itself, restore_console

__all__ = ['STAGE_EVENTS', 'ITERATION_BASED_EVENTS', 'HookBridge']

#: mmengine hook stage -> the Lightning event at which it is called (by the hook bridge, or by the
#: evaluation loop's ``run_iter`` in the module's step).
STAGE_EVENTS: Dict[str, str] = {
    'before_run': 'setup',
    'after_load_checkpoint': 'on_fit_start',
    'before_train': 'on_train_start',
    'before_train_epoch': 'on_train_epoch_start',
    'before_train_iter': 'on_train_batch_start',
    'after_train_iter': 'on_train_batch_end',
    'after_train_epoch': 'on_train_batch_end',  # at an epoch's last batch, before validation
    'before_val': 'on_validation_start',
    'before_val_epoch': 'on_validation_epoch_start',
    'before_val_iter': 'validation_step',  # the loop's run_iter, in the module's step
    'after_val_iter': 'validation_step',
    'after_val_epoch': 'on_validation_end',
    'after_val': 'on_validation_end',
    'before_save_checkpoint': 'save_checkpoint',  # not a Lightning event: the runner's save_checkpoint
    'after_train': 'on_train_end',
    'before_test': 'on_test_start',
    'before_test_epoch': 'on_test_epoch_start',
    'before_test_iter': 'test_step',
    'after_test_iter': 'test_step',
    'after_test_epoch': 'on_test_end',
    'after_test': 'on_test_end',
    'after_run': 'on_fit_end',
}
#: Where iteration-based runs (one Lightning epoch) call a stage elsewhere.
ITERATION_BASED_EVENTS: Dict[str, str] = {'after_train_epoch': 'on_train_epoch_end'}


class HookBridge(Callback):
    """Calls the module's mmengine hooks at mmengine's points of a Lightning run.

    Args:
        module: the run it serves (the :class:`~mm_lightning.ConfigModule` whose ``configure_callbacks``
            returns this bridge).
    """

    def __init__(self, module: RunModule) -> None:
        self._module = module
        self._epoch_open = False  # before_train_epoch called, after_train_epoch not yet
        self._preemption: Optional[Preemption] = None
        self._quieted: List[Tuple[logging.Handler, int]] = []  # console handlers quieted while a bar draws

    @property
    def _progress(self) -> TrainProgress:
        """The training loop's driver, built when a fit binds the loop to its loader."""
        if self._module.progress is None:
            raise RuntimeError('the hook bridge reached a training event before the training loop was built')
        return self._module.progress

    def _call(self, stage: str, **kwargs: Any) -> None:
        self._module.hooks.call(self._module.runner, stage, **kwargs)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module.prepare_run(trainer, stage)
        if bar_draws(trainer) and not quiets_itself(trainer):  # mmengine's INFO lines would break the bar
            self._quieted = quiet_console(self._module.context.logger)
        if isinstance(trainer.strategy, ModelParallelStrategy):
            # mmengine's FlexibleRunner order under sharding: the strategy initialises and shards the model
            # before before_run, so hooks see the sharded model (EMAHook's copy is sharded alike)
            self._module.initialize_weights(stage)
            self._module.configure_model()
            self._call('before_run')
            return
        self._call('before_run')
        self._module.initialize_weights(stage)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_console()

    # -- training ---------------------------------------------------------------------------------
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._module.resume_state.start_fit(self._module, trainer.ckpt_path)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._module.begin_training()
        self._epoch_open = False
        self._preemption = Preemption.install(trainer)  # after Lightning registered its signal handlers
        self._call('before_train')
        if self._module.resumed:
            self._continue(trainer)

    def _continue(self, trainer: pl.Trainer) -> None:
        """Carry on exactly where the checkpoint was taken (see module doc)."""
        self._module.resume_state.restore_data_position(config_datamodule(trainer))
        loop, stream = self._progress, config_datamodule(trainer).train_stream
        if not loop.by_epoch or stream.mid_pass:
            self._open_epoch(trainer)
        self._module.resume_state.restore_continuation_state(self._module)
        if stream.pass_complete:
            self._close_epoch(trainer)
        if loop.validation_pending:
            run_fit_validation(trainer)
        position_fit_loop(trainer, loop.epoch if loop.by_epoch else 0, loop.optimizer_steps, loop.iter)
        if loop.finished and not (loop.by_epoch and stream.mid_pass):  # an epoch is finished first
            trainer.should_stop = True

    def _open_epoch(self, trainer: pl.Trainer) -> None:
        self._epoch_open = True
        self._call('before_train_epoch')
        if self._progress.by_epoch:
            self._module.train()  # after before_train_epoch, as mmengine's run_epoch
            # a hook may have given the loop a new dataloader: the pass iterates it
            check_epoch_length(trainer, len(config_datamodule(trainer).train_stream))

    def _close_epoch(self, trainer: pl.Trainer) -> None:
        """The end of an epoch-based pass: the loader's end, after_train_epoch, the validation rule."""
        loop = self._progress
        config_datamodule(trainer).train_stream.finish_pass()
        with loop.ending_hooks('epoch'):
            self._call('after_train_epoch')
        self._epoch_open = False
        loop.epoch_done()
        loop.validation_pending = loop.validation_due()
        schedule_validation(trainer, loop.validation_pending)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._epoch_open:
            self._open_epoch(trainer)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        loop = self._progress
        if not loop.by_epoch:
            self._module.train()  # every iteration, as mmengine's IterBasedTrainLoop
        index = config_datamodule(trainer).train_stream.batch_index if loop.by_epoch else loop.iter
        self._call('before_train_iter', batch_idx=index, data_batch=batch)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loop, stream = self._progress, config_datamodule(trainer).train_stream
        index = stream.batch_index if loop.by_epoch else loop.iter
        with loop.ending_hooks('iteration'):
            self._call('after_train_iter', batch_idx=index, data_batch=batch, outputs=outputs)
            log_training_tag(trainer, self._module.runner, index, self._module.context.lightning_loggers)
        loop.iteration_done()
        loop.optimizer_steps = trainer.global_step
        if loop.by_epoch:
            if stream.pass_complete:
                self._close_epoch(trainer)
            else:
                schedule_validation(trainer, False)
        else:
            loop.validation_pending = loop.validation_due()
            schedule_validation(trainer, loop.validation_pending)
            if loop.finished:
                trainer.should_stop = True
        self._stop_if_preempted()

    def _stop_if_preempted(self) -> None:
        """A safe point: between two iterations, or after a validation, on every rank at once."""
        if self._preemption is not None and self._preemption.agreed():
            self._module.runner.save_resumable_checkpoint()
            stop()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = self._progress
        if not loop.by_epoch:
            self._call('after_train_epoch')
        if loop.finished:
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('after_train')
        restore_validation_cadence(trainer)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('after_run')

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        restore_validation_cadence(trainer)
        self._restore_console()  # Lightning skips teardown after an exception

    def _restore_console(self) -> None:
        restore_console(self._quieted)
        self._quieted = []

    # -- validation and test: the loop's run_iter calls the iteration hooks, as mmengine's does ---------
    def _eval_start(self, trainer: pl.Trainer, mode: str) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self._module.resume_state.load_for_evaluation(self._module, trainer.ckpt_path)
        if not self._module.loops.eval_runs_itself(mode):
            self._call(f'before_{mode}')

    def _eval_epoch_start(self, mode: str) -> None:
        if not self._module.loops.eval_runs_itself(mode):
            self._call(f'before_{mode}_epoch')

    def _eval_end(self, trainer: pl.Trainer, mode: str) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:  # evaluated: a file written by after_val_epoch (a new best) continues after it
            self._progress.validation_pending = False
        if not self._module.loops.eval_runs_itself(mode):
            metrics = self._module.metrics.get(mode)
            with left_to_lightning(self._module.runner.visualizer, scalar_metrics(metrics or {})):
                self._call(f'after_{mode}_epoch', metrics=metrics)
            self._call(f'after_{mode}')
        if not fitting:
            self._call('after_run')
            return
        loop = self._progress
        if not loop.by_epoch and loop.stop_training:
            trainer.should_stop = True  # epoch-based runs stop at the epoch's end
        self._stop_if_preempted()

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, 'val')

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_epoch_start('val')

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, 'val')

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, 'test')

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_epoch_start('test')

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, 'test')
