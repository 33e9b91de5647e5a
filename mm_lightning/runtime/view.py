"""``RunnerView``: the mmengine runner that hooks receive, as a view onto the Lightning objects.

The ``ConfigModule`` owns the model, optimizers, schedulers, evaluators, hooks and loop
progress; the datamodule owns the loaders and the position in the data; the Trainer runs
them. The view keeps no copies: every answer is read from those objects, so it always
describes what the Trainer actually runs, whoever built that Trainer.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Union

import lightning.pytorch as pl
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS
from mmengine.runner import LogProcessor
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.priority import Priority
from mmengine.visualization import Visualizer
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from mm_lightning.config.loading import config_error
from mm_lightning.config.registry import build
from mm_lightning.ground.internals import ParamScheduler, batch_size
from mm_lightning.runtime.context import build_log_processor, build_visualizer, setup_environment
from mm_lightning.runtime.contract import RunModule
from mm_lightning.runtime.hooks import merged_default_hooks
from mm_lightning.runtime.loaders import build_dataloader
from mm_lightning.runtime.loops import build_train_loop
from mm_lightning.runtime.metrics import build_evaluator
from mm_lightning.runtime.optim import build_optim_wrapper, scale_lr
from mm_lightning.runtime.schedulers import build_param_schedulers
from mm_lightning.state import checkpoint as ckpt
from mm_lightning.translate.launchers import config_layout, init_process_group
from mm_lightning.translate.strategies import build_strategy, strategy_context

__all__ = ['RunnerView']


def _context(name: str, doc: str = '') -> property:
    return property(lambda self: getattr(self.module.context, name), doc=doc)


def _assignable_context(name: str, doc: str = '') -> property:
    def fset(self: 'RunnerView', value: Any) -> None:
        setattr(self.module.context, name, value)
    return property(lambda self: getattr(self.module.context, name), fset, doc=doc)


def _loop_value(name: str, doc: str = '') -> property:
    return property(lambda self: getattr(self.train_loop, name) if self.train_loop is not None else 0, doc=doc)


def _dataloader(loop: Optional[BaseLoop], split: str) -> DataLoader:
    """A loop's loader; an AttributeError before the loop is built, as mmengine's ``None.dataloader``."""
    if loop is None:
        raise AttributeError(f'{split}_dataloader: the {split} loop is not built yet')
    return loop.dataloader


class RunnerView:
    """mmengine's runner surface over a :class:`~mm_lightning.ConfigModule` and its Trainer."""

    def __init__(self, module: RunModule) -> None:
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
        return getattr(trainer, 'datamodule', None)  # Lightning sets it when a stage starts

    lightning_module = property(lambda self: self.module, doc='The ConfigModule.')

    @property
    def model(self) -> nn.Module:
        return self.module.model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self.module.model = model

    model_name = property(lambda self: type(self.module.model).__name__)
    @property
    def cfg(self) -> Config:
        return self.module.cfg

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

    # -- identity and outputs (see mm_lightning.runtime.context) ------------------------------------------------
    work_dir = _context('work_dir', 'Where checkpoints and logs go.')
    log_dir = _context('log_dir', 'work_dir/<timestamp>.')
    timestamp = _context('timestamp')
    experiment_name = _context('experiment_name')
    _experiment_name = _assignable_context('experiment_name', 'mmengine code assigns it; build_logger & co. read it.')
    rank = _context('rank')
    world_size = _context('world_size')
    distributed = _context('distributed')
    launcher = _context('launcher')
    seed = _context('seed')
    deterministic = _context('deterministic')
    default_scope = _context('default_scope')
    lightning_loggers = _context('lightning_loggers', 'The Lightning loggers vis_backends became.')
    logger: MMLogger = _assignable_context('logger')
    message_hub: MessageHub = _assignable_context('message_hub')
    visualizer: Visualizer = _assignable_context('visualizer')
    log_processor: LogProcessor = _assignable_context('log_processor')

    # -- loops ----------------------------------------------------------------------------------------
    @property
    def train_loop(self) -> Optional[BaseLoop]:
        """mmengine's training loop object (``EpochBasedTrainLoop``, ``IterBasedTrainLoop`` or the config's)."""
        return self.module.train_loop

    @property
    def val_loop(self) -> Optional[BaseLoop]:
        return self.module.loops.eval_loop('val')

    @property
    def test_loop(self) -> Optional[BaseLoop]:
        return self.module.loops.eval_loop('test')

    epoch = _loop_value('epoch', 'Epochs finished (advances after after_train_epoch).')
    iter = _loop_value('iter', 'Iterations finished (advances after after_train_iter).')
    max_epochs = _loop_value('max_epochs')
    max_iters = _loop_value('max_iters')

    @property
    def train_dataloader(self) -> DataLoader:
        return _dataloader(self.train_loop, 'train')

    @property
    def val_dataloader(self) -> DataLoader:
        return _dataloader(self.val_loop, 'val')

    @property
    def test_dataloader(self) -> DataLoader:
        return _dataloader(self.test_loop, 'test')

    val_evaluator = property(lambda self: self.val_loop.evaluator)
    test_evaluator = property(lambda self: self.test_loop.evaluator)
    val_interval = property(lambda self: self.train_loop.val_interval)
    val_begin = property(lambda self: self.train_loop.val_begin)

    # Private names mmengine's own hooks and log processor read from the runner.
    @property
    def _train_loop(self) -> Any:
        """mmengine's LogProcessor/LoggerHook read it: the built loop, else ``train_cfg`` (nothing is built)."""
        loop = self.module.train_loop
        return loop if loop is not None else self.module.loops.train_cfg

    @_train_loop.setter
    def _train_loop(self, loop: Any) -> None:
        self.module.loops.use_train_loop(loop)

    _log_dir = property(lambda self: self.log_dir, doc="mmengine's LoggerHook reads it.")

    @property
    def _hooks(self) -> List[Hook]:
        """mmengine's runners keep their hooks here; code reads, assigns and appends to it."""
        return self.module.hooks.hooks

    @_hooks.setter
    def _hooks(self, hooks: List[Hook]) -> None:
        self.module.hooks.hooks = hooks

    @property
    def _val_loop(self) -> Any:
        """The built validation loop, else ``val_cfg`` (mmengine builds it lazily)."""
        return self.module.loops.eval_loop('val') or self.module.loops.eval_settings('val')

    @property
    def _test_loop(self) -> Any:
        """The built test loop, else ``test_cfg``."""
        return self.module.loops.eval_loop('test') or self.module.loops.eval_settings('test')

    _train_dataloader = property(lambda self: self._loader_spec('train'), doc='train_dataloader as configured.')
    _val_dataloader = property(lambda self: self._loader_spec('val'), doc='val_dataloader as configured.')
    _test_dataloader = property(lambda self: self._loader_spec('test'), doc='test_dataloader as configured.')
    _val_evaluator = property(lambda self: self.module.loops.eval_config('val'), doc='val_evaluator as configured.')
    _test_evaluator = property(lambda self: self.module.loops.eval_config('test'), doc='test_evaluator as configured.')

    @property
    def _resume(self) -> Union[bool, str]:
        """Whether this run resumes: the config's ``resume``, or a checkpoint given to ``Trainer.fit``
        (mmengine's EMAHook reads it, and its tests set it)."""
        return self.module.resume or self.module.resumed

    @_resume.setter
    def _resume(self, resume: Union[bool, str]) -> None:
        self.module.resume = resume

    @property
    def _has_loaded(self) -> bool:
        """Whether ``load_from``/``resume`` (or ``load_checkpoint``) has been done."""
        return self.module.loaded

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

    # -- building (mmengine's build_* methods: each delegates to the module owning the concept) ------------
    @staticmethod
    def build_dataloader(dataloader: Union[DataLoader, Dict], seed: Optional[int] = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        """mmengine's ``build_dataloader``: dataset, sampler, batch sampler, collate, worker seeding."""
        return build_dataloader(dataloader, 'dataloader', seed, diff_rank_seed)

    def build_evaluator(self, evaluator: Union[Dict, List, Evaluator]) -> Evaluator:
        """mmengine's evaluator: a built one as it is, ``dict(metrics=...)`` from ``EVALUATOR``, or an
        ``Evaluator`` of a metric dict or list (native torchmetrics metrics included)."""
        return build_evaluator(evaluator)

    def build_model(self, model: Union[nn.Module, Dict]) -> nn.Module:
        """A model from its config (a built model is returned as is)."""
        if isinstance(model, nn.Module):
            return model
        if not isinstance(model, dict):
            raise config_error(f'model: model should be a nn.Module object or dict, but got {model!r}', TypeError)
        return build(MODELS, model, 'model')

    def wrap_model(self, model_wrapper_cfg: Optional[Dict], model: nn.Module) -> nn.Module:
        """The bare model, SyncBatchNorm reverted outside distributed runs, as mmengine's does.

        Under Lightning the strategy wraps the model (DDP, FSDP, DeepSpeed) when the Trainer
        starts; ``model_wrapper_cfg`` configures that strategy (see :mod:`mm_lightning.translate.strategies`).
        """
        if model_wrapper_cfg is not None:
            self.logger.info('wrap_model: the Lightning strategy wraps the model when the Trainer starts; '
                             f'model_wrapper_cfg={model_wrapper_cfg} is read from the config for it')
        return model if self.distributed else revert_sync_batchnorm(model)

    def build_optim_wrapper(self, optim_wrapper: Union[Optimizer, OptimWrapper, Dict]) -> OptimWrapper:
        """An optim wrapper (or ``OptimWrapperDict``) for the run's model, as mmengine builds it."""
        return build_optim_wrapper(self.model, optim_wrapper)

    def build_param_scheduler(self, scheduler: Union[Any, Dict, List]) -> Any:
        """Parameter schedulers for the built optim wrapper (``build_optim_wrapper`` first)."""
        if not isinstance(self.optim_wrapper, OptimWrapper):  # mmengine asserts it
            raise AssertionError('`build_optimizer` should be called before `build_param_scheduler` because the '
                                 'latter depends on the former')
        return build_param_schedulers(scheduler, self.optim_wrapper, self.train_loop)

    def scale_lr(self, optim_wrapper: OptimWrapper, auto_scale_lr: Optional[Dict] = None) -> None:
        """mmengine's linear scaling rule for ``auto_scale_lr``, with the real world size."""
        if isinstance(self.param_schedulers, list) and any(isinstance(s, ParamScheduler)
                                                           for s in self.param_schedulers):
            raise RuntimeError('`scale_lr` should be called before building ParamScheduler because '
                               'ParamScheduler will store initial lr from optimizer wrappers')
        scale_lr(optim_wrapper, auto_scale_lr, batch_size(self.train_dataloader), self.world_size,
                 self.logger)

    def build_message_hub(self, message_hub: Optional[Dict] = None) -> MessageHub:
        if message_hub is None:
            message_hub = dict(name=self._experiment_name)
        elif isinstance(message_hub, dict):
            message_hub.setdefault('name', self._experiment_name)
        else:
            raise TypeError(f'message_hub should be dict or None, but got {message_hub}')
        return MessageHub.get_instance(**message_hub)

    def build_visualizer(self, visualizer: Optional[Union[Visualizer, Dict]] = None) -> Visualizer:
        """A visualizer; vis backends with a Lightning logger write through it.

        See :mod:`mm_lightning.translate.loggers`.
        """
        return build_visualizer(visualizer, self._experiment_name, self.log_dir)[0]

    def build_log_processor(self, log_processor: Union[LogProcessor, Dict]) -> LogProcessor:
        return build_log_processor(log_processor)

    def build_logger(self, log_level: Union[int, str] = 'INFO', log_file: Optional[str] = None,
                     **kwargs: Any) -> MMLogger:
        if log_file is None:
            log_file = osp.join(self.log_dir, f'{self.timestamp}.log')
        log_cfg = dict(log_level=log_level, log_file=log_file, **kwargs)
        log_cfg.setdefault('name', self._experiment_name)
        log_cfg.setdefault('file_mode', 'a')
        return MMLogger.get_instance(**log_cfg)

    def set_randomness(self, seed: Optional[int], diff_rank_seed: bool = False, deterministic: bool = False) -> None:
        """Seed the global generators (as mmengine's); the run's seed and loaders' seeds follow."""
        self.module.context.set_randomness(seed, diff_rank_seed=diff_rank_seed, deterministic=deterministic)

    def setup_env(self, env_cfg: Dict) -> None:
        """``env_cfg`` (cudnn, multiprocessing, file limits) and the launcher's process group."""
        setup_environment(env_cfg, distributed=self.distributed)
        init_process_group(self.launcher, env_cfg)

    def build_strategy(self, strategy: Optional[Union[Any, Dict]] = None, launcher: str = 'none',
                       randomness: Optional[dict] = None, env_cfg: dict = dict(dist_cfg=dict(backend='nccl')),
                       experiment_name: Optional[str] = None, log_level: Optional[str] = None) -> Any:
        """The Lightning strategy ``strategy`` becomes (mmengine's builds its own strategy object)."""
        cfg = dict(self.cfg.items(), strategy=strategy, launcher=launcher, env_cfg=env_cfg)
        return build_strategy(strategy, strategy_context(cfg, config_layout(cfg, launcher)))

    def build_train_loop(self, loop: Union[BaseLoop, Dict]) -> BaseLoop:
        """mmengine's ``build_train_loop``: the loop over the training loader config (a built loop as it is)."""
        return build_train_loop(loop, self, self._loader_spec('train'))

    def build_val_loop(self, loop: Union[BaseLoop, Dict]) -> BaseLoop:
        """mmengine's ``build_val_loop``: with the loader and evaluator configs (a built loop as it is)."""
        return self.module.loops.build_eval_loop('val', loop, self.module.runner, self._loader_spec('val'))

    def build_test_loop(self, loop: Union[BaseLoop, Dict]) -> BaseLoop:
        """mmengine's ``build_test_loop``: with the loader and evaluator configs (a built loop as it is)."""
        return self.module.loops.build_eval_loop('test', loop, self.module.runner, self._loader_spec('test'))

    def _loader_spec(self, split: str) -> Any:
        datamodule = self.datamodule
        if datamodule is None:
            raise RuntimeError(f'{split}_dataloader: this ConfigModule is not attached to a Trainer with a '
                               'datamodule yet')
        return datamodule.spec(split)

    @property
    def strategy(self) -> Any:
        """The Lightning strategy of the Trainer running the module (None before one does)."""
        trainer = self.module.attached_trainer
        return trainer.strategy if trainer is not None else None

    # -- checkpoints (see mm_lightning.state.checkpoint) ---------------------------------------------------------
    def load_or_resume(self) -> None:
        """Resume (``resume=True``: latest in work_dir; a path) or load ``load_from``, once.

        Resuming before ``train()`` builds the training loop, optim wrapper and schedulers, as mmengine's does.
        """
        if self.module.loaded:
            return
        if self.module.has_training:
            _ = self.train_loop
        self.module.resumed = ckpt.load_or_resume(self.module, weights_only=not self.module.has_training)
        self.module.loaded = True

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:
        """Load model weights from an mmengine-format file; calls ``after_load_checkpoint``."""
        return ckpt.load_checkpoint(self.module, filename, map_location, strict, revise_keys)

    def resume(self, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """Resume weights, optimizer, schedulers, message hub, progress, data position and random state.

        Before ``train()`` it builds the training loop, optim wrapper and schedulers, as mmengine's does.
        """
        _ = self.train_loop
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

    def save_resumable_checkpoint(self) -> Optional[str]:
        """A checkpoint of the run as it stands between two iterations (SIGTERM, preemption); its path on
        the ranks that write it, None on the others."""
        return ckpt.save_between_iterations(self.module)

    def dump_config(self) -> None:
        """Write the config to work_dir (the config file's name, or ``<timestamp>.py``)."""
        self.module.context.dump_config(self.cfg)
