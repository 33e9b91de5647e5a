"""The ``mm-lightning`` command line (also ``python -m mm_lightning``).

``mm-lightning train CONFIG [--work-dir D] [--resume [PATH]] [--amp] [--cfg-options k=v ...]``
``    [--launcher none|pytorch|slurm|mpi] [--devices N] [--num-nodes N]``
``mm-lightning test CONFIG CHECKPOINT [--work-dir D] [--cfg-options k=v ...]``
``mm-lightning convert-checkpoint SRC DST`` (an mmengine file, made loadable with ``weights_only=True``)
``mm-lightning explain CONFIG [--cfg-options k=v ...] [--launcher L] [--accelerator A] [--devices N]``
``    [--num-nodes M] [--json]`` (what the config becomes under Lightning; nothing is built or run)
``mm-lightning compare CONFIG [--iters N] [--cfg-options k=v ...] [--json OUT] [--atol A] [--work-dir D]``
``    `` (trains under mmengine's Runner and under mm_lightning; exit 1 where they differ)

The options mean what they mean in OpenMMLab's ``tools/train.py`` and ``tools/test.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import os.path as osp
import sys
from typing import Callable, Dict, Iterator, List, Optional

from mmengine.config import Config

from .config import ConfigError, load_config
from .precision import AMP_WRAPPER


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='mm-lightning',
                                     description='Run an mmengine config on PyTorch Lightning.')
    commands = parser.add_subparsers(dest='command', required=True)

    train = commands.add_parser('train', help='train a model from a config')
    train.add_argument('config', help='config file (.py, .json, .yaml)')
    train.add_argument('--work-dir', help='where logs and checkpoints go')
    train.add_argument('--resume', nargs='?', const='auto', default=None, metavar='PATH',
                       help='resume from PATH, or from the latest checkpoint in the work_dir')
    train.add_argument('--amp', action='store_true', help='automatic mixed precision (AmpOptimWrapper)')
    train.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                       help='override config entries, e.g. train_cfg.max_epochs=2')
    _add_distribution_options(train)

    test = commands.add_parser('test', help='evaluate a checkpoint on the test set')
    test.add_argument('config', help='config file (.py, .json, .yaml)')
    test.add_argument('checkpoint', help='mmengine-format checkpoint to load')
    test.add_argument('--work-dir', help='where logs go')
    test.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                      help='override config entries')
    _add_distribution_options(test)

    convert = commands.add_parser('convert-checkpoint',
                                  help='rewrite a trusted mmengine checkpoint so it loads with weights_only=True')
    convert.add_argument('src', help='checkpoint written by mmengine (unpickled in full: trust it)')
    convert.add_argument('dst', help='where to write the converted checkpoint')
    _add_explain(commands)
    _add_compare(commands)
    return parser


def _add_distribution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='how processes were started (default: inferred from the environment)')
    parser.add_argument('--devices', type=int, help='devices per node (default: from the launcher)')
    parser.add_argument('--num-nodes', type=int, help='number of nodes (default: from the launcher)')


def _default_work_dir(cfg: Config, config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def build_config(args: argparse.Namespace) -> Config:
    """The config after the command line's changes, as OpenMMLab's tools make them."""
    cfg = load_config(args.config, args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = _default_work_dir(cfg, args.config)
    if args.launcher is not None:
        cfg.launcher = args.launcher
    for option, key in ((args.devices, 'devices'), (args.num_nodes, 'num_nodes')):
        if option is not None:
            cfg.lightning_trainer = dict(cfg.get('lightning_trainer') or {}, **{key: option})
    if args.command == 'train':
        if args.amp:
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
    explain = commands.add_parser('explain', help='show what a config becomes under Lightning (builds nothing)')
    explain.add_argument('config', help='config file (.py, .json, .yaml)')
    explain.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE', help='override config entries')
    explain.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                         help='how processes will be started (default: the config, else this environment)')
    explain.add_argument('--accelerator', choices=['cpu', 'gpu', 'cuda', 'auto'],
                         help='target accelerator (default: this machine)')
    explain.add_argument('--devices', type=int, help='devices per node (default: from the launcher)')
    explain.add_argument('--num-nodes', type=int, help='number of nodes (default: from the launcher)')
    explain.add_argument('--json', action='store_true', help='print one JSON object instead of text')


def _explain(args: argparse.Namespace) -> int:
    """Exit 0 when a run on the layout would start, 1 when the report lists a refusal."""
    from .explain import REFUSAL, explain, format_explanation
    with _stdout_to_stderr() if args.json else contextlib.nullcontext():
        report = explain(args.config, cfg_options=args.cfg_options, launcher=args.launcher,
                         accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes)
    print(json.dumps(report, indent=2) if args.json else format_explanation(report), end='\n' if args.json else '')
    return 1 if any(entry['kind'] == REFUSAL for entry in report['warnings']) else 0


# -- tools: compare ------------------------------------------------------------------------------
def _add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser('compare', help="train under mmengine's Runner and mm_lightning, compare")
    compare.add_argument('config', help='config file (.py, .json, .yaml)')
    compare.add_argument('--iters', type=int, default=10, help='training iterations to compare (default: 10)')
    compare.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE', help='override config entries')
    compare.add_argument('--json', metavar='OUT', help='also write the full report as JSON to OUT')
    compare.add_argument('--atol', type=float, default=0.0,
                         help='largest difference still counted as equal (default: 0, exactly equal)')
    compare.add_argument('--work-dir', help='parent of both runs\' work_dirs (default: work_dirs/compare_<config>)')


def _compare(args: argparse.Namespace) -> int:
    """Exit 0 when both engines agree within --atol, 1 otherwise."""
    from .compare import compare, format_comparison
    report = compare(args.config, iters=args.iters, atol=args.atol, work_dir=args.work_dir,
                     cfg_options=args.cfg_options)
    _write_json(args.json, report)
    print(format_comparison(report), end='')
    return 0 if report['identical'] else 1


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
TOOLS: Dict[str, Callable[[argparse.Namespace], int]] = {'explain': _explain, 'compare': _compare}


def _run_tool(args: argparse.Namespace) -> int:
    try:
        return TOOLS[args.command](args)
    except ConfigError as err:
        print(f'mm-lightning: error: {err}', file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in TOOLS:
        return _run_tool(args)
    if args.command == 'convert-checkpoint':
        from .checkpoint import convert_checkpoint
        convert_checkpoint(args.src, args.dst)
        print(f'wrote {args.dst}')
        return 0
    from .runner import FlexibleRunner
    try:
        cfg = build_config(args)
        if args.command == 'test' and not osp.isfile(args.checkpoint):
            raise ConfigError(f'checkpoint file not found: {args.checkpoint!r}')
        runner = FlexibleRunner.from_cfg(cfg)
        if args.command == 'train':
            runner.train()
        else:
            metrics = runner.test()
            runner.logger.info(f'test metrics: {metrics}')
    except ConfigError as err:
        print(f'mm-lightning: error: {err}', file=sys.stderr)
        return 2
    return 0
