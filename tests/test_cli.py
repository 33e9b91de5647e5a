"""The command line: train, test and resume as OpenMMLab's tools do."""
import os
import subprocess
import sys

from mmengine.runner.checkpoint import load_checkpoint
from toy import ToyClassifier

from mm_lightning.cli import main

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'scoped.py')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_then_resume_then_test(tmp_path):
    work_dir = str(tmp_path / 'wd')
    assert main(['train', CONFIG, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_epochs=1',
                 f'experiment_name=cli_{tmp_path.name}']) == 0
    assert os.path.isfile(os.path.join(work_dir, 'epoch_1.pth'))
    assert main(['train', CONFIG, '--work-dir', work_dir, '--resume', '--cfg-options',
                 f'experiment_name=cli2_{tmp_path.name}']) == 0
    assert os.path.isfile(os.path.join(work_dir, 'epoch_2.pth'))
    model = ToyClassifier(batch_norm=True)
    load_checkpoint(model, os.path.join(work_dir, 'epoch_2.pth'), strict=True)
    assert main(['test', CONFIG, os.path.join(work_dir, 'epoch_2.pth'), '--work-dir', work_dir, '--cfg-options',
                 f'experiment_name=cli3_{tmp_path.name}',
                 "test_dataloader.dataset.type=BlobDataset", 'test_dataloader.sampler.type=DefaultSampler',
                 'test_dataloader.batch_size=4', 'test_evaluator.type=ToyAccuracy', 'test_cfg.fp16=False']) == 0


def test_amp_flag_on_cpu_explains_bf16(tmp_path, capsys):
    assert main(['train', CONFIG, '--work-dir', str(tmp_path), '--amp']) == 2
    assert 'bfloat16' in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'mm_lightning', 'test', CONFIG, 'missing.pth'],
                            capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(CONFIG) + '/..'))
    assert result.returncode == 2 and "checkpoint file not found: 'missing.pth'" in result.stderr


def test_distribution_options_reach_the_config():
    from mm_lightning.cli import _parser, build_config
    args = _parser().parse_args(['train', CONFIG, '--launcher', 'none', '--devices', '1', '--num-nodes', '1',
                                 '--cfg-options', 'lightning_trainer.enable_progress_bar=True'])
    cfg = build_config(args)
    assert cfg.launcher == 'none'
    assert cfg.lightning_trainer == dict(enable_progress_bar=True, devices=1, num_nodes=1)
