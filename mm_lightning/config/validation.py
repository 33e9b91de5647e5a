"""Config checks that run before anything is built.

mmengine leaves many values to fail deep inside a run: ``val_interval=0`` is a
ZeroDivisionError after the first epoch, a string seed a numpy casting error,
``accumulative_counts=0`` a bare AssertionError. The rules (:mod:`mm_lightning.config.rules`)
say, as data, what each key must hold; :func:`validate_config` raises one :class:`ConfigError` for the
first value that breaks a rule, whose first line reads
``<key path>: expected <what>, got <value>``.

mmengine builds the parts of a run lazily: a config whose training part would crash trains
nothing, but validates and tests. Each rule therefore belongs to the stage that uses its key
(:data:`STAGE_KEYS`): the run's own keys are checked when a runner is built, ``train_cfg``,
``optim_wrapper``... when training starts, ``val_*``/``test_*`` when validation or testing
starts, never earlier.

A key pattern is dotted; ``[]`` stands for every item of a list (a lone dict counts
as one item, as mmengine takes ``param_scheduler=dict(...)``) and ``*`` for every
value of a dict. A rule only applies to keys that are present and not ``None``
(``None`` means "the default" everywhere in mmengine's configs). Both tables (``RULES``,
``TYPE_OPTIONS``) are open: a package may add rules for its own keys or types.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

# No torch, Lightning or mmengine.runner here (mmengine.runner imports DeepSpeed where installed): a config
# error is reported before a run imports them.
from mmengine.config import Config
from mmengine.registry import Registry

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import check_type_known, suggestions, type_name, unexpected_arguments
from mm_lightning.config.rules import (
    CHECKED_ARGUMENTS,
    NEEDS_TYPE,
    RULES,
    TYPE_OPTIONS,
    TYPED_ENTRIES,
    Expect,
    is_number,
)

#: The stage that uses each top-level key, whose rules are checked when that stage starts; every
#: other key is checked when the runner is built (stage ``'run'``).
STAGE_KEYS: Dict[str, Tuple[str, ...]] = {
    'train': ('train_cfg', 'train_dataloader', 'optim_wrapper', 'param_scheduler', 'auto_scale_lr'),
    'val': ('val_cfg', 'val_dataloader', 'val_evaluator'),
    'test': ('test_cfg', 'test_dataloader', 'test_evaluator'),
}
STAGES = ('run', *STAGE_KEYS)
#: The stages a Lightning run of each kind starts (fitting validates too).
LIGHTNING_STAGES: Dict[str, Tuple[str, ...]] = {'fit': ('train', 'val'), 'validate': ('val',), 'test': ('test',)}


def stage_of(pattern: str) -> str:
    """The stage whose start checks the rule for key ``pattern``."""
    top = _parts(pattern)[0]
    return next((stage for stage, keys in STAGE_KEYS.items() if top in keys), 'run')


def validate_config(cfg: Union[Config, Mapping[str, Any]], stages: Sequence[str] = STAGES) -> None:
    """Raise a :class:`ConfigError` for the first value in ``cfg`` that breaks a rule of ``stages``.

    ``cfg`` is an mmengine ``Config`` or a dict of ``FlexibleRunner`` keywords; by default
    every stage is checked. Nothing is built; registered names are looked up in the config's
    ``default_scope``.
    """
    if isinstance(cfg, Config):
        cfg = dict(cfg.items())
    if not isinstance(cfg, Mapping):
        raise config_error(f'config: expected a dict or an mmengine Config, got {type(cfg).__name__}', TypeError)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f'unknown stages {unknown}; stages are {list(STAGES)}')
    scope = cfg.get('default_scope', 'mmengine')
    for pattern in NEEDS_TYPE:
        if stage_of(pattern) in stages:
            for path, entry in find(cfg, pattern):
                _check_has_type(path, entry, cfg)
    for pattern, expect in RULES:
        if stage_of(pattern) not in stages:
            continue
        for path, value in find(cfg, pattern):
            _check_value(path, value, expect, cfg, scope)
    if 'train' in stages:
        _check_scheduler_ranges(cfg)
        optim_wrapper = cfg.get('optim_wrapper')
        if isinstance(optim_wrapper, Mapping) and 'type' not in optim_wrapper and _default_constructor(optim_wrapper):
            from mmengine.optim import OptimWrapper  # mmengine's default wrapper type (torch: training needs it)
            unexpected_arguments(optim_wrapper, OptimWrapper, 'optim_wrapper', CHECKED_ARGUMENTS['optim_wrapper.type'])
    for pattern in TYPED_ENTRIES:
        if stage_of(pattern) not in stages:
            continue
        for path, entry in find(cfg, pattern):
            if not isinstance(entry, Mapping) or 'type' not in entry:
                continue
            for option, expect in TYPE_OPTIONS.get(type_name(entry['type']), {}).items():
                if entry.get(option) is not None:
                    _check_value(f'{path}.{option}', entry[option], expect, cfg, scope)


def find(cfg: Any, pattern: str) -> Iterator[Tuple[str, Any]]:
    """``(key path, value)`` of every present, non-``None`` value that ``pattern`` matches."""
    matches: List[Tuple[str, Any]] = [('', cfg)]
    for part in _parts(pattern):
        found: List[Tuple[str, Any]] = []
        for path, value in matches:
            if part == '[]':
                if isinstance(value, (list, tuple)):
                    found.extend((f'{path}[{i}]', item) for i, item in enumerate(value))
                elif value is not None:
                    found.append((path, value))
            elif part == '*':
                if isinstance(value, Mapping):
                    found.extend((_join(path, str(key)), value[key]) for key in value)
            elif isinstance(value, Mapping) and part in value:
                found.append((_join(path, part), value[part]))
        matches = [(path, value) for path, value in found if value is not None]
    return iter(matches)


def _parts(pattern: str) -> List[str]:
    parts: List[str] = []
    for piece in pattern.split('.'):
        name, brackets = piece.split('[', 1) if '[' in piece else (piece, '')
        parts.append(name)
        if brackets:
            parts.append('[]')
    return parts


def _join(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


def _check_value(path: str, value: Any, expect: Expect, cfg: Mapping[str, Any], scope: Optional[str]) -> None:
    if expect.registry is not None and isinstance(value, str):
        _check_registered(path, value, expect.registry, cfg, scope)
        return
    if expect.check(value):
        return
    detail = expect.detail(value) if expect.detail else ''
    raise ConfigError(f'{path}: expected {expect.what}, got {_show(value)}' + (f' ({detail})' if detail else ''))


def _check_registered(path: str, value: str, registry: Registry, cfg: Mapping[str, Any],
                      scope: Optional[str]) -> None:
    if path == 'optim_wrapper.optimizer.type' and not _default_constructor(cfg.get('optim_wrapper')):
        return  # a custom constructor decides what its optimizer config means
    parent = _parent(cfg, path)
    found = check_type_known(registry, value, path, scope=parent.get('_scope_') or scope)
    if path in CHECKED_ARGUMENTS and _default_constructor(cfg.get('optim_wrapper')):
        unexpected_arguments(parent, found, path.rpartition('.')[0], CHECKED_ARGUMENTS[path])


def _check_scheduler_ranges(cfg: Mapping[str, Any]) -> None:
    """A scheduler must start before it ends: its own ``end``, or (unset) the loop's end, which mmengine's
    Runner gives it; a loop shortened under it (``train_cfg.max_epochs=1``) is named with it."""
    loop = cfg.get('train_cfg')
    if not isinstance(loop, Mapping):
        return
    loop_by_epoch = loop.get('by_epoch', 'max_epochs' in loop)
    for path, scheduler in find(cfg, 'param_scheduler[]'):
        if not isinstance(scheduler, Mapping) or 'type' not in scheduler:
            continue  # not one scheduler (a dict of them by optimizer name)
        begin = scheduler.get('begin', 0)
        if 'end' in scheduler:
            end, end_key = scheduler['end'], f'{path}.end'
        elif scheduler.get('by_epoch', True) == loop_by_epoch:
            end_key = 'train_cfg.max_epochs' if loop_by_epoch else 'train_cfg.max_iters'
            end = loop.get(end_key.rpartition('.')[2])
        else:
            continue  # counted in other units than the loop: its length in those is not known here
        if is_number(begin) and is_number(end) and end <= begin:
            raise ConfigError(f'{path}.begin: the scheduler starts at {begin} and ends at {end_key}={end}; it must '
                              f'start before it ends (lower {path}.begin, or set {end_key} above {begin})')


def _check_has_type(path: str, entry: Any, cfg: Mapping[str, Any]) -> None:
    if not isinstance(entry, Mapping) or 'type' in entry:
        return
    if path == 'param_scheduler':
        return  # a dict of schedulers by optimizer name (an OptimWrapperDict's), or one scheduler: mmengine's
        # builder tells them apart; a typo there is named when it builds
    if path == 'optim_wrapper.optimizer' and not _default_constructor(cfg.get('optim_wrapper')):
        return
    close = suggestions('type', [key for key in entry if isinstance(key, str)], n=1)
    hint = f'; is {close[0]!r} a misspelt \'type\'?' if close else ''
    raise config_error(f"{path}: no 'type' key (got {sorted(map(str, entry))}){hint}", KeyError)


def _default_constructor(optim_wrapper: Any) -> bool:
    constructor = optim_wrapper.get('constructor') if isinstance(optim_wrapper, Mapping) else None
    return constructor is None or type_name(constructor) == 'DefaultOptimWrapperConstructor'


def _parent(cfg: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    node: Any = cfg
    for key in path.split('.')[:-1]:
        node = node[key]
    return node


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


#: Strategies (mmengine's names, Lightning's names) under which parameters are sharded: an optimizer must be
#: built after the strategy has wrapped the model.
SHARDING_STRATEGIES: Tuple[str, ...] = ('FSDPStrategy', 'DeepSpeedStrategy', 'ModelParallelStrategy', 'FSDP2Strategy',
                                        'MMFullyShardedDataParallel', 'fsdp', 'deepspeed')


def shards_parameters(cfg: Mapping[str, Any]) -> bool:
    """Whether the config's ``strategy`` (or Runner-style ``model_wrapper_cfg``) shards the parameters."""
    specs = (cfg.get('strategy'), cfg.get('model_wrapper_cfg'))
    names = [spec if isinstance(spec, str) else
             type_name(spec.get('type')) if isinstance(spec, Mapping) else type(spec).__name__
             for spec in specs if spec is not None]
    return any(name.split('_')[0] in SHARDING_STRATEGIES or name in SHARDING_STRATEGIES for name in names)


__all__: Sequence[str] = ['validate_config', 'STAGES', 'SHARDING_STRATEGIES', 'shards_parameters', 'STAGE_KEYS',
                          'LIGHTNING_STAGES', 'stage_of', 'find']
