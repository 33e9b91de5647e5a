"""`mm-lightning compare`: the same config under mmengine's Runner and mm_lightning, iteration by iteration."""
import json

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mm_lightning import FlexibleRunner
from mm_lightning.tools.cli import main

#: A toy config: 6 iterations per epoch, validation after every epoch.
CONFIG = """
model = dict(type='ToyClassifier', batch_norm=True)
train_dataloader = dict(dataset=dict(type='BlobDataset', size=24), sampler=dict(type='DefaultSampler', shuffle=True),
                        batch_size=4, num_workers=0)
val_dataloader = dict(dataset=dict(type='BlobDataset', size=12, seed=1), sampler=dict(type='DefaultSampler',
                      shuffle=False), batch_size=4, num_workers=0)
val_evaluator = dict(type='ToyAccuracy')
val_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
param_scheduler = dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=1)
default_hooks = dict(logger=dict(type='LoggerHook', interval=100))
log_level = 'WARNING'
"""


@HOOKS.register_module(force=True)
class HalveLRUnderLightning(Hook):
    """Halves the learning rate before the third iteration, but only when mm_lightning runs it."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if isinstance(runner, FlexibleRunner) and runner.iter == 2:
            for group in runner.optim_wrapper.optimizer.param_groups:
                group['lr'] *= 0.5


def _config(tmp_path, extra=''):
    path = tmp_path / 'toy_compare.py'
    path.write_text(CONFIG + extra)
    return str(path)


def test_a_config_identical_under_both_engines_exits_0(tmp_path, capsys):
    report_path = tmp_path / 'report.json'
    status = main(['compare', _config(tmp_path), '--iters', '8', '--work-dir', str(tmp_path / 'runs'),
                   '--json', str(report_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert 'Identical within atol=0.' in out
    report = json.loads(report_path.read_text())
    assert report['identical'] and report['first_divergence'] is None
    assert report['ran'] == dict(mmengine=8, mm_lightning=8)
    assert [row['iteration'] for row in report['iterations']] == list(range(1, 9))
    assert all(row['max_loss_diff'] == 0 and row['lr_equal'] for row in report['iterations'])
    first = report['iterations'][0]
    assert first['lr']['mmengine'] == first['lr']['mm_lightning'] == {'lr': [0.05]}  # LinearLR's start
    assert first['losses']['mmengine']['loss'] > 0
    (validation,) = report['validations']  # after epoch 1 (iteration 6); epoch 2's is past iteration 8
    assert validation['after_iteration'] == 6 and validation['max_metric_diff'] == 0
    assert validation['metrics']['mm_lightning'] == validation['metrics']['mmengine']
    assert 'toy/accuracy' in validation['metrics']['mmengine']
    assert (tmp_path / 'runs' / 'mmengine').is_dir() and (tmp_path / 'runs' / 'mm_lightning').is_dir()


def test_an_lr_change_under_mm_lightning_only_exits_1_and_names_the_iteration(tmp_path, capsys):
    config = _config(tmp_path, "custom_hooks = [dict(type='HalveLRUnderLightning')]\n")
    report_path = tmp_path / 'report.json'
    status = main(['compare', config, '--iters', '5', '--work-dir', str(tmp_path / 'runs'),
                   '--json', str(report_path)])
    out = capsys.readouterr().out
    assert status == 1
    report = json.loads(report_path.read_text())
    first = report['first_divergence']
    assert (first['iteration'], first['key']) == (3, 'lr')
    assert first['mm_lightning'] == [0.5 * first['mmengine'][0]]
    assert 'First divergence at iteration 3, lr:' in out
    rows = report['iterations']
    assert [row['lr_equal'] for row in rows] == [True, True, False, False, False]
    assert rows[2]['max_loss_diff'] == 0 and rows[3]['max_loss_diff'] > 0  # the step with the halved LR
