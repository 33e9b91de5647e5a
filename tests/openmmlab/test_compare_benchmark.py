"""``mm-lightning compare`` and ``benchmark`` on a shipped OpenMMLab config (mmpretrain's ResNet-18
ImageNet config at 32 px on synthetic JPEGs), as a user runs them on a repo's config file."""
import json

import pytest

from mm_lightning.tools.cli import main

from .available import requires
from .small_configs import imagenet_resnet18_config

pytestmark = requires('mmpretrain.datasets', 'mmpretrain.models')
BATCH = 4  # imagenet_resnet18_config's batches; 8 images: two iterations an epoch


@pytest.fixture
def config_file(imagenet_root, tmp_path):
    path = str(tmp_path / 'resnet18_8xb32_in1k.py')
    imagenet_resnet18_config(imagenet_root).dump(path)
    return path


def test_compare_finds_both_runners_identical_at_every_iteration_and_validation(config_file, tmp_path, capsys):
    report_file = tmp_path / 'compare.json'
    status = main(['compare', config_file, '--iters', '4', '--work-dir', str(tmp_path / 'compare'),
                   '--json', str(report_file)])
    report = json.loads(report_file.read_text())
    assert status == 0, report['first_divergence']
    assert report['identical'] and report['atol'] == 0.0
    assert report['ran'] == {'mmengine': 4, 'mm_lightning': 4}
    assert len(report['validations']) == 2  # the config validates after every epoch
    assert capsys.readouterr().out.rstrip().endswith('Identical within atol=0.')


def test_benchmark_reports_consistent_figures_for_both_engines(config_file, tmp_path):
    report_file = tmp_path / 'benchmark.json'
    status = main(['benchmark', config_file, '--engine', 'both', '--iters', '8', '--warmup', '2', '--repeats', '2',
                   '--work-dir', str(tmp_path / 'benchmark'), '--json', str(report_file)])
    assert status == 0
    report = json.loads(report_file.read_text())
    for engine in ('mmengine', 'mm_lightning'):
        figures = report['engines'][engine]
        assert figures['iterations'] == 8
        for samples_per_s, time_per_iter_ms in zip(figures['samples_per_s']['runs'],
                                                   figures['time_per_iter_ms']['runs']):
            assert samples_per_s * time_per_iter_ms / 1000 == pytest.approx(BATCH)
        assert all(0 <= share < 1 for share in figures['data_loading_share']['runs'])
        assert figures['final_loss']['median'] > 0
    ours, theirs = (report['engines'][engine]['time_per_iter_ms']['runs'] for engine in ('mm_lightning', 'mmengine'))
    assert report['ratio']['time_per_iter_ms']['runs'] == pytest.approx([a / b for a, b in zip(ours, theirs)])
