"""``RunnerView``: the mmengine runner that hooks receive, as a view onto the Lightning objects.

The ``ConfigModule`` owns the model, optimizers, schedulers, evaluators, hooks and loop
progress; the datamodule owns the loaders and the position in the data; the Trainer runs
them. The view keeps no copies: every answer is read from those objects, so it always
describes what the Trainer actually runs, whoever built that Trainer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

import lightning.pytorch as pl
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner import LogProcessor
from mmengine.runner.priority import Priority
from mmengine.visualization import Visualizer
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .data import build_dataloader
from .hooks import merged_default_hooks
from .loops import EvalLoop, TrainLoop
from .metrics import ConfigEvaluator, build_evaluator

if TYPE_CHECKING:
    from .module import ConfigModule


def _context(name: str, doc: str = '') -> property:
    return property(lambda self: getattr(self.module.context, name), doc=doc)


def _assignable_context(name: str, doc: str = '') -> property:
    def fset(self: 'RunnerView', value: Any) -> None:
        setattr(self.module.context, name, value)
    return property(lambda self: getattr(self.module.context, name), fset, doc=doc)


def _loop_value(name: str, doc: str = '') -> property:
    return property(lambda self: getattr(self.train_loop, name) if self.train_loop is not None else 0, doc=doc)


class RunnerView:
    """mmengine's runner surface over a :class:`~mm_lightning.ConfigModule` and its Trainer."""

    def __init__(self, module: 'ConfigModule') -> None:
        self.module = module

    # -- what runs -------------------------------------------------------------------------------
    @property
    def trainer(self) -> pl.Trainer:
        """The Trainer running the module."""
        trainer = self.module.attached_trainer
        if trainer is None:
            raise RuntimeError('this ConfigModule is not attached to a Trainer yet')
        return trainer

    @property
    def datamodule(self) -> Any:
        """The datamodule of the Trainer running the module (its loaders are what it iterates)."""
        trainer = self.module.attached_trainer
        return trainer.datamodule if trainer is not None else None

    lightning_module = property(lambda self: self.module, doc='The ConfigModule.')

    @property
    def model(self) -> nn.Module:
        return self.module.model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self.module.model = model

    model_name = property(lambda self: type(self.module.model).__name__)
    cfg: Config = property(lambda self: self.module.cfg)  # type: ignore[assignment]

    @property
    def optim_wrapper(self) -> Any:
        return self.module.optim_wrapper

    @optim_wrapper.setter
    def optim_wrapper(self, optim_wrapper: Any) -> None:
        self.module.optim_wrapper = optim_wrapper

    @property
    def param_schedulers(self) -> Any:
        return self.module.param_schedulers

    @param_schedulers.setter
    def param_schedulers(self, schedulers: Any) -> None:
        self.module.param_schedulers = schedulers

    @property
    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """The AMP loss scaler (AmpOptimWrapper's ``loss_scaler``), held by Lightning's precision plugin."""
        trainer = self.module.attached_trainer
        return getattr(trainer.precision_plugin, 'scaler', None) if trainer is not None else None

    # -- identity and outputs (see mm_lightning.context) ------------------------------------------------
    work_dir = _context('work_dir', 'Where checkpoints and logs go.')
    log_dir = _context('log_dir', 'work_dir/<timestamp>.')
    timestamp = _context('timestamp')
    experiment_name = _context('experiment_name')
    rank = _context('rank')
    world_size = _context('world_size')
    distributed = _context('distributed')
    launcher = _context('launcher')
    seed = _context('seed')
    deterministic = _context('deterministic')
    default_scope = _context('default_scope')
    lightning_loggers = _context('lightning_loggers', 'The Lightning loggers vis_backends became.')
    logger: MMLogger = _assignable_context('logger')  # type: ignore[assignment]
    message_hub: MessageHub = _assignable_context('message_hub')  # type: ignore[assignment]
    visualizer: Visualizer = _assignable_context('visualizer')  # type: ignore[assignment]
    log_processor: LogProcessor = _assignable_context('log_processor')  # type: ignore[assignment]

    # -- loops ----------------------------------------------------------------------------------------
    @property
    def train_loop(self) -> Optional[TrainLoop]:
        return self.module.train_loop

    @property
    def val_loop(self) -> Optional[EvalLoop]:
        return self.module.eval_loop('val')

    @property
    def test_loop(self) -> Optional[EvalLoop]:
        return self.module.eval_loop('test')

    epoch = _loop_value('epoch', 'Epochs finished (advances after after_train_epoch).')
    iter = _loop_value('iter', 'Iterations finished (advances after after_train_iter).')
    max_epochs = _loop_value('max_epochs')
    max_iters = _loop_value('max_iters')
    train_dataloader: DataLoader = property(lambda self: self.train_loop.dataloader)  # type: ignore[assignment]
    val_dataloader: DataLoader = property(lambda self: self.val_loop.dataloader)  # type: ignore[assignment]
    test_dataloader: DataLoader = property(lambda self: self.test_loop.dataloader)  # type: ignore[assignment]
    val_evaluator = property(lambda self: self.val_loop.evaluator)
    test_evaluator = property(lambda self: self.test_loop.evaluator)
    val_interval = property(lambda self: self.train_loop.val_interval)
    val_begin = property(lambda self: self.train_loop.val_begin)

    # Private names mmengine's own hooks and log processor read from the runner.
    _train_loop = property(lambda self: self.train_loop, doc="mmengine's LogProcessor/LoggerHook read it.")
    _log_dir = property(lambda self: self.log_dir, doc="mmengine's LoggerHook reads it.")
    _resume = property(lambda self: self.module.resume, doc="mmengine's EMAHook reads it.")
    _randomness_cfg = property(lambda self: self.module.context.randomness)

    # -- hooks ------------------------------------------------------------------------------------------
    @property
    def hooks(self) -> List[Hook]:
        return self.module.hooks.hooks

    def register_hook(self, hook: Union[Hook, Dict], priority: Optional[Union[str, int, Priority]] = None) -> None:
        """Insert an mmengine hook by priority (ties keep registration order)."""
        self.module.hooks.register(hook, priority)

    def register_default_hooks(self, hooks: Optional[Dict[str, Union[Hook, Dict]]] = None) -> None:
        for name, hook in merged_default_hooks(hooks).items():
            self.module.hooks.register(hook, key=f'default_hooks.{name}')

    def register_custom_hooks(self, hooks: List[Union[Hook, Dict]]) -> None:
        for index, hook in enumerate(hooks):
            self.module.hooks.register(hook, key=f'custom_hooks[{index}]')

    def register_hooks(self, default_hooks: Optional[Dict[str, Union[Hook, Dict]]] = None,
                       custom_hooks: Optional[List[Union[Hook, Dict]]] = None) -> None:
        self.register_default_hooks(default_hooks)
        if custom_hooks is not None:
            self.register_custom_hooks(custom_hooks)

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Call ``fn_name`` on every hook that has it, in priority order."""
        self.module.hooks.call(self, fn_name, **kwargs)

    def get_hooks_info(self) -> str:
        return self.module.hooks.info()

    # -- building ------------------------------------------------------------------------------------------
    @staticmethod
    def build_dataloader(dataloader: Union[DataLoader, Dict], seed: Optional[int] = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        """mmengine's ``build_dataloader``: dataset, sampler, batch sampler, collate, worker seeding."""
        return build_dataloader(dataloader, 'dataloader', seed, diff_rank_seed)

    def build_evaluator(self, evaluator: Union[Dict, List, Any]) -> ConfigEvaluator:
        """An evaluator from a built one, a metric dict, a list, or ``dict(metrics=...)``.

        mmengine metrics and native torchmetrics metrics both run as ``torchmetrics.Metric``.
        """
        return build_evaluator(evaluator, 'evaluator')

    # -- checkpoints (see mm_lightning.checkpoint) ---------------------------------------------------------
    def load_or_resume(self) -> None:
        """Resume (``resume=True``: latest in work_dir; a path) or load ``load_from``, once."""
        ckpt.load_or_resume(self.module)

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:
        """Load model weights from an mmengine-format file; calls ``after_load_checkpoint``."""
        return ckpt.load_checkpoint(self.module, filename, map_location, strict, revise_keys)

    def resume(self, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """Resume weights, optimizer, schedulers, message hub, progress, data position and random state."""
        ckpt.resume(self.module, filename, resume_optimizer, resume_param_scheduler, map_location)

    def save_checkpoint(self, out_dir: str, filename: str, file_client_args: Optional[dict] = None,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta: Optional[dict] = None, by_epoch: bool = True,
                        backend_args: Optional[dict] = None) -> None:
        """Write an mmengine-format checkpoint (``CheckpointHook`` calls this), crash-safely.

        Rank 0 writes, as under mmengine; every rank takes part where the strategy must
        gather sharded state, and each writes its part of a sharded FSDP checkpoint.
        """
        ckpt.save(self.module, out_dir, filename, file_client_args=file_client_args, save_optimizer=save_optimizer,
                  save_param_scheduler=save_param_scheduler, meta=meta, by_epoch=by_epoch,
                  backend_args=backend_args)

    def save_resumable_checkpoint(self) -> str:
        """A checkpoint of the run as it stands between two iterations (SIGTERM, preemption)."""
        return ckpt.save_between_iterations(self.module)

    def dump_config(self) -> None:
        """Write the config to work_dir (the config file's name, or ``<timestamp>.py``)."""
        self.module.context.dump_config(self.cfg)
