"""Running tests/scripts/ddp_resume.py under torchrun (2 CPU processes, gloo) and reading what each rank recorded."""
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'scripts', 'ddp_resume.py')
TORCHRUN = os.path.join(os.path.dirname(sys.executable), 'torchrun')
ENV = dict(os.environ, PYTHONPATH=HERE, OMP_NUM_THREADS='1')
RANKS = (0, 1)


def torchrun(out, *args, check=True, processes=2):
    result = subprocess.run([TORCHRUN, '--standalone', f'--nproc_per_node={processes}', SCRIPT, str(out), *args],
                            capture_output=True, text=True, env=ENV, timeout=300, cwd=os.path.dirname(HERE))
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def records(out, rank):
    path = os.path.join(out, f'records_rank{rank}.jsonl')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def final(out, rank):
    return torch.load(os.path.join(out, f'final_rank{rank}.pt'), weights_only=True)


def assert_resumed_exactly(full_run, stopped_out, resumed_out, stopped_counts=True):
    """Every rank: the resumed records continue the run (where it stopped, when ``stopped_counts``)."""
    for rank in RANKS:
        full_records, full_weights = full_run[rank]
        resumed = records(resumed_out, rank)
        assert resumed and resumed == full_records[len(full_records) - len(resumed):], f'rank {rank}'
        if stopped_counts:
            assert records(stopped_out, rank) + resumed == full_records, f'rank {rank}: lost or repeated records'
        weights = final(resumed_out, rank)
        assert weights.keys() == full_weights.keys()
        for key, value in full_weights.items():
            assert torch.equal(weights[key], value), f'rank {rank}: {key}'
