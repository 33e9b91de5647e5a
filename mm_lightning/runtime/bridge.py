"""mmengine's order of events on Lightning's: the callback that calls a run's mmengine hooks.

============================  =====================================================
Lightning                     mmengine
============================  =====================================================
setup                         (work_dir and log opened), before_run, init weights
                              (before the strategy wraps the model)
on_fit_start                  load_from / resume
on_train_start                before_train; on resume: before_train_epoch when the
                              run stopped inside an epoch (or is iteration-based),
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

from typing import Any, Dict, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from mm_lightning.runtime.fidelity import (
    check_epoch_length,
    position_fit_loop,
    restore_validation_cadence,
    schedule_validation,
    validate_now,
)
from mm_lightning.runtime.preemption import Preemption, stop
from mm_lightning.translate.sharding import check_hooks

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
    """Calls the module's mmengine hooks at mmengine's points of a Lightning run."""

    def __init__(self) -> None:
        self._epoch_open = False  # before_train_epoch called, after_train_epoch not yet
        self._preemption: Optional[Preemption] = None

    @staticmethod
    def _call(module: Any, stage: str, **kwargs: Any) -> None:
        module.hooks.call(module.runner, stage, **kwargs)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.prepare_run(trainer, stage)
        if isinstance(trainer.strategy, ModelParallelStrategy):
            # mmengine's FlexibleRunner order under sharding: the strategy initialises and shards the model
            # before before_run, so hooks (EMAHook's copy) see the sharded model
            check_hooks(pl_module.hooks.hooks)
            pl_module.initialize_weights(stage)
            pl_module.configure_model()
            self._call(pl_module, 'before_run')
            return
        self._call(pl_module, 'before_run')
        pl_module.initialize_weights(stage)

    # -- training ---------------------------------------------------------------------------------
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.start_fit()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_open = False
        self._preemption = Preemption.install(trainer)  # after Lightning registered its signal handlers
        self._call(pl_module, 'before_train')
        if pl_module.resumed:
            self._continue(trainer, pl_module)

    def _continue(self, trainer: pl.Trainer, module: Any) -> None:
        """Carry on exactly where the checkpoint was taken (see module doc)."""
        module.restore_data_position(trainer.datamodule)
        loop, stream = module.progress, trainer.datamodule.train_stream
        if not loop.by_epoch or stream.mid_pass:
            self._open_epoch(trainer, module)
        module.restore_continuation_state()
        if stream.pass_complete:
            self._close_epoch(trainer, module)
        if loop.validation_pending:
            validate_now(trainer)
        position_fit_loop(trainer, loop.epoch if loop.by_epoch else 0, loop.optimizer_steps, loop.iter)
        if loop.finished and not (loop.by_epoch and stream.mid_pass):  # an epoch is finished first
            trainer.should_stop = True

    def _open_epoch(self, trainer: pl.Trainer, module: Any) -> None:
        self._epoch_open = True
        self._call(module, 'before_train_epoch')
        if module.progress.by_epoch:
            module.train()  # after before_train_epoch, as mmengine's run_epoch
            # a hook may have given the loop a new dataloader: the pass iterates it
            check_epoch_length(trainer, len(trainer.datamodule.train_stream))

    def _close_epoch(self, trainer: pl.Trainer, module: Any) -> None:
        """The end of an epoch-based pass: the loader's end, after_train_epoch, the validation rule."""
        loop = module.progress
        trainer.datamodule.train_stream.finish_pass()
        with loop.ending_hooks('epoch'):
            self._call(module, 'after_train_epoch')
        self._epoch_open = False
        loop.epoch_done()
        loop.validation_pending = loop.validation_due()
        schedule_validation(trainer, loop.validation_pending)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._epoch_open:
            self._open_epoch(trainer, pl_module)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        loop = pl_module.progress
        if not loop.by_epoch:
            pl_module.train()  # every iteration, as mmengine's IterBasedTrainLoop
        index = trainer.datamodule.train_stream.batch_index if loop.by_epoch else loop.iter
        self._call(pl_module, 'before_train_iter', batch_idx=index, data_batch=batch)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loop, stream = pl_module.progress, trainer.datamodule.train_stream
        index = stream.batch_index if loop.by_epoch else loop.iter
        with loop.ending_hooks('iteration'):
            self._call(pl_module, 'after_train_iter', batch_idx=index, data_batch=batch, outputs=outputs)
        loop.iteration_done()
        loop.optimizer_steps = trainer.global_step
        if loop.by_epoch:
            if stream.pass_complete:
                self._close_epoch(trainer, pl_module)
            else:
                schedule_validation(trainer, False)
        else:
            loop.validation_pending = loop.validation_due()
            schedule_validation(trainer, loop.validation_pending)
            if loop.finished:
                trainer.should_stop = True
        self._stop_if_preempted(pl_module)

    def _stop_if_preempted(self, module: Any) -> None:
        """A safe point: between two iterations, or after a validation, on every rank at once."""
        if self._preemption is not None and self._preemption.agreed():
            module.runner.save_resumable_checkpoint()
            stop()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = pl_module.progress
        if not loop.by_epoch:
            self._call(pl_module, 'after_train_epoch')
        if loop.finished:
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call(pl_module, 'after_train')
        restore_validation_cadence(trainer)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call(pl_module, 'after_run')

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        restore_validation_cadence(trainer)

    # -- validation and test: the loop's run_iter calls the iteration hooks, as mmengine's does ---------
    def _eval_start(self, trainer: pl.Trainer, module: Any, mode: str) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            module.load_for_evaluation()
        if not module.eval_runs_itself(mode):
            self._call(module, f'before_{mode}')

    def _eval_epoch_start(self, module: Any, mode: str) -> None:
        if not module.eval_runs_itself(mode):
            self._call(module, f'before_{mode}_epoch')

    def _eval_end(self, trainer: pl.Trainer, module: Any, mode: str) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:  # evaluated: a file written by after_val_epoch (a new best) continues after it
            module.progress.validation_pending = False
        if not module.eval_runs_itself(mode):
            self._call(module, f'after_{mode}_epoch', metrics=module.metrics.get(mode))
            self._call(module, f'after_{mode}')
        if not fitting:
            self._call(module, 'after_run')
            return
        loop = module.progress
        if not loop.by_epoch and loop.stop_training:
            trainer.should_stop = True  # epoch-based runs stop at the epoch's end
        self._stop_if_preempted(module)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, pl_module, 'val')

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_epoch_start(pl_module, 'val')

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module, 'val')

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, pl_module, 'test')

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_epoch_start(pl_module, 'test')

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module, 'test')
