"""Throughput and peak memory of one model under each distributed strategy, on GPUs.

    python benchmarks/gpu_strategies.py [--iters 60] [--gpus N]     # runs every case, prints a table
    python benchmarks/gpu_strategies.py --plan                      # prints the cases' Trainer settings (CPU)

Each case is an mmengine config (the same model, data and optimizer) that differs only
in ``strategy`` and precision; it runs in its own ``torchrun`` job so that memory and
process groups do not leak between cases. Throughput is samples per second over the
iterations after ``--warmup``; memory is ``torch.cuda.max_memory_allocated`` on rank 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import DATASETS, MODELS  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

WIDTH, DEPTH, BATCH, CLASSES = 2048, 8, 64, 100

AMP = {
    'fp32': None,
    'fp16': dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic'),
    'bf16': dict(type='AmpOptimWrapper', dtype='bfloat16'),
}
#: case name -> (strategy config, precision); DeepSpeed sets its precision in its own config.
CASES: Dict[str, Dict[str, Any]] = {
    'single device fp32': dict(strategy=None, precision='fp32', single=True),
    'single device fp16': dict(strategy=None, precision='fp16', single=True),
    'single device bf16': dict(strategy=None, precision='bf16', single=True),
    'DDP fp16': dict(strategy=dict(type='DDPStrategy'), precision='fp16'),
    'DDP bf16': dict(strategy=dict(type='DDPStrategy'), precision='bf16'),
    'FSDP FULL_SHARD fp16': dict(strategy=dict(type='FSDPStrategy', state_dict_cfg='full',
                                               model_wrapper=dict(sharding_strategy='FULL_SHARD')), precision='fp16'),
    'FSDP FULL_SHARD bf16': dict(strategy=dict(type='FSDPStrategy', state_dict_cfg='full',
                                               model_wrapper=dict(sharding_strategy='FULL_SHARD')), precision='bf16'),
    'FSDP SHARD_GRAD_OP bf16': dict(strategy=dict(type='FSDPStrategy', state_dict_cfg='full',
                                                  model_wrapper=dict(sharding_strategy='SHARD_GRAD_OP')),
                                    precision='bf16'),
    'DeepSpeed ZeRO-2 fp16': dict(strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=2),
                                                fp16=dict(enabled=True)), precision='deepspeed'),
    'DeepSpeed ZeRO-2 bf16': dict(strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=2),
                                                bf16=dict(enabled=True)), precision='deepspeed'),
    'DeepSpeed ZeRO-3 fp16': dict(strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=3),
                                                fp16=dict(enabled=True)), precision='deepspeed'),
    'DeepSpeed ZeRO-3 bf16': dict(strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=3),
                                                bf16=dict(enabled=True)), precision='deepspeed'),
}


@DATASETS.register_module(force=True)
class RandomFeatures(Dataset):
    def __init__(self, size: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, WIDTH, generator=gen)
        self.y = torch.randint(0, CLASSES, (size,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return dict(inputs=self.x[i], label=self.y[i])


@MODELS.register_module(force=True)
class WideMLP(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for _ in range(DEPTH):
            layers += [nn.Linear(WIDTH, WIDTH), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, inputs: torch.Tensor, label: torch.Tensor = None, mode: str = 'tensor') -> Any:
        logits = self.head(self.body(inputs))
        return dict(loss=nn.functional.cross_entropy(logits.float(), label)) if mode == 'loss' else logits


class Meter(Hook):
    """Time of the steady-state iterations (synchronised) and peak memory."""

    priority = 'LOWEST'

    def __init__(self, warmup: int) -> None:
        self.warmup, self.count, self.start, self.end = warmup, 0, 0.0, 0.0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.count += 1
        if self.count in (self.warmup, runner.max_iters):
            torch.cuda.synchronize()
            if self.count == self.warmup:
                self.start = time.perf_counter()
                torch.cuda.reset_peak_memory_stats()
            else:
                self.end = time.perf_counter()


def config(case: str, iters: int, work_dir: str) -> dict:
    spec = CASES[case]
    optim_wrapper: Dict[str, Any] = dict(optimizer=dict(type='AdamW', lr=1e-4))
    if spec['precision'] == 'deepspeed':
        optim_wrapper['type'] = 'DeepSpeedOptimWrapper'
    elif AMP[spec['precision']] is not None:
        optim_wrapper.update(AMP[spec['precision']])
    cfg = dict(
        model=dict(type='WideMLP'), work_dir=work_dir, experiment_name=case.replace(' ', '_'),
        train_dataloader=dict(dataset=dict(type='RandomFeatures', size=BATCH * 64),
                              sampler=dict(type='InfiniteSampler', shuffle=True), batch_size=BATCH,
                              num_workers=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=optim_wrapper, train_cfg=dict(by_epoch=False, max_iters=iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=10 ** 6), checkpoint=None),
        env_cfg=dict(dist_cfg=dict(backend='nccl')), randomness=dict(seed=0), log_level='WARNING')
    if spec.get('single'):
        cfg['launcher'] = 'none'
    if spec['strategy'] is not None:
        cfg['strategy'] = spec['strategy']
    return cfg


def worker(case: str, iters: int, warmup: int, out: str) -> None:
    from mm_lightning import FlexibleRunner
    with tempfile.TemporaryDirectory() as work_dir:
        runner = FlexibleRunner.from_cfg(config(case, iters, work_dir))
        meter = Meter(warmup)
        runner.register_hook(meter)
        runner.train()
        if runner.rank == 0:
            seconds = meter.end - meter.start
            samples = (iters - warmup) * BATCH * runner.world_size
            with open(out, 'w') as f:
                json.dump(dict(case=case, world_size=runner.world_size, samples_per_s=samples / seconds,
                               peak_mem_gib=torch.cuda.max_memory_allocated() / 2 ** 30), f)


def plan() -> None:
    """What each case becomes in Lightning, as if under ``torchrun --nproc_per_node=2``; needs no GPU."""
    from mm_lightning import trainer_kwargs
    for key, value in dict(WORLD_SIZE='2', LOCAL_WORLD_SIZE='2', RANK='0', LOCAL_RANK='0', GROUP_RANK='0',
                           MASTER_ADDR='127.0.0.1', MASTER_PORT='29561', TORCHELASTIC_RUN_ID='plan').items():
        os.environ.setdefault(key, value)
    for case in CASES:
        cfg = config(case, 10, tempfile.gettempdir())
        cfg['env_cfg'] = dict(dist_cfg=dict(backend='gloo'))
        cfg['launcher'] = 'none' if CASES[case].get('single') else 'pytorch'
        try:
            kwargs = trainer_kwargs(cfg)
        except Exception as err:  # e.g. float16 AMP needs a GPU
            print(f'{case:24s} not on this machine: {err}')
            continue
        strategy = kwargs['strategy']
        strategy = strategy if isinstance(strategy, str) else type(strategy).__name__
        plugins = [f'{type(p).__name__}({p.precision})' for p in kwargs.get('plugins', [])]
        print(f"{case:24s} strategy={strategy} precision={kwargs.get('precision') or plugins or '32-true'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--gpus', type=int, default=torch.cuda.device_count())
    parser.add_argument('--plan', action='store_true', help='print what each case becomes, run nothing')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plan:
        plan()
        return
    if args.worker:
        worker(args.worker, args.iters, args.warmup, args.out)
        return
    if args.gpus == 0:
        print('No CUDA device here: nothing to measure (use --plan to see the cases).')
        return
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, spec in CASES.items():
            out = os.path.join(tmp, 'result.json')
            processes = 1 if spec.get('single') else args.gpus
            command = ([sys.executable] if spec.get('single') else
                       [torchrun, f'--nproc_per_node={processes}', '--master_port=29561'])
            command += [os.path.abspath(__file__), '--worker', case, '--out', out, '--iters', str(args.iters),
                        '--warmup', str(args.warmup)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0 or not os.path.exists(out):
                rows.append(f'| {case} | {processes} | failed: {result.stderr.strip().splitlines()[-1][:120]} | |')
                continue
            with open(out) as f:
                r = json.load(f)
            os.remove(out)
            rows.append(f"| {case} | {r['world_size']} | {r['samples_per_s']:.0f} | {r['peak_mem_gib']:.2f} |")
    print(f'{torch.cuda.get_device_name(0)}, {args.iters} iterations ({args.warmup} warm-up), batch {BATCH} per '
          f'GPU, MLP {DEPTH}x{WIDTH}\n')
    print('| case | GPUs | samples / s | peak memory (GiB, rank 0) |')
    print('|---|---|---|---|')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
