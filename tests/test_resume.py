"""Exact resume: a process killed with SIGKILL and resumed continues as if it had never stopped.

Each case trains once uninterrupted, then again killed at a chosen point (mid-epoch, right
after a checkpoint, during a validation, inside an accumulation window) and resumed with
``resume=True`` from the latest checkpoint in the same work_dir. From the checkpoint on, every
iteration's losses and LRs, every validation's metrics and the final weights must be equal
to the uninterrupted run's: bit for bit, as both run the same code on the same machine.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'scripts', 'resumable_run.py')


def run_case(out, case, *args, expect_killed=False):
    result = subprocess.run([sys.executable, SCRIPT, str(out), case, *args], capture_output=True, text=True,
                            cwd=os.path.dirname(HERE), timeout=600)
    if expect_killed:
        assert result.returncode == -9, result.stderr[-3000:]
    else:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def records(out):
    with open(os.path.join(out, 'records.jsonl')) as f:
        return [json.loads(line) for line in f]


_FULL_RUNS = {}


@pytest.fixture
def uninterrupted(tmp_path_factory):
    def get(case):
        if case not in _FULL_RUNS:
            out = tmp_path_factory.mktemp(f'full_{case}')
            run_case(out, case)
            _FULL_RUNS[case] = (records(out), torch.load(os.path.join(out, 'final.pt')))
        return _FULL_RUNS[case]
    return get


@pytest.mark.parametrize('case, kill, resumed_at', [
    ('epoch_dropout', 'after_train_iter:7', ('iter', 6)),           # mid-epoch, a batch after a checkpoint
    ('epoch_dropout', 'after_val_iter:2', ('iter', 9)),             # during validation (checkpoint a batch before)
    ('epoch_workers_augment', 'after_train_iter:6', ('iter', 6)),   # right after a checkpoint, mid-epoch
    ('epoch_workers_augment', 'after_train_iter:19', ('iter', 18)),  # second epoch, loader workers replayed
    ('iter_infinite', 'after_train_iter:10', ('iter', 8)),          # iteration-based, endless sampler
    ('iter_infinite', 'after_val_iter:4', ('val', 12)),             # during the validation due at the checkpoint
    ('accumulation', 'after_train_iter:11', ('iter', 8)),           # inside an accumulation window of 3
], ids=lambda value: value if isinstance(value, str) else None)
def test_killed_run_resumes_exactly(tmp_path, uninterrupted, case, kill, resumed_at):
    full_records, full_weights = uninterrupted(case)
    work_dir = str(tmp_path / 'work')
    run_case(tmp_path / 'killed', case, '--work-dir', work_dir, '--kill', kill, expect_killed=True)
    assert not os.path.exists(tmp_path / 'killed' / 'final.pt')
    run_case(tmp_path / 'resumed', case, '--work-dir', work_dir, '--resume')

    resumed = records(tmp_path / 'resumed')
    kind, at = resumed_at
    assert (resumed[0]['kind'], resumed[0]['iter']) == (kind, at)  # continues at the checkpoint, not before
    start = next(i for i, r in enumerate(full_records) if (r['kind'], r['iter']) == (kind, at))
    assert resumed == full_records[start:]
    weights = torch.load(tmp_path / 'resumed' / 'final.pt')
    for key, value in full_weights.items():
        assert torch.equal(weights[key], value), key


def test_a_run_whose_seed_is_drawn_resumes_in_its_own_data_order(tmp_path):
    """Without ``randomness.seed`` each run draws its own; resuming takes the checkpoint's, for the loader too,
    though it was built (its sampler shuffling by its seed, its workers seeded from it) before the checkpoint
    was read. The reference is the run that wrote the checkpoint (another run would draw another seed)."""
    run_case(tmp_path / 'run', 'epoch_drawn_seed')
    full_records, full_weights = records(tmp_path / 'run'), torch.load(tmp_path / 'run' / 'final.pt')
    # mid-epoch 2 (10 batches each): the pass replayed through its workers, then epoch 3's pass
    checkpoint = str(tmp_path / 'run' / 'work' / 'iter_12.pth')
    run_case(tmp_path / 'resumed', 'epoch_drawn_seed', '--work-dir', str(tmp_path / 'resumed_work'),
             '--set', f'resume={checkpoint!r}')
    resumed = records(tmp_path / 'resumed')
    assert (resumed[0]['kind'], resumed[0]['iter']) == ('iter', 12)
    assert resumed == full_records[full_records.index(resumed[0]):]
    weights = torch.load(tmp_path / 'resumed' / 'final.pt')
    for key, value in full_weights.items():
        assert torch.equal(weights[key], value), key


def _start(out, case, *args):
    return subprocess.Popen([sys.executable, SCRIPT, str(out), case, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(HERE))


def _wait_for(condition, process, timeout=300):
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.002)


def _temporary_files(work_dir):
    return [name for name in os.listdir(work_dir) if name.endswith('.tmp')] if os.path.isdir(work_dir) else []


@pytest.mark.parametrize('filename_tmpl', ['iter_{}.pth', 'latest.pth'])
def test_kill_during_a_checkpoint_write_leaves_a_resumable_run(tmp_path, uninterrupted, filename_tmpl):
    """SIGKILL while the second checkpoint is being written (80 MB: slow enough to hit)."""
    hooks = (f"dict(logger=dict(type='LoggerHook', interval=1), checkpoint=dict(type='CheckpointHook', "
             f"interval=3, by_epoch=False, filename_tmpl='{filename_tmpl}'))")
    full_records, full_weights = uninterrupted('ballast')
    work_dir = str(tmp_path / 'work')
    process = _start(tmp_path / 'killed', 'ballast', '--work-dir', work_dir, '--set', f'default_hooks={hooks}')
    seen = set()

    def second_write_started():
        seen.update(_temporary_files(work_dir))
        return len(seen) >= 2
    _wait_for(second_write_started, process)
    process.kill()
    process.wait()
    last = open(os.path.join(work_dir, 'last_checkpoint')).read()
    assert os.path.basename(last) == filename_tmpl.format(3)  # the first checkpoint, whole
    run_case(tmp_path / 'resumed', 'ballast', '--work-dir', work_dir, '--resume', '--set', f'default_hooks={hooks}')
    resumed = records(tmp_path / 'resumed')
    assert resumed[0]['iter'] == 3
    assert resumed == full_records[3:]
    weights = torch.load(tmp_path / 'resumed' / 'final.pt')
    assert all(torch.equal(weights[key], value) for key, value in full_weights.items())


def test_sigterm_saves_a_resumable_checkpoint_and_exits_cleanly(tmp_path, uninterrupted):
    full_records, full_weights = uninterrupted('epoch_dropout')
    work_dir = str(tmp_path / 'work')
    process = _start(tmp_path / 'stopped', 'epoch_dropout', '--work-dir', work_dir)
    _wait_for(lambda: os.path.exists(tmp_path / 'stopped' / 'records.jsonl')
              and len(records(tmp_path / 'stopped')) >= 14, process)
    process.terminate()  # SIGTERM, as a cluster scheduler preempting the job sends
    assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    stopped = records(tmp_path / 'stopped')
    last = open(os.path.join(work_dir, 'last_checkpoint')).read()
    assert os.path.basename(last) == f"iter_{stopped[-1]['iter'] + 1}.pth"  # saved where it stopped
    assert not os.path.exists(tmp_path / 'stopped' / 'final.pt')
    run_case(tmp_path / 'resumed', 'epoch_dropout', '--work-dir', work_dir, '--resume')
    assert stopped + records(tmp_path / 'resumed') == full_records  # nothing lost, nothing repeated
    weights = torch.load(tmp_path / 'resumed' / 'final.pt')
    assert all(torch.equal(weights[key], value) for key, value in full_weights.items())


@pytest.mark.parametrize('case, signal_at', [
    ('epoch_dropout', 'after_val_iter:2:TERM'),   # during a validation (the file is written after it)
    ('iter_infinite', 'after_val_iter:1:TERM'),   # during the validation due at an iteration checkpoint
    ('accumulation', 'after_train_iter:5:TERM'),  # inside an accumulation window
], ids=lambda value: value.replace(':', '_'))
def test_sigterm_at_any_moment_stops_at_a_safe_point_and_resumes_exactly(tmp_path, uninterrupted, case, signal_at):
    """The file holds the training weights and the state after the iteration or validation the signal fell in."""
    full_records, full_weights = uninterrupted(case)
    work_dir = str(tmp_path / 'work')
    run_case(tmp_path / 'stopped', case, '--work-dir', work_dir, '--kill', signal_at)
    assert not os.path.exists(tmp_path / 'stopped' / 'final.pt')
    run_case(tmp_path / 'resumed', case, '--work-dir', work_dir, '--resume')
    assert records(tmp_path / 'stopped') + records(tmp_path / 'resumed') == full_records
    weights = torch.load(tmp_path / 'resumed' / 'final.pt')
    assert all(torch.equal(weights[key], value) for key, value in full_weights.items())
