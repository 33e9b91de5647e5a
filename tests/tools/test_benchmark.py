"""`mm-lightning benchmark`: JSON figures over repeated runs for CI; exit 1 on a regression, 3 when undecided."""
import json
import os

import pytest
import torch
from paths import ROOT

from mm_lightning import ConfigError
from mm_lightning.tools import benchmark as benchmark_module
from mm_lightning.tools.benchmark import (
    FIGURES,
    SCHEMA,
    baseline_judgements,
    benchmark_report,
    default_threads,
    format_benchmark,
    steady_state,
)
from mm_lightning.tools.benchmark_statistics import PASS, REGRESSION, UNDECIDED, overall
from mm_lightning.tools.cli import main
from mm_lightning.tools.engines import Iteration

EXAMPLE = os.path.join('examples', 'spiral', 'mlp_spiral.py')


@pytest.fixture
def in_repository(monkeypatch):
    """The example's custom_imports name `examples.spiral.components`, importable from the repository root."""
    monkeypatch.chdir(ROOT)


def test_both_engines_report_every_figure(tmp_path, capsys, in_repository):
    out = tmp_path / 'bench.json'
    status = main(['benchmark', EXAMPLE, '--engine', 'both', '--iters', '8', '--warmup', '2', '--repeats', '2',
                   '--threads', '1', '--json', str(out), '--work-dir', str(tmp_path / 'runs')])
    assert status == 0
    report = json.loads(out.read_text())
    assert report['schema'] == SCHEMA and (report['iters'], report['warmup'], report['repeats']) == (8, 2, 2)
    assert report['threads'] == report['environment']['threads'] == 1
    assert report['order'] == ['mm_lightning', 'mmengine', 'mm_lightning', 'mmengine']
    assert set(report['engines']) == {'mm_lightning', 'mmengine'}
    for engine, figures in report['engines'].items():
        assert set(FIGURES) <= set(figures), engine
        assert figures['iterations'] == 8 and figures['threads'] == [1]  # the child ran with the pinned threads
        for name in ('time_per_iter_ms', 'cpu_per_iter_ms', 'samples_per_s', 'peak_memory_mb', 'time_to_first_iter_s',
                     'final_loss'):
            summary = figures[name]
            assert len(summary['runs']) == 2 and all(run > 0 for run in summary['runs']), (engine, name)
            assert summary['min'] <= summary['q1'] <= summary['median'] <= summary['q3'] <= summary['max']
            assert (summary['low'], summary['high']) == (summary['min'], summary['max'])
            assert summary['coverage'] == 0.5 and summary['unreliable']  # 2 runs: too few for a 90% interval
        assert all(0 <= run < 1 for run in figures['data_loading_share']['runs'])
        assert figures['memory_kind'] == ('cuda_max_allocated' if torch.cuda.is_available() else 'rss')
        # the two timing figures agree within each run: the example's batches are of 32 samples
        for samples_per_s, time_per_iter_ms in zip(figures['samples_per_s']['runs'],
                                                   figures['time_per_iter_ms']['runs']):
            assert samples_per_s * time_per_iter_ms / 1000 == pytest.approx(32), engine
    assert report['engines']['mm_lightning']['final_loss']['runs'] == pytest.approx(
        report['engines']['mmengine']['final_loss']['runs'], abs=1e-5)  # same config, same seed, same training
    assert set(report['ratio']) == {'time_per_iter_ms', 'cpu_per_iter_ms', 'peak_memory_mb', 'time_to_first_iter_s'}
    ours, theirs = (report['engines'][engine]['time_per_iter_ms']['runs'] for engine in ('mm_lightning', 'mmengine'))
    assert report['ratio']['time_per_iter_ms']['runs'] == pytest.approx([a / b for a, b in zip(ours, theirs)])
    assert isinstance(report['unreliable'], list)
    assert report['environment']['device'] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')
    assert report['environment']['torch'] == torch.__version__
    table = capsys.readouterr().out
    assert 'time_per_iter_ms' in table and 'mm_lightning / mmengine' in table
    assert 'median [90% interval of the median]' in table
    assert '2 interleaved runs per engine, 1 CPU thread(s) each' in table


def test_an_impossible_baseline_fails_and_names_the_figure(tmp_path, capsys, in_repository):
    baseline = tmp_path / 'baseline.json'
    # A plain number is a target taken as exact; a tolerance of 5000% cannot call five runs too noisy.
    baseline.write_text(json.dumps(dict(schema=SCHEMA, engines=dict(mm_lightning=dict(time_per_iter_ms=1e-6)))))
    status = main(['benchmark', EXAMPLE, '--iters', '3', '--warmup', '1', '--repeats', '5', '--threads', '1',
                   '--baseline', str(baseline), '--tolerance', '50', '--work-dir', str(tmp_path / 'runs')])
    assert status == 1
    out = capsys.readouterr().out
    assert 'regression: mm_lightning.time_per_iter_ms: worse than the baseline by more than 5000%' in out
    assert out.splitlines()[-1].startswith('regression: 1 regressed, 0 undecided, 0 passed of 1 figures')


def test_a_baseline_of_single_runs_is_refused_before_anything_runs(tmp_path, capsys, in_repository):
    baseline = tmp_path / 'baseline.json'
    baseline.write_text(json.dumps(dict(schema='mm_lightning.benchmark/1', engines={})))
    status = main(['benchmark', EXAMPLE, '--baseline', str(baseline), '--work-dir', str(tmp_path / 'runs')])
    assert status == 2
    assert 'its figures are single runs' in capsys.readouterr().err
    assert not (tmp_path / 'runs').exists()


# -- the report and the baseline check, from made-up runs ---------------------------------------------
def _run(time_per_iter_ms, **figures):
    return dict(dict(time_per_iter_ms=time_per_iter_ms, samples_per_s=32000 / time_per_iter_ms,
                     data_loading_share=0.1, peak_memory_mb=400.0, time_to_first_iter_s=0.5, final_loss=0.75,
                     memory_kind='rss', iterations=60, threads=1), **figures)


def _fake_report(ours, theirs, tolerance=0.2):
    runs = dict(mm_lightning=[_run(t) for t in ours], mmengine=[_run(t) for t in theirs])
    return benchmark_report(runs, config='c.py', iters=60, warmup=10, threads=1, tolerance=tolerance,
                            environment=dict(device='cpu', torch='t', lightning='l', mmengine='m'))


def test_the_report_takes_ratios_within_each_pair_of_runs():
    # The machine slows down 10x for the third pair: each pair's ratio is still 0.8, the medians' is not.
    report = _fake_report(ours=[8.0, 8.0, 80.0, 8.0, 8.0], theirs=[10.0, 10.0, 100.0, 10.0, 10.0])
    assert report['repeats'] == 5 and report['order'] == ['mm_lightning', 'mmengine'] * 5
    assert report['ratio']['time_per_iter_ms']['runs'] == pytest.approx([0.8] * 5)
    assert report['ratio']['time_per_iter_ms']['spread'] == pytest.approx(0)
    assert 'ratio.time_per_iter_ms' not in report['unreliable']
    figure = report['engines']['mm_lightning']['time_per_iter_ms']
    assert (figure['median'], figure['min'], figure['max']) == (8.0, 8.0, 80.0)
    assert report['engines']['mm_lightning']['final_loss']['runs'] == [0.75] * 5


def test_the_report_and_its_table_flag_intervals_wider_than_the_tolerance():
    report = _fake_report(ours=[5.0, 9.0, 10.0, 11.0, 20.0], theirs=[10.0] * 5)  # ratios 0.5 .. 2
    ratio = report['ratio']['time_per_iter_ms']
    assert (ratio['median'], ratio['q1'], ratio['q3']) == pytest.approx((1.0, 0.9, 1.1))
    assert (ratio['low'], ratio['high'], ratio['coverage']) == pytest.approx((0.5, 2.0, 0.9375))
    assert ratio['spread'] == pytest.approx(1.5) and ratio['unreliable']  # the quartiles alone look steady
    assert report['unreliable'] == ['mm_lightning.time_per_iter_ms', 'mm_lightning.samples_per_s',
                                    'ratio.time_per_iter_ms']
    table = format_benchmark(report)
    row = next(line for line in table.splitlines() if line.startswith('time_per_iter_ms'))
    assert '10 [5..20]' in row and row.endswith('unreliable (mm_lightning, ratio)')
    assert table.splitlines()[-1].startswith('unreliable: mm_lightning.samples_per_s, mm_lightning.time_per_iter_ms')
    assert _fake_report(ours=[5.0, 9.0, 10.0, 11.0, 20.0], theirs=[10.0] * 5, tolerance=2.0)['unreliable'] == []
    # three steady runs are still too few to say where a fourth run's median would fall
    assert 'ratio.time_per_iter_ms' in _fake_report(ours=[8.0] * 3, theirs=[10.0] * 3)['unreliable']


def _verdict_lines(report, baseline, tolerance=0.2):
    judgements = baseline_judgements(report, baseline, tolerance)
    return overall(judgements), {j.message.split(':')[0]: j.verdict for j in judgements}


STEADY_OURS = [8.0, 8.1, 7.9, 8.05, 7.95]


def test_baseline_checks_use_the_interval():
    baseline = _fake_report(ours=STEADY_OURS, theirs=[10.0] * 5)
    assert _verdict_lines(baseline, baseline)[0] == PASS
    slower = _fake_report(ours=[12.0, 12.1, 11.9, 12.05, 11.95], theirs=[10.0] * 5)  # 1.5x: beyond 20%, steady
    verdict, figures = _verdict_lines(slower, baseline)
    assert verdict == REGRESSION
    assert figures['ratio.time_per_iter_ms'] == figures['mm_lightning.time_per_iter_ms'] == REGRESSION
    assert figures['mm_lightning.samples_per_s'] == REGRESSION and figures['mmengine.time_per_iter_ms'] == PASS
    noisy = _fake_report(ours=[4.0, 11.0, 12.0, 13.0, 30.0], theirs=[10.0] * 5)  # median 1.2x, interval wide
    verdict, figures = _verdict_lines(noisy, baseline)
    assert verdict == UNDECIDED and figures['ratio.time_per_iter_ms'] == UNDECIDED
    # a noisy baseline decides nothing either, even against steady runs
    assert _verdict_lines(baseline, noisy)[1]['ratio.time_per_iter_ms'] == UNDECIDED
    with pytest.raises(ConfigError, match='baseline: schema'):
        baseline_judgements(baseline, dict(engines={}), 0.2)
    # a schema-2 report (quartiles as its spread) still serves: its runs give the interval
    old = json.loads(json.dumps(baseline).replace(SCHEMA, 'mm_lightning.benchmark/2'))
    for figure in filter(None, old['ratio'].values()):
        del figure['low'], figure['high'], figure['coverage']
    assert _verdict_lines(baseline, old)[0] == PASS and _verdict_lines(slower, old)[0] == REGRESSION


def test_a_plain_number_in_a_baseline_is_a_target():
    report = _fake_report(ours=STEADY_OURS, theirs=[10.0] * 5)
    verdict, figures = _verdict_lines(report, dict(schema=SCHEMA, ratio=dict(time_per_iter_ms=0.5)))
    assert (verdict, figures) == (REGRESSION, {'ratio.time_per_iter_ms': REGRESSION})
    assert _verdict_lines(report, dict(schema=SCHEMA, ratio=dict(time_per_iter_ms=0.8)))[0] == PASS
    assert _verdict_lines(report, dict(schema=SCHEMA))[0] == UNDECIDED  # nothing in common: nothing is passed


@pytest.mark.parametrize('verdict, status', [(PASS, 0), (REGRESSION, 1), (UNDECIDED, 3)])
def test_the_exit_status_and_last_line_give_the_verdict(verdict, status, tmp_path, capsys, monkeypatch):
    ours = {PASS: STEADY_OURS, REGRESSION: [12.0, 12.1, 11.9, 12.05, 11.95],
            UNDECIDED: [4.0, 11.0, 12.0, 13.0, 30.0]}[verdict]
    monkeypatch.setattr(benchmark_module, 'benchmark', lambda *args, **kwargs: _fake_report(ours, [10.0] * 5))
    baseline = tmp_path / 'baseline.json'
    baseline.write_text(json.dumps(_fake_report(STEADY_OURS, [10.0] * 5)))
    assert main(['benchmark', EXAMPLE, '--engine', 'both', '--baseline', str(baseline)]) == status
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f'{verdict}: ') and last.split('; exit ')[1].startswith(str(status))


def test_default_threads_follow_the_environment_else_the_free_cpus_left_by_the_loader():
    assert default_threads({}, dict(OMP_NUM_THREADS='3'), cpus=16, load=0.0) == 3
    assert default_threads({}, {}, cpus=2, load=0.3) == 2
    assert default_threads({}, {}, cpus=2, load=1.6) == 1  # a busy machine: one core is free
    assert default_threads(dict(train_dataloader=dict(num_workers=2)), {}, cpus=8, load=1.0) == 5
    assert default_threads(dict(train_dataloader=dict(num_workers=4)), {}, cpus=2, load=0.0) == 1


def test_steady_state_leaves_out_the_warm_up_and_the_first_iteration():
    ends = [1.0, 1.5, 1.6, 1.7, 2.0]  # iteration 2 is slow (warm-up), 5 is an outlier for the mean
    cpu = [0.5, 0.9, 0.95, 1.0, 1.05]  # the process ran 50 ms of CPU per iteration, waited the rest
    iterations = [Iteration(i + 1, 0, {}, {}, started=end - 0.05, ended=end, samples=4, cpu_ended=cpu[i])
                  for i, end in enumerate(ends)]
    figures = steady_state(iterations, warmup=2)
    assert figures['time_per_iter_ms'] == pytest.approx(100.0)  # median of 100, 100, 300 ms
    assert figures['cpu_per_iter_ms'] == pytest.approx(50.0)
    assert steady_state([Iteration(i + 1, 0, {}, {}, 0.0, float(i)) for i in range(4)], 1)['cpu_per_iter_ms'] is None
    assert figures['samples_per_s'] == pytest.approx(4 / 0.1)  # the median iteration's: the outlier counts in neither
    assert figures['data_loading_share'] == pytest.approx((0.05 + 0.05 + 0.25) / 0.5)
