"""The run's identity and outputs: work_dir, timestamp, experiment name, logger,
message hub, visualizer and log processor, set up in the order mmengine's Runner
uses (environment and seed first, so the model is built from the same random state).
"""
from __future__ import annotations

import copy
import fnmatch
import os
import os.path as osp
import platform
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, List, Mapping, Optional, Tuple, Type, Union

import torch
from lightning.pytorch.loggers import Logger
from mmengine.config import Config
from mmengine.dist import broadcast, get_dist_info, master_only
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import LOG_PROCESSORS, VISUALIZERS, DefaultScope
from mmengine.runner import LogProcessor
from mmengine.runner.utils import set_random_seed
from mmengine.utils import ManagerMixin, mkdir_or_exist
from mmengine.utils.dl_utils import collect_env, set_multi_processing
from mmengine.visualization import Visualizer

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.misspellings import misspelt_keys
from mm_lightning.config.registry import build
from mm_lightning.translate.loggers import route_vis_backends
from mm_lightning.translate.progress import draws, file_only

__all__ = ['ENV_CFG_KEYS', 'RANDOMNESS_KEYS', 'RunContext', 'setup_environment', 'create_context', 'unused_name',
           'build_log_processor', 'build_visualizer', 'CHECKPOINT_PATTERNS', 'checkpoint_files']

ENV_CFG_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit')
RANDOMNESS_KEYS = ('seed', 'diff_rank_seed', 'deterministic')


@dataclass
class RunContext:
    """Everything a run writes through, shared by the module, the runner view and hooks.

    Created without touching the disk; :meth:`open` creates the work_dir, the log file and
    the dumped config (``FlexibleRunner`` at construction, as mmengine's Runner does; a
    ``ConfigModule`` in someone else's Trainer when that Trainer starts).
    """

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
    log_level: Union[int, str]
    message_hub: MessageHub
    visualizer: Visualizer
    log_processor: LogProcessor
    default_scope: Optional[DefaultScope] = None
    lightning_loggers: list = field(default_factory=list)
    opened: bool = False
    _logger: Optional[MMLogger] = None
    _file_lines: List[str] = field(default_factory=list)  # log_to_file's, before the file is open
    earlier_checkpoints: List[str] = field(default_factory=list)  # in work_dir when the run opened it

    @property
    def distributed(self) -> bool:
        return self.launcher != 'none'

    @property
    def logger(self) -> MMLogger:
        """The run's logger (writing to ``log_dir`` once opened)."""
        return self._logger if self._logger is not None else MMLogger.get_current_instance()

    @logger.setter
    def logger(self, logger: MMLogger) -> None:
        self._logger = logger

    def open(self, cfg: Config, hooks_info: str, bar_draws: bool = False) -> None:
        """Create the work_dir and log_dir, start the log file, log the environment, config
        and hooks, and dump the config (rank 0), as mmengine's Runner does at construction.

        While a progress bar draws (``bar_draws``: the Trainer's; or the config's ``progress_bar``), the
        environment, config and hooks go to the log file only."""
        if self.opened:
            return
        self.opened = True
        self.earlier_checkpoints = checkpoint_files(self.work_dir)  # before this run writes any
        mkdir_or_exist(self.work_dir)
        mkdir_or_exist(self.log_dir)
        if self._logger is None:
            self._logger = MMLogger.get_instance(self.experiment_name, log_level=self.log_level,
                                                 log_file=osp.join(self.log_dir, f'{self.timestamp}.log'),
                                                 file_mode='a')
        for message in self._file_lines:
            self.log_to_file(message)
        self._file_lines.clear()
        with file_only(self._logger, when=bar_draws or draws((cfg or {}).get('progress_bar'))):
            _log_env(self, cfg)
            if cfg:
                self.visualizer.add_config(cfg)
            self._logger.info(f'Hooks will be executed in the following order:\n{hooks_info}')
        for message in misspelt_keys(cfg or {}):  # after the dump, where it is seen; mmengine says nothing
            self._logger.warning(message)
        self.dump_config(cfg)

    def warn_of_overwrites(self, resuming: bool) -> None:
        """One warning when training starts in a work_dir that held another run's checkpoints (found by
        :meth:`open`, before this run wrote any): this run writes over those of the same name. Not when it
        resumes that run."""
        if resuming or not self.earlier_checkpoints:
            return
        names = self.earlier_checkpoints
        shown = ', '.join(names[:4]) + (f' and {len(names) - 4} more' if len(names) > 4 else '')
        self.logger.warning(f'work_dir: {self.work_dir} holds checkpoints of an earlier run ({shown}); this run '
                            'writes over those of the same name. To continue that run instead, resume it '
                            '(resume=True, --resume); to keep them, choose another work_dir')

    def log_to_file(self, message: str) -> None:
        """An INFO line for the log file only (Lightning's own setup lines in our entry points); kept until
        :meth:`open` starts the file."""
        if not self.opened or self._logger is None:
            self._file_lines.append(message)
            return
        with file_only(self._logger):
            self._logger.info(message)

    @master_only
    def dump_config(self, cfg: Config) -> None:
        """Write the config to work_dir (the config file's name, or ``<timestamp>.py``)."""
        filename = osp.basename(cfg.filename) if cfg.filename else f'{self.timestamp}.py'
        cfg.dump(osp.join(self.work_dir, filename))

    def reseed(self, seed: int) -> None:
        """Seed again (a resumed checkpoint's seed), as mmengine's ``set_randomness``."""
        self.set_randomness(seed, diff_rank_seed=self.randomness.get('diff_rank_seed', False),
                            deterministic=self.randomness.get('deterministic', False))

    def set_randomness(self, seed: Optional[int], diff_rank_seed: bool = False, deterministic: bool = False) -> None:
        """mmengine's ``set_randomness``: seed every generator; ``seed`` becomes the run's."""
        self.randomness.update(seed=seed, diff_rank_seed=diff_rank_seed, deterministic=deterministic)
        self.deterministic = deterministic
        self.seed = set_random_seed(seed=seed, deterministic=deterministic, diff_rank_seed=diff_rank_seed)


#: Files a run's checkpointing writes in its work_dir (mmengine's CheckpointHook and a Lightning ``.ckpt``).
CHECKPOINT_PATTERNS = ('epoch_*.pth', 'iter_*.pth', 'best_*.pth', 'last_checkpoint', '*.ckpt')


def checkpoint_files(work_dir: str) -> List[str]:
    """The checkpoint files in ``work_dir`` (:data:`CHECKPOINT_PATTERNS`), in numeric order; none if it does not
    exist."""
    if not osp.isdir(work_dir):
        return []
    names = [entry.name for entry in os.scandir(work_dir) if entry.is_file()
             and any(fnmatch.fnmatch(entry.name, pattern) for pattern in CHECKPOINT_PATTERNS)]
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part
                                           for part in re.split(r'(\d+)', name)])


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
    """Seed and name the run (nothing is written; see :meth:`RunContext.open`).

    The process group must already exist, so that ranks agree on the timestamp and seed.
    """
    unknown = set(randomness) - set(RANDOMNESS_KEYS)
    if unknown:
        raise ConfigError(f'randomness: unknown keys {sorted(unknown)}; supported keys are {list(RANDOMNESS_KEYS)}')
    work_dir = osp.abspath(work_dir)
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
    experiment_name = unused_name(f'{experiment_name}_{timestamp}' if experiment_name else timestamp)
    log_dir = osp.join(work_dir, timestamp)

    scope = None
    if default_scope is not None:
        scope = DefaultScope.get_instance(experiment_name, scope_name=default_scope)

    vis, loggers = build_visualizer(visualizer, experiment_name, log_dir)
    return RunContext(
        work_dir=work_dir, timestamp=timestamp, experiment_name=experiment_name, log_dir=log_dir,
        launcher=launcher, rank=rank, world_size=world_size, seed=seed,
        deterministic=randomness.get('deterministic', False), env_cfg=dict(env_cfg), randomness=randomness,
        log_level=log_level, message_hub=MessageHub.get_instance(experiment_name), visualizer=vis,
        log_processor=build_log_processor(log_processor), default_scope=scope, lightning_loggers=loggers)


def unused_name(name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... when an mmengine manager already holds an instance of it.

    mmengine looks the run's logger, message hub, visualizer and scope up by the experiment name,
    ``<config name>_<timestamp>``: a run built in the same second as an earlier one in this
    process (a sweep, a notebook retrying a failed build) would get that run's instances, and
    write to its files or fail with its error.
    """
    candidate, count = name, 0
    while any(manager.check_instance_created(candidate) for manager in _manager_classes(ManagerMixin)):
        count += 1
        candidate = f'{name}_{count}'
    return candidate


def _manager_classes(cls: Type[ManagerMixin]) -> Iterator[Type[ManagerMixin]]:
    """``cls`` and its subclasses: each keeps its own instances (a Visualizer subclass apart from Visualizer)."""
    yield cls
    for subclass in cls.__subclasses__():
        yield from _manager_classes(subclass)


def build_log_processor(log_processor: Union[dict, LogProcessor, None]) -> LogProcessor:
    if isinstance(log_processor, LogProcessor):
        return log_processor
    if log_processor is not None and not isinstance(log_processor, Mapping):
        raise config_error(f'log_processor: log processor should be a LogProcessor object or dict, but got '
                           f'{log_processor!r}', TypeError)
    log_processor = copy.deepcopy(dict(log_processor or {}))
    if 'type' in log_processor:
        return build(LOG_PROCESSORS, log_processor, 'log_processor')
    try:
        return LogProcessor(**log_processor)
    except TypeError as err:
        raise config_error(f'log_processor: {err}', TypeError) from err


def build_visualizer(visualizer: Union[dict, Visualizer, None], name: str,
                      log_dir: str) -> Tuple[Visualizer, List[Logger]]:
    """The run's visualizer and the Lightning loggers its backends write through."""
    if visualizer is None:
        return Visualizer.get_instance(name=name, vis_backends=[dict(type='LocalVisBackend')],
                                       save_dir=log_dir), []
    if isinstance(visualizer, Visualizer):
        return visualizer, []
    if not isinstance(visualizer, Mapping):
        raise config_error(f'visualizer: visualizer should be Visualizer object, a dict or None, but got '
                           f'{visualizer!r}', TypeError)
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
    if len(cfg):
        context.logger.info(f'Config:\n{cfg.pretty_text}')


