"""mmengine hooks as a run holds them: defaults merged, priority order, per-stage dispatch.

``HookList`` keeps mmengine's priority order and, per stage, the hooks that override
it (mmengine's ``get_triggered_stages``), so an iteration dispatches only to hooks that
do something. :mod:`mm_lightning.runtime.bridge` calls them at mmengine's points of a Lightning run.
``custom_hooks`` entries that name a Lightning ``Callback`` go to the Trainer instead.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lightning.pytorch.callbacks import Callback
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner.priority import Priority, get_priority

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import build, names_subclass_of, resolve_type

__all__ = ['DEFAULT_HOOKS', 'HookSpec', 'merged_default_hooks', 'is_lightning_callback', 'split_custom_hooks',
           'build_lightning_callbacks', 'HookList']

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


def is_lightning_callback(entry: Any, key: str = 'custom_hooks') -> bool:
    """A ``custom_hooks`` entry (at ``key``) naming a Lightning ``Callback`` (instance, class or dotted name)."""
    return names_subclass_of(entry, Callback, key)


def split_custom_hooks(custom_hooks: Optional[Sequence[Any]]) -> Tuple[List[HookSpec], List[Any]]:
    """(mmengine hooks, Lightning callback entries) from ``custom_hooks``."""
    hooks: List[HookSpec] = []
    callbacks: List[Any] = []
    for index, entry in enumerate(custom_hooks or []):
        (callbacks if is_lightning_callback(entry, f'custom_hooks[{index}]') else hooks).append(entry)
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
        self._dispatched: Tuple[int, int] = (0, 0)  # (id, length) of the list the dispatch table was built for

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
            raise config_error(f'{key}: hook should be an instance of Hook or dict, but got {hook!r}', TypeError)
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
        """The methods to call for ``name``; rebuilt when ``hooks`` was replaced or changed length (mmengine
        code may assign the runner's ``_hooks`` or append to it)."""
        if self._stages is None or self._dispatched != (id(self.hooks), len(self.hooks)):
            self._dispatched = (id(self.hooks), len(self.hooks))
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
                raise TypeError(f'{err} in {getattr(method, "__self__", method)}') from err

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


