"""Throughput and peak memory of one model under each distributed strategy, on GPUs (rehearsed on CPU).

    python benchmarks/gpu_strategies.py --markdown gpu.md --json gpu.json    # GPU machine: every case, the table
    python benchmarks/gpu_strategies.py --cpu --markdown cpu.md              # CPU rehearsal of the same path
    python benchmarks/gpu_strategies.py --plan                               # each case's Trainer settings (CPU)

Each case is an mmengine config (the same model, data and optimizer) that differs only in
``strategy`` and precision; it runs in its own ``torchrun`` job (a fresh process group and
memory counters per job), ``--repeats`` times, interleaved (every case once, then again), so a
slow minute hits every case alike; the table gives each figure's median and range over the
repeats. Throughput is samples per second over the iterations after ``--warmup``; memory is
``torch.cuda.max_memory_allocated`` on rank 0 after warm-up (GPU) or the rank-0 process's peak
RSS (CPU). A case the machine cannot run (e.g. float16 on CPU, DeepSpeed not installed) is
refused before any job starts, as ``mm_lightning`` refuses it, and reported as skipped with
the refusal; a job that fails is reported with its last error line, and the exit status is 1.

``--cpu`` is the rehearsal: the same job launching, child script and report on CPU processes
over gloo with a tiny model and few iterations, so the GPU run works the first time a GPU is
there. Its numbers measure nothing of interest.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import DATASETS, MODELS  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from mm_lightning.tools.benchmark_statistics import interleaved, summarize  # noqa: E402

SCHEMA = 'mm_lightning.gpu_strategies/1'


class Size(NamedTuple):
    """The model and batch: the GPU size, or the CPU rehearsal's tiny one."""

    width: int
    depth: int
    batch: int
    classes: int


GPU_SIZE = Size(width=2048, depth=8, batch=64, classes=100)
CPU_SIZE = Size(width=32, depth=2, batch=8, classes=10)

AMP: Dict[str, Optional[Dict[str, Any]]] = {
    'fp32': None,
    'fp16': dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic'),
    'bf16': dict(type='AmpOptimWrapper', dtype='bfloat16'),
}


def _fsdp(sharding: str) -> Dict[str, Any]:
    return dict(type='FSDPStrategy', state_dict_cfg='full', model_wrapper=dict(sharding_strategy=sharding))


def _zero(stage: int, precision: str) -> Dict[str, Any]:
    return dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=stage), **{precision: dict(enabled=True)})


#: case name -> (strategy config, precision); DeepSpeed sets its precision in its own config.
CASES: Dict[str, Dict[str, Any]] = {
    'single device fp32': dict(strategy=None, precision='fp32', single=True),
    'single device fp16': dict(strategy=None, precision='fp16', single=True),
    'single device bf16': dict(strategy=None, precision='bf16', single=True),
    'DDP fp32': dict(strategy=dict(type='DDPStrategy'), precision='fp32'),
    'DDP fp16': dict(strategy=dict(type='DDPStrategy'), precision='fp16'),
    'DDP bf16': dict(strategy=dict(type='DDPStrategy'), precision='bf16'),
    'FSDP FULL_SHARD fp32': dict(strategy=_fsdp('FULL_SHARD'), precision='fp32'),
    'FSDP FULL_SHARD fp16': dict(strategy=_fsdp('FULL_SHARD'), precision='fp16'),
    'FSDP FULL_SHARD bf16': dict(strategy=_fsdp('FULL_SHARD'), precision='bf16'),
    'FSDP SHARD_GRAD_OP fp32': dict(strategy=_fsdp('SHARD_GRAD_OP'), precision='fp32'),
    'FSDP SHARD_GRAD_OP bf16': dict(strategy=_fsdp('SHARD_GRAD_OP'), precision='bf16'),
    'DeepSpeed ZeRO-2 fp16': dict(strategy=_zero(2, 'fp16'), precision='deepspeed'),
    'DeepSpeed ZeRO-2 bf16': dict(strategy=_zero(2, 'bf16'), precision='deepspeed'),
    'DeepSpeed ZeRO-3 fp16': dict(strategy=_zero(3, 'fp16'), precision='deepspeed'),
    'DeepSpeed ZeRO-3 bf16': dict(strategy=_zero(3, 'bf16'), precision='deepspeed'),
}


@DATASETS.register_module(force=True)
class RandomFeatures(Dataset):
    def __init__(self, size: int, width: int, classes: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, width, generator=gen)
        self.y = torch.randint(0, classes, (size,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return dict(inputs=self.x[i], label=self.y[i])


@MODELS.register_module(force=True)
class WideMLP(BaseModel):
    def __init__(self, width: int, depth: int, classes: int) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, inputs: torch.Tensor, label: Optional[torch.Tensor] = None, mode: str = 'tensor') -> Any:
        logits = self.head(self.body(inputs))
        if mode != 'loss':
            return logits
        assert label is not None, 'mode="loss" needs the labels'
        return dict(loss=nn.functional.cross_entropy(logits.float(), label))


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Meter(Hook):
    """Time of the steady-state iterations (synchronised on GPU) and peak memory from the warm-up's end."""

    priority = 'LOWEST'

    def __init__(self, warmup: int) -> None:
        self.warmup, self.count, self.start, self.end = warmup, 0, 0.0, 0.0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.count += 1
        if self.count in (self.warmup, runner.max_iters):
            _synchronize()
            if self.count == self.warmup:
                self.start = time.perf_counter()
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
            else:
                self.end = time.perf_counter()


def config(case: str, iters: int, work_dir: str, size: Size = GPU_SIZE, cpu: bool = False) -> dict:
    """The case's mmengine config; ``cpu``: gloo and no loader workers (the rehearsal)."""
    spec = CASES[case]
    optim_wrapper: Dict[str, Any] = dict(optimizer=dict(type='AdamW', lr=1e-4))
    if spec['precision'] == 'deepspeed':
        optim_wrapper['type'] = 'DeepSpeedOptimWrapper'
    elif (amp := AMP[spec['precision']]) is not None:
        optim_wrapper.update(amp)
    cfg = dict(
        model=dict(type='WideMLP', width=size.width, depth=size.depth, classes=size.classes),
        work_dir=work_dir, experiment_name=case.replace(' ', '_'),
        train_dataloader=dict(dataset=dict(type='RandomFeatures', size=size.batch * 64, width=size.width,
                                           classes=size.classes),
                              sampler=dict(type='InfiniteSampler', shuffle=True), batch_size=size.batch,
                              num_workers=0 if cpu else 2, collate_fn=dict(type='default_collate')),
        optim_wrapper=optim_wrapper, train_cfg=dict(by_epoch=False, max_iters=iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=10 ** 6), checkpoint=None),
        env_cfg=dict(dist_cfg=dict(backend='gloo' if cpu else 'nccl')), randomness=dict(seed=0),
        log_level='WARNING')
    if spec.get('single'):
        cfg['launcher'] = 'none'
    if spec['strategy'] is not None:
        cfg['strategy'] = spec['strategy']
    return cfg


def peak_memory_mib() -> float:
    """Rank 0's peak: CUDA allocated memory on GPU, the process's peak RSS on CPU (KiB on Linux)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if platform.system() == 'Darwin' else 2 ** 10)


def worker(case: str, iters: int, warmup: int, out: str, size: Size, cpu: bool) -> None:
    """One run of one case (every rank); rank 0 writes its figures to ``out``."""
    from mm_lightning import FlexibleRunner
    with tempfile.TemporaryDirectory() as work_dir:
        runner = FlexibleRunner.from_cfg(config(case, iters, work_dir, size, cpu))
        meter = Meter(warmup)
        runner.register_hook(meter)
        runner.train()
        if runner.rank == 0:
            seconds = meter.end - meter.start
            samples = (iters - warmup) * size.batch * runner.world_size
            with open(out, 'w') as f:
                device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
                json.dump(dict(case=case, world_size=runner.world_size, samples_per_s=samples / seconds,
                               peak_memory_mib=peak_memory_mib(), device=device), f)


def refusal(case: str, processes: int, cpu: bool) -> Optional[str]:
    """Why this machine cannot run the case (mm_lightning's own refusal), or None; starts nothing."""
    from mm_lightning import trainer_kwargs
    from mm_lightning.translate.launchers import config_layout
    from mm_lightning.translate.strategies import check_run_time
    cfg = config(case, 10, tempfile.gettempdir(), cpu=cpu)
    layout: Dict[str, Any] = dict(launcher='none' if CASES[case].get('single') else 'pytorch',
                                  accelerator='cpu' if cpu else 'gpu',
                                  devices=1 if CASES[case].get('single') else processes, num_nodes=1)
    try:
        trainer_kwargs(cfg, **layout)
        check_run_time(cfg, config_layout(cfg, **layout))  # what the runner refuses when it is built
    except Exception as err:  # the refusals are ConfigErrors; anything else also means the job cannot start
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return None


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


def _free_port() -> int:
    """A port no other job (or a concurrent benchmark) holds: each torchrun job gets its own."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _last_error(text: str) -> str:
    """The child's own exception line (``torchrun`` ends its output with a summary that names none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r'^[\w.]*(Error|Exception|Interrupt)\b.*', line)
              and 'ChildFailedError' not in line]
    return ((raised or lines or ['no output'])[-1])[:300]


def run_job(case: str, processes: int, args: argparse.Namespace, size: Size, tmp: str) -> Dict[str, Any]:
    """One run of ``case`` in its own job (``torchrun``, or one Python process for a single device)."""
    out = os.path.join(tmp, 'result.json')
    if os.path.exists(out):
        os.remove(out)
    if CASES[case].get('single'):
        command = [sys.executable]
    else:
        torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
        command = [torchrun, f'--nproc_per_node={processes}', '--master_addr=127.0.0.1',
                   f'--master_port={_free_port()}']
    command += [os.path.abspath(__file__), '--worker', case, '--out', out, '--iters', str(args.iters),
                '--warmup', str(args.warmup), '--size', ','.join(map(str, size))]
    if args.cpu:
        command.append('--cpu')
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    if args.cpu:
        env['CUDA_VISIBLE_DEVICES'] = ''  # the rehearsal is CPU processes even on a GPU machine
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(error=f'timed out after {args.timeout} s')
    if result.returncode != 0 or not os.path.exists(out):
        return dict(error=f'exit {result.returncode}: {_last_error(result.stderr + result.stdout)}')
    with open(out) as f:
        return json.load(f)


def environment(cpu: bool, gpu_name: Optional[str]) -> Dict[str, Any]:
    """Where the numbers come from: device, versions, date. The GPU's name comes from a job: asking for it
    here would hold a CUDA context (GPU memory) in this process through every job."""
    import lightning
    import mmengine
    versions = dict(torch=torch.__version__, lightning=lightning.__version__, mmengine=mmengine.__version__)
    try:
        versions['deepspeed'] = importlib.metadata.version('deepspeed')
    except importlib.metadata.PackageNotFoundError:
        versions['deepspeed'] = None
    device = (f'CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)' if cpu
              else gpu_name or f'{torch.cuda.device_count()} GPU(s), no case ran')
    return dict(device=device, python=platform.python_version(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d'), **versions)


def benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    """Every case: refused ones skipped with the reason, the rest run ``--repeats`` times interleaved."""
    size = CPU_SIZE if args.cpu else GPU_SIZE
    selected = args.cases or list(CASES)
    unknown = [case for case in selected if case not in CASES]
    if unknown:
        raise SystemExit(f'--cases: unknown {unknown}; the cases are {list(CASES)}')
    cases: Dict[str, Dict[str, Any]] = {}
    for case, spec in CASES.items():
        processes = 1 if spec.get('single') else args.processes
        reason = refusal(case, processes, args.cpu)
        if reason is None and case not in selected:
            reason = 'not selected (--cases)'
        cases[case] = dict(processes=processes, status='skipped' if reason else 'ran', reason=reason, runs=[])
    to_run = [case for case in CASES if cases[case]['status'] == 'ran']
    with tempfile.TemporaryDirectory() as tmp:
        for repeat, case in interleaved(to_run, args.repeats):
            print(f'[{repeat + 1}/{args.repeats}] {case}', file=sys.stderr, flush=True)
            cases[case]['runs'].append(run_job(case, cases[case]['processes'], args, size, tmp))
    for case in to_run:
        entry = cases[case]
        errors = [run['error'] for run in entry['runs'] if 'error' in run]
        if errors:
            entry.update(status='failed', reason=errors[0])
        for figure in ('samples_per_s', 'peak_memory_mib'):
            summary = summarize(run.get(figure) for run in entry['runs'])
            entry[figure] = None if summary is None else summary.to_json(tolerance=args.tolerance)
    names = [run['device'] for entry in cases.values() for run in entry['runs'] if 'device' in run]
    return dict(schema=SCHEMA, environment=environment(args.cpu, names[0] if names else None),
                settings=dict(mode='cpu rehearsal' if args.cpu else 'gpu', iters=args.iters, warmup=args.warmup,
                              repeats=args.repeats, processes=args.processes, size=size._asdict(),
                              memory_kind='peak RSS of the rank-0 process' if args.cpu
                              else 'torch.cuda.max_memory_allocated on rank 0, after warm-up'),
                cases=cases)


def _escape(text: str) -> str:
    """A refusal or error message inside a table cell: a ``|`` in it would split the cell."""
    return text.replace('|', '\\|')


def _range(summary: Optional[Mapping[str, Any]], digits: int) -> str:
    if summary is None:
        return 'n/a'
    text = f"{summary['median']:.{digits}f} [{summary['min']:.{digits}f}..{summary['max']:.{digits}f}]"
    return text + (' (unreliable)' if summary['unreliable'] and len(summary['runs']) > 1 else '')


def markdown(report: Mapping[str, Any]) -> str:
    """The README table: one row per case, ran (median [min..max] over the repeats), skipped or failed."""
    env, settings = report['environment'], report['settings']
    size = settings['size']
    cpu = settings['mode'] != 'gpu'
    versions = ', '.join(f'{name} {env[name]}' for name in ('torch', 'lightning', 'mmengine', 'deepspeed')
                         if env.get(name))
    memory = 'peak RSS (MiB, rank-0 process)' if cpu else 'peak memory (GiB, rank 0)'
    lines = [
        f"{'CPU rehearsal (numbers mean nothing): ' if cpu else ''}{env['device']}; {versions}; {env['date']}. "
        f"{settings['iters']} iterations ({settings['warmup']} warm-up), median [min..max] of "
        f"{settings['repeats']} interleaved run(s); batch {size['batch']} per process, MLP "
        f"{size['depth']}x{size['width']}; memory: {settings['memory_kind']}.",
        '',
        f'| case | processes | samples / s | {memory} | status |',
        '|---|---|---|---|---|',
    ]
    for case, entry in report['cases'].items():
        memory_summary = entry.get('peak_memory_mib')
        if memory_summary is not None and not cpu:
            memory_summary = {key: (value / 1024 if isinstance(value, float) else value)
                              for key, value in memory_summary.items()}
        if entry['status'] == 'skipped':
            lines.append(f"| {case} | {entry['processes']} | | | skipped: {_escape(entry['reason'])} |")
            continue
        status = 'ran' if entry['status'] == 'ran' else f"failed: {_escape(entry['reason'])}"
        lines.append(f"| {case} | {entry['processes']} | {_range(entry.get('samples_per_s'), 0 if not cpu else 1)} "
                     f"| {_range(memory_summary, 2 if not cpu else 0)} | {status} |")
    return '\n'.join(lines) + '\n'


def _size(text: str) -> Size:
    return Size(*map(int, text.split(',')))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, help='iterations per run (default 60; 6 with --cpu)')
    parser.add_argument('--warmup', type=int, help='iterations not timed (default 20; 2 with --cpu)')
    parser.add_argument('--repeats', type=int, default=3, help='runs of each case, interleaved (default 3)')
    parser.add_argument('--gpus', '--processes', dest='processes', type=int,
                        help='processes of a distributed case (default: the GPUs; 2 with --cpu)')
    parser.add_argument('--cpu', action='store_true', help='CPU rehearsal: gloo, tiny model, few iterations')
    parser.add_argument('--cases', nargs='+', metavar='CASE', help='run only these cases (the others: skipped)')
    parser.add_argument('--markdown', metavar='PATH', help='also write the Markdown table here')
    parser.add_argument('--json', metavar='PATH', help='write the report (every run) as JSON here')
    parser.add_argument('--timeout', type=float, default=1800, help='seconds per job (default 1800)')
    parser.add_argument('--tolerance', type=float, default=0.2, help="IQR/median beyond which it's unreliable")
    parser.add_argument('--plan', action='store_true', help='print what each case becomes, run nothing')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    parser.add_argument('--size', type=_size, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plan:
        plan()
        return 0
    args.iters = args.iters or (6 if args.cpu else 60)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.cpu else 20)
    if args.warmup < 1 or args.iters <= args.warmup:
        parser.error('--iters must exceed --warmup, and --warmup must be at least 1')
    if args.worker:
        worker(args.worker, args.iters, args.warmup, args.out, args.size, args.cpu)
        return 0
    if args.processes is None:
        args.processes = 2 if args.cpu else torch.cuda.device_count()
    if not args.cpu and args.processes == 0:
        print('No CUDA device here: nothing to measure (--cpu rehearses the run; --plan shows the cases).')
        return 0
    report = benchmark(args)
    table = markdown(report)
    print(table, end='')
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(table)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 1 if any(entry['status'] == 'failed' for entry in report['cases'].values()) else 0


if __name__ == '__main__':
    sys.exit(main())
