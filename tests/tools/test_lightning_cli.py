"""LightningCLI with the config-built classes: ``--model.config``/``--data.config``, and ConfigCLI's defaults."""
import json
import os
import sys

import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from parity import unique_name

from mm_lightning import ConfigCLI, ConfigDataModule, ConfigError, ConfigModule, FlexibleRunner, load_config
from mm_lightning.tools.lightning_cli import run

EXAMPLE = 'examples/spiral/mlp_spiral.py'
EPOCHS = 2  # the example validates every 2 epochs


def _options(work_dir, **more):
    return {'train_cfg.max_epochs': EPOCHS, 'work_dir': str(work_dir), 'experiment_name': unique_name('cli'), **more}


def _config_args(group, options):
    return [f'--{group}.config', EXAMPLE, f'--{group}.cfg_options', json.dumps(options)]


def _quiet_trainer(root_dir):
    return ['--trainer.logger=false', '--trainer.enable_progress_bar=false', '--trainer.enable_model_summary=false',
            '--trainer.default_root_dir', str(root_dir)]


def test_lightning_cli_with_the_classes_fits_as_the_runner_does_and_tests_its_checkpoint(tmp_path):
    options = _options(tmp_path / 'cli')
    data = _config_args('data', options)
    fit = LightningCLI(ConfigModule, ConfigDataModule,
                       args=['fit', *_config_args('model', options), *data, *_quiet_trainer(tmp_path / 'fit')])

    runner = FlexibleRunner.from_cfg(load_config(EXAMPLE, _options(tmp_path / 'runner')))
    model = runner.train()
    expected = model.state_dict()
    weights = fit.model.model.state_dict()
    assert weights.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(weights[key], value), key
    validated = runner.val()
    assert fit.model.metrics['val'] == validated

    checkpoint = os.path.join(options['work_dir'], f'epoch_{EPOCHS}.pth')  # mmengine's CheckpointHook wrote it
    test_options = _options(tmp_path / 'cli')
    tested = LightningCLI(ConfigModule, ConfigDataModule,
                          args=['test', *_config_args('model', test_options), *_config_args('data', test_options),
                                *_quiet_trainer(tmp_path / 'test'), '--ckpt_path', checkpoint])
    assert tested.model.metrics['test'] == validated  # the example tests on its validation split


def test_config_cli_gives_the_trainer_the_configs_settings_and_the_command_lines(tmp_path):
    cli = ConfigCLI(args=[*_config_args('model', _options(tmp_path)), '--trainer.callbacks+=LearningRateMonitor',
                          '--trainer.logger=CSVLogger', f'--trainer.logger.save_dir={tmp_path / "csv"}'], run=False)
    trainer = cli.trainer
    assert trainer.max_epochs == EPOCHS  # the config's train_cfg, not Lightning's default
    assert trainer.num_sanity_val_steps == 0 and trainer.checkpoint_callback is None  # trainer_kwargs' settings
    assert trainer.default_root_dir == str(tmp_path)  # the config's work_dir
    assert isinstance(trainer.logger, CSVLogger)  # the command line's
    assert any(isinstance(callback, LearningRateMonitor) for callback in trainer.callbacks)
    # One config for both: the datamodule read the module's, options included.
    assert cli.datamodule.spec('train') == cli.model.cfg.train_dataloader


def test_config_cli_trainer_length_runs_as_the_config_key(tmp_path):
    """``--trainer.max_epochs 3`` trains as ``train_cfg.max_epochs=3`` does under the runner, bit for bit."""
    cli = ConfigCLI(args=['fit', *_config_args('model', _options(tmp_path / 'cli')), '--trainer.max_epochs', '3',
                          '--trainer.enable_progress_bar=false'])
    runner = FlexibleRunner.from_cfg(load_config(EXAMPLE, _options(tmp_path / 'runner', **{'train_cfg.max_epochs': 3})))
    expected = runner.train().state_dict()
    assert cli.model.runner.epoch == 3 and cli.model.cfg.train_cfg.max_epochs == 3
    for key, value in cli.model.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_config_cli_refuses_a_trainer_setting_without_an_mmengine_meaning(tmp_path):
    with pytest.raises(ConfigError, match=rf'Trainer\(max_steps=3\) has no meaning for the epoch-based '
                                          rf'train_cfg.max_epochs={EPOCHS}'):
        ConfigCLI(args=['fit', *_config_args('model', _options(tmp_path)), '--trainer.max_steps=3'])


def test_config_cli_predicts_over_the_test_loader(tmp_path):
    cli = ConfigCLI(args=['predict', *_config_args('model', _options(tmp_path)), '--trainer.enable_progress_bar=false'])
    predictions = cli.trainer.predict_loop.predictions
    samples = [sample for batch in predictions for sample in batch]
    assert len(samples) == len(cli.datamodule.loader('test').dataset)
    assert all('pred' in sample for sample in samples)


def test_config_cli_prints_its_config_with_the_config_given_once(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ConfigCLI(args=['fit', *_config_args('model', _options(tmp_path)), '--print_config'])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert f'config: {EXAMPLE}' in printed and 'data:' not in printed  # the datamodule follows --model.config


def test_without_jsonargparse_the_cli_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'jsonargparse', None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'mm_lightning\[cli\]'"):
        ConfigCLI(args=[])
    with pytest.raises(SystemExit, match=r"^mm-lightning-cli: ConfigCLI needs jsonargparse"):
        run([])


def test_config_cli_writes_lightnings_setup_lines_to_the_log_file(tmp_path, capsys):
    """``GPU available: ...`` and Lightning's tips, printed while the Trainer is built, before the run's log file
    exists: kept, and written to it when the run opens it; not on the console."""
    cli = ConfigCLI(args=['fit', *_config_args('model', _options(tmp_path)), '--trainer.enable_progress_bar=false'])
    context = cli.model.context
    with open(os.path.join(context.log_dir, f'{context.timestamp}.log')) as f:
        log = f.read()
    assert 'GPU available: ' in log and 'TPU available: ' in log
    captured = capsys.readouterr()
    assert 'GPU available' not in captured.out + captured.err


@pytest.mark.parametrize('problem', ['custom_imports', 'loop argument'])
def test_mm_lightning_cli_reports_a_bad_config_in_one_line_exit_status_2(problem, tmp_path, monkeypatch, capsys):
    config = tmp_path / 'config.py'
    base = f'_base_ = [{os.path.abspath(EXAMPLE)!r}]\n'
    if problem == 'custom_imports':
        config.write_text(base + "custom_imports = dict(imports=['examples.spiral.components', "
                                 "'no_such_cli_module'])\n")
        line = (f"custom_imports: importing 'no_such_cli_module' (listed in {config}) failed: ModuleNotFoundError: "
                "No module named 'no_such_cli_module'; set PYTHONPATH so that sys.path holds the directory it is in")
    else:
        config.write_text(base + 'train_cfg = dict(max_epochss=2)\n')
        line = ("train_cfg.max_epochss: EpochBasedTrainLoop takes no argument 'max_epochss' (it takes max_epochs, "
                "val_begin, val_interval, dynamic_intervals); did you mean 'max_epochs'?")
    with pytest.raises(SystemExit) as exit_:
        run(['fit', '--model.config', str(config), '--model.cfg_options',
             json.dumps(_options(tmp_path / 'wd')), *_quiet_trainer(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err and err.splitlines()[-1] == f'mm-lightning-cli: error: {line}', err
