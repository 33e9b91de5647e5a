"""Checkpoints of DeepSpeed runs, in the layout mmengine's ``DeepSpeedStrategy`` writes.

mmengine's DeepSpeedStrategy saves through the DeepSpeed engine: ``engine.save_checkpoint(work_dir,
tag=<file name>, client_state=<the rest of mmengine's checkpoint>)`` writes a directory named like
the file, holding the engine's model states and each rank's (ZeRO-partitioned) optimizer states,
and resumes with ``engine.load_checkpoint``. The same here, through the engine Lightning's
``DeepSpeedStrategy`` built, for ZeRO-1, 2 and 3 alike. One difference: the engine wraps the
``ConfigModule``, so the model's keys in the directory carry its ``model.`` prefix.

The directory is written under a temporary tag and renamed once every rank has written its
part, so a kill during a save leaves the previous checkpoint whole.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Dict

from mmengine.dist import barrier, get_rank

from mm_lightning.state import serialization

__all__ = ['ENGINE_KEY', 'MODEL_STATES_SUFFIX', 'is_deepspeed_checkpoint', 'save', 'load']

#: In the engine's client state, an optimizer state ``{ENGINE_KEY: True}`` is in the engine's own files.
ENGINE_KEY = 'in_deepspeed_engine'

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
    engine.save_checkpoint(directory, tag=partial, client_state=client_state, save_latest=False)
    barrier()
    if get_rank() == 0:
        serialization.replace_path(os.path.join(directory, partial), path)
    barrier()


def load(engine: Any, path: str, load_optimizer_states: bool) -> Dict[str, Any]:
    """Load the engine's model (and optimizer) states from ``path``; returns mmengine's checkpoint (the client
    state). Every rank calls it."""
    directory, tag = os.path.split(os.path.normpath(path))
    loaded, client_state = engine.load_checkpoint(directory, tag=tag, load_optimizer_states=load_optimizer_states,
                                                  load_lr_scheduler_states=False,
                                                  load_module_only=not load_optimizer_states)
    if loaded is None:
        raise FileNotFoundError(f'{path}: DeepSpeed found no checkpoint to load there')
    return client_state or {}
