"""mmengine ``strategy``/``model_wrapper_cfg``/``launcher``/``env_cfg.dist_cfg`` as Lightning strategies.

One place turns what a config says about devices and distribution into the
``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` of a Lightning ``Trainer``:

* FlexibleRunner configs: ``strategy=dict(type='DDPStrategy' | 'FSDPStrategy' |
  'DeepSpeedStrategy' | 'SingleDeviceStrategy', ...)`` (:data:`STRATEGIES`);
* Runner configs: ``model_wrapper_cfg=dict(type='MMDistributedDataParallel' |
  'MMFullyShardedDataParallel', ...)`` and ``find_unused_parameters`` (:data:`MODEL_WRAPPERS`);
* Lightning's own names and classes (``strategy='ddp'``, ``dict(type='lightning.pytorch.strategies.FSDPStrategy')``).

Translation does not depend on the machine it runs on: the layout (launcher, accelerator,
devices, nodes; :mod:`mm_lightning.translate.launchers`) is an argument, and the process-group backend
stays as configured. What a run would refuse on a layout (nccl without GPUs, FSDP on CPU)
is checked at run time, or listed beforehand by :func:`run_time_refusals`.

Each strategy rule yields a :class:`StrategySpec` (a Lightning class and its arguments),
so the translation can be shown before the object is built. Nothing here starts training.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy, StrategyRegistry
from mmengine.logging import print_log
from mmengine.registry import FUNCTIONS

from mm_lightning.config.loading import ConfigError
from mm_lightning.config.registry import resolve_type, type_name
from mm_lightning.config.validation import SHARDING_STRATEGIES, shards_parameters  # noqa: F401  (re-exported)
from mm_lightning.ground.internals import batch_size
from mm_lightning.translate.deepspeed import AnyDeviceDeepSpeedStrategy, hook_refusals, precision_refusal
from mm_lightning.translate.launchers import (  # noqa: F401  (the layout API is re-exported for translation callers)
    LAUNCHERS,
    Layout,
    backend_refusal,
    check_backend,
    cluster_environment,
    config_layout,
    init_process_group,
    process_group_settings,
    resolve_launcher,
)
from mm_lightning.translate.sharding import FSDP2Strategy, plan_from_wrapper

__all__ = ['GPU_ONLY_STRATEGIES', 'SHARDING_STRATEGIES', 'shards_parameters', 'run_time_refusals', 'check_run_time',
           'StrategyContext',
           'strategy_context', 'StrategySpec', 'DEEPSPEED_CONFIG_KEYS', 'deepspeed_config', 'deepspeed_precision',
           'STRATEGIES', 'MODEL_WRAPPERS', 'RUNNER_OWNED_KEYS', 'Translated', 'build_strategy', 'translate_strategy']

#: Lightning's own strategies (named as classes, objects or registry names such as ``'fsdp'`` and
#: ``'deepspeed_stage_2'``) that refuse the CPU accelerator at run time. mmengine's FSDPStrategy and
#: DeepSpeedStrategy translate to strategies that run on CPU processes too (FSDP2Strategy,
#: AnyDeviceDeepSpeedStrategy).
GPU_ONLY_STRATEGIES: Tuple[str, ...] = ('FSDPStrategy', 'DeepSpeedStrategy')


def run_time_refusals(strategy: Any, env_cfg: Mapping[str, Any], layout: Layout,
                      custom_hooks: Optional[Sequence[Any]] = None) -> List[str]:
    """What a run of the translated strategy (with ``custom_hooks``) would refuse on ``layout`` (each names its
    config key)."""
    refusals = []
    spec = strategy if isinstance(strategy, StrategySpec) else None
    name = spec.cls.__name__ if spec is not None else _strategy_class_name(strategy)
    if name in GPU_ONLY_STRATEGIES and layout.accelerator != 'gpu':
        mmengine_type = 'FSDPStrategy' if name == 'FSDPStrategy' else 'DeepSpeedStrategy'
        refusals.append(f"strategy.type: Lightning's {name} needs GPUs; it refuses the "
                        f"{layout.accelerator.upper()} accelerator (mmengine's type='{mmengine_type}' runs on "
                        'CPU processes too)')
    if spec is not None and issubclass(spec.cls, AnyDeviceDeepSpeedStrategy):
        refusal = precision_refusal(spec.kwargs['config'], layout.accelerator)
        if refusal is not None:
            refusals.append(refusal)
        refusals += hook_refusals(spec.kwargs['config'], custom_hooks)
    opens_process_group = layout.launcher != 'none' or (spec is not None and 'process_group_backend' in spec.kwargs)
    if opens_process_group:
        refusal = backend_refusal(env_cfg, layout.accelerator)
        if refusal is not None:
            refusals.append(refusal)
    return refusals


def _strategy_class_name(strategy: Any) -> str:
    """The class name of a Lightning strategy given as an object or a registry name (``'deepspeed_stage_3'``)."""
    if isinstance(strategy, str) and strategy in StrategyRegistry:
        return StrategyRegistry[strategy]['strategy'].__name__
    return type(strategy).__name__


def check_run_time(cfg: Mapping[str, Any], layout: Layout) -> None:
    """Refuse, before a run builds anything, what it would refuse later on ``layout``: the translation's own
    errors, then the first of :func:`run_time_refusals` (what ``explain`` lists), each naming its key."""
    translated = translate_strategy(cfg.get('strategy'), strategy_context(cfg, layout))
    refusals = run_time_refusals(translated, cfg.get('env_cfg') or {}, layout, cfg.get('custom_hooks'))
    if refusals:
        raise ConfigError(refusals[0])


# -- strategies ---------------------------------------------------------------------------------
@dataclass
class StrategyContext:
    """What a strategy translation may read besides its own options."""

    launcher: str
    env_cfg: Mapping[str, Any]
    accelerator: str
    train_batch_size: Optional[int] = None
    runner_cfg: Mapping[str, Any] = field(default_factory=dict)


def strategy_context(cfg: Mapping[str, Any], layout: Layout) -> StrategyContext:
    """The context a config's strategy is translated in, for ``layout``."""
    return StrategyContext(launcher=layout.launcher, env_cfg=cfg.get('env_cfg') or {},
                           accelerator=layout.accelerator,
                           train_batch_size=_batch_size(cfg.get('train_dataloader')), runner_cfg=cfg)


def _batch_size(dataloader: Any) -> Optional[int]:
    """The training batch size as mmengine reads it (a loader or its config); None where there is none."""
    if dataloader is None:
        return None
    try:
        return batch_size(dataloader)
    except (ValueError, AttributeError):  # mmengine's "Please set batch_size"; a loader without a batch sampler
        return None


@dataclass
class StrategySpec:
    """A Lightning strategy class, the arguments a config translates to, and the settings it follows only
    approximately (``notes``, each naming its key: logged when built, listed by ``explain``)."""

    cls: type
    kwargs: Dict[str, Any]
    notes: List[str] = field(default_factory=list)

    def build(self) -> Strategy:
        try:
            strategy = self.cls(**self.kwargs)
        except TypeError as err:
            raise ConfigError(f'strategy: {self.cls.__name__}: {err}') from err
        for note in self.notes:
            print_log(note, logger='current', level=logging.WARNING)
        return strategy


# -- DDP ----------------------------------------------------------------------------------------
def _process_group(ctx: StrategyContext) -> Dict[str, Any]:
    """What every distributed strategy takes from the launcher and ``env_cfg.dist_cfg``."""
    return dict(cluster_environment=cluster_environment(ctx.launcher),
                **process_group_settings(ctx.env_cfg, ctx.accelerator))


def _ddp_strategy(ddp_kwargs: Dict[str, Any], ctx: StrategyContext) -> StrategySpec:
    return StrategySpec(DDPStrategy, dict(**_process_group(ctx), **ddp_kwargs))


def _ddp(options: Dict[str, Any], ctx: StrategyContext) -> StrategySpec:
    # mmengine's DDPStrategy without a model_wrapper: MMDistributedDataParallel(broadcast_buffers=False)
    wrapper = _wrapper_kwargs(options.pop('model_wrapper', None) or dict(broadcast_buffers=False),
                              'strategy.model_wrapper', ('MMDistributedDataParallel',))
    _no_options_left(options, 'strategy')
    return _ddp_strategy(wrapper, ctx)


# -- FSDP ---------------------------------------------------------------------------------------
_STATE_DICT_TYPES = {'full': 'full', 'FULL_STATE_DICT': 'full', 'local': 'sharded',
                     'LOCAL_STATE_DICT': 'sharded', 'sharded': 'sharded', 'SHARDED_STATE_DICT': 'sharded'}


def _registered_function(spec: Any, key: str) -> Callable:
    """mmengine's form for FSDP callables: a FUNCTIONS name, ``dict(type=name, **kwargs)`` or a callable."""
    with FUNCTIONS.switch_scope_and_registry(None) as functions:
        if isinstance(spec, Mapping):
            spec = dict(spec)
            name = spec.pop('type')
            fn = functions.get(name) if isinstance(name, str) else name
            if fn is None:
                raise ConfigError(f'{key}.type: {name!r} is not registered in FUNCTIONS')
            return partial(fn, **spec)
        if isinstance(spec, str):
            fn = functions.get(spec)
            if fn is None:
                raise ConfigError(f'{key}: {spec!r} is not registered in FUNCTIONS')
            return fn
    if not callable(spec):
        raise ConfigError(f'{key}: expected a FUNCTIONS name, a dict or a callable, got {spec!r}')
    return spec


def _check_fn_policy(spec: Any, key: str) -> Callable[[torch.nn.Module], bool]:
    """mmengine's ``activation_checkpointing=dict(check_fn=...)`` as the ``check_fn`` torch applies."""
    spec = dict(spec)
    check_fn = _registered_function(spec.pop('check_fn'), f'{key}.check_fn')
    if spec:
        raise ConfigError(f'{key}: unsupported keys {sorted(spec)}')
    return check_fn


def _fsdp_strategy(wrapper_kwargs: Dict[str, Any], ctx: StrategyContext, key: str, state_dict_type: str = 'full',
                   activation_checkpointing: Optional[Mapping[str, Any]] = None) -> StrategySpec:
    """FSDP as FSDP2 on Lightning's ModelParallelStrategy, on every accelerator.

    See :mod:`mm_lightning.translate.sharding`.
    """
    check_fn = None if activation_checkpointing is None else \
        _check_fn_policy(activation_checkpointing, 'strategy.activation_checkpointing')
    plan = plan_from_wrapper(wrapper_kwargs, key, _registered_function, state_dict_type, check_fn)
    return StrategySpec(FSDP2Strategy, dict(plan=plan, **_process_group(ctx)))


def _fsdp(options: Dict[str, Any], ctx: StrategyContext) -> StrategySpec:
    wrapper = _wrapper_kwargs(options.pop('model_wrapper', None), 'strategy.model_wrapper',
                              ('MMFullyShardedDataParallel',))
    state_dict_cfg = options.pop('state_dict_cfg', 'local')
    if isinstance(state_dict_cfg, Mapping):
        state_dict_cfg = state_dict_cfg.get('state_dict_type', 'local')
    state_dict_cfg = getattr(state_dict_cfg, 'name', state_dict_cfg)
    if state_dict_cfg not in _STATE_DICT_TYPES:
        raise ConfigError(f'strategy.state_dict_cfg: expected full or local (sharded), got {state_dict_cfg!r}')
    if options.pop('skip_init_weights', False):
        raise ConfigError('strategy.skip_init_weights: not supported; every rank starts from rank 0\'s '
                          'initialised weights')
    activation_checkpointing = options.pop('activation_checkpointing', None)
    _no_options_left(options, 'strategy')
    return _fsdp_strategy(wrapper, ctx, 'strategy.model_wrapper', _STATE_DICT_TYPES[state_dict_cfg],
                          activation_checkpointing)


# -- DeepSpeed ----------------------------------------------------------------------------------
#: mmengine DeepSpeedStrategy keys copied into the DeepSpeed config.
DEEPSPEED_CONFIG_KEYS = ('zero_optimization', 'gradient_clipping', 'fp16', 'bf16', 'amp', 'activation_checkpointing',
                         'aio', 'train_micro_batch_size_per_gpu', 'gradient_accumulation_steps', 'steps_per_print')


def deepspeed_config(options: Dict[str, Any], train_batch_size: Optional[int]) -> Dict[str, Any]:
    """The DeepSpeed config mmengine's DeepSpeedStrategy would pass to ``deepspeed.initialize``."""
    config = options.pop('config', None)
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise ConfigError(f'strategy.config: DeepSpeed config file not found: {config!r}')
        with open(config) as f:
            config = json.load(f)
    config = copy.deepcopy(dict(config or {}))
    for key in DEEPSPEED_CONFIG_KEYS:
        value = options.pop(key, None)
        if value is not None:
            config[key] = value
    config.setdefault('train_micro_batch_size_per_gpu', train_batch_size or 1)
    config.setdefault('gradient_accumulation_steps', 1)
    config.setdefault('steps_per_print', 10000000000000)
    return config


def deepspeed_precision(config: Mapping[str, Any]) -> Optional[str]:
    """The Lightning precision flag a DeepSpeed config's fp16/bf16 sections ask for."""
    if (config.get('fp16') or {}).get('enabled', False):
        return '16-mixed'
    if (config.get('bf16') or {}).get('enabled', False):
        return 'bf16-mixed'
    return None


def _deepspeed(options: Dict[str, Any], ctx: StrategyContext) -> StrategySpec:
    try:
        import deepspeed  # noqa: F401
    except ImportError as err:
        raise ConfigError('strategy.type: DeepSpeedStrategy needs the deepspeed package: '
                          'pip install "mm_lightning[deepspeed]"') from err
    notes = []
    if options.pop('inputs_to_half', None):
        notes.append("strategy.inputs_to_half: not used; Lightning's DeepSpeed precision casts every "
                     'floating-point input of the batch, not only the named ones')
    config = deepspeed_config(options, ctx.train_batch_size)
    # Lightning sets DeepSpeed's accumulation from the Trainer's accumulate_grad_batches, and refuses a config
    # that has it; a manually optimised module (ConfigModule) cannot accumulate through the Trainer.
    accumulation = config.pop('gradient_accumulation_steps')
    if accumulation != 1:
        raise ConfigError(f'strategy.gradient_accumulation_steps: {accumulation} is not supported: Lightning sets '
                          "DeepSpeed's accumulation from the Trainer, which cannot accumulate for a manually "
                          'optimised module; use 1 and a larger batch')
    # DeepSpeed's own default, which Lightning reads from the config when it evaluates under ZeRO-3
    config.setdefault('zero_allow_untested_optimizer', False)
    exclude_frozen = options.pop('exclude_frozen_parameters', None)
    extra = {} if exclude_frozen is None else {'exclude_frozen_parameters': exclude_frozen}
    _no_options_left(options, 'strategy')
    return StrategySpec(AnyDeviceDeepSpeedStrategy, dict(config=config, **_process_group(ctx), **extra), notes)


def _single_device(options: Dict[str, Any], ctx: StrategyContext) -> StrategySpec:
    if ctx.launcher != 'none':
        raise ConfigError(f'strategy.type: SingleDeviceStrategy cannot run under launcher={ctx.launcher!r}')
    _no_options_left(options, 'strategy')
    device = torch.device('cuda', 0) if ctx.accelerator == 'gpu' else torch.device('cpu')
    return StrategySpec(SingleDeviceStrategy, dict(device=device))


def _colossalai(options: Dict[str, Any], ctx: StrategyContext) -> StrategySpec:
    raise ConfigError('strategy.type: ColossalAIStrategy is not supported (Lightning has no ColossalAI '
                      "strategy). Use type='FSDPStrategy' to shard parameters, gradients and optimizer state, "
                      "or type='DeepSpeedStrategy' for ZeRO.")


#: mmengine strategy type -> translation into a Lightning strategy.
STRATEGIES: Dict[str, Callable[[Dict[str, Any], StrategyContext], StrategySpec]] = {
    'SingleDeviceStrategy': _single_device,
    'DDPStrategy': _ddp,
    'FSDPStrategy': _fsdp,
    'DeepSpeedStrategy': _deepspeed,
    'ColossalAIStrategy': _colossalai,
}

#: Runner ``model_wrapper_cfg`` type -> translation of the wrapper's kwargs into a Lightning strategy.
MODEL_WRAPPERS: Dict[str, Callable[[Dict[str, Any], StrategyContext], StrategySpec]] = {
    'MMDistributedDataParallel': _ddp_strategy,
    'MMFullyShardedDataParallel': lambda kwargs, ctx: _fsdp_strategy(kwargs, ctx, 'model_wrapper_cfg'),
}

#: Keys mmengine's strategies take that belong to the runner, not to the strategy object.
RUNNER_OWNED_KEYS = ('work_dir', 'experiment_name', 'env_kwargs', 'log_kwargs', 'auto_scale_lr')


#: What a config's ``strategy`` translates to: a spec, or a Lightning name or object taken as is.
Translated = Union[StrategySpec, str, Strategy]


def build_strategy(strategy: Any, ctx: StrategyContext) -> Union[str, Strategy]:
    """A Lightning strategy (object or name) for the config's ``strategy`` (see module doc)."""
    translated = translate_strategy(strategy, ctx)
    return translated.build() if isinstance(translated, StrategySpec) else translated


def translate_strategy(strategy: Any, ctx: StrategyContext) -> Translated:
    """The config's ``strategy`` as a :class:`StrategySpec` (or a Lightning name or object), unbuilt."""
    if strategy is None:
        return _runner_style_strategy(ctx)
    if isinstance(strategy, (str, Strategy)):
        return strategy  # a Lightning strategy name or object, taken as is
    if not isinstance(strategy, Mapping) or 'type' not in strategy:
        raise ConfigError(f"strategy: expected a dict with 'type', a Lightning strategy name or object, "
                          f'got {strategy!r}')
    options = {k: v for k, v in copy.deepcopy(dict(strategy)).items() if k not in RUNNER_OWNED_KEYS}
    strategy_type = options.pop('type')
    lightning_cls = _lightning_strategy_class(strategy_type)
    if lightning_cls is not None:  # Lightning's own strategy class, with its own keyword arguments
        if 'cluster_environment' in inspect.signature(lightning_cls).parameters:
            options.setdefault('cluster_environment', cluster_environment(ctx.launcher))
        try:
            inspect.signature(lightning_cls).bind(**options)
        except TypeError as err:
            raise ConfigError(f'strategy: {lightning_cls.__name__}: {err}') from err
        return StrategySpec(lightning_cls, options)
    name = type_name(strategy_type)
    if name not in STRATEGIES:
        raise ConfigError(f'strategy.type: {name!r} is not supported; use one of {sorted(STRATEGIES)} '
                          "or a Lightning strategy (e.g. 'lightning.pytorch.strategies.DDPStrategy')")
    return STRATEGIES[name](options, ctx)


def _runner_style_strategy(ctx: StrategyContext) -> Union[StrategySpec, str]:
    """What mmengine's Runner does without a ``strategy``: DDP under a launcher, via model_wrapper_cfg."""
    wrapper_cfg = ctx.runner_cfg.get('model_wrapper_cfg')
    if ctx.launcher == 'none':
        return 'auto'  # mmengine's Runner ignores model_wrapper_cfg in one process (it does not wrap)
    if wrapper_cfg is None:
        # mmengine's Runner wraps with MMDistributedDataParallel(broadcast_buffers=False).
        return _ddp_strategy(dict(broadcast_buffers=False,
                                  find_unused_parameters=ctx.runner_cfg.get('find_unused_parameters', False)), ctx)
    kwargs = dict(wrapper_cfg)
    wrapper_type = kwargs.pop('type', 'MMDistributedDataParallel')
    name = type_name(wrapper_type)
    if name not in MODEL_WRAPPERS:
        raise ConfigError(f'model_wrapper_cfg.type: {name!r} is not supported; use one of {sorted(MODEL_WRAPPERS)}')
    return MODEL_WRAPPERS[name](kwargs, ctx)


def _lightning_strategy_class(strategy_type: Any) -> Optional[type]:
    obj = resolve_type(strategy_type)
    if obj is None:
        raise ConfigError(f'strategy.type: cannot import {strategy_type!r}')
    return obj if inspect.isclass(obj) and issubclass(obj, Strategy) else None


def _wrapper_kwargs(wrapper: Any, key: str, allowed_types: tuple) -> Dict[str, Any]:
    kwargs = dict(wrapper or {})
    wrapper_type = kwargs.pop('type', allowed_types[0])
    name = type_name(wrapper_type)
    if name not in allowed_types:
        raise ConfigError(f'{key}.type: {name!r} is not supported here; use {allowed_types[0]}')
    return kwargs


def _no_options_left(options: Mapping[str, Any], key: str) -> None:
    if options:
        raise ConfigError(f'{key}: unsupported options {sorted(options)}')
