"""SyncBuffersHook under 2-process DDP: ``torchrun --nproc_per_node=2 tests/scripts/sync_buffers.py OUT``.

Each rank trains its BatchNorm on its own half of the data, and DDP runs with
``broadcast_buffers=False`` (as mmengine's Runner wraps), so the ranks' running statistics
differ until the hook averages them after each epoch. Hooks of the highest and lowest
priority gather every rank's buffers around it; rank 0 writes them to OUT as JSON.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import toy  # noqa: E402,F401
from mmengine.dist import all_gather  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402

from mm_lightning import FlexibleRunner  # noqa: E402


class GatherBuffers(Hook):
    """Records ``[epoch][rank]`` -> running mean of the model's BatchNorm at ``after_train_epoch``."""

    def __init__(self) -> None:
        self.seen = []

    def after_train_epoch(self, runner) -> None:
        running_mean = dict(runner.model.named_buffers())['net.1.running_mean']
        self.seen.append([tensor.tolist() for tensor in all_gather(running_mean.detach().clone())])


out = sys.argv[1]
runner = FlexibleRunner.from_cfg(dict(
    model=dict(type='ToyClassifier', batch_norm=True),
    work_dir=os.path.join(os.path.dirname(out), 'work'), experiment_name='sync_buffers',
    train_dataloader=dict(dataset=dict(type='BlobDataset', size=16), sampler=dict(type='DefaultSampler', shuffle=True),
                          batch_size=4, num_workers=0),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
    train_cfg=dict(by_epoch=True, max_epochs=2),
    custom_hooks=[dict(type='SyncBuffersHook')],
    launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='gloo')), randomness=dict(seed=5)))
before, after = GatherBuffers(), GatherBuffers()
runner.register_hook(before, priority='HIGHEST')
runner.register_hook(after, priority='LOWEST')
runner.train()
if runner.rank == 0:
    with open(out, 'w') as f:
        json.dump(dict(world_size=runner.world_size, before=before.seen, after=after.seen), f)
