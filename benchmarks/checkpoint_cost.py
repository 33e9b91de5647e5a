"""Checkpoint save and load cost: mm_lightning against mmengine's Runner and plain Lightning.

A model of about ``--params`` float32 parameters (four square ``Linear`` layers, ReLUs between;
the default, 25M, is ~100 MB of weights) is trained 3 iterations (batch 4 of random rows) with
SGD and momentum, so the optimizer's state is as large as the weights. Then, per engine:

* ``save_s``: the time to write one resumable checkpoint of that state the way a user's run
  does: ``CheckpointHook(interval=3, by_epoch=False)`` in the training config, timing the
  runner's save that the hook calls after iteration 3 (mmengine: ``Runner.save_checkpoint``,
  which serialises to memory, then writes; mm_lightning: ``FlexibleRunner.save_checkpoint``,
  i.e. ``mm_lightning.state.checkpoint.save``, crash-safe: a temporary file, fsynced,
  renamed); ``last_checkpoint`` is not timed. Plain Lightning: ``trainer.save_checkpoint(path)``
  after ``fit``;
* ``size_mb``: the bytes of the file written, / 1e6;
* ``load_s``: in a fresh runner (Trainer and module) in the same process, a real resumed
  ``train()`` (``resume=True, load_from=<the file>``, one more iteration), timing its resume step
  only: mmengine's ``Runner.load_or_resume`` (read the file, load weights, optimizer, message hub,
  progress), mm_lightning's ``mm_lightning.state.checkpoint.load_or_resume`` (the same, plus data
  position and random state; called when the Trainer starts fitting), and under plain
  Lightning's ``trainer.fit(module, loader, ckpt_path=<the file>)`` its checkpoint connector's
  ``_restore_modules_and_callbacks``, ``restore_training_state`` and ``resume_end`` together.
  The resumed weights must equal the saved ones (per-tensor float64 sums) and the run must end
  at iteration 4, else the run fails;
* ``peak_rss_mb``: the process's peak RSS (``ru_maxrss``; imports included).

Each run is a fresh Python process (one CPU thread, CUDA hidden); engines alternate,
``--repeats`` times. The table gives each figure's median [min..max] over the repeats and
mm_lightning's ratios as the medians of its per-repeat ratios (runs back to back, which cancels
most of a shared machine's drift). ``--json OUT`` writes every run, in repeat order.

    python benchmarks/checkpoint_cost.py [--repeats 5] [--params 25000000] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mm_lightning.tools.benchmark_statistics import pair_ratios, summarize  # noqa: E402  (standard library only)

ENGINE_NAMES = {'mmengine': 'mmengine Runner', 'mm_lightning': 'mm_lightning', 'lightning': 'plain Lightning'}
FIGURES = ('save_s', 'size_mb', 'load_s', 'peak_rss_mb')
LAYERS, ITERS, BATCH, ROWS = 4, 3, 4, 64


# -- the parent: runs each engine in a process of its own (imports nothing heavy) -------------------
def measure_in_child(engine: str, params: int) -> Dict[str, Any]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'figures.json')
        command = [sys.executable, os.path.abspath(__file__), '--child', engine, '--params', str(params), '--out', out]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not os.path.isfile(out):
            sys.exit(f'the {engine} run failed (exit {result.returncode}):\n' + (result.stdout + result.stderr)[-3000:])
        with open(out) as f:
            return json.load(f)


def table(rep: Dict[str, Any]) -> str:
    env, runs = rep['environment'], rep['runs']
    units = dict(save_s=('{:.2f}', ' s'), size_mb=('{:.1f}', ' MB'), load_s=('{:.2f}', ' s'),
                 peak_rss_mb=('{:.0f}', ' MB'))

    def cell(engine: str, key: str) -> str:
        s, (fmt, unit) = summarize(run[key] for run in runs[engine]), units[key]
        return f"{fmt.format(s.median)}{unit} [{fmt.format(s.minimum)}..{fmt.format(s.maximum)}]"
    lines = [f"Checkpoint of {rep['params']:,} float32 parameters + SGD momentum after {ITERS} iterations, "
             f"median [min..max] of {rep['repeats']} alternating runs, each in a fresh process; 1 CPU thread, "
             f"{env['cpus']} CPUs, torch {env['torch']}, lightning {env['lightning']}, mmengine {env['mmengine']}",
             '', '| engine | save | size | load (resume step) | peak RSS |', '|---|---|---|---|---|']
    lines += [f"| {name} | " + ' | '.join(cell(engine, key) for key in FIGURES) + ' |'
              for engine, name in ENGINE_NAMES.items()]
    lines.append('')
    for reference in ('mmengine', 'lightning'):
        ratios = {key: summarize(pair_ratios([r[key] for r in runs['mm_lightning']], [r[key] for r in runs[reference]]))
                  for key in FIGURES}
        lines.append(f'mm_lightning / {ENGINE_NAMES[reference]} (median of per-repeat ratios): ' + ', '.join(
            f"{key.rsplit('_', 1)[0].replace('_', ' ')} {s.median:.2f}x" for key, s in ratios.items() if s))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--params', type=int, default=25_000_000, help='about this many model parameters')
    parser.add_argument('--json', metavar='OUT', help='also write every run here')
    parser.add_argument('--child', choices=sorted(ENGINE_NAMES), help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.params, args.out)
        return 0
    runs: Dict[str, List[Dict[str, Any]]] = {engine: [] for engine in ENGINE_NAMES}
    extra: List[Dict[str, Any]] = []
    for _ in range(args.repeats):
        for engine in ENGINE_NAMES:  # alternate engines within each repeat
            figures = measure_in_child(engine, args.params)
            extra.append(dict(params=figures.pop('params'), **figures.pop('versions')))
            runs[engine].append({key: figures[key] for key in FIGURES})
    if len({e['params'] for e in extra}) != 1:
        sys.exit(f'the engines trained models of different sizes: {sorted({e["params"] for e in extra})}')
    environment = dict(cpus=os.cpu_count(), python=platform.python_version(),
                       **{k: v for k, v in extra[0].items() if k != 'params'})
    rep = dict(script='checkpoint_cost', repeats=args.repeats, params=extra[0]['params'], environment=environment,
               runs=runs)
    print('\n' + table(rep))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rep, f, indent=2)
    return 0


if __name__ == '__main__' and '--child' not in sys.argv:
    sys.exit(main())  # the parent imports none of what follows

# -- the measuring process --------------------------------------------------------------------------
import functools  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import lightning as L  # noqa: E402
import mmengine  # noqa: E402
import torch  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import DATASETS, MODELS  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


@DATASETS.register_module(force=True)
class RandomRows(Dataset):
    def __init__(self, width: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(ROWS, width, generator=gen)
        self.y = torch.randint(0, width, (ROWS,), generator=gen)

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return dict(inputs=self.x[i], label=self.y[i])


def mlp(width: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(LAYERS):
        layers += [nn.Linear(width, width)] + ([nn.ReLU()] if i < LAYERS - 1 else [])
    return nn.Sequential(*layers)


@MODELS.register_module(force=True)
class CheckpointMLP(BaseModel):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = mlp(width)

    def forward(self, inputs: torch.Tensor, label: Any = None, mode: str = 'tensor') -> Any:
        logits = self.net(inputs)
        return dict(loss=nn.functional.cross_entropy(logits, label)) if mode == 'loss' else logits


def fingerprint(model: nn.Module) -> List[float]:
    return [float(p.detach().sum(dtype=torch.float64)) for p in model.parameters()]


class TimedSteps:
    """Wraps the functions of one resume step: their total time, and the weights after the last."""

    def __init__(self, model: Callable[[], nn.Module]) -> None:
        self.model, self.seconds, self.calls, self.weights = model, 0.0, 0, None

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
                self.weights = fingerprint(self.model())
        return timed


def config(width: int, iters: int, work_dir: str, resume_from: Optional[str] = None) -> dict:
    hooks: Dict[str, Any] = {key: None for key in ('runtime_info', 'timer', 'sampler_seed', 'logger',
                                                   'param_scheduler', 'checkpoint')}
    if resume_from is None:  # the training run saves once, after its last iteration
        hooks['checkpoint'] = dict(type='CheckpointHook', interval=iters, by_epoch=False)
    cfg = dict(model=dict(type='CheckpointMLP', width=width), work_dir=work_dir,
               experiment_name=f'ckpt_{os.path.basename(work_dir)}_{os.getpid()}',
               train_dataloader=dict(dataset=dict(type='RandomRows', width=width), batch_size=BATCH, num_workers=0,
                                     sampler=dict(type='DefaultSampler', shuffle=False),
                                     collate_fn=dict(type='default_collate')),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
               train_cfg=dict(by_epoch=False, max_iters=iters), default_hooks=hooks,
               randomness=dict(seed=0), log_level='WARNING')
    return dict(cfg, resume=True, load_from=resume_from) if resume_from else cfg


def timed(owner: Any, name: str, steps: TimedSteps) -> Callable[[], None]:
    """Replaces ``owner.<name>`` by its timed version; returns what puts the original back."""
    original = getattr(owner, name)
    setattr(owner, name, steps.wrap(original))
    return lambda: setattr(owner, name, original)


def run_runner(engine: str, width: int, work: str) -> Dict[str, Any]:
    if engine == 'mm_lightning':  # mmengine's process imports none of mm_lightning's runtime
        import mm_lightning.state.checkpoint as ours
        from mm_lightning import FlexibleRunner as runner_cls
    else:
        from mmengine.runner import Runner as runner_cls  # type: ignore[assignment]
    runner = runner_cls.from_cfg(config(width, ITERS, os.path.join(work, 'train')))
    save = TimedSteps(functools.partial(getattr, runner, 'model'))
    # mm_lightning: what FlexibleRunner.save_checkpoint (which CheckpointHook calls) does
    restore = timed(ours, 'save', save) if engine == 'mm_lightning' else timed(runner, 'save_checkpoint', save)
    runner.train()
    assert save.calls == 1, f'{engine}: {save.calls} checkpoints written, expected 1'
    path, save_s, saved = os.path.join(work, 'train', f'iter_{ITERS}.pth'), save.seconds, save.weights
    restore()
    del runner, save, restore  # the trained run's model and optimizer
    resumed = runner_cls.from_cfg(config(width, ITERS + 1, os.path.join(work, 'resume'), resume_from=path))
    steps = TimedSteps(lambda: resumed.model)  # mm_lightning: called by the module when the Trainer starts fitting
    timed(ours if engine == 'mm_lightning' else resumed, 'load_or_resume', steps)
    resumed.train()
    return dict(save_s=save_s, path=path, load_s=steps.seconds, saved=saved, resumed=steps.weights,
                final=fingerprint(resumed.model), end_iter=resumed.iter,
                params=sum(p.numel() for p in resumed.model.parameters()))


class PlainModule(L.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = mlp(width)

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch['inputs']), batch['label'])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def run_lightning(width: int, work: str) -> Dict[str, Any]:
    def trainer(steps: int) -> L.Trainer:
        return L.Trainer(max_steps=steps, accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=work)
    torch.manual_seed(0)
    loader = DataLoader(RandomRows(width), batch_size=BATCH, shuffle=False, collate_fn=default_collate)
    module, first = PlainModule(width), trainer(ITERS)
    first.fit(module, loader)
    saved, path = fingerprint(module), os.path.join(work, 'ckpt.ckpt')
    start = time.perf_counter()
    first.save_checkpoint(path)
    save_s = time.perf_counter() - start
    del module, first
    resumed_module, resumed = PlainModule(width), trainer(ITERS + 1)
    steps, connector = TimedSteps(lambda: resumed_module), resumed._checkpoint_connector
    for name in ('_restore_modules_and_callbacks', 'restore_training_state', 'resume_end'):
        timed(connector, name, steps)
    resumed.fit(resumed_module, loader, ckpt_path=path)
    return dict(save_s=save_s, path=path, load_s=steps.seconds, saved=saved, resumed=steps.weights,
                final=fingerprint(resumed_module), end_iter=resumed.global_step,
                params=sum(p.numel() for p in resumed_module.parameters()))


def size_mb(path: str) -> float:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6
    return os.path.getsize(path) / 1e6


def child(engine: str, params: int, out: str) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings('ignore')
    for name in ('lightning.pytorch', 'lightning.fabric', 'mmengine'):
        logging.getLogger(name).setLevel(logging.ERROR)
    width = max(1, round((-1 + math.sqrt(1 + 4 * params / LAYERS)) / 2))  # LAYERS * (width**2 + width) ~ params
    with tempfile.TemporaryDirectory() as work:
        run = run_lightning(width, work) if engine == 'lightning' else run_runner(engine, width, work)
        figures = dict(save_s=run['save_s'], size_mb=size_mb(run['path']), load_s=run['load_s'])
    if run['resumed'] != run['saved'] or run['final'] == run['saved'] or run['end_iter'] != ITERS + 1:
        sys.exit(f'{engine}: the resumed run does not continue the saved one for one iteration (ended at iteration '
                 f'{run["end_iter"]}, resumed weights {"equal" if run["resumed"] == run["saved"] else "differ"}, '
                 f'then {"unchanged" if run["final"] == run["saved"] else "trained"})')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    figures['peak_rss_mb'] = peak / (2**20 if platform.system() == 'Darwin' else 2**10)
    figures['params'] = run['params']
    figures['versions'] = dict(torch=torch.__version__, lightning=L.__version__, mmengine=mmengine.__version__)
    with open(out, 'w') as f:
        json.dump(figures, f)


if __name__ == '__main__':
    sys.exit(main())
