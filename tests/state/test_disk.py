"""Room on disk: a full disk during a checkpoint write is one error that names it, and a run warns before it starts
when its checkpoints will not fit."""
import copy
import errno
import glob
import os
import traceback

import pytest
import torch
from conftest import data
from full_disk import fill_at, report_free
from mmengine.hooks import CheckpointHook, Hook
from parity import unique_name

from mm_lightning import FlexibleRunner
from mm_lightning.state.disk import (
    DiskFullError,
    format_bytes,
    full_disk_cause,
    held_copies,
    optimizer_state_bytes,
)
from mm_lightning.state.serialization import naming_a_full_disk, read, write, write_atomically

#: Iteration-based, one latest.pth written again every 2 iterations: the case of a full disk at the second write.
LATEST = dict(
    model=dict(type='ToyClassifier', dropout=0.3, batch_norm=True),
    train_dataloader=data(size=24, batch_size=4),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
    train_cfg=dict(by_epoch=False, max_iters=8),
    default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2, filename_tmpl='latest.pth')),
    randomness=dict(seed=3), launcher='none', log_level='WARNING')


def _train(work_dir, hooks=(), **changes):
    cfg = copy.deepcopy(LATEST)
    cfg.update(work_dir=str(work_dir), experiment_name=unique_name('disk'), **changes)
    runner = FlexibleRunner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return runner


def _weights(runner):
    return {key: value.detach().clone() for key, value in runner.model.state_dict().items()}


def test_a_full_disk_at_the_second_write_is_named_and_the_previous_checkpoint_resumes_exactly(tmp_path, monkeypatch):
    full = _weights(_train(tmp_path / 'full'))
    work_dir = tmp_path / 'work'
    with monkeypatch.context() as patch:
        fill_at(patch, 2)  # the first latest.pth is written, the second fills the disk
        with pytest.raises(DiskFullError) as error:
            _train(work_dir)
    latest = str(work_dir / 'latest.pth')
    err = error.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == latest
    assert str(err) == (f'{latest}: no space left on device: writing this checkpoint needs {format_bytes(err.needed)}, '
                        f'{format_bytes(err.free)} free in {work_dir}; the previous checkpoint {latest} is intact: '
                        'free space and resume from it (resume=True, --resume)')
    assert 'inline_container' not in str(err) and 'enforce' not in str(err)  # torch's words are in the cause only
    assert isinstance(err.__cause__, RuntimeError)  # torch wrapped the OSError in its own error
    assert [name for name in os.listdir(work_dir) if name.endswith(('.pth', '.tmp'))] == ['latest.pth']  # no temporary
    assert read(latest)['meta']['iter'] == 2  # the first checkpoint, whole
    assert abs(err.needed - os.path.getsize(latest)) < 2048  # the second is the same size, give or take its meta

    resumed = _weights(_train(work_dir, resume=True))
    assert resumed.keys() == full.keys()
    for key, value in full.items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.parametrize('code, words', [(errno.ENOSPC, 'no space left on device'),
                                         (errno.EDQUOT, 'disk quota exceeded')])
def test_a_full_disk_or_quota_is_one_error_and_the_temporary_file_is_removed(tmp_path, monkeypatch, code, words):
    path = str(tmp_path / 'epoch_2.pth')
    fill_at(monkeypatch, 1, room=100, code=code)
    with pytest.raises(DiskFullError) as error:
        write({'state_dict': {'w': torch.zeros(10000)}}, path)
    assert error.value.errno == code
    assert str(error.value).startswith(f'{path}: {words}: writing this checkpoint needs ')
    assert str(error.value).endswith('; no existing checkpoint was changed')  # nothing there before, nor named
    assert isinstance(error.value.__cause__, (OSError, RuntimeError))
    assert os.listdir(tmp_path) == []


def test_the_previous_checkpoint_is_the_one_last_checkpoint_names(tmp_path, monkeypatch):
    first = str(tmp_path / 'epoch_1.pth')
    write_atomically({'step': 1}, first)
    (tmp_path / 'last_checkpoint').write_text(first)
    fill_at(monkeypatch, 1, room=10)
    with pytest.raises(DiskFullError, match=f'the previous checkpoint {first} is intact'):
        write({'step': 2}, str(tmp_path / 'epoch_2.pth'))
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'last_checkpoint']


def test_other_write_errors_are_left_as_they_are(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('interrupted mid-write')
    with pytest.raises(RuntimeError, match='interrupted mid-write'):
        write_atomically({'bad': Unpicklable()}, str(tmp_path / 'x.pth'))
    assert os.listdir(tmp_path) == []


def test_a_directory_writer_shares_the_translation(tmp_path):
    """What sharded_state and deepspeed_state get: torch's distributed checkpoint gathers each rank's failure in a
    CheckpointException (a BaseException); the partial directory goes, and the bytes it held are the floor."""
    from torch.distributed.checkpoint.api import CheckpointException
    path, partial = str(tmp_path / 'epoch_3.pth'), str(tmp_path / 'epoch_3.pth.partial')
    os.makedirs(partial)
    with open(os.path.join(partial, '__0_0.distcp'), 'wb') as f:
        f.write(b'\0' * 5000)
    wrapped = RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
    wrapped.__context__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    failure = CheckpointException('write', {0: (wrapped, traceback.StackSummary())})
    assert full_disk_cause(failure, path) == errno.ENOSPC
    with pytest.raises(DiskFullError) as error:
        with naming_a_full_disk(path, partial):
            raise failure
    assert f'needs more than the {format_bytes(5000)} written before the write failed' in str(error.value)
    assert error.value.__cause__ is failure and not os.path.exists(partial)


def test_a_torch_error_without_errno_counts_only_on_a_full_file_system(tmp_path, monkeypatch):
    """torch.save to a path (DeepSpeed's engine writes so) reports a full disk without an errno."""
    error = RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534')
    assert full_disk_cause(error, str(tmp_path / 'x')) is None
    report_free(monkeypatch, 4096, str(tmp_path))
    assert full_disk_cause(error, str(tmp_path / 'x')) == errno.ENOSPC
    assert full_disk_cause(ValueError('not a write'), str(tmp_path / 'x')) is None


# -- how big a checkpoint will be, before the optimizer's first step ----------------------------------
@pytest.mark.parametrize('optimizer', [
    dict(type='SGD', lr=0.1), dict(type='SGD', lr=0.1, momentum=0.9), dict(type='Adam'),
    dict(type='AdamW', amsgrad=True), dict(type='Adagrad'), dict(type='RMSprop', momentum=0.9), dict(type='NAdam'),
], ids=lambda cfg: '_'.join(str(value) for value in cfg.values()))
def test_the_optimizer_state_is_known_before_its_first_step(optimizer):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(64, 3))
    cfg = dict(optimizer)
    built = getattr(torch.optim, cfg.pop('type'))([
        dict(params=list(model[0].parameters()), lr=0.01), dict(params=list(model[3].parameters())),
        dict(params=list(model[1].parameters()), weight_decay=0.0)], **cfg)
    before = optimizer_state_bytes(built)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    built.step()
    assert before == optimizer_state_bytes(built) and before[1]


def test_an_optimizer_that_cannot_be_probed_counts_as_a_lower_bound():
    model = torch.nn.Linear(4, 2)
    assert optimizer_state_bytes(torch.optim.LBFGS(model.parameters())) == (0, False)  # its step needs a closure


def test_checkpoints_held_at_once():
    assert held_copies(CheckpointHook(filename_tmpl='latest.pth')) == 2  # the old one stays until the rename
    assert held_copies(CheckpointHook()) == 2
    assert held_copies(CheckpointHook(max_keep_ckpts=1)) == 1  # mmengine removes the old one first
    assert held_copies(CheckpointHook(max_keep_ckpts=1, save_best='acc')) == 3  # rewritten after a best, and best


# -- the warning when a run starts --------------------------------------------------------------------
def _log(runner):
    (log,) = glob.glob(os.path.join(runner.log_dir, '*.log'))
    with open(log) as f:
        return f.read()


class LogAtFirstIteration(Hook):
    """The run's log as it is when the first iteration starts."""

    def __init__(self):
        self.text = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.text is None:
            (log,) = glob.glob(os.path.join(runner.log_dir, '*.log'))
            with open(log) as f:
                self.text = f.read()


def _one_checkpoint(model):
    """Model state and SGD's momentum buffer per parameter, counted from the model as built."""
    return (sum(value.numel() * value.element_size() for value in model.state_dict().values())
            + sum(param.numel() * param.element_size() for param in model.parameters()))


def test_a_run_warns_before_training_when_two_checkpoints_do_not_fit(tmp_path, monkeypatch):
    report_free(monkeypatch, 1000, str(tmp_path))
    log = LogAtFirstIteration()
    runner = _train(tmp_path, hooks=[log])
    one = _one_checkpoint(runner.model)
    assert log.text is not None and (
        f"work_dir: {tmp_path} has {format_bytes(1000)} free; the run's checkpoints need {format_bytes(2 * one)} "
        'there: 2 on disk at once (a checkpoint is written in full before the one it replaces is removed), each '
        f'about {format_bytes(one)} (this model and its optimizer). A checkpoint write will fail for lack of space: '
        'free some, or choose another work_dir') in log.text
    assert one < os.path.getsize(tmp_path / 'latest.pth') < one + 64 * 1024  # the rest: meta, message hub, loop


def test_a_resumed_run_counts_the_checkpoint_it_replaces_as_already_there(tmp_path, monkeypatch):
    _train(tmp_path)
    one = os.path.getsize(tmp_path / 'latest.pth')
    report_free(monkeypatch, one, str(tmp_path))  # room for the new latest.pth beside the old one
    log = LogAtFirstIteration()
    _train(tmp_path, resume=True, train_cfg=dict(by_epoch=False, max_iters=10), hooks=[log])
    assert 'free; the run' not in log.text
    report_free(monkeypatch, 1000, str(tmp_path))
    log = LogAtFirstIteration()
    runner = _train(tmp_path, resume=True, train_cfg=dict(by_epoch=False, max_iters=12), hooks=[log])
    needed = format_bytes(_one_checkpoint(runner.model))
    assert f"the run's checkpoints need {needed} there: 2 on disk at once (a checkpoint is written in full before " \
           f'the one it replaces is removed), one of them already there, each about {needed} (this model' in log.text


def test_enough_room_or_no_checkpoints_say_nothing(tmp_path, monkeypatch):
    log = LogAtFirstIteration()
    _train(tmp_path / 'room', hooks=[log])
    assert 'free; the run' not in log.text
    report_free(monkeypatch, 10, str(tmp_path))
    log = LogAtFirstIteration()
    _train(tmp_path / 'none', default_hooks=dict(checkpoint=None), hooks=[log])
    assert 'free; the run' not in log.text
