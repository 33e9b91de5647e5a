"""Train with FlexibleRunner: 2 processes x batch 4 under torchrun, or 1 process x batch 8.

    torchrun --nproc_per_node=2 tests/scripts/ddp_train.py OUT 2
    python tests/scripts/ddp_train.py OUT 1

Writes OUT/final.pt (model weights, rank 0) and, on rank 1, OUT/rank1_writes.json: every
file rank 1 opened for writing under the work_dir (there should be none).
"""
import builtins
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import toy  # noqa: E402,F401

from mm_lightning import FlexibleRunner  # noqa: E402

out, processes = sys.argv[1], int(sys.argv[2])
work_dir = os.path.join(out, 'work')
rank = int(os.environ.get('RANK', 0))
writes = []
if rank == 1:  # record what rank 1 writes under the work_dir
    real_open = builtins.open

    def recording_open(file, mode='r', *args, **kwargs):
        if any(flag in mode for flag in 'wax') and os.path.abspath(str(file)).startswith(os.path.abspath(work_dir)):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def under_work_dir(file):
        return isinstance(file, (str, os.PathLike)) and os.path.abspath(str(file)).startswith(os.path.abspath(work_dir))

    builtins.open = recording_open
    real_save = torch.save
    # in memory (a rank's state sent to rank 0) is not a write
    torch.save = lambda obj, f, *a, **k: (under_work_dir(f) and writes.append(str(f)), real_save(obj, f, *a, **k))[1]

cfg = dict(
    model=dict(type='ToyClassifier'),
    work_dir=work_dir, experiment_name=f'ddp_train_{processes}',
    train_dataloader=dict(dataset=dict(type='BlobDataset', size=48), sampler=dict(type='DefaultSampler', shuffle=True),
                          batch_size=8 // processes, num_workers=0),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9), accumulative_counts=2),
    param_scheduler=dict(type='MultiStepLR', milestones=[1], by_epoch=True),
    train_cfg=dict(by_epoch=True, max_epochs=2),
    launcher='pytorch' if processes > 1 else 'none',
    env_cfg=dict(dist_cfg=dict(backend='gloo')),
    randomness=dict(seed=21),
    auto_scale_lr=dict(enable=True, base_batch_size=4),  # real batch is 8 either way: LR x2
)
runner = FlexibleRunner.from_cfg(cfg)
initial = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
runner.train()
if runner.rank == 0:
    torch.save(initial, os.path.join(out, 'initial.pt'))
if runner.rank == 0:
    torch.save({k: v.detach().clone() for k, v in runner.model.state_dict().items()}, os.path.join(out, 'final.pt'))
if rank == 1:
    builtins.open = real_open
    with open(os.path.join(out, 'rank1_writes.json'), 'w') as f:
        json.dump(writes, f)
