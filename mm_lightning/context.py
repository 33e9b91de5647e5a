"""The run's identity and outputs: work_dir, timestamp, experiment name, logger,
message hub, visualizer and log processor, set up in the order mmengine's Runner
uses (environment and seed first, so the model is built from the same random state).
"""
from __future__ import annotations

import copy
import os.path as osp
import platform
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple, Union

import torch
from lightning.pytorch.loggers import Logger
from mmengine.config import Config
from mmengine.dist import broadcast, get_dist_info
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import LOG_PROCESSORS, VISUALIZERS, DefaultScope
from mmengine.runner import LogProcessor
from mmengine.runner.utils import set_random_seed
from mmengine.utils import mkdir_or_exist
from mmengine.utils.dl_utils import collect_env, set_multi_processing
from mmengine.visualization import Visualizer

from .config import ConfigError
from .loggers import route_vis_backends
from .registry import build

ENV_CFG_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit')
RANDOMNESS_KEYS = ('seed', 'diff_rank_seed', 'deterministic')


@dataclass
class RunContext:
    """Everything a run writes through, shared by the runner facade and hooks."""

    work_dir: str
    timestamp: str
    experiment_name: str
    log_dir: str
    launcher: str
    rank: int
    world_size: int
    seed: int
    deterministic: bool
    env_cfg: dict
    randomness: dict
    logger: MMLogger
    message_hub: MessageHub
    visualizer: Visualizer
    log_processor: LogProcessor
    default_scope: Optional[DefaultScope] = None
    lightning_loggers: list = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return self.launcher != 'none'


def setup_environment(env_cfg: Mapping, distributed: bool) -> None:
    """Apply ``env_cfg`` as mmengine's Runner does (process group aside: see strategies)."""
    unknown = set(env_cfg) - set(ENV_CFG_KEYS)
    if unknown:
        raise ConfigError(f'env_cfg: unknown keys {sorted(unknown)}; supported keys are {list(ENV_CFG_KEYS)}')
    if env_cfg.get('cudnn_benchmark'):
        torch.backends.cudnn.benchmark = True
    set_multi_processing(**dict(env_cfg.get('mp_cfg') or {}), distributed=distributed)
    if platform.system() != 'Windows':
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = min(max(env_cfg.get('resource_limit', 4096), soft), hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def create_context(
    *,
    work_dir: str,
    cfg: Config,
    launcher: str,
    env_cfg: Mapping,
    randomness: Mapping,
    experiment_name: Optional[str],
    default_scope: Optional[str],
    log_level: Union[int, str],
    log_processor: Union[dict, LogProcessor, None],
    visualizer: Union[dict, Visualizer, None],
) -> RunContext:
    """Seed, name and open the run's outputs; the process group must already exist."""
    unknown = set(randomness) - set(RANDOMNESS_KEYS)
    if unknown:
        raise ConfigError(f'randomness: unknown keys {sorted(unknown)}; supported keys are {list(RANDOMNESS_KEYS)}')
    work_dir = osp.abspath(work_dir)
    mkdir_or_exist(work_dir)
    rank, world_size = get_dist_info()

    stamp = torch.tensor(time.time(), dtype=torch.float64)
    broadcast(stamp)
    timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime(stamp.item()))

    randomness = dict(randomness)
    seed = set_random_seed(seed=randomness.get('seed'),
                           deterministic=randomness.get('deterministic', False),
                           diff_rank_seed=randomness.get('diff_rank_seed', False))

    if experiment_name is None and cfg.filename is not None:
        experiment_name = osp.splitext(osp.basename(cfg.filename))[0]
    experiment_name = f'{experiment_name}_{timestamp}' if experiment_name else timestamp
    log_dir = osp.join(work_dir, timestamp)
    mkdir_or_exist(log_dir)

    scope = None
    if default_scope is not None:
        scope = DefaultScope.get_instance(experiment_name, scope_name=default_scope)

    log_processor = _build_log_processor(log_processor)
    logger = MMLogger.get_instance(experiment_name, log_level=log_level,
                                   log_file=osp.join(log_dir, f'{timestamp}.log'), file_mode='a')
    context = RunContext(
        work_dir=work_dir, timestamp=timestamp, experiment_name=experiment_name, log_dir=log_dir,
        launcher=launcher, rank=rank, world_size=world_size, seed=seed,
        deterministic=randomness.get('deterministic', False), env_cfg=dict(env_cfg),
        randomness=randomness, logger=logger, message_hub=MessageHub.get_instance(experiment_name),
        visualizer=None, log_processor=log_processor, default_scope=scope)  # type: ignore[arg-type]
    _log_env(context, cfg)
    context.visualizer, context.lightning_loggers = _build_visualizer(visualizer, experiment_name, log_dir)
    if cfg:
        context.visualizer.add_config(cfg)
    return context


def _build_log_processor(log_processor: Union[dict, LogProcessor, None]) -> LogProcessor:
    if isinstance(log_processor, LogProcessor):
        return log_processor
    log_processor = copy.deepcopy(dict(log_processor or {}))
    if 'type' in log_processor:
        return build(LOG_PROCESSORS, log_processor, 'log_processor')
    try:
        return LogProcessor(**log_processor)
    except TypeError as err:
        raise ConfigError(f'log_processor: {err}') from err


def _build_visualizer(visualizer: Union[dict, Visualizer, None], name: str,
                      log_dir: str) -> Tuple[Visualizer, List[Logger]]:
    """The run's visualizer and the Lightning loggers its backends write through."""
    if visualizer is None:
        return Visualizer.get_instance(name=name, vis_backends=[dict(type='LocalVisBackend')],
                                       save_dir=log_dir), []
    if isinstance(visualizer, Visualizer):
        return visualizer, []
    if not isinstance(visualizer, Mapping):
        raise ConfigError(f'visualizer: expected a dict or a Visualizer, got {visualizer!r}')
    visualizer, loggers = route_vis_backends(visualizer, log_dir)
    visualizer.setdefault('name', name)
    visualizer.setdefault('save_dir', log_dir)
    return build(VISUALIZERS, visualizer, 'visualizer'), loggers


def _log_env(context: RunContext, cfg: Config) -> None:
    runtime_env: OrderedDict = OrderedDict()
    runtime_env.update(context.env_cfg)
    runtime_env.update(context.randomness)
    runtime_env['seed'] = context.seed
    runtime_env['Distributed launcher'] = context.launcher
    runtime_env['Distributed training'] = context.distributed
    runtime_env['GPU number'] = context.world_size
    system = '\n    ' + '\n    '.join(f'{k}: {v}' for k, v in collect_env().items())
    runtime = '\n    ' + '\n    '.join(f'{k}: {v}' for k, v in runtime_env.items())
    dash = '-' * 60
    context.logger.info(f'\n{dash}\nSystem environment:{system}\n\nRuntime environment:{runtime}\n{dash}\n')
    if cfg._cfg_dict:
        context.logger.info(f'Config:\n{cfg.pretty_text}')


