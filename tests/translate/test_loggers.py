"""vis_backends with a Lightning counterpart become Lightning loggers shared with the Trainer; a user's own
Lightning logger gets LoggerHook's training scalars."""
import csv
import glob
import json
import os
import struct

import lightning as L
import numpy as np
import pytest
from conftest import data
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from mm_lightning import ConfigDataModule, ConfigError, ConfigModule, FlexibleRunner, load_config, trainer_kwargs

CFG = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=24, batch_size=4),
           val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'),
           val_cfg=dict(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
           train_cfg=dict(by_epoch=True, max_epochs=2), randomness=dict(seed=0),
           default_hooks=dict(logger=dict(type='LoggerHook', interval=2)))


def _events(log_dir):
    """The TensorBoard events written under ``log_dir``, read from their record files."""
    from tensorboardX.proto import event_pb2  # the test extra's; only the TensorBoard tests read events
    for path in glob.glob(os.path.join(log_dir, 'events.out.tfevents.*')):
        with open(path, 'rb') as f:
            raw = f.read()
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack('<Q', raw[offset:offset + 8])
            yield event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
            offset += 16 + length


def _tags(log_dir):
    return {value.tag for event in _events(log_dir) for value in event.summary.value}


def test_tensorboard_backend_becomes_the_trainers_logger(tmp_path):
    cfg = dict(CFG, work_dir=str(tmp_path), experiment_name=f'tb_{tmp_path.name}',
               visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'),
                                                                dict(type='TensorboardVisBackend')]))
    runner = FlexibleRunner.from_cfg(cfg)
    runner.train()
    (logger,) = runner.lightning_loggers
    assert isinstance(logger, TensorBoardLogger) and runner.trainer.logger is logger
    vis_dir = os.path.join(runner.log_dir, 'vis_data')
    assert os.path.realpath(logger.log_dir) == os.path.realpath(vis_dir)
    assert os.path.isfile(os.path.join(vis_dir, 'scalars.json'))  # LocalVisBackend stays mmengine's
    tags = _tags(vis_dir)
    assert {'loss', 'lr', 'toy/accuracy', 'config/text_summary'} <= tags  # LoggerHook scalars, self.log metrics, config
    assert runner.visualizer.get_backend('TensorboardVisBackend') is not None
    assert not os.path.exists(os.path.join(str(tmp_path), 'lightning_logs'))


def test_unknown_tensorboard_option(tmp_path):
    cfg = dict(CFG, work_dir=str(tmp_path), experiment_name=f'tbx_{tmp_path.name}',
               visualizer=dict(type='Visualizer', vis_backends=[dict(type='TensorboardVisBackend', flush=1)]))
    with pytest.raises(ConfigError, match=r"^visualizer\.vis_backends\[0\]\.flush: TensorboardVisBackend has no "
                                          r"option 'flush'; its options are \['save_dir'\]"):
        FlexibleRunner.from_cfg(cfg)


IMAGE = np.full((8, 8, 3), 200, dtype=np.uint8)


def _run(tmp_path, name, backend):
    """Train with ``backend`` next to LocalVisBackend, after a visualization hook's ``add_image``."""
    cfg = dict(CFG, work_dir=str(tmp_path / 'wd'), experiment_name=f'{name}_{tmp_path.name}',
               visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'), backend]))
    runner = FlexibleRunner.from_cfg(cfg)
    runner.visualizer.add_image('sample.png', IMAGE, step=1)
    runner.train()
    (logger,) = runner.lightning_loggers
    assert runner.trainer.logger is logger
    return runner, logger


def _wandb_records(path):
    """The records of a wandb run file (a LevelDB-style log of ``Record`` protobufs after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2
    block = 32768
    with open(path, 'rb') as f:
        raw = f.read()
    assert raw[:4] == b':W&B'
    offset, chunk, records = 7, b'', []
    while offset + 7 <= len(raw):
        if block - offset % block < 7:  # a block's tail too short for a record header is padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack('<IHB', raw[offset:offset + 7])
        if kind == 0:
            break
        chunk = raw[offset + 7:offset + 7 + length] if kind in (1, 2) else chunk + raw[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            records.append(wandb_internal_pb2.Record.FromString(chunk))
    return records


def test_wandb_backend_becomes_the_trainers_logger(tmp_path, monkeypatch):
    wandb = pytest.importorskip('wandb')
    from lightning.pytorch.loggers import WandbLogger
    from PIL import Image
    for variable in ('WANDB_DIR', 'WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR', 'WANDB_DATA_DIR'):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.chdir(tmp_path)  # wandb's log_code (called by mmengine's add_config) saves the cwd's sources
    runner, logger = _run(tmp_path, 'wandb', dict(
        type='WandbVisBackend', init_kwargs=dict(project='mm-lightning-test', name='toy-run', tags=['ci']),
        define_metric_cfg={'toy/accuracy': 'max'}, log_code_name='toy-code'))
    assert isinstance(logger, WandbLogger)
    assert wandb.run is None  # close() (LoggerHook's after_run) finished the run, as mmengine's backend does
    wandb.teardown()  # the wandb service writes the run file in the background: wait for it
    (path,) = glob.glob(os.path.join(runner.log_dir, 'vis_data', 'wandb', 'offline-run-*', 'run-*.wandb'))
    records = _wandb_records(path)
    kinds = [record.WhichOneof('record_type') for record in records]
    (run,) = [record.run for record in records if record.HasField('run')]
    assert (run.project, run.display_name, list(run.tags)) == ('mm-lightning-test', 'toy-run', ['ci'])
    config_keys = {item.key for record in records if record.HasField('config') for item in record.config.update}
    assert {'model', 'train_cfg', 'optim_wrapper', 'visualizer'} <= config_keys  # add_config: mmengine's config
    rows = [{item.key or '/'.join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records if record.HasField('history')]
    hook_rows = [row for row in rows if 'loss' in row]  # LoggerHook, every 2 iterations, at mmengine's step
    assert [(row['iter'], row['trainer/global_step']) for row in hook_rows] == [(i, i) for i in range(2, 13, 2)]
    metric_rows = [row for row in rows if 'toy/accuracy' in row]  # self.log_dict's, once per validation
    hook_val_rows = [row for row in rows if 'time' in row and 'loss' not in row]  # LoggerHook after_val_epoch
    assert [row['epoch'] for row in metric_rows] == [0, 1] and len(hook_val_rows) == 2
    assert all('toy/accuracy' not in row for row in hook_val_rows)  # left to Lightning: not written twice
    (accuracy,) = [record.metric for record in records if record.HasField('metric')
                   and record.metric.name == 'toy/accuracy']
    assert accuracy.summary.max
    code = [record.artifact for record in records if record.HasField('artifact')]
    assert [(artifact.type, artifact.name) for artifact in code] == [('code', 'toy-code')]
    (image_row,) = [row for row in rows if 'sample.png/_type' in row]  # add_image
    assert image_row['sample.png/_type'] == 'images/separated' and image_row['trainer/global_step'] == 1
    (image_file,) = image_row['sample.png/filenames']
    with Image.open(os.path.join(os.path.dirname(path), 'files', image_file)) as image:
        assert np.array_equal(np.asarray(image), IMAGE)
    assert kinds[-1] == 'exit'


def _mlflow_text(run_dir, *parts):
    with open(os.path.join(run_dir, *parts)) as f:
        return f.read()


def _mlflow_metric(run_dir, name):
    rows = [line.split() for line in _mlflow_text(run_dir, 'metrics', name).splitlines()]
    return [(float(value), int(step)) for _, value, step in rows]


def test_mlflow_backend_becomes_the_trainers_logger(tmp_path, monkeypatch):
    pytest.importorskip('mlflow')
    from lightning.pytorch.loggers import MLFlowLogger
    from PIL import Image
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')  # MLflow 3 asks file stores to opt in
    store = tmp_path / 'mlruns'
    runner, logger = _run(tmp_path, 'mlflow', dict(
        type='MLflowVisBackend', exp_name='mm-lightning-test', run_name='toy-run', tags=dict(team='vision'),
        params=dict(schedule='short'), tracking_uri=f'file://{store}',
        tracked_config_keys=['train_cfg', 'optim_wrapper'], artifact_suffix=('.log', '.py')))
    assert isinstance(logger, MLFlowLogger)
    (experiment_dir,) = [entry.path for entry in os.scandir(store) if entry.name not in ('0', '.trash')]
    assert 'name: mm-lightning-test' in _mlflow_text(experiment_dir, 'meta.yaml')
    (run_dir,) = [entry.path for entry in os.scandir(experiment_dir) if entry.is_dir()]
    assert _mlflow_text(run_dir, 'tags', 'mlflow.runName') == 'toy-run'
    assert _mlflow_text(run_dir, 'tags', 'team') == 'vision'
    params = os.listdir(os.path.join(run_dir, 'params'))
    assert _mlflow_text(run_dir, 'params', 'schedule') == 'short'
    assert _mlflow_text(run_dir, 'params', 'train_cfg.max_epochs') == '2'
    assert _mlflow_text(run_dir, 'params', 'optim_wrapper.optimizer.lr') == '0.1'
    assert not [name for name in params if name.startswith('model')]  # only the tracked config keys
    assert 'train_cfg = dict(' in _mlflow_text(run_dir, 'artifacts', 'config.py')
    with Image.open(os.path.join(run_dir, 'artifacts', 'sample.png')) as image:
        assert np.array_equal(np.asarray(image), IMAGE)
    log_name = f'{runner.timestamp}.log'
    assert 'Epoch(train) [2][6/6]' in _mlflow_text(run_dir, 'artifacts', runner.timestamp, log_name)  # close()
    assert not glob.glob(os.path.join(run_dir, 'artifacts', '**', '*.json'), recursive=True)  # not in the suffixes
    assert [step for _, step in _mlflow_metric(run_dir, 'loss')] == list(range(2, 13, 2))  # LoggerHook's steps
    accuracy = _mlflow_metric(run_dir, 'toy/accuracy')
    assert len(accuracy) == 2  # once per validation: self.log_dict's; LoggerHook leaves it to Lightning
    with open(os.path.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:  # LocalVisBackend's, written once
        local = [json.loads(line)['toy/accuracy'] for line in f if 'toy/accuracy' in line]
    assert [value for value, _ in accuracy] == local and len(local) == 2
    assert 'status: 3' in _mlflow_text(run_dir, 'meta.yaml')  # FINISHED


@pytest.mark.parametrize('backend, message', [
    (dict(type='WandbVisBackend', commit=False),
     r"^visualizer\.vis_backends\[1\]\.commit: expected True \(Lightning's WandbLogger commits every log call\), "
     r'got False'),
    (dict(type='WandbVisBackend', init_kwargs=dict(anonymous='must')),
     r"^visualizer\.vis_backends\[1\]\.init_kwargs\.anonymous: expected 'allow' or 'never'"),
    (dict(type='WandbVisBackend', define_metric_cfg='loss'), r'^visualizer\.vis_backends\[1\]\.define_metric_cfg: '),
    (dict(type='WandbVisBackend', project='p'), r"^visualizer\.vis_backends\[1\]\.project: WandbVisBackend has no "
                                                r"option 'project'"),
    (dict(type='MLflowVisBackend', experiment_name='e'),
     r"^visualizer\.vis_backends\[1\]\.experiment_name: MLflowVisBackend has no option 'experiment_name'; its "
     r"options are \['artifact_location', 'artifact_suffix', 'exp_name', 'params', 'run_name', 'save_dir', "),
])
def test_options_without_an_equivalent_are_refused(backend, message, tmp_path):
    cfg = dict(CFG, work_dir=str(tmp_path), experiment_name=f'refused_{tmp_path.name}',
               visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'), backend]))
    with pytest.raises(ConfigError, match=message):
        FlexibleRunner.from_cfg(cfg)


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_users_lightning_logger_gets_mmengine_training_scalars(tmp_path):
    """A user's CSVLogger: LoggerHook's training scalars (mmengine's names and values, at its steps) every
    ``log_every_n_steps`` iterations, and the validation metrics."""
    cfg = load_config(CFG, dict(work_dir=str(tmp_path / 'wd'), experiment_name=f'csv_{tmp_path.name}'))
    module = ConfigModule.from_config(cfg)
    kwargs = trainer_kwargs(cfg, logger=CSVLogger(str(tmp_path), name='csv'), log_every_n_steps=4)
    trainer = L.Trainer(**kwargs)
    trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    rows = _csv_rows(tmp_path / 'csv' / 'version_0' / 'metrics.csv')
    with open(os.path.join(module.context.log_dir, 'vis_data', 'scalars.json')) as f:
        hook = {row['step']: row for row in map(json.loads, f) if 'loss' in row}  # LoggerHook's, every 2 iterations
    training = [row for row in rows if row['loss']]
    assert [int(row['step']) for row in training] == [4, 8, 12]
    for row in training:
        expected = hook[int(row['step'])]
        for key in ('loss', 'lr', 'time', 'data_time', 'epoch', 'iter'):
            assert float(row[key]) == pytest.approx(expected[key], rel=1e-6), (row['step'], key)
    validation = module.runner.message_hub.get_scalar('val/toy/accuracy').data[0]  # one per validation
    assert [float(row['toy/accuracy']) for row in rows if row['toy/accuracy']] == pytest.approx(list(validation))


def test_no_training_scalar_twice_on_a_logger_of_vis_backends(tmp_path):
    """A Trainer logger that a vis_backend became gets LoggerHook's scalars through the visualizer only."""
    cfg = dict(CFG, work_dir=str(tmp_path), experiment_name=f'tbonce_{tmp_path.name}',
               lightning_trainer=dict(log_every_n_steps=1),
               visualizer=dict(type='Visualizer', vis_backends=[dict(type='TensorboardVisBackend')]))
    runner = FlexibleRunner.from_cfg(cfg)
    runner.train()
    assert _steps(os.path.join(runner.log_dir, 'vis_data'), 'loss') == list(range(2, 13, 2))  # LoggerHook's interval


def _steps(log_dir, tag):
    return sorted(event.step for event in _events(log_dir) for value in event.summary.value if value.tag == tag)
