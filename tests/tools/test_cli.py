"""The command line: train, test and resume as OpenMMLab's tools do."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from full_disk import fill_at
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS
from mmengine.runner.checkpoint import load_checkpoint
from paths import ROOT, TESTS
from toy import BlobDataset, ToyClassifier

from mm_lightning.state.serialization import from_safe
from mm_lightning.tools.cli import main

CONFIG = os.path.join(TESTS, 'configs', 'scoped.py')
#: What `test` needs beyond the training config.
TEST_OPTIONS = ['test_dataloader.dataset.type=BlobDataset', 'test_dataloader.sampler.type=DefaultSampler',
                'test_dataloader.batch_size=4', 'test_evaluator.type=ToyAccuracy', 'test_cfg.fp16=False']


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
                 f'experiment_name=cli3_{tmp_path.name}', *TEST_OPTIONS]) == 0


@pytest.fixture(scope='module')
def first_epoch(tmp_path_factory):
    """(epoch_1.pth, the same converted to a Lightning .ckpt) of the scoped config."""
    tmp_path = tmp_path_factory.mktemp('first_epoch')
    assert main(['train', CONFIG, '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
                 f'experiment_name=first_{tmp_path.name}']) == 0
    pth, ckpt = str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'epoch_1.ckpt')
    assert main(['convert-checkpoint', pth, ckpt]) == 0
    return pth, ckpt


def _test_metrics(tmp_path, name, checkpoint):
    work_dir = str(tmp_path / name)
    assert main(['test', CONFIG, checkpoint, '--work-dir', work_dir, '--cfg-options',
                 f'experiment_name={name}_{tmp_path.name}', *TEST_OPTIONS]) == 0
    (log,) = glob.glob(os.path.join(work_dir, '*', '*.log'))
    with open(log) as f:
        (line,) = [line for line in f if 'test metrics:' in line]
    return line.split('test metrics:')[1].strip()


def test_test_gives_the_same_metrics_from_either_format(first_epoch, tmp_path):
    pth, ckpt = first_epoch
    assert _test_metrics(tmp_path, 'ckpt', ckpt) == _test_metrics(tmp_path, 'pth', pth)


def test_train_resumes_from_a_lightning_checkpoint_as_from_its_pth(first_epoch, tmp_path):
    finals = []
    for checkpoint in first_epoch:
        work_dir = str(tmp_path / os.path.basename(checkpoint).replace('.', '_'))
        assert main(['train', CONFIG, '--work-dir', work_dir, '--resume', checkpoint, '--cfg-options',
                     f'experiment_name={os.path.basename(work_dir)}_{tmp_path.name}']) == 0
        finals.append(from_safe(torch.load(os.path.join(work_dir, 'epoch_2.pth'), weights_only=True)))
    from_pth, from_ckpt = finals
    assert from_ckpt['meta']['iter'] == from_pth['meta']['iter'] == 8
    for part in ('state_dict', 'optimizer'):
        torch.testing.assert_close(from_ckpt[part], from_pth[part], atol=0, rtol=0)
    losses = [final['message_hub']['log_scalars']['train/loss'].data[0] for final in finals]  # every iteration's
    assert len(losses[0]) == 8 and (losses[0] == losses[1]).all()


#: A checkpoint `test` cannot use -> (what the file holds, the error after the file's name).
UNUSABLE = {
    'missing': (None, None),
    'cut': ('cut', ': not a whole checkpoint (cut short, or not a file torch.save wrote)'),
    'text': (b'model = dict()\n', ': not a whole checkpoint (cut short, or not a file torch.save wrote)'),
    'other model': ({'meta': {}, 'state_dict': {'backbone.weight': torch.ones(2)}},
                    "; missing (8): net.0.weight, net.0.bias, net.1.weight, ...; unexpected (1): backbone.weight"),
}


@pytest.mark.parametrize('kind', list(UNUSABLE))
def test_test_refuses_an_unusable_checkpoint_in_one_line(kind, first_epoch, tmp_path, capsys):
    content, message = UNUSABLE[kind]
    path = str(tmp_path / 'bad.pth')
    if isinstance(content, dict):
        torch.save(content, path)
    elif content is not None:
        with open(first_epoch[0], 'rb') as f:
            whole = f.read()
        with open(path, 'wb') as f:
            f.write(whole[:len(whole) // 2] if content == 'cut' else content)
    assert main(['test', CONFIG, path, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                 f'experiment_name=bad_{tmp_path.name}', *TEST_OPTIONS]) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    (line,) = [line for line in err.splitlines() if line.startswith('mm-lightning: error:')]
    if content is None:
        assert line == f"mm-lightning: error: checkpoint file not found: '{path}'"
    elif isinstance(content, dict):
        assert line == ("mm-lightning: error: load_from: the checkpoint's weights fit none of the model's tensors: "
                        f'loaded 0 of 8 tensors from {path}{message}')
    else:
        assert line == f'mm-lightning: error: {path}{message}'


@pytest.mark.parametrize('debug', [False, True], ids=['plain', 'debug'])
def test_a_full_disk_during_training_is_one_error_line_and_exit_status_1(debug, tmp_path, monkeypatch, capsys):
    work_dir = tmp_path / 'wd'
    fill_at(monkeypatch, 2)  # epoch_1.pth is written, epoch_2.pth fills the disk
    assert main(['train', CONFIG, '--work-dir', str(work_dir), *(['--debug'] if debug else []), '--cfg-options',
                 f'experiment_name=full_disk_{debug}_{tmp_path.name}']) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('mm-lightning: error:')]
    assert errors == [err.rstrip().splitlines()[-1]]
    assert errors[0].startswith(f'mm-lightning: error: {work_dir}/epoch_2.pth: no space left on device: writing '
                                'this checkpoint needs ')
    assert errors[0].endswith(f'; the previous checkpoint {work_dir}/epoch_1.pth is intact: free space and resume '
                              'from it (resume=True, --resume)')
    assert ('Traceback (most recent call last)' in err) == debug
    assert sorted(name for name in os.listdir(work_dir) if name.endswith(('.pth', '.tmp'))) == ['epoch_1.pth']


def test_amp_flag_on_cpu_explains_bf16(tmp_path, capsys):
    assert main(['train', CONFIG, '--work-dir', str(tmp_path), '--amp']) == 2
    assert 'bfloat16' in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'mm_lightning', 'test', CONFIG, 'missing.pth'],
                            capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(CONFIG) + '/..'))
    assert result.returncode == 2 and "checkpoint file not found: 'missing.pth'" in result.stderr


def test_distribution_options_reach_the_config():
    from mm_lightning.tools.cli import _parser, build_config
    args = _parser().parse_args(['train', CONFIG, '--launcher', 'none', '--devices', '1', '--num-nodes', '1',
                                 '--cfg-options', 'lightning_trainer.enable_progress_bar=True'])
    cfg = build_config(args)
    assert cfg.launcher == 'none'
    assert cfg.lightning_trainer == dict(enable_progress_bar=True, devices=1, num_nodes=1)


# A malformed config is one line on stderr naming the key, exit status 2, no traceback unless --debug.
MALFORMED = [
    ('train_cfg.val_interval=0', 'train_cfg.val_interval: expected a positive integer, got 0'),
    ('randomness.seed=abc', "randomness.seed: expected an integer in [0, 2**32) or None, got 'abc'"),
    ('optim_wrapper.optimizer.type=SDG', "optim_wrapper.optimizer.type: 'SDG' is not in the"),
    ('optim_wrapper.clip_grad.max_norm=x', "optim_wrapper.clip_grad.max_norm: expected a positive number, got 'x'"),
    ('optim_wrapper.accumulative_counts=0', 'optim_wrapper.accumulative_counts: expected a positive integer, got 0'),
    ('default_hooks.logger.interval=0', 'default_hooks.logger.interval: expected a positive integer, got 0'),
    ('log_processor.window_size=x', "log_processor.window_size: expected a positive integer, got 'x'"),
]


@pytest.mark.parametrize('option, first_line', MALFORMED, ids=[option for option, _ in MALFORMED])
def test_malformed_config_is_one_error_line(option, first_line, tmp_path, capsys):
    assert main(['train', CONFIG, '--work-dir', str(tmp_path), '--cfg-options', option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'mm-lightning: error: {first_line}'), err
    assert 'Traceback' not in err
    assert os.listdir(tmp_path) == []  # refused before the run created anything


def test_uncreatable_work_dir(tmp_path, capsys):
    (tmp_path / 'file').write_text('')
    assert main(['train', CONFIG, '--work-dir', str(tmp_path / 'file' / 'wd')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('mm-lightning: error: work_dir: expected a directory that exists or can be created, '
                          f"got '{tmp_path / 'file' / 'wd'}' ('{tmp_path / 'file'}' is not a directory)"), err


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='needs /proc')
def test_work_dir_where_nothing_can_be_created(capsys):
    assert main(['train', CONFIG, '--work-dir', '/proc/no/such']) == 2
    err = capsys.readouterr().err
    assert err.startswith("mm-lightning: error: work_dir: expected a directory that exists or can be created, "
                          "got '/proc/no/such' (cannot create a directory in '/proc': "), err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize('where', ['before', 'after'])
def test_debug_shows_the_traceback(where, tmp_path, capsys):
    command = ['train', CONFIG, '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.val_interval=0']
    assert main(['--debug', *command] if where == 'before' else [*command, '--debug']) == 2
    err = capsys.readouterr().err
    assert 'Traceback (most recent call last)' in err and 'validate_config' in err
    assert err.rstrip().splitlines()[-1] == 'mm-lightning: error: train_cfg.val_interval: expected a positive ' \
                                             'integer, got 0'


def test_explain_takes_debug_after_its_name(tmp_path, capsys):
    assert main(['explain', str(tmp_path / 'missing.py'), '--debug']) == 2
    err = capsys.readouterr().err
    assert 'Traceback (most recent call last)' in err and 'config file not found' in err.splitlines()[-1]


def test_explain_an_unreadable_custom_import_is_an_error_naming_it(tmp_path, capsys):
    config = tmp_path / 'config.py'
    config.write_text("custom_imports = dict(imports=['no_such_module_here'])\nmodel = dict(type='Toy')\n")
    assert main(['explain', str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('mm-lightning: error: custom_imports: ') and 'no_such_module_here' in err, err


CONSOLE_SCRIPT = '''
import os, sys
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != os.getcwd()]
{before}
from mm_lightning.tools.cli import main
sys.exit(main())
'''


def _console_script(cwd, *args, before=''):
    """Run ``main`` the way the ``mm-lightning`` console script does: the working directory not on sys.path."""
    return subprocess.run([sys.executable, '-c', CONSOLE_SCRIPT.format(before=before), *args], cwd=cwd,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))


def test_console_script_imports_from_the_working_directory(tmp_path):
    package = tmp_path / 'myproject'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'components.py').write_text('from mmengine.registry import MODELS\nIMPORTED = True\n')
    (tmp_path / 'cfg.py').write_text("custom_imports = dict(imports=['myproject.components'], "
                                     "allow_failed_imports=False)\nmodel = dict(type='ToyClassifier')\n")
    # Without the entry point's fix the config cannot be read: the simulation is faithful.
    control = _console_script(tmp_path, before="from mmengine.config import Config; Config.fromfile('cfg.py')")
    assert "No module named 'myproject'" in control.stderr
    result = _console_script(tmp_path, 'test', 'cfg.py', 'missing.pth')
    assert "No module named 'myproject'" not in result.stderr
    assert result.returncode == 2 and "checkpoint file not found: 'missing.pth'" in result.stderr, result.stderr


#: What validation needs beyond the training config.
VAL_OPTIONS = ['val_dataloader.dataset.type=BlobDataset', 'val_dataloader.sampler.type=DefaultSampler',
               'val_dataloader.batch_size=4', 'val_evaluator.type=ToyAccuracy', 'val_cfg.fp16=False']


def _train_with_bar(tmp_path, capfd, *options, cfg_options=()):
    work_dir = str(tmp_path / 'wd')
    assert main(['train', CONFIG, '--work-dir', work_dir, *options, '--cfg-options', 'train_cfg.max_epochs=2',
                 f'experiment_name=bar_{tmp_path.name}', *VAL_OPTIONS, *cfg_options]) == 0
    out = capfd.readouterr().out
    (log_dir,) = [entry.path for entry in os.scandir(work_dir) if entry.is_dir()]
    with open(os.path.join(log_dir, f'{os.path.basename(log_dir)}.log')) as f:
        log = f.read()
    assert 'Epoch(train) [2][4/4]' in log and 'System environment' in log  # the log file gets everything
    return out


def _assert_a_bar_without_the_dump(out, work_dir):
    assert 'Epoch(train)' not in out  # mmengine's INFO lines stay off the console while the bar draws
    assert 'System environment' not in out and 'Hooks will be executed' not in out  # nor the dump before it
    assert re.search(rf'Done \(fit\): files in {re.escape(str(work_dir))}; last validation: toy/accuracy: ', out), out


def test_tqdm_progress_bar(tmp_path, capfd):
    out = _train_with_bar(tmp_path, capfd, '--progress-bar', 'tqdm')
    # mmengine's epoch count, and the validation metric once there is one
    assert re.search(r'Epoch 1/2: 100%\|█+\| 4/4 \[.*lr=0\.100, loss=\d\.\d+', out), out
    assert re.search(r'Epoch 2/2: 100%\|█+\| 4/4 \[.*toy/accuracy=', out), out
    _assert_a_bar_without_the_dump(out, tmp_path / 'wd')


def test_rich_progress_bar_from_the_config(tmp_path, capfd):
    out = _train_with_bar(tmp_path, capfd, cfg_options=['progress_bar=rich'])
    assert re.search(r'Epoch 2/2 +━+ 4/4', out), out  # rich prints its last frame where it cannot redraw
    assert 'toy/accuracy:' in out
    _assert_a_bar_without_the_dump(out, tmp_path / 'wd')


def test_no_progress_bar_by_default(tmp_path, capfd):
    out = _train_with_bar(tmp_path, capfd)
    assert 'Epoch(train) [2][4/4]' in out and 'it/s' not in out


def test_predict_saves_the_test_step_outputs_in_order(tmp_path):
    model = ToyClassifier(batch_norm=True)
    checkpoint = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    out = str(tmp_path / 'predictions.pth')
    assert main(['predict', CONFIG, checkpoint, '--out', out, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                 f'experiment_name=predict_{tmp_path.name}', 'test_dataloader.dataset.type=BlobDataset',
                 'test_dataloader.dataset.size=10', 'test_dataloader.sampler.type=DefaultSampler',
                 'test_dataloader.sampler.shuffle=False', 'test_dataloader.batch_size=4',
                 'test_dataloader.num_workers=0', 'test_evaluator.type=ToyAccuracy', 'test_cfg.fp16=False']) == 0
    outputs = torch.load(out, weights_only=False)
    assert [output['index'] for output in outputs] == list(range(10))
    dataset, _ = BlobDataset(size=10), model.eval()
    with torch.no_grad():
        expected = model.test_step(dict(inputs=list(dataset.inputs), label=list(dataset.labels), index=list(range(10))))
    assert [int(output['pred']) for output in outputs] == [int(sample['pred']) for sample in expected]


def test_profiler_report_lands_in_the_work_dir(tmp_path):
    work_dir = tmp_path / 'profiled'
    assert main(['train', CONFIG, '--work-dir', str(work_dir), '--profiler', 'simple', '--cfg-options',
                 'train_cfg.max_epochs=1', f'experiment_name=prof_{tmp_path.name}']) == 0
    report = (work_dir / 'fit-profile.txt').read_text()
    assert report.startswith('FIT Profiler Report') and 'run_training_epoch' in report
    assert main(['train', CONFIG, '--work-dir', str(work_dir), '--cfg-options', 'profiler=fastest']) == 2


# -- every input error is one line naming its key or file, exit status 2 (issue 24) -----------------------------
def _error_lines(err):
    """The ``mm-lightning: error:`` lines of a refused command's stderr, which has no traceback."""
    assert 'Traceback' not in err, err
    return [line for line in err.splitlines() if line.startswith('mm-lightning: error:')]


#: What each command that runs a config takes beyond it.
COMMAND_ARGUMENTS = {'train': lambda tmp_path: [], 'test': lambda tmp_path: ['missing.pth'],
                     'predict': lambda tmp_path: ['missing.pth', '--out', str(tmp_path / 'out.pth')]}


@pytest.mark.parametrize('command', list(COMMAND_ARGUMENTS))
def test_a_custom_import_that_fails_is_one_error_line(command, tmp_path, monkeypatch, capsys):
    (tmp_path / 'cli_broken_module.py').write_text("raise NameError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / 'config.py'
    config.write_text(f'_base_ = [{CONFIG!r}]\n'
                      "custom_imports = dict(imports=['toy', 'cli_broken_module'], allow_failed_imports=False)\n")
    assert main([command, str(config), *COMMAND_ARGUMENTS[command](tmp_path), '--work-dir', str(tmp_path / 'wd')]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mm-lightning: error: custom_imports: importing 'cli_broken_module' (listed in {config}) failed: NameError: "
        f"boom ({tmp_path / 'cli_broken_module.py'}, line 1)"]


@DATASETS.register_module(force=True)
class AnnotatedDataset(BaseDataset):
    """mmengine's BaseDataset, which reads its ``ann_file`` when built."""


@pytest.mark.parametrize('root_exists', [True, False], ids=['missing file', 'missing data_root'])
def test_a_missing_annotation_file_is_one_error_line_naming_its_key_and_path(root_exists, tmp_path, capsys):
    root = tmp_path / 'data'
    if root_exists:
        root.mkdir()
    config = tmp_path / 'config.py'
    config.write_text(f'_base_ = [{CONFIG!r}]\ntrain_dataloader = dict(dataset=dict(_delete_=True, '
                      f"type='AnnotatedDataset', data_root={str(root)!r}, ann_file='annotations/train.json'))\n")
    assert main(['train', str(config), '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                 f'experiment_name=ann_{root_exists}_{tmp_path.name}']) == 2
    missing = f" (train_dataloader.dataset.data_root='{root}' does not exist)" if not root_exists else ''
    assert _error_lines(capsys.readouterr().err) == [
        f"mm-lightning: error: train_dataloader.dataset.ann_file: file not found: '{root}/annotations/train.json'"
        + missing]


@pytest.mark.parametrize('options, line', [
    (['train_cfg.max_epochss=3'], "train_cfg.max_epochss: EpochBasedTrainLoop takes no argument 'max_epochss' (it "
                                  "takes max_epochs, val_begin, val_interval, dynamic_intervals); did you mean "
                                  "'max_epochs'?"),
    (['train_cfg.max_epochs=1', *VAL_OPTIONS, 'val_cfg.fp61=True'],
     "val_cfg.fp61: ValLoop takes no argument 'fp61' (it takes fp16); did you mean 'fp16'?"),
], ids=['train_cfg', 'val_cfg'])
def test_a_misspelt_loop_argument_is_one_error_line_with_a_suggestion(options, line, tmp_path, capsys):
    """mmengine's loop constructor raises a TypeError when training builds the loop: so does this, naming
    the key and what the loop takes."""
    assert main(['train', CONFIG, '--work-dir', str(tmp_path), '--cfg-options', *options,
                 f'experiment_name=loop_{tmp_path.name}']) == 2
    assert _error_lines(capsys.readouterr().err) == [f'mm-lightning: error: {line}']


def _log(work_dir):
    (log,) = glob.glob(os.path.join(work_dir, '*', '*.log'))
    with open(log) as f:
        return f.read()


def test_a_misspelt_top_level_key_is_a_warning_in_the_runs_log_and_in_explain(tmp_path, capsys):
    """A config may carry keys of its own, so the run goes on; the key close to one a runner reads is named."""
    warning = ("param_schedulr: not a key mmengine or mm_lightning reads (the run ignores it); did you mean "
               "'param_scheduler'?")
    assert main(['train', CONFIG, '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
                 'param_schedulr.type=ConstantLR', 'data_root=data/',
                 f'experiment_name=typo_{tmp_path.name}']) == 0
    assert [line.split(' - ')[-1] for line in _log(tmp_path).splitlines() if 'WARNING - param_' in line] == [warning]
    assert main(['explain', CONFIG, '--cfg-options', 'param_schedulr=[]', 'data_root=data/']) == 0
    assert f'  [unread_key] {warning}' in capsys.readouterr().out


def test_training_over_another_runs_checkpoints_warns_once_naming_them(first_epoch, tmp_path):
    work_dir = tmp_path / 'over'
    work_dir.mkdir()
    for name in ('epoch_1.pth', 'epoch_12.pth', 'epoch_2.pth', 'last_checkpoint', 'model.ckpt', 'notes.txt'):
        (work_dir / name).write_text('an earlier run')
    assert main(['train', CONFIG, '--work-dir', str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1',
                 f'experiment_name=over_{tmp_path.name}']) == 0
    assert [line.split(' - ')[-1] for line in _log(work_dir).splitlines() if 'earlier run' in line] == [
        f'work_dir: {work_dir} holds checkpoints of an earlier run (epoch_1.pth, epoch_2.pth, epoch_12.pth, '
        'last_checkpoint and 1 more); this run writes over those of the same name. To continue that run instead, '
        'resume it (resume=True, --resume); to keep them, choose another work_dir']
    # resuming that run: its checkpoints are continued, not overwritten by another run
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(first_epoch[0], resumed / 'epoch_1.pth')
    (resumed / 'last_checkpoint').write_text(str(resumed / 'epoch_1.pth'))
    assert main(['train', CONFIG, '--work-dir', str(resumed), '--resume', '--cfg-options',
                 f'experiment_name=resumed_{tmp_path.name}']) == 0
    assert os.path.isfile(resumed / 'epoch_2.pth') and 'earlier run' not in _log(resumed)


def test_predict_takes_either_checkpoint_format_as_its_help_says(first_epoch, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(['predict', '--help'])
    assert 'an mmengine .pth or a Lightning .ckpt' in ' '.join(capsys.readouterr().out.split())
    outputs = []
    for checkpoint in first_epoch:
        out = str(tmp_path / f'{os.path.basename(checkpoint)}.out')
        assert main(['predict', CONFIG, checkpoint, '--out', out, '--work-dir', str(tmp_path / 'wd'),
                     '--cfg-options', f'experiment_name=predict_{os.path.basename(out)}_{tmp_path.name}',
                     *TEST_OPTIONS, 'test_dataloader.sampler.shuffle=False']) == 0
        outputs.append([int(output['pred']) for output in torch.load(out, weights_only=False)])
    assert len(outputs[0]) > 0 and outputs[0] == outputs[1]
