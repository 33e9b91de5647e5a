"""Progress bars in a user's own Trainer: the config's length on the bar, mmengine's INFO lines in the log file."""
import logging
import os
import re

import lightning as L
import pytest
from conftest import data
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from parity import unique_name

from mm_lightning import ConfigDataModule, ConfigModule, FlexibleRunner, load_config
from mm_lightning.translate.progress import LIGHTNING_INFO_LOGGERS

CFG = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=16, batch_size=4),
           val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'),
           val_cfg=dict(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
           train_cfg=dict(by_epoch=True, max_epochs=3), randomness=dict(seed=0),
           default_hooks=dict(logger=dict(type='LoggerHook', interval=2)))
ITERATION_BASED = dict(CFG, train_dataloader=data(size=16, batch_size=4, sampler='InfiniteSampler'),
                       train_cfg=dict(type='IterBasedTrainLoop', max_iters=10, val_interval=5),
                       log_processor=dict(by_epoch=False),
                       default_hooks=dict(logger=dict(type='LoggerHook', interval=2),
                                          checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5)))


class BarText(Callback):
    """What the training bar reads at the end of each epoch (after the bar's own hooks)."""

    def __init__(self, bar):
        self.bar = bar
        self.texts = []

    def on_train_epoch_end(self, trainer, pl_module):
        if isinstance(self.bar, RichProgressBar):
            task = self.bar.progress.tasks[self.bar.train_progress_bar_id]
            self.texts.append((task.description.strip(), task.total))
        else:
            self.texts.append((self.bar.train_progress_bar.desc.rstrip(': '), self.bar.train_progress_bar.total))


def _fit(tmp_path, cfg, **trainer_args):
    """A Lightning user's plain Trainer (``max_epochs`` unset) over a config."""
    cfg = load_config(cfg, dict(work_dir=str(tmp_path), experiment_name=unique_name('bar')))
    module = ConfigModule.from_config(cfg)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, **trainer_args)
    trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    return module, trainer


def _log_file(module):
    context = module.context
    with open(os.path.join(context.log_dir, f'{context.timestamp}.log')) as f:
        return f.read()


@pytest.mark.parametrize('bar_class', [RichProgressBar, TQDMProgressBar])
def test_a_users_bar_shows_the_configs_epochs(tmp_path, bar_class):
    """Not Lightning's 1000 epochs: Rich reads ``Epoch 2/2`` on the last of 3 epochs (Lightning counts from 0), tqdm
    ``Epoch 2``, each over the epoch's batches."""
    bar = bar_class()
    text = BarText(bar)
    _, trainer = _fit(tmp_path, CFG, callbacks=[bar, text])
    assert trainer.max_epochs == 3
    of = '/2' if bar_class is RichProgressBar else ''
    assert text.texts == [(f'Epoch {epoch}{of}', 4) for epoch in range(3)]


@pytest.mark.parametrize('bar_class', [RichProgressBar, TQDMProgressBar])
def test_a_users_bar_counts_an_iteration_based_configs_iterations(tmp_path, bar_class):
    bar = bar_class()
    text = BarText(bar)
    module, trainer = _fit(tmp_path, ITERATION_BASED, callbacks=[bar, text])
    assert trainer.max_epochs == 1 and module.runner.iter == 10
    assert text.texts == [('Epoch 0/0' if bar_class is RichProgressBar else 'Epoch 0', 10)]


def test_mmengine_info_lines_go_to_the_log_file_while_a_users_bar_draws(tmp_path, capfd):
    """Lightning's default bar: the environment, config, hooks and iteration lines go to the log file only;
    warnings still reach the console, and the console is back when the run ends."""
    module, trainer = _fit(tmp_path, CFG)
    module.context.logger.warning('a warning after the run')
    module.context.logger.info('an info line after the run')
    out = capfd.readouterr().out
    assert trainer.progress_bar_callback is not None
    log = _log_file(module)
    for line in ('System environment', 'Hooks will be executed', 'Epoch(train) [3][4/4]', 'Epoch(val) [3][1/1]'):
        assert line in log and line not in out, line
    assert 'a warning after the run' in out and 'an info line after the run' in out


def test_mmengine_info_lines_stay_on_the_console_without_a_bar(tmp_path, capfd):
    module, _ = _fit(tmp_path, CFG, enable_progress_bar=False)
    out = capfd.readouterr().out
    for line in ('System environment', 'Hooks will be executed', 'Epoch(train) [3][4/4]', 'Epoch(val) [3][1/1]'):
        assert line in out, line


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def lightning_lines():
    """What Lightning's rank-zero loggers print (device lines, tips) on the console."""
    handler = Lines()
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.lines
    for logger in loggers:
        logger.removeHandler(handler)


def test_lightnings_setup_lines_go_to_the_log_file_in_our_entry_points(tmp_path, lightning_lines):
    runner = FlexibleRunner.from_cfg(dict(CFG, work_dir=str(tmp_path), experiment_name=unique_name('setup')))
    runner.train()
    runner.val()
    assert not [line for line in lightning_lines if re.match('GPU available|TPU available|💡', line)], lightning_lines
    assert not [line for line in lightning_lines if 'configure_callbacks' in line], lightning_lines
    log = _log_file(runner.module)
    assert 'GPU available: ' in log and 'TPU available: ' in log


def test_a_users_own_trainer_prints_lightnings_setup_lines(tmp_path, lightning_lines):
    _fit(tmp_path, CFG, enable_progress_bar=False)
    assert [line for line in lightning_lines if line.startswith('GPU available')]
