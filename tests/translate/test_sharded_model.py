"""A model sharded by FSDP2 copies, loads and reshards as the unsharded one (tests/scripts/sharded_model.py on 2
CPU processes): ``copy.deepcopy`` (EMAHook's average) is sharded alike with the same shards and outputs, whole
tensors load as each rank's shards, and after an evaluation's forward that left parameters gathered
(SHARD_GRAD_OP) EMAHook's swap in and out leaves the model as it was."""
import json
import os
import subprocess

import pytest
from distributed_runs import ENV, HERE, RANKS, TORCHRUN

SCRIPT = os.path.join(HERE, 'scripts', 'sharded_model.py')


@pytest.fixture(scope='module')
def seen(tmp_path_factory):
    out = tmp_path_factory.mktemp('sharded_model')
    result = subprocess.run([TORCHRUN, '--standalone', '--nproc_per_node=2', SCRIPT, str(out)], capture_output=True,
                            text=True, env=ENV, timeout=300, cwd=os.path.dirname(HERE))
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = []
    for rank in RANKS:
        with open(os.path.join(out, f'result_rank{rank}.json')) as f:
            ranks.append(json.load(f))
    return ranks


@pytest.mark.parametrize('sharding_strategy', ['FULL_SHARD', 'SHARD_GRAD_OP'])
def test_a_sharded_model_copies_loads_and_reshards_as_an_unsharded_one(seen, sharding_strategy):
    for rank in RANKS:
        checks = seen[rank][sharding_strategy]
        # SHARD_GRAD_OP keeps the parameters gathered after a forward: the case reshard exists for
        assert checks.pop('gathered_after_eval_forward') == (sharding_strategy == 'SHARD_GRAD_OP')
        assert checks == dict.fromkeys(checks, True) and len(checks) == 6, (rank, checks)
