"""Checkpoints of DeepSpeed runs, in the layout mmengine's ``DeepSpeedStrategy`` writes.

mmengine's DeepSpeedStrategy saves through the DeepSpeed engine: ``engine.save_checkpoint(work_dir,
tag=<file name>, client_state=<the rest of mmengine's checkpoint>)`` writes a directory named like
the file, holding the engine's model states and each rank's (ZeRO-partitioned) optimizer states,
and resumes with ``engine.load_checkpoint``. The same here, through the engine Lightning's
``DeepSpeedStrategy`` built, for ZeRO-1, 2 and 3 alike. One difference: the engine wraps the
``ConfigModule``, so the model's keys in the directory carry its ``model.`` prefix.

The directory is written under a temporary tag and renamed once every rank has written its
part, so a kill during a save leaves the previous checkpoint whole. The engine writes its own
entries beside the client state; :data:`CLIENT_KEYS` lists mmengine's, which is what a resume
reads back and, with the weights DeepSpeed gathers in fp32 (:func:`fp32_weights`), what
``mm-lightning convert-checkpoint`` writes as one mmengine checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Callable, Dict, Iterator

from mmengine.dist import barrier, get_rank

from mm_lightning.config.loading import ConfigError
from mm_lightning.state import serialization

__all__ = ['ENGINE_KEY', 'CLIENT_KEYS', 'MODEL_STATES_SUFFIX', 'is_deepspeed_checkpoint', 'save', 'load',
           'loading_weights', 'read_client_state', 'fp32_weights']

#: In the engine's client state, an optimizer state ``{ENGINE_KEY: True}`` is in the engine's own files.
ENGINE_KEY = 'in_deepspeed_engine'

#: The entry of a model-states file that lists the client state's keys (the engine's own sit beside them).
CLIENT_KEYS = 'mm_lightning_client_keys'

#: How the engine names its model states in a tag directory: ``mp_rank_00_model_states.pt`` (ZeRO-1/2),
#: ``zero_pp_rank_<r>_mp_rank_00_model_states.pt`` (ZeRO-3, one per rank).
MODEL_STATES_SUFFIX = 'mp_rank_00_model_states.pt'


def is_deepspeed_checkpoint(path: str) -> bool:
    """Whether ``path`` is a DeepSpeed checkpoint directory (a tag directory the engine wrote)."""
    return os.path.isdir(path) and any(name.endswith(MODEL_STATES_SUFFIX) for name in os.listdir(path))


def save(engine: Any, path: str, client_state: Dict[str, Any]) -> None:
    """Write the engine's checkpoint at ``path`` with mmengine's checkpoint as client state; every rank calls it."""
    directory, tag = os.path.split(path)
    partial = f'{tag}.partial'
    if get_rank() == 0 and os.path.exists(os.path.join(directory, partial)):
        shutil.rmtree(os.path.join(directory, partial))  # what a run killed while writing left
    barrier()
    client_state = dict(client_state, **{CLIENT_KEYS: list(client_state)})
    with serialization.naming_a_full_disk(path, os.path.join(directory, partial) if get_rank() == 0 else None):
        engine.save_checkpoint(directory, tag=partial, client_state=client_state, save_latest=False)
    barrier()
    if get_rank() == 0:
        serialization.replace_path(os.path.join(directory, partial), path)
    barrier()


def load(engine: Any, path: str, load_optimizer_states: bool) -> Dict[str, Any]:
    """Load the engine's model (and optimizer) states from ``path``; returns mmengine's checkpoint (the client
    state). Every rank calls it."""
    if not load_optimizer_states:
        return _load_weights(engine, path)
    directory, tag = os.path.split(os.path.normpath(path))
    loaded, client_state = engine.load_checkpoint(directory, tag=tag, load_optimizer_states=True,
                                                  load_lr_scheduler_states=False)
    if loaded is None:
        raise FileNotFoundError(f'{path}: DeepSpeed found no checkpoint to load there')
    return _client_part(client_state or {})


def _load_weights(engine: Any, path: str) -> Dict[str, Any]:
    """The model's weights alone (to evaluate, or to fine-tune from), gathered in fp32 as :func:`fp32_weights`
    gives them and loaded into every rank's (ZeRO-3: gathered) parameters; ZeRO's fp32 master weights follow.

    Not through ``engine.load_checkpoint(load_module_only=True)``: under ZeRO-3, DeepSpeed (0.19) gathers the
    weights of the tag its ``latest`` file names instead of the one given, and an engine that evaluates
    (no optimizer) fails after loading.
    """
    weights = fp32_weights(path)
    with loading_weights(engine):
        engine.module.load_state_dict(weights)
    return read_client_state(path, serialization.read_trusted)


@contextlib.contextmanager
def loading_weights(engine: Any) -> Iterator[None]:
    """Around loading weights into the model an engine runs (nothing to do without one: None, or a strategy
    that has not built its engine yet).

    Under ZeRO-3 the parameters are whole inside (DeepSpeed's ``GatheredParameters``; rank 0's are then
    partitioned to every rank), and after it ZeRO's fp32 master weights are refreshed from the loaded ones:
    ZeRO-1/2/3 keep their own copy, which the next step would otherwise write back over them.
    """
    if engine is None:
        yield
        return
    import deepspeed
    if not isinstance(engine, deepspeed.DeepSpeedEngine):
        yield
        return
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=0):
        yield
    refresh = getattr(engine.optimizer, 'refresh_fp32_params', None)  # absent: no optimizer, or no ZeRO
    if refresh is not None:
        refresh()


def _client_part(state: Dict[str, Any]) -> Dict[str, Any]:
    """The client state's entries of what the engine read (all of it from a directory without the list)."""
    keys = state.get(CLIENT_KEYS)
    return dict(state) if keys is None else {key: state[key] for key in keys if key in state}


def read_client_state(path: str, read: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
    """The client state (mmengine's checkpoint) of a DeepSpeed directory: rank 0's model-states file,
    unpickled by ``read``."""
    states = sorted(name for name in os.listdir(path) if name.endswith(MODEL_STATES_SUFFIX))
    return _client_part(read(os.path.join(path, states[0])))  # mp_rank_00_... or zero_pp_rank_0_...


def fp32_weights(path: str) -> Dict[str, Any]:
    """The model's weights in a DeepSpeed directory, gathered from every rank's ZeRO partitions in fp32 by
    DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` (buffers: rank 0's), under the engine's keys."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as err:
        raise ConfigError(f'{path}: reading a DeepSpeed checkpoint directory needs the deepspeed package: '
                          'pip install "mm_lightning[deepspeed]"') from err
    directory, tag = os.path.split(os.path.normpath(path))
    return dict(get_fp32_state_dict_from_zero_checkpoint(directory, tag=tag))
