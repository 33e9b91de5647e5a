"""mmengine's loop settings and state, for a run that Lightning's loops drive.

``train_cfg``/``val_cfg``/``test_cfg`` are parsed here. The loop objects expose what
mmengine hooks read from ``runner.train_loop`` (dataloader, lengths, counters,
``stop_training``) and decide, with mmengine's rules, when validation is due.
Nothing here iterates: Lightning's fit/evaluation loops do.
"""
from __future__ import annotations

import bisect
import logging
from typing import Any, List, Mapping, Optional, Tuple

import lightning.pytorch as pl
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.runner.utils import calc_dynamic_intervals
from torch.utils.data import DataLoader

from .config import ConfigError
from .registry import type_name

#: Loop types mmengine configs may name; anything else runs its own iteration.
TRAIN_LOOP_TYPES = {'EpochBasedTrainLoop': True, 'IterBasedTrainLoop': False}
VAL_LOOP_TYPES = ('ValLoop',)
TEST_LOOP_TYPES = ('TestLoop',)

_EPOCH_KEYS = ('max_epochs', 'val_begin', 'val_interval', 'dynamic_intervals')
_ITER_KEYS = ('max_iters', 'val_begin', 'val_interval', 'dynamic_intervals')
_EVAL_KEYS = ('fp16',)


def parse_train_cfg(train_cfg: Mapping[str, Any]) -> dict:
    """Normalise ``train_cfg`` to ``by_epoch`` plus the loop's keyword arguments."""
    if not isinstance(train_cfg, Mapping):
        raise ConfigError(f'train_cfg: expected a dict, got {train_cfg!r}')
    cfg = dict(train_cfg)
    if 'type' in cfg and 'by_epoch' in cfg:
        raise ConfigError('train_cfg: only one of `type` or `by_epoch` can be set')
    if 'type' in cfg:
        loop_type = cfg.pop('type')
        name = type_name(loop_type)
        if name not in TRAIN_LOOP_TYPES:
            raise ConfigError(
                f'train_cfg.type: {name!r} is a custom training loop; mm_lightning runs training with '
                "Lightning's loop and supports the behaviour of EpochBasedTrainLoop (by_epoch=True) and "
                'IterBasedTrainLoop (by_epoch=False). Move per-iteration logic into a hook or the '
                "model's train_step.")
        by_epoch = TRAIN_LOOP_TYPES[name]
    else:
        if 'by_epoch' not in cfg:
            raise ConfigError('train_cfg: set `by_epoch` (True or False) or `type`')
        by_epoch = bool(cfg.pop('by_epoch'))
    allowed = _EPOCH_KEYS if by_epoch else _ITER_KEYS
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f'train_cfg: unsupported keys {unknown} for by_epoch={by_epoch}; '
                          f'supported keys are {list(allowed)}')
    length_key = 'max_epochs' if by_epoch else 'max_iters'
    if length_key not in cfg:
        raise ConfigError(f'train_cfg: `{length_key}` is required when by_epoch={by_epoch}')
    length = cfg[length_key]
    if int(length) != length or length < 0:
        raise ConfigError(f'train_cfg.{length_key}: expected a non-negative integer, got {length!r}')
    cfg[length_key] = int(length)
    cfg['by_epoch'] = by_epoch
    return cfg


def parse_eval_cfg(eval_cfg: Mapping[str, Any], key: str) -> dict:
    """Normalise ``val_cfg``/``test_cfg``; custom loop types are refused."""
    if not isinstance(eval_cfg, Mapping):
        raise ConfigError(f'{key}: expected a dict, got {eval_cfg!r}')
    cfg = dict(eval_cfg)
    allowed_types = VAL_LOOP_TYPES if key == 'val_cfg' else TEST_LOOP_TYPES
    if 'type' in cfg:
        loop_type = cfg.pop('type')
        name = type_name(loop_type)
        if name not in allowed_types:
            raise ConfigError(f'{key}.type: {name!r} is a custom loop; mm_lightning runs evaluation with '
                              f"Lightning's loop and supports {allowed_types[0]} only.")
    unknown = sorted(set(cfg) - set(_EVAL_KEYS))
    if unknown:
        raise ConfigError(f'{key}: unsupported keys {unknown}; supported keys are {list(_EVAL_KEYS)}')
    return cfg


def _warn_no_metainfo(dataloader: DataLoader, what: str) -> None:
    print_log(f'Dataset {dataloader.dataset.__class__.__name__} has no metainfo. '
              f'``dataset_meta`` in {what} will be None.', logger='current', level=logging.WARNING)


class TrainLoop:
    """The state of mmengine's EpochBasedTrainLoop / IterBasedTrainLoop.

    ``epoch`` and ``iter`` advance where mmengine's do: after ``after_train_epoch`` and
    ``after_train_iter`` (the hook bridge calls :meth:`iteration_done`/:meth:`epoch_done`).
    """

    def __init__(self, runner: Any, dataloader: DataLoader, *, by_epoch: bool,
                 max_epochs: Optional[int] = None, max_iters: Optional[int] = None,
                 val_begin: int = 1, val_interval: Optional[int] = None,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self.by_epoch = by_epoch
        if by_epoch:
            self._max_epochs = int(max_epochs)  # type: ignore[arg-type]
            self._max_iters = self._max_epochs * len(dataloader)
            val_interval = 1 if val_interval is None else val_interval
        else:
            self._max_epochs = 1
            self._max_iters = int(max_iters)  # type: ignore[arg-type]
            val_interval = 1000 if val_interval is None else val_interval
        self._epoch = 0
        self._iter = 0
        self.val_begin = val_begin
        self.val_interval = val_interval
        self.stop_training = False
        try:
            self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
                val_interval, [tuple(item) for item in dynamic_intervals] if dynamic_intervals else None)
        except AssertionError as err:
            raise ConfigError('train_cfg.dynamic_intervals: expected a list of (milestone, interval) '
                              f'pairs, got {dynamic_intervals!r}') from err
        if hasattr(dataloader.dataset, 'metainfo'):
            runner.visualizer.dataset_meta = dataloader.dataset.metainfo
        else:
            _warn_no_metainfo(dataloader, 'visualizer')

    @property
    def max_epochs(self) -> int:
        return self._max_epochs

    @property
    def max_iters(self) -> int:
        return self._max_iters

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def iter(self) -> int:
        return self._iter

    def iteration_done(self) -> None:
        self._iter += 1

    def epoch_done(self) -> None:
        self._epoch += 1

    @property
    def finished(self) -> bool:
        """Whether mmengine's loop would leave its while-loop now."""
        if self.stop_training:
            return True
        return self._epoch >= self._max_epochs if self.by_epoch else self._iter >= self._max_iters

    def validation_due(self) -> bool:
        """mmengine's rule, evaluated after an epoch (by_epoch) or an iteration."""
        if self.runner.val_loop is None:
            return False
        progress = self._epoch if self.by_epoch else self._iter
        last = self._max_epochs if self.by_epoch else self._max_iters
        step = bisect.bisect(self.dynamic_milestones, progress + 1)
        self.val_interval = self.dynamic_intervals[step - 1]
        return progress >= self.val_begin and (progress % self.val_interval == 0 or progress == last)

    def resume_from(self, epoch: int, iteration: int) -> None:
        self._epoch = int(epoch)
        self._iter = int(iteration)


class EvalLoop:
    """The state of mmengine's ValLoop / TestLoop: dataloader, evaluator and ``fp16``."""

    def __init__(self, runner: Any, dataloader: DataLoader, evaluator: Evaluator, fp16: bool = False) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self.evaluator = evaluator
        self.fp16 = fp16
        if hasattr(dataloader.dataset, 'metainfo'):
            evaluator.dataset_meta = dataloader.dataset.metainfo
            runner.visualizer.dataset_meta = dataloader.dataset.metainfo
        else:
            _warn_no_metainfo(dataloader, 'evaluator, metric and visualizer')


def schedule_validation(trainer: pl.Trainer, due: bool) -> None:
    """Make Lightning validate after the current training batch exactly when ``due``.

    Lightning decides in its epoch loop, after ``on_train_batch_end``: it validates when
    ``(current_epoch + 1) % check_val_every_n_epoch == 0`` and the batch matches
    ``val_check_batch``. With ``val_check_batch=1`` the epoch test alone decides, so
    ``1`` means "this batch" and ``current_epoch + 2`` means "not in this epoch".
    """
    trainer.val_check_batch = 1
    trainer.check_val_every_n_epoch = 1 if due else trainer.current_epoch + 2


def start_fit_at_epoch(trainer: pl.Trainer, epoch: int) -> None:
    """Start Lightning's fit loop at ``epoch``, the first one mmengine runs after resuming."""
    for progress in (trainer.fit_loop.epoch_progress.current, trainer.fit_loop.epoch_progress.total):
        progress.ready = progress.started = progress.processed = progress.completed = epoch
