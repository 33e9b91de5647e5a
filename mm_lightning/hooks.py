"""mmengine hooks, called by a Lightning callback at the points mmengine's loops call them.

``HookList`` keeps mmengine's priority order and, per stage, the hooks that override
it (mmengine's ``get_triggered_stages``), so an iteration dispatches only to hooks
that do something. ``HookBridge`` maps Lightning's callback events onto mmengine's
order of events (see the module docstring of :mod:`mm_lightning.loops`):

============================  ==============================================
Lightning                     mmengine
============================  ==============================================
setup                         before_run, init weights (before wrapping)
on_fit_start                  load/resume
on_train_start                before_train
on_train_epoch_start          before_train_epoch (once, iteration-based)
on_train_batch_start          before_train_iter
on_train_batch_end            after_train_iter; at an epoch's last batch
                              after_train_epoch, *then* validation
on_train_epoch_end            after_train_epoch (iteration-based only)
on_validation_start / _end    before_val, before_val_epoch /
                              after_val_epoch(metrics), after_val
on_train_end / on_fit_end     after_train / after_run
============================  ==============================================
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner.priority import Priority, get_priority

from .config import ConfigError
from .loops import schedule_validation
from .registry import build, names_subclass_of, resolve_type

#: mmengine's default hooks; a config's ``default_hooks`` entries replace (or, as None, remove) them.
DEFAULT_HOOKS: Dict[str, dict] = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    logger=dict(type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
)

HookSpec = Union[Hook, Mapping[str, Any]]


def merged_default_hooks(default_hooks: Optional[Mapping[str, Any]]) -> Dict[str, HookSpec]:
    """mmengine's defaults with the config's ``default_hooks`` merged in."""
    hooks: Dict[str, Any] = dict(DEFAULT_HOOKS)
    for name, hook in (default_hooks or {}).items():
        if hook is None:
            hooks.pop(name, None)
        else:
            hooks[name] = hook
    return hooks


def is_lightning_callback(entry: Any) -> bool:
    """A ``custom_hooks`` entry naming a Lightning ``Callback`` (instance, class or dotted name)."""
    return names_subclass_of(entry, Callback)


def split_custom_hooks(custom_hooks: Optional[Sequence[Any]]) -> Tuple[List[HookSpec], List[Any]]:
    """(mmengine hooks, Lightning callback entries) from ``custom_hooks``."""
    hooks, callbacks = [], []
    for entry in custom_hooks or []:
        (callbacks if is_lightning_callback(entry) else hooks).append(entry)
    return hooks, callbacks


def build_lightning_callbacks(custom_hooks: Optional[Sequence[Any]]) -> List[Callback]:
    """Instantiate the Lightning callbacks named in ``custom_hooks``; they go to the Trainer as is."""
    callbacks = []
    for index, entry in enumerate(split_custom_hooks(custom_hooks)[1]):
        if isinstance(entry, Callback):
            callbacks.append(entry)
            continue
        kwargs = dict(entry)
        if 'priority' in kwargs:
            raise ConfigError(f'custom_hooks: {entry["type"]!r} is a Lightning callback; `priority` orders '
                              'mmengine hooks only (Lightning callbacks run in their list order)')
        callbacks.append(resolve_type(kwargs.pop('type'))(**kwargs))
    return callbacks


class HookList:
    """mmengine hooks in priority order, with a per-stage dispatch table."""

    def __init__(self) -> None:
        self.hooks: List[Hook] = []
        self._stages: Optional[Dict[str, List[Callable[..., Any]]]] = None

    def register(self, hook: HookSpec, priority: Optional[Union[int, str, Priority]] = None,
                 key: str = 'custom_hooks') -> Hook:
        """Insert ``hook`` after hooks of the same or higher priority, as mmengine does."""
        if isinstance(hook, Mapping):
            hook = dict(copy.deepcopy(hook))
            hook_priority = hook.pop('priority', None)
            hook_obj = build(HOOKS, hook, key)
            if priority is None:
                priority = hook_priority
        elif isinstance(hook, Hook):
            hook_obj = hook
        else:
            raise ConfigError(f'{key}: expected an mmengine Hook or a config dict, got {hook!r}')
        if priority is not None:
            hook_obj.priority = priority
        try:
            rank = get_priority(hook_obj.priority)
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f'{key}: bad priority {hook_obj.priority!r}: {err}') from err
        index = len(self.hooks)
        while index > 0 and rank < get_priority(self.hooks[index - 1].priority):
            index -= 1
        self.hooks.insert(index, hook_obj)
        self._stages = None
        return hook_obj

    def stage(self, name: str) -> List[Callable[..., Any]]:
        if self._stages is None:
            self._stages = {stage: [] for stage in Hook.stages}
            for hook in self.hooks:
                for stage in hook.get_triggered_stages():
                    self._stages[stage].append(getattr(hook, stage))
        return self._stages[name]

    def call(self, runner: Any, fn_name: str, **kwargs: Any) -> None:
        methods = self.stage(fn_name) if fn_name in Hook.stages else [
            getattr(hook, fn_name) for hook in self.hooks if hasattr(hook, fn_name)]
        for method in methods:
            try:
                method(runner, **kwargs)
            except TypeError as err:
                raise TypeError(f'{err} in {method.__self__}') from err

    def info(self) -> str:
        """The per-stage listing mmengine logs at start-up."""
        stage_hooks: Dict[str, List[str]] = {stage: [] for stage in Hook.stages}
        for hook in self.hooks:
            try:
                priority = Priority(hook.priority).name
            except ValueError:
                priority = hook.priority
            line = f'({priority:<12}) {hook.__class__.__name__:<35}'
            for stage in hook.get_triggered_stages():
                stage_hooks[stage].append(line)
        blocks = [f'{stage}:\n' + '\n'.join(lines) + '\n -------------------- '
                  for stage, lines in stage_hooks.items() if lines]
        return '\n'.join(blocks)


class HookBridge(Callback):
    """Calls the runner's mmengine hooks at mmengine's points of a Lightning run."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def _call(self, stage: str, **kwargs: Any) -> None:
        self.runner._hooks.call(self.runner, stage, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.runner._setup_run(stage)  # before_run; weights initialised before the strategy wraps them

    # -- training ---------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.runner._start_training(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('before_train')

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = self.runner.train_loop
        if loop.by_epoch:
            self.runner.model.train()
        self._call('before_train_epoch')

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        loop = self.runner.train_loop
        if not loop.by_epoch:
            self.runner.model.train()
            batch_idx = loop.iter
        self._call('before_train_iter', batch_idx=batch_idx, data_batch=batch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loop = self.runner.train_loop
        self._call('after_train_iter', batch_idx=batch_idx if loop.by_epoch else loop.iter,
                   data_batch=batch, outputs=outputs)
        loop.iteration_done()
        if loop.by_epoch:
            epoch_ended = batch_idx + 1 >= trainer.num_training_batches
            if epoch_ended:
                self._call('after_train_epoch')
                loop.epoch_done()
            schedule_validation(trainer, epoch_ended and loop.validation_due())
        else:
            schedule_validation(trainer, loop.validation_due())
            if loop.stop_training:
                trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = self.runner.train_loop
        if not loop.by_epoch:
            self._call('after_train_epoch')
        if loop.finished:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('after_train')

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('after_run')

    # -- validation and test ----------------------------------------------------------------
    def _eval_start(self, trainer: pl.Trainer, mode: str) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self.runner.load_or_resume()
        self._call(f'before_{mode}')

    def _eval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, mode: str) -> None:
        self._call(f'after_{mode}_epoch', metrics=pl_module.metrics.get(mode))
        self._call(f'after_{mode}')
        if trainer.state.fn != TrainerFn.FITTING:
            self._call('after_run')
        elif not self.runner.train_loop.by_epoch and self.runner.train_loop.stop_training:
            trainer.should_stop = True  # epoch-based runs stop at the epoch's end

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, 'val')

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('before_val_epoch')

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._call('before_val_iter', batch_idx=batch_idx, data_batch=batch)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._call('after_val_iter', batch_idx=batch_idx, data_batch=batch, outputs=outputs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module, 'val')

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, 'test')

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call('before_test_epoch')

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        self._call('before_test_iter', batch_idx=batch_idx, data_batch=batch)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._call('after_test_iter', batch_idx=batch_idx, data_batch=batch, outputs=outputs)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module, 'test')
