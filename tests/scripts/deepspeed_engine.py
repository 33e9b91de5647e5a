"""DeepSpeed's engine on 2 CPU processes (gloo), checkpointed through mm_lightning's DeepSpeed layout.

    torchrun --nproc_per_node=2 tests/scripts/deepspeed_engine.py STAGE OUT

The layout alone: this drives the engine the run's strategy builds, as ``mm_lightning.state.checkpoint``
does through ``strategy.deepspeed_engine`` (whole runs: tests/test_deepspeed.py): train 4
steps, save with ``deepspeed_state.save`` (mmengine's checkpoint as client state), train 3 more;
then a fresh engine loads with ``deepspeed_state.load`` and trains the same 3 steps. The weights
alone are loaded into an engine that only evaluates (no optimizer) and one that fine-tunes: both give
the saved engine's outputs on a probe batch, and the second trains as an engine built on the saved
weights does (ZeRO's fp32 master weights follow the loaded ones). Rank 0 writes OUT/result.json: the
losses, the probe comparisons, the client state read back and the files written.
"""
import json
import os
import sys

import deepspeed
import deepspeed.ops
import torch
from torch import nn

from mm_lightning.state import deepspeed_state

# Plain gloo collectives: DeepSpeed would otherwise compile its shared-memory op (minutes on 2 cores).
deepspeed.ops.__compatible_ops__['deepspeed_shm_comm'] = False


def build(stage, seed=0, optimizer=True, weights=None):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    if weights is not None:
        model.load_state_dict(weights)
    config = dict(train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=1, steps_per_print=10 ** 9,
                  zero_optimization=dict(stage=stage))
    if not optimizer:
        return deepspeed.initialize(model=model, config=config)[0]
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=0.01),
                                      config=config)
    return engine


def probe(engine):
    with torch.no_grad():
        return engine(torch.linspace(-1, 1, 16).reshape(2, 8)).tolist()


def train(engine, batches):
    losses = []
    for inputs, labels in batches:
        loss = nn.functional.cross_entropy(engine(inputs), labels)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


def main():
    stage, out = int(sys.argv[1]), sys.argv[2]
    deepspeed.init_distributed(dist_backend='gloo')
    rank = torch.distributed.get_rank()
    generator = torch.Generator().manual_seed(100 + rank)
    batches = [(torch.randn(4, 8, generator=generator), torch.randint(0, 3, (4,), generator=generator))
               for _ in range(7)]
    path = os.path.join(out, 'work', 'iter_4.pth')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    client_state = dict(meta=dict(epoch=1, iter=4), message_hub=dict(log_scalars={}, runtime_info=dict(iter=4)),
                        mm_lightning=dict(loop=dict(iter=4)))

    engine = build(stage)
    train(engine, batches[:4])
    deepspeed_state.save(engine, path, client_state)
    written = sorted(os.listdir(path))
    saved = probe(engine)
    continued = train(engine, batches[4:])

    fresh = build(stage)
    loaded = deepspeed_state.load(fresh, path, load_optimizer_states=True)
    resumed = train(fresh, batches[4:])
    probes = []
    for optimizer in (False, True):  # evaluating, fine-tuning: other initial weights, the checkpoint's loaded
        weights_only = build(stage, seed=1, optimizer=optimizer)
        deepspeed_state.load(weights_only, path, load_optimizer_states=False)
        probes.append(probe(weights_only) == saved)
    reference = build(stage, weights=deepspeed_state.fp32_weights(path))  # built on the saved weights
    probes.append(train(weights_only, batches[4:]) == train(reference, batches[4:]))
    result = dict(continued=continued, resumed=resumed, written=written, probes=probes,
                  whole=deepspeed_state.is_deepspeed_checkpoint(path),
                  leftovers=sorted(name for name in os.listdir(os.path.dirname(path)) if name != 'iter_4.pth'),
                  client_state={key: loaded.get(key) for key in client_state})
    results = [None, None]
    torch.distributed.all_gather_object(results, result)
    if rank == 0:
        with open(os.path.join(out, 'result.json'), 'w') as f:
            json.dump(results, f)
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
