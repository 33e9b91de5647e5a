"""mmengine's loops, for a run that Lightning's loops drive.

``train_cfg``/``val_cfg``/``test_cfg`` are parsed here. :class:`TrainLoop` is what mmengine
hooks read from ``runner.train_loop`` (dataloader, lengths, counters, ``stop_training``); it
decides, with mmengine's rules, when validation is due, and its progress is state that
both checkpoint formats carry (``state_dict``/``load_state_dict``). Lightning's fit loop
iterates; custom training loops that change how it iterates are refused by name.

Validation and test loops are mmengine's own loop objects (``ValLoop``, ``TestLoop`` or a
config's custom ``LOOPS`` type), built with the runner view, the loader Lightning iterates
and the run's evaluator. Lightning's evaluation loop calls the loop's ``run_iter`` for each
batch, so a custom ``run_iter`` (and the iteration hooks it calls) is the loop's own. A loop
that overrides ``run`` (mmdet's ``TeacherStudentValLoop`` validates twice) runs its ``run``
as one step of Lightning's evaluation, at the point where validation or test is due.
"""
from __future__ import annotations

import bisect
import inspect
import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.utils import calc_dynamic_intervals
from torch.utils.data import DataLoader

from .config import ConfigError

#: mmengine's training loops: a ``train_cfg.type`` must be one of them or a subclass that iterates as they do.
TRAIN_LOOP_BASES = {EpochBasedTrainLoop: True, IterBasedTrainLoop: False}
#: Methods whose override changes how a training loop iterates (Lightning iterates instead).
TRAIN_LOOP_DRIVERS = ('run', 'run_epoch', 'run_iter')
#: mmengine's evaluation loop for ``val_cfg``/``test_cfg`` without ``type``.
EVAL_LOOPS = {'val': ValLoop, 'test': TestLoop}
#: The attribute where each evaluation loop accumulates the losses its ``val_step``/``test_step`` return.
EVAL_LOSSES = {'val': 'val_loss', 'test': 'test_loss'}
_EPOCH_KEYS = ('max_epochs', 'val_begin', 'val_interval', 'dynamic_intervals')
_ITER_KEYS = ('max_iters', 'val_begin', 'val_interval', 'dynamic_intervals')


def parse_train_cfg(train_cfg: Mapping[str, Any]) -> dict:
    """Normalise ``train_cfg`` to ``by_epoch`` plus the loop's keyword arguments."""
    if not isinstance(train_cfg, Mapping):
        raise ConfigError(f'train_cfg: expected a dict, got {train_cfg!r}')
    cfg = dict(train_cfg)
    if 'type' in cfg and 'by_epoch' in cfg:
        raise ConfigError('train_cfg: only one of `type` or `by_epoch` can be set')
    if 'type' in cfg:
        by_epoch = _train_loop_kind(cfg.pop('type'))
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


def _loop_class(loop_type: Any, key: str) -> type:
    if inspect.isclass(loop_type):
        return loop_type
    with LOOPS.switch_scope_and_registry(None) as loops:
        cls = loops.get(loop_type)
    if cls is None:
        raise ConfigError(f'{key}: {loop_type!r} is not in the LOOPS registry; register it or import its module '
                          'through custom_imports')
    return cls


def _train_loop_kind(loop_type: Any) -> bool:
    """``by_epoch`` of a ``train_cfg.type``; loops that iterate differently are refused by name."""
    cls = _loop_class(loop_type, 'train_cfg.type')
    base = next((base for base in TRAIN_LOOP_BASES if issubclass(cls, base)), None)
    if base is None:
        raise ConfigError(f'train_cfg.type: {cls.__name__} is not an EpochBasedTrainLoop or IterBasedTrainLoop; '
                          f'its run() would drive training, which Lightning\'s fit loop does here')
    for method in TRAIN_LOOP_DRIVERS:
        if getattr(cls, method, None) is not getattr(base, method, None):
            raise ConfigError(f'train_cfg.type: {cls.__name__} overrides {base.__name__}.{method}(); Lightning\'s '
                              f'fit loop iterates here, so a custom {method} cannot run. Move its per-iteration '
                              "work into a hook or the model's train_step")
    return TRAIN_LOOP_BASES[base]


def parse_eval_cfg(eval_cfg: Mapping[str, Any], key: str) -> dict:
    """Normalise ``val_cfg``/``test_cfg``: ``type`` (the loop class) and its keyword arguments."""
    if not isinstance(eval_cfg, Mapping):
        raise ConfigError(f'{key}: expected a dict, got {eval_cfg!r}')
    cfg = dict(eval_cfg)
    mode = 'val' if key == 'val_cfg' else 'test'
    cfg['type'] = _loop_class(cfg['type'], f'{key}.type') if 'type' in cfg else EVAL_LOOPS[mode]
    parameters = inspect.signature(cfg['type']).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(cfg) - set(parameters) - {'type'})
        if unknown:
            raise ConfigError(f'{key}: unsupported keys {unknown} for {cfg["type"].__name__}')
    return cfg


def build_eval_loop(mode: str, loop_cfg: Mapping[str, Any], runner: Any, dataloader: DataLoader,
                    evaluator: Any) -> BaseLoop:
    """mmengine's ValLoop/TestLoop (or the config's loop type) over ``dataloader`` with ``evaluator``.

    ``evaluator`` is a config or built metrics: the loop builds it through ``runner.build_evaluator``.
    """
    key = f'{mode}_cfg'
    kwargs = parse_eval_cfg(loop_cfg, key)
    cls = kwargs.pop('type')
    try:
        return cls(runner=runner, dataloader=dataloader, evaluator=evaluator, **kwargs)
    except TypeError as err:
        raise ConfigError(f'{key}: {cls.__name__}: {err}') from err


def runs_itself(loop: BaseLoop, mode: str) -> bool:
    """Whether an evaluation loop's own ``run`` must run (it does more than iterate once)."""
    base = EVAL_LOOPS[mode]
    return not isinstance(loop, base) or type(loop).run is not base.run


def train_iterations(train_cfg: Any) -> Optional[int]:
    """``max_iters`` of an iteration-based ``train_cfg``; ``None`` for epoch-based or no training."""
    if train_cfg is None:
        return None
    parsed = parse_train_cfg(train_cfg)
    return None if parsed['by_epoch'] else parsed['max_iters']


def _dataset_meta(dataloader: DataLoader, what: str) -> Optional[dict]:
    if hasattr(dataloader.dataset, 'metainfo'):
        return dataloader.dataset.metainfo
    print_log(f'Dataset {dataloader.dataset.__class__.__name__} has no metainfo. '
              f'``dataset_meta`` in {what} will be None.', logger='current', level=logging.WARNING)
    return None


class TrainLoop:
    """mmengine's EpochBasedTrainLoop / IterBasedTrainLoop: settings, progress and state.

    ``epoch`` and ``iter`` advance where mmengine's do: after ``after_train_epoch`` and
    ``after_train_iter`` (the hook bridge calls :meth:`iteration_done`/:meth:`epoch_done`).
    ``validation_pending`` is set when validation became due and cleared when it ran, so
    a run resumed in between validates first, as the uninterrupted run did.
    """

    def __init__(self, *, by_epoch: bool, max_epochs: Optional[int] = None, max_iters: Optional[int] = None,
                 val_begin: int = 1, val_interval: Optional[int] = None,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None) -> None:
        self.by_epoch = by_epoch
        self._max_epochs = int(max_epochs) if by_epoch else 1  # type: ignore[arg-type]
        self._max_iters = None if by_epoch else int(max_iters)  # type: ignore[arg-type]
        self.val_begin = val_begin
        self.val_interval = val_interval if val_interval is not None else (1 if by_epoch else 1000)
        try:
            self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
                self.val_interval, [tuple(item) for item in dynamic_intervals] if dynamic_intervals else None)
        except AssertionError as err:
            raise ConfigError('train_cfg.dynamic_intervals: expected a list of (milestone, interval) '
                              f'pairs, got {dynamic_intervals!r}') from err
        self.dataloader: Optional[DataLoader] = None
        self.has_validation = False
        self._epoch = 0
        self._iter = 0
        self.stop_training = False
        self.validation_pending = False
        self.optimizer_steps = 0

    def bind(self, dataloader: DataLoader, has_validation: bool, visualizer: Any) -> None:
        """Attach the training loader the run iterates (mmengine's loop builds it in ``__init__``)."""
        if dataloader is not self.dataloader:
            self.dataloader = dataloader
            visualizer.dataset_meta = _dataset_meta(dataloader, 'visualizer')
        self.has_validation = has_validation

    @property
    def max_epochs(self) -> int:
        return self._max_epochs

    @property
    def max_iters(self) -> int:
        if self._max_iters is not None:
            return self._max_iters
        if self.dataloader is None:
            raise RuntimeError('max_iters of an epoch-based loop needs its dataloader')
        return self._max_epochs * len(self.dataloader)

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
        return self._epoch >= self._max_epochs if self.by_epoch else self._iter >= self.max_iters

    def validation_due(self) -> bool:
        """mmengine's rule, evaluated after an epoch (by_epoch) or an iteration.

        Like mmengine's ``_decide_current_val_interval``, it updates ``val_interval``.
        """
        progress = self._epoch if self.by_epoch else self._iter
        self.val_interval = self._interval_at(progress)
        return self._validation_due(progress)

    def validation_points(self) -> List[int]:
        """Every epoch (or iteration) after which an uninterrupted run validates, counted from 1."""
        last = self._max_epochs if self.by_epoch else self.max_iters
        return [progress for progress in range(1, last + 1) if self._validation_due(progress, always=True)]

    def _interval_at(self, progress: int) -> int:
        return self.dynamic_intervals[bisect.bisect(self.dynamic_milestones, progress + 1) - 1]

    def _validation_due(self, progress: int, always: bool = False) -> bool:
        if not (self.has_validation or always):
            return False
        last = self._max_epochs if self.by_epoch else self.max_iters
        return progress >= self.val_begin and (progress % self._interval_at(progress) == 0 or progress == last)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return dict(epoch=self._epoch, iter=self._iter, stop_training=self.stop_training,
                    validation_pending=self.validation_pending, optimizer_steps=self.optimizer_steps,
                    max_epochs=self._max_epochs, max_iters=self._max_iters)

    def snapshot(self, *, after_iteration: bool = False, after_epoch: bool = False) -> Dict[str, Any]:
        """The state as it will be once the iteration (or epoch) whose hooks are running ends.

        ``CheckpointHook`` saves inside ``after_train_iter``/``after_train_epoch``, before the
        counters advance; the file must describe the point the run continues from.
        """
        state = self.state_dict()
        if after_iteration:
            state['iter'] += 1
            state['validation_pending'] = not self.by_epoch and self._validation_due(state['iter'])
        if after_epoch:
            state['epoch'] += 1
            state['validation_pending'] = self._validation_due(state['epoch'])
        return state

    def state_from_meta(self, epoch: int, iteration: int) -> Dict[str, Any]:
        """The state of an mmengine-written checkpoint, which has only ``meta``'s counters.

        mmengine saves before a due validation runs; it is pending here too.
        """
        within_epoch = self.by_epoch and iteration != epoch * len(self.dataloader)  # type: ignore[arg-type]
        pending = not within_epoch and self._validation_due(epoch if self.by_epoch else iteration)
        return dict(epoch=epoch, iter=iteration, validation_pending=pending, optimizer_steps=iteration)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore progress; lengths and cadence stay the config's (a resumed run may train longer)."""
        self._epoch = int(state['epoch'])
        self._iter = int(state['iter'])
        self.stop_training = bool(state.get('stop_training', False))
        self.validation_pending = bool(state.get('validation_pending', False))
        self.optimizer_steps = int(state.get('optimizer_steps', self._iter))
