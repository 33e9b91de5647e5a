"""mmengine-format checkpoints, written and read both ways.

Files carry what mmengine's Runner writes (bare model keys, ``meta``, ``optimizer``,
``param_schedulers``, ``message_hub``), so mmengine's ``load_checkpoint`` and
``load_from`` read them. mmengine 0.10 pickles ``HistoryBuffer`` objects, which
``torch.load``'s default ``weights_only=True`` refuses; we store them (and numpy
arrays) as tagged plain data so our files load safely, and turn them back on resume.
"""
from __future__ import annotations

import copy
import os
import pickle
import re
import time
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple, Union

import mmengine
import numpy as np
import torch
from lightning.pytorch.strategies import FSDPStrategy
from mmengine.fileio import FileClient, join_path
from mmengine.logging import HistoryBuffer
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import (
    _load_checkpoint,
    _load_checkpoint_to_model,
    find_latest_checkpoint,
    save_checkpoint,
    weights_to_cpu,
)
from mmengine.utils import apply_to, get_git_hash

from .config import ConfigError

#: The ConfigModule attribute holding the mmengine model (Lightning state keys start with it).
MODULE_PREFIX = 'model.'
HISTORY_BUFFER_TAG = '__history_buffer__'
NDARRAY_TAG = '__ndarray__'

def to_safe(obj: Any) -> Any:
    """Replace HistoryBuffers and numpy values by tagged plain data (see module doc)."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {HISTORY_BUFFER_TAG: True, 'log_history': torch.from_numpy(np.asarray(log, dtype=np.float64)),
                'count_history': torch.from_numpy(np.asarray(count, dtype=np.float64)),
                'max_length': obj.max_length}
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return {NDARRAY_TAG: True, 'data': torch.from_numpy(np.ascontiguousarray(obj)), 'dtype': str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    return _map_containers(obj, to_safe)


def from_safe(obj: Any) -> Any:
    """Inverse of :func:`to_safe`."""
    if isinstance(obj, dict):
        if obj.get(HISTORY_BUFFER_TAG) is True:
            return HistoryBuffer(obj['log_history'].tolist(), obj['count_history'].tolist(), obj['max_length'])
        if obj.get(NDARRAY_TAG) is True:
            return obj['data'].numpy().astype(obj['dtype'])
    return _map_containers(obj, from_safe)


def _map_containers(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to the values of dicts (keeping their type: OrderedDict, Counter...) and lists."""
    if isinstance(obj, dict):
        mapped = copy.copy(obj)
        for key, value in obj.items():
            mapped[key] = fn(value)
        return mapped
    if type(obj) in (list, tuple):
        return type(obj)(fn(value) for value in obj)
    return obj


class UnsafeCheckpointError(ValueError):
    """A checkpoint that ``torch.load(weights_only=True)`` refuses (see :func:`convert_checkpoint`)."""


def read_checkpoint(filename: str, map_location: Any = 'cpu') -> dict:
    """Load a checkpoint with ``weights_only=True`` and restore tagged values."""
    try:
        checkpoint = _load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'{filename}: this checkpoint pickles Python objects that torch.load(weights_only=True) refuses '
            '(mmengine 0.10 stores HistoryBuffer objects in its message hub). If you trust the file, convert '
            f'it once: `mm-lightning convert-checkpoint {filename} OUT.pth`') from err
    return from_safe(checkpoint)


def convert_checkpoint(src: str, dst: str) -> None:
    """Rewrite a trusted mmengine checkpoint in the safe form (unpickles ``src`` fully)."""
    checkpoint = torch.load(src, map_location='cpu', weights_only=False)
    torch.save(to_safe(checkpoint), dst)


def _strategy(runner: Any) -> Any:
    trainer = runner.lightning_module._trainer or runner._trainer
    return trainer.strategy if trainer is not None else None


def gathers_state(runner: Any) -> bool:
    """Whether saving needs every rank: FSDP keeps model and optimizer state sharded."""
    return isinstance(_strategy(runner), FSDPStrategy)


def writes_parts(runner: Any) -> bool:
    """Whether each rank writes its own part (FSDP ``state_dict_cfg='local'``/sharded, as mmengine)."""
    strategy = _strategy(runner)
    return isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == 'sharded'


def _check_supported(runner: Any, action: str) -> None:
    strategy = _strategy(runner)
    if type(strategy).__name__ == 'DeepSpeedStrategy' and (action != 'save' or strategy.zero_stage_3):
        raise ConfigError(f'strategy: mmengine-format checkpoints cannot {action} DeepSpeed '
                          f'{"ZeRO-3 partitioned " if strategy.zero_stage_3 else ""}state here; '
                          "use Lightning's ModelCheckpoint (DeepSpeed's own checkpoint format)")
    if action != 'save' and writes_parts(runner):
        raise ConfigError("strategy.state_dict_cfg: loading sharded FSDP checkpoints is not supported; "
                          "save with state_dict_cfg='full'")


def model_state_dict(runner: Any) -> dict:
    """The mmengine model's weights (bare keys); gathered through Lightning under FSDP."""
    strategy = _strategy(runner)
    if not isinstance(strategy, FSDPStrategy):
        return runner.model.state_dict()
    state = strategy.lightning_module_state_dict()  # a collective: every rank calls it
    return OrderedDict((key[len(MODULE_PREFIX):], value) for key, value in state.items()
                       if key.startswith(MODULE_PREFIX))


def optimizer_state_dict(runner: Any) -> dict:
    """``optim_wrapper.state_dict()``; gathered through Lightning under FSDP."""
    strategy = _strategy(runner)
    if not isinstance(strategy, FSDPStrategy):
        return runner.optim_wrapper.state_dict()
    from .optim import wrappers_of
    states = []
    for wrapper in wrappers_of(runner.optim_wrapper):
        state = dict(strategy.optimizer_state(wrapper.optimizer))
        if wrapper.base_param_settings is not None:
            state['base_param_settings'] = wrapper.base_param_settings
        states.append(state)
    if isinstance(runner.optim_wrapper, OptimWrapperDict):
        return dict(zip(runner.optim_wrapper.keys(), states))
    return states[0]


def build_checkpoint(runner: Any, meta: dict, save_optimizer: bool, save_param_scheduler: bool) -> dict:
    """The dict mmengine's ``Runner.save_checkpoint`` writes."""
    _check_supported(runner, 'save')
    meta.update(cfg=runner.cfg.pretty_text, seed=runner.seed, experiment_name=runner.experiment_name,
                time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                mmengine_version=mmengine.__version__ + get_git_hash())
    if hasattr(runner.train_dataloader.dataset, 'metainfo'):
        meta.update(dataset_meta=runner.train_dataloader.dataset.metainfo)
    checkpoint: Dict[str, Any] = {
        'meta': meta,
        'state_dict': weights_to_cpu(model_state_dict(runner)),
        'message_hub': apply_to(runner.message_hub.state_dict(), lambda x: hasattr(x, 'cpu'), lambda x: x.cpu()),
    }
    if save_optimizer:
        if not isinstance(runner.optim_wrapper, OptimWrapper):
            raise TypeError(f'runner.optim_wrapper should be an OptimWrapper or OptimWrapperDict, '
                            f'got {runner.optim_wrapper!r}')
        checkpoint['optimizer'] = apply_to(optimizer_state_dict(runner), lambda x: hasattr(x, 'cpu'),
                                           lambda x: x.cpu())
        scaler = runner.grad_scaler
        if scaler is not None:  # where AmpOptimWrapper keeps it
            checkpoint['optimizer']['loss_scaler'] = scaler.state_dict()
    if save_param_scheduler and runner.param_schedulers is None:
        runner.logger.warning('`save_param_scheduler` is True but `self.param_schedulers` is None, '
                              'so skip saving parameter schedulers')
        save_param_scheduler = False
    if save_param_scheduler:
        if isinstance(runner.param_schedulers, dict):
            checkpoint['param_schedulers'] = {name: [s.state_dict() for s in group]
                                              for name, group in runner.param_schedulers.items()}
        else:
            checkpoint['param_schedulers'] = [s.state_dict() for s in runner.param_schedulers]
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


def write_checkpoint(checkpoint: dict, filepath: str, file_client_args: Optional[dict] = None,
                     backend_args: Optional[dict] = None) -> None:
    save_checkpoint(to_safe(checkpoint), filepath, file_client_args=file_client_args,
                    backend_args=backend_args)


def load_into_model(runner: Any, checkpoint: dict, strict: bool, revise_keys: list) -> dict:
    """mmengine's weight loading (key revision, strictness); through Lightning under FSDP."""
    _check_supported(runner, 'load')
    strategy = _strategy(runner)
    if not isinstance(strategy, FSDPStrategy):
        return _load_checkpoint_to_model(runner.model, checkpoint, strict, revise_keys=revise_keys)
    state = checkpoint.get('state_dict', checkpoint)
    for pattern, replacement in revise_keys:
        state = OrderedDict((re.sub(pattern, replacement, k), v) for k, v in state.items())
    strategy.load_model_state_dict({'state_dict': {MODULE_PREFIX + k: v for k, v in state.items()}}, strict=strict)
    return checkpoint


def load_optimizer_state(runner: Any, state: dict) -> None:
    """``optim_wrapper.load_state_dict``; scattered through Lightning under FSDP."""
    strategy = _strategy(runner)
    if not isinstance(strategy, FSDPStrategy):
        runner.optim_wrapper.load_state_dict(state)
        return
    from .optim import wrappers_of
    wrappers = wrappers_of(runner.optim_wrapper)
    states = [state[name] for name in runner.optim_wrapper.keys()] \
        if isinstance(runner.optim_wrapper, OptimWrapperDict) else [state]
    states = [dict(s) for s in states]
    for wrapper, wrapper_state in zip(wrappers, states):
        settings = wrapper_state.pop('base_param_settings', None)
        if settings is not None:
            wrapper.base_param_settings = settings
    strategy.load_optimizer_state_dict({'optimizer_states': states})


def restore_training_state(runner: Any, checkpoint: dict, resume_optimizer: bool,
                           resume_param_scheduler: bool) -> None:
    """What mmengine's ``Runner.resume`` restores besides weights."""
    meta = checkpoint['meta']
    runner.train_loop.resume_from(meta['epoch'], meta['iter'])
    if 'config' in meta:
        previous_gpu_ids = mmengine.Config.fromstring(meta['config'], file_format='.py').get('gpu_ids')
        if previous_gpu_ids and len(previous_gpu_ids) != runner.world_size:
            auto_scale_lr = runner._auto_scale_lr
            if not auto_scale_lr or not auto_scale_lr.get('enable', False):
                raise RuntimeError('Number of GPUs used for current experiment is not consistent with the '
                                   'checkpoint being resumed from. Set auto_scale_lr.enable=True.')
    resumed_seed = meta.get('seed')
    current_seed = runner._randomness_cfg.get('seed')
    if resumed_seed is not None and resumed_seed != current_seed:
        if current_seed is not None:
            runner.logger.warning(f'The value of random seed in the checkpoint "{resumed_seed}" is different '
                                  f'from the value in `randomness` config "{current_seed}"')
        runner._reseed(resumed_seed)
    dataset_meta = getattr(runner.train_dataloader.dataset, 'metainfo', None)
    if pickle.dumps(meta.get('dataset_meta')) != pickle.dumps(dataset_meta):
        runner.logger.warning('The dataset metainfo from the resumed checkpoint is different from the current '
                              'training dataset, please check the correctness of the checkpoint or the '
                              'training dataset.')
    runner.message_hub.load_state_dict(checkpoint['message_hub'])
    if 'optimizer' in checkpoint and resume_optimizer:
        state = dict(checkpoint['optimizer'])
        scaler_state = state.pop('loss_scaler', None)
        load_optimizer_state(runner, state)
        if scaler_state is not None and runner.grad_scaler is not None:
            runner.grad_scaler.load_state_dict(scaler_state)
    if resume_param_scheduler and runner.param_schedulers is None:
        runner.logger.warning('`resume_param_scheduler` is True but `self.param_schedulers` is None, '
                              'so skip resuming parameter schedulers')
        resume_param_scheduler = False
    if 'param_schedulers' in checkpoint and resume_param_scheduler:
        saved = checkpoint['param_schedulers']
        if isinstance(runner.param_schedulers, dict):
            for name, group in runner.param_schedulers.items():
                for scheduler, state in zip(group, saved[name]):
                    scheduler.load_state_dict(state)
        else:
            for scheduler, state in zip(runner.param_schedulers, saved):
                scheduler.load_state_dict(state)


def sources(work_dir: str, resume: Union[bool, str], load_from: Optional[str],
            logger: Any) -> Tuple[Optional[str], Optional[str]]:
    """(file to resume from, file to load weights from) as mmengine decides them; files must exist."""
    resume_from = None
    if isinstance(resume, str):
        resume_from = resume
    elif resume and load_from is None:
        resume_from = find_latest_checkpoint(work_dir)
        logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
    elif resume:
        resume_from = load_from
    if resume_from is not None:
        if not os.path.isfile(resume_from):
            raise ConfigError(f'resume: checkpoint file not found: {resume_from!r}')
        return resume_from, None
    if load_from is not None and not os.path.isfile(load_from):
        raise ConfigError(f'load_from: checkpoint file not found: {load_from!r}')
    return None, load_from


def save(runner: Any, out_dir: str, filename: str, *, file_client_args: Optional[dict], save_optimizer: bool,
         save_param_scheduler: bool, meta: Optional[dict], by_epoch: bool, backend_args: Optional[dict]) -> None:
    """mmengine's ``Runner.save_checkpoint``.

    Rank 0 writes, as under mmengine; every rank takes part where the strategy must gather
    sharded state, and each writes its part of a sharded FSDP checkpoint.
    """
    parts = writes_parts(runner)
    if runner.rank != 0 and not (parts or gathers_state(runner)):
        return
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise TypeError(f'meta should be a dict or None, but got {type(meta)}')
    # During after_train_epoch/after_train_iter the counters have not advanced yet.
    meta.setdefault('epoch', runner.epoch + 1 if by_epoch else runner.epoch)
    meta.setdefault('iter', runner.iter if by_epoch else runner.iter + 1)
    filepath = checkpoint_path(out_dir, filename, file_client_args, backend_args)
    checkpoint = build_checkpoint(runner, meta, save_optimizer, save_param_scheduler)
    if parts:  # mmengine's layout: <filename>/rank<r>.pth
        os.makedirs(filepath, exist_ok=True)
        filepath = os.path.join(filepath, f'rank{runner.rank}.pth')
    elif runner.rank != 0:
        return
    runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
    write_checkpoint(checkpoint, filepath, file_client_args=file_client_args, backend_args=backend_args)
