"""``FlexibleRunner``: mmengine's runner API as a thin facade over one Lightning Trainer.

The constructor and ``from_cfg`` take what mmengine's ``FlexibleRunner`` takes. Parts
are built by the module owning each concept (context, model, data, optim, schedulers,
loops, hooks, checkpoint, trainer); Lightning runs them. The facade is also the
``runner`` every mmengine hook receives.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Union

import lightning.pytorch as pl
import torch
from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.evaluator import Evaluator
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import convert_sync_batchnorm, is_model_wrapper, revert_sync_batchnorm
from mmengine.model.efficient_conv_bn_eval import turn_on_efficient_conv_bn_eval
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS
from mmengine.runner import LogProcessor
from mmengine.runner.activation_checkpointing import turn_on_activation_checkpointing
from mmengine.runner.priority import Priority
from mmengine.runner.utils import _get_batch_size, set_random_seed
from mmengine.visualization import Visualizer
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .config import ConfigError, ConfigLike, load_config, private_copy, require_together
from .context import RunContext, create_context, setup_environment
from .data import ConfigDataModule, build_dataloader, train_iterations
from .hooks import HookBridge, HookList, is_lightning_callback, merged_default_hooks, split_custom_hooks
from .loops import EvalLoop, TrainLoop, parse_eval_cfg, parse_train_cfg, start_fit_at_epoch
from .metrics import ConfigEvaluator, build_evaluator
from .module import ConfigModule
from .optim import build_optim_wrapper, route_through_lightning, scale_lr
from .registry import build, config_key
from .schedulers import build_param_schedulers
from .strategies import init_process_group, resolve_launcher
from .trainer import trainer_kwargs

#: Constructor keywords ``from_cfg`` reads from a config, with their defaults (mmengine's).
CONFIG_KEYWORDS: Dict[str, Any] = dict(
    work_dir='work_dirs', experiment_name=None, train_dataloader=None, optim_wrapper=None, param_scheduler=None,
    train_cfg=None, val_dataloader=None, val_evaluator=None, val_cfg=None, test_dataloader=None,
    test_evaluator=None, test_cfg=None, strategy=None, auto_scale_lr=None, default_hooks=None, custom_hooks=None,
    data_preprocessor=None, load_from=None, resume=False, launcher=None, env_cfg=None, log_processor=None,
    log_level='INFO', visualizer=None, default_scope='mmengine', randomness=dict(seed=None), compile=False)
#: Config keys (not constructor keywords) that shape the Trainer: Runner-style wrapping and extras.
RUNNER_TRAINER_KEYS = ('model_wrapper_cfg', 'find_unused_parameters', 'lightning_trainer', 'progress_bar')


class FlexibleRunner:
    """Run an mmengine config on a Lightning Trainer (mmengine's ``FlexibleRunner`` API).

    ``train()`` returns the model; ``val()``/``test()`` return the metrics dict.
    """

    def __init__(
        self,
        model: Union[nn.Module, Dict],
        *,
        work_dir: str = 'work_dirs',
        experiment_name: Optional[str] = None,
        train_dataloader: Optional[Union[DataLoader, Dict]] = None,
        optim_wrapper: Optional[Union[OptimWrapper, Dict]] = None,
        param_scheduler: Optional[Union[Any, Dict, List]] = None,
        train_cfg: Optional[Dict] = None,
        val_dataloader: Optional[Union[DataLoader, Dict]] = None,
        val_evaluator: Optional[Union[Evaluator, Dict, List]] = None,
        val_cfg: Optional[Dict] = None,
        test_dataloader: Optional[Union[DataLoader, Dict]] = None,
        test_evaluator: Optional[Union[Evaluator, Dict, List]] = None,
        test_cfg: Optional[Dict] = None,
        strategy: Optional[Union[str, Dict, pl.strategies.Strategy]] = None,
        auto_scale_lr: Optional[Dict] = None,
        default_hooks: Optional[Dict[str, Union[Hook, Dict]]] = None,
        custom_hooks: Optional[List[Union[Hook, Dict]]] = None,
        data_preprocessor: Union[nn.Module, Dict, None] = None,
        load_from: Optional[str] = None,
        resume: Union[str, bool] = False,
        launcher: Optional[str] = None,
        env_cfg: Optional[Dict] = None,
        log_processor: Optional[Dict] = None,
        log_level: str = 'INFO',
        visualizer: Optional[Union[Visualizer, Dict]] = None,
        default_scope: Optional[str] = 'mmengine',
        randomness: Optional[Dict] = None,
        compile: Union[bool, Dict] = False,
        cfg: Optional[Union[Dict, Config]] = None,
    ) -> None:
        self.cfg = private_copy(cfg)
        require_together(train_dataloader=train_dataloader, train_cfg=train_cfg, optim_wrapper=optim_wrapper)
        require_together(val_dataloader=val_dataloader, val_cfg=val_cfg, val_evaluator=val_evaluator)
        require_together(test_dataloader=test_dataloader, test_cfg=test_cfg, test_evaluator=test_evaluator)
        if param_scheduler is not None and optim_wrapper is None:
            raise ConfigError('param_scheduler: needs optim_wrapper')
        if not isinstance(compile, (bool, dict)):
            raise ConfigError(f'compile: expected a bool or a dict of torch.compile arguments, got {compile!r}')
        if isinstance(resume, str) and load_from is not None:
            raise ConfigError('resume: when resume is a path, load_from must be None')

        self._train_loop: Any = train_cfg
        self._val_loop: Any = val_cfg
        self._test_loop: Any = test_cfg
        self._val_evaluator = val_evaluator
        self._test_evaluator = test_evaluator
        self.optim_wrapper: Any = optim_wrapper
        self.param_schedulers: Any = param_scheduler
        self._auto_scale_lr = auto_scale_lr
        self._load_from = load_from
        self._resume = resume
        self._has_loaded = False
        self._compile = compile
        self._weights_ready = False
        self._trainer: Optional[pl.Trainer] = None
        self._trainer_settings = dict(
            work_dir=work_dir, train_cfg=train_cfg, launcher=launcher, env_cfg=env_cfg, strategy=strategy,
            optim_wrapper=optim_wrapper, custom_hooks=split_custom_hooks(custom_hooks)[1],
            train_dataloader=dict(batch_size=_get_batch_size(train_dataloader)) if train_dataloader else None,
            val_dataloader=dict() if val_dataloader is not None else None,
            **{key: self.cfg.get(key) for key in RUNNER_TRAINER_KEYS})

        launcher = resolve_launcher(launcher)
        env_cfg = dict(env_cfg or {})
        randomness = dict(randomness if randomness is not None else dict(seed=None))
        self._randomness_cfg = randomness
        setup_environment(env_cfg, distributed=launcher != 'none')
        init_process_group(launcher, env_cfg)
        self._context: RunContext = create_context(
            work_dir=work_dir, cfg=self.cfg, launcher=launcher, env_cfg=env_cfg, randomness=randomness,
            experiment_name=experiment_name, default_scope=default_scope, log_level=log_level,
            log_processor=log_processor, visualizer=visualizer)

        self.model = self._build_model(model, data_preprocessor)
        self._model_name = self.model.__class__.__name__
        self.datamodule = ConfigDataModule(
            train_dataloader, val_dataloader, test_dataloader, seed=self.seed,
            diff_rank_seed=randomness.get('diff_rank_seed', False),
            train_iterations=train_iterations(train_cfg))
        self.lightning_module = ConfigModule(self)
        self.hook_bridge = HookBridge(self)
        self._hooks = HookList()
        self.register_hooks(default_hooks, custom_hooks)
        self.logger.info(f'Hooks will be executed in the following order:\n{self.get_hooks_info()}')
        self.dump_config()

    @classmethod
    def from_cfg(cls, cfg: ConfigLike) -> 'FlexibleRunner':
        """Build a runner from a config (file path, dict or ``Config``)."""
        cfg = load_config(cfg)
        if 'model' not in cfg:
            raise ConfigError('model: the config has no `model` entry')
        keywords = {key: cfg.get(key, default) for key, default in CONFIG_KEYWORDS.items()}
        return cls(model=cfg['model'], cfg=cfg, **keywords)

    # -- run identity and outputs (see mm_lightning.context) ----------------------------------
    work_dir = property(lambda self: self._context.work_dir, doc='Where checkpoints and logs go.')
    log_dir = property(lambda self: self._context.log_dir, doc='work_dir/<timestamp>.')
    timestamp = property(lambda self: self._context.timestamp)
    experiment_name = property(lambda self: self._context.experiment_name)
    logger: MMLogger = property(lambda self: self._context.logger)  # type: ignore[assignment]
    message_hub: MessageHub = property(lambda self: self._context.message_hub)  # type: ignore[assignment]
    visualizer: Visualizer = property(lambda self: self._context.visualizer)  # type: ignore[assignment]
    log_processor: LogProcessor = property(lambda self: self._context.log_processor)  # type: ignore
    rank = property(lambda self: self._context.rank)
    world_size = property(lambda self: self._context.world_size)
    distributed = property(lambda self: self._context.distributed)
    launcher = property(lambda self: self._context.launcher)
    seed = property(lambda self: self._context.seed)
    deterministic = property(lambda self: self._context.deterministic)
    default_scope = property(lambda self: self._context.default_scope)
    model_name = property(lambda self: self._model_name)
    lightning_loggers = property(lambda self: self._context.lightning_loggers, doc='Loggers vis_backends became.')
    _log_dir = log_dir

    @property
    def hooks(self) -> List[Hook]:
        return self._hooks.hooks

    # -- loop state (see mm_lightning.loops) ------------------------------------------------------
    @property
    def train_loop(self) -> Optional[TrainLoop]:
        if self._train_loop is None or isinstance(self._train_loop, TrainLoop):
            return self._train_loop
        self._train_loop = self.build_train_loop(self._train_loop)
        return self._train_loop

    @property
    def val_loop(self) -> Optional[EvalLoop]:
        if self._val_loop is None or isinstance(self._val_loop, EvalLoop):
            return self._val_loop
        self._val_loop = self._build_eval_loop('val', self._val_loop, self._val_evaluator)
        return self._val_loop

    @property
    def test_loop(self) -> Optional[EvalLoop]:
        if self._test_loop is None or isinstance(self._test_loop, EvalLoop):
            return self._test_loop
        self._test_loop = self._build_eval_loop('test', self._test_loop, self._test_evaluator)
        return self._test_loop

    def _loop_value(name: str, default: int = 0) -> property:  # type: ignore[misc]
        return property(lambda self: getattr(self._train_loop, name)
                        if isinstance(self._train_loop, TrainLoop) else default)

    epoch = _loop_value('epoch')
    iter = _loop_value('iter')
    max_epochs = _loop_value('max_epochs')
    max_iters = _loop_value('max_iters')
    del _loop_value

    train_dataloader = property(lambda self: self.train_loop.dataloader)
    val_dataloader = property(lambda self: self.val_loop.dataloader)
    test_dataloader = property(lambda self: self.test_loop.dataloader)
    val_evaluator = property(lambda self: self.val_loop.evaluator)
    test_evaluator = property(lambda self: self.test_loop.evaluator)
    val_interval = property(lambda self: self.train_loop.val_interval)
    val_begin = property(lambda self: self.train_loop.val_begin)

    @property
    def trainer(self) -> pl.Trainer:
        """The Lightning Trainer running this config (built on first use)."""
        if self._trainer is None:
            settings = trainer_kwargs(Config(self._trainer_settings),
                                      logger=self._context.lightning_loggers or False)
            self._trainer = pl.Trainer(**settings)
        return self._trainer

    @property
    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """The AMP loss scaler (AmpOptimWrapper's ``loss_scaler``), held by Lightning's precision plugin."""
        trainer = self.lightning_module._trainer or self._trainer
        return getattr(trainer.precision_plugin, 'scaler', None) if trainer is not None else None

    # -- building ------------------------------------------------------------------------------------
    def _build_model(self, model: Union[nn.Module, Dict], data_preprocessor: Any) -> nn.Module:
        if isinstance(model, dict):
            model = copy.deepcopy(model)
            if data_preprocessor is not None:
                model.setdefault('data_preprocessor', data_preprocessor)
            model = build(MODELS, model, 'model')
        elif not isinstance(model, nn.Module):
            raise ConfigError(f'model: expected a dict or an nn.Module, got {model!r}')
        elif data_preprocessor is not None:
            raise ConfigError('data_preprocessor: it configures a model built from a config dict; '
                              'this model is already built')
        if is_model_wrapper(model):
            raise ConfigError('model: pass the bare model; Lightning wraps it for the strategy')
        if not self.distributed:
            model = revert_sync_batchnorm(model)
        elif self.cfg.get('sync_bn') is not None:
            with config_key('sync_bn'):
                model = convert_sync_batchnorm(model, self.cfg.get('sync_bn'))
        return model

    @staticmethod
    def build_dataloader(dataloader: Union[DataLoader, Dict], seed: Optional[int] = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        """mmengine's ``build_dataloader``: dataset, sampler, batch sampler, collate, worker seeding."""
        return build_dataloader(dataloader, 'dataloader', seed, diff_rank_seed)

    def build_evaluator(self, evaluator: Union[Dict, List, Evaluator]) -> ConfigEvaluator:
        """An evaluator from a built one, a metric dict, a list, or ``dict(metrics=...)``.

        mmengine metrics and native torchmetrics metrics both run as ``torchmetrics.Metric``.
        """
        return build_evaluator(evaluator, 'evaluator')

    def build_train_loop(self, loop: Union[TrainLoop, Dict]) -> TrainLoop:
        if isinstance(loop, TrainLoop):
            return loop
        parsed = parse_train_cfg(loop)
        return TrainLoop(self, self.datamodule.loader('train'), **parsed)

    def _build_eval_loop(self, mode: str, loop_cfg: Dict, evaluator: Any) -> EvalLoop:
        parsed = parse_eval_cfg(loop_cfg, f'{mode}_cfg')
        dataloader = self.datamodule.loader(mode)
        evaluator = build_evaluator(copy.deepcopy(evaluator), f'{mode}_evaluator')
        self.lightning_module.add_module(f'{mode}_evaluator', evaluator)  # moved to the device with it
        return EvalLoop(self, dataloader, evaluator, **parsed)

    # -- hooks -------------------------------------------------------------------------------------------
    def register_hook(self, hook: Union[Hook, Dict], priority: Optional[Union[str, int, Priority]] = None) -> None:
        """Insert an mmengine hook by priority (ties keep registration order)."""
        self._hooks.register(hook, priority)

    def register_default_hooks(self, hooks: Optional[Dict[str, Union[Hook, Dict]]] = None) -> None:
        for name, hook in merged_default_hooks(hooks).items():
            self._hooks.register(hook, key=f'default_hooks.{name}')

    def register_custom_hooks(self, hooks: List[Union[Hook, Dict]]) -> None:
        for index, hook in enumerate(hooks):
            if not is_lightning_callback(hook):  # Lightning callbacks go to the Trainer
                self._hooks.register(hook, key=f'custom_hooks[{index}]')

    def register_hooks(self, default_hooks: Optional[Dict[str, Union[Hook, Dict]]] = None,
                       custom_hooks: Optional[List[Union[Hook, Dict]]] = None) -> None:
        self.register_default_hooks(default_hooks)
        if custom_hooks is not None:
            self.register_custom_hooks(custom_hooks)

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Call ``fn_name`` on every hook that has it, in priority order."""
        self._hooks.call(self, fn_name, **kwargs)

    def get_hooks_info(self) -> str:
        return self._hooks.info()

    # -- running -------------------------------------------------------------------------------------------
    def train(self) -> nn.Module:
        """Train with Lightning's fit loop; returns the model."""
        self._prepare_training()
        self.trainer.fit(self.lightning_module, datamodule=self.datamodule)
        return self.model

    def val(self) -> dict:
        """Validate with Lightning's evaluation loop; returns mmengine's metrics dict."""
        self._prepare_evaluation('val')
        self.trainer.validate(self.lightning_module, datamodule=self.datamodule, verbose=False)
        return self.lightning_module.metrics['val']

    def test(self) -> dict:
        """Test with Lightning's evaluation loop; returns mmengine's metrics dict."""
        self._prepare_evaluation('test')
        self.trainer.test(self.lightning_module, datamodule=self.datamodule, verbose=False)
        return self.lightning_module.metrics['test']

    def _prepare_training(self) -> None:
        """Build what training needs, in mmengine Runner's order (idempotent)."""
        if self._train_loop is None:
            raise RuntimeError('train() needs train_dataloader, train_cfg and optim_wrapper')
        if not hasattr(self.model, 'train_step'):
            raise ConfigError(f'model: {type(self.model).__name__} has no train_step; training needs an '
                              'mmengine BaseModel (or a model implementing train_step)')
        loop = self.train_loop
        if not isinstance(self.optim_wrapper, OptimWrapper):
            self.optim_wrapper = build_optim_wrapper(self.model, self.optim_wrapper)
            scale_lr(self.optim_wrapper, self._auto_scale_lr, _get_batch_size(loop.dataloader), self.world_size,
                     self.logger)
            route_through_lightning(self.optim_wrapper, self.lightning_module)
            if self.param_schedulers is not None:
                self.param_schedulers = build_param_schedulers(self.param_schedulers, self.optim_wrapper, loop)
        if self._val_loop is not None and not hasattr(self.model, 'val_step'):
            raise ConfigError(f'model: {type(self.model).__name__} has no val_step, needed by val_cfg')
        _ = self.val_loop

    def _prepare_evaluation(self, mode: str) -> None:
        if (self._val_loop if mode == 'val' else self._test_loop) is None:
            raise RuntimeError(f'{mode}() needs {mode}_dataloader, {mode}_cfg and {mode}_evaluator')
        _ = self.val_loop if mode == 'val' else self.test_loop

    def _setup_run(self, stage: str) -> None:
        """The start of mmengine's train()/val()/test(): build what is missing, ``before_run``,
        initialise the weights. Runs before the strategy wraps (or shards) the model."""
        if stage == 'fit':
            self._prepare_training()
        else:
            self._prepare_evaluation('test' if stage == 'test' else 'val')
        self.call_hook('before_run')
        if stage == 'fit' or self.cfg.get('init_weights_for_test_or_val', True):
            self._init_weights()
        if stage == 'fit':
            for key, turn_on in (('activation_checkpointing', turn_on_activation_checkpointing),
                                 ('efficient_conv_bn_eval', turn_on_efficient_conv_bn_eval)):
                modules = self.cfg.get(key)
                if modules is not None:
                    self.logger.info(f'Enabling the "{key}" feature for sub-modules: {modules}')
                    turn_on(self.model, modules)

    def _start_training(self, trainer: pl.Trainer) -> None:
        """After the strategy has set up model and optimizers: load/resume, then position the loops."""
        self.load_or_resume()
        loop = self.train_loop
        self.datamodule.resume_at(loop.iter)
        if loop.by_epoch and loop.epoch:
            start_fit_at_epoch(trainer, loop.epoch)
        self.optim_wrapper.initialize_count_status(self.model, loop.iter, loop.max_iters)
        self.lightning_module.compile_model(self._compile, self.logger)

    def _init_weights(self) -> None:
        """``init_weights`` once; the strategy then makes ranks agree (DDP broadcasts rank 0's)."""
        if not self._weights_ready:
            self._weights_ready = True
            if hasattr(self.model, 'init_weights'):
                self.model.init_weights()

    def _reseed(self, seed: int) -> None:
        self._randomness_cfg.update(seed=seed)
        self._context.seed = set_random_seed(seed=seed, deterministic=self._randomness_cfg.get('deterministic', False),
                                             diff_rank_seed=self._randomness_cfg.get('diff_rank_seed', False))

    # -- checkpoints (see mm_lightning.checkpoint) ------------------------------------------------------------
    def load_or_resume(self) -> None:
        """Resume (``resume=True``: latest in work_dir; a path) or load ``load_from``, once."""
        if self._has_loaded:
            return
        resume_from, load_from = ckpt.sources(self.work_dir, self._resume, self._load_from, self.logger)
        if resume_from is not None:
            self.resume(resume_from)
        elif load_from is not None:
            self.load_checkpoint(load_from)
        self._has_loaded = True

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:
        """Load model weights from an mmengine-format file; calls ``after_load_checkpoint``."""
        checkpoint = ckpt.read_checkpoint(filename, map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        checkpoint = ckpt.load_into_model(self, checkpoint, strict, revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def resume(self, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """Resume weights, optimizer, schedulers, message hub and epoch/iter from a checkpoint."""
        if map_location == 'default':
            map_location = 'cuda' if torch.cuda.is_available() else 'cpu'
        self._prepare_training()
        checkpoint = self.load_checkpoint(filename, map_location=map_location)
        ckpt.restore_training_state(self, checkpoint, resume_optimizer, resume_param_scheduler)
        self._has_loaded = True
        self.logger.info(f'resumed epoch: {self.epoch}, iter: {self.iter}')

    def save_checkpoint(self, out_dir: str, filename: str, file_client_args: Optional[dict] = None,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta: Optional[dict] = None, by_epoch: bool = True,
                        backend_args: Optional[dict] = None) -> None:
        """Write an mmengine-format checkpoint (``CheckpointHook`` calls this).

        Rank 0 writes, as under mmengine; every rank takes part where the strategy must
        gather sharded state, and each writes its part of a sharded FSDP checkpoint.
        """
        ckpt.save(self, out_dir, filename, file_client_args=file_client_args, save_optimizer=save_optimizer,
                  save_param_scheduler=save_param_scheduler, meta=meta, by_epoch=by_epoch, backend_args=backend_args)

    @master_only
    def dump_config(self) -> None:
        """Write the config to work_dir (the config file's name, or ``<timestamp>.py``)."""
        filename = osp.basename(self.cfg.filename) if self.cfg.filename else f'{self.timestamp}.py'
        self.cfg.dump(osp.join(self.work_dir, filename))

