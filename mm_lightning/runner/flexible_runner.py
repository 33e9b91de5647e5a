"""``FlexibleRunner``: mmengine's runner API, put together from Lightning objects.

The constructor and ``from_cfg`` take what mmengine's ``FlexibleRunner`` takes. They build
a :class:`~mm_lightning.ConfigModule` (model, optimizers, schedulers, evaluators, hooks,
progress), a :class:`~mm_lightning.ConfigDataModule` (loaders, data position) and, when a
run starts, one Lightning ``Trainer``; the runner is a view onto them (``RunnerView``) and
the ``runner`` every mmengine hook receives. As mmengine's Runner does, construction opens
the work_dir, the log file and the dumped config.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.runner.base_loop import BaseLoop
from mmengine.visualization import Visualizer
from torch import nn
from torch.utils.data import DataLoader

from mm_lightning.config.loading import ConfigLike, load_config
from mm_lightning.runtime.assembly import config_keywords, module_parts
from mm_lightning.runtime.data import ConfigDataModule
from mm_lightning.runtime.hooks import split_custom_hooks
from mm_lightning.runtime.module import ConfigModule
from mm_lightning.runtime.trainer import trainer_kwargs
from mm_lightning.runtime.view import RunnerView
from mm_lightning.translate.launchers import check_backend
from mm_lightning.translate.progress import lightning_info_to_file

__all__ = ['RUNNER_TRAINER_KEYS', 'FlexibleRunner']

#: Config keys (not constructor keywords) that shape the Trainer: Runner-style wrapping and extras.
RUNNER_TRAINER_KEYS = ('model_wrapper_cfg', 'find_unused_parameters', 'lightning_trainer', 'progress_bar', 'profiler')


class FlexibleRunner(RunnerView):
    """Run an mmengine config on a Lightning Trainer (mmengine's ``FlexibleRunner`` API).

    ``train()`` returns the model; ``val()``/``test()`` return the metrics dict.

    Each keyword is the config key of the same name (what :meth:`from_cfg` reads), with
    mmengine's default. Loops, optimizers, schedulers and evaluators stay configs until the
    stage that needs them starts; the model, hooks, logger and visualizer are built here.

    Args:
        model: the model, or its config (built from mmengine's ``MODELS`` registry after the run is
            seeded). Give the bare model: a model wrapper (DDP, FSDP) is refused, as Lightning's strategy
            wraps it.
        work_dir: where checkpoints and the dumped config are written; each run logs under
            ``<work_dir>/<timestamp>``. Created at construction. ``from_cfg`` defaults it to
            ``work_dirs/<config name>``.
        experiment_name: the run's name, ``<experiment_name>_<timestamp>``. None: the config file's name,
            or the timestamp alone for a config that is not a file.
        train_dataloader: the training ``DataLoader``, or its config (built by mmengine's
            ``Runner.build_dataloader`` with the run's seed, on first use). None: no training. Given
            together with ``train_cfg`` and ``optim_wrapper``.
        optim_wrapper: an ``OptimWrapper`` (or ``OptimWrapperDict``), or its config, built when training
            starts, after the strategy has wrapped the model. An ``AmpOptimWrapper`` selects the Trainer's
            mixed precision.
        param_scheduler: parameter schedulers, or their configs: one, a list, or a dict of them by
            optimizer name. Built when training starts; needs ``optim_wrapper``.
        train_cfg: the training loop's config: ``by_epoch=True`` (``EpochBasedTrainLoop``),
            ``by_epoch=False`` (``IterBasedTrainLoop``) or a ``type``, with ``max_epochs``/``max_iters``,
            ``val_interval``... None: no training.
        val_dataloader: the validation ``DataLoader``, or its config (a list of configs for a loop that
            builds its own loaders). None: no validation. Given together with ``val_evaluator`` and
            ``val_cfg``.
        val_evaluator: an ``Evaluator``, a metric (mmengine's or torchmetrics'), or their config(s); the
            validation loop builds it through ``runner.build_evaluator``.
        val_cfg: the validation loop's config (``ValLoop`` without a ``type``).
        test_dataloader: the test ``DataLoader``, or its config; :meth:`predict` iterates it too.
            None: no testing. Given together with ``test_evaluator`` and ``test_cfg``.
        test_evaluator: as ``val_evaluator``, for the test loop.
        test_cfg: the test loop's config (``TestLoop`` without a ``type``).
        strategy: mmengine's strategy config (``dict(type='DDPStrategy' | 'FSDPStrategy' |
            'DeepSpeedStrategy' | 'SingleDeviceStrategy', ...)``), translated to Lightning's; or a Lightning
            strategy name, object or ``dict(type=<Lightning strategy class>, ...)``. None: as mmengine's
            Runner (DDP under a launcher, shaped by the config's ``model_wrapper_cfg``; else ``'auto'``).
        auto_scale_lr: ``dict(enable=..., base_batch_size=...)``: when enabled, the learning rates are
            scaled by ``world_size * batch_size / base_batch_size`` once, before the schedulers are built.
            None: no scaling.
        default_hooks: hooks (or configs) by name, merged into mmengine's defaults (``runtime_info``,
            ``timer``, ``sampler_seed``, ``logger``, ``param_scheduler``, ``checkpoint``); a None entry
            removes that default.
        custom_hooks: more mmengine hooks (or configs). An entry naming a Lightning ``Callback`` (an
            instance, a class or its dotted ``type``) goes to the Trainer's callbacks instead.
        data_preprocessor: the model config's ``data_preprocessor`` when ``model`` is a config without
            one. Refused when ``model`` is already built.
        load_from: a checkpoint (mmengine's or Lightning's format) whose weights are loaded before training,
            or before a standalone validation, test or prediction. None: none.
        resume: False: no resuming. True: resume from ``load_from``, or, without it, from the latest
            checkpoint in ``work_dir`` (none found: training starts afresh). A path: resume from that
            checkpoint (then ``load_from`` must be None).
        launcher: how the processes were started: ``'none'``, ``'pytorch'`` (torchrun), ``'slurm'`` or
            ``'mpi'``. None: inferred from the environment as mmengine does. Under a launcher the process
            group is opened here.
        env_cfg: ``cudnn_benchmark``, ``mp_cfg``, ``dist_cfg`` (``backend``, ``timeout``) and
            ``resource_limit``, applied as mmengine's Runner applies them. None: ``{}`` (the process-group
            backend then follows the accelerator: nccl on GPUs, gloo on CPUs).
        log_processor: mmengine's ``LogProcessor`` or its config (a ``type`` is built from the
            ``LOG_PROCESSORS`` registry). None: the default ``LogProcessor``.
        log_level: the level of the run's ``MMLogger``.
        visualizer: a ``Visualizer`` or its config. None: a ``Visualizer`` with a ``LocalVisBackend``
            in the run's log directory. ``vis_backends`` that have a Lightning logger (TensorBoard, W&B,
            MLflow) write through that logger, which the Trainer gets too.
        default_scope: the registry scope the run's names are looked up in. None: no default scope.
        randomness: ``seed``, ``diff_rank_seed`` and ``deterministic``, applied before the model is
            built; the loaders' workers are seeded from them too. ``seed=None``: a random seed, drawn once
            and broadcast to every rank. None: ``dict(seed=None)``.
        compile: True, or a dict of ``torch.compile`` arguments (``target`` names the model method,
            ``train_step`` by default), to compile the model when training starts. False: no compiling.
        cfg: the full config the keywords came from: dumped to ``work_dir``, saved in checkpoints, and
            read for what shapes the Trainer beyond the keywords (:data:`RUNNER_TRAINER_KEYS`, e.g.
            ``lightning_trainer``, ``progress_bar``). None: an empty config.

    Raises:
        ConfigError: a keyword mmengine's Runner would refuse (training, validation or test keywords
            given without the others of their stage, an unknown ``env_cfg`` or ``randomness`` key...),
            with a message that names its config key.
    """

    #: The module it built and drives (the view's ``module``, known here to be a ConfigModule).
    module: ConfigModule

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
        # The keywords are assembly.CONFIG_KEYWORDS (a test holds this signature to them), passed on as given.
        parts = module_parts(
            cfg, model=model, work_dir=work_dir, experiment_name=experiment_name, train_dataloader=train_dataloader,
            optim_wrapper=optim_wrapper, param_scheduler=param_scheduler, train_cfg=train_cfg,
            val_dataloader=val_dataloader, val_evaluator=val_evaluator, val_cfg=val_cfg,
            test_dataloader=test_dataloader, test_evaluator=test_evaluator, test_cfg=test_cfg, strategy=strategy,
            auto_scale_lr=auto_scale_lr, default_hooks=default_hooks, custom_hooks=custom_hooks,
            data_preprocessor=data_preprocessor, load_from=load_from, resume=resume, launcher=launcher,
            env_cfg=env_cfg, log_processor=log_processor, log_level=log_level, visualizer=visualizer,
            default_scope=default_scope, randomness=randomness, compile=compile)
        module = ConfigModule.from_parts(parts)
        super().__init__(module)
        module.attach_runner(self)
        context = module.context
        self._datamodule = ConfigDataModule.from_loaders(
            train_dataloader, val_dataloader, test_dataloader, seed=context.seed,
            diff_rank_seed=context.randomness.get('diff_rank_seed', False))
        self._trainer: Optional[pl.Trainer] = None
        #: The runner keywords and config keys the Trainer's arguments are translated from (``trainer_kwargs``).
        self._trainer_settings = dict(
            work_dir=work_dir, train_cfg=train_cfg, launcher=launcher, env_cfg=env_cfg, strategy=strategy,
            default_scope=default_scope, optim_wrapper=optim_wrapper, custom_hooks=split_custom_hooks(custom_hooks)[1],
            train_dataloader=train_dataloader, val_dataloader=val_dataloader,
            **{key: module.cfg.get(key) for key in RUNNER_TRAINER_KEYS})
        context.open(module.cfg, module.hooks.info())

    @classmethod
    def from_cfg(cls, cfg: ConfigLike) -> 'FlexibleRunner':
        """Build a runner from a config (file path, dict or ``Config``).

        Args:
            cfg: the config; its keys give the constructor's keywords (mmengine's defaults for the missing
                ones, ``work_dir`` defaulting to ``work_dirs/<config name>``) and it is the run's ``cfg``.

        Returns:
            The runner, with its work_dir, log file and dumped config opened.

        Raises:
            ConfigError: the config cannot be read, has no ``model`` (also a ``KeyError``), or has a value
                the constructor refuses.
        """
        cfg = load_config(cfg)
        return cls(cfg=cfg, **config_keywords(cfg))

    # -- the Lightning objects ---------------------------------------------------------------------
    @property
    def datamodule(self) -> ConfigDataModule:
        """The runner's datamodule: its Trainer iterates these loaders."""
        return self._datamodule

    @property
    def trainer(self) -> pl.Trainer:
        """The Lightning Trainer running this config (built on first use)."""
        if self._trainer is None:
            settings = trainer_kwargs(Config(self._trainer_settings),
                                      logger=self.module.context.lightning_loggers or False)
            if isinstance(settings['strategy'], ParallelStrategy):  # it opens a process group
                check_backend(self._trainer_settings.get('env_cfg') or {}, settings['accelerator'])
            with lightning_info_to_file(self.module.context.log_to_file):  # the console shows mmengine's lines
                self._trainer = pl.Trainer(**settings)
        return self._trainer

    @property
    def train_loop(self) -> Optional[BaseLoop]:
        """mmengine's training loop; asked before ``train()``, it is built then (as mmengine's Runner does)."""
        if self.module.train_loop is None and self.module.has_training:
            self.module.loops.bind_train(self.module.model, self.module.runner, self._datamodule)
        return self.module.train_loop

    @property
    def val_loop(self) -> Optional[BaseLoop]:
        return self._eval_loop('val')

    @property
    def test_loop(self) -> Optional[BaseLoop]:
        return self._eval_loop('test')

    def _eval_loop(self, mode: str) -> Optional[BaseLoop]:
        """mmengine's evaluation loop; asked before a run, it is built over the runner's loader then."""
        if self.module.loops.eval_loop(mode) is None and self.module.loops.has_eval(mode):
            self.module.loops.bind_eval(self.module.model, self.module.runner, mode, self._datamodule)
        return self.module.loops.eval_loop(mode)

    # -- running --------------------------------------------------------------------------------------
    def train(self) -> nn.Module:
        """Train with Lightning's fit loop; returns the model.

        A SIGTERM (cluster preemption) ends training after the current iteration (or validation) with a
        resumable checkpoint in the work_dir, and ``train()`` returns normally.

        Returns:
            The trained model (``runner.model``).

        Raises:
            RuntimeError: the runner was built without ``train_dataloader``, ``train_cfg`` and
                ``optim_wrapper``.
            ConfigError: a training key of the config is refused when training starts.
        """
        if not self.module.has_training:
            raise RuntimeError('`self._train_loop` should not be None when calling train method. Please provide '
                               '`train_dataloader`, `train_cfg`, `optimizer` and `param_scheduler` arguments when '
                               'initializing runner.')
        self.module.check_stage('fit')
        try:
            self.trainer.fit(self.module, datamodule=self._datamodule)
        except SIGTERMException:
            self.logger.info('Training stopped by SIGTERM; resume with resume=True (--resume)')
        return self.model

    def val(self) -> dict:
        """Validate with Lightning's evaluation loop; returns mmengine's metrics dict.

        Returns:
            The metrics the validation loop's evaluator computed, by name (with the losses ``val_step``
            returned, if any), as mmengine's ``runner.val()`` returns them.

        Raises:
            RuntimeError: the runner was built without ``val_dataloader``, ``val_cfg`` and ``val_evaluator``.
        """
        self._require('val')
        self.module.check_stage('validate')
        self.trainer.validate(self.module, datamodule=self._datamodule, verbose=False)
        return self.module.metrics['val']

    def test(self) -> dict:
        """Test with Lightning's evaluation loop; returns mmengine's metrics dict.

        Returns:
            The metrics the test loop's evaluator computed, by name (with the losses ``test_step``
            returned, if any), as mmengine's ``runner.test()`` returns them.

        Raises:
            RuntimeError: the runner was built without ``test_dataloader``, ``test_cfg`` and
                ``test_evaluator``.
        """
        self._require('test')
        self.module.check_stage('test')
        self.trainer.test(self.module, datamodule=self._datamodule, verbose=False)
        return self.module.metrics['test']

    def predict(self) -> List[Any]:
        """The model's ``test_step`` outputs over the test loader, one per sample in order (mm_lightning's own;
        mmengine's runner has no predict).

        Returns:
            The outputs of the model's ``test_step`` (for a ``BaseModel``, data samples with predictions),
            one per sample, in the test loader's order.

        Raises:
            RuntimeError: the runner was built without ``test_dataloader``, ``test_cfg`` and
                ``test_evaluator``.
        """
        self._require('test')
        batches = self.trainer.predict(self.module, datamodule=self._datamodule)
        return [output for batch in batches or [] for output in batch]

    def _require(self, mode: str) -> None:
        if not self.module.loops.has_eval(mode):
            raise RuntimeError(f'`self._{mode}_loop` should not be None when calling {mode} method. Please provide '
                               f'`{mode}_dataloader`, `{mode}_cfg` and `{mode}_evaluator` arguments when '
                               'initializing runner.')
