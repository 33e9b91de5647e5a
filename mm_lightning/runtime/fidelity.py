"""Where Lightning acts on its own and mmengine does not, and how mm_lightning neutralises it.

Each implicit behaviour is a silent divergence from mmengine's Runner until it is
neutralised. This is the list, and the one place that says how; the same holds in a
Trainer that mm_lightning builds (:data:`TRAINER_SETTINGS`) and in a user's own Trainer
(:func:`neutralise`, called when a ``ConfigModule`` is set up).

Each entry: what Lightning does; what mmengine does; how it is neutralised.

- Sanity validation before fitting; mmengine never validates before training;
  ``num_sanity_val_steps=0``.
- A ``DataLoader``'s sampler swapped for a ``DistributedSampler``, sampler epochs set by
  the fit loop; mmengine's samplers shard and pad, ``DistSamplerSeedHook`` sets epochs;
  loaders reach Lightning behind views that are not ``DataLoader`` objects
  (:mod:`mm_lightning.runtime.data`).
- ``iter(loader)`` probed when a loader is requested (a worker seed drawn from the global
  random state); mmengine makes the iterator when its loop starts; the views make it at
  their first batch.
- Each batch moved to the device; the model's ``data_preprocessor`` does it;
  ``transfer_batch_to_device`` returns the batch.
- An epoch stopped at ``len(loader)``, the iterator left unfinished; mmengine's
  ``for batch in loader`` runs the sampler to ``StopIteration`` (its post-``yield`` code
  included); the hook bridge ends each pass before ``after_train_epoch``.
- The epoch's length fixed when fitting starts (``num_training_batches``); mmengine's ``for``
  loop iterates whatever ``train_loop.dataloader`` is when each epoch starts; the stream follows
  the loop's loader, and one longer than Lightning's epoch is refused (:func:`check_epoch_length`).
- A batch prefetched ahead for unsized loaders; mmengine fetches when its loop asks; the
  views are sized, so Lightning does not prefetch.
- Gradients zeroed before validation; mmengine keeps accumulated gradients;
  ``on_validation_model_zero_grad`` does nothing.
- ``eval()`` before ``on_validation_start`` and train mode restored after validation;
  mmengine calls ``before_val``/``before_val_epoch`` in train mode, then ``eval()``, and
  ``train()`` at the next epoch (after ``before_train_epoch``) or iteration; the module's
  model-mode hooks do nothing, ``eval()`` follows ``before_val_epoch`` and the hook bridge
  calls ``train()`` where mmengine's loops do.
- ``torch.inference_mode`` in ``validate``/``test``; mmengine uses ``torch.no_grad``;
  ``inference_mode=False`` on both loops (and on ``predict``, which runs the test step).
- Validation cadence from ``check_val_every_n_epoch``/``val_check_interval``, after
  ``on_train_epoch_end``; mmengine's ``val_begin``/``val_interval``/``dynamic_intervals``,
  after ``after_train_epoch``; :func:`schedule_validation` after each batch.
- Callbacks that decide in ``setup`` where to read a monitored metric (``EarlyStopping``
  with ``check_on_train_epoch_end=None``: at train epoch end when ``check_val_every_n_epoch``
  is 1), and fail at an epoch without validation ("metric not available"); mmengine's rules
  validate; :func:`check_after_validation` before callbacks' ``setup``, so they read it
  after each validation.
- Loop positions restored from a checkpoint, mid-epoch restarts with Lightning's own
  rules (epoch-start hooks skipped, a due validation skipped or repeated); mmengine
  resumes from ``meta``'s counters; :func:`drop_loop_state`, then the run is positioned
  from mm_lightning's own state (:func:`~mm_lightning.ground.internals.position_fit_loop`)
  and a validation that was due at the saved point runs first
  (:func:`~mm_lightning.ground.internals.run_fit_validation`).
- Accumulation, clipping and precision by the Trainer; mmengine's ``optim_wrapper`` and
  ``AmpOptimWrapper``; manual optimization, wrappers routed through Lightning
  (:mod:`mm_lightning.runtime.optim`).
- Its own checkpoints, logger and progress bar; ``CheckpointHook``, ``LoggerHook``;
  :data:`TRAINER_SETTINGS`.
- SIGTERM: a collective inside the signal handler, then each rank stops where it happens to
  be (mid-validation included); mmengine does not handle it; the handler is replaced for the
  fit, and the ranks stop together at a safe point with one resumable checkpoint
  (:mod:`mm_lightning.runtime.preemption`).
- ``ckpt_path`` read in Lightning's format only (an mmengine file fails in Lightning's
  migration with ``KeyError: 'pytorch-lightning_version'``); mmengine's loading reads its
  own; the strategy's checkpoint IO converts an mmengine file when it loads one
  (:class:`~mm_lightning.state.convert.EitherFormatCheckpointIO`). Lightning's strategies that load
  ``ckpt_path`` without their checkpoint IO (FSDP, DeepSpeed, ModelParallel) need a ``.ckpt``;
  the FSDP2 strategy of mmengine's FSDPStrategy converts an mmengine file itself.
- A torch ``LeafSpec`` built for the loaders of every stage (Lightning 2.6.6's ``CombinedLoader``, through
  ``lightning/pytorch/utilities/_pytree.py``, whatever structure the loaders have), which torch 2.13 deprecates
  with a ``FutureWarning`` on the console once per stage; mmengine builds none; nothing of the run causes it, so
  :func:`neutralise` ignores that one warning (its message, from that module: :data:`LIGHTNING_DEPRECATIONS`).

The optimizer is built in ``configure_optimizers``, after ``before_run`` and after the
strategy has wrapped (or sharded) the model, as mmengine's ``FlexibleRunner`` builds it in
its strategy's ``prepare``; no built-in mmengine hook reads it before ``before_train``.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict

import lightning.pytorch as pl
from lightning.pytorch.strategies import Strategy

from mm_lightning.config.loading import ConfigError
from mm_lightning.ground.internals import evaluate_without_inference_mode, set_validation_check
from mm_lightning.state.convert import EitherFormatCheckpointIO

__all__ = ['TRAINER_SETTINGS', 'LIGHTNING_DEPRECATIONS', 'neutralise', 'schedule_validation', 'check_after_validation',
           'restore_validation_cadence', 'check_epoch_length', 'drop_loop_state']

#: Trainer settings that make Lightning run a config the way mmengine's Runner does.
TRAINER_SETTINGS: Dict[str, Any] = dict(
    num_sanity_val_steps=0,         # mmengine never validates before training
    use_distributed_sampler=False,  # mmengine's samplers already shard and pad
    enable_checkpointing=False,     # CheckpointHook writes mmengine-format checkpoints
    logger=False,                   # LoggerHook writes mmengine logs; vis_backends add loggers
    enable_progress_bar=False,      # mmengine-style log lines, unless the config sets progress_bar
    enable_model_summary=False,
    inference_mode=False,           # evaluation under torch.no_grad(), as mmengine
    accumulate_grad_batches=1,      # optim_wrapper.accumulative_counts accumulates
    check_val_every_n_epoch=1,      # the hook bridge schedules validation (mmengine's rules)
    max_steps=-1,
)


#: Warnings of Lightning's own use of deprecated torch names (module, message), whatever the run: ignored.
LIGHTNING_DEPRECATIONS = (
    (r'lightning\.pytorch\.utilities\._pytree', r'`isinstance\(treespec, LeafSpec\)` is deprecated'),
)


def neutralise(trainer: pl.Trainer) -> None:
    """Apply, to any Trainer, the settings above that a module can still change at setup."""
    for module, message in LIGHTNING_DEPRECATIONS:
        warnings.filterwarnings('ignore', message=message, category=FutureWarning, module=module)
    trainer.num_sanity_val_steps = 0
    evaluate_without_inference_mode(trainer)
    strategy = trainer.strategy
    if type(strategy).load_checkpoint is Strategy.load_checkpoint \
            and not isinstance(strategy.checkpoint_io, EitherFormatCheckpointIO):
        strategy.checkpoint_io = EitherFormatCheckpointIO(strategy.checkpoint_io, trainer)


def schedule_validation(trainer: pl.Trainer, due: bool) -> None:
    """Make Lightning validate after the current training batch exactly when ``due``.

    Lightning decides in its epoch loop, after ``on_train_batch_end``: it validates when
    ``(current_epoch + 1) % check_val_every_n_epoch == 0`` and the batch matches
    ``val_check_batch``. With ``val_check_batch=1`` the epoch test alone decides, so
    ``1`` means "this batch" and ``current_epoch + 2`` means "not in this epoch".
    """
    set_validation_check(trainer, 1 if due else trainer.current_epoch + 2)


def check_after_validation(trainer: pl.Trainer) -> None:
    """Make callbacks that choose in ``setup`` between train epoch end and validation end (``EarlyStopping``)
    choose validation end: the Trainer shows no validation due in this epoch until the bridge schedules one.

    Called for a fit that validates, before callbacks' ``setup`` (``ConfigModule.configure_callbacks``).
    """
    schedule_validation(trainer, False)


def restore_validation_cadence(trainer: pl.Trainer) -> None:
    """Give the Trainer back the ``check_val_every_n_epoch`` that :func:`schedule_validation` rewrites (the neutral
    one a fit hands it, :mod:`mm_lightning.runtime.trainer_settings`), so a later fit finds that setting."""
    trainer.check_val_every_n_epoch = TRAINER_SETTINGS['check_val_every_n_epoch']


def check_epoch_length(trainer: pl.Trainer, batches: int) -> None:
    """Refuse an epoch longer than Lightning's: it fixes the epoch length (``num_training_batches``) when
    fitting starts. A hook that gives mmengine's loop a new ``dataloader`` (mmyolo's ``YOLOXModeSwitchHook``)
    is followed exactly when the new loader has no more batches per epoch."""
    if batches > trainer.num_training_batches:
        raise ConfigError(f'train_dataloader: a hook gave runner.train_loop a dataloader of {batches} batches per '
                          f'epoch; Lightning fixed the epoch at {trainer.num_training_batches} batches when '
                          'fitting started, so the rest of the epoch cannot be trained')


def drop_loop_state(checkpoint: Dict[str, Any]) -> None:
    """Keep Lightning from restoring its own loop positions from a checkpoint (see module doc)."""
    checkpoint.pop('loops', None)
