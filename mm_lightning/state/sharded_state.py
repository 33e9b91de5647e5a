"""The checkpoint of an FSDP2-sharded run, in mmengine's two layouts.

See :mod:`mm_lightning.translate.sharding` for the sharding itself. Every rank builds the same
checkpoint from its own view of the run, as an unsharded run builds it: the model's ``state_dict()``
and the optimizers' ``state_dict()``, whose parameters and per-parameter states are DTensors (this
rank's shards), and the hooks add what they keep as they see it (``EMAHook``'s ``ema_state_dict``,
sharded alike). Buffers and every other value are plain, each rank's own. The layout
(``strategy.state_dict_cfg``) decides how that becomes files:

* ``'full'``: one mmengine-format ``.pth`` written by rank 0 (:func:`gathered`): every DTensor whole,
  everything else as rank 0 holds it, buffers included. That is what mmengine's Runner and a DDP run
  write, so mmengine's ``load_checkpoint``, one process and any number of ranks read it.
* ``'local'`` (sharded): a directory at the checkpoint's path (:func:`save_sharded`): torch's distributed
  checkpoint of the DTensors (each rank writes its shards) and :data:`META_FILE`, rank 0's checkpoint
  with each DTensor replaced by a reference to its shards. Written under a temporary name and renamed
  once every rank has written its part. A sharded run loads it shard to shard, resharded to its own
  number of ranks (:func:`load_sharded`: no rank holds a whole tensor); anything else reads it whole
  (:func:`read_full`, also ``convert-checkpoint``), as the ``'full'`` file of the same moment.

Torch's distributed checkpoint would write each plain (replicated) tensor from whichever rank it picks,
and its ``get/set_optimizer_state_dict`` take a step of their own on an optimizer without state and
fail to load one; neither is used.

Whole tensors load into a sharded run through the model itself
(:mod:`mm_lightning.translate.sharded_model`) and, for optimizers, :func:`shard_optimizer_state`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.dist import barrier, get_rank
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor
from torch.optim import Optimizer

from mm_lightning.state.disk import state_bytes
from mm_lightning.state.serialization import naming_a_full_disk, replace_path

__all__ = ['META_FILE', 'SHARDS_TAG', 'LAYOUT_KEY', 'LAYOUT', 'is_sharded', 'is_sharded_checkpoint', 'mesh_of',
           'gathered', 'save_sharded', 'load_sharded', 'read_full', 'shard_optimizer_state', 'numbered']

#: The file of a sharded checkpoint directory that holds everything but the sharded tensors.
META_FILE = 'meta.pth'

#: In :data:`META_FILE`, ``{SHARDS_TAG: key, 'shape': ..., 'dtype': ..., 'placements': ...}`` stands for the
#: DTensor stored under ``key`` in the directory's distributed checkpoint.
SHARDS_TAG = 'dtensor_shards'

#: In :data:`META_FILE`, the layout's version: absent in directories written before every DTensor was referenced
#: as above (the model under ``state_dict`` and each optimizer, keyed by parameter name, under ``optimizers`` in
#: the distributed checkpoint, marked ``{_OPTIMIZER_IN_SHARDS: name}`` in the meta file), which still read whole.
LAYOUT_KEY, LAYOUT = 'mm_lightning_sharded_layout', 2
_OPTIMIZER_IN_SHARDS, _MODEL_KEY, _OPTIMIZERS_KEY = 'in_shards', 'state_dict', 'optimizers'


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP2 (``fully_shard``; :mod:`mm_lightning.translate.sharding`)."""
    from torch.distributed.fsdp import FSDPModule
    return any(isinstance(module, FSDPModule) for module in model.modules())


def is_sharded_checkpoint(path: str) -> bool:
    """Whether ``path`` is a sharded checkpoint directory written here."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META_FILE))


def mesh_of(model: torch.nn.Module) -> Any:
    """The device mesh ``model``'s parameters are sharded over (None: not sharded)."""
    return next((p.device_mesh for p in model.parameters() if isinstance(p, DTensor)), None)


def _map_leaves(obj: Any, fn: Callable[[Tuple[str, ...], Any], Any], path: Tuple[str, ...] = ()) -> Any:
    """``obj`` with every value that is not a dict, list or tuple replaced by ``fn(path, value)`` (dicts keep
    their type: OrderedDict...)."""
    if isinstance(obj, dict):
        mapped = obj.copy()
        for key, value in obj.items():
            mapped[key] = _map_leaves(value, fn, path + (str(key),))
        return mapped
    if type(obj) in (list, tuple):
        return type(obj)(_map_leaves(value, fn, path + (str(index),)) for index, value in enumerate(obj))
    return fn(path, obj)


# -- 'full': one file, gathered on rank 0 ---------------------------------------------------------------
def gathered(checkpoint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``checkpoint`` with every DTensor whole and every tensor on the CPU, on rank 0 (None elsewhere);
    every rank calls it (one all-gather per DTensor, in the checkpoint's order, which every rank shares)."""
    rank = get_rank()

    def whole(path: Tuple[str, ...], value: Any) -> Any:
        if isinstance(value, DTensor):
            value = value.full_tensor()
        return value.cpu() if rank == 0 and isinstance(value, torch.Tensor) else value

    whole_checkpoint = _map_leaves(checkpoint, whole)
    return whole_checkpoint if rank == 0 else None


# -- 'local': a directory of shards -----------------------------------------------------------------------
def _placements(value: DTensor) -> List[Tuple[str, int]]:
    return [('shard', placement.dim) if isinstance(placement, Shard) else ('replicate', 0)
            for placement in value.placements]


def _placement(spec: Tuple[str, int]) -> Placement:
    kind, dim = spec
    return Shard(dim) if kind == 'shard' else Replicate()


def save_sharded(path: str, checkpoint: Dict[str, Any], write_meta: Callable[[Dict[str, Any], str], None]) -> None:
    """Write the sharded directory at ``path`` (see module doc); every rank calls it with its checkpoint, and
    ``write_meta(meta, file)`` writes rank 0's."""
    import torch.distributed.checkpoint as dcp
    shards: Dict[str, DTensor] = {}

    def reference(location: Tuple[str, ...], value: Any) -> Any:
        if not isinstance(value, DTensor):
            return value
        key = '/'.join(location)
        shards[key] = value
        return {SHARDS_TAG: key, 'shape': list(value.shape), 'dtype': str(value.dtype).replace('torch.', ''),
                'placements': _placements(value)}

    meta = _map_leaves(checkpoint, reference)
    meta[LAYOUT_KEY] = LAYOUT
    partial = f'{path}.partial'
    if get_rank() == 0 and os.path.exists(partial):
        shutil.rmtree(partial)  # what a run killed while writing left
    barrier()
    with naming_a_full_disk(path, partial if get_rank() == 0 else None, lambda: state_bytes(shards)):
        dcp.save(shards, checkpoint_id=partial)
        if get_rank() == 0:
            write_meta(meta, os.path.join(partial, META_FILE))
            replace_path(partial, path)
    barrier()


def _references(meta: Any) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []

    def visit(obj: Any) -> None:
        if isinstance(obj, dict):
            if SHARDS_TAG in obj:
                found.append(obj)
                return
            for value in obj.values():
                visit(value)
        elif type(obj) in (list, tuple):
            for value in obj:
                visit(value)
    visit(meta)
    return found


def _resolved(meta: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """``meta`` with each reference replaced by its tensor in ``tensors``."""
    if isinstance(meta, dict):
        if SHARDS_TAG in meta:
            return tensors[meta[SHARDS_TAG]]
        resolved = meta.copy()
        for key, value in meta.items():
            resolved[key] = _resolved(value, tensors)
        return resolved
    if type(meta) in (list, tuple):
        return type(meta)(_resolved(value, tensors) for value in meta)
    return meta


def load_sharded(path: str, read_meta: Callable[[str], Dict[str, Any]], mesh: Any) -> Dict[str, Any]:
    """The checkpoint of a sharded directory as a sharded run on ``mesh`` sees it: each DTensor with its
    placements on ``mesh``, read shard to shard (torch's distributed checkpoint reshards to this number of
    ranks); every rank calls it. A directory whose placements do not fit ``mesh`` is read whole."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import empty
    meta = read_meta(os.path.join(path, META_FILE))
    references = _references(meta)
    if meta.pop(LAYOUT_KEY, None) != LAYOUT or any(len(ref['placements']) != mesh.ndim for ref in references):
        return read_full(path, read_meta)
    targets = {ref[SHARDS_TAG]: empty(ref['shape'], dtype=getattr(torch, ref['dtype']), device_mesh=mesh,
                                      placements=[_placement(spec) for spec in ref['placements']])
               for ref in references}
    dcp.load(targets, checkpoint_id=path)
    return _resolved(meta, targets)


def _whole(path: str) -> Dict[str, Any]:
    """Every tensor of a directory's distributed checkpoint, whole, in one process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    with tempfile.TemporaryDirectory() as scratch:
        whole = os.path.join(scratch, 'whole.pt')
        dcp_to_torch_save(path, whole)
        return torch.load(whole, map_location='cpu', weights_only=True)


def read_full(path: str, read_meta: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
    """A sharded directory as the mmengine-format checkpoint a ``'full'`` run writes at the same moment, in
    one process (each rank that calls it reads every tensor whole, on its CPU)."""
    meta = read_meta(os.path.join(path, META_FILE))
    if meta.pop(LAYOUT_KEY, None) != LAYOUT:
        return _read_legacy(meta, _whole(path))
    return _resolved(meta, _whole(path))


def _read_legacy(meta: Dict[str, Any], whole: Dict[str, Any]) -> Dict[str, Any]:
    meta['state_dict'] = whole[_MODEL_KEY]
    optimizers = whole.get(_OPTIMIZERS_KEY, {})

    def restore(value: Any) -> Any:
        if isinstance(value, dict) and _OPTIMIZER_IN_SHARDS in value:
            rest = {k: v for k, v in value.items() if k != _OPTIMIZER_IN_SHARDS}
            return dict(numbered(optimizers[value[_OPTIMIZER_IN_SHARDS]]), **rest)
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        return value
    return restore(meta)


def numbered(state: Mapping[str, Any]) -> Dict[str, Any]:
    """An optimizer state keyed by parameter name, numbered as ``optimizer.state_dict()`` numbers it."""
    names = [name for group in state['param_groups'] for name in group['params']]
    index = {name: i for i, name in enumerate(names)}
    return dict(state={index[name]: value for name, value in state.get('state', {}).items()},
                param_groups=[dict(group, params=[index[name] for name in group['params']])
                              for group in state['param_groups']])


# -- loading whole optimizer states into a sharded run -----------------------------------------------------
def shard_optimizer_state(state: Mapping[str, Any], optimizer: Optimizer) -> Dict[str, Any]:
    """``optimizer.state_dict()``-shaped ``state`` with each whole per-parameter tensor made this rank's shard
    of it, placed as its parameter is (what an unsharded optimizer's state needs to load into a sharded one;
    unchanged where the parameters are not sharded)."""
    parameters = [param for group in optimizer.param_groups for param in group['params']]
    per_parameter = dict(state.get('state') or {})
    for index, values in per_parameter.items():
        param = parameters[int(index)]
        if not isinstance(param, DTensor):
            continue
        per_parameter[index] = {
            name: distribute_tensor(value.to(param.to_local().device), param.device_mesh, param.placements,
                                    src_data_rank=None)
            if isinstance(value, torch.Tensor) and not isinstance(value, DTensor) and value.shape == param.shape
            else value
            for name, value in values.items()}
    return dict(state, state=per_parameter)
