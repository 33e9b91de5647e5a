"""One config trained for a fixed number of iterations under mmengine's Runner or under mm_lightning.

``compare`` and ``benchmark`` both need the two engines to run the same config and to
stop after the same iteration. A config's schedule cannot say "stop after N iterations"
without changing what it trains: ``max_iters``/``max_epochs`` also set scheduler ends and
the last-iteration validation, and ``train_loop.stop_training`` ends epoch-based loops
only at an epoch's end. So both runs get the same recording hook instead: priority
``LOWEST`` (it runs after every other hook of a stage), it records each iteration, and
at the ``before_train_iter`` of iteration N+1 it raises :class:`IterationLimit`. Both
engines call ``before_train_iter`` from their loop and let the exception through, so
both stop at the same point: after iteration N with its ``after_train_iter`` hooks,
and after any validation or epoch end that follows it. A run that ends earlier (its
schedule is shorter than N) ends as it would anyway.
"""
from __future__ import annotations

import copy
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mm_lightning.config.loading import ConfigError
from mm_lightning.runner.flexible_runner import FlexibleRunner

__all__ = ['ENGINES', 'IterationLimit', 'Iteration', 'Validation', 'IterationRecorder', 'EngineRun', 'batch_size',
           'prepared_config', 'fixed_seed', 'run_engine']

#: Engine name -> its runner class.
ENGINES: Dict[str, Union[Type[Runner], Type[FlexibleRunner]]] = {'mmengine': Runner, 'mm_lightning': FlexibleRunner}

_run_ids = itertools.count()


class IterationLimit(Exception):
    """Raised by :class:`IterationRecorder` to end training after the requested iterations."""


@dataclass
class Iteration:
    """One training iteration as a hook sees it: losses, the LRs it used, when it ran."""

    number: int                   # 1-based, as mmengine's log lines count
    epoch: int                    # 0-based epoch the iteration belongs to
    losses: Dict[str, float]
    lr: Dict[str, List[float]]
    started: float                # perf_counter at before_train_iter (the batch has been loaded)
    ended: float                  # perf_counter at after_train_iter
    samples: int = 0              # samples in the batch
    cpu_ended: Optional[float] = None  # process_time at after_train_iter: this process's CPU time, all its threads


@dataclass
class Validation:
    """The metrics of a validation and how many training iterations preceded it."""

    after_iteration: int
    metrics: Dict[str, Any]


class IterationRecorder(Hook):
    """Records every iteration and validation, and ends training after ``max_iters`` iterations."""

    priority = 'LOWEST'

    def __init__(self, max_iters: int) -> None:
        self.max_iters = max_iters
        self.iterations: List[Iteration] = []
        self.validations: List[Validation] = []
        self._started = 0.0
        self._lr: Dict[str, List[float]] = {}

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if len(self.iterations) >= self.max_iters:
            raise IterationLimit(self.max_iters)
        self._started = time.perf_counter()
        self._lr = {key: [float(lr) for lr in values] for key, values in runner.optim_wrapper.get_lr().items()}

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        losses = {key: scalar for key, value in (outputs or {}).items() if (scalar := _scalar(value)) is not None}
        self.iterations.append(Iteration(len(self.iterations) + 1, runner.epoch, losses, self._lr,
                                         self._started, time.perf_counter(), batch_size(data_batch),
                                         time.process_time()))

    def after_val_epoch(self, runner: Any, metrics: Optional[Dict[str, Any]] = None) -> None:
        self.validations.append(Validation(len(self.iterations), dict(metrics or {})))


@dataclass
class EngineRun:
    """What one engine did in its N iterations."""

    engine: str
    iterations: List[Iteration]
    validations: List[Validation]
    started: float                # perf_counter before the runner was built
    seed: Optional[int] = None
    work_dir: str = ''


def _scalar(value: Any) -> Optional[float]:
    """A logged value as a float (log vars are scalars, tensors or not); None for anything else."""
    if torch.is_tensor(value):
        return float(value.detach()) if value.numel() == 1 else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def batch_size(data_batch: Any) -> int:
    """Samples in a batch: its first tensor's or list's length (mmengine batches are dicts of them)."""
    if isinstance(data_batch, dict):
        return next((batch_size(value) for value in data_batch.values() if batch_size(value)), 0)
    if torch.is_tensor(data_batch):
        return int(data_batch.shape[0]) if data_batch.dim() else 0
    return len(data_batch) if isinstance(data_batch, (list, tuple)) else 0


def prepared_config(cfg: Config, work_dir: str, name: str) -> Config:
    """A copy of ``cfg`` for one engine's run: its own work_dir and experiment name, one process."""
    launcher = cfg.get('launcher')
    if launcher not in (None, 'none'):
        raise ConfigError(f'launcher: these runs are single-process; got {launcher!r} '
                          '(--cfg-options launcher=none)')
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{name}_{os.getpid()}_{next(_run_ids)}'  # mmengine keys loggers by this name
    cfg.launcher = 'none'
    return cfg


def fixed_seed(cfg: Config, default: int = 0) -> Tuple[Config, int]:
    """``cfg`` with a seed both engines use: the config's own, else ``default``."""
    cfg = copy.deepcopy(cfg)
    randomness = dict(cfg.get('randomness') or {})
    if randomness.get('seed') is None:
        randomness['seed'] = default
    cfg.randomness = randomness
    return cfg, randomness['seed']


def run_engine(engine: str, cfg: Config, max_iters: int, work_dir: str) -> EngineRun:
    """Train ``cfg`` under ``engine`` for ``max_iters`` iterations (fewer if its schedule ends first)."""
    if engine not in ENGINES:
        raise ConfigError(f'engine: expected one of {sorted(ENGINES)}, got {engine!r}')
    if max_iters < 1:
        raise ConfigError(f'iters: expected a positive number of iterations, got {max_iters}')
    if cfg.get('train_cfg') is None:
        raise ConfigError('train_cfg: the config does not train (no train_cfg)')
    cfg = prepared_config(cfg, work_dir, engine)
    started = time.perf_counter()
    runner = ENGINES[engine].from_cfg(cfg)
    recorder = IterationRecorder(max_iters)
    runner.register_hook(recorder)
    try:
        runner.train()
    except IterationLimit:
        pass
    return EngineRun(engine, recorder.iterations, recorder.validations, started, seed=runner.seed,
                     work_dir=work_dir)
