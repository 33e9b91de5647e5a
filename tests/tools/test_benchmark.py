"""`mm-lightning benchmark`: stable JSON figures for CI, and a non-zero exit on a regression."""
import json
import os

import pytest
import torch
from paths import ROOT

from mm_lightning import ConfigError
from mm_lightning.tools.benchmark import FIGURES, SCHEMA, regressions, steady_state
from mm_lightning.tools.cli import main
from mm_lightning.tools.engines import Iteration

EXAMPLE = os.path.join('examples', 'spiral', 'mlp_spiral.py')


@pytest.fixture
def in_repository(monkeypatch):
    """The example's custom_imports name `examples.spiral.components`, importable from the repository root."""
    monkeypatch.chdir(ROOT)


def test_both_engines_report_every_figure(tmp_path, capsys, in_repository):
    out = tmp_path / 'bench.json'
    status = main(['benchmark', EXAMPLE, '--engine', 'both', '--iters', '8', '--warmup', '2',
                   '--json', str(out), '--work-dir', str(tmp_path / 'runs')])
    assert status == 0
    report = json.loads(out.read_text())
    assert report['schema'] == SCHEMA and (report['iters'], report['warmup']) == (8, 2)
    assert set(report['engines']) == {'mm_lightning', 'mmengine'}
    for engine, figures in report['engines'].items():
        assert set(FIGURES) <= set(figures), engine
        assert figures['iterations'] == 8
        for name in ('time_per_iter_ms', 'samples_per_s', 'peak_memory_mb', 'time_to_first_iter_s', 'final_loss'):
            assert figures[name] > 0, (engine, name)
        assert 0 <= figures['data_loading_share'] < 1
        assert figures['memory_kind'] == ('cuda_max_allocated' if torch.cuda.is_available() else 'rss')
        # the two timing figures agree: the example's batches are of 32 samples
        assert figures['samples_per_s'] * figures['time_per_iter_ms'] / 1000 == pytest.approx(32), engine
    assert report['engines']['mm_lightning']['final_loss'] == pytest.approx(
        report['engines']['mmengine']['final_loss'], abs=1e-5)  # same config, same seed, same training
    assert set(report['ratio']) == {'time_per_iter_ms', 'peak_memory_mb', 'time_to_first_iter_s'}
    assert all(value > 0 for value in report['ratio'].values())
    assert report['environment']['device'] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')
    assert report['environment']['torch'] == torch.__version__
    table = capsys.readouterr().out
    assert 'time_per_iter_ms' in table and 'mm_lightning / mmengine' in table


def test_an_impossible_baseline_fails_and_names_the_figure(tmp_path, capsys, in_repository):
    baseline = tmp_path / 'baseline.json'
    baseline.write_text(json.dumps(dict(schema=SCHEMA, engines=dict(mm_lightning=dict(time_per_iter_ms=1e-6)))))
    status = main(['benchmark', EXAMPLE, '--iters', '4', '--warmup', '1', '--baseline', str(baseline),
                   '--tolerance', '0.5', '--work-dir', str(tmp_path / 'runs')])
    assert status == 1
    out = capsys.readouterr().out
    assert 'regression: mm_lightning.time_per_iter_ms:' in out and 'by more than 50%' in out


def _report(**figures):
    return dict(schema=SCHEMA, engines=dict(mm_lightning=figures))


def test_regressions_read_each_figure_in_its_direction():
    baseline = _report(time_per_iter_ms=10.0, samples_per_s=100.0, data_loading_share=0.10, final_loss=1.0)
    assert regressions(baseline, baseline, 0.0) == []
    assert regressions(_report(time_per_iter_ms=11.9, samples_per_s=81.0, data_loading_share=0.29), baseline,
                       0.2) == []
    worse = regressions(_report(time_per_iter_ms=12.1, samples_per_s=79.0, data_loading_share=0.31,
                                final_loss=1.3), baseline, 0.2)
    assert [line.split(':')[0] for line in worse] == ['mm_lightning.time_per_iter_ms', 'mm_lightning.samples_per_s',
                                                      'mm_lightning.data_loading_share', 'mm_lightning.final_loss']
    assert regressions(_report(time_per_iter_ms=5.0, samples_per_s=500.0), baseline, 0.0) == []  # better is fine
    with pytest.raises(ConfigError, match='baseline: schema'):
        regressions(baseline, dict(engines={}), 0.2)


def test_steady_state_leaves_out_the_warm_up_and_the_first_iteration():
    ends = [1.0, 1.5, 1.6, 1.7, 2.0]  # iteration 2 is slow (warm-up), 5 is an outlier for the mean
    iterations = [Iteration(i + 1, 0, {}, {}, started=end - 0.05, ended=end, samples=4) for i, end in enumerate(ends)]
    figures = steady_state(iterations, warmup=2)
    assert figures['time_per_iter_ms'] == pytest.approx(100.0)  # median of 100, 100, 300 ms
    assert figures['samples_per_s'] == pytest.approx(4 / 0.1)  # the median iteration's: the outlier counts in neither
    assert figures['data_loading_share'] == pytest.approx((0.05 + 0.05 + 0.25) / 0.5)
