"""OpenMMLab's own ``tools/train.py``, as the packages ship it, trains with mm_lightning when given
``--cfg-options runner_type=mm_lightning.FlexibleRunner``, and ``--resume`` continues the run."""
import json
import os
import subprocess
import sys
from typing import List

import torch

from .available import requires
from .shipped import override, tool_path
from .small_configs import imagenet_resnet18_config, rtmdet_tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = 'runner_type=mm_lightning.FlexibleRunner'


def train_tool(package: str, config_file: str, work_dir: str, *extra: str) -> str:
    """Run ``<package>/.mim/tools/train.py`` in a fresh process; returns its output."""
    command = [sys.executable, tool_path(package), config_file, '--work-dir', work_dir, *extra]
    env = dict(os.environ, OMP_NUM_THREADS='1',  # as the in-process tests (conftest.one_intra_op_thread)
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    result = subprocess.run(command, cwd=os.path.dirname(work_dir), env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def logged_train_iterations(work_dir: str) -> List[List[int]]:
    """Per run (oldest first), the iterations whose training scalars ``LoggerHook`` wrote."""
    runs = sorted(entry for entry in os.listdir(work_dir) if os.path.isdir(os.path.join(work_dir, entry)))
    logged = []
    for run in runs:
        with open(os.path.join(work_dir, run, 'vis_data', 'scalars.json')) as f:
            records = [json.loads(line) for line in f if line.strip()]
        logged.append([record['iter'] for record in records if 'loss' in record])
    return logged


def read_checkpoint(path: str) -> dict:
    """mm_lightning's checkpoints load with ``weights_only=True`` (mmengine's own pickle objects)."""
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_train_then_resume(package: str, cfg, tmp_path, first_epochs: int, iters_per_epoch: int,
                             *tool_flags: str) -> dict:
    config_file = str(tmp_path / 'config.py')
    cfg.dump(config_file)
    work_dir = str(tmp_path / 'work_dir')
    total = cfg.train_cfg.max_epochs

    train_tool(package, config_file, work_dir, *tool_flags, '--cfg-options', OURS,
               f'train_cfg.max_epochs={first_epochs}')
    first = read_checkpoint(os.path.join(work_dir, f'epoch_{first_epochs}.pth'))
    assert (first['meta']['epoch'], first['meta']['iter']) == (first_epochs, first_epochs * iters_per_epoch)
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith(f'epoch_{first_epochs}.pth')

    train_tool(package, config_file, work_dir, *tool_flags, '--resume', '--cfg-options', OURS)
    last = read_checkpoint(os.path.join(work_dir, f'epoch_{total}.pth'))
    assert (last['meta']['epoch'], last['meta']['iter']) == (total, total * iters_per_epoch)
    first_run, resumed_run = logged_train_iterations(work_dir)
    assert first_run == [iters_per_epoch * (epoch + 1) for epoch in range(first_epochs)]
    # The resumed run starts after the checkpoint: it logs only the epochs it had left.
    assert resumed_run == [iters_per_epoch * (epoch + 1) for epoch in range(first_epochs, total)]
    changed = [key for key, value in last['state_dict'].items()
               if value.is_floating_point() and not torch.equal(value, first['state_dict'][key])]
    assert changed, 'the resumed run did not train'
    return last


@requires('mmdet.datasets', 'mmdet.models', 'mmcv.ops', 'pycocotools')
def test_mmdet_train_tool_rtmdet_then_resume(coco_root, tmp_path):
    cfg = override(rtmdet_tiny_config(coco_root), {'train_cfg.max_epochs': 2})
    last = assert_train_then_resume('mmdet', cfg, tmp_path, 1, 2)
    # AdamW and the EMA model count every update of both runs: their state was resumed, not restarted.
    steps = {float(state['step']) for state in last['optimizer']['state'].values()}
    assert steps == {4.0}
    assert int(last['ema_state_dict']['steps']) == 4


@requires('mmpretrain.datasets', 'mmpretrain.models')
def test_mmpretrain_train_tool_imagenet_then_resume(imagenet_root, tmp_path):
    cfg = override(imagenet_resnet18_config(imagenet_root), {'train_cfg.max_epochs': 2})
    # The tool turns on persistent workers unless told not to; the loaders here have none.
    last = assert_train_then_resume('mmpretrain', cfg, tmp_path, 1, 2, '--no-persistent-workers')
    # The LR scheduler's state was resumed: it has counted the epochs of both runs.
    assert last['param_schedulers'][0]['_global_step'] == 2
