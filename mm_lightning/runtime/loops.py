"""mmengine's loops, for a run that Lightning's loops drive.

The training loop is the object mmengine's Runner builds from ``train_cfg``
(``EpochBasedTrainLoop``, ``IterBasedTrainLoop`` or the config's subclass), built the same
way (:func:`build_train_loop`), so ``runner.train_loop`` is what mmengine code expects.
Lightning's fit loop iterates; :class:`TrainProgress` is the driver beside that loop
object: it advances the loop's counters where mmengine's ``run_epoch``/``run_iter`` do,
applies mmengine's validation rule and carries what a resumed run needs (a validation
that was due, Lightning's optimizer steps) as checkpoint state. A loop that overrides how
training iterates (``run``, ``run_epoch``, ``run_iter``) cannot run on Lightning's fit loop
and is refused by name when training starts (it is built and inspectable before that).

Validation and test loops are mmengine's own loop objects (``ValLoop``, ``TestLoop`` or a
config's custom ``LOOPS`` type), built as mmengine's Runner builds them: with the runner,
the loader and the evaluator *config*, which the loop builds through
``runner.build_evaluator``. Lightning's evaluation loop calls the loop's ``run_iter`` for
each batch, so a custom ``run_iter`` (and the iteration hooks it calls) is the loop's own.
A loop that overrides ``run`` (mmdet's ``TeacherStudentValLoop``, mmagic's ``MultiValLoop``)
runs its ``run`` as one step of Lightning's evaluation, where validation or test is due.
"""
from __future__ import annotations

import bisect
import contextlib
import copy
import inspect
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type

from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.utils import calc_dynamic_intervals

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import unexpected_arguments
from mm_lightning.ground.internals import set_loop_position

__all__ = ['TRAIN_LOOP_BASES', 'TRAIN_LOOP_DRIVERS', 'EVAL_LOOPS', 'EVAL_LOSSES', 'loop_class', 'train_loop_kind',
           'parse_train_cfg', 'VALIDATION_SETTINGS', 'validation_settings', 'check_drivable', 'build_train_loop',
           'ValidationRule', 'TrainProgress', 'parse_eval_cfg', 'build_eval_loop', 'eval_loop_class', 'runs_itself']

#: mmengine's training loops (class -> by_epoch): Lightning drives these and subclasses that iterate as they do.
TRAIN_LOOP_BASES = {EpochBasedTrainLoop: True, IterBasedTrainLoop: False}
#: Methods whose override changes how a training loop iterates (Lightning iterates instead).
TRAIN_LOOP_DRIVERS = ('run', 'run_epoch', 'run_iter')
#: mmengine's evaluation loop for ``val_cfg``/``test_cfg`` without ``type``.
EVAL_LOOPS = {'val': ValLoop, 'test': TestLoop}
#: The attribute where each evaluation loop accumulates the losses its ``val_step``/``test_step`` return.
EVAL_LOSSES = {'val': 'val_loss', 'test': 'test_loss'}
#: What mmengine's Runner gives each loop's constructor itself (``by_epoch`` picks the training loop's class):
#: a config's other keys must be the loop's arguments, or its constructor's ``TypeError`` refuses them.
_RUNNER_GIVES = {'train': ('runner', 'dataloader', 'by_epoch'), 'val': ('runner', 'dataloader', 'evaluator'),
                 'test': ('runner', 'dataloader', 'evaluator')}


# -- the training loop ---------------------------------------------------------------------------
def loop_class(loop_type: Any, key: str) -> type:
    """The class a ``type`` names, looked up in ``LOOPS`` in the current scope (a class as given)."""
    if inspect.isclass(loop_type):
        return loop_type
    with LOOPS.switch_scope_and_registry(None) as loops:
        cls = loops.get(loop_type)
    if cls is None:
        raise config_error(f'{key}: {loop_type!r} is not in the LOOPS registry; register it or import its module '
                           'through custom_imports', KeyError)
    return cls


def train_loop_kind(train_cfg: Any) -> Optional[bool]:
    """``by_epoch`` of the loop ``train_cfg`` describes (a config or a built loop); ``None`` when it is
    neither mmengine training loop (a custom ``BaseLoop``: refused when training starts)."""
    if isinstance(train_cfg, BaseLoop):
        cls: type = type(train_cfg)
    elif isinstance(train_cfg, Mapping) and 'type' in train_cfg:
        cls = loop_class(train_cfg['type'], 'train_cfg.type')
    elif isinstance(train_cfg, Mapping) and 'by_epoch' in train_cfg:
        return bool(train_cfg['by_epoch'])
    else:
        return None
    return next((by_epoch for base, by_epoch in TRAIN_LOOP_BASES.items() if issubclass(cls, base)), None)


def parse_train_cfg(train_cfg: Mapping[str, Any]) -> dict:
    """``train_cfg`` as ``by_epoch`` plus the loop's settings, for reading a schedule without building it.

    Raises for what mmengine's loop constructors refuse, and for loops Lightning cannot drive.
    """
    if not isinstance(train_cfg, Mapping):
        raise config_error(f'train_cfg: train_loop should be a Loop object or dict, but got {train_cfg!r}', TypeError)
    cfg = dict(train_cfg)
    if 'type' in cfg and 'by_epoch' in cfg:
        raise config_error('train_cfg: Only one of `type` or `by_epoch` can exist in `loop_cfg`.', RuntimeError)
    if 'type' in cfg:
        cls = loop_class(cfg.pop('type'), 'train_cfg.type')
        check_drivable(cls)
        by_epoch = train_loop_kind(train_cfg)
    else:
        if 'by_epoch' not in cfg:
            raise config_error('train_cfg: set `by_epoch` (True or False) or `type`', KeyError)
        by_epoch = bool(cfg.pop('by_epoch'))
        cls = EpochBasedTrainLoop if by_epoch else IterBasedTrainLoop
    unexpected_arguments(cfg, cls, 'train_cfg', _RUNNER_GIVES['train'])
    length_key = 'max_epochs' if by_epoch else 'max_iters'
    if length_key not in cfg:
        raise config_error(f'train_cfg: `{length_key}` is required when by_epoch={by_epoch}', TypeError)
    length = cfg[length_key]
    if int(length) != length or length < 0:
        raise config_error(f'train_cfg.{length_key}: expected a non-negative integer, got {length!r}',
                           AssertionError)
    cfg[length_key] = int(length)
    cfg['by_epoch'] = by_epoch
    return cfg


def check_drivable(cls: type) -> None:
    """Refuse, by name, a training loop class whose iteration Lightning's fit loop cannot stand in for."""
    base = next((base for base in TRAIN_LOOP_BASES if issubclass(cls, base)), None)
    if base is None:
        raise config_error(f'train_cfg.type: {cls.__name__} is not an EpochBasedTrainLoop or IterBasedTrainLoop; '
                           "its run() would drive training, which Lightning's fit loop does here", TypeError)
    for method in TRAIN_LOOP_DRIVERS:
        if getattr(cls, method, None) is not getattr(base, method, None):
            raise config_error(f'train_cfg.type: {cls.__name__} overrides {base.__name__}.{method}(); Lightning\'s '
                               f'fit loop iterates here, so a custom {method} cannot run. Move its per-iteration '
                               "work into a hook or the model's train_step", TypeError)


def build_train_loop(train_cfg: Any, runner: Any, dataloader: Any) -> BaseLoop:
    """mmengine's ``Runner.build_train_loop``: a built loop as it is, ``type`` from ``LOOPS``, else ``by_epoch``."""
    if isinstance(train_cfg, BaseLoop):
        return train_cfg
    if not isinstance(train_cfg, Mapping):
        raise config_error(f'train_cfg: train_loop should be a Loop object or dict, but got {train_cfg!r}', TypeError)
    cfg = copy.deepcopy(dict(train_cfg))
    if 'type' in cfg and 'by_epoch' in cfg:
        raise config_error('train_cfg: Only one of `type` or `by_epoch` can exist in `loop_cfg`.', RuntimeError)
    if isinstance(cfg.get('dynamic_intervals'), (list, tuple)):  # pairs from a JSON/YAML config are lists
        cfg['dynamic_intervals'] = [tuple(pair) if isinstance(pair, list) else pair
                                    for pair in cfg['dynamic_intervals']]
    try:
        if 'type' in cfg:
            cfg['type'] = loop_class(cfg['type'], 'train_cfg.type')
            unexpected_arguments(cfg, cfg['type'], 'train_cfg', _RUNNER_GIVES['train'])
            return LOOPS.build(cfg, default_args=dict(runner=runner, dataloader=dataloader))
        if 'by_epoch' not in cfg:
            raise config_error('train_cfg: set `by_epoch` (True or False) or `type`', KeyError)
        cls = EpochBasedTrainLoop if cfg.pop('by_epoch') else IterBasedTrainLoop
        unexpected_arguments(cfg, cls, 'train_cfg', _RUNNER_GIVES['train'])  # mmengine's TypeError, with the names
        return cls(**cfg, runner=runner, dataloader=dataloader)
    except (TypeError, AssertionError) as err:
        if isinstance(err, ConfigError):
            raise
        raise config_error(f'train_cfg: {err or type(err).__name__}', type(err)) from err


#: The settings of a training loop that decide when it validates.
VALIDATION_SETTINGS = ('val_begin', 'val_interval', 'dynamic_intervals')


def validation_settings(train_cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``val_begin``, ``val_interval`` and ``dynamic_intervals`` as the loop built from ``train_cfg`` holds them:
    the config's, else the defaults of the class mmengine builds (a subclass's own where it sets them)."""
    parsed = parse_train_cfg(train_cfg)
    if 'type' in train_cfg:
        cls = loop_class(train_cfg['type'], 'train_cfg.type')
    else:
        cls = EpochBasedTrainLoop if parsed['by_epoch'] else IterBasedTrainLoop
    return {name: parsed[name] if name in parsed else _default(cls, name) for name in VALIDATION_SETTINGS}


def _default(cls: type, name: str) -> Any:
    """The first default of ``name`` along ``cls``'s constructors (one taking ``**kwargs`` passes it on)."""
    for klass in cls.__mro__:
        parameter = inspect.signature(vars(klass).get('__init__', object.__init__)).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


@dataclass(frozen=True)
class ValidationRule:
    """mmengine's rule for when training validates: from ``val_begin``, every ``val_interval``
    (changed at ``dynamic_intervals`` milestones), and always after the last epoch or iteration."""

    val_begin: int
    milestones: Sequence[int]
    intervals: Sequence[int]

    @classmethod
    def of(cls, val_begin: int, val_interval: int,
           dynamic_intervals: Optional[List[Tuple[int, int]]] = None) -> 'ValidationRule':
        try:
            milestones, intervals = calc_dynamic_intervals(
                val_interval, [tuple(item) for item in dynamic_intervals] if dynamic_intervals else None)
        except AssertionError as err:
            raise config_error('train_cfg.dynamic_intervals: expected a list of (milestone, interval) pairs, '
                               f'got {dynamic_intervals!r}', AssertionError) from err
        return cls(val_begin, milestones, intervals)

    def interval_at(self, progress: int) -> int:
        """The interval mmengine's ``_decide_current_val_interval`` picks after ``progress`` epochs/iterations."""
        return self.intervals[bisect.bisect(self.milestones, progress + 1) - 1]

    def due(self, progress: int, last: int) -> bool:
        return progress >= self.val_begin and (progress % self.interval_at(progress) == 0 or progress == last)

    def points(self, last: int) -> List[int]:
        """Every epoch (or iteration) after which an uninterrupted run validates, counted from 1."""
        return [progress for progress in range(1, last + 1) if self.due(progress, last)]


class TrainProgress:
    """Lightning's driver of an mmengine training loop object, and the run's position in it.

    ``loop`` is ``runner.train_loop``. Its ``_epoch``/``_iter`` are the run's counters; this is
    the one place that advances them, where mmengine's ``run_epoch``/``run_iter`` do: after
    ``after_train_epoch`` and ``after_train_iter`` (the hook bridge calls :meth:`epoch_done`
    and :meth:`iteration_done`). ``validation_pending`` is set when validation became due
    and cleared when it ran, so a run resumed in between validates first, as the
    uninterrupted run did.
    """

    def __init__(self, loop: BaseLoop, has_validation: bool) -> None:
        self.loop = loop
        self.by_epoch = not isinstance(loop, IterBasedTrainLoop)
        self.has_validation = has_validation
        self.validation_pending = False
        self.optimizer_steps = 0
        #: The hooks running now: 'iteration' (after_train_iter) or 'epoch' (after_train_epoch), which
        #: run before the counters advance; None between them (validation included).
        self.ending: Optional[str] = None

    @contextlib.contextmanager
    def ending_hooks(self, unit: str) -> Iterator[None]:
        """Mark the ``after_train_iter`` (``unit='iteration'``) or ``after_train_epoch`` hooks as running."""
        self.ending = unit
        try:
            yield
        finally:
            self.ending = None

    @property
    def epoch(self) -> int:
        return self.loop.epoch

    @property
    def iter(self) -> int:
        return self.loop.iter

    @property
    def max_epochs(self) -> int:
        return self.loop.max_epochs

    @property
    def max_iters(self) -> int:
        return self.loop.max_iters

    @property
    def stop_training(self) -> bool:
        """Set on the loop by mmengine's ``EarlyStoppingHook``."""
        return self.loop.stop_training

    def iteration_done(self) -> None:
        set_loop_position(self.loop, iteration=self.loop.iter + 1)

    def epoch_done(self) -> None:
        set_loop_position(self.loop, epoch=self.loop.epoch + 1)

    @property
    def finished(self) -> bool:
        """Whether mmengine's loop would leave its while-loop now."""
        if self.stop_training:
            return True
        return self.epoch >= self.max_epochs if self.by_epoch else self.iter >= self.max_iters

    @property
    def rule(self) -> ValidationRule:
        loop = self.loop
        return ValidationRule(loop.val_begin, loop.dynamic_milestones, loop.dynamic_intervals)

    def _last(self) -> int:
        return self.max_epochs if self.by_epoch else self.max_iters

    def validation_due(self) -> bool:
        """mmengine's rule, evaluated after an epoch (by_epoch) or an iteration.

        Like mmengine's ``_decide_current_val_interval``, it updates the loop's ``val_interval``.
        """
        progress = self.epoch if self.by_epoch else self.iter
        rule = self.rule
        self.loop.val_interval = rule.interval_at(progress)
        return self.has_validation and rule.due(progress, self._last())

    # -- state (saved in both checkpoint formats) --------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return dict(epoch=self.epoch, iter=self.iter, stop_training=self.loop.stop_training,
                    validation_pending=self.validation_pending, optimizer_steps=self.optimizer_steps,
                    max_epochs=self.max_epochs, max_iters=self.max_iters)

    def snapshot(self) -> Dict[str, Any]:
        """The state to continue from, now: a file written at this moment must describe it.

        Inside ``after_train_iter``/``after_train_epoch`` (where ``CheckpointHook`` saves on an
        interval) the counters have not advanced yet: the run continues from the point after
        that iteration or epoch. Anywhere else (``after_val_epoch``, where a new best is saved,
        or between iterations) the state is as it stands.
        """
        state = self.state_dict()
        due = self.rule.due
        if self.ending == 'iteration':
            state['iter'] += 1
            state['validation_pending'] = not self.by_epoch and self.has_validation and due(state['iter'],
                                                                                            self._last())
        elif self.ending == 'epoch':
            state['epoch'] += 1
            state['validation_pending'] = self.has_validation and due(state['epoch'], self._last())
        return state

    def state_from_meta(self, epoch: int, iteration: int) -> Dict[str, Any]:
        """The state of an mmengine-written checkpoint, which has only ``meta``'s counters.

        mmengine saves before a due validation runs; it is pending here too.
        """
        within_epoch = self.by_epoch and iteration != epoch * len(self.loop.dataloader)
        progress = epoch if self.by_epoch else iteration
        pending = not within_epoch and self.has_validation and self.rule.due(progress, self._last())
        return dict(epoch=epoch, iter=iteration, validation_pending=pending, optimizer_steps=iteration)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore progress; lengths and cadence stay the config's (a resumed run may train longer)."""
        set_loop_position(self.loop, epoch=int(state['epoch']), iteration=int(state['iter']))
        self.loop.stop_training = bool(state.get('stop_training', False))
        self.validation_pending = bool(state.get('validation_pending', False))
        self.optimizer_steps = int(state.get('optimizer_steps', state['iter']))
        length_key = 'max_epochs' if self.by_epoch else 'max_iters'
        if self.validation_pending and state.get(length_key, self._last()) != self._last():
            # a run given another length: the validation due at the old end is due only by the config's rule
            self.validation_pending = self.rule.due(self.epoch if self.by_epoch else self.iter, self._last())


# -- evaluation loops -------------------------------------------------------------------------------
def parse_eval_cfg(eval_cfg: Mapping[str, Any], key: str) -> dict:
    """Normalise ``val_cfg``/``test_cfg``: ``type`` (the loop class) and its keyword arguments."""
    if not isinstance(eval_cfg, Mapping):
        raise config_error(f'{key}: {key[:-4]}_loop should be a Loop object or dict, but got {eval_cfg!r}', TypeError)
    cfg = dict(eval_cfg)
    mode = 'val' if key == 'val_cfg' else 'test'
    cfg['type'] = loop_class(cfg['type'], f'{key}.type') if 'type' in cfg else EVAL_LOOPS[mode]
    unexpected_arguments(cfg, cfg['type'], key, _RUNNER_GIVES[mode])  # mmengine's TypeError when it builds it
    return cfg


def build_eval_loop(mode: str, loop_cfg: Any, runner: Any, dataloader: Any, evaluator: Any) -> BaseLoop:
    """mmengine's ``build_val_loop``/``build_test_loop``: the loop over ``dataloader`` with ``evaluator``.

    ``evaluator`` is what the config gives (a dict, a list or a built ``Evaluator``); the loop
    builds it through ``runner.build_evaluator``, as under mmengine. A built loop is kept.
    """
    if isinstance(loop_cfg, BaseLoop):
        return loop_cfg
    key = f'{mode}_cfg'
    kwargs = parse_eval_cfg(loop_cfg, key)
    cls = kwargs.pop('type')
    try:
        return cls(runner=runner, dataloader=dataloader, evaluator=evaluator, **copy.deepcopy(kwargs))
    except TypeError as err:
        if isinstance(err, ConfigError):
            raise
        raise config_error(f'{key}: {cls.__name__}: {err}', TypeError) from err


def eval_loop_class(mode: str, loop_cfg: Any) -> type:
    """The class of the evaluation loop ``loop_cfg`` describes (or is), without building it."""
    if isinstance(loop_cfg, BaseLoop):
        return type(loop_cfg)
    return parse_eval_cfg(loop_cfg, f'{mode}_cfg')['type']


def runs_itself(loop: Any, mode: str) -> bool:
    """Whether an evaluation loop (or loop class)'s own ``run`` must run: it does more than iterate one
    loader once (and builds the loaders it is given, as mmagic's loops do)."""
    cls: Type[BaseLoop] = loop if inspect.isclass(loop) else type(loop)
    base = EVAL_LOOPS[mode]
    return not issubclass(cls, base) or cls.run is not base.run
