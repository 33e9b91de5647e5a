"""Model and optimizer state of an FSDP2-sharded model, in mmengine's layouts.

See :mod:`mm_lightning.translate.sharding` for the sharding itself.

Two layouts, as mmengine's ``FSDPStrategy(state_dict_cfg=...)`` names them:

* ``'full'``: one mmengine-format ``.pth``, written by rank 0: bare model keys and the
  optimizer state as ``optimizer.state_dict()`` numbers it, so mmengine's ``load_checkpoint``,
  a one-process run and any number of ranks read it. Gathering is a collective.
* ``'local'`` (sharded): a directory at the checkpoint's path holding torch's distributed
  checkpoint of model and optimizers (each rank writes its shards) and :data:`META_FILE`
  with the rest of the mmengine checkpoint (``meta``, ``message_hub``, schedulers,
  mm_lightning's resume state). It is written under a temporary name and renamed once every
  rank has written its part. It is read as the full checkpoint it amounts to
  (:func:`read_full`, also ``convert-checkpoint``), so any number of ranks resumes it, one
  process without a process group included; each rank then holds the whole state on its
  CPU while loading.

Everything here takes the mmengine model (``ConfigModule.model``), so keys are mmengine's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, cast

import torch
from mmengine.dist import barrier, get_rank
from torch import nn
from torch.optim import Optimizer

from mm_lightning.state.serialization import replace_path

__all__ = ['META_FILE', 'MODEL_KEY', 'OPTIMIZERS_KEY', 'SHARDS_KEY', 'is_sharded_checkpoint', 'full_model_state',
           'load_full_model_state', 'full_optimizer_state', 'load_full_optimizer_state', 'save_sharded',
           'sharded_to_full', 'read_full', 'numbered']

#: The file of a sharded checkpoint directory that holds everything but model and optimizer tensors.
META_FILE = 'meta.pth'

#: Keys of the distributed checkpoint inside a sharded directory.
MODEL_KEY, OPTIMIZERS_KEY = 'state_dict', 'optimizers'

#: In :data:`META_FILE`, an optimizer state ``{SHARDS_KEY: name}`` is in the shards under that name.
SHARDS_KEY = 'in_shards'


def _options(full: bool, strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=full, cpu_offload=full, strict=strict)


def is_sharded_checkpoint(path: str) -> bool:
    """Whether ``path`` is a sharded checkpoint directory written here."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META_FILE))


# -- 'full': one file, gathered on rank 0 ---------------------------------------------------------------
def full_model_state(model: nn.Module) -> Dict[str, Any]:
    """The whole model state on rank 0 (empty elsewhere); every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return OrderedDict(get_model_state_dict(model, options=_options(full=True)))


def load_full_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool) -> Any:
    """Load a whole state (every rank holds it: each reads the file) into the sharded model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict
    return set_model_state_dict(model, dict(state), options=_options(full=True, strict=strict))


def _parameter_names(model: nn.Module, optimizer: Optimizer) -> List[str]:
    """The mmengine key of each of ``optimizer``'s parameters, in ``optimizer.state_dict()``'s numbering."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    state = cast(Dict[str, Any], get_optimizer_state_dict(model, optimizer, options=_options(full=False)))
    groups: List[Dict[str, Any]] = state['param_groups']
    return [name for group in groups for name in group['params']]


def full_optimizer_state(model: nn.Module, optimizer: Optimizer) -> Dict[str, Any]:
    """``optimizer.state_dict()`` of the unsharded model on rank 0 (empty elsewhere); every rank calls it.

    Torch's gathered state is keyed by parameter name; it is numbered back as a one-process
    optimizer numbers its parameters (in the order of its groups).
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    state = get_optimizer_state_dict(model, optimizer, options=_options(full=True))
    return numbered(state) if state else {}


def load_full_optimizer_state(model: nn.Module, optimizer: Optimizer, state: Mapping[str, Any]) -> None:
    """Load ``optimizer.state_dict()`` of the unsharded model (every rank holds it) into the sharded one."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    names = _parameter_names(model, optimizer)
    named: Dict[str, Any] = dict(state={names[i]: value for i, value in state['state'].items()},
                 param_groups=[dict(group, params=[names[i] for i in group['params']])
                               for group in state['param_groups']])
    set_optimizer_state_dict(model, optimizer, named, options=_options(full=True))


# -- 'local': a directory of shards -----------------------------------------------------------------------
def _live_state(model: nn.Module, optimizers: Mapping[str, Optimizer]) -> Dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    return {MODEL_KEY: get_model_state_dict(model, options=_options(full=False)),
            OPTIMIZERS_KEY: {name: get_optimizer_state_dict(model, optimizer, options=_options(full=False))
                             for name, optimizer in optimizers.items()}}


def save_sharded(path: str, model: nn.Module, optimizers: Mapping[str, Optimizer],
                 meta: Optional[Dict[str, Any]], write_meta: Any) -> None:
    """Write the sharded directory at ``path`` (see module doc); every rank calls it, rank 0 gives ``meta``
    and ``write_meta(meta, file)`` writes it."""
    import torch.distributed.checkpoint as dcp
    partial = f'{path}.partial'
    if get_rank() == 0 and os.path.exists(partial):
        shutil.rmtree(partial)  # what a run killed while writing left
    barrier()
    dcp.save(_live_state(model, optimizers), checkpoint_id=partial)
    if get_rank() == 0:
        write_meta(meta, os.path.join(partial, META_FILE))
        replace_path(partial, path)
    barrier()


def sharded_to_full(path: str) -> Dict[str, Any]:
    """The whole model and optimizer states of a sharded directory, in one process: ``state_dict`` and
    ``optimizers`` (each keyed by parameter name, as torch gathers them)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    with tempfile.TemporaryDirectory() as scratch:
        whole = os.path.join(scratch, 'whole.pt')
        dcp_to_torch_save(path, whole)
        return torch.load(whole, map_location='cpu', weights_only=True)


def read_full(path: str, read_meta: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
    """A sharded directory as the mmengine-format checkpoint a ``'full'`` run writes: :data:`META_FILE`
    with the whole model (``state_dict``) and each optimizer state it marks, numbered as a one-process
    optimizer numbers it. Any number of ranks loads that (each rank reads it whole, on its CPU)."""
    checkpoint = read_meta(os.path.join(path, META_FILE))
    whole = sharded_to_full(path)
    checkpoint['state_dict'] = whole[MODEL_KEY]
    optimizers = whole.get(OPTIMIZERS_KEY, {})

    def restore(value: Any) -> Any:
        if isinstance(value, dict) and SHARDS_KEY in value:
            rest = {k: v for k, v in value.items() if k != SHARDS_KEY}
            return dict(numbered(optimizers[value[SHARDS_KEY]]), **rest)
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        return value
    return restore(checkpoint)


def numbered(state: Mapping[str, Any]) -> Dict[str, Any]:
    """An optimizer state keyed by parameter name, numbered as ``optimizer.state_dict()`` numbers it."""
    names = [name for group in state['param_groups'] for name in group['params']]
    index = {name: i for i, name in enumerate(names)}
    return dict(state={index[name]: value for name, value in state.get('state', {}).items()},
                param_groups=[dict(group, params=[index[name] for name in group['params']])
                              for group in state['param_groups']])
