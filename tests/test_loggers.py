"""vis_backends with a Lightning counterpart become Lightning loggers shared with the Trainer."""
import glob
import os
import struct

import pytest
from conftest import data
from lightning.pytorch.loggers import TensorBoardLogger

from mm_lightning import ConfigError, FlexibleRunner

event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')

CFG = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=24, batch_size=4),
           val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'),
           val_cfg=dict(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
           train_cfg=dict(by_epoch=True, max_epochs=2), randomness=dict(seed=0),
           default_hooks=dict(logger=dict(type='LoggerHook', interval=2)))


def _tags(log_dir):
    tags = set()
    for path in glob.glob(os.path.join(log_dir, 'events.out.tfevents.*')):
        with open(path, 'rb') as f:
            raw = f.read()
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack('<Q', raw[offset:offset + 8])
            event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
            offset += 16 + length
            tags.update(value.tag for value in event.summary.value)
    return tags


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
    with pytest.raises(ConfigError, match=r'visualizer.vis_backends\[0\]: TensorboardVisBackend takes only'):
        FlexibleRunner.from_cfg(cfg)
