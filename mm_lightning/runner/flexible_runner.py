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
from mm_lightning.runner.assembly import config_keywords, module_parts
from mm_lightning.runner.view import RunnerView
from mm_lightning.runtime.data import ConfigDataModule
from mm_lightning.runtime.hooks import split_custom_hooks
from mm_lightning.runtime.module import ConfigModule
from mm_lightning.translate.launchers import check_backend
from mm_lightning.translate.trainer import trainer_kwargs

__all__ = ['RUNNER_TRAINER_KEYS', 'FlexibleRunner']

#: Config keys (not constructor keywords) that shape the Trainer: Runner-style wrapping and extras.
RUNNER_TRAINER_KEYS = ('model_wrapper_cfg', 'find_unused_parameters', 'lightning_trainer', 'progress_bar', 'profiler')


class FlexibleRunner(RunnerView):
    """Run an mmengine config on a Lightning Trainer (mmengine's ``FlexibleRunner`` API).

    ``train()`` returns the model; ``val()``/``test()`` return the metrics dict.
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
        keywords = {name: value for name, value in locals().items() if name not in ('self', 'cfg', '__class__')}
        parts = module_parts(cfg, **keywords)
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
        """Build a runner from a config (file path, dict or ``Config``)."""
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
            self._trainer = pl.Trainer(**settings)
        return self._trainer

    @property
    def train_loop(self) -> Optional[BaseLoop]:
        """mmengine's training loop; asked before ``train()``, it is built then (as mmengine's Runner does)."""
        if self.module.train_loop is None and self.module.has_training:
            self.module.bind_train(self._datamodule)
        return self.module.train_loop

    @property
    def val_loop(self) -> Optional[BaseLoop]:
        return self._eval_loop('val')

    @property
    def test_loop(self) -> Optional[BaseLoop]:
        return self._eval_loop('test')

    def _eval_loop(self, mode: str) -> Optional[BaseLoop]:
        """mmengine's evaluation loop; asked before a run, it is built over the runner's loader then."""
        if self.module.eval_loop(mode) is None and self.module.has_eval(mode):
            self.module.bind_eval(mode, self._datamodule)
        return self.module.eval_loop(mode)

    # -- running --------------------------------------------------------------------------------------
    def train(self) -> nn.Module:
        """Train with Lightning's fit loop; returns the model.

        A SIGTERM (cluster preemption) ends training after the current iteration (or validation) with a
        resumable checkpoint in the work_dir, and ``train()`` returns normally.
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
        """Validate with Lightning's evaluation loop; returns mmengine's metrics dict."""
        self._require('val')
        self.module.check_stage('validate')
        self.trainer.validate(self.module, datamodule=self._datamodule, verbose=False)
        return self.module.metrics['val']

    def test(self) -> dict:
        """Test with Lightning's evaluation loop; returns mmengine's metrics dict."""
        self._require('test')
        self.module.check_stage('test')
        self.trainer.test(self.module, datamodule=self._datamodule, verbose=False)
        return self.module.metrics['test']

    def predict(self) -> List[Any]:
        """The model's ``test_step`` outputs over the test loader, one per sample in order (mm_lightning's own;
        mmengine's runner has no predict)."""
        self._require('test')
        batches = self.trainer.predict(self.module, datamodule=self._datamodule)
        return [output for batch in batches or [] for output in batch]

    def _require(self, mode: str) -> None:
        if not self.module.has_eval(mode):
            raise RuntimeError(f'`self._{mode}_loop` should not be None when calling {mode} method. Please provide '
                               f'`{mode}_dataloader`, `{mode}_cfg` and `{mode}_evaluator` arguments when '
                               'initializing runner.')
