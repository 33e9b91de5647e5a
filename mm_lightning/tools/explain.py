"""What a config becomes under Lightning, shown without building the model or the data.

:func:`explain` translates a config for a layout (launcher, accelerator, devices per
node, nodes; any of them may differ from this machine) and reports, as one JSON-ready
dict: the ``lightning.Trainer`` arguments, the strategy and precision with their
settings, the schedule (epochs and iterations, validation and checkpoint points,
parameter scheduler steps), the mmengine hooks by stage with the Lightning event that
calls each, the Lightning callbacks, the loggers, and every approximation or refusal a
real run would meet on that layout. :func:`~mm_lightning.tools.explanation_text.format_explanation` renders it
as text.

Only hooks, callbacks and loggers are instantiated (they are cheap and their settings
decide the schedule); a part that cannot be translated becomes a refusal in
``warnings`` and the rest is still explained.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import warnings
from datetime import timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from mmengine.config import Config
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import DefaultScope
from mmengine.runner.priority import Priority, get_priority

from mm_lightning.config.loading import CfgOptions, ConfigError, ConfigLike, load_config
from mm_lightning.config.misspellings import misspelt_keys
from mm_lightning.config.registry import type_name
from mm_lightning.runtime.assembly import build_hooks, check_stage_groups, require_model
from mm_lightning.runtime.bridge import ITERATION_BASED_EVENTS, STAGE_EVENTS, HookBridge
from mm_lightning.runtime.context import build_visualizer, unused_name
from mm_lightning.runtime.hooks import HookList, build_lightning_callbacks
from mm_lightning.runtime.loops import (
    ValidationRule,
    parse_eval_cfg,
    parse_train_cfg,
    train_loop_kind,
    validation_settings,
)
from mm_lightning.runtime.trainer import trainer_kwargs
from mm_lightning.runtime.trainer_settings import LOOP_DEFAULTS, TRANSLATIONS, UNSET
from mm_lightning.state.checkpoint import fsdp1_load_refusal
from mm_lightning.state.disk import room_for_latest
from mm_lightning.translate.launchers import Layout, config_layout
from mm_lightning.translate.loggers import route_vis_backends
from mm_lightning.translate.precision import amp_flag
from mm_lightning.translate.sharding import FSDP2Strategy
from mm_lightning.translate.strategies import StrategySpec, run_time_refusals, strategy_context, translate_strategy

__all__ = ['REFUSAL', 'APPROXIMATION', 'DISK_SPACE', 'UNREAD_KEY', 'LOG_DIR', 'MAX_POINTS', 'explain', 'render',
           'callback_events', 'RUN_TIME_CHECKS']

REFUSAL = 'refusal'
APPROXIMATION = 'approximation'
#: Less free space in the work_dir than the run's checkpoints need (measured by the latest one there).
DISK_SPACE = 'disk_space'
#: A top-level key nothing reads that is close to one that is (``param_schedulr``): the run's log warns too.
UNREAD_KEY = 'unread_key'

#: The run's log_dir, which explain does not decide (nothing is written there).
LOG_DIR = '<work_dir>/<timestamp>'

#: At most this many validation/checkpoint points are listed (``count`` gives them all).
MAX_POINTS = 50


def explain(cfg: ConfigLike, *, launcher: Optional[str] = None, accelerator: Optional[str] = None,
            devices: Any = None, num_nodes: Optional[int] = None, cfg_options: CfgOptions = None) -> Dict[str, Any]:
    """What ``cfg`` becomes on the given layout (see module doc); JSON-ready.

    A layout that cannot be resolved (a launcher's variables missing and no devices/nodes
    given) raises ``ConfigError``; every other problem is listed under ``warnings``.
    """
    cfg = load_config(cfg, cfg_options)
    # A run looks everything up in the config's default_scope from its start, and that scope's registries import
    # their modules on lookup (mmdet's LOOPS import mmdet.engine, where TeacherStudentValLoop is registered):
    # explain's lookups must see the same registrations.
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
        return _report(cfg, config_layout(cfg, launcher, accelerator, devices, num_nodes))


def _report(cfg: Config, layout: Layout) -> Dict[str, Any]:
    """:func:`explain`'s report of a loaded config, under its default scope."""
    found: List[Dict[str, str]] = []
    loggers, lightning_loggers = _guarded(found, lambda: _loggers(cfg), (None, []))
    with warnings.catch_warnings():
        # Scalers for a GPU layout, built on a machine without CUDA, warn that they are disabled here.
        warnings.filterwarnings('ignore', message='.*GradScaler is enabled, but CUDA is not available')
        kwargs = _guarded(found, lambda: trainer_kwargs(cfg, **dataclasses.asdict(layout),
                                                        logger=lightning_loggers or False), None)
    spec = _guarded(found, lambda: translate_strategy(cfg.get('strategy'), strategy_context(cfg, layout)), None)
    hooks, hook_list = _guarded(found, lambda: _hooks(cfg), (None, None))
    schedule = _guarded(found, lambda: _schedule(cfg, kwargs, hook_list), None)
    settings = _guarded(found, lambda: _trainer_settings(cfg), None)
    if spec is not None:
        found += [_warning(REFUSAL, message)
                  for message in run_time_refusals(spec, cfg.get('env_cfg') or {}, layout, cfg.get('custom_hooks'))]
    found += _run_time_checks(cfg, spec)
    found += _strategy_notes(spec)
    found += _sharding(spec)
    found += _disk_space(cfg, hook_list)
    found += [_warning(UNREAD_KEY, message) for message in misspelt_keys(cfg)]
    return dict(
        config=cfg.filename,
        layout=dataclasses.asdict(layout),
        trainer=None if kwargs is None else {key: render(value) for key, value in kwargs.items()},
        strategy=_strategy(None if kwargs is None else kwargs['strategy'], spec),
        precision=None if kwargs is None else _precision(kwargs, cfg.get('optim_wrapper')),
        schedule=schedule,
        trainer_settings=settings,
        hooks=hooks,
        loggers=loggers,
        warnings=list({entry['message']: entry for entry in found}.values()),  # each once, in order
    )


def _guarded(found: List[Dict[str, str]], part: Callable[[], Any], fallback: Any) -> Any:
    """A part of the report; a ConfigError becomes a refusal and the part is left out."""
    try:
        return part()
    except ConfigError as err:
        found.append(_warning(REFUSAL, str(err)))
        return fallback


def _warning(kind: str, message: str) -> Dict[str, str]:
    return dict(kind=kind, key=message.partition(':')[0], message=message)


# -- rendering objects as JSON values -----------------------------------------------------------
def render(value: Any) -> Any:
    """A JSON value for a translated setting: objects by class name, callables by name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, torch.dtype):
        return str(value).replace('torch.', '')
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(key): render(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [render(item) for item in value]
    if isinstance(value, functools.partial):
        arguments = ', '.join(f'{key}={render(item)!r}' for key, item in value.keywords.items())
        return f'{render(value.func)}({arguments})'
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.ismethod(value):
        return value.__qualname__
    if dataclasses.is_dataclass(value):  # FSDP's MixedPrecision, CPUOffload: their public fields
        return {field.name: render(getattr(value, field.name)) for field in dataclasses.fields(value)
                if not field.name.startswith('_')}
    return type(value).__name__


# -- strategy and precision ---------------------------------------------------------------------
#: Buffers (BatchNorm statistics) where nothing synchronises them between ranks.
KEPT_PER_RANK = ("each rank keeps its own ({why}); checkpoints hold rank 0's, and each other rank's own, which "
                 'a resume on as many processes restores')


def _buffers(spec: StrategySpec) -> Optional[str]:
    """What the strategy does with buffers between checkpoints (None: one process)."""
    if issubclass(spec.cls, FSDP2Strategy):
        return KEPT_PER_RANK.format(why='FSDP2, as FSDP1, synchronises none after the start')
    if issubclass(spec.cls, DeepSpeedStrategy):
        return KEPT_PER_RANK.format(why='DeepSpeed synchronises none after the start')
    if issubclass(spec.cls, DDPStrategy):
        if spec.kwargs.get('broadcast_buffers', True):
            return "rank 0's, broadcast to every rank at each forward (broadcast_buffers=True)"
        return KEPT_PER_RANK.format(why="broadcast_buffers=False, as mmengine's DDP wraps")
    return None


def _strategy(built: Any, spec: Any) -> Optional[Dict[str, Any]]:
    """The strategy's class and settings (the translation's own arguments where it made the object), and
    what it does with buffers."""
    if isinstance(spec, StrategySpec) and (built is None or type(built) is spec.cls):
        return dict(name=spec.cls.__name__, settings=render(spec.kwargs), buffers=_buffers(spec))
    if built is None:
        return None
    if isinstance(built, str):
        return dict(name=built, settings={}, buffers=None)
    return dict(name=type(built).__name__, settings={}, buffers=None)  # a Lightning object given as is


def _precision(kwargs: Mapping[str, Any], optim_wrapper: Any) -> Dict[str, Any]:
    plugin = next((p for p in kwargs.get('plugins') or [] if isinstance(p, Precision)), None)
    amp = amp_flag(optim_wrapper)
    return dict(
        precision=plugin.precision if plugin is not None else str(kwargs.get('precision', '32-true')),
        plugin=None if plugin is None else type(plugin).__name__,
        scaler=None if (scaler := getattr(plugin, 'scaler', None)) is None else type(scaler).__name__,
        loss_scale=None if amp is None or plugin is None or plugin.precision != '16-mixed' else render(amp[2]),
    )


# -- schedule -----------------------------------------------------------------------------------
def _trainer_settings(cfg: Config) -> Optional[List[Dict[str, Any]]]:
    """How a Trainer's own length, cadence, accumulation and clipping resolve for this config's loop
    (:mod:`mm_lightning.runtime.trainer_settings`); None without a loop Lightning drives."""
    by_epoch = train_loop_kind(cfg.get('train_cfg'))
    if by_epoch is None:
        return None
    values = {f'train_cfg.{key}': value for key, value in {**LOOP_DEFAULTS[by_epoch], **cfg['train_cfg']}.items()}
    wrapper = cfg.get('optim_wrapper') or {}
    values.update({'optim_wrapper.accumulative_counts': wrapper.get('accumulative_counts', 1),
                   'optim_wrapper.clip_grad': wrapper.get('clip_grad')})
    return [dict(setting=entry.setting, unset=[render(value) for value in UNSET[entry.setting]], key=entry.key,
                 configured=None if entry.key is None else render(values.get(entry.key)), reads=entry.reads)
            for entry in TRANSLATIONS[by_epoch]]


def _schedule(cfg: Config, kwargs: Optional[Mapping[str, Any]], hooks: Optional[HookList]) -> Optional[dict]:
    """Loop lengths and where validation, checkpoints and scheduler steps happen."""
    if cfg.get('train_cfg') is None:
        return None
    loop = parse_train_cfg(cfg.train_cfg)
    by_epoch = loop['by_epoch']
    length = loop['max_epochs'] if by_epoch else loop['max_iters']
    return dict(
        by_epoch=by_epoch,
        max_epochs=length if by_epoch else None,
        max_iters=None if by_epoch else length,
        iterations_per_epoch=None if by_epoch else length,  # epoch-based: len(train_dataloader), not built
        lightning=None if kwargs is None else {key: kwargs.get(key) for key in ('max_epochs', 'max_steps')},
        validation=_validation(cfg, loop),
        checkpoints=[] if hooks is None else [_checkpoints(hook, by_epoch, length) for hook in hooks.hooks
                                              if isinstance(hook, CheckpointHook)],
        param_schedulers=_param_schedulers(cfg.get('param_scheduler'), by_epoch, length),
    )


def _validation(cfg: Config, loop_cfg: Mapping[str, Any]) -> Optional[dict]:
    """Where training validates: the loop's settings (as the built loop holds them) under the run's rule."""
    if cfg.get('val_cfg') is None or cfg.get('val_dataloader') is None:
        return None
    by_epoch = loop_cfg['by_epoch']
    settings = validation_settings(cfg.train_cfg)
    rule = ValidationRule.of(settings['val_begin'], settings['val_interval'], settings['dynamic_intervals'])
    points = rule.points(loop_cfg['max_epochs'] if by_epoch else loop_cfg['max_iters'])
    return dict(unit='epoch' if by_epoch else 'iteration', begin=settings['val_begin'],
                interval=settings['val_interval'], dynamic_intervals=render(settings['dynamic_intervals'] or []),
                at=points[:MAX_POINTS], count=len(points))


def _checkpoints(hook: CheckpointHook, loop_by_epoch: bool, length: int) -> dict:
    """Where mmengine's CheckpointHook saves: every ``interval`` from ``save_begin``, and the last."""
    unit = 'epoch' if hook.by_epoch else 'iteration'
    if hook.by_epoch == loop_by_epoch:
        units = length
    elif hook.by_epoch:
        units = 1  # an iteration-based loop calls after_train_epoch once, at its end
    else:
        units = None  # iterations of an epoch-based loop: known once the data is built
    points = None if units is None else [
        count for count in range(1, units + 1)
        if (hook.interval > 0 and count >= hook.save_begin and (count - hook.save_begin) % hook.interval == 0)
        or (hook.save_last and count == units)]
    best = hook.save_best if hook.save_best is None or isinstance(hook.save_best, list) else [hook.save_best]
    return dict(unit=unit, interval=hook.interval, save_begin=hook.save_begin, save_last=hook.save_last,
                max_keep_ckpts=hook.max_keep_ckpts, save_best=best,
                at=None if points is None else points[:MAX_POINTS], count=None if points is None else len(points))


def _param_schedulers(cfg: Any, loop_by_epoch: bool, length: int) -> List[dict]:
    """When each scheduler steps (ParamSchedulerHook) and over which range."""
    if cfg is None:
        return []
    per_optimizer = isinstance(cfg, Mapping) and 'type' not in cfg
    groups = cfg.items() if per_optimizer else [(None, cfg)]
    found = []
    for optimizer, items in groups:
        for item in items if isinstance(items, (list, tuple)) else [items]:
            by_epoch = item.get('by_epoch', True)
            default_end = length if by_epoch == loop_by_epoch else (1 if by_epoch else None)
            per_iteration = not by_epoch or item.get('convert_to_iter_based', False)
            found.append(dict(optimizer=optimizer, type=type_name(item.get('type')),
                              steps_after='iteration' if per_iteration else 'epoch',
                              range_unit='epoch' if by_epoch else 'iteration',
                              begin=item.get('begin', 0), end=item.get('end', default_end)))
    return found


# -- hooks, callbacks and loggers ---------------------------------------------------------------
def _hooks(cfg: Config) -> Tuple[dict, HookList]:
    """mmengine hooks in priority order and by stage; Lightning callbacks with their events."""
    custom = cfg.get('custom_hooks') or []
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
        # Visualization hooks look the run's visualizer up when built. Explain's has a name of its own (a name
        # mmengine looks up again would hand a later run this instance) and no backends: it writes nothing.
        visualizer = cfg.get('visualizer')
        if visualizer is None or isinstance(visualizer, Mapping):
            visualizer = {'type': 'Visualizer', **(visualizer or {}), 'name': unused_name('explain'),
                          'vis_backends': []}
        build_visualizer(visualizer, unused_name('explain'), LOG_DIR)
        hooks = build_hooks(cfg.get('default_hooks'), custom)  # as a run builds them
        callbacks = build_lightning_callbacks(custom)
    by_epoch = cfg.get('train_cfg') is None or parse_train_cfg(cfg.train_cfg)['by_epoch']
    events = dict(STAGE_EVENTS, **({} if by_epoch else ITERATION_BASED_EVENTS))
    by_stage = [dict(stage=stage, lightning_event=events[stage],
                     hooks=[type(hook).__name__ for hook in hooks.hooks if stage in hook.get_triggered_stages()])
                for stage in Hook.stages]
    return dict(
        mmengine=[dict(name=type(hook).__name__, priority=_priority_name(hook.priority),
                       stages=[stage for stage in Hook.stages if stage in hook.get_triggered_stages()])
                  for hook in hooks.hooks],
        by_stage=[entry for entry in by_stage if entry['hooks']],
        lightning_callbacks=[dict(name='HookBridge', source='mm_lightning (calls the mmengine hooks)',
                                  events=callback_events(HookBridge))]
        + [dict(name=type(callback).__name__, source='custom_hooks', events=callback_events(type(callback)))
           for callback in callbacks],
    ), hooks


def _priority_name(priority: Any) -> Any:
    value = get_priority(priority)
    try:
        return Priority(value).name
    except ValueError:  # a number between the named levels
        return value


def callback_events(cls: type) -> List[str]:
    """The Lightning callback events a Callback class overrides."""
    return [name for name, member in vars(Callback).items()
            if (name.startswith('on_') or name in ('setup', 'teardown')) and callable(member)
            and getattr(cls, name, member) is not member]


def _loggers(cfg: Config) -> Tuple[dict, list]:
    """vis_backends with the Lightning logger each becomes (or mmengine's own backend)."""
    visualizer = cfg.get('visualizer')
    if visualizer is None:  # the runner's default visualizer
        visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
    if not isinstance(visualizer, Mapping):
        raise ConfigError(f'visualizer: expected a dict, got {visualizer!r}')
    backends = visualizer.get('vis_backends') or []
    backends = [backends] if isinstance(backends, Mapping) else list(backends)
    routed, lightning_loggers = route_vis_backends(visualizer, LOG_DIR)
    routed_backends = routed.get('vis_backends') or []
    described = []
    for backend, routed_backend in zip(backends, routed_backends):
        logger = routed_backend.get('logger') if isinstance(routed_backend, Mapping) else None
        described.append(dict(vis_backend=type_name(backend.get('type')),
                              lightning_logger=None if logger is None else type(logger).__name__))
    return dict(vis_backends=described, trainer=[type(logger).__name__ for logger in lightning_loggers],
                log_file='<work_dir>/<timestamp>/<timestamp>.log'), lightning_loggers


# -- what a run would meet ----------------------------------------------------------------------
def _run_time_checks(cfg: Config, spec: Any) -> List[Dict[str, str]]:
    """Refusals the runner raises once it starts, and the approximations it makes."""
    found = []
    for check in RUN_TIME_CHECKS:
        try:
            result = check(cfg, spec)
        except ConfigError as err:
            found.append(_warning(REFUSAL, str(err)))
            continue
        if result is not None:
            found.append(_warning(*result))
    return found


def _strategy_notes(spec: Any) -> List[Dict[str, str]]:
    """The settings the translated strategy follows only approximately (logged when a run builds it)."""
    return [_warning(APPROXIMATION, note) for note in spec.notes] if isinstance(spec, StrategySpec) else []


def _sharding(spec: Any) -> List[Dict[str, str]]:
    """Under FSDP2: the settings it has no exact equivalent for."""
    if not (isinstance(spec, StrategySpec) and issubclass(spec.cls, FSDP2Strategy)):
        return []
    return [_warning(APPROXIMATION, note) for note in spec.kwargs['plan'].notes]


def _disk_space(cfg: Config, hooks: Optional[HookList]) -> List[Dict[str, str]]:
    """Where the work_dir's latest checkpoint says the run's checkpoints will not fit (the model is not built, so
    without one nothing is said)."""
    if hooks is None or cfg.get('train_cfg') is None or cfg.get('work_dir') is None:
        return []
    return [_warning(DISK_SPACE, message) for message in room_for_latest(cfg.work_dir, hooks.hooks,
                                                                         bool(cfg.get('resume')))]


def _needs_model(cfg: Config, spec: Any) -> None:
    require_model(cfg)


def _groups_complete(cfg: Config, spec: Any) -> None:
    check_stage_groups(cfg)


def _eval_loops(cfg: Config, spec: Any) -> None:
    for key in ('val_cfg', 'test_cfg'):
        if cfg.get(key) is not None:
            parse_eval_cfg(cfg[key], key)


def _strategy_kwargs(spec: Any, name: str) -> Optional[Mapping[str, Any]]:
    return spec.kwargs if isinstance(spec, StrategySpec) and spec.cls.__name__ == name else None


def _checkpoint_io(cfg: Config, spec: Any) -> Optional[Tuple[str, str]]:
    loads = bool(cfg.get('resume')) or cfg.get('load_from') is not None
    fsdp1 = _strategy_kwargs(spec, 'FSDPStrategy')  # Lightning's own FSDPStrategy, named in the config
    refusal = None if fsdp1 is None or not loads else fsdp1_load_refusal(fsdp1.get('state_dict_type'))
    return None if refusal is None else (REFUSAL, refusal)


#: What the runner checks once it starts (raising ConfigError) and the approximations it makes.
RUN_TIME_CHECKS: List[Callable[[Config, Any], Optional[Tuple[str, str]]]] = [
    _needs_model, _groups_complete, _eval_loops, _checkpoint_io,
]
