"""DeepSpeed checkpoints in mmengine's DeepSpeedStrategy layout, with the engine on 2 CPU processes (gloo).

The layout alone, without a runner: the engine is driven directly (tests/scripts/deepspeed_engine.py).
ZeRO-3's partitioned model and optimizer states are written by every rank into one directory named like
mmengine's file, mmengine's checkpoint rides along as the engine's client state, a fresh engine that
loads the directory continues bit for bit, and the weights alone load into an engine that evaluates or
fine-tunes. Whole runs (FlexibleRunner, CheckpointHook, a killed run
resumed, convert-checkpoint) are in tests/test_deepspeed.py.
"""
import json
import os
import subprocess

import pytest
from distributed_runs import ENV, HERE, TORCHRUN

pytestmark = pytest.mark.deepspeed
SCRIPT = os.path.join(HERE, 'scripts', 'deepspeed_engine.py')


def test_zero3_checkpoint_directory_resumes_every_rank_exactly(tmp_path):
    result = subprocess.run([TORCHRUN, '--standalone', '--nproc_per_node=2', SCRIPT, '3', str(tmp_path)],
                            capture_output=True, text=True, env=ENV, timeout=300, cwd=os.path.dirname(HERE))
    assert result.returncode == 0, result.stderr[-4000:]
    with open(tmp_path / 'result.json') as f:
        ranks = json.load(f)
    for rank, seen in enumerate(ranks):
        assert seen['resumed'] == seen['continued'], f'rank {rank}'
        assert seen['probes'] == [True, True, True], f'rank {rank}: the weights alone, evaluating and fine-tuning'
        assert seen['written'] == [f'zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt'
                                   for r in (0, 1) for kind in ('model', 'optim')]
        assert seen['whole'] and not any(name.endswith(('.partial', '.old')) for name in seen['leftovers'])
        assert seen['client_state'] == dict(meta=dict(epoch=1, iter=4),
                                            message_hub=dict(log_scalars={}, runtime_info=dict(iter=4)),
                                            mm_lightning=dict(loop=dict(iter=4)))
