"""Exact resume with 2 processes (torchrun, gloo): every rank continues as if it had never stopped.

The run (tests/scripts/ddp_resume.py) makes the ranks differ in every way state can: own
random state (``diff_rank_seed``), own data, own gradients inside an accumulation window, EMA.
After a kill, a SIGTERM to every rank or to one, at any moment (validation and an epoch's
last iteration included), each rank's records from the resume point on, and its final
weights, must equal the uninterrupted run's, bit for bit.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from distributed_runs import ENV, HERE, RANKS, SCRIPT, TORCHRUN, assert_resumed_exactly, final, records, torchrun

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.state import serialization

_FULL = {}


@pytest.fixture
def full(tmp_path_factory):
    def get(variant):
        if variant not in _FULL:
            out = tmp_path_factory.mktemp(f'ddp_full_{variant}')
            torchrun(out, *(['--own-trainer'] if variant == 'own' else []))
            _FULL[variant] = {rank: (records(out, rank), final(out, rank)) for rank in RANKS}
        return _FULL[variant]
    return get


def test_kill_inside_an_accumulation_window_resumes_every_rank_exactly(tmp_path, full):
    work_dir = str(tmp_path / 'work')
    killed = torchrun(tmp_path / 'killed', '--work-dir', work_dir, '--at', 'after_train_iter:7:KILL', check=False)
    assert killed.returncode != 0
    assert os.path.basename(open(os.path.join(work_dir, 'last_checkpoint')).read()) == 'iter_5.pth'  # mid-window
    torchrun(tmp_path / 'resumed', '--work-dir', work_dir, '--resume')
    assert records(tmp_path / 'resumed', 0)[0]['iter'] == 5
    assert_resumed_exactly(full('runner'), None, tmp_path / 'resumed', stopped_counts=False)


@pytest.mark.parametrize('signal_at', [
    'after_train_iter:3:TERM:1',  # one rank, inside an accumulation window
    'after_val_iter:1:TERM',      # every rank, during a validation
    'after_train_iter:8:TERM:0',  # one rank, at an epoch's last iteration (4 per epoch)
], ids=lambda value: value.replace(':', '_'))
def test_sigterm_to_one_rank_or_all_stops_every_rank_at_one_point(tmp_path, full, signal_at):
    work_dir = str(tmp_path / 'work')
    torchrun(tmp_path / 'stopped', '--work-dir', work_dir, '--at', signal_at)  # every rank exits 0
    counts = {len(records(tmp_path / 'stopped', rank)) for rank in RANKS}
    assert len(counts) == 1, 'the ranks stopped at different points'
    torchrun(tmp_path / 'resumed', '--work-dir', work_dir, '--resume')
    assert_resumed_exactly(full('runner'), tmp_path / 'stopped', tmp_path / 'resumed')


def test_sigterm_at_a_random_moment_from_outside(tmp_path, full):
    """As a scheduler preempts: SIGTERM to both worker processes, whatever they are doing."""
    work_dir = str(tmp_path / 'work')
    stopped = tmp_path / 'stopped'
    process = subprocess.Popen([TORCHRUN, '--standalone', '--nproc_per_node=2', SCRIPT, str(stopped),
                                '--work-dir', work_dir, '--pace', '0.2'], env=ENV, cwd=os.path.dirname(HERE),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # records (of 15: 12 iterations, 3 validations) before the signal; 0.2 s per iteration leaves time to send it
    target = random.Random().randint(2, 10)
    deadline = time.time() + 240
    while len(records(stopped, 0)) < target and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = subprocess.run(['pgrep', '-f', f'{SCRIPT} {stopped}'], capture_output=True, text=True).stdout.split()
    for pid in workers:
        if int(pid) != process.pid:
            os.kill(int(pid), signal.SIGTERM)
    assert process.wait(timeout=240) == 0, process.stderr.read()[-4000:]
    if os.path.exists(os.path.join(stopped, 'final_rank0.pt')):
        pytest.fail(f'the run finished before the signal (after {target} records)')
    torchrun(tmp_path / 'resumed', '--work-dir', work_dir, '--resume')
    assert_resumed_exactly(full('runner'), stopped, tmp_path / 'resumed')


def test_a_rank_that_dies_ends_the_job_without_a_hang_and_keeps_the_last_checkpoint(tmp_path):
    work_dir = str(tmp_path / 'work')
    started = time.time()
    result = torchrun(tmp_path / 'died', '--work-dir', work_dir, '--at', 'after_train_iter:7:KILL:1', check=False)
    assert result.returncode != 0
    assert time.time() - started < 200
    last = open(os.path.join(work_dir, 'last_checkpoint')).read()
    assert os.path.basename(last) == 'iter_5.pth' and serialization.is_whole(last)


def test_resuming_on_another_number_of_processes(tmp_path):
    """Refused inside a pass, and without auto_scale_lr (as mmengine); continued at an epoch's end."""
    work_dir = str(tmp_path / 'work')
    torchrun(tmp_path / 'stopped', '--work-dir', work_dir, '--at', 'after_train_iter:8:TERM')  # epoch 2's end
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        from ddp_resume import Recorder, config
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    scaled = dict(enable=True, base_batch_size=8)

    def one_process(name, resume, auto_scale_lr):
        cfg = dict(config(str(tmp_path / name), own_trainer=False), launcher='none', resume=resume,
                   auto_scale_lr=auto_scale_lr, experiment_name=name)
        return FlexibleRunner.from_cfg(cfg)

    inside = one_process('inside', os.path.join(work_dir, 'iter_5.pth'), scaled)
    with pytest.raises(ConfigError, match=r'written by 2 processes inside a pass over the data and this run has 1'):
        inside.train()
    unscaled = one_process('unscaled', os.path.join(work_dir, 'iter_8.pth'), None)
    with pytest.raises(RuntimeError, match=r'written by 2 processes and this run has 1'):
        unscaled.train()
    runner = one_process('continued', os.path.join(work_dir, 'iter_8.pth'), scaled)
    runner.register_hook(Recorder(str(tmp_path / 'continued.jsonl')))
    runner.train()
    with open(tmp_path / 'continued.jsonl') as f:
        continued = [json.loads(line) for line in f]
    # epoch 2's validation (due when the file was written), then epoch 3: 8 batches of 4 in one process
    assert [r['kind'] for r in continued] == ['val'] + ['iter'] * 8 + ['val']
    assert (continued[1]['iter'], continued[1]['epoch'], runner.iter) == (8, 2, 16)


def test_own_trainer_with_ema_and_model_checkpoint_resumes_every_rank_exactly(tmp_path, full):
    work_dir = str(tmp_path / 'work')
    killed = torchrun(tmp_path / 'killed', '--work-dir', work_dir, '--own-trainer',
                      '--at', 'after_train_iter:10:KILL', check=False)
    assert killed.returncode != 0
    # step 4 = iteration 8: the end of epoch 2, before its validation
    (step4,) = [name for name in os.listdir(os.path.join(work_dir, 'lightning')) if 'step=4' in name]
    torchrun(tmp_path / 'resumed', '--work-dir', work_dir, '--own-trainer',
             '--ckpt-path', os.path.join(work_dir, 'lightning', step4))
    assert_resumed_exactly(full('own'), None, tmp_path / 'resumed', stopped_counts=False)
