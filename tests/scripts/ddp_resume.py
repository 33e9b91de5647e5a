"""A 2-process run (torchrun, gloo) that can be signalled, killed and resumed; every rank records.

    torchrun --nproc_per_node=2 tests/scripts/ddp_resume.py OUT [--work-dir D] [--resume [PATH]]
        [--at STAGE:N:SIGNAL[:RANK]] [--own-trainer] [--ckpt-path FILE] [--pace SECONDS]
        [--fsdp full|local | --deepspeed STAGE] [--momentum M] [--evaluate CHECKPOINT] [--max-epochs N]
        [--auto-scale-lr]

The config has everything that makes ranks differ: a shuffled sampler, dropout, random noise in
``__getitem__`` (drawn from each rank's global random state), ``diff_rank_seed``, BatchNorm (whose
running statistics each rank keeps: nothing synchronises them), EMA,
``accumulative_counts=2`` with checkpoints every 5 iterations (inside windows) and validation
every epoch. Each rank appends to OUT/records_rank<r>.jsonl one line per training iteration
(losses, LRs) and per validation, and writes OUT/final_rank<r>.pt (weights and EMA weights)
when training has finished. ``--at after_train_iter:7:KILL:1`` sends SIGKILL to rank 1
itself after its 7th ``after_train_iter`` (omit the rank for every rank). ``--own-trainer``
runs a ConfigModule in a Trainer of ``trainer_kwargs`` with Lightning's ModelCheckpoint every
2 optimizer steps (4 iterations) instead of mmengine's CheckpointHook; ``--ckpt-path`` resumes it.
``--fsdp`` shards with mmengine's FSDPStrategy (EMAHook's copy sharded alike); ``--deepspeed`` runs
ZeRO-``STAGE`` (mmengine's DeepSpeedStrategy and DeepSpeedOptimWrapper, which accumulates nothing:
every iteration steps), without EMAHook. ``--momentum 0`` makes SGD keep no state. ``--evaluate``
validates (``runner.val()``) with the weights of a checkpoint (``load_from``) instead of training;
``--max-epochs`` shortens the run (3 epochs of 4 iterations each on 2 processes); ``--auto-scale-lr``
enables ``auto_scale_lr`` (base batch size 8), which a resume on another number of processes needs.
"""
import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import toy  # noqa: E402,F401
from mmengine.hooks import Hook  # noqa: E402
from records import Recorder, full_state  # noqa: E402

RANK = int(os.environ.get('RANK', 0))


def config(work_dir, own_trainer, fsdp=None, deepspeed=None, momentum=0.9):
    checkpoint = None if own_trainer else dict(type='CheckpointHook', interval=5, by_epoch=False)
    optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=momentum), accumulative_counts=2)
    strategy = {}
    if fsdp is not None:
        strategy = dict(strategy=dict(
            type='FSDPStrategy', state_dict_cfg=fsdp,
            model_wrapper=dict(auto_wrap_policy=dict(type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
                                                     min_num_params=100))))
    if deepspeed is not None:  # mmengine requires DeepSpeedOptimWrapper, which takes an optimizer only
        strategy = dict(strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=deepspeed),
                                      config=dict(zero_allow_untested_optimizer=True)))  # SGD, for ZeRO
        optim_wrapper = dict(type='DeepSpeedOptimWrapper', optimizer=optim_wrapper['optimizer'])
    return dict(**strategy,
        model=dict(type='ToyClassifier', dropout=0.3, batch_norm=True),
        work_dir=work_dir, experiment_name=f'ddp_resume_{os.getpid()}',
        train_dataloader=dict(dataset=dict(type='AugmentedBlobDataset', size=32), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        val_dataloader=dict(dataset=dict(type='BlobDataset', size=12, seed=1), batch_size=4, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
        optim_wrapper=optim_wrapper,
        param_scheduler=dict(type='CosineAnnealingLR', T_max=12, by_epoch=False),
        train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=checkpoint),
        custom_hooks=[] if deepspeed is not None else [dict(type='EMAHook', momentum=0.2)],
        launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=7, diff_rank_seed=True))


class Signal(Hook):
    """Send ``signum`` to this process at the ``count``-th call of ``stage``, on ``rank`` (None: every rank)."""

    priority = 'LOWEST'

    def __init__(self, stage, count, signum, rank=None):
        self.stage, self.count, self.signum, self.rank = stage, count, signum, rank

    def _tick(self, stage):
        if stage == self.stage and self.rank in (None, RANK):
            self.count -= 1
            if self.count == 0:
                os.kill(os.getpid(), self.signum)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._tick('after_train_iter')

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._tick('after_val_iter')


class Pace(Hook):
    """Sleep after each training iteration (a signal from outside then falls at a moment of the test's choosing)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(self.seconds)


def _hooks(args):
    hooks = [Recorder(os.path.join(args.out, f'records_rank{RANK}.jsonl'))]
    if args.pace:
        hooks.append(Pace(args.pace))
    if args.at:
        stage, count, name, *rank = args.at.split(':')
        hooks.append(Signal(stage, int(count), getattr(signal, f'SIG{name}'), int(rank[0]) if rank else None))
    return hooks


def _final(model, ema):
    weights = full_state(model)
    if ema is not None:
        weights.update({f'ema.{k}': v for k, v in full_state(ema.ema_model).items()})
    return weights


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--work-dir')
    parser.add_argument('--resume', nargs='?', const=True, default=False, help='resume=True, or resume=PATH')
    parser.add_argument('--at')
    parser.add_argument('--own-trainer', action='store_true')
    parser.add_argument('--ckpt-path')
    parser.add_argument('--pace', type=float, default=0.0)
    parser.add_argument('--fsdp', choices=('full', 'local'), help="FSDPStrategy with this state_dict_cfg")
    parser.add_argument('--deepspeed', type=int, choices=(1, 2, 3), help='DeepSpeedStrategy with this ZeRO stage')
    parser.add_argument('--momentum', type=float, default=0.9, help='SGD momentum (0: an optimizer without state)')
    parser.add_argument('--evaluate', metavar='CHECKPOINT', help='validate with these weights (load_from) instead')
    parser.add_argument('--max-epochs', type=int, default=3)
    parser.add_argument('--auto-scale-lr', action='store_true')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.deepspeed:
        import deepspeed.ops
        # Plain gloo collectives: DeepSpeed would otherwise compile its shared-memory op (minutes on 2 cores).
        deepspeed.ops.__compatible_ops__['deepspeed_shm_comm'] = False
    cfg = config(args.work_dir or os.path.join(args.out, 'work'), args.own_trainer, args.fsdp, args.deepspeed,
                 args.momentum)
    cfg['train_cfg'] = dict(cfg['train_cfg'], max_epochs=args.max_epochs)
    if args.auto_scale_lr:
        cfg['auto_scale_lr'] = dict(enable=True, base_batch_size=8)
    if args.own_trainer:
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint

        from mm_lightning import ConfigDataModule, ConfigModule, load_config, trainer_kwargs
        cfg = load_config(cfg)
        module = ConfigModule.from_config(cfg)
        for hook in _hooks(args):
            module.runner.register_hook(hook)
        kwargs = trainer_kwargs(cfg)
        kwargs.update(enable_checkpointing=True, callbacks=kwargs['callbacks'] + [ModelCheckpoint(
            dirpath=os.path.join(cfg.work_dir, 'lightning'), every_n_train_steps=2, save_top_k=-1)])
        trainer = L.Trainer(**kwargs)
        trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg), ckpt_path=args.ckpt_path)
        runner, finished = module.runner, module.progress.finished
    else:
        from mm_lightning import FlexibleRunner
        cfg.update(resume=args.resume, load_from=args.evaluate)
        runner = FlexibleRunner.from_cfg(cfg)
        for hook in _hooks(args):
            runner.register_hook(hook)
        if args.evaluate:
            runner.val()
            finished = True
        else:
            runner.train()
            finished = runner.module.progress.finished
    if finished:  # not stopped by SIGTERM
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        ema = next((hook for hook in runner.hooks if type(hook).__name__ == 'EMAHook'), None)
        torch.save(_final(model, ema), os.path.join(args.out, f'final_rank{RANK}.pt'))


if __name__ == '__main__':
    main()
