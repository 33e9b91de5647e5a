"""A model sharded by FSDP2 (2 CPU processes, gloo) copied, loaded and resharded as the unsharded one.

    torchrun --nproc_per_node=2 tests/scripts/sharded_model.py OUT

For each sharding strategy (FULL_SHARD, SHARD_GRAD_OP: parameters stay gathered after a forward), each rank
checks, and writes OUT/result_rank<r>.json with what it saw:
* ``copy.deepcopy`` gives a copy sharded alike (same placements, same shards) that computes the same outputs;
* ``load_state_dict`` with whole tensors gives each rank its shards of them (and the buffers);
* after an evaluation's forward, :func:`reshard` puts the sharded parameters back, so EMAHook's swap of its
  average in and out leaves the model as it was.
"""
import copy
import json
import os
import sys
from functools import partial

import torch
import torch.distributed as dist
from mmengine.hooks import EMAHook
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy
from torch.distributed.tensor import DTensor

from mm_lightning.translate.sharded_model import reshard
from mm_lightning.translate.sharding import plan_from_wrapper, shard_model


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))


def whole(model):
    return {key: value.full_tensor() if isinstance(value, DTensor) else value.clone()
            for key, value in model.state_dict().items()}


def check(sharding_strategy, mesh):
    plan = plan_from_wrapper(dict(sharding_strategy=sharding_strategy, auto_wrap_policy=partial(
        size_based_auto_wrap_policy, min_num_params=100)), 'model_wrapper', lambda spec, key: spec)
    model = build()
    shard_model(model, plan, mesh)
    inputs = torch.randn(6, 8, generator=torch.Generator().manual_seed(dist.get_rank()))
    model(inputs).sum().backward()  # BatchNorm statistics of this rank's batch
    seen = {}

    duplicate = copy.deepcopy(model)
    pairs = list(zip(duplicate.state_dict().items(), model.state_dict().items()))
    seen['copy_placements_and_shards_equal'] = all(
        key == source_key and type(value) is type(source) and
        (not isinstance(value, DTensor) or value.placements == source.placements) and
        torch.equal(getattr(value, '_local_tensor', value), getattr(source, '_local_tensor', source))
        for (key, value), (source_key, source) in pairs)
    seen['copy_is_a_separate_model'] = all(a.data_ptr() != b.data_ptr() for a, b in zip(
        (p.to_local() for p in duplicate.parameters()), (p.to_local() for p in model.parameters())))
    model.eval(), duplicate.eval()
    with torch.no_grad():
        seen['copy_computes_the_same'] = torch.equal(duplicate(inputs), model(inputs))
    seen['gathered_after_eval_forward'] = not all(isinstance(p, DTensor) for p in model.parameters())
    reshard(model)
    seen['sharded_after_reshard'] = all(isinstance(p, DTensor) for p in model.parameters())

    reference = build()  # whole tensors, other values: loaded into the sharded copy
    for buffer in reference.buffers():
        buffer.fill_(float(dist.get_rank() + 3)) if buffer.is_floating_point() else None
    state = reference.state_dict()
    duplicate.load_state_dict(state)
    seen['whole_tensors_load'] = all(torch.equal(value, state[key]) for key, value in whole(duplicate).items())

    before = whole(model)
    hook = EMAHook(momentum=0.5)
    runner = type('Runner', (), dict(model=model, iter=0, epoch=0))()
    hook.before_run(runner)
    hook.after_train_iter(runner, 0)
    hook.ema_model.update_parameters(duplicate)  # an average that differs from the model
    hook.before_val_epoch(runner)
    with torch.no_grad():
        model(inputs)
    reshard(model)
    hook.after_val_epoch(runner)
    seen['ema_swap_restores_the_model'] = all(torch.equal(value, before[key]) for key, value in whole(model).items())
    return seen


def main():
    dist.init_process_group('gloo')
    mesh = init_device_mesh('cpu', (dist.get_world_size(),), mesh_dim_names=('data_parallel',))
    result = {strategy: check(strategy, mesh) for strategy in ('FULL_SHARD', 'SHARD_GRAD_OP')}
    with open(os.path.join(sys.argv[1], f'result_rank{dist.get_rank()}.json'), 'w') as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
