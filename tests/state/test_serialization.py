"""Checkpoint files: safe to load with weights_only=True, never half-written."""
import os
import stat

import numpy as np
import pytest
import torch
from conftest import data
from mmengine.logging import HistoryBuffer

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.state.serialization import (
    UnreadableCheckpointError,
    from_safe,
    is_whole,
    read,
    to_safe,
    write,
    write_atomically,
    write_text_atomically,
)


def test_safe_form_round_trip():
    buffer = HistoryBuffer([1.0, 2.5], [1, 2])
    state = {'log_scalars': {'train/loss': buffer}, 'runtime_info': {'palette': np.eye(2)}, 'n': np.int64(3)}
    restored = from_safe(to_safe(state))
    assert isinstance(restored['log_scalars']['train/loss'], HistoryBuffer)
    assert restored['log_scalars']['train/loss'].mean() == buffer.mean()
    assert (restored['runtime_info']['palette'] == state['runtime_info']['palette']).all()
    assert restored['n'] == 3


def test_written_files_load_with_weights_only(tmp_path):
    path = str(tmp_path / 'a.pth')
    write({'message_hub': {'log_scalars': {'loss': HistoryBuffer([1.0], [1])}}, 'rng': np.random.get_state()}, path)
    loaded = from_safe(torch.load(path, weights_only=True))
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.0


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    path = str(tmp_path / 'latest.pth')
    write_atomically({'step': 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('interrupted mid-write')
    with pytest.raises(RuntimeError, match='interrupted mid-write'):
        write_atomically({'step': 2, 'bad': Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {'step': 1}
    assert os.listdir(tmp_path) == ['latest.pth']  # no temporary file left behind


def test_is_whole_recognises_a_truncated_checkpoint(tmp_path):
    path = str(tmp_path / 'x.pth')
    torch.save({'w': torch.zeros(1000)}, path)
    assert is_whole(path)
    with open(path, 'rb') as f:
        head = f.read(os.path.getsize(path) // 2)
    with open(path, 'wb') as f:
        f.write(head)
    assert not is_whole(path) and not is_whole(str(tmp_path / 'missing.pth'))


@pytest.fixture(params=[0o022, 0o002], ids=['umask_022', 'umask_002'])
def umask(request):
    """Run the test under a umask (a shared cluster's group members read files under 0o002)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    checkpoint, text = str(tmp_path / 'a.pth'), str(tmp_path / 'last_checkpoint')
    write({'step': 1}, checkpoint)
    write({'step': 2}, checkpoint)  # replacing a file too
    write_text_atomically(checkpoint, text)
    assert _mode(checkpoint) == _mode(text) == 0o666 & ~umask


def test_a_training_runs_checkpoints_get_the_mode_the_umask_gives(tmp_path, umask):
    runner = FlexibleRunner.from_cfg(dict(
        model=dict(type='ToyClassifier'), work_dir=str(tmp_path), experiment_name=f'mode_{tmp_path.name}',
        train_dataloader=data(size=8, batch_size=4), train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), randomness=dict(seed=0)))
    runner.train()
    for name in ('epoch_1.pth', 'last_checkpoint'):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name


@pytest.mark.parametrize('content', ['cut', 'text', 'empty'])
def test_a_file_that_is_not_a_whole_checkpoint_is_refused_by_name(content, tmp_path):
    path = str(tmp_path / 'x.pth')
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, path)
    with open(path, 'rb') as f:
        whole = f.read()
    with open(path, 'wb') as f:
        f.write({'cut': whole[:len(whole) // 2], 'text': b'model = dict(type="X")\n', 'empty': b''}[content])
    with pytest.raises(UnreadableCheckpointError) as error:
        read(path)
    assert str(error.value) == f'{path}: not a whole checkpoint (cut short, or not a file torch.save wrote)'
    assert isinstance(error.value, ConfigError)  # the command line reports it in one line, exit status 2


def test_a_legacy_format_checkpoint_still_reads(tmp_path):
    path = str(tmp_path / 'old.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read(path)['state_dict']['w'], torch.ones(2))
