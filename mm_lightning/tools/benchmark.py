"""Speed, memory and start-up of one config, for CI: ``mm-lightning benchmark``.

Each engine (mm_lightning, mmengine's Runner, or both) trains the config for ``iters``
iterations ``repeats`` times, each run in a fresh Python process of its own
(``python -m mm_lightning.tools.benchmark``), so that its peak memory and start-up are its own
and no global state passes between runs; the iterations end as described in
:mod:`mm_lightning.tools.engines`. The runs alternate between engines (A B A B ...) and each gets
``threads`` CPU threads (``OMP_NUM_THREADS`` and ``torch.set_num_threads``). Figures of one run:

``time_per_iter_ms``      median time between the ends of consecutive iterations, after
                          ``warmup`` iterations (the first iteration never counts)
``cpu_per_iter_ms``       the same of the process's CPU time (all its threads, not its loader
                          workers): what other work on a shared machine disturbs least
``samples_per_s``         the median batch's samples over the median iteration time (so
                          ``samples_per_s * time_per_iter_ms / 1000`` is the median batch size)
``data_loading_share``    share of that time spent between iterations: from one ``after_train_iter``
                          to the next ``before_train_iter`` (loading the batch, moving it to the
                          device, and the engine's own work between iterations)
``peak_memory_mb``        ``torch.cuda.max_memory_allocated`` on GPU, else the process's peak RSS
                          (``memory_kind``: ``cuda_max_allocated`` or ``rss``)
``time_to_first_iter_s``  from building the runner to the end of the first iteration
``final_loss``            the ``loss`` logged by the last iteration
``iterations``            iterations that ran (fewer than ``iters`` when the schedule is shorter)

The report (schema ``mm_lightning.benchmark/3``) gives each figure of ``engines.<name>`` over the
runs as ``{median, low, high, coverage, min, max, q1, q3, spread, unreliable, runs}``: ``low`` and
``high`` the median's 90% interval, ``spread`` its width (see
:mod:`mm_lightning.tools.benchmark_statistics`); with both engines, ``ratio`` summarizes the same
way mm_lightning's figure over mmengine's within each pair of runs, for the timing and memory
figures, and ``unreliable`` lists the figures whose interval is wider than ``tolerance`` or whose
runs are too few for one. The ``schema`` changes only with this layout (schema 2 gave the
quartile range as ``spread``; its reports still serve as baselines). :func:`baseline_judgements`
judges a report against a baseline report, figure by figure, with the median's interval.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mm_lightning.config.loading import CfgOptions, ConfigError, load_config
from mm_lightning.tools.benchmark_statistics import Judgement, Summary, interleaved, judge, pair_ratios, summarize
from mm_lightning.tools.engines import ENGINES, EngineRun, Iteration, fixed_seed, run_engine

__all__ = ['SCHEMA', 'DEFAULT_REPEATS', 'DEFAULT_TOLERANCE', 'Figure', 'FIGURES', 'RATIOS', 'BenchmarkError',
           'steady_state', 'peak_memory', 'run_figures', 'measure', 'default_threads', 'benchmark', 'benchmark_report',
           'environment', 'read_baseline', 'baseline_judgements', 'format_benchmark']

SCHEMA = 'mm_lightning.benchmark/3'
#: Earlier schemas whose reports still serve as baselines: the same figures and runs.
BASELINE_SCHEMAS = (SCHEMA, 'mm_lightning.benchmark/2')
#: Runs per engine: the fewest with a 90% interval of the median (their minimum and maximum).
DEFAULT_REPEATS = 5
#: The change a baseline check detects, and the interval width beyond which a figure is unreliable.
DEFAULT_TOLERANCE = 0.2


@dataclass(frozen=True)
class Figure:
    """How a figure compares with its baseline: which direction is better, relative or absolute."""

    better: str               # 'lower' or 'higher'
    relative: bool = True     # tolerance as a fraction of the baseline, else in the figure's own units


#: The figures of each engine and how a baseline check reads them.
FIGURES: Dict[str, Figure] = {
    'time_per_iter_ms': Figure('lower'),
    'cpu_per_iter_ms': Figure('lower'),
    'samples_per_s': Figure('higher'),
    'data_loading_share': Figure('lower', relative=False),
    'peak_memory_mb': Figure('lower'),
    'time_to_first_iter_s': Figure('lower'),
    'final_loss': Figure('lower'),
}
#: Figures reported as mm_lightning over mmengine when both engines run.
RATIOS = ('time_per_iter_ms', 'cpu_per_iter_ms', 'peak_memory_mb', 'time_to_first_iter_s')


class BenchmarkError(RuntimeError):
    """An engine's run failed; the message holds the end of its output."""


# -- figures of one run ---------------------------------------------------------------------------
def steady_state(iterations: Sequence[Iteration], warmup: int) -> Dict[str, Optional[float]]:
    """Median time (and CPU time) per iteration, throughput and data-loading share after ``warmup``
    iterations."""
    steady = [(previous, current) for previous, current in zip(iterations, iterations[1:])
              if current.number > warmup]
    if not steady:
        return dict(time_per_iter_ms=None, cpu_per_iter_ms=None, samples_per_s=None, data_loading_share=None)
    durations = [current.ended - previous.ended for previous, current in steady]
    cpu = [current.cpu_ended - previous.cpu_ended for previous, current in steady
           if current.cpu_ended is not None and previous.cpu_ended is not None]
    waiting = [current.started - previous.ended for previous, current in steady]
    total, median = sum(durations), statistics.median(durations)
    # Both timing figures come from the median iteration: a validation or a checkpoint between two
    # iterations lengthens one of them, which a sum over all would spread into the throughput.
    samples = statistics.median(current.samples for _, current in steady)
    return dict(time_per_iter_ms=1000 * median,
                cpu_per_iter_ms=1000 * statistics.median(cpu) if len(cpu) == len(steady) else None,
                samples_per_s=samples / median if median > 0 else None,
                data_loading_share=sum(waiting) / total if total > 0 else None)


def peak_memory() -> Dict[str, Any]:
    """This process's peak memory so far, in MB, and which kind it is."""
    if torch.cuda.is_available():
        return dict(peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20, memory_kind='cuda_max_allocated')
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return dict(peak_memory_mb=peak / (2**20 if platform.system() == 'Darwin' else 2**10), memory_kind='rss')


def run_figures(run: EngineRun, warmup: int) -> Dict[str, Any]:
    """All figures of one engine's run in this process (see module doc)."""
    iterations = run.iterations
    return dict(
        **steady_state(iterations, warmup),
        **peak_memory(),
        time_to_first_iter_s=iterations[0].ended - run.started if iterations else None,
        final_loss=iterations[-1].losses.get('loss') if iterations else None,
        iterations=len(iterations),
    )


def measure(engine: str, config: str, *, iters: int, warmup: int, work_dir: str,
            cfg_options: CfgOptions = None) -> Dict[str, Any]:
    """Train ``config`` under ``engine`` here, in this process, and return its figures."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cfg, _ = fixed_seed(load_config(config, cfg_options))
    return run_figures(run_engine(engine, cfg, iters, work_dir), warmup)


# -- repeated runs, one process each ---------------------------------------------------------------
def default_threads(cfg: Mapping[str, Any], environ: Mapping[str, str] = os.environ, cpus: Optional[int] = None,
                    load: Optional[float] = None) -> int:
    """The CPU threads each run gets unless ``--threads`` says: ``OMP_NUM_THREADS`` where the environment sets it,
    else the CPUs this process may use that are free (less the machine's 1-minute load average, rounded) and
    not needed by the training loader's workers, at least 1.

    Pinned because torch's default (a thread per core) on a shared machine makes the runs fight the
    machine's other work: on a busy 2-core machine the spiral example's runs spread 1.6 to 386 ms per
    iteration with 2 threads, 1.4 to 3.5 ms with 1. Free cores, not all cores: a CI job passes ``--threads``.
    """
    if environ.get('OMP_NUM_THREADS', '').isdigit() and int(environ['OMP_NUM_THREADS']) > 0:
        return int(environ['OMP_NUM_THREADS'])
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    loader = cfg.get('train_dataloader') or {}
    workers = loader.get('num_workers', 0) if isinstance(loader, Mapping) else 0
    return max(1, cpus - round(load) - (workers if isinstance(workers, int) else 0))


def benchmark(config: str, *, engines: Sequence[str], iters: int, warmup: int, work_dir: str,
              cfg_options: Sequence[str] = (), repeats: int = DEFAULT_REPEATS, threads: Optional[int] = None,
              tolerance: float = DEFAULT_TOLERANCE) -> Dict[str, Any]:
    """Run each engine ``repeats`` times, interleaved, each run in a fresh process; the report (see module doc)."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ConfigError(f'engine: expected some of {sorted(ENGINES)}, got {unknown}')
    if warmup < 0 or iters - max(warmup, 1) < 1:
        raise ConfigError(f'iters: {iters} iterations leave no steady-state iteration after a warm-up of {warmup} '
                          '(the first iteration never counts); use more --iters or less --warmup')
    if repeats < 1:
        raise ConfigError(f'repeats: expected at least 1 run per engine, got {repeats}')
    if threads is not None and threads < 1:
        raise ConfigError(f'threads: expected at least 1 CPU thread, got {threads}')
    cfg = load_config(config, cfg_options)  # a bad config fails here, not in a child process
    threads = threads or default_threads(cfg)
    runs: Dict[str, List[Dict[str, Any]]] = {engine: [] for engine in engines}
    for _, engine in interleaved(engines, repeats):
        runs[engine].append(_measure_in_child(engine, config, iters, warmup, os.path.join(work_dir, engine),
                                              cfg_options, threads))
    return benchmark_report(runs, config=config, iters=iters, warmup=warmup, threads=threads, tolerance=tolerance,
                            environment=environment())


def benchmark_report(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, config: str, iters: int, warmup: int,
                     threads: int, tolerance: float, environment: Mapping[str, Any]) -> Dict[str, Any]:
    """The report of each engine's runs (in the order they ran, repeat i of each engine a pair; see module doc)."""
    engines = list(runs)
    repeats = min(len(engine_runs) for engine_runs in runs.values())
    figures = {engine: _engine_figures(engine_runs, tolerance) for engine, engine_runs in runs.items()}
    report: Dict[str, Any] = dict(
        schema=SCHEMA, config=config, iters=iters, warmup=warmup, repeats=repeats, threads=threads,
        tolerance=tolerance, order=[engine for _, engine in interleaved(engines, repeats)],
        environment=dict(environment, threads=threads), engines=figures)
    if {'mm_lightning', 'mmengine'} <= set(runs):
        report['ratio'] = {}
        for name in RATIOS:
            ratios = pair_ratios([run.get(name) for run in runs['mm_lightning']],
                                 [run.get(name) for run in runs['mmengine']])
            summary = summarize(ratios)
            report['ratio'][name] = summary.to_json(tolerance) if summary else None
    report['unreliable'] = [f'{engine}.{name}' for engine in engines for name in FIGURES
                            if (figures[engine].get(name) or {}).get('unreliable')]
    report['unreliable'] += [f'ratio.{name}' for name, summary in (report.get('ratio') or {}).items()
                             if (summary or {}).get('unreliable')]
    return report


def _engine_figures(engine_runs: Sequence[Mapping[str, Any]], tolerance: float) -> Dict[str, Any]:
    """Each figure's summary over an engine's runs; the figures every run shares, as they are."""
    figures: Dict[str, Any] = {}
    for name, figure in FIGURES.items():
        summary = summarize(run.get(name) for run in engine_runs)
        figures[name] = summary.to_json(tolerance, figure.relative) if summary else None
    figures['memory_kind'] = engine_runs[0].get('memory_kind') if engine_runs else None
    figures['iterations'] = min((run.get('iterations', 0) for run in engine_runs), default=0)
    figures['threads'] = sorted({run.get('threads') for run in engine_runs if run.get('threads') is not None})
    return figures


def environment() -> Dict[str, Any]:
    import lightning
    import mmengine
    return dict(device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu',
                torch=torch.__version__, lightning=lightning.__version__, mmengine=mmengine.__version__,
                python=platform.python_version(), cpus=os.cpu_count())


def _measure_in_child(engine: str, config: str, iters: int, warmup: int, work_dir: str,
                      cfg_options: Sequence[str], threads: int) -> Dict[str, Any]:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get('PYTHONPATH')])),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'figures.json')
        command = [sys.executable, '-m', 'mm_lightning.tools.benchmark', engine, config, '--iters', str(iters),
                   '--warmup', str(warmup), '--work-dir', work_dir, '--out', out, '--threads', str(threads)]
        if cfg_options:
            command += ['--cfg-options', *cfg_options]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not os.path.isfile(out):
            raise BenchmarkError(f'the {engine} run failed (exit {result.returncode}):\n'
                                 + (result.stdout + result.stderr)[-3000:])
        with open(out) as f:
            return json.load(f)


# -- baseline -------------------------------------------------------------------------------------
def read_baseline(path: str) -> Dict[str, Any]:
    """A report written by ``--json``, checked to be of this schema (before any run is spent on it)."""
    with open(path) as f:
        baseline = json.load(f)
    _check_schema(baseline)
    return baseline


def _check_schema(baseline: Mapping[str, Any]) -> None:
    if baseline.get('schema') not in BASELINE_SCHEMAS:
        hint = ' (its figures are single runs: write a new baseline with --json)' \
            if baseline.get('schema') == 'mm_lightning.benchmark/1' else ''
        raise ConfigError(f"baseline: schema {baseline.get('schema')!r} is not {SCHEMA!r}{hint}")


def baseline_judgements(report: Mapping[str, Any], baseline: Mapping[str, Any],
                        tolerance: float) -> List[Judgement]:
    """Each figure (and ratio) the report and the baseline both have, judged with its spread (see
    :mod:`mm_lightning.tools.benchmark_statistics`); :func:`overall` makes one verdict of them."""
    _check_schema(baseline)
    found = []
    pairs = [(f'{engine}.{name}', figures.get(name), (baseline.get('engines') or {}).get(engine, {}).get(name),
              figure) for engine, figures in report['engines'].items() for name, figure in FIGURES.items()]
    pairs += [(f'ratio.{name}', value, (baseline.get('ratio') or {}).get(name), Figure('lower'))
              for name, value in (report.get('ratio') or {}).items()]
    for name, current, reference, figure in pairs:
        if current is None or reference is None:
            continue
        value, reference_unreliable = _baseline_figure(reference, tolerance, figure.relative)
        found.append(judge(name, _summary(current), value, better=figure.better, tolerance=tolerance,
                           relative=figure.relative, reference_unreliable=reference_unreliable))
    return found


def _summary(figure: Mapping[str, Any]) -> Summary:
    """A report's figure read back from its runs (so a schema-2 report gets its interval too)."""
    summary = summarize(figure['runs'])
    if summary is None:
        raise ConfigError(f"baseline: a figure has no runs: {dict(figure)}")
    return summary


def _baseline_figure(value: Any, tolerance: float, relative: bool) -> Tuple[float, bool]:
    """A baseline figure's median and whether it was unreliable (under this tolerance); a plain number is a
    target set by hand, taken as exact."""
    if isinstance(value, (int, float)):
        return float(value), False
    return float(value['median']), _summary(value).unreliable(tolerance, relative)


# -- text -----------------------------------------------------------------------------------------
def format_benchmark(report: Mapping[str, Any]) -> str:
    """A table: one row per figure, one column per engine (and the ratio): median [low..high], its 90%
    interval, over the runs."""
    engines = list(report['engines'])
    ratio = report.get('ratio') or {}
    env = report['environment']
    unreliable = set(report.get('unreliable', ()))
    header = ['figure', *engines] + (['mm_lightning / mmengine'] if ratio else []) + ['note']
    rows = []
    for name in FIGURES:
        cells = [_cell(report['engines'][engine].get(name)) for engine in engines]
        if ratio:
            cells.append(_cell(ratio.get(name)) if name in ratio else '-')
        noisy = [column for column in [*engines, 'ratio'] if f'{column}.{name}' in unreliable]
        rows.append([name, *cells, f"unreliable ({', '.join(noisy)})" if noisy else ''])
    rows.append(['iterations', *[str(report['engines'][engine].get('iterations')) for engine in engines]]
                + (['-'] if ratio else []) + [''])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{report['config']}: {report['iters']} iterations ({report['warmup']} warm-up), {report['repeats']} "
             f"interleaved runs per engine, {report['threads']} CPU thread(s) each, on {env['device']}, "
             f"torch {env['torch']}, lightning {env['lightning']}, mmengine {env['mmengine']}",
             'median [90% interval of the median] over the runs; ratios per pair of runs',
             '  '.join(f'{cell:<{width}}' for cell, width in zip(header, widths)).rstrip()]
    lines += ['  '.join(f'{cell:<{width}}' for cell, width in zip(row, widths)).rstrip() for row in rows]
    if unreliable:
        lines.append(f"unreliable: {', '.join(sorted(unreliable))}: the median's 90% interval is wider than the "
                     f"tolerance ({report['tolerance']:g}), or the runs are too few for one (5 needed); more "
                     f"--repeats or a quieter machine")
    return '\n'.join(lines) + '\n'


def _cell(summary: Optional[Mapping[str, Any]]) -> str:
    if summary is None:
        return '-'
    return f"{summary['median']:.4g} [{summary['low']:.4g}..{summary['high']:.4g}]"


# -- the measuring process ------------------------------------------------------------------------
def _child(argv: Optional[List[str]] = None) -> int:
    """``python -m mm_lightning.tools.benchmark ENGINE CONFIG ...``: measure one engine, write its figures."""
    parser = argparse.ArgumentParser(prog='python -m mm_lightning.tools.benchmark')
    parser.add_argument('engine', choices=sorted(ENGINES))
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, required=True)
    parser.add_argument('--warmup', type=int, required=True)
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--threads', type=int, required=True)
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures = measure(args.engine, args.config, iters=args.iters, warmup=args.warmup, work_dir=args.work_dir,
                      cfg_options=args.cfg_options)
    figures['threads'] = torch.get_num_threads()
    with open(args.out, 'w') as f:
        json.dump(figures, f)
    return 0


if __name__ == '__main__':
    sys.exit(_child())
