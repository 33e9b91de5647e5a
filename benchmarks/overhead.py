"""Per-iteration overhead: mm_lightning against mmengine's Runner and plain Lightning.

An overhead-bound workload (a small MLP on CPU, one thread) makes the engines' own
per-iteration work visible. The three engines run the same model, data and optimizer,
alternating, ``--repeats`` times; the table reports medians over the repeats of the
steady-state time per iteration (each run's median after ``--warmup`` iterations, timed
as ``mm-lightning benchmark`` times them: :mod:`mm_lightning.tools.benchmark`) and of the time
from building the runner (or Trainer) to the end of the first iteration.

    python benchmarks/overhead.py [--iters 400] [--repeats 5] [--hooks none|default] [--json OUT]

``--hooks none`` removes mmengine's default hooks (the engines' floor); ``--hooks default``
keeps them in both mmengine and mm_lightning (plain Lightning has no equivalent). ``--json``
also writes every run's figures (``time_per_iter_ms``, ``startup_s``), in repeat order, under
``runs.mmengine``, ``runs.mm_lightning`` and ``runs.lightning``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import DATASETS, MODELS  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from mm_lightning import load_config  # noqa: E402
from mm_lightning.tools.benchmark import steady_state  # noqa: E402
from mm_lightning.tools.engines import Iteration, run_engine  # noqa: E402

FEATURES, CLASSES, BATCH = 32, 10, 16


@DATASETS.register_module(force=True)
class RandomVectors(Dataset):
    def __init__(self, size: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, FEATURES, generator=gen)
        self.y = torch.randint(0, CLASSES, (size,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return dict(inputs=self.x[i], label=self.y[i])


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))


@MODELS.register_module(force=True)
class BenchMLP(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, inputs: torch.Tensor, label: torch.Tensor = None, mode: str = 'tensor') -> Any:
        logits = self.net(inputs)
        return dict(loss=nn.functional.cross_entropy(logits, label)) if mode == 'loss' else logits


class IterationCallback(L.Callback):
    """Records plain Lightning's iterations as the engines' recording hook does."""

    def __init__(self) -> None:
        self.iterations: List[Iteration] = []
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.iterations.append(Iteration(len(self.iterations) + 1, 0, {}, {}, self._started, time.perf_counter(),
                                         len(batch['label'])))


def timings(iterations: List[Iteration], started: float, warmup: int) -> Dict[str, float]:
    return dict(startup=iterations[0].ended - started, per_iter=steady_state(iterations, warmup)['time_per_iter_ms'])


def config(iters: int, hooks: str, work_dir: str, name: str) -> dict:
    default_hooks = {key: None for key in ('runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler',
                                           'checkpoint')} if hooks == 'none' else dict(
        logger=dict(type='LoggerHook', interval=50), checkpoint=dict(type='CheckpointHook', interval=10**6))
    return dict(
        model=dict(type='BenchMLP'), work_dir=work_dir, experiment_name=name,
        train_dataloader=dict(dataset=dict(type='RandomVectors', size=iters * BATCH),
                              sampler=dict(type='DefaultSampler', shuffle=True), batch_size=BATCH,
                              num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=1), default_hooks=default_hooks,
        randomness=dict(seed=0), log_level='WARNING')


def run_runner(engine: str, iters: int, warmup: int, hooks: str, name: str) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as work_dir:
        run = run_engine(engine, load_config(config(iters, hooks, work_dir, name)), iters, work_dir)
    return timings(run.iterations, run.started, warmup)


class PlainModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch['inputs']), batch['label'])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def run_plain(iters: int, warmup: int, hooks: str, name: str) -> Dict[str, float]:
    recorder = IterationCallback()
    start = time.perf_counter()
    torch.manual_seed(0)
    loader = DataLoader(RandomVectors(iters * BATCH), batch_size=BATCH, shuffle=True, collate_fn=default_collate)
    trainer = L.Trainer(max_epochs=1, accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[recorder])
    trainer.fit(PlainModule(), loader)
    return timings(recorder.iterations, start, warmup)


ENGINES: Dict[str, Callable[..., Dict[str, float]]] = {
    'mmengine Runner': lambda *a: run_runner('mmengine', *a),
    'mm_lightning': lambda *a: run_runner('mm_lightning', *a),
    'plain Lightning': run_plain,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=400)
    parser.add_argument('--warmup', type=int, default=50)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--hooks', choices=('none', 'default'), default='none')
    parser.add_argument('--json', metavar='OUT', help="also write every run's figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings('ignore')
    for name in ('lightning.pytorch', 'lightning.fabric', 'mmengine'):
        logging.getLogger(name).setLevel(logging.ERROR)

    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in ENGINES}
    for repeat in range(args.repeats):
        for engine, fn in ENGINES.items():  # alternate engines within each repeat
            results[engine].append(fn(args.iters, args.warmup, args.hooks, f'bench{repeat}_{len(results[engine])}_'
                                      f'{engine.split()[0]}_{os.getpid()}'))
    med = {engine: {key: statistics.median(r[key] for r in runs) for key in ('startup', 'per_iter')}
           for engine, runs in results.items()}
    lightning, mmengine = med['plain Lightning']['per_iter'], med['mmengine Runner']['per_iter']
    print(f'\nhooks={args.hooks}, {args.iters} iterations ({args.warmup} warm-up), '
          f'median of {args.repeats} alternating runs, 1 CPU thread, torch {torch.__version__}\n')
    print('| engine | time / iteration | vs plain Lightning | vs mmengine Runner | startup to 1st iteration |')
    print('|---|---|---|---|---|')
    for engine, m in med.items():
        print(f"| {engine} | {m['per_iter']:.3f} ms | {m['per_iter'] / lightning:.2f}x | "
              f"{m['per_iter'] / mmengine:.2f}x | {1000 * m['startup']:.0f} ms |")
    if args.json:
        keys = {'mmengine Runner': 'mmengine', 'mm_lightning': 'mm_lightning', 'plain Lightning': 'lightning'}
        runs = {keys[engine]: [dict(time_per_iter_ms=r['per_iter'], startup_s=r['startup']) for r in engine_runs]
                for engine, engine_runs in results.items()}
        with open(args.json, 'w') as f:
            json.dump(dict(script='overhead', repeats=args.repeats, iters=args.iters, warmup=args.warmup,
                           hooks=args.hooks, torch=torch.__version__, runs=runs), f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
