"""Evaluators are mmengine's own objects: parity with mmengine, custom evaluators, native torchmetrics, DDP."""
import copy
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
import torchmetrics
from conftest import data
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner
from paths import TESTS
from toy import ToyAccuracy

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.runtime.metrics import TorchMetricAdapter

VAL = data(size=13, seed=1, shuffle=False, batch_size=4)
CFG = dict(model=dict(type='ToyClassifier'), randomness=dict(seed=8),
           train_dataloader=data(size=24, batch_size=4), train_cfg=dict(by_epoch=True, max_epochs=2),
           optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
           val_dataloader=VAL, val_cfg=dict(), test_dataloader=VAL, test_cfg=dict(),
           val_evaluator=[dict(type='ToyAccuracy'), dict(type='ToyAccuracy', prefix='again')],
           test_evaluator=dict(type='ToyAccuracy', prefix='test_prefix'))


def _runner(cls, cfg, tmp_path, name):
    one = copy.deepcopy(cfg)
    one.update(work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}')
    return cls.from_cfg(one)


def test_metrics_match_mmengine_in_training_and_standalone(tmp_path):
    results = {}
    for name, cls in (('mm', Runner), ('ours', FlexibleRunner)):
        runner = _runner(cls, CFG, tmp_path, name)
        runner.train()
        history = runner.message_hub.get_scalar('val/again/accuracy').data[0].tolist()
        results[name] = (history, runner.val(), runner.test())
    assert results['ours'] == results['mm']
    history, val, test = results['ours']
    assert len(history) == 2 and set(val) == {'toy/accuracy', 'toy/count', 'toy/index_sum', 'again/accuracy',
                                              'again/count', 'again/index_sum'}
    assert val['toy/count'] == 13 and test['test_prefix/count'] == 13


def test_duplicate_metric_names_fail_as_in_mmengine(tmp_path):
    cfg = dict(CFG, val_evaluator=[dict(type='ToyAccuracy'), dict(type='ToyAccuracy')])
    with pytest.raises(ValueError, match='multiple evaluation results with the same metric name toy/accuracy'):
        _runner(FlexibleRunner, cfg, tmp_path, 'dup').val()


@pytest.mark.parametrize('evaluator', [
    Evaluator([ToyAccuracy()]),
    dict(metrics=[dict(type='ToyAccuracy')]),
    dict(type='Evaluator', metrics=dict(type='ToyAccuracy')),
    [ToyAccuracy()],
    ToyAccuracy(),
], ids=['Evaluator', 'metrics-list', 'metrics-dict', 'built-list', 'built-metric'])
def test_every_evaluator_form(tmp_path, evaluator):
    # Built objects are passed to the constructor (a config holding them could not be dumped).
    runner = FlexibleRunner(model=dict(type='ToyClassifier'), work_dir=str(tmp_path),
                            experiment_name=f'forms_{tmp_path.name}', val_dataloader=VAL, val_cfg=dict(),
                            val_evaluator=evaluator)
    assert runner.val()['toy/count'] == 13
    assert type(runner.val_evaluator) is Evaluator and isinstance(runner.val_evaluator.metrics[0], ToyAccuracy)
    if isinstance(evaluator, Evaluator):
        assert runner.val_evaluator is evaluator  # a built evaluator stays as it is
    elif isinstance(evaluator, list):
        assert runner.val_evaluator.metrics[0] is evaluator[0]


class PrefixingEvaluator(Evaluator):
    """A custom Evaluator type from a config, with a method of its own (as mmagic's prepare_metrics)."""

    def __init__(self, metrics, tag):
        super().__init__(metrics)
        self.tag = tag

    def evaluate(self, size):
        return {f'{self.tag}/{key}': value for key, value in super().evaluate(size).items()}


def test_custom_evaluator_types_and_built_metrics_are_mmengines_objects(tmp_path):
    from mmengine.registry import EVALUATOR
    EVALUATOR.register_module(module=PrefixingEvaluator, force=True)
    metric = ToyAccuracy(collect_device='gpu')
    cfg = dict(CFG, val_evaluator=dict(type='PrefixingEvaluator', tag='mine', metrics=[dict(type='ToyAccuracy')]))
    results = {}
    for name, cls in (('mm', Runner), ('ours', FlexibleRunner)):
        runner = _runner(cls, cfg, tmp_path, name)
        results[name] = runner.val()
        assert type(runner.val_evaluator) is PrefixingEvaluator and runner.val_evaluator.tag == 'mine'
    assert results['ours'] == results['mm'] and results['ours']['mine/toy/count'] == 13
    runner = FlexibleRunner(model=dict(type='ToyClassifier'), work_dir=str(tmp_path),
                            experiment_name=f'built_{tmp_path.name}', val_dataloader=VAL, val_cfg=dict(),
                            val_evaluator=metric)
    assert runner.val_evaluator.metrics == [metric] and metric.collect_device == 'gpu'  # kept as built


def test_native_torchmetrics_equals_mmengine_style_metric(tmp_path):
    cfg = dict(CFG, val_evaluator=[
        dict(type='ToyAccuracy'),
        dict(type='torchmetrics.classification.MulticlassAccuracy', num_classes=3, average='micro',
             input_keys=dict(preds='pred', target='label')),
        dict(type='torchmetrics.classification.MulticlassF1Score', num_classes=3, name='f1',
             input_keys=dict(preds='pred', target='label'))])
    runner = _runner(FlexibleRunner, cfg, tmp_path, 'native')
    runner.train()
    metrics = runner.val()
    assert isinstance(runner.val_evaluator.metrics[1], TorchMetricAdapter)
    assert metrics['MulticlassAccuracy'] == pytest.approx(metrics['toy/accuracy'] / 100, abs=1e-6)
    assert 'f1' in metrics and float(runner.trainer.callback_metrics['MulticlassAccuracy']) == pytest.approx(
        metrics['MulticlassAccuracy'])


def test_native_metric_given_as_a_class(tmp_path):
    runner = FlexibleRunner(model=dict(type='ToyClassifier'), work_dir=str(tmp_path),
                            experiment_name=f'cls_{tmp_path.name}', val_dataloader=VAL, val_cfg=dict(),
                            val_evaluator=dict(type=torchmetrics.classification.MulticlassAccuracy, num_classes=3,
                                               input_keys=dict(preds='pred', target='label'), prefix='tm'))
    assert set(runner.val()) == {'tm/MulticlassAccuracy'}


def test_native_metric_inputs_not_found(tmp_path):
    cfg = dict(CFG, val_evaluator=dict(type='torchmetrics.classification.MulticlassAccuracy', num_classes=3,
                                       input_keys=dict(preds='scores')))
    with pytest.raises(ConfigError, match=r"MulticlassAccuracy: no 'preds' input in the model outputs; "
                                          r"looked for \['scores'\], found \['index', 'label', 'pred'\]"):
        _runner(FlexibleRunner, cfg, tmp_path, 'missing').val()


def test_unknown_metric_type(tmp_path):
    cfg = dict(CFG, val_evaluator=dict(type='torchmetrics.NoSuchMetric'))
    with pytest.raises(ConfigError, match=r"val_evaluator.type: 'torchmetrics.NoSuchMetric' is not in the "
                                          r"mmengine::metric registry"):
        _runner(FlexibleRunner, cfg, tmp_path, 'unknown').val()


def test_dump_results(tmp_path):
    cfg = dict(CFG, test_evaluator=dict(type='DumpResults', out_file_path=str(tmp_path / 'preds.pkl')))
    _runner(FlexibleRunner, cfg, tmp_path, 'dump').test()
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        dumped = pickle.load(f)
    assert [d['index'] for d in dumped] == list(range(13))


def test_native_metric_drops_the_padding_of_each_rank(monkeypatch):
    """Rank 1 of 2 over 13 samples holds positions 1, 3, ..., 13; position 13 is the sampler's padding."""
    monkeypatch.setattr('mm_lightning.runtime.metrics.get_dist_info', lambda: (1, 2))
    native = TorchMetricAdapter(torchmetrics.classification.MulticlassAccuracy(num_classes=3, average='micro'),
                                input_keys=dict(preds='pred', target='label'))
    samples = [dict(pred=torch.tensor(1), label=torch.tensor(1 if i < 6 else 0)) for i in range(7)]
    native.process(None, samples[:4])
    native.process(None, samples[4:])
    monkeypatch.setattr(native.metric, 'sync_on_compute', False)  # one process stands in for rank 1
    assert native.evaluate(13) == {'MulticlassAccuracy': 1.0}  # the padded, wrong 7th sample is not counted


@pytest.mark.skipif(shutil.which('torchrun') is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), 'torchrun')), reason='torchrun comes with torch')
def test_two_process_ddp_counts_each_sample_once(tmp_path):
    sys.path.insert(0, os.path.join(TESTS, 'scripts'))
    from ddp_eval import config
    single = FlexibleRunner.from_cfg(config(str(tmp_path / 'single'), 'none')).val()
    out = tmp_path / 'ddp.json'
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    env = dict(os.environ, PYTHONPATH=TESTS, OMP_NUM_THREADS='1')
    result = subprocess.run([torchrun, '--nproc_per_node=2', '--master_port=29531',
                             os.path.join(TESTS, 'scripts', 'ddp_eval.py'), str(out), str(tmp_path / 'ddp')],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp['world_size'] == 2
    assert ddp['metrics'] == pytest.approx(single)
    assert ddp['metrics']['toy/count'] == 13 and ddp['metrics']['toy/index_sum'] == sum(range(13))
    with open(tmp_path / 'ddp' / 'dump.pkl', 'rb') as f:
        assert [d['index'] for d in pickle.load(f)] == list(range(13))


def test_fp16_evaluation_matches_mmengine(tmp_path):
    cfg = dict(CFG, val_cfg=dict(fp16=True), test_cfg=dict(fp16=True))
    results = {}
    for name, cls in (('mm', Runner), ('ours', FlexibleRunner)):
        runner = _runner(cls, cfg, tmp_path, name)
        results[name] = (runner.val(), runner.test())
    assert results['ours'] == results['mm']
