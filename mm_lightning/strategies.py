"""mmengine ``strategy``/``model_wrapper_cfg``/``launcher``/``env_cfg.dist_cfg`` as Lightning strategies.

One place turns what a config says about devices and distribution into the
``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` of a Lightning ``Trainer``:

* FlexibleRunner configs: ``strategy=dict(type='DDPStrategy' | 'FSDPStrategy' |
  'DeepSpeedStrategy' | 'SingleDeviceStrategy', ...)`` (:data:`STRATEGIES`);
* Runner configs: ``model_wrapper_cfg=dict(type='MMDistributedDataParallel' |
  'MMFullyShardedDataParallel', ...)`` and ``find_unused_parameters`` (:data:`MODEL_WRAPPERS`);
* Lightning's own names and classes (``strategy='ddp'``, ``dict(type='lightning.pytorch.strategies.FSDPStrategy')``).

Nothing here starts training; :func:`init_process_group` only opens the process group
early, as mmengine's Runner does before it seeds and builds the model.
"""
from __future__ import annotations

import atexit
import copy
import inspect
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.fabric.utilities.distributed import _destroy_dist_connection, _init_dist_connection
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy, Strategy
from mmengine.dist import infer_launcher
from mmengine.registry import FUNCTIONS

from .config import ConfigError
from .registry import resolve_type, type_name

#: mmengine ``launcher`` -> Lightning cluster environment.
LAUNCHERS: Dict[str, Optional[Callable[[], ClusterEnvironment]]] = {
    'none': None,
    'pytorch': TorchElasticEnvironment,
    'slurm': SLURMEnvironment,
    'mpi': MPIEnvironment,
}


@dataclass
class StrategyContext:
    """What a strategy translation may read besides its own options."""

    launcher: str
    env_cfg: Mapping[str, Any]
    accelerator: str
    train_batch_size: Optional[int] = None
    runner_cfg: Mapping[str, Any] = field(default_factory=dict)


def resolve_launcher(launcher: Optional[str]) -> str:
    """The launcher, inferred from the environment as mmengine does when not given."""
    launcher = infer_launcher() if launcher is None else launcher
    if launcher not in LAUNCHERS:
        raise ConfigError(f'launcher: expected one of {sorted(LAUNCHERS)}, got {launcher!r}')
    return launcher


def accelerator_name() -> str:
    return 'gpu' if torch.cuda.is_available() else 'cpu'


def cluster_environment(launcher: str) -> ClusterEnvironment:
    factory = LAUNCHERS[launcher]
    return LightningEnvironment() if factory is None else factory()


def process_group_settings(env_cfg: Mapping[str, Any], accelerator: str) -> Dict[str, Any]:
    """``env_cfg.dist_cfg`` as Lightning's ``process_group_backend`` and ``timeout``."""
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', None)
    timeout = dist_cfg.pop('timeout', None)
    if dist_cfg:
        raise ConfigError(f'env_cfg.dist_cfg: unsupported keys {sorted(dist_cfg)}; supported are backend, timeout')
    if backend == 'nccl' and accelerator == 'cpu':
        raise ConfigError("env_cfg.dist_cfg.backend: 'nccl' needs CUDA devices; on CPU use 'gloo' "
                          '(--cfg-options env_cfg.dist_cfg.backend=gloo)')
    settings: Dict[str, Any] = {'process_group_backend': backend or ('nccl' if accelerator == 'gpu' else 'gloo')}
    if timeout is not None:
        settings['timeout'] = timedelta(seconds=timeout)
    return settings


def init_process_group(launcher: str, env_cfg: Mapping[str, Any]) -> None:
    """Open the process group from the launcher's environment (Lightning reuses it)."""
    if launcher == 'none' or torch.distributed.is_initialized():
        return
    settings = process_group_settings(env_cfg, accelerator_name())
    kwargs = {'timeout': settings['timeout']} if 'timeout' in settings else {}
    _init_dist_connection(cluster_environment(launcher), settings['process_group_backend'], **kwargs)
    # Close it at exit for every backend (Lightning does so for NCCL only): a gloo group left to the
    # interpreter's shutdown can abort the process.
    atexit.register(_destroy_dist_connection)


def world_layout(launcher: str) -> Dict[str, int]:
    """``devices`` (per node) and ``num_nodes`` for the Trainer, from the launcher's environment."""
    if launcher == 'none':
        return {'devices': 1, 'num_nodes': 1}
    world_size = cluster_environment(launcher).world_size()
    if launcher == 'slurm':
        nodes = int(os.environ.get('SLURM_NNODES', 1))
        return {'devices': max(world_size // nodes, 1), 'num_nodes': nodes}
    local = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('OMPI_COMM_WORLD_LOCAL_SIZE', world_size)))
    return {'devices': local, 'num_nodes': max(world_size // max(local, 1), 1)}


# -- DDP ----------------------------------------------------------------------------------------
def _ddp_strategy(ddp_kwargs: Dict[str, Any], ctx: StrategyContext) -> DDPStrategy:
    return DDPStrategy(cluster_environment=cluster_environment(ctx.launcher),
                       **process_group_settings(ctx.env_cfg, ctx.accelerator), **ddp_kwargs)


def _ddp(options: Dict[str, Any], ctx: StrategyContext) -> Strategy:
    wrapper = _wrapper_kwargs(options.pop('model_wrapper', None), 'strategy.model_wrapper',
                              ('MMDistributedDataParallel',))
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


def _fsdp_mixed_precision(spec: Any) -> Any:
    from torch.distributed.fsdp import MixedPrecision
    if spec is None or isinstance(spec, MixedPrecision):
        return spec
    spec = dict(spec)
    for key in ('param_dtype', 'reduce_dtype', 'buffer_dtype'):
        if isinstance(spec.get(key), str):
            spec[key] = getattr(torch, spec[key])
    return MixedPrecision(**spec)


def _check_fn_policy(check_fn: Callable[[torch.nn.Module], bool]) -> Callable[..., bool]:
    """mmengine's ``check_fn(module)`` as the wrap policy Lightning's activation checkpointing takes."""
    def policy(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
        return True if recurse else bool(check_fn(module))
    return policy


def _fsdp_kwargs(wrapper: Dict[str, Any], key: str) -> Dict[str, Any]:
    kwargs = dict(wrapper)
    if 'auto_wrap_policy' in kwargs and kwargs['auto_wrap_policy'] is not None:
        kwargs['auto_wrap_policy'] = _registered_function(kwargs['auto_wrap_policy'], f'{key}.auto_wrap_policy')
    if 'param_init_fn' in kwargs and kwargs['param_init_fn'] is not None:
        kwargs['param_init_fn'] = _registered_function(kwargs['param_init_fn'], f'{key}.param_init_fn')
    if 'mixed_precision' in kwargs:
        kwargs['mixed_precision'] = _fsdp_mixed_precision(kwargs['mixed_precision'])
    if isinstance(kwargs.get('backward_prefetch'), str):
        from torch.distributed.fsdp import BackwardPrefetch
        kwargs['backward_prefetch'] = BackwardPrefetch[kwargs['backward_prefetch']]
    if 'process_group' in kwargs:
        raise ConfigError(f'{key}.process_group: the process group comes from the launcher under Lightning')
    return kwargs


def _fsdp_strategy(wrapper_kwargs: Dict[str, Any], ctx: StrategyContext, state_dict_type: str = 'full',
                   activation_checkpointing: Optional[Mapping[str, Any]] = None) -> FSDPStrategy:
    extra: Dict[str, Any] = {}
    if activation_checkpointing is not None:
        spec = dict(activation_checkpointing)
        check_fn = _registered_function(spec.pop('check_fn'), 'strategy.activation_checkpointing.check_fn')
        if spec:
            raise ConfigError(f'strategy.activation_checkpointing: unsupported keys {sorted(spec)}')
        extra['activation_checkpointing_policy'] = _check_fn_policy(check_fn)
    return FSDPStrategy(cluster_environment=cluster_environment(ctx.launcher),
                        **process_group_settings(ctx.env_cfg, ctx.accelerator),
                        state_dict_type=state_dict_type, **extra, **wrapper_kwargs)


def _fsdp(options: Dict[str, Any], ctx: StrategyContext) -> Strategy:
    wrapper = _wrapper_kwargs(options.pop('model_wrapper', None), 'strategy.model_wrapper',
                              ('MMFullyShardedDataParallel',))
    state_dict_cfg = options.pop('state_dict_cfg', 'local')
    if isinstance(state_dict_cfg, Mapping):
        state_dict_cfg = state_dict_cfg.get('state_dict_type', 'local')
    state_dict_cfg = getattr(state_dict_cfg, 'name', state_dict_cfg)
    if state_dict_cfg not in _STATE_DICT_TYPES:
        raise ConfigError(f'strategy.state_dict_cfg: expected full or local (sharded), got {state_dict_cfg!r}')
    if options.pop('skip_init_weights', False):
        raise ConfigError('strategy.skip_init_weights: not supported; Lightning materialises FSDP modules '
                          "itself (build large models in the model's configure_model)")
    activation_checkpointing = options.pop('activation_checkpointing', None)
    _no_options_left(options, 'strategy')
    return _fsdp_strategy(_fsdp_kwargs(wrapper, 'strategy.model_wrapper'), ctx,
                          _STATE_DICT_TYPES[state_dict_cfg], activation_checkpointing)


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


def _deepspeed(options: Dict[str, Any], ctx: StrategyContext) -> Strategy:
    try:
        import deepspeed  # noqa: F401
        from lightning.pytorch.strategies import DeepSpeedStrategy
    except ImportError as err:
        raise ConfigError('strategy.type: DeepSpeedStrategy needs the deepspeed package: '
                          'pip install "mm_lightning[deepspeed]"') from err
    options.pop('inputs_to_half', None)  # Lightning's DeepSpeed precision casts float inputs itself
    config = deepspeed_config(options, ctx.train_batch_size)
    exclude_frozen = options.pop('exclude_frozen_parameters', None)
    extra = {} if exclude_frozen is None else {'exclude_frozen_parameters': exclude_frozen}
    _no_options_left(options, 'strategy')
    return DeepSpeedStrategy(config=config, cluster_environment=cluster_environment(ctx.launcher),
                             **process_group_settings(ctx.env_cfg, ctx.accelerator), **extra)


def _single_device(options: Dict[str, Any], ctx: StrategyContext) -> Strategy:
    if ctx.launcher != 'none':
        raise ConfigError(f'strategy.type: SingleDeviceStrategy cannot run under launcher={ctx.launcher!r}')
    _no_options_left(options, 'strategy')
    device = torch.device('cuda', 0) if ctx.accelerator == 'gpu' else torch.device('cpu')
    return SingleDeviceStrategy(device=device)


def _colossalai(options: Dict[str, Any], ctx: StrategyContext) -> Strategy:
    raise ConfigError('strategy.type: ColossalAIStrategy is not supported (Lightning has no ColossalAI '
                      "strategy). Use type='FSDPStrategy' to shard parameters, gradients and optimizer state, "
                      "or type='DeepSpeedStrategy' for ZeRO.")


#: mmengine strategy type -> builder of the Lightning strategy.
STRATEGIES: Dict[str, Callable[[Dict[str, Any], StrategyContext], Strategy]] = {
    'SingleDeviceStrategy': _single_device,
    'DDPStrategy': _ddp,
    'FSDPStrategy': _fsdp,
    'DeepSpeedStrategy': _deepspeed,
    'ColossalAIStrategy': _colossalai,
}

#: Runner ``model_wrapper_cfg`` type -> builder of the Lightning strategy from the wrapper's kwargs.
MODEL_WRAPPERS: Dict[str, Callable[[Dict[str, Any], StrategyContext], Strategy]] = {
    'MMDistributedDataParallel': _ddp_strategy,
    'MMFullyShardedDataParallel': lambda kwargs, ctx: _fsdp_strategy(
        _fsdp_kwargs(kwargs, 'model_wrapper_cfg'), ctx),
}

#: Keys mmengine's strategies take that belong to the runner, not to the strategy object.
RUNNER_OWNED_KEYS = ('work_dir', 'experiment_name', 'env_kwargs', 'log_kwargs', 'auto_scale_lr')


def build_strategy(strategy: Any, ctx: StrategyContext) -> Any:
    """A Lightning strategy (object or name) for the config's ``strategy`` (see module doc)."""
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
            return lightning_cls(**options)
        except TypeError as err:
            raise ConfigError(f'strategy: {lightning_cls.__name__}: {err}') from err
    name = type_name(strategy_type)
    if name not in STRATEGIES:
        raise ConfigError(f'strategy.type: {name!r} is not supported; use one of {sorted(STRATEGIES)} '
                          "or a Lightning strategy (e.g. 'lightning.pytorch.strategies.DDPStrategy')")
    return STRATEGIES[name](options, ctx)


def _runner_style_strategy(ctx: StrategyContext) -> Any:
    """What mmengine's Runner does without a ``strategy``: DDP under a launcher, via model_wrapper_cfg."""
    wrapper_cfg = ctx.runner_cfg.get('model_wrapper_cfg')
    if ctx.launcher == 'none':
        if wrapper_cfg is not None:
            raise ConfigError('model_wrapper_cfg: wrapping needs a distributed launcher '
                              '(launcher=pytorch/slurm/mpi); mmengine does not wrap single-process runs either')
        return 'auto'
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
