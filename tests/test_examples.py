"""The examples and benchmarks run end to end (quick settings)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path, timeout=300):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_spiral_example_trains_and_tests(tmp_path):
    work_dir = str(tmp_path / 'spiral')
    output = _run(['-m', 'mm_lightning', 'train', 'examples/spiral/mlp_spiral.py', '--work-dir', work_dir,
                   '--cfg-options', 'train_cfg.max_epochs=6'], tmp_path)
    assert 'Epoch(val) [6]' in output
    output = _run(['-m', 'mm_lightning', 'test', 'examples/spiral/mlp_spiral.py',
                   os.path.join(work_dir, 'epoch_6.pth'), '--work-dir', work_dir], tmp_path)
    accuracy = float(output.split("'spiral/accuracy': ")[1].split('}')[0])
    assert accuracy > 80.0  # the spiral arms are learnt, not guessed (33%)


def test_lightning_trainer_example(tmp_path):
    output = _run(['examples/lightning_trainer.py', '--max-epochs', '2', '--work-dir', str(tmp_path)], tmp_path)
    assert 'validation metrics (mmengine names)' in output
    with open(tmp_path / 'csv' / 'version_0' / 'metrics.csv') as f:
        columns = f.readline().strip().split(',')
    assert {'loss', 'lr', 'spiral/accuracy'} <= set(columns)  # LoggerHook's training scalars and the metrics


def test_overhead_benchmark_runs(tmp_path):
    report = tmp_path / 'overhead.json'
    output = _run(['benchmarks/overhead.py', '--iters', '60', '--warmup', '10', '--repeats', '1', '--json',
                   str(report)], tmp_path)
    assert '| mm_lightning |' in output and '| mmengine Runner |' in output and '| plain Lightning |' in output
    with open(report) as f:
        result = json.load(f)
    assert result['script'] == 'overhead' and result['repeats'] == 1
    assert list(result['runs']) == ['mmengine', 'mm_lightning', 'lightning']
    for runs in result['runs'].values():
        assert len(runs) == 1 and set(runs[0]) == {'time_per_iter_ms', 'startup_s'}
        assert runs[0]['time_per_iter_ms'] > 0 and runs[0]['startup_s'] > 0


@pytest.mark.deepspeed  # the plan builds every case's strategy, DeepSpeed's included
def test_gpu_strategies_benchmark_plans_every_case(tmp_path):
    output = _run(['benchmarks/gpu_strategies.py', '--plan'], tmp_path)
    assert "FSDP SHARD_GRAD_OP bf16  strategy=FSDP2Strategy precision=['MixedPrecision(bf16-mixed)']" in output
    assert 'DeepSpeed ZeRO-3 bf16' in output


def _gpu_strategies_rehearsal(tmp_path, cases):
    """``gpu_strategies.py --cpu``: the GPU run's job launching, child script and report, on 2 CPU processes."""
    markdown, report = tmp_path / 'gpu.md', tmp_path / 'gpu.json'
    output = _run(['benchmarks/gpu_strategies.py', '--cpu', '--repeats', '1', '--cases', *cases,
                   '--markdown', str(markdown), '--json', str(report)], tmp_path)
    assert markdown.read_text() in output  # the file holds the printed table
    with open(report) as f:
        result = json.load(f)
    for case in cases:
        entry = result['cases'][case]
        assert entry['status'] == 'ran', entry
        assert entry['runs'][0]['world_size'] == 2 and entry['samples_per_s']['median'] > 0
        assert entry['peak_memory_mib']['median'] > 0
    return markdown.read_text(), result


def test_gpu_strategies_cpu_rehearsal_reports_every_case(tmp_path):
    table, result = _gpu_strategies_rehearsal(tmp_path, ['DDP fp32', 'FSDP SHARD_GRAD_OP bf16'])
    spec = importlib.util.spec_from_file_location('gpu_strategies', os.path.join(ROOT, 'benchmarks',
                                                                                 'gpu_strategies.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert list(result['cases']) == list(module.CASES)
    rows = {line.split(' | ')[0][2:]: line for line in table.splitlines() if line.startswith('| ')}
    assert set(module.CASES) <= set(rows)  # one row per case, run or not
    for case, entry in result['cases'].items():
        if entry['status'] == 'skipped':  # never silently: the row says why
            assert entry['reason'] and f"skipped: {entry['reason']}" in rows[case]
    assert '| ran |' in rows['DDP fp32'] and '| ran |' in rows['FSDP SHARD_GRAD_OP bf16']
    assert 'float16 needs a GPU' in rows['DDP fp16']  # mm_lightning's refusal, before any job starts
    assert 'peak RSS (MiB, rank-0 process)' in table and result['environment']['torch'] in table


@pytest.mark.deepspeed  # AnyDeviceDeepSpeedStrategy on CPU processes
def test_gpu_strategies_cpu_rehearsal_runs_deepspeed(tmp_path):
    _gpu_strategies_rehearsal(tmp_path, ['DeepSpeed ZeRO-2 bf16', 'DeepSpeed ZeRO-3 bf16'])


def test_resume_fast_forward_benchmark_runs(tmp_path):
    report = tmp_path / 'resume.json'
    output = _run(['benchmarks/resume_fast_forward.py', '--at', '200', '--repeats', '1', '--json', str(report)],
                  tmp_path)
    assert '| mmengine Runner (loads every skipped batch) |' in output and '| **mm_lightning**' in output
    with open(report) as f:
        result = json.load(f)
    assert result['script'] == 'resume_fast_forward' and result['repeats'] == 1 and result['at'] == 200
    assert list(result['runs']) == ['mmengine', 'mm_lightning']
    assert all(len(runs) == 1 and runs[0]['resume_s'] > 0 for runs in result['runs'].values())


def test_bridge_cost_benchmark_gathers_every_script(tmp_path):
    markdown, report = tmp_path / 'bridge.md', tmp_path / 'bridge.json'
    only = ['overhead', 'validation', 'resume', 'startup']
    output = _run(['benchmarks/bridge_cost.py', '--quick', '--only', *only, '--markdown', str(markdown),
                   '--json', str(report)], tmp_path)
    table = markdown.read_text()
    assert table in output
    rows = {line.split(' | ')[0][2:]: line for line in table.splitlines() if line.startswith('| ')}
    for row in ('time per iteration, toy MLP, hooks=none', 'time per iteration, toy MLP, hooks=default',
                'time to 1st iteration from building the runner, toy MLP', 'val() time, 2,000 samples',
                'val() peak RSS', 'resume at iteration 200: train() to 1st resumed iteration',
                'time to 1st iteration, fresh process (wall)', '`--help`, fresh process (wall)'):
        assert row in rows, (row, list(rows))
        assert 'failed' not in rows[row] and 'skipped' not in rows[row]
    assert 'unreliable' in rows['val() peak RSS']  # one run: fewer than 5
    assert not any(row.startswith(('time per iteration, ResNet', 'checkpoint')) for row in rows)  # not --only
    with open(report) as f:
        result = json.load(f)
    assert result['script'] == 'bridge_cost' and result['repeats'] == 1 and result['table'] == table
    assert {'date_utc', 'cpus', 'load_before', 'load_after', 'torch', 'lightning', 'mmengine',
            'python'} <= set(result['environment'])
    assert list(result['results']) == ['overhead_none', 'overhead_default', 'validation', 'resume', 'startup']
    for key in ('overhead_none', 'overhead_default', 'validation', 'resume'):
        assert {'mmengine', 'mm_lightning'} <= set(result['results'][key]['runs']), key
    assert len(result['results']['startup']['runs']['mm_lightning train: 1st iteration']) == 1
    assert result['results']['overhead_none']['script'] == 'overhead'
    assert len(result['results']['overhead_none']['runs']['lightning']) == 1
    assert _run(['benchmarks/bridge_cost.py', '--table-from', str(report)], tmp_path) == table  # runs nothing


def test_startup_benchmark_runs(tmp_path):
    output = _run(['benchmarks/startup.py', '--repeats', '1'], tmp_path)
    for row in ('| --help |', '| explain |', '| config error |', '| mm_lightning train: 1st iteration |',
                '| mmengine tools/train.py: 1st iteration |'):
        assert row in output


def test_validation_benchmark_runs_and_engines_agree(tmp_path):
    report = tmp_path / 'validation.json'
    output = _run(['benchmarks/validation.py', '--samples', '2000', '--repeats', '1', '--json', str(report)], tmp_path)
    for row in ('| mmengine Runner |', '| mm_lightning |', '| plain Lightning |'):
        assert row in output
    assert 'metrics (all engines, all runs agree)' in output  # the script exits 1 when they do not
    with open(report) as f:
        result = json.load(f)
    assert result['metrics_agree'] and result['metrics']['mmengine'][0]['bench/samples'] == 2000


def test_checkpoint_cost_benchmark_runs_and_sizes_agree(tmp_path):
    report = tmp_path / 'checkpoint_cost.json'
    output = _run(['benchmarks/checkpoint_cost.py', '--repeats', '1', '--params', '200000', '--json', str(report)],
                  tmp_path)
    for row in ('| mmengine Runner |', '| mm_lightning |', '| plain Lightning |'):
        assert row in output
    with open(report) as f:
        result = json.load(f)
    assert result['script'] == 'checkpoint_cost' and result['repeats'] == 1
    assert abs(result['params'] - 200000) < 2000 and {'torch', 'lightning', 'mmengine', 'cpus'} <= set(
        result['environment'])
    assert set(result['runs']) == {'mmengine', 'mm_lightning', 'lightning'}
    runs = [engine_runs[0] for engine_runs in result['runs'].values()]
    assert all(len(engine_runs) == 1 for engine_runs in result['runs'].values())
    for run in runs:
        assert set(run) == {'save_s', 'size_mb', 'load_s', 'peak_rss_mb'}
        assert run['save_s'] > 0 and run['load_s'] > 0 and run['peak_rss_mb'] > 0
    sizes = [run['size_mb'] for run in runs]  # weights + momentum: 2 x 4 bytes per parameter, ~1.6 MB
    assert max(sizes) / min(sizes) < 1.05 and 1.5 < min(sizes) < 2.0
