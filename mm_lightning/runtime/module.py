"""A LightningModule that owns a config-built run: model, optimizers, schedulers, evaluators.

Training uses Lightning's manual optimization: the model's own ``train_step`` (default
or overridden, one optimizer or several) calls ``optim_wrapper.update_params``, whose
backward and step go through Lightning (see :mod:`mm_lightning.runtime.optim`). The module's
mmengine hooks travel with it as a callback (:class:`~mm_lightning.runtime.bridge.HookBridge`),
and everything a resumed run needs is saved through Lightning's checkpoint hooks, so
any Trainer (``fit(ckpt_path=...)``, ``ModelCheckpoint``) continues the run exactly.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from mmengine.model import BaseModel
from mmengine.runner.base_loop import BaseLoop
from torch.optim import Optimizer
from typing_extensions import override

from mm_lightning.config.loading import CfgOptions, ConfigLike, load_config
from mm_lightning.ground.internals import attached_trainer
from mm_lightning.runtime.assembly import ModuleParts, module_parts
from mm_lightning.runtime.bridge import HookBridge
from mm_lightning.runtime.fidelity import drop_loop_state
from mm_lightning.runtime.loop_binding import LoopBinding
from mm_lightning.runtime.loops import TrainProgress
from mm_lightning.runtime.optimization import Optimization
from mm_lightning.runtime.preparation import ModelPreparation
from mm_lightning.runtime.resume import ResumeState
from mm_lightning.runtime.stages import StageStart
from mm_lightning.runtime.view import RunnerView

__all__ = ['ConfigModule']


class ConfigModule(pl.LightningModule):
    """The model of a config-built run, for a Lightning ``Trainer``.

    ``runner`` is the mmengine runner its hooks receive: a view onto this module, its Trainer
    and that Trainer's datamodule. ``mm_lightning.trainer_kwargs(cfg)`` gives the matching
    Trainer settings. ``metrics[stage]`` holds the last evaluation's metrics as mmengine
    returns them. The constructor takes the config alone, so ``LightningCLI(ConfigModule,
    ConfigDataModule)`` builds it from ``--model.config PATH``.

    Args:
        config: an mmengine config: a file path, a dict or a ``Config``.
        cfg_options: overrides of config keys, as ``--cfg-options`` gives them
            (``{'train_cfg.max_epochs': 2}`` or ``['train_cfg.max_epochs=2']``). None: no overrides.

    Raises:
        ConfigError: the config cannot be read, or has a value mmengine's Runner would refuse; the
            message names its config key.

    :meth:`from_parts` makes one of parts already put together (``FlexibleRunner``'s).
    """

    def __init__(self, config: ConfigLike, cfg_options: CfgOptions = None, *,
                 _parts: Optional[ModuleParts] = None) -> None:
        super().__init__()
        parts = _parts if _parts is not None else module_parts(load_config(config, cfg_options))
        self.automatic_optimization = False
        #: mmengine's model (a ``BaseModel``, or any ``nn.Module`` with its step methods).
        self.model: BaseModel = parts.model
        self.context = parts.context
        self.hooks = parts.hooks
        self.cfg = parts.cfg
        #: The runner keywords of the run (the config's keys by default): each stage checks its own
        #: when it starts (see :mod:`mm_lightning.config.validation`).
        self.keywords: Mapping[str, Any] = parts.keywords
        #: ``train_cfg``, the evaluation configs and mmengine's loops built of them over the loaders.
        self.loops = LoopBinding(parts.train_cfg, {'val': (parts.val_cfg, parts.val_evaluator),
                                                   'test': (parts.test_cfg, parts.test_evaluator)})
        self.optim_wrapper = parts.optim_wrapper
        self.param_schedulers = parts.param_scheduler
        self.auto_scale_lr = parts.auto_scale_lr
        self.load_from = parts.load_from
        self.resume = parts.resume
        self.metrics: Dict[str, dict] = {}
        self.resumed = False  # a checkpoint's training state was restored for this fit
        self.loaded = False  # load_from / resume done (mmengine's ``_has_loaded``)
        #: The parts of the run's work the module's hooks delegate to: each stage's start, the model's preparation,
        #: the optimizers built and stepped, and what a checkpoint restores where the run continues.
        self.stage_start = StageStart()
        self.preparation = ModelPreparation(parts.compile)
        self.optimization = Optimization(parts.auto_scale_lr)
        self.resume_state = ResumeState(parts.auto_scale_lr)
        self._bridge = HookBridge(self)
        self._runner: Optional[RunnerView] = None

    @classmethod
    def from_config(cls, cfg: ConfigLike, cfg_options: CfgOptions = None) -> 'ConfigModule':
        """The run described by ``cfg`` (the constructor's); it writes nothing until its Trainer starts.

        Args:
            cfg: an mmengine config: a file path, a dict or a ``Config``.
            cfg_options: overrides of config keys, as ``--cfg-options`` gives them. None: no overrides.

        Returns:
            The module, with its model and hooks built (the run seeded first, as mmengine's Runner does).
        """
        return cls(cfg, cfg_options)

    @classmethod
    def from_parts(cls, parts: ModuleParts) -> 'ConfigModule':
        """A module of parts already put together (``FlexibleRunner`` builds its own from its keywords).

        Args:
            parts: the built model, context and hooks and the stage configs
                (:func:`~mm_lightning.runtime.assembly.module_parts` makes them).

        Returns:
            The module over ``parts``; ``parts.cfg`` is its ``cfg``.
        """
        return cls(parts.cfg, _parts=parts)

    # -- the runner view ------------------------------------------------------------------------
    @property
    def runner(self) -> RunnerView:
        """The mmengine runner hooks receive: a view onto this module and the Trainer running it."""
        if self._runner is None:
            self._runner = RunnerView(self)
        return self._runner

    def attach_runner(self, runner: RunnerView) -> None:
        """Make ``runner`` (a :class:`~mm_lightning.FlexibleRunner`) the one hooks receive.

        Args:
            runner: the runner view to hand hooks as ``runner`` (and loops as their runner), in place of the
                module's own :class:`~mm_lightning.runtime.view.RunnerView`.
        """
        self._runner = runner

    @property
    def attached_trainer(self) -> Optional[pl.Trainer]:
        """The Trainer running this module, or None before one does."""
        return attached_trainer(self)

    # -- the loops (see :class:`~mm_lightning.runtime.loop_binding.LoopBinding`) ------------------------------
    @property
    def train_loop(self) -> Optional[BaseLoop]:
        """mmengine's training loop object (``runner.train_loop``), built from ``train_cfg`` on first use."""
        return self.loops.train_loop

    @property
    def progress(self) -> Optional[TrainProgress]:
        """Lightning's driver of that loop and the run's position in it (built with it)."""
        return self.loops.progress

    @property
    def training_progress(self) -> TrainProgress:
        """``progress``, once a fit has built the training loop (before, nothing trains)."""
        return self.loops.training_progress

    @property
    def built_train_loop(self) -> BaseLoop:
        """``train_loop``, once a fit has built it."""
        return self.loops.built_train_loop

    @property
    def has_training(self) -> bool:
        """Whether the run is configured to train (``train_cfg``)."""
        return self.loops.has_training

    # -- setting up (the hook bridge calls these in mmengine's order) ------------------------------------
    def check_stage(self, stage: str) -> None:
        """The config checks of what a Lightning ``stage`` (fit, validate, test) runs, once, before it starts."""
        self.stage_start.check_stage(self, stage)

    def prepare_run(self, trainer: pl.Trainer, stage: str) -> None:
        """What a run needs before ``before_run``: config checked, outputs opened, loops bound to the loaders."""
        self.stage_start.prepare_run(self, trainer, stage)

    def initialize_weights(self, stage: str) -> None:
        """``init_weights`` once, before the strategy wraps the model (DDP then broadcasts rank 0's)."""
        self.preparation.initialize_weights(self.model, self.cfg, self.context.logger, stage)

    @override
    def configure_model(self) -> None:
        """Shard the model under FSDP2, after ``init_weights``, before the optimizers are built over it."""
        self.preparation.shard(self.model, self.trainer.strategy)

    @override
    def configure_callbacks(self) -> List[Callback]:
        """The hook bridge; a fit first takes the Trainer's own settings into the config and checks it."""
        return self.stage_start.callbacks(self, self.trainer, self._bridge)

    def build_optimization(self) -> None:
        """The optim wrapper (LR scaled once, as mmengine's ``scale_lr``) and parameter schedulers, built
        from their configs as mmengine's Runner builds them; built ones are kept."""
        self.optimization.build(self)

    @override
    def configure_optimizers(self) -> Optional[List[Optimizer]]:
        """Build the optim wrapper and schedulers (after the strategy has wrapped the model)."""
        if self.optim_wrapper is None:
            return None
        self.build_optimization()
        optimizers = self.optimization.hand_to_lightning(self.optim_wrapper, self)
        self.resume_state.load_scheduler_states(self.param_schedulers)
        return optimizers

    def begin_training(self) -> None:
        """Where training starts or continues, as mmengine's ``train()`` after ``load_or_resume``: room for
        checkpoints, the accumulation counters from the loop's iteration, ``compile``."""
        self.stage_start.begin_training(self, self.trainer.ckpt_path)
        self.preparation.compile(self.model, self.context.logger)

    # -- resume state (see :class:`~mm_lightning.runtime.resume.ResumeState`) -----------------------------------
    def set_resume_state(self, state: Dict[str, Any], meta: Dict[str, Any]) -> None:
        """Progress, data position and random state from a checkpoint of either format."""
        self.resume_state.set_resume_state(self, state, meta)

    @override
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """mm_lightning's state, and the hooks' ``before_save_checkpoint`` (as for an mmengine file)."""
        self.resume_state.save_into(self, checkpoint, self.trainer.state.fn == TrainerFn.FITTING)

    @override
    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """The hooks' ``after_load_checkpoint`` (before Lightning loads the weights), and, when fitting, the
        training state."""
        drop_loop_state(checkpoint)
        self.resume_state.load_from(self, checkpoint, self.trainer.state.fn == TrainerFn.FITTING)

    # -- training -------------------------------------------------------------------------------------
    @override
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return self.model.train_step(batch, optim_wrapper=self.optim_wrapper)

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        self.optimization.clip(optimizer, self.trainer.strategy)  # the precision plugin has unscaled gradients

    # -- evaluation -----------------------------------------------------------------------------------
    @override
    def on_validation_model_zero_grad(self) -> None:
        """Keep accumulated gradients across validation, as mmengine does (see fidelity)."""

    @override
    def on_validation_model_eval(self) -> None:
        """Deferred: ``eval()`` comes after ``before_val_epoch`` (see fidelity)."""

    @override
    def on_validation_model_train(self) -> None:
        """Deferred: the hook bridge sets train mode where mmengine's loops do (see fidelity)."""

    @override
    def on_test_model_eval(self) -> None:
        """Deferred: ``eval()`` comes after ``before_test_epoch`` (see fidelity)."""

    def _eval_epoch_end(self, mode: str) -> None:
        """The end of mmengine's ``run``: its metrics, and their scalars logged (the same on every rank, as mmengine
        broadcasts them: averaging equal values keeps them)."""
        scalars = self.loops.finish_eval_epoch(mode, self.model, self.metrics)
        if scalars:
            self.log_dict(scalars, sync_dist=self.context.world_size > 1)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.loops.eval_step('val', batch, batch_idx, self.metrics)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.loops.eval_step('test', batch, batch_idx, self.metrics)

    @override
    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """The model's ``test_step`` outputs for one batch (a ``BaseModel``'s data samples with predictions).

        mmengine has no predict loop: prediction is its test step over the test loader
        (``ConfigDataModule.predict_dataloader``), without the evaluator and hooks.
        """
        return self.model.test_step(batch)

    @override
    def on_predict_start(self) -> None:
        self.resume_state.load_for_evaluation(self, self.trainer.ckpt_path)

    @override
    def on_validation_epoch_start(self) -> None:
        """The start of mmengine's ``ValLoop.run`` (after its two hooks, which the bridge calls)."""
        self.loops.start_eval_epoch('val', self.trainer.model)  # the strategy's wrapper (DDP, FSDP) or this module

    @override
    def on_test_epoch_start(self) -> None:
        self.loops.start_eval_epoch('test', self.trainer.model)

    @override
    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end('val')

    @override
    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end('test')
