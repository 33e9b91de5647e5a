"""Validation with a per-sample-result metric: mm_lightning against mmengine's Runner and plain Lightning.

Detection and segmentation metrics keep one small Python object per sample in
``process`` and reduce them in ``compute_metrics``; with many samples the evaluation
machinery (how results are kept and gathered), not the model, sets the cost of
``val()``. The config is the same for every engine: ``--samples`` tiny items (a 10-float
vector and an int label; no images), batch size ``--batch-size``, a one-layer model whose
``val_step`` returns one data sample per item (its ``pred`` a row of the batch's scores: a
view, as models' data samples commonly hold), and a metric that appends
``dict(pred=<10-float tensor>, gt=<int>)`` per sample and computes an accuracy. There is
no training (``val_dataloader``, ``val_cfg``, ``val_evaluator`` only; default hooks).

Engines: mmengine's ``Runner.from_cfg(cfg).val()``, mm_lightning's
``FlexibleRunner.from_cfg(cfg).val()``, and plain Lightning (a minimal LightningModule whose
``validation_step`` runs the same model's ``val_step`` and feeds the same metric, evaluated
at the epoch's end, under ``Trainer.validate``). Each run is a fresh Python process of its
own (one CPU thread, CUDA hidden), so its peak RSS is its own; engines alternate,
``--repeats`` times. mm_lightning's ratios are the medians of its ratio to the other engine
within each repeat (runs back to back), which cancels most of a shared machine's drift. The
table reports medians over the repeats of the time of ``val()``
(from the call to its return; also as the process's CPU time, which other work on a shared
machine disturbs less than wall time), of the time to build the runner (or Trainer and module),
and of the process's peak RSS (``ru_maxrss``; it includes the imported libraries: mmengine's
Runner and mm_lightning import more than plain Lightning does, so the table also gives the
peak's growth during ``val()``, from the peak reached before it), with
mm_lightning's ratios to mmengine's Runner and to plain Lightning. Every engine must
return the same metrics, else the exit status is 1.

    python benchmarks/validation.py [--samples 100000] [--repeats 3] [--batch-size 100] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

ENGINE_NAMES = {'mmengine': 'mmengine Runner', 'mm_lightning': 'mm_lightning', 'lightning': 'plain Lightning'}


# -- the parent: runs each engine in a process of its own (needs nothing but the standard library) ----
def measure_in_child(engine: str, samples: int, batch_size: int) -> Dict[str, Any]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'figures.json')
        command = [sys.executable, os.path.abspath(__file__), '--child', engine, '--samples', str(samples),
                   '--batch-size', str(batch_size), '--out', out]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not os.path.isfile(out):
            sys.exit(f'the {engine} run failed (exit {result.returncode}):\n'
                     + (result.stdout + result.stderr)[-3000:])
        with open(out) as f:
            return json.load(f)


# -- the report -------------------------------------------------------------------------------------
FIGURES = ('build_s', 'val_s', 'val_cpu_s', 'peak_rss_mb', 'rss_before_val_mb', 'val_rss_growth_mb')


def report(samples: int, batch_size: int, repeats: int, runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    medians = {engine: {key: statistics.median(run[key] for run in engine_runs) for key in FIGURES}
               for engine, engine_runs in runs.items()}
    # Each repeat runs the engines back to back: the ratio within a repeat cancels the machine's slow drifts
    # (on a shared machine the same run's time varies by 2x over minutes); the table gives their median.
    ratios = {reference: {key: statistics.median(ours[key] / theirs[key] for ours, theirs in
                                                 zip(runs['mm_lightning'], runs[reference]))
                          for key in ('val_s', 'val_cpu_s', 'peak_rss_mb')}
              for reference in ('mmengine', 'lightning')}
    metrics = {engine: [run['metrics'] for run in engine_runs] for engine, engine_runs in runs.items()}
    reference = metrics['mmengine'][0]
    agree = all(_same(m, reference) for engine_metrics in metrics.values() for m in engine_metrics)
    return dict(samples=samples, batch_size=batch_size, repeats=repeats, medians=medians, ratio=ratios,
                metrics=metrics, metrics_agree=agree, runs=runs,
                environment=dict(cpus=os.cpu_count(), python=platform.python_version(),
                                 **runs['mmengine'][0]['versions']))


def _same(a: Dict[str, float], b: Dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(b[k])) for k in a)


def table(rep: Dict[str, Any]) -> str:
    env, med, ratio = rep['environment'], rep['medians'], rep['ratio']
    lines = [f"`val()` over {rep['samples']:,} samples (batch {rep['batch_size']}, a metric keeping one dict per "
             f"sample), median of {rep['repeats']} alternating runs, each in a fresh process; 1 CPU thread, "
             f"{env['cpus']} CPUs, torch {env['torch']}, lightning {env['lightning']}, mmengine {env['mmengine']}",
             '',
             '| engine | `val()` time | vs mmengine Runner | vs plain Lightning | `val()` CPU time '
             '| vs mmengine Runner | vs plain Lightning | peak RSS | vs mmengine Runner | vs plain Lightning '
             '| peak RSS growth in `val()` | build runner |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for engine, name in ENGINE_NAMES.items():
        m = med[engine]

        def vs(key: str, reference: str) -> str:
            if engine == reference:
                return '1.00x'
            if engine == 'mm_lightning':  # the median of the per-repeat ratios
                return f"{ratio[reference][key]:.2f}x"
            return f"{m[key] / med[reference][key]:.2f}x"
        lines.append(f"| {name} | {m['val_s']:.2f} s | {vs('val_s', 'mmengine')} | {vs('val_s', 'lightning')} | "
                     f"{m['val_cpu_s']:.2f} s | {vs('val_cpu_s', 'mmengine')} | {vs('val_cpu_s', 'lightning')} | "
                     f"{m['peak_rss_mb']:.0f} MB | {vs('peak_rss_mb', 'mmengine')} | "
                     f"{vs('peak_rss_mb', 'lightning')} | "
                     f"{m['val_rss_growth_mb']:.0f} MB | {m['build_s']:.2f} s |")
    lines.append('')
    lines.append(f"mm_lightning / mmengine Runner: {ratio['mmengine']['val_s']:.2f}x time "
                 f"({ratio['mmengine']['val_cpu_s']:.2f}x CPU time), {ratio['mmengine']['peak_rss_mb']:.2f}x peak "
                 f"RSS; mm_lightning / plain Lightning: {ratio['lightning']['val_s']:.2f}x time "
                 f"({ratio['lightning']['val_cpu_s']:.2f}x CPU time), "
                 f"{ratio['lightning']['peak_rss_mb']:.2f}x peak RSS")
    if rep['metrics_agree']:
        lines.append(f"metrics (all engines, all runs agree): {rep['metrics']['mmengine'][0]}")
    else:
        lines.append('METRICS DISAGREE:')
        lines += [f'  {ENGINE_NAMES[engine]}: {m}' for engine, m in rep['metrics'].items()]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--samples', type=int, default=100000)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--json', metavar='OUT', help='also write the report (medians, ratios, every run) here')
    parser.add_argument('--child', choices=sorted(ENGINE_NAMES), help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.samples, args.batch_size, args.out)
        return 0

    runs: Dict[str, List[Dict[str, Any]]] = {engine: [] for engine in ENGINE_NAMES}
    for _ in range(args.repeats):
        for engine in ENGINE_NAMES:  # alternate engines within each repeat
            runs[engine].append(measure_in_child(engine, args.samples, args.batch_size))
    rep = report(args.samples, args.batch_size, args.repeats, runs)
    print('\n' + table(rep))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rep, f, indent=2)
    return 0 if rep['metrics_agree'] else 1


if __name__ == '__main__' and '--child' not in sys.argv:
    sys.exit(main())  # the parent imports none of what follows

# -- the measuring process: the components and the engines ------------------------------------------
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402
import mmengine  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import DATASETS, METRICS, MODELS  # noqa: E402
from mmengine.structures import BaseDataElement  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

FEATURES = CLASSES = 10

@DATASETS.register_module(force=True)
class TinyItems(Dataset):
    """``size`` items: a 10-float vector and an int label (seeded, the same in every process)."""

    def __init__(self, size: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, FEATURES, generator=gen)
        self.y = torch.randint(0, CLASSES, (size,), generator=gen).tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return dict(inputs=self.x[i], label=self.y[i])


@MODELS.register_module(force=True)
class TinyScorer(BaseModel):
    """One linear layer (weights from a private seed); ``predict`` gives one data sample per item."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(FEATURES, CLASSES)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(CLASSES, FEATURES, generator=gen))
            self.linear.bias.zero_()

    def forward(self, inputs: torch.Tensor, label: Any = None, mode: str = 'tensor') -> Any:
        scores = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(scores, torch.as_tensor(label)))
        if mode == 'predict':
            return [BaseDataElement(pred=score, gt=int(gt)) for score, gt in zip(scores, label)]
        return scores


@METRICS.register_module(force=True)
class PerSampleAccuracy(BaseMetric):
    """Keeps one small dict per sample, as detection/segmentation metrics do; an accuracy of them."""

    default_prefix = 'bench'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(dict(pred=sample['pred'], gt=int(sample['gt'])))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        correct = sum(int(r['pred'].argmax()) == r['gt'] for r in results)
        return dict(accuracy=100.0 * correct / len(results), samples=len(results))


def config(samples: int, batch_size: int, work_dir: str) -> dict:
    return dict(
        model=dict(type='TinyScorer'), work_dir=work_dir, experiment_name=f'valbench_{os.getpid()}',
        val_dataloader=dict(dataset=dict(type='TinyItems', size=samples), batch_size=batch_size, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            collate_fn=dict(type='default_collate')),
        val_cfg=dict(), val_evaluator=dict(type='PerSampleAccuracy'),
        randomness=dict(seed=0), log_level='WARNING')


# -- the engines (each runs in a process of its own) ----------------------------------------------
def run_runner(runner_cls: Any, samples: int, batch_size: int, work_dir: str) -> Dict[str, Any]:
    start = time.perf_counter()
    runner = runner_cls.from_cfg(config(samples, batch_size, work_dir))
    built = time.perf_counter()
    rss_before = peak_rss_mb()
    cpu = time.process_time()
    metrics = runner.val()
    return dict(build_s=built - start, val_s=time.perf_counter() - built, val_cpu_s=time.process_time() - cpu,
                rss_before_val_mb=rss_before, metrics=metrics)


def run_mmengine(samples: int, batch_size: int, work_dir: str) -> Dict[str, Any]:
    from mmengine.runner import Runner
    return run_runner(Runner, samples, batch_size, work_dir)


def run_mm_lightning(samples: int, batch_size: int, work_dir: str) -> Dict[str, Any]:
    from mm_lightning import FlexibleRunner
    return run_runner(FlexibleRunner, samples, batch_size, work_dir)


class PlainModule(L.LightningModule):
    """The same model's ``val_step`` feeding the same metric; evaluated at the epoch's end."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.model = TinyScorer()
        self.metric = PerSampleAccuracy()
        self.size = size
        self.metrics: Dict[str, Any] = {}

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        outputs = self.model.val_step(batch)
        # as mmengine's Evaluator.process: data samples become dicts
        self.metric.process(batch, [s.to_dict() if isinstance(s, BaseDataElement) else s for s in outputs])

    def on_validation_epoch_end(self) -> None:
        self.metrics = self.metric.evaluate(self.size)  # compute_metrics over the results, prefixed


def run_lightning(samples: int, batch_size: int, work_dir: str) -> Dict[str, Any]:
    start = time.perf_counter()
    dataset = TinyItems(samples)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=default_collate)
    module = PlainModule(len(dataset))
    trainer = L.Trainer(accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=work_dir)
    built = time.perf_counter()
    rss_before = peak_rss_mb()
    cpu = time.process_time()
    trainer.validate(module, loader, verbose=False)
    return dict(build_s=built - start, val_s=time.perf_counter() - built, val_cpu_s=time.process_time() - cpu,
                rss_before_val_mb=rss_before, metrics=module.metrics)


ENGINES: Dict[str, Callable[[int, int, str], Dict[str, Any]]] = {
    'mmengine': run_mmengine, 'mm_lightning': run_mm_lightning, 'lightning': run_lightning}


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if platform.system() == 'Darwin' else 2**10)


def child(engine: str, samples: int, batch_size: int, out: str) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings('ignore')
    for name in ('lightning.pytorch', 'lightning.fabric', 'mmengine'):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as work_dir:
        figures = ENGINES[engine](samples, batch_size, work_dir)
    figures['peak_rss_mb'] = peak_rss_mb()
    figures['val_rss_growth_mb'] = figures['peak_rss_mb'] - figures['rss_before_val_mb']
    figures['metrics'] = {key: float(value) for key, value in figures['metrics'].items()}
    figures['versions'] = dict(torch=torch.__version__, lightning=L.__version__, mmengine=mmengine.__version__)
    with open(out, 'w') as f:
        json.dump(figures, f)


if __name__ == '__main__':
    sys.exit(main())
