"""mmengine's DeepSpeedStrategy on 2 CPU processes (torchrun, gloo) through FlexibleRunner.

The resume test's config (tests/scripts/ddp_resume.py ``--deepspeed STAGE``: DeepSpeedOptimWrapper with
SGD, a shuffled sampler, dropout, per-rank noise and BatchNorm statistics, validation every epoch) runs on
Lightning's DeepSpeedStrategy with the CPU accelerator (``translate/deepspeed.py``). CheckpointHook writes
a directory in mmengine's DeepSpeedStrategy layout every 5 iterations; rank 1 is killed (SIGKILL) after
its 7th iteration, and the run resumed from the last directory (``resume=True`` for ZeRO-2, the path for
ZeRO-3) continues bit for bit on every rank: each later iteration's loss and LR, each validation and the
final weights equal the uninterrupted run's. The last directory converts to one mmengine ``.pth`` that
mmengine's ``load_checkpoint`` reads strictly and that holds the final weights (rank 0's buffers).
"""
import os
import re

import pytest
import torch
from distributed_runs import RANKS, assert_resumed_exactly, final, records, torchrun
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import load_checkpoint as mmengine_load_checkpoint

from mm_lightning.state import serialization
from mm_lightning.tools.cli import main as cli

pytestmark = pytest.mark.deepspeed

#: What each rank writes into a checkpoint directory, by ZeRO stage (the engine's file names).
WRITTEN = {
    2: ['mp_rank_00_model_states.pt'] + [f'zero_pp_rank_{r}_mp_rank_00_optim_states.pt' for r in RANKS],
    3: [f'zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt' for r in RANKS for kind in ('model', 'optim')],
}


@pytest.mark.parametrize('stage, resume', [(2, ()), (3, ('iter_5.pth',))])
def test_a_killed_zero_run_resumes_every_rank_exactly_and_converts(tmp_path, stage, resume):
    full = tmp_path / 'uninterrupted'
    torchrun(full, '--deepspeed', str(stage))
    full_run = {rank: (records(full, rank), final(full, rank)) for rank in RANKS}
    assert len([r for r in full_run[0][0] if r['kind'] == 'iter']) == 12

    work_dir = tmp_path / 'work'
    stopped = torchrun(tmp_path / 'stopped', '--work-dir', str(work_dir), '--deepspeed', str(stage),
                       '--at', 'after_train_iter:7:KILL:1', check=False)
    assert stopped.returncode != 0
    last = open(work_dir / 'last_checkpoint').read()
    assert os.path.basename(last) == 'iter_5.pth' and sorted(os.listdir(last)) == WRITTEN[stage]
    assert not [name for name in os.listdir(work_dir) if name.endswith('.partial')]

    resumed = tmp_path / 'resumed'
    torchrun(resumed, '--work-dir', str(work_dir), '--deepspeed', str(stage),
             '--resume', *[str(work_dir / name) for name in resume])
    assert_resumed_exactly(full_run, tmp_path / 'stopped', resumed, stopped_counts=False)
    assert len(records(resumed, 0)) == 9  # iterations 6 to 12 and the validations after epochs 2 and 3

    converted = str(tmp_path / 'iter_12_full.pth')
    assert cli(['convert-checkpoint', str(work_dir / 'iter_12.pth'), converted]) == 0
    checkpoint = serialization.read(converted)
    assert checkpoint['meta']['iter'] == 12 and 'message_hub' in checkpoint and 'optimizer' not in checkpoint
    weights = full_run[0][1]  # rank 0's: its BatchNorm statistics are the checkpoint's
    assert checkpoint['state_dict'].keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(checkpoint['state_dict'][key], value), key
    model = MODELS.build(dict(type='ToyClassifier', dropout=0.3, batch_norm=True))
    mmengine_load_checkpoint(model, converted, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_ema_hook_is_refused_by_name_before_anything_is_built(tmp_path):
    """EMAHook swaps its average into the checkpoint's weights, which DeepSpeed's engine writes from the model
    itself, and ZeRO-3 partitions the parameters it copies: refused when the runner is built, as explain says."""
    from mm_lightning import ConfigError, FlexibleRunner
    from mm_lightning.tools.explain import explain
    cfg = dict(model=dict(type='ToyClassifier'), work_dir=str(tmp_path / 'work'), launcher='none',
               strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=2)),
               optim_wrapper=dict(type='DeepSpeedOptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
               train_dataloader=dict(dataset=dict(type='BlobDataset', size=8), batch_size=4,
                                     sampler=dict(type='DefaultSampler', shuffle=False)),
               train_cfg=dict(by_epoch=True, max_epochs=1),
               custom_hooks=[dict(type='SyncBuffersHook'), dict(type='EMAHook', momentum=0.2)])
    message = 'custom_hooks[1]: EMAHook under DeepSpeedStrategy (zero_optimization.stage=2)'
    with pytest.raises(ConfigError, match=re.escape(message)):
        FlexibleRunner.from_cfg(cfg)
    assert not os.path.exists(tmp_path / 'work')
    assert any(w['message'].startswith(message) for w in explain(cfg)['warnings'])
