"""mmengine's own example for FlexibleRunner on mm_lightning, with its import line changed.

``examples/distributed_training_with_flexible_runner.py`` (mmengine's repository; unchanged in
``../shared/mmengine-tests/examples/``) trains torchvision's resnet50 on CIFAR-10 for 10 epochs with
mmengine's default hooks: plain, under DDP, ``--use-fsdp`` and ``--use-deepspeed`` (ZeRO-3). On this
machine's CPU (tests/scripts/flexible_runner_example.py: a synthetic CIFAR-10 of the same kind, and mixed
precision off, as mmengine's AmpOptimWrapper needs CUDA) each variant trains and validates every epoch on one
process or two (torchrun, gloo), writes a checkpoint per epoch, and a run resumed from ``epoch_5.pth``
continues every rank exactly: each later iteration's loss and LR, each validation, and the final weights
and BatchNorm statistics (each rank keeps its own) bit for bit. As written, its DeepSpeed float16 is refused
before anything is built where DeepSpeed's engine has no float16 on the CPU.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from .available import requires

pytestmark = requires('torchvision')

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(HERE, 'scripts', 'flexible_runner_example.py')
TORCHRUN = os.path.join(os.path.dirname(sys.executable), 'torchrun')
ENV = dict(os.environ, OMP_NUM_THREADS='1')

#: variant -> (processes, the example's own arguments)
VARIANTS = {'plain': (1, []), 'ddp': (2, []), 'fsdp': (2, ['--use-fsdp']), 'deepspeed': (2, ['--use-deepspeed'])}


def _launch(out, variant, *args):
    processes, example_args = VARIANTS[variant]
    launch = [TORCHRUN, '--standalone', f'--nproc_per_node={processes}'] if processes > 1 else [sys.executable]
    return subprocess.run([*launch, SCRIPT, str(out), *args, '--', *example_args], capture_output=True, text=True,
                          env=ENV, timeout=600, cwd=os.path.dirname(HERE))


def _run(out, variant, *args):
    result = _launch(out, variant, *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    processes = VARIANTS[variant][0]
    return [(_records(out, rank), torch.load(os.path.join(out, f'final_rank{rank}.pt'), weights_only=True))
            for rank in range(processes)]


def _records(out, rank):
    with open(os.path.join(out, f'records_rank{rank}.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize('variant', ['plain', 'ddp', 'fsdp', pytest.param('deepspeed', marks=pytest.mark.deepspeed)])
def test_the_example_trains_and_resumes_every_rank_exactly_from_its_checkpoint(tmp_path, variant):
    uninterrupted = _run(tmp_path / 'run', variant, '--keep', '5')
    for records, _ in uninterrupted:  # one iteration per epoch (32 images), a validation after each
        assert [(r['kind'], r['iter']) for r in records] == [(kind, i + (kind == 'val')) for i in range(10)
                                                             for kind in ('iter', 'val')]
    checkpoint = tmp_path / 'run' / 'work_dirs' / 'epoch_5.pth'
    assert {name for name in os.listdir(tmp_path / 'run' / 'work_dirs') if name.startswith('epoch_')} == {
        'epoch_5.pth', 'epoch_10.pth'}
    resumed = _run(tmp_path / 'resumed', variant, '--resume', str(checkpoint))
    for rank, ((records, weights), (resumed_records, resumed_weights)) in enumerate(zip(uninterrupted, resumed)):
        # epoch 5's validation was due when the file was written; then epochs 6 to 10
        assert resumed_records == records[-11:], f'rank {rank}'
        assert resumed_weights.keys() == weights.keys()
        for key, value in weights.items():
            assert torch.equal(resumed_weights[key], value), f'rank {rank}: {key}'
    if len(uninterrupted) == 2:  # the ranks' BatchNorm statistics differ: each rank's own was resumed
        (_, first), (_, second) = uninterrupted
        assert any(not torch.equal(first[key], second[key]) for key in first if key.endswith('running_mean'))


@pytest.mark.deepspeed
def test_the_examples_deepspeed_float16_is_refused_before_anything_is_built_on_a_cpu_without_it(tmp_path):
    from deepspeed.accelerator import get_accelerator
    if get_accelerator().is_fp16_supported():
        pytest.skip("this machine's DeepSpeed has float16: the example trains as written")
    result = _launch(tmp_path, 'deepspeed', '--as-is')
    assert result.returncode != 0
    assert ("ConfigError: strategy.fp16.enabled: DeepSpeed's engine has no float16 on this machine's CPU; use "
            'bf16=dict(enabled=True), or GPUs') in result.stderr
    assert not os.path.exists(tmp_path / 'work_dirs')  # no work_dir, model, dataset or process group
