"""The rule tables: what each config key, and each option of a well-known type, must hold.

:data:`RULES` pairs a key pattern with an :class:`Expect` (what the value must be, said as
the error says it); :data:`TYPE_OPTIONS` does the same for the options of well-known types
wherever an entry of that type sits (:data:`TYPED_ENTRIES`). They are data, kept apart from
the code that walks a config and applies them (:mod:`mm_lightning.config.validation`), so a
reader finds every rule in one place and a package may add its own. A key pattern is dotted;
``[]`` stands for every item of a list and ``*`` for every value of a dict.
"""
from __future__ import annotations

import numbers
import os
import os.path as osp
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

# No torch, Lightning or mmengine.runner here (mmengine.runner imports DeepSpeed where installed): a config
# error is reported before a run imports them. Classes a value may be an instance of are looked up in the
# loaded modules (loaded_instance_of).
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS, Registry

from mm_lightning.ground.names import LAUNCHER_NAMES, PROFILER_NAMES, PROGRESS_BAR_NAMES

LOG_LEVELS = ('CRITICAL', 'FATAL', 'ERROR', 'WARN', 'WARNING', 'INFO', 'DEBUG', 'NOTSET')
#: The names of ``mmengine.runner.priority.Priority`` (tests/config/test_rules.py checks they agree).
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


def is_number(value: Any) -> bool:
    """A real number that is not a bool (YAML and Python configs give both)."""
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
LOOP_LENGTH = Expect('a non-negative integer', lambda v: is_number(v) and v >= 0 and int(v) == v)
NON_NEGATIVE_NUMBER = Expect('a non-negative number', lambda v: is_number(v) and v >= 0)
POSITIVE_NUMBER = Expect('a positive number', lambda v: is_number(v) and v > 0)
NUMBER = Expect('a number', is_number)
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

#: Registered entries whose arguments are checked against their type's signature -> the arguments their
#: builder fills in or takes away itself (mmengine's optim wrapper constructor).
CHECKED_ARGUMENTS: Dict[str, Tuple[str, ...]] = {
    'optim_wrapper.type': ('optimizer', 'constructor', 'paramwise_cfg'),
    'optim_wrapper.optimizer.type': ('params',),
}

#: Entries that need a ``type`` (their builder reads it): a key close to it is named.
NEEDS_TYPE: Tuple[str, ...] = ('optim_wrapper.optimizer', 'custom_hooks[]', 'param_scheduler[]')


__all__ = ['Expect', 'RULES', 'TYPE_OPTIONS', 'TYPED_ENTRIES', 'CHECKED_ARGUMENTS', 'NEEDS_TYPE', 'PRIORITY_NAMES',
           'LOG_LEVELS', 'instance_of', 'loaded_instance_of', 'one_of', 'list_of', 'registered', 'is_number']
