"""The ``mm-lightning`` command line (also ``python -m mm_lightning``).

``mm-lightning train CONFIG [--work-dir D] [--resume [PATH]] [--amp] [--cfg-options k=v ...]``
``    [--launcher none|pytorch|slurm|mpi] [--devices N] [--num-nodes N] [--progress-bar none|tqdm|rich]``
``mm-lightning test CONFIG CHECKPOINT [--work-dir D] [--cfg-options k=v ...] [--progress-bar ...]``
``mm-lightning convert-checkpoint SRC DST`` (an mmengine file, made loadable with ``weights_only=True``)

The options mean what they mean in OpenMMLab's ``tools/train.py`` and ``tools/test.py``.
A bad config is reported as one ``mm-lightning: error: <key path>: ...`` message and
exit status 2; ``--debug`` adds the traceback. As with ``python -m mm_lightning``, the
working directory is importable, so ``custom_imports`` may name modules found there.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import traceback
from typing import List, Optional

from mmengine.config import Config

from .config import ConfigError, load_config
from .precision import AMP_WRAPPER
from .trainer import PROGRESS_BARS
from .validation import validate_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='mm-lightning', parents=[_common_options()],
                                     description='Run an mmengine config on PyTorch Lightning.')
    commands = parser.add_subparsers(dest='command', required=True)

    train = commands.add_parser('train', help='train a model from a config', parents=[_common_options()])
    train.add_argument('config', help='config file (.py, .json, .yaml)')
    train.add_argument('--work-dir', help='where logs and checkpoints go')
    train.add_argument('--resume', nargs='?', const='auto', default=None, metavar='PATH',
                       help='resume from PATH, or from the latest checkpoint in the work_dir')
    train.add_argument('--amp', action='store_true', help='automatic mixed precision (AmpOptimWrapper)')
    train.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                       help='override config entries, e.g. train_cfg.max_epochs=2')
    _add_distribution_options(train)
    _add_progress_bar_option(train)

    test = commands.add_parser('test', help='evaluate a checkpoint on the test set', parents=[_common_options()])
    test.add_argument('config', help='config file (.py, .json, .yaml)')
    test.add_argument('checkpoint', help='mmengine-format checkpoint to load')
    test.add_argument('--work-dir', help='where logs go')
    test.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                      help='override config entries')
    _add_distribution_options(test)
    _add_progress_bar_option(test)

    convert = commands.add_parser('convert-checkpoint',
                                  help='rewrite a trusted mmengine checkpoint so it loads with weights_only=True')
    convert.add_argument('src', help='checkpoint written by mmengine (unpickled in full: trust it)')
    convert.add_argument('dst', help='where to write the converted checkpoint')
    return parser


def _common_options() -> argparse.ArgumentParser:
    """Options taken before or after the command's name (``--debug``); absent unless given."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                        help='show the traceback of a config error')
    return common


def _add_progress_bar_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--progress-bar', choices=list(PROGRESS_BARS),
                        help="Lightning's progress bar on the console (default: the config's progress_bar, "
                             'else none); the log file gets mmengine\'s log lines either way')


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
    if getattr(args, 'progress_bar', None) is not None:
        cfg.progress_bar = args.progress_bar
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


def _import_from_working_directory() -> None:
    """Put the working directory first on ``sys.path``, as ``python -m`` does.

    A console script starts with its own directory there instead, and ``custom_imports``
    naming a module of the project being run (``examples.spiral.components``) would fail.
    """
    cwd = os.getcwd()
    if not any(osp.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)


def main(argv: Optional[List[str]] = None) -> int:
    _import_from_working_directory()
    args = _parser().parse_args(argv)
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
        validate_config(cfg)
        runner = FlexibleRunner.from_cfg(cfg)
        if args.command == 'train':
            runner.train()
        else:
            metrics = runner.test()
            runner.logger.info(f'test metrics: {metrics}')
    except ConfigError as err:
        if getattr(args, 'debug', False):
            traceback.print_exc()
        print(f'mm-lightning: error: {err}', file=sys.stderr)
        return 2
    return 0
