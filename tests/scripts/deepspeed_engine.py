"""DeepSpeed's engine on 2 CPU processes (gloo), checkpointed through mm_lightning's DeepSpeed layout.

    torchrun --nproc_per_node=2 tests/scripts/deepspeed_engine.py STAGE OUT

Lightning's DeepSpeedStrategy refuses the CPU accelerator, so this drives the engine Lightning
would build, as ``mm_lightning.state.checkpoint`` does through ``strategy.deepspeed_engine``: train 4
steps, save with ``deepspeed_state.save`` (mmengine's checkpoint as client state), train 3 more;
then a fresh engine loads with ``deepspeed_state.load`` and trains the same 3 steps. Rank 0 writes
OUT/result.json: the losses of both, the client state read back and the files written.
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


def build(stage):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    config = dict(train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=1, steps_per_print=10 ** 9,
                  zero_optimization=dict(stage=stage))
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=0.01),
                                      config=config)
    return engine


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
    continued = train(engine, batches[4:])

    fresh = build(stage)
    loaded = deepspeed_state.load(fresh, path, load_optimizer_states=True)
    resumed = train(fresh, batches[4:])
    result = dict(continued=continued, resumed=resumed, written=written,
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
