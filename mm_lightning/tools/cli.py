"""The ``mm-lightning`` command line (also ``python -m mm_lightning``).

``mm-lightning train CONFIG [--work-dir D] [--resume [PATH]] [--amp] [--cfg-options k=v ...]``
``    [--launcher none|pytorch|slurm|mpi] [--devices N] [--num-nodes N] [--progress-bar none|tqdm|rich]``
``    [--profiler simple|advanced|pytorch]``
``mm-lightning test CONFIG CHECKPOINT [--work-dir D] [--cfg-options k=v ...] [--progress-bar ...] [--profiler ...]``
``mm-lightning predict CONFIG CHECKPOINT --out FILE [--work-dir D] [--cfg-options k=v ...]`` (the model's
``    test_step`` outputs over the test loader, saved with torch.save)
``mm-lightning convert-checkpoint SRC DST`` (mmengine .pth <-> Lightning .ckpt; .pth -> safe .pth; a sharded or
``    `` DeepSpeed checkpoint directory -> one file)
``mm-lightning explain CONFIG [--cfg-options k=v ...] [--launcher L] [--accelerator A] [--devices N]``
``    [--num-nodes M] [--json]`` (what the config becomes under Lightning; nothing is built or run)
``mm-lightning compare CONFIG [--iters N] [--cfg-options k=v ...] [--json OUT] [--atol A] [--work-dir D]``
``    `` (trains under mmengine's Runner and under mm_lightning; exit 1 where they differ)
``mm-lightning benchmark CONFIG [--iters N] [--warmup K] [--engine mm_lightning|mmengine|both] [--repeats R]``
``    [--threads N] [--json OUT] [--baseline FILE [--tolerance T]] [--cfg-options k=v ...] [--work-dir D]``
``    `` (against a baseline: exit 1 on a regression, 3 when the runs are too noisy to decide)

The options mean what they mean in OpenMMLab's ``tools/train.py`` and ``tools/test.py``.
A bad config, or a checkpoint that cannot be read or does not fit the model, is reported as
one ``mm-lightning: error: <key path or file>: ...`` message and exit status 2; a disk that
fills while a checkpoint is written is one such message naming the file, exit status 1;
``--debug`` adds the traceback. As with ``python -m mm_lightning``, the
working directory is importable, so ``custom_imports`` may name modules found there.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import os.path as osp
import sys
import traceback
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional

# Only argparse and the names it offers at import: ``--help`` must not pay for torch, mmengine or Lightning.
# Each command imports what it uses; a config error stops before the runner (and Lightning) is imported.
from mm_lightning.ground.names import LAUNCHER_NAMES, PROFILER_NAMES, PROGRESS_BAR_NAMES

if TYPE_CHECKING:
    from mmengine.config import Config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='mm-lightning', parents=[_common_options()],
                                     description='Run an mmengine config on PyTorch Lightning.')
    commands = parser.add_subparsers(dest='command', required=True)

    train = commands.add_parser('train', help='train a model from a config', parents=[_common_options()])
    _add_config(train, 'e.g. train_cfg.max_epochs=2')
    train.add_argument('--work-dir', help='where logs and checkpoints go')
    train.add_argument('--resume', nargs='?', const='auto', default=None, metavar='PATH',
                       help='resume from PATH (an mmengine .pth or a Lightning .ckpt), or from the latest '
                            'checkpoint in the work_dir')
    train.add_argument('--amp', action='store_true', help='automatic mixed precision (AmpOptimWrapper)')
    _add_run_options(train)

    test = commands.add_parser('test', help='evaluate a checkpoint on the test set', parents=[_common_options()])
    _add_config(test)
    test.add_argument('checkpoint', help='checkpoint to evaluate: an mmengine .pth or a Lightning .ckpt')
    test.add_argument('--work-dir', help='where logs go')
    _add_run_options(test)

    predict = commands.add_parser('predict', help="save the model's test_step outputs over the test loader",
                                  parents=[_common_options()])
    _add_config(predict)
    predict.add_argument('checkpoint', help="the model's weights: an mmengine .pth or a Lightning .ckpt")
    predict.add_argument('--out', required=True, help='file the outputs are saved to (torch.save)')
    predict.add_argument('--work-dir', help='where logs go')
    _add_run_options(predict)

    convert = commands.add_parser(
        'convert-checkpoint', help='convert between mmengine .pth and Lightning .ckpt checkpoints, or rewrite an '
                                   'mmengine .pth so it loads with weights_only=True')
    convert.add_argument('src', help='an mmengine .pth, a Lightning .ckpt, or a sharded (FSDP) or DeepSpeed '
                                     'checkpoint directory (unpickled in full: trust it)')
    convert.add_argument('dst', help='*.ckpt for a Lightning checkpoint, *.pth for an mmengine one')
    _add_explain(commands)
    _add_compare(commands)
    _add_benchmark(commands)
    return parser


def _common_options() -> argparse.ArgumentParser:
    """Options taken before or after the command's name (``--debug``); absent unless given."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                        help='show the traceback of an error')
    return common


def _add_config(parser: argparse.ArgumentParser, example: str = '') -> None:
    """The config file and ``--cfg-options``, which every command that reads a config takes."""
    parser.add_argument('config', help='config file (.py, .json, .yaml)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config entries' + (f', {example}' if example else ''))


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """What every command that runs the config (train, test, predict) takes: layout, progress bar, profiler."""
    _add_distribution_options(parser)
    _add_progress_bar_option(parser)
    _add_profiler_option(parser)


def _add_progress_bar_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--progress-bar', choices=list(PROGRESS_BAR_NAMES),
                        help="Lightning's progress bar on the console (default: the config's progress_bar, "
                             'else none); the log file gets mmengine\'s log lines either way')


def _add_profiler_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--profiler', choices=list(PROFILER_NAMES),
                        help="Lightning's profiler; its report goes to <work_dir>/<stage>-profile.txt "
                             "(default: the config's profiler, else none)")


def _add_distribution_options(parser: argparse.ArgumentParser,
                              launcher_help: str = 'how processes were started (default: inferred from the '
                                                   'environment)') -> None:
    parser.add_argument('--launcher', choices=list(LAUNCHER_NAMES), help=launcher_help)
    parser.add_argument('--devices', type=int, help='devices per node (default: from the launcher)')
    parser.add_argument('--num-nodes', type=int, help='number of nodes (default: from the launcher)')


def _default_work_dir(cfg: Config) -> str:
    from mm_lightning.config.loading import default_work_dir
    return osp.join('.', default_work_dir(cfg))  # ./work_dirs/<config name>, as OpenMMLab's tools


def build_config(args: argparse.Namespace) -> Config:
    """The config after the command line's changes, as OpenMMLab's tools make them."""
    from mm_lightning.config.loading import ConfigError, load_config
    cfg = load_config(args.config, args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = _default_work_dir(cfg)
    if args.launcher is not None:
        cfg.launcher = args.launcher
    if getattr(args, 'progress_bar', None) is not None:
        cfg.progress_bar = args.progress_bar
    if getattr(args, 'profiler', None) is not None:
        cfg.profiler = args.profiler
    for option, key in ((args.devices, 'devices'), (args.num_nodes, 'num_nodes')):
        if option is not None:
            cfg.lightning_trainer = dict(cfg.get('lightning_trainer') or {}, **{key: option})
    if args.command == 'train':
        if args.amp:
            from mm_lightning.translate.precision import AMP_WRAPPER
            optim_wrapper = cfg.get('optim_wrapper')
            if optim_wrapper is None:
                raise ConfigError('--amp: the config has no optim_wrapper')
            if optim_wrapper.get('type', 'OptimWrapper') not in ('OptimWrapper', AMP_WRAPPER):
                raise ConfigError(f'--amp: optim_wrapper.type is {optim_wrapper.get("type")!r}; AMP applies to '
                                  'OptimWrapper configs')
            optim_wrapper.type = AMP_WRAPPER
            optim_wrapper.setdefault('loss_scale', 'dynamic')
        if args.resume == 'auto':
            cfg.resume = True
            cfg.load_from = None
        elif args.resume is not None:
            cfg.resume = True
            cfg.load_from = args.resume
    else:
        cfg.load_from = args.checkpoint
    return cfg


# -- tools: explain ------------------------------------------------------------------------------
def _add_explain(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser('explain', help='show what a config becomes under Lightning (builds nothing)',
                                  parents=[_common_options()])
    _add_config(explain)
    _add_distribution_options(explain, 'how processes will be started (default: the config, else this environment)')
    explain.add_argument('--accelerator', choices=['cpu', 'gpu', 'cuda', 'auto'],
                         help='target accelerator (default: this machine)')
    explain.add_argument('--json', action='store_true', help='print one JSON object instead of text')


def _explain(args: argparse.Namespace) -> int:
    """Exit 0 when a run on the layout would start, 1 when the report lists a refusal."""
    with _stdout_to_stderr() if args.json else contextlib.redirect_stdout(sys.stderr):  # what imports print
        from mm_lightning.config.loading import load_config
        from mm_lightning.tools.explain import REFUSAL, explain
        from mm_lightning.tools.explanation_text import format_explanation
    with _stdout_to_stderr() if args.json else contextlib.nullcontext():
        cfg = load_config(args.config, args.cfg_options)
        if cfg.get('work_dir') is None:  # where `train` would put it
            cfg.work_dir = _default_work_dir(cfg)
        report = explain(cfg, launcher=args.launcher, accelerator=args.accelerator, devices=args.devices,
                         num_nodes=args.num_nodes)
    print(json.dumps(report, indent=2) if args.json else format_explanation(report), end='\n' if args.json else '')
    return 1 if any(entry['kind'] == REFUSAL for entry in report['warnings']) else 0


# -- tools: compare ------------------------------------------------------------------------------
def _add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser('compare', help="train under mmengine's Runner and mm_lightning, compare")
    _add_config(compare)
    compare.add_argument('--iters', type=int, default=10, help='training iterations to compare (default: 10)')
    compare.add_argument('--json', metavar='OUT', help='also write the full report as JSON to OUT')
    compare.add_argument('--atol', type=float, default=0.0,
                         help='largest difference still counted as equal (default: 0, exactly equal)')
    compare.add_argument('--work-dir', help='parent of both runs\' work_dirs (default: work_dirs/compare_<config>)')


def _compare(args: argparse.Namespace) -> int:
    """Exit 0 when both engines agree within --atol, 1 otherwise."""
    with contextlib.redirect_stdout(sys.stderr):  # what imports print is not the report
        from mm_lightning.tools.compare import compare, format_comparison
    report = compare(args.config, iters=args.iters, atol=args.atol, work_dir=args.work_dir,
                     cfg_options=args.cfg_options)
    _write_json(args.json, report)
    print(format_comparison(report), end='')
    return 0 if report['identical'] else 1


# -- tools: benchmark ----------------------------------------------------------------------------
#: --engine choice -> engines measured.
BENCHMARK_ENGINES = {'mm_lightning': ('mm_lightning',), 'mmengine': ('mmengine',), 'both': ('mm_lightning', 'mmengine')}


def _add_benchmark(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser('benchmark', help='time per iteration, throughput, memory and start-up of a config')
    _add_config(bench)
    bench.add_argument('--iters', type=int, default=50, help='training iterations per engine (default: 50)')
    bench.add_argument('--warmup', type=int, default=10, help='iterations left out of the timing (default: 10)')
    bench.add_argument('--engine', choices=sorted(BENCHMARK_ENGINES), default='mm_lightning',
                       help="mm_lightning, mmengine's Runner, or both (default: mm_lightning)")
    bench.add_argument('--repeats', type=int, default=5,
                       help='runs per engine, each in a fresh process, engines alternating; figures are their '
                            'medians with 90%% intervals, which need 5 runs or more (default: 5)')
    bench.add_argument('--threads', type=int,
                       help='CPU threads of each run (default: $OMP_NUM_THREADS, else the usable CPUs less the '
                            "1-minute load average and the training loader's workers, at least 1)")
    bench.add_argument('--json', metavar='OUT', help='also write the report as JSON to OUT')
    bench.add_argument('--baseline', metavar='FILE', help='a report written by --json to compare against')
    bench.add_argument('--tolerance', type=float, default=0.2,
                       help='how much worse than the baseline a figure may be: a fraction, e.g. 0.2 for 20%%, '
                            '(data_loading_share: in share points); medians whose 90%% interval is wider are '
                            'unreliable (default: 0.2)')
    bench.add_argument('--work-dir', help='parent of the runs\' work_dirs (default: work_dirs/benchmark_<config>)')


def _benchmark(args: argparse.Namespace) -> int:
    """Against a baseline: exit 0 on a pass, 1 on a regression, 3 when undecided (too noisy); 2 when a run fails."""
    from mm_lightning.config.loading import ConfigError
    with contextlib.redirect_stdout(sys.stderr):  # what imports print is not the report
        from mm_lightning.tools.benchmark import (
            BenchmarkError,
            baseline_judgements,
            benchmark,
            format_benchmark,
            read_baseline,
        )
        from mm_lightning.tools.benchmark_statistics import EXIT_STATUS, PASS, overall
    baseline = None
    if args.baseline:
        if not osp.isfile(args.baseline):
            raise ConfigError(f'--baseline: file not found: {args.baseline!r}')
        baseline = read_baseline(args.baseline)  # a baseline of another schema fails before the runs
    work_dir = args.work_dir or osp.join('work_dirs', f'benchmark_{osp.splitext(osp.basename(args.config))[0]}')
    try:
        report = benchmark(args.config, engines=BENCHMARK_ENGINES[args.engine], iters=args.iters,
                           warmup=args.warmup, work_dir=work_dir, cfg_options=args.cfg_options,
                           repeats=args.repeats, threads=args.threads, tolerance=args.tolerance)
    except BenchmarkError as err:
        print(f'mm-lightning: error: {err}', file=sys.stderr)
        return 2
    _write_json(args.json, report)
    print(format_benchmark(report), end='')
    if baseline is None:
        return 0
    judgements = baseline_judgements(report, baseline, args.tolerance)
    for judgement in judgements:
        if judgement.verdict != PASS:
            print(f'{judgement.verdict}: {judgement.message}')
    verdict = overall(judgements)
    counts = {kind: sum(j.verdict == kind for j in judgements) for kind in EXIT_STATUS}
    print(f'{verdict}: {counts["regression"]} regressed, {counts["undecided"]} undecided, {counts["pass"]} passed '
          f'of {len(judgements)} figures against {args.baseline} (tolerance {args.tolerance:g}); exit '
          f'{EXIT_STATUS[verdict]}' + ('; the runs are too noisy to decide: more --repeats or a quieter machine'
                                       if verdict == 'undecided' else ''))
    return EXIT_STATUS[verdict]


def _write_json(path: Optional[str], report: dict) -> None:
    if path:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(report, f, indent=2)
            f.write('\n')


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what libraries print (DeepSpeed's start-up line, log records) to stderr, keeping stdout for JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


#: Commands that report on a config rather than run it: name -> handler returning the exit status.
TOOLS: Dict[str, Callable[[argparse.Namespace], int]] = {'explain': _explain, 'compare': _compare,
                                                         'benchmark': _benchmark}


def import_from_working_directory() -> None:
    """Put the working directory first on ``sys.path``, as ``python -m`` does.

    A console script starts with its own directory there instead, and ``custom_imports``
    naming a module of the project being run (``examples.spiral.components``) would fail.
    """
    cwd = os.getcwd()
    if not any(osp.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command; a bad config or argument prints one ``mm-lightning: error:`` message, exit 2 (a full disk:
    exit 1)."""
    import_from_working_directory()
    args = _parser().parse_args(argv)
    from mm_lightning.config.loading import ConfigError
    try:
        if args.command in TOOLS:
            return TOOLS[args.command](args)
        if args.command == 'convert-checkpoint':
            with contextlib.redirect_stdout(sys.stderr):  # what imports print is not the command's output
                from mm_lightning.state.convert import convert
            print(f'wrote {args.dst} ({convert(args.src, args.dst)})')
            return 0
        _run(args)
    except ConfigError as err:
        return _error(args, err, 2)
    except OSError as err:
        if not _disk_full(err):
            raise
        return _error(args, err, 1)  # the run stopped; its config is fine
    return 0


def _disk_full(err: OSError) -> bool:
    """Whether ``err`` is a :class:`~mm_lightning.state.disk.DiskFullError`.

    Asked of the loaded module, not imported for the question: it imports torch and Lightning, which a
    config error should not pay for, and no such error exists before the checkpoint writers load it.
    """
    disk = sys.modules.get('mm_lightning.state.disk')
    return disk is not None and isinstance(err, disk.DiskFullError)


def _error(args: argparse.Namespace, err: Exception, status: int) -> int:
    """One ``mm-lightning: error:`` line (``--debug``: after the traceback); returns the exit status."""
    if getattr(args, 'debug', False):
        traceback.print_exc()
    print(f'mm-lightning: error: {err}', file=sys.stderr)
    return status


def _run(args: argparse.Namespace) -> None:
    """``train`` or ``test``, as OpenMMLab's tools run them, or ``predict``: the model's ``test_step`` outputs over
    the test loader, one per sample in the loader's order, saved with ``torch.save`` (data samples are pickled:
    ``torch.load(out, weights_only=False)``)."""
    from mm_lightning.config.loading import ConfigError
    from mm_lightning.config.validation import validate_config
    cfg = build_config(args)
    if args.command != 'train' and not (osp.isfile(args.checkpoint) or osp.isdir(args.checkpoint)):  # or a sharded one
        raise ConfigError(f'checkpoint file not found: {args.checkpoint!r}')
    validate_config(cfg, stages=('run', 'train', 'val') if args.command == 'train' else ('run', 'test'))
    # The runner (Lightning, and DeepSpeed where mmengine finds it) only once the config is known to be good.
    with contextlib.redirect_stdout(sys.stderr):  # what imports print is not the command's output
        import torch

        from mm_lightning.runner.flexible_runner import FlexibleRunner
    runner = FlexibleRunner.from_cfg(cfg)
    if args.command == 'train':
        runner.train()
    elif args.command == 'predict':
        outputs = runner.predict()
        torch.save(outputs, args.out)
        runner.logger.info(f'{len(outputs)} outputs saved to {args.out}')
    else:
        metrics = runner.test()
        runner.logger.info(f'test metrics: {metrics}')
