"""A model sharded by FSDP2 copies and loads as the unsharded model does.

torch's ``fully_shard`` refuses ``copy.deepcopy`` of a sharded module, and a sharded module's
``load_state_dict`` takes only DTensors. mmengine's code does both to ``runner.model``: ``EMAHook``
deep-copies it for its average (mmdet, mmyolo, mmpretrain and mmagic configs enable it by default), and
hooks and user code load whole state dicts into it. So, for a model :func:`shard_like_unsharded` set up:

* ``copy.deepcopy`` gives a copy sharded by the same plan: every parameter a DTensor of the same
  placements holding the same values (each rank copies only its shards). It is built from a template
  of the unsharded structure kept on the meta device (no memory), taken when the model was sharded.
* ``load_state_dict`` with whole tensors (a ``'full'`` checkpoint, a DDP or mmengine file) gives
  each rank its shard of each, as the unsharded model would load them; DTensors load as before.
* :func:`reshard` puts the sharded parameters back after a forward that left them gathered (plans
  with ``reshard_after_forward=False`` keep them after an evaluation's forward), so hooks that touch
  parameters (``EMAHook`` swaps its average in and out around validation) see the shards.

Buffers are not sharded: each rank keeps its own (see :mod:`mm_lightning.translate.sharding`).
"""
from __future__ import annotations

import copy
from functools import partial
from itertools import chain
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

__all__ = ['unsharded_template', 'shard_like_unsharded', 'reshard', 'local_tensor']


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor (its shard of a DTensor; a plain tensor is its own)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _tensors(module: nn.Module, recurse: bool = True) -> Iterator[Tuple[str, torch.Tensor]]:
    return chain(module.named_parameters(recurse=recurse), module.named_buffers(recurse=recurse))


def unsharded_template(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s structure with every parameter and buffer on the meta device (no storage)."""
    memo: Dict[int, Any] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(torch.empty_like(parameter, device='meta'),
                                           requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device='meta')
    return copy.deepcopy(model, memo)


def shard_like_unsharded(model: nn.Module, template: nn.Module, shard: Callable[[nn.Module], None]) -> None:
    """Let the sharded ``model`` be copied and loaded as its unsharded self (see module doc).

    ``template`` is :func:`unsharded_template` of the model as it was just before ``shard`` sharded it,
    and ``shard`` shards a module of that structure by the same plan.
    """
    # The root's hooks run first: parameters a forward left gathered are sharded again before any is loaded.
    model.register_load_state_dict_pre_hook(lambda module, *args: reshard(module))
    for module in model.modules():
        if any(isinstance(tensor, DTensor) for _, tensor in _tensors(module, recurse=False)):
            module.register_load_state_dict_pre_hook(_shard_whole_tensors)
    # An instance attribute: copy.deepcopy looks __deepcopy__ up on the object, before the class's refusal.
    setattr(model, '__deepcopy__', partial(_sharded_copy, model, template, shard))


def _sharded_copy(model: nn.Module, template: nn.Module, shard: Callable[[nn.Module], None],
                  memo: Dict[int, Any]) -> nn.Module:
    """A copy of the sharded ``model``, sharded by the same plan, with its values (every rank calls it)."""
    reshard(model)
    duplicate = copy.deepcopy(template)
    shard(duplicate)
    device = next((local_tensor(tensor).device for _, tensor in _tensors(model)), torch.device('cpu'))
    duplicate.to_empty(device=device)
    source = dict(_tensors(model))
    with torch.no_grad():
        for name, tensor in _tensors(duplicate):
            tensor.copy_(source[name])
    shard_like_unsharded(duplicate, template, shard)
    return duplicate


def _shard_whole_tensors(module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: each whole tensor meant for a DTensor of ``module`` becomes this rank's
    shard of it (a tensor of another shape is left for torch to report, as for an unsharded model)."""
    for name, tensor in _tensors(module, recurse=False):
        value = state_dict.get(prefix + name)
        if isinstance(tensor, DTensor) and isinstance(value, torch.Tensor) and not isinstance(value, DTensor) \
                and value.shape == tensor.shape:
            state_dict[prefix + name] = distribute_tensor(value.to(local_tensor(tensor).device), tensor.device_mesh,
                                                          tensor.placements, src_data_rank=None)


def reshard(model: nn.Module) -> None:
    """The sharded parameters back in place on every FSDP2 module of ``model`` (a no-op where they are)."""
    from torch.distributed.fsdp import FSDPModule
    sharded: List[Any] = [module for module in model.modules() if isinstance(module, FSDPModule)]
    for module in sharded:
        module.reshard()
