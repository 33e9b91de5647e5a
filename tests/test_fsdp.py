"""mmengine's FSDPStrategy on 2 CPU processes (torchrun, gloo): FSDP2 through Lightning's ModelParallelStrategy.

* The command line trains an FSDPStrategy config and ends where one process ends on the same samples
  (twice the batch): weights within 1e-6, the same validation metrics, each validation sample counted
  once. Not bit for bit: two ranks reduce their gradients in another order than one batch sums them.
* FSDP and DDP give the same losses at every iteration on every rank (within 1e-6).
* Within FSDP, resume is bit for bit on every rank, parameters, BatchNorm statistics (each rank keeps
  its own: nothing synchronises them) and EMAHook's sharded average included: from full files
  (``state_dict_cfg='full'``) after a SIGKILL inside an accumulation window, from sharded directories
  (``'local'``) after a SIGTERM, also before the first optimizer step, and with an optimizer that keeps
  no state (SGD without momentum) from either layout.
* A sharded directory holds what the ``'full'`` run's file holds at the same iteration (rank 0's
  buffers, the EMA weights): it converts to that file, resumes on one process (a different world
  size), and evaluating from it gives what evaluating from the full file gives: on one process, on two
  (each rank reads its own shards), and on one process sharded by FSDP (the shards of two ranks read
  into one: torch's distributed checkpoint reshards).
"""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from distributed_runs import ENV, HERE, RANKS, SCRIPT, assert_resumed_exactly, final, records, torchrun
from mmengine.runner.checkpoint import load_checkpoint as mmengine_load_checkpoint

from mm_lightning import ConfigError, FlexibleRunner, load_config
from mm_lightning.state import serialization
from mm_lightning.tools.cli import main as cli

CONFIG = os.path.join(HERE, 'configs', 'fsdp_toy.py')
TORCHRUN = os.path.join(os.path.dirname(sys.executable), 'torchrun')

#: Gradients reduced in another order (two ranks against one batch of both; reduce-scatter against
#: all-reduce) round differently.
REDUCTION_ORDER = 1e-6


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """The 2-rank FSDP run with full checkpoints, uninterrupted: every rank's records and final weights."""
    out = tmp_path_factory.mktemp('fsdp_full')
    torchrun(out, '--fsdp', 'full')
    return out, {rank: (records(out, rank), final(out, rank)) for rank in RANKS}


def _scalars(work_dir):
    (path,) = glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f]


def _validations(work_dir):
    return [{k: v for k, v in row.items() if k.startswith('toy/')} for row in _scalars(work_dir) if 'toy/count' in row]


def test_command_line_fsdp_on_two_processes_ends_where_one_process_does(tmp_path):
    sharded = str(tmp_path / 'fsdp')
    result = subprocess.run([TORCHRUN, '--standalone', '--nproc_per_node=2', '-m', 'mm_lightning', 'train', CONFIG,
                             '--launcher', 'pytorch', '--work-dir', sharded], capture_output=True, text=True,
                            env=ENV, timeout=300, cwd=os.path.dirname(HERE))
    assert result.returncode == 0, result.stderr[-4000:]

    cfg = load_config(CONFIG, dict(work_dir=str(tmp_path / 'one'), experiment_name='fsdp_one'))
    cfg.pop('strategy')
    cfg.train_dataloader.batch_size = 8  # both ranks' batches of 4 in one, as the sampler splits them
    FlexibleRunner.from_cfg(cfg).train()

    fsdp = serialization.read(os.path.join(sharded, 'epoch_2.pth'))
    one = serialization.read(str(tmp_path / 'one' / 'epoch_2.pth'))
    assert fsdp['state_dict'].keys() == one['state_dict'].keys()
    for key, value in one['state_dict'].items():
        torch.testing.assert_close(fsdp['state_dict'][key], value, atol=REDUCTION_ORDER, rtol=0, msg=key)
    assert fsdp['meta']['iter'] == one['meta']['iter'] == 16
    validations = _validations(sharded)
    assert validations == _validations(str(tmp_path / 'one')) and len(validations) == 2
    assert all(row['toy/count'] == 13 for row in validations)  # 13 samples on 2 ranks: the padding is dropped


def test_fsdp_and_ddp_train_alike_on_every_rank(tmp_path, uninterrupted):
    """The same run under DDP (mmengine's Runner-style, ``broadcast_buffers=False``): the same losses and LRs at
    every iteration on each rank (within float rounding: FSDP reduce-scatters where DDP all-reduces)."""
    torchrun(tmp_path / 'ddp')
    for rank in RANKS:
        ddp = [r for r in records(tmp_path / 'ddp', rank) if r['kind'] == 'iter']
        fsdp = [r for r in uninterrupted[1][rank][0] if r['kind'] == 'iter']
        assert len(ddp) == len(fsdp) == 12
        for expected, actual in zip(ddp, fsdp):
            assert (actual['iter'], actual['epoch'], actual['lr/lr']) == (expected['iter'], expected['epoch'],
                                                                         expected['lr/lr'])
            assert actual['loss'] == pytest.approx(expected['loss'], abs=REDUCTION_ORDER, rel=0), actual['iter']


@pytest.mark.parametrize('state_dict_cfg, stop, last', [
    ('full', 'after_train_iter:7:KILL', 'iter_5.pth'),  # inside an accumulation window (2 iterations each)
    ('local', 'after_train_iter:8:TERM', 'iter_8.pth'),  # a preemption at an epoch's end (4 iterations each)
    ('local', 'after_train_iter:1:TERM', 'iter_1.pth'),  # before the first optimizer step: no optimizer state
])
def test_a_stopped_run_resumes_every_rank_exactly(tmp_path, uninterrupted, state_dict_cfg, stop, last):
    work_dir = str(tmp_path / 'work')
    stopped = torchrun(tmp_path / 'stopped', '--work-dir', work_dir, '--fsdp', state_dict_cfg, '--at', stop,
                       check=False)
    assert (stopped.returncode == 0) == stop.endswith('TERM'), stopped.stderr[-4000:]
    written = open(os.path.join(work_dir, 'last_checkpoint')).read()
    assert os.path.basename(written) == last
    assert os.path.isdir(written) == (state_dict_cfg == 'local')
    torchrun(tmp_path / 'resumed', '--work-dir', work_dir, '--fsdp', state_dict_cfg, '--resume')
    assert_resumed_exactly(uninterrupted[1], tmp_path / 'stopped', tmp_path / 'resumed',
                           stopped_counts=stop.endswith('TERM'))
    if last == 'iter_8.pth':
        _check_sharded_directories(tmp_path, work_dir, os.path.join(uninterrupted[0], 'work'))


def test_an_optimizer_without_state_resumes_from_either_layout(tmp_path):
    """SGD without momentum keeps no per-parameter state: its sharded directory resumes on 2 ranks, and
    so does the full file it converts to, under state_dict_cfg='full'."""
    plain = tmp_path / 'uninterrupted'
    torchrun(plain, '--fsdp', 'local', '--momentum', '0')
    full_run = {rank: (records(plain, rank), final(plain, rank)) for rank in RANKS}
    sharded = str(plain / 'work' / 'iter_5.pth')
    converted = str(tmp_path / 'iter_5_full.pth')
    assert cli(['convert-checkpoint', sharded, converted]) == 0
    assert serialization.read(converted)['optimizer']['state'] == {}
    for state_dict_cfg, checkpoint in (('local', sharded), ('full', converted)):
        out = tmp_path / f'resumed_{state_dict_cfg}'
        torchrun(out, '--work-dir', str(out / 'work'), '--fsdp', state_dict_cfg, '--momentum', '0',
                 '--resume', checkpoint)
        assert records(out, 0)[0]['iter'] == 5
        assert_resumed_exactly(full_run, None, out, stopped_counts=False)


@pytest.mark.parametrize('state_dict_cfg', ['full', 'local'])
def test_own_trainer_with_model_checkpoint_resumes_every_rank_exactly(tmp_path, uninterrupted, state_dict_cfg):
    """A ConfigModule in a user's Trainer with Lightning's ModelCheckpoint: the strategy writes the plan's layout
    (one file, or a sharded directory) with every rank's state, EMAHook's included, and ``ckpt_path`` continues
    it as the runner's run continues (its CheckpointHook writes take nothing from training)."""
    work_dir = str(tmp_path / 'work')
    killed = torchrun(tmp_path / 'killed', '--work-dir', work_dir, '--own-trainer', '--fsdp', state_dict_cfg,
                      '--at', 'after_train_iter:10:KILL', check=False)
    assert killed.returncode != 0
    # step 4 = iteration 8: the end of epoch 2, before its validation
    (step4,) = [name for name in os.listdir(os.path.join(work_dir, 'lightning')) if 'step=4' in name]
    assert os.path.isdir(os.path.join(work_dir, 'lightning', step4)) == (state_dict_cfg == 'local')
    torchrun(tmp_path / 'resumed', '--work-dir', work_dir, '--own-trainer', '--fsdp', state_dict_cfg,
             '--ckpt-path', os.path.join(work_dir, 'lightning', step4))
    assert_resumed_exactly(uninterrupted[1], None, tmp_path / 'resumed', stopped_counts=False)


def test_own_trainer_resumes_from_the_runners_mmengine_format_file(tmp_path, uninterrupted):
    """``ckpt_path`` given an mmengine-format file (CheckpointHook's, inside an accumulation window): the
    strategy converts it as Lightning loads it and the run continues exactly."""
    checkpoint = os.path.join(uninterrupted[0], 'work', 'iter_5.pth')
    torchrun(tmp_path / 'resumed', '--work-dir', str(tmp_path / 'work'), '--own-trainer', '--fsdp', 'full',
             '--ckpt-path', checkpoint)
    assert records(tmp_path / 'resumed', 0)[0]['iter'] == 5
    assert_resumed_exactly(uninterrupted[1], None, tmp_path / 'resumed', stopped_counts=False)


def _check_sharded_directories(tmp_path, work_dir, full_work_dir):
    """What the sharded files of the run above must also do (kept here: they need no more processes)."""
    sharded = os.path.join(work_dir, 'iter_5.pth')
    assert sorted(os.listdir(sharded)) == ['.metadata', '__0_0.distcp', '__1_0.distcp', 'meta.pth']
    assert not glob.glob(os.path.join(work_dir, '*.partial'))

    # convert-checkpoint: the full file the 'full' run wrote at the same iteration
    converted = str(tmp_path / 'iter_5_full.pth')
    assert cli(['convert-checkpoint', sharded, converted]) == 0
    ours, theirs = serialization.read(converted), serialization.read(os.path.join(full_work_dir, 'iter_5.pth'))
    assert ours['state_dict'].keys() == theirs['state_dict'].keys()
    for key, value in theirs['state_dict'].items():
        assert torch.equal(ours['state_dict'][key], value), key
    assert ours['optimizer']['param_groups'] == theirs['optimizer']['param_groups']
    for index, state in theirs['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(ours['optimizer']['state'][index][name], value), (index, name)
    for key, value in theirs['ema_state_dict'].items():  # EMAHook's sharded average, whole
        assert torch.equal(ours['ema_state_dict'][key], value), key
    assert ours['meta']['iter'] == theirs['meta']['iter'] == 5
    model = FlexibleRunner.from_cfg(_one_process_cfg(tmp_path / 'load', None, None)).model
    mmengine_load_checkpoint(model, converted, strict=True)  # mmengine reads the converted file

    # another world size: refused inside a pass; iter_8.pth (epoch 2's end) continues on one process
    scaled = dict(enable=True, base_batch_size=8)
    inside = FlexibleRunner.from_cfg(_one_process_cfg(tmp_path / 'inside', sharded, scaled))
    with pytest.raises(ConfigError, match=r'written by 2 processes inside a pass over the data and this run has 1'):
        inside.train()
    runner = FlexibleRunner.from_cfg(_one_process_cfg(tmp_path / 'continued', os.path.join(work_dir, 'iter_8.pth'),
                                                      scaled))
    runner.train()
    assert runner.iter == 8 + 8  # epoch 3: 8 batches of 4 in one process

    # evaluating from the sharded directory (written by the resumed run) and from the full run's file of the
    # same iteration: on one process, and on two (shard to shard against whole tensors)
    sources = {'sharded': os.path.join(work_dir, 'iter_10.pth'), 'full': os.path.join(full_work_dir, 'iter_10.pth')}
    assert os.path.isdir(sources['sharded']) and os.path.isfile(sources['full'])
    one_process = {}
    for name, checkpoint in sources.items():
        runner = FlexibleRunner.from_cfg(dict(_one_process_cfg(tmp_path / f'val_{name}', None, None),
                                              load_from=checkpoint))
        one_process[name] = (runner.val(), runner.model.state_dict())
    assert one_process['sharded'][0] == one_process['full'][0]
    full_state = serialization.read(sources['full'])['state_dict']
    for name, (_, state) in one_process.items():
        for key, value in full_state.items():  # the file's weights (EMAHook's average) and rank 0's buffers
            assert torch.equal(state[key], value), (name, key)
    two_processes = {}
    for name, checkpoint in sources.items():
        out = tmp_path / f'val2_{name}'
        torchrun(out, '--work-dir', str(out / 'work'), '--fsdp', 'local', '--evaluate', checkpoint)
        two_processes[name] = {rank: (records(out, rank), final(out, rank)) for rank in RANKS}
    for rank in RANKS:
        (sharded_records, sharded_final), (full_records, full_final) = two_processes['sharded'][rank], \
            two_processes['full'][rank]
        assert sharded_records == full_records and sharded_records[0]['kind'] == 'val', rank
        assert sharded_records[0]['metrics'] == one_process['full'][0], rank
        for key, value in full_final.items():
            assert torch.equal(sharded_final[key], value), (rank, key)
    # one process sharded by FSDP: the two ranks' shards read into one (torch's distributed checkpoint reshards)
    out = tmp_path / 'val1_sharded'
    torchrun(out, '--work-dir', str(out / 'work'), '--fsdp', 'local', '--evaluate', sources['sharded'], processes=1)
    assert records(out, 0) == two_processes['full'][0][0]
    for key, value in two_processes['full'][0][1].items():
        assert torch.equal(final(out, 0)[key], value), key
    # resumed there, at the end of epoch 2 (the last): its validation, with the weights, buffers and EMAHook's
    # average of rank 0, resharded from two ranks to one
    out = tmp_path / 'resumed1_sharded'
    torchrun(out, '--work-dir', str(out / 'work'), '--fsdp', 'local', '--resume', os.path.join(work_dir, 'iter_8.pth'),
             '--max-epochs', '2', '--auto-scale-lr', processes=1)
    assert [r['kind'] for r in records(out, 0)] == ['val']
    assert cli(['convert-checkpoint', os.path.join(work_dir, 'iter_8.pth'), str(tmp_path / 'iter_8_full.pth')]) == 0
    whole, weights = serialization.read(str(tmp_path / 'iter_8_full.pth')), final(out, 0)
    for key, value in whole['state_dict'].items():  # EMAHook saves its average here, the model's own beside it
        assert torch.equal(weights['ema.module.' + key], value), key
        assert torch.equal(weights[key], whole['ema_state_dict']['module.' + key]), key


def _one_process_cfg(work_dir, resume, auto_scale_lr):
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        from ddp_resume import config
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    cfg = config(str(work_dir), own_trainer=False)
    cfg.update(launcher='none', resume=resume, auto_scale_lr=auto_scale_lr, experiment_name=os.path.basename(work_dir),
               custom_hooks=[])
    return cfg
