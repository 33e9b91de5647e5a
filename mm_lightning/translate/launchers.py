"""Where a config runs: the launcher, the layout (accelerator, devices, nodes) and the process group.

mmengine's ``launcher`` (``none``/``pytorch``/``slurm``/``mpi``, inferred from the
environment when not given) becomes a Lightning cluster environment; devices per node and
nodes come from arguments first, then the config, then the launcher's environment, so a
config can be translated for another machine. :func:`init_process_group` opens the group
early, as mmengine's Runner does before it seeds and builds the model; Lightning reuses it.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from mmengine.dist import infer_launcher

from mm_lightning.config.loading import ConfigError
from mm_lightning.ground.internals import destroy_dist_connection, init_dist_connection

__all__ = ['LauncherRule', 'LAUNCHERS', 'ACCELERATORS', 'BACKEND_ACCELERATORS', 'Layout', 'resolve_launcher',
           'accelerator_name', 'resolve_accelerator', 'launcher_variables', 'world_layout', 'resolve_layout',
           'config_layout', 'cluster_environment', 'process_group_settings', 'backend_refusal', 'check_backend',
           'require_launcher_variables', 'init_process_group']


@dataclass(frozen=True)
class LauncherRule:
    """How a launcher's processes find each other: its Lightning environment and variables."""

    environment: Optional[Callable[[], ClusterEnvironment]]  # None: Lightning's own environment
    started_by: str = ''
    world_size: str = ''               # variable: number of processes
    per_node: Optional[str] = None     # variable: processes per node (default: world size / nodes)
    nodes: Optional[str] = None        # variable: number of nodes (default: world size / per node)
    process: Tuple[str, ...] = ()      # further variables every process needs at run time


#: mmengine ``launcher`` -> Lightning cluster environment and the variables it reads.
LAUNCHERS: Dict[str, LauncherRule] = {
    'none': LauncherRule(None),
    'pytorch': LauncherRule(TorchElasticEnvironment, 'torchrun', 'WORLD_SIZE', per_node='LOCAL_WORLD_SIZE',
                            process=('RANK', 'LOCAL_RANK')),
    'slurm': LauncherRule(SLURMEnvironment, 'srun', 'SLURM_NTASKS', nodes='SLURM_NNODES',
                          process=('SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_NODEID')),
    'mpi': LauncherRule(MPIEnvironment, 'mpirun', 'OMPI_COMM_WORLD_SIZE', per_node='OMPI_COMM_WORLD_LOCAL_SIZE',
                        process=('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK')),
}

#: Accelerator names a layout may give -> the accelerator translated for ('auto': this machine's).
ACCELERATORS: Dict[str, Optional[str]] = {'cpu': 'cpu', 'gpu': 'gpu', 'cuda': 'gpu', 'auto': None}

#: Process-group backend -> the accelerator it needs at run time.
BACKEND_ACCELERATORS: Dict[str, str] = {'nccl': 'gpu'}



@dataclass(frozen=True)
class Layout:
    """Where a config runs: how processes start, on which accelerator, devices per node, nodes."""

    launcher: str
    accelerator: str
    devices: Any
    num_nodes: int


def resolve_launcher(launcher: Optional[str]) -> str:
    """The launcher, inferred from the environment as mmengine does when not given."""
    launcher = infer_launcher() if launcher is None else launcher
    if launcher not in LAUNCHERS:
        raise ConfigError(f'launcher: expected one of {sorted(LAUNCHERS)}, got {launcher!r}')
    return launcher


def accelerator_name() -> str:
    """This machine's accelerator."""
    return 'gpu' if torch.cuda.is_available() else 'cpu'


def resolve_accelerator(accelerator: Optional[str]) -> str:
    """``'cpu'`` or ``'gpu'``: the given accelerator, or this machine's when None or ``'auto'``."""
    name = 'auto' if accelerator is None else str(accelerator).lower()
    if name not in ACCELERATORS:
        raise ConfigError(f'accelerator: expected one of {sorted(ACCELERATORS)}, got {accelerator!r}')
    return ACCELERATORS[name] or accelerator_name()


def launcher_variables(launcher: str, names: Tuple[str, ...], hint: str) -> Dict[str, str]:
    """The launcher's environment variables ``names``; a ConfigError names the first one missing."""
    rule = LAUNCHERS[launcher]
    for name in names:
        if name not in os.environ:
            raise ConfigError(f'launcher: {launcher!r} needs the {rule.started_by} variable {name}, which is not '
                              f'set. {hint}')
    return {name: os.environ[name] for name in names}


def world_layout(launcher: str) -> Dict[str, int]:
    """``devices`` (per node) and ``num_nodes`` from the launcher's environment variables."""
    rule = LAUNCHERS[launcher]
    if rule.environment is None:
        return {'devices': 1, 'num_nodes': 1}
    hint = (f'Start the job with {rule.started_by}, or give devices and num_nodes (--devices/--num-nodes) '
            'to translate it for another machine.')
    world = int(launcher_variables(launcher, (rule.world_size,), hint)[rule.world_size])
    if rule.nodes is not None:
        nodes = int(os.environ.get(rule.nodes, 1))
        return {'devices': max(world // nodes, 1), 'num_nodes': nodes}
    per_node = int(os.environ.get(rule.per_node, world)) if rule.per_node else world
    return {'devices': per_node, 'num_nodes': max(world // max(per_node, 1), 1)}


def resolve_layout(launcher: Optional[str] = None, accelerator: Optional[str] = None, devices: Any = None,
                   num_nodes: Optional[int] = None) -> Layout:
    """The layout from what is given; the launcher's environment and this machine fill in the rest."""
    launcher = resolve_launcher(launcher)
    accelerator = resolve_accelerator(accelerator)
    if devices is None or num_nodes is None:
        found = world_layout(launcher)
        devices = found['devices'] if devices is None else devices
        num_nodes = found['num_nodes'] if num_nodes is None else num_nodes
    return Layout(launcher, accelerator, devices, int(num_nodes))


def config_layout(cfg: Mapping[str, Any], launcher: Optional[str] = None, accelerator: Optional[str] = None,
                  devices: Any = None, num_nodes: Optional[int] = None) -> Layout:
    """The layout for ``cfg``: arguments first, then the config (``launcher``, ``lightning_trainer``),
    then the launcher's environment and this machine."""
    configured = cfg.get('lightning_trainer') or {}
    return resolve_layout(launcher if launcher is not None else cfg.get('launcher'),
                          accelerator if accelerator is not None else configured.get('accelerator'),
                          devices if devices is not None else configured.get('devices'),
                          num_nodes if num_nodes is not None else configured.get('num_nodes'))


def cluster_environment(launcher: str) -> ClusterEnvironment:
    factory = LAUNCHERS[launcher].environment
    if factory is None:
        return LightningEnvironment()
    try:
        return factory()
    except ModuleNotFoundError as err:  # MPIEnvironment needs mpi4py
        raise ConfigError(f'launcher: {launcher!r} needs {err.name or "a missing package"}: {err}') from err


# -- process group ------------------------------------------------------------------------------
def process_group_settings(env_cfg: Mapping[str, Any], accelerator: str) -> Dict[str, Any]:
    """``env_cfg.dist_cfg`` as Lightning's ``process_group_backend`` and ``timeout``.

    The backend is kept as configured, whatever the accelerator: :func:`check_backend`
    refuses a mismatch when a run starts.
    """
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', None)
    timeout = dist_cfg.pop('timeout', None)
    if dist_cfg:
        raise ConfigError(f'env_cfg.dist_cfg: unsupported keys {sorted(dist_cfg)}; supported are backend, timeout')
    settings: Dict[str, Any] = {'process_group_backend': backend or ('nccl' if accelerator == 'gpu' else 'gloo')}
    if timeout is not None:
        settings['timeout'] = timedelta(seconds=timeout)
    return settings


def backend_refusal(env_cfg: Mapping[str, Any], accelerator: str) -> Optional[str]:
    """Why the configured backend cannot run on ``accelerator`` (None when it can)."""
    backend = (env_cfg.get('dist_cfg') or {}).get('backend')
    needed = BACKEND_ACCELERATORS.get(backend) if isinstance(backend, str) else None
    if needed is None or needed == accelerator:
        return None
    return (f'env_cfg.dist_cfg.backend: {backend!r} needs {needed.upper()} devices; on {accelerator.upper()} use '
            "'gloo' (--cfg-options env_cfg.dist_cfg.backend=gloo)")


def check_backend(env_cfg: Mapping[str, Any], accelerator: str) -> None:
    """Refuse, before a run opens its process group, a backend its accelerator cannot use."""
    refusal = backend_refusal(env_cfg, accelerator)
    if refusal is not None:
        raise ConfigError(refusal)


def require_launcher_variables(launcher: str) -> None:
    """Refuse a run under ``launcher`` that its launcher did not start (a variable every process needs is missing)."""
    rule = LAUNCHERS[launcher]
    if rule.environment is not None:
        launcher_variables(launcher, (rule.world_size, *rule.process), f'Start the job with {rule.started_by}.')


def init_process_group(launcher: str, env_cfg: Mapping[str, Any]) -> None:
    """Open the process group from the launcher's environment (Lightning reuses it)."""
    if launcher == 'none' or torch.distributed.is_initialized():
        return
    require_launcher_variables(launcher)
    accelerator = accelerator_name()
    check_backend(env_cfg, accelerator)
    settings = process_group_settings(env_cfg, accelerator)
    kwargs = {'timeout': settings['timeout']} if 'timeout' in settings else {}
    init_dist_connection(cluster_environment(launcher), settings['process_group_backend'], **kwargs)
    # Close it at exit for every backend (Lightning does so for NCCL only): a gloo group left to the
    # interpreter's shutdown can abort the process.
    atexit.register(destroy_dist_connection)
