"""mmengine-format checkpoints of a run, written and read both ways, and exact resume.

Files carry what mmengine's Runner writes (bare model keys, ``meta``, ``optimizer``,
``param_schedulers``, ``message_hub``), so mmengine's ``load_checkpoint`` and ``load_from``
read them, plus, under ``mm_lightning``, what an exact resume needs and mmengine does not
save: the loop progress (including a validation that was due), the position in the data
and the global random state. Lightning checkpoints carry the same state
(:meth:`ConfigModule.on_save_checkpoint`); both are built by :func:`training_state`.

Resuming continues where the checkpoint was taken: a partly trained epoch is not run
again, the random state is restored where the run continues, and a validation that was
due runs first. mmengine-written files lack this state; they resume at the position
their ``meta`` gives, with the random state the run has.
"""
from __future__ import annotations

import os
import pickle
import time
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import mmengine
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from mmengine.fileio import FileClient, join_path
from mmengine.optim import BaseOptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import find_latest_checkpoint, weights_to_cpu
from mmengine.utils import apply_to, get_git_hash
from torch.distributed.tensor import DTensor

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.validation import shards_parameters
from mm_lightning.ground.contract import RunModule
from mm_lightning.ground.internals import fsdp_state_dict_type, load_state_into_model
from mm_lightning.ground.parts import load_scheduler_states, scheduler_states, wrappers_of
from mm_lightning.state import deepspeed_state, rng, serialization, sharded_state, weights
from mm_lightning.state.convert import MODULE_PREFIX, STATE_KEY, as_mmengine, check_resumable, own_rank_state
from mm_lightning.state.serialization import to_safe
from mm_lightning.state.sharded_state import is_sharded

__all__ = ['fsdp1_load_refusal', 'run_meta', 'training_state', 'rank_states', 'check_world_size',
           'restore_buffers', 'restore_gradients',
           'hook_view', 'apply_hook_view', 'optimizer_names', 'gathers_state', 'writes_parts', 'writes_shards',
           'model_state_dict', 'optimizer_state_dict', 'load_into_model', 'load_optimizer_state', 'build_checkpoint',
           'checkpoint_path', 'save', 'save_between_iterations', 'sources', 'read_checkpoint', 'load_or_resume',
           'load_checkpoint', 'resume', 'restore_training_state']


def _to_cpu(state: Any) -> Any:
    """Every tensor on the CPU; a DTensor stays (this rank's shards, gathered or written as they are)."""
    return apply_to(state, lambda x: hasattr(x, 'cpu') and not isinstance(x, DTensor), lambda x: x.cpu())


def run_meta(module: RunModule, meta: Dict[str, Any], loop_state: Dict[str, Any]) -> Dict[str, Any]:
    """``meta`` as mmengine's Runner writes it (counters, config, seed, names, dataset meta)."""
    meta.setdefault('epoch', loop_state['epoch'])
    meta.setdefault('iter', loop_state['iter'])
    context = module.context
    meta.update(cfg=module.cfg.pretty_text, seed=context.seed, experiment_name=context.experiment_name,
                time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                mmengine_version=mmengine.__version__ + get_git_hash())
    dataset = module.built_train_loop.dataloader.dataset
    if hasattr(dataset, 'metainfo'):
        meta.update(dataset_meta=dataset.metainfo)
    return meta


def training_state(module: RunModule, loop_state: Dict[str, Any],
                   ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """What a resumed run needs besides weights and optimizers, in the safe form.

    ``ranks`` is :func:`rank_states` when already taken (a collective: every rank calls it).
    """
    ranks = rank_states(module) if ranks is None else ranks
    state: Dict[str, Any] = dict(loop=loop_state, message_hub=_to_cpu(module.context.message_hub.state_dict()),
                                 world_size=module.context.world_size, ranks=ranks)
    if module.param_schedulers is not None:
        state['param_schedulers'] = scheduler_states(module.param_schedulers)
    return to_safe(state)


def rank_states(module: RunModule, everywhere: bool = False) -> Optional[List[Dict[str, Any]]]:
    """Each rank's own part of the run's state, gathered on rank 0 (None elsewhere, unless ``everywhere``);
    every rank calls it.

    A rank's random state, its position in the data (the random state its pass started from),
    the gradients of an accumulation window that has not stepped yet (wrappers zero them
    after a step): under DDP each rank accumulates its own until the window's synchronised step;
    and, past rank 0 (whose are the checkpoint's), its buffers: BatchNorm statistics differ between
    ranks where nothing synchronises them (mmengine's DDP, ``broadcast_buffers=False``; FSDP).
    """
    own: Dict[str, Any] = dict(rng=rng.capture(), data=module.runner.datamodule.state_dict())
    gradients = {name: _local(param.grad).detach().cpu() for name, param in module.model.named_parameters()
                 if param.grad is not None}
    if gradients:
        own['gradients'] = gradients
    world_size = module.context.world_size
    if module.context.rank != 0:
        own['buffers'] = {name: buffer.detach().cpu() for name, buffer in module.model.named_buffers()}
    if world_size == 1 or not torch.distributed.is_initialized():
        return [own]
    payload = serialization.to_bytes(own)  # bytes: tensors do not pickle across
    gathered: List[Any] = [None] * world_size
    if everywhere:
        torch.distributed.all_gather_object(gathered, payload)
    else:
        torch.distributed.gather_object(payload, gathered if module.context.rank == 0 else None, dst=0)
        if module.context.rank != 0:
            return None
    return [serialization.from_bytes(part) for part in gathered]


def check_world_size(state: Dict[str, Any], world_size: int, auto_scale_lr: Optional[dict]) -> None:
    """Refuse to resume on another number of processes where the run cannot continue as it would have.

    As mmengine's Runner, a different number needs ``auto_scale_lr.enable``; and only at an epoch's end
    of an epoch-based run, where no rank is inside a pass over the data or an accumulation window.
    """
    saved = state.get('world_size')
    if saved is None or saved == world_size:
        return
    if not (auto_scale_lr or {}).get('enable', False):
        raise config_error(f'resume: the checkpoint was written by {saved} processes and this run has {world_size}. '
                           'Number of GPUs used for current experiment is not consistent with the checkpoint being '
                           'resumed from: resume with the same number, or set auto_scale_lr.enable=True', RuntimeError)
    rank0 = own_rank_state(state, 0)
    position = (rank0.get('data') or {}).get('train') or {}
    if position.get('drained') is False or any('gradients' in rank for rank in state.get('ranks') or ()):
        raise ConfigError(f'resume: the checkpoint was written by {saved} processes inside a pass over the data and '
                          f'this run has {world_size}; each rank\'s position cannot move to another number of ranks. '
                          f'Resume with {saved} processes, or from a checkpoint written at an epoch\'s end')


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor (its shard, under FSDP2)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def restore_buffers(module: RunModule, buffers: Dict[str, torch.Tensor]) -> None:
    """This rank's own buffers back in the model (the checkpoint's weights hold rank 0's), by ``named_buffers``
    name (no state-dict hooks: a collective under FSDP1, where :func:`rank_states` reads them on one rank)."""
    own = dict(module.model.named_buffers())
    unknown = sorted(set(buffers) - set(own))
    if unknown:
        raise ConfigError(f'resume: the checkpoint holds buffers this model does not have ({", ".join(unknown[:3])}'
                          f'{", ..." if len(unknown) > 3 else ""}): resume with the model and strategy that wrote it')
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(value)


def restore_gradients(module: RunModule, gradients: Dict[str, torch.Tensor]) -> None:
    """Each rank's own gradients (its shards under FSDP2) back on the parameters."""
    parameters = dict(module.model.named_parameters())
    for name, grad in gradients.items():
        param = parameters[name]
        grad = grad.to(device=_local(param).device, dtype=param.dtype)
        param.grad = DTensor.from_local(grad, param.device_mesh, param.placements, shape=param.shape,
                                        stride=param.stride()) if isinstance(param, DTensor) else grad


# -- Lightning checkpoints, as mmengine's hooks see them ---------------------------------------------
def hook_view(checkpoint: Dict[str, Any], meta: Dict[str, Any]) -> Dict[str, Any]:
    """A Lightning checkpoint in mmengine's layout, for ``before_save``/``after_load_checkpoint`` hooks:
    bare model keys (the same tensors) and ``meta``."""
    view = dict(checkpoint)
    view['state_dict'] = OrderedDict((key[len(MODULE_PREFIX):], value) for key, value in
                                     checkpoint['state_dict'].items() if key.startswith(MODULE_PREFIX))
    view['meta'] = meta
    return view


def apply_hook_view(checkpoint: Dict[str, Any], view: Dict[str, Any]) -> List[str]:
    """What the hooks changed in ``view``, written back into the Lightning checkpoint; returns the keys added."""
    weights = OrderedDict((key, value) for key, value in checkpoint['state_dict'].items()
                          if not key.startswith(MODULE_PREFIX))
    weights.update((MODULE_PREFIX + key, value) for key, value in view['state_dict'].items())
    checkpoint['state_dict'] = weights
    added = [key for key in view if key not in ('state_dict', 'meta') and key not in checkpoint]
    for key in view:
        if key not in ('state_dict', 'meta'):
            checkpoint[key] = view[key]
    return added


def optimizer_names(optim_wrapper: Any) -> Optional[list]:
    """The names of an OptimWrapperDict's wrappers, in the order Lightning holds their optimizers."""
    return list(optim_wrapper.keys()) if isinstance(optim_wrapper, OptimWrapperDict) else None


# -- the strategy's part -------------------------------------------------------------------------------
def _strategy(module: RunModule) -> Any:
    trainer = module.attached_trainer
    return trainer.strategy if trainer is not None else None


def _fsdp2(module: RunModule) -> bool:
    """Whether the model is sharded by FSDP2 (mmengine's FSDPStrategy here; :mod:`mm_lightning.translate.sharding`)."""
    return is_sharded(module.model)


def _deepspeed_engine(module: RunModule) -> Any:
    """The DeepSpeed engine Lightning's DeepSpeedStrategy runs (None under any other strategy)."""
    strategy = _strategy(module)
    return strategy.deepspeed_engine if isinstance(strategy, DeepSpeedStrategy) else None


def gathers_state(module: RunModule) -> bool:
    """Whether saving needs every rank: FSDP and DeepSpeed keep model and optimizer state sharded."""
    return isinstance(_strategy(module), FSDPStrategy) or _fsdp2(module) or _deepspeed_engine(module) is not None


def writes_parts(module: RunModule) -> bool:
    """Whether each rank writes its own file (Lightning's FSDP1 ``state_dict_cfg='local'``, as mmengine)."""
    strategy = _strategy(module)
    return isinstance(strategy, FSDPStrategy) and fsdp_state_dict_type(strategy) == 'sharded'


def writes_shards(module: RunModule) -> bool:
    """Whether checkpoints are sharded directories (FSDP2 with ``state_dict_cfg='local'``; :mod:`.sharded_state`)."""
    plan = getattr(_strategy(module), 'plan', None)  # FSDP2Strategy's ShardingPlan (translate, a layer above)
    return getattr(plan, 'state_dict_type', None) == 'sharded' and _fsdp2(module)


def fsdp1_load_refusal(state_dict_type: Optional[str]) -> Optional[str]:
    """Why Lightning's FSDPStrategy (FSDP1) with ``state_dict_type`` cannot load a checkpoint (None: it can)."""
    if state_dict_type != 'sharded':
        return None
    return ("strategy.state_dict_cfg: Lightning's FSDPStrategy (FSDP1) cannot load sharded checkpoints here; "
            "save with state_dict_cfg='full', or use mmengine's FSDPStrategy (FSDP2), whose sharded "
            'checkpoints load')


def _check_supported(module: RunModule, action: str) -> None:
    strategy = _strategy(module)
    refusal = fsdp1_load_refusal(fsdp_state_dict_type(strategy)) if isinstance(strategy, FSDPStrategy) else None
    if action != 'save' and refusal is not None:
        raise ConfigError(refusal)


def model_state_dict(module: RunModule) -> dict:
    """The mmengine model's weights (bare keys); gathered through Lightning under FSDP1; under FSDP2 this
    rank's view (DTensor shards, gathered or sharded when written: :mod:`.sharded_state`)."""
    strategy = _strategy(module)
    if not isinstance(strategy, FSDPStrategy):
        return module.model.state_dict()
    state = strategy.lightning_module_state_dict()  # a collective: every rank calls it
    return OrderedDict((key[len(MODULE_PREFIX):], value) for key, value in state.items()
                       if key.startswith(MODULE_PREFIX))


def optimizer_state_dict(module: RunModule) -> dict:
    """``optim_wrapper.state_dict()`` with the AMP loss scaler; gathered through Lightning under FSDP."""
    strategy = _strategy(module)
    if _deepspeed_engine(module) is not None:  # the engine writes its optimizer itself, as mmengine's does
        return {deepspeed_state.ENGINE_KEY: True}
    if isinstance(strategy, FSDPStrategy):
        state = _wrapper_states(module, lambda name, optimizer: strategy.optimizer_state(optimizer))
    else:
        state = module.optim_wrapper.state_dict()
    scaler = module.runner.grad_scaler
    if scaler is not None:  # where AmpOptimWrapper keeps it
        state['loss_scaler'] = scaler.state_dict()
    return _to_cpu(state)


def _optimizers(module: RunModule) -> Dict[str, Any]:
    """Each wrapper's optimizer by the name its state has in a checkpoint (``optimizer`` for one wrapper)."""
    names = optimizer_names(module.optim_wrapper) or ['optimizer']
    return {name: wrapper.optimizer for name, wrapper in zip(names, wrappers_of(module.optim_wrapper))}


def _wrapper_states(module: RunModule, state_of: Callable[[str, Any], dict]) -> dict:
    """``optim_wrapper.state_dict()`` with each optimizer's state from ``state_of(name, optimizer)``."""
    states = {}
    for (name, optimizer), wrapper in zip(_optimizers(module).items(), wrappers_of(module.optim_wrapper)):
        states[name] = dict(state_of(name, optimizer))
        if wrapper.base_param_settings is not None:
            states[name]['base_param_settings'] = wrapper.base_param_settings
    return states if isinstance(module.optim_wrapper, OptimWrapperDict) else states['optimizer']


def load_into_model(module: RunModule, checkpoint: dict, strict: bool, revise_keys: list, filename: str,
                    purpose: str) -> dict:
    """mmengine's weight loading (key revision, strictness); through Lightning under FSDP.

    The fit is checked first (:mod:`mm_lightning.state.weights`; under FSDP Lightning's ``strict`` alone
    decides): a fit ``purpose`` refuses is an error, and a partial fit it accepts is one warning
    line instead of mmengine's list of keys.
    """
    _check_supported(module, 'load')
    strategy = _strategy(module)
    if not isinstance(strategy, FSDPStrategy):  # an FSDP2-sharded model loads whole tensors and DTensors alike
        fit = weights.fit_of(module.model, weights.revised(checkpoint.get('state_dict', checkpoint), revise_keys))
        if not strict:
            weights.check(fit, filename, purpose)
        # mmengine loads (and raises when strict); its warning is replaced by the line below
        checkpoint = load_state_into_model(module.model, checkpoint, strict, revise_keys)
        if not fit.exact:
            module.context.logger.warning(f'The checkpoint does not fit the model exactly: {fit.describe(filename)}')
        return checkpoint
    state = weights.revised(checkpoint.get('state_dict', checkpoint), revise_keys)
    strategy.load_model_state_dict({'state_dict': {MODULE_PREFIX + k: v for k, v in state.items()}}, strict=strict)
    return checkpoint


def _sharded_like_parameters(module: RunModule, state: dict) -> dict:
    """Each wrapper's whole per-parameter tensors made this rank's shards where its parameters are sharded
    (FSDP2); shards, and the states of unsharded parameters, as they are."""
    if isinstance(module.optim_wrapper, OptimWrapperDict):
        return dict(state, **{name: sharded_state.shard_optimizer_state(state[name], optimizer)
                              for name, optimizer in _optimizers(module).items() if name in state})
    return sharded_state.shard_optimizer_state(state, module.optim_wrapper.optimizer)


def load_optimizer_state(module: RunModule, state: dict) -> None:
    """``optim_wrapper.load_state_dict`` and the loss scaler; scattered through Lightning under FSDP."""
    if state.get(deepspeed_state.ENGINE_KEY):
        return  # loaded by the engine with the model (see load_checkpoint)
    state = dict(state)
    scaler_state = state.pop('loss_scaler', None)
    if scaler_state is not None and module.runner.grad_scaler is not None:
        module.runner.grad_scaler.load_state_dict(scaler_state)
    strategy = _strategy(module)
    if not isinstance(strategy, FSDPStrategy):
        module.optim_wrapper.load_state_dict(_sharded_like_parameters(module, state))
        return
    wrappers = wrappers_of(module.optim_wrapper)
    states: List[Dict[str, Any]] = [dict(state[name]) for name in module.optim_wrapper.keys()] \
        if isinstance(module.optim_wrapper, OptimWrapperDict) else [state]
    for wrapper, wrapper_state in zip(wrappers, states):
        settings = wrapper_state.pop('base_param_settings', None)
        if settings is not None:
            wrapper.base_param_settings = settings
    strategy.load_optimizer_state_dict({'optimizer_states': states})


# -- writing -------------------------------------------------------------------------------------------
def build_checkpoint(module: RunModule, meta: dict, save_optimizer: bool, save_param_scheduler: bool,
                     loop_state: Dict[str, Any], ranks: Optional[List[Dict[str, Any]]]) -> dict:
    """The dict mmengine's ``Runner.save_checkpoint`` writes, plus mm_lightning's state."""
    _check_supported(module, 'save')
    runner = module.runner
    state = training_state(module, loop_state, ranks)
    checkpoint: Dict[str, Any] = {
        'meta': run_meta(module, meta, loop_state),
        # DeepSpeed: the engine writes the weights; FSDP2: this rank's shards, as the hooks see them
        'state_dict': OrderedDict() if _deepspeed_engine(module) is not None
        else model_state_dict(module) if _fsdp2(module) else weights_to_cpu(model_state_dict(module)),
        'message_hub': state.pop('message_hub'),
    }
    # What mmengine leaves out of a file (a best checkpoint's optimizer and schedulers) is kept in
    # mm_lightning's part, so every file continues the run exactly; mmengine's loaders do not see it.
    if save_optimizer and not isinstance(module.optim_wrapper, BaseOptimWrapper):
        raise TypeError(f'runner.optim_wrapper should be an OptimWrapper or OptimWrapperDict, '
                        f'got {module.optim_wrapper!r}')
    if isinstance(module.optim_wrapper, BaseOptimWrapper):  # DeepSpeedOptimWrapper is no OptimWrapper
        (checkpoint if save_optimizer else state)['optimizer'] = optimizer_state_dict(module)
    schedulers = state.pop('param_schedulers', None)
    if save_param_scheduler and module.param_schedulers is None:
        runner.logger.warning('`save_param_scheduler` is True but `self.param_schedulers` is None, '
                              'so skip saving parameter schedulers')
    elif schedulers is not None:
        (checkpoint if save_param_scheduler else state)['param_schedulers'] = schedulers
    checkpoint[STATE_KEY] = state
    return checkpoint


def checkpoint_path(out_dir: str, filename: str, file_client_args: Optional[dict],
                    backend_args: Optional[dict]) -> str:
    if file_client_args is not None:
        warnings.warn('"file_client_args" will be deprecated in future. Please use "backend_args" instead',
                      DeprecationWarning)
        if backend_args is not None:
            raise ValueError('"file_client_args" and "backend_args" cannot be set at the same time.')
        return FileClient.infer_client(file_client_args, out_dir).join_path(out_dir, filename)
    return join_path(out_dir, filename, backend_args=backend_args)


def save(module: RunModule, out_dir: str, filename: str, *, file_client_args: Optional[dict], save_optimizer: bool,
         save_param_scheduler: bool, meta: Optional[dict], by_epoch: bool, backend_args: Optional[dict],
         loop_state: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """mmengine's ``Runner.save_checkpoint``; returns the path written on this rank.

    The file describes the moment it is written (:meth:`TrainProgress.snapshot`), whoever calls it.
    """
    parts, shards = writes_parts(module), writes_shards(module)
    ranks = rank_states(module, everywhere=parts or gathers_state(module))  # every rank takes part
    if module.context.rank != 0 and not (parts or gathers_state(module)):
        return None
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise TypeError(f'meta should be a dict or None, but got {type(meta)}')
    if loop_state is None:
        loop_state = module.training_progress.snapshot()
    filepath = checkpoint_path(out_dir, filename, file_client_args, backend_args)
    checkpoint = build_checkpoint(module, meta, save_optimizer, save_param_scheduler, loop_state, ranks)
    engine = _deepspeed_engine(module)
    if engine is not None:  # the engine's directory, mmengine's checkpoint as its client state
        module.runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        deepspeed_state.save(engine, filepath, checkpoint)
        return filepath if module.context.rank == 0 else None
    if _fsdp2(module):  # every rank's view, hooks included, then as the layout writes it (sharded_state)
        module.runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        if shards:  # a directory of every rank's shards and rank 0's meta.pth
            sharded_state.save_sharded(filepath, checkpoint, lambda meta, path: serialization.write(meta, path))
            return filepath if module.context.rank == 0 else None
        whole = sharded_state.gathered(checkpoint)
        if whole is None:
            return None
        serialization.write(whole, filepath, file_client_args=file_client_args, backend_args=backend_args)
        return filepath
    if parts:  # mmengine's layout: <filename>/rank<r>.pth
        os.makedirs(filepath, exist_ok=True)
        filepath = os.path.join(filepath, f'rank{module.context.rank}.pth')
    elif module.context.rank != 0:
        return None
    module.runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
    serialization.write(checkpoint, filepath, file_client_args=file_client_args, backend_args=backend_args)
    return filepath


def save_between_iterations(module: RunModule) -> Optional[str]:
    """A resumable checkpoint of a run stopped between two iterations (SIGTERM); ``last_checkpoint`` follows."""
    loop = module.training_progress
    filename = f'iter_{loop.iter}.pth'
    path = save(module, module.context.work_dir, filename, file_client_args=None, save_optimizer=True,
                save_param_scheduler=True, meta=None, by_epoch=loop.by_epoch, backend_args=None,
                loop_state=loop.state_dict())
    if path is not None and module.context.rank == 0:
        serialization.write_text_atomically(path, os.path.join(module.context.work_dir, 'last_checkpoint'))
        module.context.logger.info(f'Saved a resumable checkpoint at iteration {loop.iter}: {path}')
    return path


# -- reading -------------------------------------------------------------------------------------------
def sources(work_dir: str, resume: Union[bool, str], load_from: Optional[str],
            logger: Any) -> Tuple[Optional[str], Optional[str]]:
    """(file to resume from, file to load weights from) as mmengine decides them; files must exist.

    ``resume=True`` takes ``last_checkpoint``; when it or the file it names is missing or cut
    short (a kill during a write), the newest whole checkpoint in ``work_dir`` is taken instead.
    """
    resume_from = None
    if isinstance(resume, str):
        resume_from = resume
    elif resume and load_from is None:
        resume_from = _latest_whole_checkpoint(work_dir, logger)
        logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
    elif resume:
        resume_from = load_from
    if resume_from is not None:
        if not _exists(resume_from):
            raise ConfigError(f'resume: checkpoint file not found: {resume_from!r}')
        return resume_from, None
    if load_from is not None and not _exists(load_from):
        raise ConfigError(f'load_from: checkpoint file not found: {load_from!r}')
    return None, load_from


def _is_directory_checkpoint(path: str) -> bool:
    """A sharded FSDP or a DeepSpeed checkpoint directory (each renamed into place once whole)."""
    return sharded_state.is_sharded_checkpoint(path) or deepspeed_state.is_deepspeed_checkpoint(path)


def _exists(path: str) -> bool:
    return os.path.isfile(path) or _is_directory_checkpoint(path)


def _is_whole(path: str) -> bool:
    return serialization.is_whole(path) or _is_directory_checkpoint(path)


def read_checkpoint(filename: str, map_location: Union[str, Callable] = 'cpu', mesh: Any = None) -> dict:
    """A checkpoint file, or a sharded directory: shard to shard for a run sharded over ``mesh``, else as the
    full checkpoint it amounts to."""
    if sharded_state.is_sharded_checkpoint(filename):
        def read_meta(path: str) -> dict:
            return serialization.read(path, map_location)
        if mesh is not None:
            return sharded_state.load_sharded(filename, read_meta, mesh)
        return sharded_state.read_full(filename, read_meta)
    return serialization.read(filename, map_location)


def _latest_whole_checkpoint(work_dir: str, logger: Any) -> Optional[str]:
    try:
        latest = find_latest_checkpoint(work_dir)
    except (OSError, UnicodeDecodeError):
        latest = None
    if latest is not None and _is_whole(latest):
        return latest
    candidates = [os.path.join(work_dir, name) for name in os.listdir(work_dir) if os.path.isdir(work_dir)
                  and name.endswith('.pth') and not name.startswith(('best_', '.'))] if os.path.isdir(work_dir) else []
    whole = sorted((path for path in candidates if _is_whole(path)), key=os.path.getmtime)
    if latest is not None or whole:
        logger.warning(f'The latest checkpoint {latest!r} named by last_checkpoint is missing or unreadable; '
                       f'resuming from the newest whole checkpoint instead: {whole[-1] if whole else None!r}')
    return whole[-1] if whole else None


def load_or_resume(module: RunModule, weights_only: bool = False) -> bool:
    """Resume (``resume=True``: latest in work_dir; a path) or load ``load_from``; True if resumed."""
    resume_from, load_from = sources(module.context.work_dir, module.resume, module.load_from,
                                     module.context.logger)
    if resume_from is not None and not weights_only:
        resume(module, resume_from)
        return True
    source = resume_from if resume_from is not None else load_from
    if source is not None:
        load_checkpoint(module, source, purpose='evaluate' if weights_only else 'fine-tune')
    return False


def load_checkpoint(module: RunModule, filename: str, map_location: Union[str, Callable] = 'cpu', strict: bool = False,
                    revise_keys: list = [(r'^module.', '')], purpose: str = 'load',
                    with_optimizer: bool = False) -> dict:
    """mmengine's ``Runner.load_checkpoint``: weights, after ``after_load_checkpoint``; a file of either
    format (a Lightning one is converted in memory). ``purpose`` is why: see :data:`weights.REFUSED`.
    A DeepSpeed directory is loaded by the run's engine (its optimizer too, ``with_optimizer``)."""
    if deepspeed_state.is_deepspeed_checkpoint(filename):
        return _load_deepspeed(module, filename, with_optimizer)
    checkpoint = as_mmengine(read_checkpoint(filename, map_location, sharded_state.mesh_of(module.model)), filename)
    module.runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    with deepspeed_state.loading_weights(_deepspeed_engine(module)):  # ZeRO: whole parameters, fp32 copies after
        checkpoint = load_into_model(module, checkpoint, strict, revise_keys, filename, purpose)
    module.loaded = True
    module.context.logger.info(f'Load checkpoint from {filename}')
    return checkpoint


def _load_deepspeed(module: RunModule, filename: str, with_optimizer: bool) -> dict:
    engine = _deepspeed_engine(module)
    if engine is None:
        raise ConfigError(f'resume: {filename} is a DeepSpeed checkpoint directory: load it under '
                          "strategy.type='DeepSpeedStrategy', or make one file of it with "
                          f'`mm-lightning convert-checkpoint {filename} OUT.pth`')
    checkpoint = serialization.from_safe(deepspeed_state.load(engine, filename, with_optimizer))
    module.runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    module.loaded = True
    module.context.logger.info(f'Load checkpoint from {filename}')
    return checkpoint


def resume(module: RunModule, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
           map_location: Union[str, Callable] = 'default') -> None:
    """mmengine's ``Runner.resume``, plus the data position, pending validation and random state."""
    if map_location == 'default':
        map_location = 'cuda' if torch.cuda.is_available() else 'cpu'
    if module.progress is None:
        raise RuntimeError('resume: the training loop is not built; resume a run that trains (train_cfg), '
                           "through the runner's train_loop or a Trainer that fits")
    checkpoint = load_checkpoint(module, filename, map_location=map_location, with_optimizer=resume_optimizer)
    check_resumable(checkpoint, filename, 'resume')
    restore_training_state(module, checkpoint, resume_optimizer, resume_param_scheduler)
    module.context.logger.info(f'resumed epoch: {module.built_train_loop.epoch}, iter: {module.built_train_loop.iter}')


def restore_training_state(module: RunModule, checkpoint: dict, resume_optimizer: bool,
                           resume_param_scheduler: bool) -> None:
    """What a resume restores besides weights (mmengine's checks and warnings included)."""
    meta = checkpoint['meta']
    context, runner = module.context, module.runner
    resumed_seed = meta.get('seed')
    current_seed = context.randomness.get('seed')
    if resumed_seed is not None and resumed_seed != current_seed:
        if current_seed is not None:
            context.logger.warning(f'The value of random seed in the checkpoint "{resumed_seed}" is different '
                                   f'from the value in `randomness` config "{current_seed}"')
        context.reseed(resumed_seed)
    dataset_meta = getattr(runner.train_dataloader.dataset, 'metainfo', None)
    if pickle.dumps(meta.get('dataset_meta')) != pickle.dumps(dataset_meta):
        context.logger.warning('The dataset metainfo from the resumed checkpoint is different from the current '
                               'training dataset, please check the correctness of the checkpoint or the '
                               'training dataset.')
    context.message_hub.load_state_dict(checkpoint['message_hub'])
    state = dict(checkpoint.get(STATE_KEY) or {})
    optimizer_state = checkpoint.get('optimizer', state.get('optimizer'))
    scheduler_states = checkpoint.get('param_schedulers', state.get('param_schedulers'))
    if (optimizer_state is not None and resume_optimizer) or (scheduler_states is not None and resume_param_scheduler
                                                              and module.param_schedulers is not None):
        if module.attached_trainer is None and not isinstance(module.optim_wrapper, BaseOptimWrapper) \
                and shards_parameters(module.keywords):
            raise ConfigError('strategy: resume() before train() would build the optimizer over the model before '
                              'the strategy shards it; give the checkpoint as resume=PATH (--resume PATH) instead')
        module.build_optimization()  # as mmengine's resume builds them, before train() if called then
    if optimizer_state is not None and resume_optimizer:
        load_optimizer_state(module, optimizer_state)
    if resume_param_scheduler and module.param_schedulers is None:
        context.logger.warning('`resume_param_scheduler` is True but `self.param_schedulers` is None, '
                               'so skip resuming parameter schedulers')
    elif scheduler_states is not None and resume_param_scheduler:
        load_scheduler_states(module.param_schedulers, scheduler_states)
    module.set_resume_state(state, meta)
