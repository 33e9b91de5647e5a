"""Train one of the resume cases, recording every iteration, optionally killed or resumed.

    python tests/scripts/resumable_run.py OUT CASE [--work-dir D] [--kill STAGE:N] [--resume]

Appends to OUT/records.jsonl one line per training iteration (losses, LRs, counters) and per
validation (metrics), and writes OUT/final.pt (the model's weights) when training ends.
``--kill after_train_iter:7`` SIGKILLs the process after the 7th ``after_train_iter`` of this
process (``after_val_iter:2:TERM`` sends SIGTERM instead); stages: after_train_iter,
after_train_epoch (after that epoch's checkpoint is written), after_val_iter (during a
validation). ``--resume`` resumes from the latest checkpoint in the work_dir. A run stopped by
SIGTERM exits 0 without final.pt.
"""
import argparse
import os
import signal
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import toy  # noqa: E402,F401
from conftest import data  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from records import Recorder  # noqa: E402

from mm_lightning import FlexibleRunner  # noqa: E402

HOOKS = dict(logger=dict(type='LoggerHook', interval=1))


def _epoch_cfg(**changes):
    cfg = dict(
        model=dict(type='ToyClassifier', dropout=0.3, batch_norm=True),
        train_dataloader=data(size=40, batch_size=4),
        val_dataloader=data(size=12, seed=1, shuffle=False, batch_size=4),
        val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=8),
                         dict(type='MultiStepLR', milestones=[2], by_epoch=True)],
        train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
        default_hooks=dict(HOOKS, checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False)),
        randomness=dict(seed=5))
    cfg.update(changes)
    return cfg


CASES = {
    # epoch-based, no loader workers, dropout; checkpoints every 3 iterations (mid-epoch) and validation each epoch
    'epoch_dropout': _epoch_cfg(),
    # epoch-based, 2 loader workers, random augmentation in __getitem__
    'epoch_workers_augment': _epoch_cfg(
        train_dataloader=dict(data(size=40, batch_size=4), num_workers=2,
                              dataset=dict(type='AugmentedBlobDataset', size=40, seed=0))),
    # the same without randomness.seed: each run draws its own, so the sampler's and the workers' seeds are the
    # checkpoint's to restore (the loader is built before a resume gives the run the checkpoint's seed)
    'epoch_drawn_seed': _epoch_cfg(
        train_dataloader=dict(data(size=40, batch_size=4), num_workers=2,
                              dataset=dict(type='AugmentedBlobDataset', size=40, seed=0)),
        randomness=dict(seed=None)),
    # iteration-based with InfiniteSampler and augmentation (no workers)
    'iter_infinite': _epoch_cfg(
        train_dataloader=dict(data(size=30, batch_size=4, sampler='InfiniteSampler'),
                              dataset=dict(type='AugmentedBlobDataset', size=30, seed=0)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=5),
                         dict(type='CosineAnnealingLR', by_epoch=False, begin=5, T_max=20)],
        train_cfg=dict(by_epoch=False, max_iters=20, val_interval=6),
        default_hooks=dict(HOOKS, checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False))),
    # checkpoints large enough to take a while to write (a frozen 80 MB buffer)
    'ballast': _epoch_cfg(model=dict(type='BallastClassifier', ballast=20_000_000, dropout=0.3),
                          train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1)),
    # gradient accumulation over 3 iterations, checkpoints every 4 iterations (inside windows)
    'accumulation': _epoch_cfg(
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9), accumulative_counts=3),
        default_hooks=dict(HOOKS, checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False))),
}


class Kill(Hook):
    """Signal this process (SIGKILL unless named) at the ``count``-th call of ``stage`` (after every other
    hook of that stage)."""

    priority = 'LOWEST'

    def __init__(self, stage, count, signum=signal.SIGKILL):
        self.stage = stage
        self.count = count
        self.signum = signum

    def _tick(self, stage):
        if stage == self.stage:
            self.count -= 1
            if self.count == 0:
                os.kill(os.getpid(), self.signum)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._tick('after_train_iter')

    def after_train_epoch(self, runner):
        self._tick('after_train_epoch')

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._tick('after_val_iter')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('case', choices=sorted(CASES))
    parser.add_argument('--work-dir')
    parser.add_argument('--kill')
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--set', nargs='*', default=[], help='top-level config overrides as KEY=PYTHON_VALUE')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cfg = dict(CASES[args.case], work_dir=args.work_dir or os.path.join(args.out, 'work'),
               experiment_name=f'{args.case}_{os.getpid()}', resume=args.resume)
    for item in args.set:
        key, value = item.split('=', 1)
        cfg[key] = eval(value)  # test-controlled input
    runner = FlexibleRunner.from_cfg(cfg)
    runner.register_hook(Recorder(os.path.join(args.out, 'records.jsonl')))
    if args.kill:
        stage, count, *name = args.kill.split(':')
        runner.register_hook(Kill(stage, int(count), *(getattr(signal, f'SIG{n}') for n in name)))
    runner.train()
    if not runner.module.progress.finished:  # stopped by SIGTERM: resumable, not finished
        return
    torch.save({k: v.detach().clone() for k, v in runner.model.state_dict().items()},
               os.path.join(args.out, 'final.pt'))


if __name__ == '__main__':
    main()
