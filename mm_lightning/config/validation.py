"""Config checks that run before anything is built.

mmengine leaves many values to fail deep inside a run: ``val_interval=0`` is a
ZeroDivisionError after the first epoch, a string seed a numpy casting error,
``accumulative_counts=0`` a bare AssertionError. The rules below say, as data, what
each key must hold; :func:`validate_config` raises one :class:`ConfigError` for the
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
(``None`` means "the default" everywhere in mmengine's configs). Both tables are open:
a package may add rules for its own keys or types.
"""
from __future__ import annotations

import difflib
import numbers
import os
import os.path as osp
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

# No torch, Lightning or mmengine.runner here (mmengine.runner imports DeepSpeed where installed): a config
# error is reported before a run imports them. Classes a value may be an instance of are looked up in the
# loaded modules (loaded_instance_of).
from mmengine.config import Config
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS, Registry

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import check_type_known, suggestions, type_name, unexpected_arguments
from mm_lightning.ground.names import LAUNCHER_NAMES, PROFILER_NAMES, PROGRESS_BAR_NAMES

LOG_LEVELS = ('CRITICAL', 'FATAL', 'ERROR', 'WARN', 'WARNING', 'INFO', 'DEBUG', 'NOTSET')
#: The names of ``mmengine.runner.priority.Priority`` (tests/config/test_validation.py checks they agree).
PRIORITY_NAMES = ('HIGHEST', 'VERY_HIGH', 'HIGH', 'ABOVE_NORMAL', 'NORMAL', 'BELOW_NORMAL', 'LOW', 'VERY_LOW',
                  'LOWEST')


@dataclass(frozen=True)
class Expect:
    """What a value must be: ``check`` accepts it; ``what`` says it in the error message.

    ``detail`` may explain a rejected value further (it is added after the value).
    """

    what: str
    check: Callable[[Any], bool]
    detail: Optional[Callable[[Any], str]] = None
    #: For a ``type`` key: the registry its name must be found in (in the config's scope).
    registry: Optional[Registry] = None

    def __or__(self, other: 'Expect') -> 'Expect':
        return Expect(f'{self.what} or {other.what}', lambda v: self.check(v) or other.check(v))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def instance_of(what: str, *types: type) -> Expect:
    return Expect(what, lambda v: isinstance(v, types))


def loaded_instance_of(what: str, module: str, name: str) -> Expect:
    """An instance of ``module.name``, a class not imported for the check: a value can only be an instance of
    a class whose module is loaded, so a module that is not needs no import (torch, Lightning) to say no."""
    def check(value: Any) -> bool:
        loaded = sys.modules.get(module)
        return loaded is not None and isinstance(value, getattr(loaded, name))
    return Expect(what, check)


def one_of(*choices: str) -> Expect:
    what = repr(choices[0]) if len(choices) == 1 else 'one of ' + ', '.join(map(repr, choices))
    return Expect(what, lambda v: isinstance(v, str) and v in choices)


def list_of(item: Expect) -> Expect:
    return Expect(f'a list of {item.what.removeprefix("a ").removeprefix("an ")}s',
                  lambda v: isinstance(v, (list, tuple)) and all(item.check(x) for x in v))


INT = Expect('an integer', _is_int)
POSITIVE_INT = Expect('a positive integer', lambda v: _is_int(v) and v > 0)
NON_NEGATIVE_INT = Expect('a non-negative integer', lambda v: _is_int(v) and v >= 0)
#: mmengine's loops take a loop length such as ``12.0`` (``int(max_epochs) == max_epochs``).
LOOP_LENGTH = Expect('a non-negative integer', lambda v: _is_number(v) and v >= 0 and int(v) == v)
NON_NEGATIVE_NUMBER = Expect('a non-negative number', lambda v: _is_number(v) and v >= 0)
POSITIVE_NUMBER = Expect('a positive number', lambda v: _is_number(v) and v > 0)
NUMBER = Expect('a number', _is_number)
BOOL = instance_of('True or False', bool)
STR = instance_of('a string', str)
DICT = instance_of('a dict', Mapping)
LIST = instance_of('a list', list, tuple)
SEED = Expect('an integer in [0, 2**32) or None', lambda v: _is_int(v) and 0 <= v < 2 ** 32)
LOG_LEVEL = Expect(f'a logging level ({", ".join(LOG_LEVELS)}) or an integer',
                   lambda v: _is_int(v) or (isinstance(v, str) and v.upper() in LOG_LEVELS))
PRIORITY = Expect(f'a priority ({", ".join(PRIORITY_NAMES)}) or an integer in [0, 100]',
                  lambda v: (_is_int(v) and 0 <= v <= 100)
                  or (isinstance(v, str) and v.upper() in PRIORITY_NAMES))
MILESTONE_INTERVAL = Expect('a (milestone, interval) pair of integers, interval > 0',
                            lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                            and NON_NEGATIVE_INT.check(v[0]) and POSITIVE_INT.check(v[1]))
TYPE_NAME = Expect('a type name or a class', lambda v: isinstance(v, str) or callable(v))


def _creatable_dir_problem(path: Any) -> Optional[str]:
    """Why ``path`` cannot be (or become) a writable directory, or ``None``.

    Tried rather than predicted: ``os.access`` grants root ``/proc``, where nothing can be
    created. A directory made and removed in the nearest existing ancestor gets the OS's answer.
    """
    path = osp.abspath(os.fspath(path))
    existing = path
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        return f'{existing!r} is not a directory'
    try:
        os.rmdir(tempfile.mkdtemp(prefix='.work_dir_check_', dir=existing))
    except OSError as err:
        return f'cannot create a directory in {existing!r}: {err.strerror or err}'
    return None


WORK_DIR = Expect('a directory that exists or can be created',
                  lambda v: isinstance(v, (str, os.PathLike)) and _creatable_dir_problem(v) is None,
                  detail=lambda v: _creatable_dir_problem(v) or '' if isinstance(v, (str, os.PathLike)) else '')


#: ``clip_grad`` type -> (the required argument, the others) of torch's clip_grad_norm_ / clip_grad_value_.
CLIP_GRAD_ARGUMENTS = dict(norm=('max_norm', ('norm_type', 'error_if_nonfinite', 'foreach')),
                           value=('clip_value', ('foreach',)))


def _clip_grad_problem(clip_grad: Any) -> Optional[str]:
    if not isinstance(clip_grad, Mapping):
        return None if clip_grad is None else ''
    if clip_grad.get('type', 'norm') not in CLIP_GRAD_ARGUMENTS:
        return None  # the clip_grad.type rule says what it must be
    required, optional = CLIP_GRAD_ARGUMENTS[clip_grad.get('type', 'norm')]
    unknown = sorted(set(clip_grad) - {'type', required, *optional})
    if unknown:
        return f'unknown argument {unknown[0]!r}'
    return None if required in clip_grad else f'{required!r} is missing'


CLIP_GRAD = Expect("dict(max_norm=..., norm_type=2) or dict(type='value', clip_value=...)",
                   lambda v: _clip_grad_problem(v) is None, detail=lambda v: _clip_grad_problem(v) or '')


_DATALOADER = loaded_instance_of('a DataLoader', 'torch.utils.data', 'DataLoader')
_PARAM_SCHEDULER = loaded_instance_of('a parameter scheduler', 'mmengine.optim', '_ParamScheduler')
_HOOK = loaded_instance_of('an mmengine Hook', 'mmengine.hooks', 'Hook')
_CALLBACK = loaded_instance_of('a Lightning Callback', 'lightning.pytorch.callbacks', 'Callback')


def registered(registry: Registry) -> Expect:
    """A ``type`` naming something in ``registry``, or a class (mmengine builds it without a lookup)."""
    return Expect(f'a name in the {registry.name} registry or a class', callable, registry=registry)


RULES: List[Tuple[str, Expect]] = [
    ('work_dir', WORK_DIR),
    ('log_level', LOG_LEVEL),
    ('launcher', one_of(*LAUNCHER_NAMES)),
    ('progress_bar', one_of(*PROGRESS_BAR_NAMES)),
    ('profiler', one_of(*PROFILER_NAMES) | DICT
     | loaded_instance_of('a Lightning Profiler', 'lightning.pytorch.profilers', 'Profiler')),
    ('randomness', DICT),
    ('randomness.seed', SEED),
    ('randomness.diff_rank_seed', BOOL),
    ('randomness.deterministic', BOOL),
    ('train_cfg', DICT),
    ('train_cfg.by_epoch', BOOL),
    ('train_cfg.max_epochs', LOOP_LENGTH),
    ('train_cfg.max_iters', LOOP_LENGTH),
    ('train_cfg.val_begin', NON_NEGATIVE_INT),
    ('train_cfg.val_interval', POSITIVE_INT),
    ('train_cfg.dynamic_intervals', LIST),
    ('train_cfg.dynamic_intervals[]', MILESTONE_INTERVAL),
    ('val_cfg', DICT),
    ('val_cfg.fp16', BOOL),
    ('test_cfg', DICT),
    ('test_cfg.fp16', BOOL),
    ('train_dataloader', DICT | _DATALOADER),
    # A list of loaders, for evaluation loops that take them (mmagic's MultiValLoop/MultiTestLoop).
    *[(f'{split}_dataloader', DICT | _DATALOADER | LIST) for split in ('val', 'test')],
    *[rule for split in ('train', 'val', 'test') for rule in (
        (f'{split}_dataloader.batch_size', POSITIVE_INT),
        (f'{split}_dataloader.num_workers', NON_NEGATIVE_INT),
        (f'{split}_dataloader.persistent_workers', BOOL),
        (f'{split}_dataloader.pin_memory', BOOL),
        (f'{split}_dataloader.drop_last', BOOL),
    )],
    ('optim_wrapper', DICT | loaded_instance_of('an OptimWrapper', 'mmengine.optim', 'OptimWrapper')),
    ('optim_wrapper.type', registered(OPTIM_WRAPPERS)),
    ('optim_wrapper.constructor', registered(OPTIM_WRAPPER_CONSTRUCTORS)),
    ('optim_wrapper.optimizer', DICT | loaded_instance_of('an Optimizer', 'torch.optim', 'Optimizer')),
    ('optim_wrapper.optimizer.type', registered(OPTIMIZERS)),
    ('optim_wrapper.optimizer.lr', NON_NEGATIVE_NUMBER),
    ('optim_wrapper.optimizer.weight_decay', NON_NEGATIVE_NUMBER),
    ('optim_wrapper.optimizer.momentum', NON_NEGATIVE_NUMBER),
    ('optim_wrapper.accumulative_counts', POSITIVE_INT),
    ('optim_wrapper.clip_grad', CLIP_GRAD),
    ('optim_wrapper.clip_grad.type', one_of('norm', 'value')),
    ('optim_wrapper.clip_grad.max_norm', POSITIVE_NUMBER),
    ('optim_wrapper.clip_grad.norm_type', POSITIVE_NUMBER | one_of('inf')),
    ('optim_wrapper.clip_grad.clip_value', POSITIVE_NUMBER),
    ('optim_wrapper.clip_grad.error_if_nonfinite', BOOL),
    ('optim_wrapper.loss_scale', one_of('dynamic') | POSITIVE_NUMBER | DICT),
    ('auto_scale_lr', DICT),
    ('auto_scale_lr.enable', BOOL),
    ('auto_scale_lr.base_batch_size', POSITIVE_INT),
    ('param_scheduler', DICT | LIST | _PARAM_SCHEDULER),
    ('param_scheduler[]', DICT | _PARAM_SCHEDULER),
    ('param_scheduler[].type', TYPE_NAME),
    ('param_scheduler[].by_epoch', BOOL),
    ('param_scheduler[].begin', NON_NEGATIVE_INT),
    ('param_scheduler[].end', POSITIVE_INT | Expect('float(\'inf\')', lambda v: v == float('inf'))),
    ('param_scheduler[].convert_to_iter_based', BOOL),
    ('default_hooks', Expect('a dict of hook name -> hook config (dict(logger=dict(type=\'LoggerHook\'), ...))',
                             lambda v: isinstance(v, Mapping))),
    ('default_hooks.*', DICT | _HOOK),
    ('default_hooks.*.type', TYPE_NAME),
    ('default_hooks.*.priority', PRIORITY),
    ('custom_hooks', Expect('a list of hook configs', lambda v: isinstance(v, (list, tuple)))),
    ('custom_hooks[]', DICT | _HOOK | _CALLBACK),
    ('custom_hooks[].type', TYPE_NAME),
    ('custom_hooks[].priority', PRIORITY),
    ('log_processor', DICT | loaded_instance_of('a LogProcessor', 'mmengine.runner', 'LogProcessor')),
    ('log_processor.window_size', POSITIVE_INT),
    ('log_processor.by_epoch', BOOL),
    ('log_processor.num_digits', NON_NEGATIVE_INT),
    ('log_processor.log_with_hierarchy', BOOL),
    ('log_processor.custom_cfg', LIST),
    ('log_processor.custom_cfg[]', DICT),
    ('log_processor.custom_cfg[].data_src', STR),
    ('log_processor.custom_cfg[].method', one_of('mean', 'min', 'max', 'current')),
    ('log_processor.custom_cfg[].window_size', POSITIVE_INT | one_of('global', 'epoch')),
    ('visualizer', DICT | loaded_instance_of('a Visualizer', 'mmengine.visualization', 'Visualizer')),
    ('visualizer.vis_backends', DICT | LIST),
    ('visualizer.vis_backends[]', DICT),
    ('visualizer.vis_backends[].type', TYPE_NAME),
]

_STR_OR_STRS = STR | list_of(STR)
_MULTI_STEP = dict(milestones=list_of(NON_NEGATIVE_INT), gamma=NUMBER)
_STEP = dict(step_size=POSITIVE_INT, gamma=NUMBER)
_COSINE = dict(T_max=POSITIVE_INT, eta_min=NUMBER, eta_min_ratio=NUMBER)
_LINEAR = dict(start_factor=NUMBER, end_factor=NUMBER)

#: Options of well-known types, checked wherever an entry of that type sits.
TYPE_OPTIONS: Dict[str, Dict[str, Expect]] = {
    'LoggerHook': dict(interval=POSITIVE_INT, ignore_last=BOOL, interval_exp_name=POSITIVE_INT,
                       log_metric_by_epoch=BOOL, keep_local=BOOL),
    'CheckpointHook': dict(interval=Expect('an integer (<= 0: never)', _is_int), by_epoch=BOOL,
                           save_optimizer=BOOL, save_param_scheduler=BOOL, max_keep_ckpts=INT, save_last=BOOL,
                           save_begin=NON_NEGATIVE_INT, save_best=_STR_OR_STRS, rule=_STR_OR_STRS,
                           filename_tmpl=STR, published_keys=_STR_OR_STRS),
    'EarlyStoppingHook': dict(monitor=STR, patience=POSITIVE_INT, min_delta=NON_NEGATIVE_NUMBER,
                              strict=BOOL, check_finite=BOOL, stopping_threshold=NUMBER),
    'EMAHook': dict(begin_iter=NON_NEGATIVE_INT, begin_epoch=NON_NEGATIVE_INT, strict_load=BOOL),
    'ParamSchedulerHook': {},
    **{f'{kind}{suffix}': options for suffix in ('LR', 'Momentum', 'ParamScheduler')
       for kind, options in (('MultiStep', _MULTI_STEP), ('Step', _STEP), ('CosineAnnealing', _COSINE),
                             ('Linear', _LINEAR))},
}
#: Where typed entries sit (their ``type`` selects the options in TYPE_OPTIONS).
TYPED_ENTRIES: Tuple[str, ...] = ('default_hooks.*', 'custom_hooks[]', 'param_scheduler[]')


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


#: Top-level keys that mmengine's Runner, OpenMMLab's tools and mm_lightning read: ``runtime.assembly.CONFIG_KEYWORDS``
#: (tests/runtime/test_assembly.py checks they are all here) and the others. A config's other keys are its own
#: variables (``data_root``, ``train_pipeline``, ``backend_args``...): only a near miss of one of these is named.
TOP_LEVEL_KEYS = (
    'work_dir', 'experiment_name', 'train_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg',
    'val_dataloader', 'val_evaluator', 'val_cfg', 'test_dataloader', 'test_evaluator', 'test_cfg', 'strategy',
    'auto_scale_lr', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher',
    'env_cfg', 'log_processor', 'log_level', 'visualizer', 'default_scope', 'randomness', 'compile',
    'model', 'custom_imports', 'runner_type', 'model_wrapper_cfg', 'sync_bn', 'find_unused_parameters', 'tta_model',
    'lightning_trainer', 'progress_bar', 'profiler')
#: How alike (difflib's ratio) a key must be to a known one to be taken for a misspelling of it, and at most how
#: many letters apart: strict, as configs carry keys of their own (``conv_cfg`` is no ``env_cfg``). Checked on
#: OpenMMLab's shipped configs (tests/openmmlab/test_misspelt_keys.py).
MISSPELLING_CUTOFF = 0.85
MISSPELLING_EDITS = 2


def misspelt_keys(cfg: Union[Config, Mapping[str, Any]]) -> List[str]:
    """A warning for each top-level key of ``cfg`` that is not read but is close to one that is
    (``param_schedulr``): mmengine ignores it, so the run goes on without what it meant. Never an error.

    A key that extends a known one (``test100_dataloader``, ``val_evaluator_abs``, ``models``) is a variable
    of the config's own, not a misspelling."""
    keys = [key for key in (cfg.keys() if isinstance(cfg, (Config, Mapping)) else ())
            if isinstance(key, str) and not key.startswith('_') and key not in TOP_LEVEL_KEYS]
    found = []
    for key in keys:
        close = [known for known in difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=3, cutoff=MISSPELLING_CUTOFF)
                 if _edits(key, known) <= MISSPELLING_EDITS and known not in key]
        if close:
            found.append(f'{key}: not a key mmengine or mm_lightning reads (the run ignores it); did you mean '
                         f'{close[0]!r}?')
    return found


def _edits(a: str, b: str) -> int:
    """Letters inserted, deleted, replaced or swapped with a neighbour to turn ``a`` into ``b``."""
    previous2: List[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


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


#: Registered entries whose arguments are checked against their type's signature -> the arguments their
#: builder fills in or takes away itself (mmengine's optim wrapper constructor).
CHECKED_ARGUMENTS: Dict[str, Tuple[str, ...]] = {
    'optim_wrapper.type': ('optimizer', 'constructor', 'paramwise_cfg'),
    'optim_wrapper.optimizer.type': ('params',),
}

#: Entries that need a ``type`` (their builder reads it): a key close to it is named.
NEEDS_TYPE: Tuple[str, ...] = ('optim_wrapper.optimizer', 'custom_hooks[]', 'param_scheduler[]')


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
        if _is_number(begin) and _is_number(end) and end <= begin:
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


__all__: Sequence[str] = ['validate_config', 'RULES', 'TYPE_OPTIONS', 'TYPED_ENTRIES', 'Expect', 'STAGES',
                          'SHARDING_STRATEGIES', 'shards_parameters', 'STAGE_KEYS', 'LIGHTNING_STAGES',
                          'TOP_LEVEL_KEYS', 'MISSPELLING_CUTOFF', 'misspelt_keys']
