"""mmengine ``strategy``/``launcher``/``env_cfg.dist_cfg`` as Lightning strategy settings.

One place turns what a config says about devices and distribution into the
``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` arguments of a Lightning
``Trainer``. Nothing here starts training; :func:`init_process_group` only opens the
process group early, as mmengine's Runner does before it seeds and builds the model.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from lightning.fabric.plugins.environments import (ClusterEnvironment, LightningEnvironment,
                                                   MPIEnvironment, SLURMEnvironment,
                                                   TorchElasticEnvironment)
from lightning.fabric.utilities.distributed import _init_dist_connection
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy
from mmengine.dist import infer_launcher

from .config import ConfigError

#: mmengine ``launcher`` -> Lightning cluster environment.
LAUNCHERS: Dict[str, Optional[Callable[[], ClusterEnvironment]]] = {
    'none': None,
    'pytorch': TorchElasticEnvironment,
    'slurm': SLURMEnvironment,
    'mpi': MPIEnvironment,
}


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


def world_layout(launcher: str) -> Dict[str, int]:
    """``devices`` and ``num_nodes`` for the Trainer, from the launcher's environment."""
    if launcher == 'none':
        return {'devices': 1, 'num_nodes': 1}
    env = cluster_environment(launcher)
    world_size = env.world_size()
    local = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('SLURM_NTASKS_PER_NODE', world_size)))
    return {'devices': local, 'num_nodes': max(world_size // max(local, 1), 1)}


def _single_device(options: Dict[str, Any], launcher: str, env_cfg: Mapping[str, Any]) -> Strategy:
    if launcher != 'none':
        raise ConfigError(f"strategy.type: SingleDeviceStrategy cannot run under launcher={launcher!r}")
    device = torch.device('cuda', 0) if accelerator_name() == 'gpu' else torch.device('cpu')
    return SingleDeviceStrategy(device=device)


def _ddp(options: Dict[str, Any], launcher: str, env_cfg: Mapping[str, Any]) -> Strategy:
    wrapper = dict(options.pop('model_wrapper', None) or {})
    wrapper.pop('type', None)
    return DDPStrategy(cluster_environment=cluster_environment(launcher),
                       **process_group_settings(env_cfg, accelerator_name()), **wrapper)


#: mmengine strategy type -> builder of the Lightning strategy.
STRATEGIES: Dict[str, Callable[[Dict[str, Any], str, Mapping[str, Any]], Strategy]] = {
    'SingleDeviceStrategy': _single_device,
    'DDPStrategy': _ddp,
}
#: Keys mmengine's strategies take that belong to the runner, not to the strategy object.
RUNNER_OWNED_KEYS = ('work_dir', 'experiment_name', 'env_kwargs', 'log_kwargs', 'auto_scale_lr')


def build_strategy(strategy: Any, launcher: str, env_cfg: Mapping[str, Any]) -> Any:
    """A Lightning strategy (object or name) for the config's ``strategy``."""
    if strategy is None:
        return 'auto' if launcher == 'none' else _ddp({}, launcher, env_cfg)
    if isinstance(strategy, (str, Strategy)):
        return strategy  # a Lightning strategy name or object, taken as is
    if not isinstance(strategy, Mapping) or 'type' not in strategy:
        raise ConfigError(f"strategy: expected a dict with 'type', a Lightning strategy name or object, "
                          f'got {strategy!r}')
    options = {k: v for k, v in strategy.items() if k not in RUNNER_OWNED_KEYS}
    strategy_type = options.pop('type')
    name = strategy_type if isinstance(strategy_type, str) else getattr(strategy_type, '__name__', '')
    if name in STRATEGIES:
        return STRATEGIES[name](options, launcher, env_cfg)
    raise ConfigError(f'strategy.type: {name!r} is not supported; supported mmengine strategies are '
                      f'{sorted(STRATEGIES)}')
