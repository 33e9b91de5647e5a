"""The run's identity and outputs: named and seeded without writing; written when opened; its own instances."""
import os
import time
from types import SimpleNamespace

import pytest
from conftest import data
from mmengine.config import Config

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.runtime import context as context_module
from mm_lightning.runtime.context import create_context


def _context(tmp_path, **changes):
    kwargs = dict(work_dir=str(tmp_path / 'work'), cfg=Config(dict(a=1)), launcher='none', env_cfg={},
                  randomness=dict(seed=3), experiment_name=f'ctx_{tmp_path.name}', default_scope='mmengine',
                  log_level='INFO', log_processor=None, visualizer=None)
    kwargs.update(changes)
    return create_context(**kwargs)


def test_created_context_writes_nothing_until_opened(tmp_path):
    context = _context(tmp_path)
    assert context.seed == 3 and context.experiment_name.startswith(f'ctx_{tmp_path.name}_')
    assert not os.path.exists(tmp_path / 'work')
    context.open(Config(dict(a=1)), 'hooks info')
    log = os.path.join(context.log_dir, f'{context.timestamp}.log')
    assert os.path.isfile(log) and os.path.isfile(os.path.join(context.work_dir, f'{context.timestamp}.py'))
    with open(log) as f:
        text = f.read()
    assert 'Hooks will be executed in the following order:\nhooks info' in text
    context.open(Config(dict(a=1)), 'again')  # once only
    with open(log) as f:
        assert 'again' not in f.read()


def test_set_randomness_updates_the_runs_seed(tmp_path):
    context = _context(tmp_path)
    context.set_randomness(11, deterministic=False)
    assert context.seed == 11 and context.randomness['seed'] == 11


STAMP = '20250101_000000'


@pytest.fixture
def same_second(monkeypatch):
    """Every run is named in the same second (the timestamp names mmengine's instances)."""
    monkeypatch.setattr(context_module, 'time', SimpleNamespace(time=time.time, localtime=time.localtime,
                                                                strftime=lambda fmt, t=None: STAMP))


def _training(work_dir, **changes):
    """A short training config named after the test (earlier tests' instances stay in the process)."""
    cfg = dict(model=dict(type='ToyClassifier'), work_dir=str(work_dir), experiment_name=work_dir.parent.name,
               train_dataloader=data(size=8, batch_size=4), train_cfg=dict(by_epoch=True, max_epochs=1),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), randomness=dict(seed=0),
               default_hooks=dict(logger=dict(type='LoggerHook', interval=1)))
    return dict(cfg, **changes)


def _log_text(work_dir):
    with open(os.path.join(work_dir, STAMP, f'{STAMP}.log')) as f:
        return f.read()


def _unknown_model(work_dir):
    return _training(work_dir, model=dict(type='NoSuchModel'))


def _log_dir_taken(work_dir):
    os.makedirs(work_dir)
    (work_dir / STAMP).write_text('')  # the log dir cannot be created: the build fails when the run opens
    return _training(work_dir)


@pytest.mark.parametrize('failing, error', [(_unknown_model, ConfigError), (_log_dir_taken, FileExistsError)])
def test_a_failed_build_does_not_poison_the_next_one_in_the_same_second(tmp_path, same_second, failing, error):
    with pytest.raises(error):
        FlexibleRunner.from_cfg(failing(tmp_path / 'failed'))
    runner = FlexibleRunner.from_cfg(_training(tmp_path / 'good'))
    runner.train()
    assert os.path.isfile(tmp_path / 'good' / STAMP / 'vis_data' / 'scalars.json')
    assert 'Epoch(train) [1][2/2]' in _log_text(tmp_path / 'good')
    assert not os.path.exists(tmp_path / 'failed' / STAMP / 'vis_data')


def test_runners_built_in_the_same_second_log_to_their_own_files(tmp_path, same_second):
    first = FlexibleRunner.from_cfg(_training(tmp_path / 'first'))
    second = FlexibleRunner.from_cfg(_training(tmp_path / 'second'))
    assert first.experiment_name == f'{tmp_path.name}_{STAMP}'  # mmengine's form while the name is free
    assert second.experiment_name == f'{tmp_path.name}_{STAMP}_1'
    assert first.logger is not second.logger and first.visualizer is not second.visualizer
    assert first.message_hub is not second.message_hub
    second.train()
    first.train()
    for mine, other in (('first', 'second'), ('second', 'first')):
        text = _log_text(tmp_path / mine)
        assert str(tmp_path / mine) in text and str(tmp_path / other) not in text
        assert text.count('Epoch(train) [1][2/2]') == 1
        assert os.path.isfile(tmp_path / mine / STAMP / 'vis_data' / 'scalars.json')


def test_checkpoint_files_of_a_work_dir_in_numeric_order(tmp_path):
    from mm_lightning.runtime.context import checkpoint_files
    assert checkpoint_files(str(tmp_path / 'absent')) == []
    for name in ('iter_100.pth', 'iter_20.pth', 'epoch_3.pth', 'best_acc_epoch_2.pth', 'last_checkpoint',
                 'epoch=1-step=4.ckpt', 'scoped.py', 'notes.pth'):
        (tmp_path / name).write_text('')
    (tmp_path / 'epoch_9.pth').mkdir()  # not a file
    assert checkpoint_files(str(tmp_path)) == ['best_acc_epoch_2.pth', 'epoch=1-step=4.ckpt', 'epoch_3.pth',
                                               'iter_20.pth', 'iter_100.pth', 'last_checkpoint']
