"""The run's mmengine loops, bound to the loaders Lightning iterates, and the evaluation dispatch over them.

:class:`LoopBinding` is the part of :class:`~mm_lightning.ConfigModule` that holds ``train_cfg`` and, once a
stage binds them to its datamodule's loaders, mmengine's training loop with its
:class:`~mm_lightning.runtime.loops.TrainProgress` and the validation and test loops. It builds them as
mmengine's Runner builds them (see :mod:`mm_lightning.runtime.loops`) and runs an evaluation epoch's steps
through them where the module's Lightning hooks call it. The model and the runner the loops get are passed
in by the module at each call: hooks may replace either (``runner.model = ...``, ``attach_runner``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch
import torchmetrics
from mmengine.evaluator import BaseMetric
from mmengine.runner.base_loop import BaseLoop

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.ground.internals import parse_losses
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
from mm_lightning.state import rng
from mm_lightning.translate.sharded_model import reshard

if TYPE_CHECKING:  # the view imports nothing of this module either
    from mm_lightning.runtime.view import RunnerView

__all__ = ['LoopBinding']

_NOT_BUILT = 'the training loop is not built yet: a fit builds it over the training loader'


class LoopBinding:
    """``train_cfg``, ``val_cfg``/``test_cfg`` and their evaluators, and the loops built of them over a
    datamodule's loaders.

    Args:
        train_cfg: ``train_cfg`` as configured (None: the run does not train), or a built training loop's config.
        eval_cfgs: per mode (``'val'``, ``'test'``), the loop config and the evaluator config (None: not configured).
    """

    def __init__(self, train_cfg: Any, eval_cfgs: Dict[str, Tuple[Any, Any]]) -> None:
        self.train_cfg = train_cfg
        #: mmengine's training loop object (``runner.train_loop``), built from ``train_cfg`` on first use.
        self.train_loop: Optional[BaseLoop] = None
        #: Lightning's driver of that loop and the run's position in it (built with it).
        self.progress: Optional[TrainProgress] = None
        self._first_pass_rng: Optional[rng.RngState] = None  # the random state the loop was built with
        self._eval_cfgs = dict(eval_cfgs)
        self._eval_loops: Dict[str, BaseLoop] = {}
        self._eval_sources: Dict[str, Any] = {}  # what each evaluation loop was built over

    # -- what is configured and built ---------------------------------------------------------------
    @property
    def training_progress(self) -> TrainProgress:
        """``progress``, once a fit has built the training loop (before, nothing trains)."""
        if self.progress is None:
            raise RuntimeError(_NOT_BUILT)
        return self.progress

    @property
    def built_train_loop(self) -> BaseLoop:
        """``train_loop``, once a fit has built it."""
        if self.train_loop is None:
            raise RuntimeError(_NOT_BUILT)
        return self.train_loop

    @property
    def has_training(self) -> bool:
        """Whether the run is configured to train (``train_cfg``)."""
        return self.train_cfg is not None

    def eval_loop(self, mode: str) -> Optional[BaseLoop]:
        """The ``mode`` loop once bound to a loader, or None."""
        return self._eval_loops.get(mode)

    def has_eval(self, mode: str) -> bool:
        """Whether the run is configured to validate (``'val'``) or test (``'test'``)."""
        return self._eval_cfgs[mode][0] is not None

    def eval_settings(self, mode: str) -> Any:
        """``val_cfg``/``test_cfg`` as configured."""
        return self._eval_cfgs[mode][0]

    def eval_config(self, mode: str) -> Any:
        """``val_evaluator``/``test_evaluator`` as configured."""
        return self._eval_cfgs[mode][1]

    def eval_runs_itself(self, mode: str) -> bool:
        """Whether the ``mode`` loop's own ``run`` runs, as one step of Lightning's evaluation."""
        return runs_itself(self._eval_loops[mode], mode)

    # -- building and binding -----------------------------------------------------------------------
    def build_eval_loop(self, mode: str, loop_cfg: Any, runner: RunnerView, dataloader: Any) -> BaseLoop:
        """The evaluation loop ``loop_cfg`` describes, over ``dataloader``, with ``runner`` as its runner, given
        the ``mode`` evaluator config (see :meth:`mm_lightning.ConfigModule.build_eval_loop`)."""
        evaluator = self._eval_cfgs[mode][1]
        if isinstance(evaluator, (BaseMetric, torchmetrics.Metric)):
            evaluator = [evaluator]  # a lone built metric, in the list form mmengine's loops take
        with evaluator_key(f'{mode}_evaluator'):  # the config itself, as mmengine passes it (builds copy it)
            return build_eval_loop(mode, loop_cfg, runner, dataloader, evaluator)

    def bind(self, model: torch.nn.Module, runner: RunnerView, datamodule: Any, stage: str) -> None:
        """Point the loops a Lightning ``stage`` runs at ``datamodule``'s loaders (the ones it iterates)."""
        if stage == 'predict':
            return  # predict_step calls the model itself: no mmengine loop to bind
        if stage == 'fit':
            self.bind_train(model, runner, datamodule)
            check_drivable(type(self.train_loop))
            if self.training_progress.has_validation:
                self.bind_eval(model, runner, 'val', datamodule)
        else:
            self.bind_eval(model, runner, 'test' if stage == 'test' else 'val', datamodule)

    def bind_train(self, model: torch.nn.Module, runner: RunnerView, datamodule: Any) -> None:
        """Build mmengine's training loop over the datamodule's training loader (once), as mmengine's
        Runner builds it, and let the datamodule's training stream follow it."""
        if not self.has_training:
            raise ConfigError('train_dataloader, train_cfg and optim_wrapper: training needs all three')
        if not hasattr(model, 'train_step'):
            raise config_error(f'model: {type(model).__name__} has no train_step. If you want to train your '
                               'model, please make sure your model has implemented `train_step` (an mmengine '
                               'BaseModel does).', AssertionError)
        if self.train_loop is None:
            first_pass_rng = rng.capture()  # an iteration-based loop starts its first pass when built
            self.train_loop = build_train_loop(self.train_cfg, runner, datamodule.loader('train'))
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

    def bind_eval(self, model: torch.nn.Module, runner: RunnerView, mode: str, datamodule: Any) -> None:
        """Build the ``mode`` loop over ``datamodule``'s loader (again where that loader changed)."""
        if not self.has_eval(mode) or not datamodule.has(mode):
            raise ConfigError(f'{mode}_dataloader, {mode}_cfg and {mode}_evaluator: '
                              f'{"validation" if mode == "val" else "testing"} needs all three')
        if not hasattr(model, f'{mode}_step'):
            task = 'validate' if mode == 'val' else 'test'
            raise config_error(f'model: {type(model).__name__} has no {mode}_step, needed by {mode}_cfg. If you '
                               f'want to {task} your model, please make sure your model has implemented '
                               f'`{mode}_step`.', AssertionError)
        loop_cfg = self._eval_cfgs[mode][0]
        # A loop that runs itself gets the loader config, as mmengine gives it, and builds its loaders its way
        # (mmagic's with the run's seed only); one Lightning iterates gets the loader it iterates.
        source = datamodule.spec(mode) if runs_itself(eval_loop_class(mode, loop_cfg), mode) \
            else datamodule.loop_dataloader(mode)
        if mode not in self._eval_loops or self._eval_sources.get(mode) is not source:
            self._eval_loops[mode] = self.build_eval_loop(mode, loop_cfg, runner, source)
            self._eval_sources[mode] = source
        datamodule.evaluate_in_one_step(mode, self.eval_runs_itself(mode))

    # -- an evaluation epoch, as mmengine's ValLoop.run/TestLoop.run ------------------------------------
    def start_eval_epoch(self, mode: str, wrapped: Optional[torch.nn.Module]) -> None:
        """The start of mmengine's ``run`` (after its two hooks): ``wrapped`` (the strategy's wrapper of the
        model, or the module) in eval mode and the loop's losses cleared."""
        if self.eval_runs_itself(mode):
            return
        if wrapped is not None:
            wrapped.eval()
        getattr(self._eval_loops[mode], EVAL_LOSSES[mode]).clear()

    def eval_step(self, mode: str, batch: Any, batch_idx: int, metrics: Dict[str, Any]) -> None:
        """One step of Lightning's evaluation: the loop's ``run_iter``, or, for a loop that runs itself, its
        whole ``run``, whose metrics go into ``metrics[mode]``."""
        loop = self._eval_loops[mode]
        if self.eval_runs_itself(mode):
            metrics[mode] = loop.run()  # the loop iterates its loaders and calls its hooks itself
        else:
            loop.run_iter(batch_idx, batch)

    def finish_eval_epoch(self, mode: str, model: torch.nn.Module, metrics: Dict[str, Any]) -> Dict[str, float]:
        """The end of mmengine's ``run``: the evaluator's metrics and the losses the steps returned, into
        ``metrics[mode]`` (a loop that ran itself has put its own there); their scalars, for Lightning to log.
        A sharded ``model``'s parameters are back in their shards for the ``after_*_epoch`` hooks (see
        :mod:`mm_lightning.translate.sharded_model`)."""
        reshard(model)
        if not self.eval_runs_itself(mode):
            loop = self._eval_loops[mode]
            results = loop.evaluator.evaluate(len(loop.dataloader.dataset))
            losses = getattr(loop, EVAL_LOSSES[mode])
            if losses:
                results.update(parse_losses(losses, mode))
            metrics[mode] = results
        return scalar_metrics(metrics[mode] or {})
