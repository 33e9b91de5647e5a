"""Every use of a private Lightning, mmengine or torch name, in one place.

mm_lightning keeps mmengine's order of events on Lightning's loops, which needs a few things neither
library offers publicly: positioning Lightning's fit loop for an exact resume, running its validation
loop at a moment of mmengine's choosing, and mmengine's own helpers that its Runner and loops use.
Each is wrapped here, once, with the version it was read against (CI tests the versions ``setup.cfg``
allows: lightning 2.6.6, mmengine 0.10.7, torch 2.13.0 and 2.14.1). A release that changes one breaks
one function here, not resume somewhere else. Nothing outside this module names them
(``tests/ground/test_internals.py`` checks), except the private names we override, which a subclass can
only name itself:

- ``BaseVisBackend._init_env`` (mmengine 0.10.7; :mod:`mm_lightning.translate.loggers`): the set-up hook
  every vis backend implements, which ``force_init_env`` runs on a backend's first use.
"""
from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.fabric.utilities.distributed import _destroy_dist_connection, _init_dist_connection
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from mmengine.optim import BaseOptimWrapper, OptimWrapper, _ParamScheduler
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
from mmengine.runner.loops import _parse_losses
from mmengine.runner.utils import _get_batch_size
from mmengine.visualization.vis_backend import BaseVisBackend
from torch import nn

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ['position_fit_loop', 'run_fit_validation', 'set_validation_check', 'evaluate_without_inference_mode',
           'fsdp_state_dict_type', 'init_dist_connection', 'destroy_dist_connection', 'parse_losses',
           'batch_size', 'load_checkpoint_file', 'load_state_into_model', 'count_backward', 'count_steps',
           'counts_steps', 'vis_backends_of', 'clip_grad',
           'set_loop_position', 'apply_activation_checkpointing', 'deepspeed_device_rank', 'attached_trainer',
           'set_data_parallel_size', 'cli_value', 'cli_parser', 'instantiate_cli_trainer', 'ParamScheduler',
           'vis_backend_initialized']


# -- Lightning (read against 2.6.6) --------------------------------------------------------------------
def position_fit_loop(trainer: pl.Trainer, epoch: int, optimizer_steps: int, batches: int) -> None:
    """Start the fit loop at ``epoch``, with ``global_step`` at ``optimizer_steps`` and the loggers' step at
    ``batches``, as if it had trained that far (Lightning restores these only from its own loop state).

    Lightning 2.6.6: ``fit_loop.epoch_progress`` (``current``/``total`` trackers), the manual-optimization
    ``optim_step_progress`` (what ``global_step`` reads), and the epoch loop's ``_batches_that_stepped``,
    set through the epoch loop's own ``on_load_checkpoint``.
    """
    fit_loop = trainer.fit_loop
    for progress in (fit_loop.epoch_progress.current, fit_loop.epoch_progress.total):
        for counter in ('ready', 'started', 'processed', 'completed'):  # the trackers' fields, typed per tracker
            setattr(progress, counter, epoch)
    steps = fit_loop.epoch_loop.manual_optimization.optim_step_progress.total
    steps.ready = steps.completed = optimizer_steps
    fit_loop.epoch_loop.on_load_checkpoint({'_batches_that_stepped': batches})


def run_fit_validation(trainer: pl.Trainer) -> None:
    """Run the fit's validation loop now, from inside the fit (Lightning 2.6.6: the epoch loop's ``val_loop``,
    run with the Trainer's stage flags as its epoch loop sets them)."""
    trainer.validating = True
    trainer.fit_loop.epoch_loop.val_loop.run()
    trainer.training = True


def set_validation_check(trainer: pl.Trainer, every_n_epochs: int) -> None:
    """Validate after the batch Lightning checks next when ``(current_epoch + 1) % every_n_epochs == 0``.

    Lightning 2.6.6 decides after ``on_train_batch_end`` from ``val_check_batch`` (set from
    ``val_check_interval`` when fitting starts) and ``check_val_every_n_epoch``. With ``val_check_batch=1``
    every batch qualifies, so the epoch test alone decides.
    """
    trainer.val_check_batch = 1
    trainer.check_val_every_n_epoch = every_n_epochs


def evaluate_without_inference_mode(trainer: pl.Trainer) -> None:
    """Evaluate under ``torch.no_grad`` as mmengine does, also where the Trainer was built with
    ``inference_mode=True`` (Lightning 2.6.6 reads each loop's ``inference_mode`` when it runs)."""
    for loop in (trainer.validate_loop, trainer.test_loop, trainer.predict_loop):
        loop.inference_mode = False


def fsdp_state_dict_type(strategy: FSDPStrategy) -> str:
    """``FSDPStrategy(state_dict_type=...)`` as given (Lightning 2.6.6 keeps it as ``_state_dict_type``)."""
    return strategy._state_dict_type


@contextmanager
def deepspeed_device_rank(strategy: DeepSpeedStrategy) -> Iterator[None]:
    """Number the strategy's devices by local rank while it reads their index, on devices without one (CPU).

    Lightning 2.6.6's DeepSpeedStrategy reads ``root_device.index`` (``parallel_devices[local_rank]``) twice:
    ``setup_distributed`` checks every index equals its local rank (``_validate_device_index_selection``),
    and the engine gets it as ``argparse.Namespace(device_rank=...)`` (``_setup_model_and_optimizer``,
    ``_initialize_deepspeed_inference``). A CPU device has no index, and DeepSpeed (0.19,
    ``DeepSpeedEngine._set_distributed_vars``) compares it with 0 to tell a distributed engine from a single
    one; its CPU accelerator ignores the number otherwise. Numbered devices, for those moments only, are
    what Lightning then reads; everything else keeps the plain device.
    """
    devices = strategy.parallel_devices
    if devices is None or strategy.root_device.index is not None:
        yield
        return
    strategy.parallel_devices = [torch.device(device.type, index) for index, device in enumerate(devices)]
    try:
        yield
    finally:
        strategy.parallel_devices = devices


def attached_trainer(module: pl.LightningModule) -> Optional[pl.Trainer]:
    """The Trainer running ``module``, or None before one does (Lightning 2.6.6 keeps it as ``_trainer``; the
    public ``trainer`` property raises while there is none)."""
    return module._trainer


def set_data_parallel_size(strategy: ModelParallelStrategy, size: int) -> None:
    """Set the strategy's data-parallel size before its ``setup_environment`` builds the device mesh
    (Lightning 2.6.6 keeps ``data_parallel_size`` as ``_data_parallel_size`` and turns ``'auto'`` into
    ``num_nodes`` there)."""
    strategy._data_parallel_size = size


def cli_value(cli: LightningCLI, config: Any, key: str) -> Any:
    """``config``'s ``key`` under the CLI's subcommand, if it runs one (Lightning 2.6.6: ``LightningCLI._get``)."""
    return cli._get(config, key)


def cli_parser(cli: LightningCLI, subcommand: Optional[str]) -> LightningArgumentParser:
    """The CLI's parser for ``subcommand`` (Lightning 2.6.6: ``LightningCLI._parser``; the main one for None)."""
    return cli._parser(subcommand)


def instantiate_cli_trainer(cli: LightningCLI, settings: Dict[str, Any], callbacks: List[Any]) -> pl.Trainer:
    """The Trainer as ``LightningCLI.instantiate_trainer`` builds it from ``settings``, ``callbacks`` added
    with the CLI's own (Lightning 2.6.6: ``LightningCLI._instantiate_trainer``; it adds the trainer defaults'
    callbacks and the config-saving one)."""
    return cli._instantiate_trainer(settings, callbacks)


def init_dist_connection(environment: ClusterEnvironment, backend: str, **kwargs: Any) -> None:
    """The process group as Lightning's strategies create it (Lightning 2.6.6, fabric's distributed
    utilities), for a runner that needs it before a Trainer exists."""
    _init_dist_connection(environment, backend, **kwargs)


def destroy_dist_connection() -> None:
    """Close the process group (Lightning 2.6.6, fabric's distributed utilities)."""
    _destroy_dist_connection()


# -- mmengine (read against 0.10.7) --------------------------------------------------------------------
#: The parameter schedulers' base class (mmengine 0.10.7 exports it from ``mmengine.optim`` as ``_ParamScheduler``).
ParamScheduler = _ParamScheduler


def parse_losses(losses: Mapping[str, Any], stage: str) -> Dict[str, float]:
    """The evaluation losses a ValLoop/TestLoop reports with its metrics (``mmengine.runner.loops``)."""
    return _parse_losses(losses, stage)


def batch_size(dataloader: Any) -> int:
    """A loader's batch size as mmengine's ``scale_lr`` reads it (``mmengine.runner.utils``)."""
    return _get_batch_size(dataloader)


def load_checkpoint_file(filename: str, map_location: Any = None) -> Any:
    """A checkpoint file through mmengine's loaders (paths, URLs, ``open-mmlab://``; ``mmengine.runner``)."""
    return _load_checkpoint(filename, map_location=map_location)


def load_state_into_model(model: nn.Module, checkpoint: dict, strict: bool, revise_keys: list) -> dict:
    """Weights into ``model`` as ``Runner.load_checkpoint`` loads them (keys revised, strictness as asked),
    without mmengine's log line (``mmengine.runner.checkpoint``)."""
    return _load_checkpoint_to_model(model, checkpoint, strict, logger='silent', revise_keys=revise_keys)


def count_backward(wrapper: OptimWrapper) -> None:
    """What ``OptimWrapper.backward`` counts, for a backward done by Lightning: the accumulation window's
    position (``_inner_count``) that decides when ``update_params`` steps."""
    wrapper._inner_count += 1


def count_steps(wrapper: BaseOptimWrapper) -> None:
    """Count the wrapper's steps as mmengine's parameter schedulers do, for a ``step`` replaced after they were
    built. mmengine 0.10.7's ``_ParamScheduler.__init__`` wraps ``optimizer.step`` to add 1 to ``_global_step``
    and marks the wrapper ``_with_counter``; its ``step()`` warns when the mark is gone and compares the count
    with its own."""
    step = wrapper.step
    if getattr(step, '_with_counter', False):
        return
    instance = weakref.ref(wrapper)

    @functools.wraps(step)
    def counted(*args: Any, **kwargs: Any) -> Any:
        owner = instance()
        if owner is not None:
            owner._global_step += 1
        return step(*args, **kwargs)

    setattr(counted, '_with_counter', True)
    wrapper.step = counted


def counts_steps(wrapper: BaseOptimWrapper) -> bool:
    """Whether a parameter scheduler built over the wrapper counts its steps (see :func:`count_steps`)."""
    return bool(getattr(wrapper.step, '_with_counter', False))


def vis_backends_of(visualizer: Any) -> List[Any]:
    """The visualizer's backends (mmengine 0.10.7 keeps them in ``Visualizer._vis_backends``, by name)."""
    return list(getattr(visualizer, '_vis_backends', {}).values())


def vis_backend_initialized(backend: BaseVisBackend) -> bool:
    """Whether the backend has set itself up: ``force_init_env`` runs ``_init_env`` on its first use and then sets
    ``_env_initialized``, which ``BaseVisBackend.__init__`` sets False."""
    return bool(getattr(backend, '_env_initialized', False))


def clip_grad(wrapper: OptimWrapper) -> None:
    """The wrapper's own ``clip_grad`` step (``OptimWrapper._clip_grad``; it logs ``train/grad_norm``)."""
    wrapper._clip_grad()


def set_loop_position(loop: Any, epoch: Optional[int] = None, iteration: Optional[int] = None) -> None:
    """Set a training loop's counters (``runner.epoch``/``runner.iter`` read them; mmengine's loops keep
    them as ``_epoch``/``_iter`` and advance them in their own ``run``)."""
    if epoch is not None:
        loop._epoch = epoch
    if iteration is not None:
        loop._iter = iteration


# -- torch (read against 2.13.0 and 2.14.1) ------------------------------------------------------------
def apply_activation_checkpointing(model: nn.Module, check_fn: Callable[[nn.Module], bool]) -> None:
    """Wrap the submodules ``check_fn`` picks in activation checkpoints, the FSDP way (torch keeps the
    function in ``torch.distributed.algorithms._checkpoint``; imported by the runs that shard)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    apply_activation_checkpointing(model, check_fn=check_fn)
