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
import torch
import torchmetrics
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.model.efficient_conv_bn_eval import turn_on_efficient_conv_bn_eval
from mmengine.optim import BaseOptimWrapper, OptimWrapper
from mmengine.runner.activation_checkpointing import turn_on_activation_checkpointing
from mmengine.runner.base_loop import BaseLoop
from torch.optim import Optimizer
from typing_extensions import override

from mm_lightning.config.loading import CfgOptions, ConfigError, ConfigLike, config_error, load_config
from mm_lightning.config.validation import LIGHTNING_STAGES, validate_config
from mm_lightning.ground.internals import attached_trainer, batch_size, parse_losses
from mm_lightning.runtime.assembly import ModuleParts, module_parts
from mm_lightning.runtime.bridge import HookBridge
from mm_lightning.runtime.data import config_datamodule
from mm_lightning.runtime.fidelity import check_after_validation, drop_loop_state, neutralise
from mm_lightning.runtime.loops import (
    EVAL_LOSSES,
    TrainProgress,
    build_eval_loop,
    build_train_loop,
    check_drivable,
    eval_loop_class,
    runs_itself,
)
from mm_lightning.runtime.metrics import evaluator_key, scalar_metrics
from mm_lightning.runtime.optim import (
    build_optim_wrapper,
    clip_gradients,
    route_through_lightning,
    scale_lr,
    wrappers_of,
)
from mm_lightning.runtime.schedulers import build_param_schedulers, load_scheduler_states
from mm_lightning.runtime.trainer_settings import (
    apply_overrides,
    check_built,
    config_overrides,
    hand_over,
    lightning_epochs,
    read_settings,
)
from mm_lightning.runtime.view import RunnerView
from mm_lightning.state import checkpoint as ckpt
from mm_lightning.state import disk, rng
from mm_lightning.state.convert import HOOK_KEYS, STATE_KEY, own_rank_state
from mm_lightning.state.serialization import from_safe, to_safe
from mm_lightning.translate.progress import bar_draws
from mm_lightning.translate.sharded_model import reshard
from mm_lightning.translate.sharding import shard_for

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
        self._checked_stages: set = set()
        self.train_cfg = parts.train_cfg
        #: mmengine's training loop object (``runner.train_loop``), built from ``train_cfg`` on first use.
        self.train_loop: Optional[BaseLoop] = None
        #: Lightning's driver of that loop and the run's position in it (built with it).
        self.progress: Optional[TrainProgress] = None
        self._first_pass_rng: Optional[rng.RngState] = None  # the random state the loop was built with
        self.optim_wrapper = parts.optim_wrapper
        self.param_schedulers = parts.param_scheduler
        self.auto_scale_lr = parts.auto_scale_lr
        self._eval_cfgs = {'val': (parts.val_cfg, parts.val_evaluator),
                           'test': (parts.test_cfg, parts.test_evaluator)}
        self._eval_loops: Dict[str, BaseLoop] = {}
        self._eval_sources: Dict[str, Any] = {}  # what each evaluation loop was built over
        self.load_from = parts.load_from
        self.resume = parts.resume
        self.compile_cfg = parts.compile
        self.metrics: Dict[str, dict] = {}
        self.resumed = False  # a checkpoint's training state was restored for this fit
        self.loaded = False  # load_from / resume done (mmengine's ``_has_loaded``)
        # A checkpoint's random state and accumulated gradients, restored where the run continues
        self._random_state: Optional[rng.RngState] = None
        self._gradients: Optional[Dict[str, torch.Tensor]] = None
        self._rank_buffers: Optional[Dict[str, torch.Tensor]] = None  # this rank's own, where it differs from rank 0
        self._data_position: Optional[Dict[str, Any]] = None
        self._scheduler_states: Any = None  # a Lightning checkpoint's, for schedulers built later
        self._weights_ready = False
        self._lr_scaled = False
        self._bridge = HookBridge(self)
        self._runner: Optional[RunnerView] = None
        self._wrapper_of_optimizer: Dict[int, OptimWrapper] = {}

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

    @property
    def training_progress(self) -> TrainProgress:
        """``progress``, once a fit has built the training loop (before, nothing trains)."""
        if self.progress is None:
            raise RuntimeError('the training loop is not built yet: a fit builds it over the training loader')
        return self.progress

    @property
    def built_train_loop(self) -> BaseLoop:
        """``train_loop``, once a fit has built it."""
        if self.train_loop is None:
            raise RuntimeError('the training loop is not built yet: a fit builds it over the training loader')
        return self.train_loop

    @property
    def has_training(self) -> bool:
        """Whether the run is configured to train (``train_cfg``)."""
        return self.train_cfg is not None

    def eval_loop(self, mode: str) -> Optional[BaseLoop]:
        """mmengine's ValLoop/TestLoop (or the config's loop) for ``mode`` once bound to a loader, or None.

        Args:
            mode: ``'val'`` or ``'test'``.

        Returns:
            The built loop, or None before a run has bound it to a loader.
        """
        return self._eval_loops.get(mode)

    def has_eval(self, mode: str) -> bool:
        """Whether the run is configured to validate (``'val'``) or test (``'test'``)."""
        return self._eval_cfgs[mode][0] is not None

    def eval_settings(self, mode: str) -> Any:
        """``val_cfg``/``test_cfg`` as configured (mmengine's ``_val_loop`` before it is built)."""
        return self._eval_cfgs[mode][0]

    def eval_config(self, mode: str) -> Any:
        """``val_evaluator``/``test_evaluator`` as configured (mmengine's ``_val_evaluator``)."""
        return self._eval_cfgs[mode][1]

    def build_eval_loop(self, mode: str, loop_cfg: Any, dataloader: Any) -> BaseLoop:
        """The evaluation loop ``loop_cfg`` describes, over ``dataloader``, as mmengine's Runner builds it:
        given the evaluator config, which the loop builds through ``runner.build_evaluator``.

        Args:
            mode: ``'val'`` or ``'test'``: whose evaluator (``val_evaluator``/``test_evaluator``) it gets.
            loop_cfg: ``val_cfg``/``test_cfg`` (``ValLoop``/``TestLoop`` without a ``type``), or a built loop,
                returned as it is.
            dataloader: what the loop iterates: a built loader, or, for a loop that builds its own loaders,
                the ``*_dataloader`` config.

        Returns:
            The loop, with :attr:`runner` as its runner (:meth:`bind_eval` keeps the one it builds).

        Raises:
            ConfigError: ``loop_cfg`` is refused; the message names ``val_cfg``/``test_cfg``. Errors of the
                evaluator it builds name ``val_evaluator``/``test_evaluator``.
        """
        evaluator = self._eval_cfgs[mode][1]
        if isinstance(evaluator, (BaseMetric, torchmetrics.Metric)):
            evaluator = [evaluator]  # a lone built metric, in the list form mmengine's loops take
        with evaluator_key(f'{mode}_evaluator'):  # the config itself, as mmengine passes it (builds copy it)
            return build_eval_loop(mode, loop_cfg, self.runner, dataloader, evaluator)

    def eval_runs_itself(self, mode: str) -> bool:
        """Whether the ``mode`` loop's own ``run`` runs, as one step of Lightning's evaluation."""
        return runs_itself(self._eval_loops[mode], mode)

    # -- setting up (the hook bridge calls these in mmengine's order) ------------------------------------
    def check_stage(self, stage: str) -> None:
        """The config checks of what a Lightning ``stage`` (fit, validate, test) runs, once, before it starts."""
        for part in LIGHTNING_STAGES.get(stage, ()):
            if part not in self._checked_stages:
                validate_config(self.keywords, stages=(part,))
                self._checked_stages.add(part)

    def prepare_run(self, trainer: pl.Trainer, stage: str) -> None:
        """What a run needs before ``before_run``: config checked, outputs opened, loops bound to the loaders."""
        self.check_stage(stage)
        neutralise(trainer)
        self.context.open(self.cfg, self.hooks.info(), bar_draws=bar_draws(trainer))
        if stage == 'fit':  # training writes checkpoints; a resume (config or Trainer's ckpt_path) continues them
            self.context.warn_of_overwrites(resuming=bool(self.resume) or trainer.ckpt_path is not None)
        self.bind(config_datamodule(trainer), stage)

    def bind(self, datamodule: Any, stage: str) -> None:
        """Point the loops a Lightning ``stage`` runs at ``datamodule``'s loaders (the ones it iterates)."""
        if stage == 'predict':
            return  # predict_step calls the model itself: no mmengine loop to bind
        if stage == 'fit':
            self.bind_train(datamodule)
            check_drivable(type(self.train_loop))
            if self.training_progress.has_validation:
                self.bind_eval('val', datamodule)
        else:
            self.bind_eval('test' if stage == 'test' else 'val', datamodule)

    def bind_train(self, datamodule: Any) -> None:
        """Build mmengine's training loop over the datamodule's training loader (once), as mmengine's
        Runner builds it, and let the datamodule's training stream follow it."""
        if not self.has_training:
            raise ConfigError('train_dataloader, train_cfg and optim_wrapper: training needs all three')
        if not hasattr(self.model, 'train_step'):
            raise config_error(f'model: {type(self.model).__name__} has no train_step. If you want to train your '
                               'model, please make sure your model has implemented `train_step` (an mmengine '
                               'BaseModel does).', AssertionError)
        if self.train_loop is None:
            first_pass_rng = rng.capture()  # an iteration-based loop starts its first pass when built
            self.train_loop = build_train_loop(self.train_cfg, self.runner, datamodule.loader('train'))
            self.progress = TrainProgress(self.train_loop, has_validation=False)
            self._first_pass_rng = first_pass_rng
        self.training_progress.has_validation = self.has_eval('val') and datamodule.has('val')
        datamodule.train_stream.follow(self.train_loop, self.training_progress.by_epoch, self._first_pass_rng)

    def use_train_loop(self, loop: Any) -> None:
        """What assigning the runner's ``_train_loop`` means: a built loop becomes the run's; a config, built later."""
        if isinstance(loop, BaseLoop):
            if loop is not self.train_loop:
                self.train_loop = loop
                self.progress = TrainProgress(loop, has_validation=False)
        else:
            self.train_cfg, self.train_loop, self.progress = loop, None, None

    def bind_eval(self, mode: str, datamodule: Any) -> None:
        if not self.has_eval(mode) or not datamodule.has(mode):
            raise ConfigError(f'{mode}_dataloader, {mode}_cfg and {mode}_evaluator: '
                              f'{"validation" if mode == "val" else "testing"} needs all three')
        if not hasattr(self.model, f'{mode}_step'):
            task = 'validate' if mode == 'val' else 'test'
            raise config_error(f'model: {type(self.model).__name__} has no {mode}_step, needed by {mode}_cfg. If you '
                               f'want to {task} your model, please make sure your model has implemented '
                               f'`{mode}_step`.', AssertionError)
        loop_cfg = self._eval_cfgs[mode][0]
        # A loop that runs itself gets the loader config, as mmengine gives it, and builds its loaders its way
        # (mmagic's with the run's seed only); one Lightning iterates gets the loader it iterates.
        source = datamodule.spec(mode) if runs_itself(eval_loop_class(mode, loop_cfg), mode) \
            else datamodule.loop_dataloader(mode)
        if mode not in self._eval_loops or self._eval_sources.get(mode) is not source:
            self._eval_loops[mode] = self.build_eval_loop(mode, loop_cfg, source)
            self._eval_sources[mode] = source
        datamodule.evaluate_in_one_step(mode, self.eval_runs_itself(mode))

    def initialize_weights(self, stage: str) -> None:
        """``init_weights`` once, before the strategy wraps the model (DDP then broadcasts rank 0's)."""
        if stage == 'fit' or self.cfg.get('init_weights_for_test_or_val', True):
            if not self._weights_ready and hasattr(self.model, 'init_weights'):
                self.model.init_weights()
            self._weights_ready = True
        if stage == 'fit':
            for key, turn_on in (('activation_checkpointing', turn_on_activation_checkpointing),
                                 ('efficient_conv_bn_eval', turn_on_efficient_conv_bn_eval)):
                modules = self.cfg.get(key)
                if modules is not None:
                    self.context.logger.info(f'Enabling the "{key}" feature for sub-modules: {modules}')
                    turn_on(self.model, modules)

    @override
    def configure_model(self) -> None:
        """Shard the model under FSDP2 (``ModelParallelStrategy``): after ``init_weights``, before the optimizers
        are built over its parameters (see :mod:`mm_lightning.translate.sharding`)."""
        strategy = self.trainer.strategy
        if isinstance(strategy, ModelParallelStrategy):
            shard_for(strategy, self.model)

    @override
    def configure_callbacks(self) -> List[Callback]:
        """The hook bridge. Lightning asks for it before checking the Trainer itself, so a fit takes the Trainer's
        own length, cadence, accumulation and clipping into the config here, then checks the config
        (see :mod:`mm_lightning.runtime.trainer_settings`)."""
        if self.trainer.state.fn == TrainerFn.FITTING:
            self.take_trainer_settings(self.trainer)
            self.check_stage('fit')
            if self.has_eval('val'):
                check_after_validation(self.trainer)
        # a later stage on the same Trainer finds the bridge there: returning it again would replace it, with
        # Lightning's warning that configure_callbacks overrides the Trainer's callbacks
        callbacks = getattr(self.trainer, 'callbacks')  # set in the Trainer's __init__, not declared
        return [] if any(callback is self._bridge for callback in callbacks) else [self._bridge]

    def take_trainer_settings(self, trainer: pl.Trainer) -> None:
        """Move ``trainer``'s own settings that config keys decide into the config, as ``--cfg-options`` with the
        same values would set them, before the loop, optim wrapper and schedulers are built from it."""
        train = self.train_loop if self.train_loop is not None else self.train_cfg
        overrides = config_overrides(read_settings(trainer), train, self.optim_wrapper)
        if self.train_loop is not None:
            check_built(overrides, self.train_loop)
        elif overrides:
            for part in ('train_cfg', 'optim_wrapper'):
                below = {key.partition('.')[2]: value for key, value in overrides.items() if key.startswith(part)}
                if below:
                    updated = apply_overrides(getattr(self, part), below)
                    setattr(self, part, updated)
                    self.cfg[part] = updated  # the config dumped and saved in checkpoints says what runs
                    self.keywords = {**self.keywords, part: updated}
            self.context.logger.info('Trainer settings taken into the config: ' + ', '.join(
                f'{key}={value!r}' for key, value in overrides.items()))
        epochs = lightning_epochs(self.train_loop if self.train_loop is not None else self.train_cfg)
        if epochs is not None:
            hand_over(trainer, epochs)

    def build_optimization(self) -> None:
        """The optim wrapper (LR scaled once, as mmengine's ``scale_lr``) and parameter schedulers, built
        from their configs as mmengine's Runner builds them; built ones are kept."""
        self.optim_wrapper = build_optim_wrapper(self.model, self.optim_wrapper)
        if not self._lr_scaled:  # once, before the schedulers record the initial LRs
            self._lr_scaled = True
            scale_lr(self.optim_wrapper, self.auto_scale_lr, batch_size(self.built_train_loop.dataloader),
                     self.context.world_size, self.context.logger)
        if self.param_schedulers is not None:
            self.param_schedulers = build_param_schedulers(self.param_schedulers, self.optim_wrapper, self.train_loop)

    @override
    def configure_optimizers(self) -> Optional[List[Optimizer]]:
        """Build the optim wrapper and schedulers (after the strategy has wrapped the model)."""
        if self.optim_wrapper is None:
            return None
        self.build_optimization()
        route_through_lightning(self.optim_wrapper, self)
        if self._scheduler_states is not None:
            load_scheduler_states(self.param_schedulers, self._scheduler_states)
            self._scheduler_states = None
        wrappers = wrappers_of(self.optim_wrapper)
        self._wrapper_of_optimizer = {id(w.optimizer): w for w in wrappers}
        return [w.optimizer for w in wrappers]

    def start_fit(self) -> None:
        """After the strategy has set up model and optimizers: load/resume. A Lightning checkpoint given to
        ``Trainer.fit`` is Lightning's to restore instead: before this, or after it where the strategy restores
        after setting up (FSDP2, DeepSpeed)."""
        if self.trainer.ckpt_path is None and not self.loaded:
            self.resumed = ckpt.load_or_resume(self)
        self.loaded = True

    def begin_training(self) -> None:
        """Where training starts or continues, whichever way its checkpoint was restored, as mmengine's ``train()``
        after ``load_or_resume``: room for checkpoints, the accumulation counters from the loop's iteration,
        ``compile``."""
        progress = self.training_progress
        if self.trainer.ckpt_path is not None:
            self.context.logger.info(f'Continuing from the Lightning checkpoint {self.trainer.ckpt_path} (epoch '
                                     f'{progress.epoch}, iter {progress.iter}); load_from/resume in the config are '
                                     'not used')
        disk.check_room(self)  # before any training time is spent
        if isinstance(self.optim_wrapper, OptimWrapper):  # DeepSpeedOptimWrapper counts nothing: its engine does
            self.optim_wrapper.initialize_count_status(self.model, progress.iter, progress.max_iters)
        self.compile_model()

    def load_for_evaluation(self) -> None:
        """``load_from`` before a standalone validation or test (once), unless the weights came from the
        Trainer's ``ckpt_path``."""
        if not self.loaded and self.trainer.ckpt_path is None:
            ckpt.load_or_resume(self, weights_only=True)
            self.loaded = True

    def compile_model(self) -> None:
        """mmengine's ``compile``: ``torch.compile`` the model's ``train_step`` (or ``target``)."""
        if not self.compile_cfg:
            return
        options = dict(self.compile_cfg) if isinstance(self.compile_cfg, dict) else {}
        target = options.pop('target', 'train_step')
        setattr(self.model, target, torch.compile(getattr(self.model, target), **options))
        self.context.logger.info('Model has been "compiled". The first few iterations will be slow, '
                                 'please be patient.')

    def restore_continuation_state(self) -> None:
        """The global random state, the gradients of an unfinished accumulation window and this rank's buffers
        the checkpoint was taken with (once, where the run continues, after the weights are loaded)."""
        if self._rank_buffers is not None:
            ckpt.restore_buffers(self, self._rank_buffers)
            self._rank_buffers = None
        if self._gradients is not None:
            ckpt.restore_gradients(self, self._gradients)
            self._gradients = None
        if self._random_state is not None:
            rng.restore(self._random_state)
            self._random_state = None

    def set_resume_state(self, state: Dict[str, Any], meta: Dict[str, Any]) -> None:
        """Progress, data position and random state from a checkpoint of either format.

        A checkpoint mmengine wrote has only ``meta``'s counters: the position follows from them.
        """
        ckpt.check_world_size(state, self.context.world_size, self.auto_scale_lr)
        own = own_rank_state(state, self.context.rank)
        loop = state.get('loop')
        self._data_position = own.get('data')
        if loop is None or loop.get('from_meta'):
            loop = self.training_progress.state_from_meta(meta['epoch'], meta['iter'])
            self._data_position = {'train': self.runner.datamodule.train_stream.state_from_meta(meta['epoch'],
                                                                                                 meta['iter'])}
        self.training_progress.load_state_dict(loop)
        self._random_state = own.get('rng')
        self._gradients = own.get('gradients')
        # another number of ranks: each rank starts from rank 0's buffers, the checkpoint's weights
        self._rank_buffers = own.get('buffers') if state.get('world_size') == self.context.world_size else None
        self.resumed = True

    def restore_data_position(self, datamodule: Any) -> None:
        """This rank's position in the training data from the checkpoint (once, where the run continues;
        after Lightning restored the datamodule's own state, which is rank 0's)."""
        if self._data_position is not None:
            datamodule.load_state_dict(self._data_position)
            self._data_position = None

    # -- Lightning checkpoints -----------------------------------------------------------------------
    @override
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """mm_lightning's state, and the hooks' ``before_save_checkpoint`` (as for an mmengine file)."""
        if self.progress is not None and self.trainer.state.fn == TrainerFn.FITTING:
            loop_state = self.training_progress.snapshot()
            state = ckpt.training_state(self, loop_state)
            meta = ckpt.run_meta(self, {}, loop_state)
            view = ckpt.hook_view(checkpoint, meta)
            self.runner.call_hook('before_save_checkpoint', checkpoint=view)
            state[HOOK_KEYS] = ckpt.apply_hook_view(checkpoint, view)
            state['meta'] = to_safe(meta)
            state['optimizer_names'] = ckpt.optimizer_names(self.optim_wrapper)
            checkpoint[STATE_KEY] = state

    @override
    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """The hooks' ``after_load_checkpoint`` (before Lightning loads the weights), and, when fitting, the
        training state."""
        drop_loop_state(checkpoint)
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        if fitting and STATE_KEY not in checkpoint:
            raise ConfigError('ckpt_path: this Lightning checkpoint has no mm_lightning state (it was not '
                              'written from a ConfigModule); convert an mmengine checkpoint with '
                              '`mm-lightning convert-checkpoint SRC.pth DST.ckpt`')
        state = from_safe(checkpoint.get(STATE_KEY) or {})
        self.resumed = fitting  # what hooks read as runner._resume (EMAHook restores its average)
        view = ckpt.hook_view(checkpoint, state.get('meta', {}))
        self.runner.call_hook('after_load_checkpoint', checkpoint=view)
        ckpt.apply_hook_view(checkpoint, view)
        if not fitting:
            return
        self.context.message_hub.load_state_dict(state['message_hub'])
        self._scheduler_states = state.get('param_schedulers')
        if self._scheduler_states is not None and isinstance(self.optim_wrapper, BaseOptimWrapper):
            # built already: strategies that restore after setup (FSDP2, DeepSpeed) load checkpoints then
            load_scheduler_states(self.param_schedulers, self._scheduler_states)
            self._scheduler_states = None
        self.set_resume_state(state, state.get('meta', {}))

    # -- training -------------------------------------------------------------------------------------
    @override
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return self.model.train_step(batch, optim_wrapper=self.optim_wrapper)

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        wrapper = self._wrapper_of_optimizer.get(id(optimizer))
        if wrapper is not None and getattr(wrapper, 'clip_grad_kwargs', None):
            clip_gradients(wrapper, self.trainer.strategy)  # the precision plugin has unscaled gradients

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

    def _eval_epoch_start(self, mode: str) -> None:
        """The start of mmengine's ``ValLoop.run``/``TestLoop.run`` (after its two hooks, which the bridge calls)."""
        if self.eval_runs_itself(mode):
            return
        wrapped = self.trainer.model  # the strategy's wrapper of the model (DDP, FSDP) or this module
        if wrapped is not None:
            wrapped.eval()
        getattr(self._eval_loops[mode], EVAL_LOSSES[mode]).clear()

    def _eval_step(self, mode: str, batch: Any, batch_idx: int) -> None:
        loop = self._eval_loops[mode]
        if self.eval_runs_itself(mode):
            self.metrics[mode] = loop.run()  # the loop iterates its loaders and calls its hooks itself
        else:
            loop.run_iter(batch_idx, batch)

    def _eval_epoch_end(self, mode: str) -> None:
        """The end of mmengine's ``run``: the evaluator's metrics and the losses the steps returned. A sharded
        model's parameters are back in their shards for the ``after_*_epoch`` hooks (see sharded_model)."""
        reshard(self.model)
        if not self.eval_runs_itself(mode):
            loop = self._eval_loops[mode]
            metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
            losses = getattr(loop, EVAL_LOSSES[mode])
            if losses:
                metrics.update(parse_losses(losses, mode))
            self.metrics[mode] = metrics
        scalars = scalar_metrics(self.metrics[mode] or {})
        if scalars:
            # The same on every rank (mmengine broadcasts them); averaging equal values keeps them.
            self.log_dict(scalars, sync_dist=self.context.world_size > 1)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step('val', batch, batch_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step('test', batch, batch_idx)

    @override
    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """The model's ``test_step`` outputs for one batch (a ``BaseModel``'s data samples with predictions).

        mmengine has no predict loop: prediction is its test step over the test loader
        (``ConfigDataModule.predict_dataloader``), without the evaluator and hooks.
        """
        return self.model.test_step(batch)

    @override
    def on_predict_start(self) -> None:
        self.load_for_evaluation()

    @override
    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start('val')

    @override
    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start('test')

    @override
    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end('val')

    @override
    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end('test')
