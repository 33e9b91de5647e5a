"""`mm-lightning explain`: a config's translation for any layout, shown on any machine, building nothing."""
import json
import os

import pytest
from conftest import data
from full_disk import report_free
from mmengine.hooks import Hook
from paths import ROOT, TESTS

from mm_lightning import ConfigModule, FlexibleRunner, load_config
from mm_lightning.runtime.bridge import HookBridge
from mm_lightning.state.disk import format_bytes
from mm_lightning.tools.cli import main
from mm_lightning.tools.explain import DISK_SPACE, STAGE_EVENTS, explain
from mm_lightning.tools.explanation_text import format_explanation
from mm_lightning.translate.launchers import LAUNCHERS, config_layout
from mm_lightning.translate.strategies import strategy_context, translate_strategy

SNAPSHOT = os.path.join(TESTS, 'snapshots', 'explain_fsdp_cluster.txt')
GPU_CLUSTER = ['--accelerator', 'gpu', '--devices', '8', '--num-nodes', '2']

#: A GPU cluster config on top of the spiral example: torchrun, nccl, one strategy per case.
CLUSTER_CONFIG = f"""
_base_ = [{os.path.join(ROOT, 'examples', 'spiral', 'mlp_spiral.py')!r}]
launcher = 'pytorch'
env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=1800))
strategy = {{strategy}}
"""
STRATEGIES = {
    'DDPStrategy': "dict(type='DDPStrategy', model_wrapper=dict(find_unused_parameters=True))",
    'FSDPStrategy': "dict(type='FSDPStrategy', state_dict_cfg='full', "
                    "model_wrapper=dict(sharding_strategy='FULL_SHARD', mixed_precision=dict(param_dtype='bfloat16')))",
    'DeepSpeedStrategy': "dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=2), bf16=dict(enabled=True))",
}
FSDP_EXTRAS = """
optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale=512.0, accumulative_counts=4,
                     optimizer=dict(type='AdamW', lr=0.01))
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
custom_hooks = [dict(type='lightning.pytorch.callbacks.LearningRateMonitor', logging_interval='step')]
"""
EMA = "custom_hooks = [dict(type='EMAHook'), *custom_hooks]\n"

#: What a config's strategy type is translated to.
LIGHTNING_STRATEGY = {'FSDPStrategy': 'FSDP2Strategy', 'DeepSpeedStrategy': 'AnyDeviceDeepSpeedStrategy'}


@pytest.fixture(autouse=True)
def no_launcher_environment(monkeypatch):
    """A laptop: none of the variables torchrun, srun or mpirun would set."""
    for rule in LAUNCHERS.values():
        for name in (rule.world_size, rule.per_node, rule.nodes, *rule.process):
            if name:
                monkeypatch.delenv(name, raising=False)


def _config(tmp_path, strategy, extras=''):
    path = tmp_path / f'{strategy}.py'
    path.write_text(CLUSTER_CONFIG.format(strategy=STRATEGIES[strategy]) + extras)
    return str(path)


def _explain_json(capsys, *args):
    status = main(['explain', *args, '--json'])
    out = capsys.readouterr().out
    return status, json.loads(out)


@pytest.mark.parametrize('strategy', [
    pytest.param(name, marks=pytest.mark.deepspeed) if name == 'DeepSpeedStrategy' else name
    for name in sorted(STRATEGIES)])
def test_json_for_a_gpu_cluster_on_a_cpu_machine(tmp_path, capsys, strategy):
    status, report = _explain_json(capsys, _config(tmp_path, strategy), *GPU_CLUSTER)
    assert status == 0, report['warnings']
    assert {'trainer', 'strategy', 'schedule', 'hooks', 'loggers', 'warnings'} <= set(report)
    trainer = report['trainer']
    translated = LIGHTNING_STRATEGY.get(strategy, strategy)
    assert (trainer['strategy'], trainer['accelerator'], trainer['devices'], trainer['num_nodes']) == \
        (translated, 'gpu', 8, 2)
    assert report['strategy']['name'] == translated
    settings = report['strategy']['settings']
    assert settings['process_group_backend'] == 'nccl' and settings['timeout'] == 1800.0
    assert settings['cluster_environment'] == 'TorchElasticEnvironment'
    assert [w for w in report['warnings'] if w['kind'] == 'refusal'] == []
    assert report['schedule']['validation']['at'] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]


def test_strategy_settings_and_precision_as_translated(tmp_path, capsys):
    _, report = _explain_json(capsys, _config(tmp_path, 'FSDPStrategy', FSDP_EXTRAS), *GPU_CLUSTER)
    plan = report['strategy']['settings']['plan']
    assert (plan['layout'], plan['reshard_after_forward'], plan['state_dict_type']) == ('shard', True, 'full')
    assert plan['param_dtype'] == 'bfloat16'
    assert report['precision'] == dict(precision='16-mixed', plugin='MixedPrecision',
                                       scaler='StaticGradScaler', loss_scale=512.0)
    assert report['trainer']['plugins'] == ['MixedPrecision']
    assert report['trainer']['callbacks'] == ['LearningRateMonitor']
    assert report['trainer']['logger'] == ['TensorBoardLogger']


@pytest.mark.deepspeed
def test_deepspeed_precision_and_batch_size_as_translated(tmp_path, capsys):
    _, report = _explain_json(capsys, _config(tmp_path, 'DeepSpeedStrategy'), *GPU_CLUSTER)
    assert report['trainer']['precision'] == 'bf16-mixed'
    assert report['strategy']['settings']['config']['train_micro_batch_size_per_gpu'] == 32


@pytest.mark.deepspeed
def test_strategy_approximations_are_the_translations_notes(tmp_path, capsys):
    """What explain lists is what the translated strategy carries (and a run logs when it builds it)."""
    extras = "strategy = dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=2), inputs_to_half=['inputs'])\n"
    _, report = _explain_json(capsys, _config(tmp_path, 'DeepSpeedStrategy', extras), *GPU_CLUSTER)
    approximations = [w['message'] for w in report['warnings'] if w['kind'] == 'approximation']
    cfg = load_config(_config(tmp_path, 'DeepSpeedStrategy', extras))
    spec = translate_strategy(cfg.strategy, strategy_context(cfg, config_layout(cfg, None, 'gpu', 8, 2)))
    assert spec.notes and approximations == spec.notes
    assert spec.notes[0].startswith('strategy.inputs_to_half: not used')


def test_hooks_by_stage_and_lightning_callbacks(tmp_path, capsys):
    _, report = _explain_json(capsys, _config(tmp_path, 'DDPStrategy', FSDP_EXTRAS + EMA), *GPU_CLUSTER)
    stages = {entry['stage']: entry for entry in report['hooks']['by_stage']}
    assert stages['after_train_iter']['lightning_event'] == 'on_train_batch_end'
    assert stages['after_train_iter']['hooks'] == ['RuntimeInfoHook', 'IterTimerHook', 'EMAHook', 'LoggerHook',
                                                   'ParamSchedulerHook', 'CheckpointHook']  # priority order
    assert stages['before_save_checkpoint']['hooks'] == ['EMAHook']
    callbacks = {entry['name']: entry for entry in report['hooks']['lightning_callbacks']}
    assert callbacks['LearningRateMonitor']['source'] == 'custom_hooks'
    assert 'on_train_batch_start' in callbacks['LearningRateMonitor']['events']
    assert report['loggers']['vis_backends'] == [
        dict(vis_backend='LocalVisBackend', lightning_logger=None),
        dict(vis_backend='TensorboardVisBackend', lightning_logger='TensorBoardLogger')]
    # accumulation windows spanning a validation keep their gradients, as under mmengine: nothing to warn about
    assert 'optim_wrapper.accumulative_counts' not in {w['key'] for w in report['warnings']}


def test_every_bridged_event_is_one_the_hook_bridge_handles():
    for stage, event in STAGE_EVENTS.items():
        if event != 'save_checkpoint':  # called by the runner's save_checkpoint, not by Lightning
            assert event in vars(HookBridge) or event in vars(ConfigModule), (stage, event)


def test_refusals_a_run_on_the_layout_would_meet(tmp_path, capsys):
    status, report = _explain_json(capsys, _config(tmp_path, 'FSDPStrategy', FSDP_EXTRAS),
                                   '--accelerator', 'cpu', '--devices', '2', '--num-nodes', '1')
    assert status == 1
    refusals = [w['message'] for w in report['warnings'] if w['kind'] == 'refusal']
    assert not any('needs GPUs' in m for m in refusals)  # FSDP2 shards on CPU processes too
    assert any(m.startswith("env_cfg.dist_cfg.backend: 'nccl' needs GPU devices") for m in refusals)
    assert any(m.startswith('optim_wrapper: AmpOptimWrapper with float16 needs a GPU') for m in refusals)
    assert report['trainer'] is None  # no Trainer arguments for a layout the translation refuses
    assert report['strategy']['name'] == 'FSDP2Strategy'  # the rest is still explained
    assert report['schedule']['validation']['count'] == 10


def test_a_launcher_without_its_variables_or_a_layout_is_an_error(tmp_path, capsys):
    assert main(['explain', _config(tmp_path, 'DDPStrategy')]) == 2
    assert "launcher: 'pytorch' needs the torchrun variable WORLD_SIZE" in capsys.readouterr().err


def test_text_output_matches_the_snapshot(tmp_path, capsys):
    config = _config(tmp_path, 'FSDPStrategy', FSDP_EXTRAS)
    assert main(['explain', config, '--cfg-options', 'work_dir=work_dirs/cluster', *GPU_CLUSTER]) == 0
    text = capsys.readouterr().out.replace(config, '<CONFIG>').replace(os.getcwd(), '<CWD>')
    if os.environ.get('MM_LIGHTNING_UPDATE_SNAPSHOTS'):
        with open(SNAPSHOT, 'w') as f:
            f.write(text)
    with open(SNAPSHOT) as f:
        assert text == f.read()


class PointRecorder(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.validations, self.checkpoints = [], []

    def after_val_epoch(self, runner, metrics=None):
        self.validations.append(runner.iter)

    def before_save_checkpoint(self, runner, checkpoint):
        self.checkpoints.append(runner.iter + 1)


def test_validation_and_checkpoint_points_are_where_a_run_puts_them(tmp_path):
    cfg = dict(
        model=dict(type='ToyClassifier'), work_dir=str(tmp_path), experiment_name=f'points_{tmp_path.name}',
        train_dataloader=data(size=16, batch_size=4), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=14, val_begin=2, val_interval=4, dynamic_intervals=[(9, 3)]),
        val_dataloader=data(size=8, shuffle=False), val_cfg=dict(), val_evaluator=dict(type='ToyAccuracy'),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5, save_begin=2),
                           logger=dict(type='LoggerHook', interval=100)),
        launcher='none', log_level='WARNING')
    schedule = explain(cfg)['schedule']
    runner = FlexibleRunner.from_cfg(cfg)
    recorder = PointRecorder()
    runner.register_hook(recorder)
    runner.train()
    assert schedule['validation']['at'] == recorder.validations == [4, 9, 12, 14]
    assert schedule['checkpoints'][0]['at'] == recorder.checkpoints == [2, 7, 12, 14]


def test_json_on_stdout_is_only_json():
    """Libraries that print while importing (DeepSpeed) must not mix into `--json` output."""
    import subprocess
    import sys
    root = ROOT
    result = subprocess.run([sys.executable, '-m', 'mm_lightning', 'explain', 'examples/spiral/mlp_spiral.py',
                             '--json'], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {'trainer', 'strategy', 'schedule', 'hooks', 'loggers', 'warnings'} <= json.loads(result.stdout).keys()



@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('index', range(3))
def test_shipped_openmmlab_configs_are_explained(package, index, tmp_path, monkeypatch, capsys):
    """A sample of the configs mmdet and mmseg ship (all eight repos: tests/openmmlab/test_explain_shipped.py)."""
    from openmmlab.available import missing
    from openmmlab.shipped import check_explains, sample_configs
    if missing(package):
        pytest.skip(f'{package} does not import here')
    monkeypatch.chdir(tmp_path)
    check_explains(sample_configs(package, 3)[index], capsys)


def test_fsdp_notes_settings_fsdp2_has_no_equal_for_carries_ema_and_says_what_happens_to_buffers(tmp_path, capsys):
    extras = FSDP_EXTRAS + EMA + \
        "strategy = dict(type='FSDPStrategy', model_wrapper=dict(backward_prefetch='BACKWARD_PRE'))\n"
    status, report = _explain_json(capsys, _config(tmp_path, 'FSDPStrategy', extras), *GPU_CLUSTER)
    assert status == 0, report['warnings']  # EMAHook's copy is sharded alike: nothing refused
    kinds = {w['message'].partition(':')[0]: w['kind'] for w in report['warnings']}
    assert kinds["strategy.model_wrapper.backward_prefetch='BACKWARD_PRE'"] == 'approximation'
    assert 'EMAHook' in {name for entry in report['hooks']['by_stage'] for name in entry['hooks']}
    assert report['strategy']['buffers'].startswith('each rank keeps its own (FSDP2, as FSDP1, synchronises none')


def test_ddp_says_whether_it_broadcasts_buffers(tmp_path, capsys):
    for wrapper, buffers in (('', "each rank keeps its own (broadcast_buffers=False, as mmengine's DDP wraps)"),
                             ('model_wrapper=dict(broadcast_buffers=True)', "rank 0's, broadcast to every rank")):
        extras = f"strategy = dict(type='DDPStrategy', {wrapper})\n"
        _, report = _explain_json(capsys, _config(tmp_path, 'DDPStrategy', extras), *GPU_CLUSTER)
        assert report['strategy']['buffers'].startswith(buffers)


@pytest.mark.deepspeed
def test_zero3_with_mmengine_default_hooks_and_resume_is_not_refused(tmp_path, capsys):
    extras = "strategy = dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=3))\nresume = True\n"
    status, report = _explain_json(capsys, _config(tmp_path, 'DeepSpeedStrategy', extras), *GPU_CLUSTER)
    assert status == 0, report['warnings']
    assert [w for w in report['warnings'] if w['kind'] == 'refusal'] == []
    assert 'CheckpointHook' in {name for entry in report['hooks']['by_stage'] for name in entry['hooks']}


def test_a_work_dir_without_room_for_two_checkpoints_the_size_of_its_latest_is_a_warning(tmp_path, monkeypatch):
    cfg = dict(model=dict(type='ToyClassifier'), work_dir=str(tmp_path), train_dataloader=data(size=8, batch_size=4),
               train_cfg=dict(by_epoch=True, max_epochs=3), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               launcher='none')
    report_free(monkeypatch, 15000, str(tmp_path))

    def disk_warnings(**changes):
        return [entry for entry in explain(dict(cfg, **changes))['warnings'] if entry['kind'] == DISK_SPACE]
    assert disk_warnings() == []  # no checkpoint yet: the model is not built, so nothing is measured
    latest = tmp_path / 'epoch_1.pth'
    latest.write_bytes(b'\0' * 10000)
    (tmp_path / 'last_checkpoint').write_text(str(latest))
    message = (f"work_dir: {tmp_path} has {format_bytes(15000)} free; the run's checkpoints need "
               f'{format_bytes(20000)} there: 2 on disk at once (a checkpoint is written in full before the one it '
               f'replaces is removed), each about {format_bytes(10000)} (the size of the latest checkpoint, {latest}). '
               'A checkpoint write will fail for lack of space: free some, or choose another work_dir')
    assert disk_warnings() == [dict(kind=DISK_SPACE, key='work_dir', message=message)]
    assert f'  [{DISK_SPACE}] {message}' in format_explanation(explain(cfg))
    assert disk_warnings(resume=True) == []  # epoch_1.pth is one of the two, already there
    assert disk_warnings(default_hooks=dict(checkpoint=dict(type='CheckpointHook', max_keep_ckpts=1))) == []


def test_it_shows_how_a_trainers_own_settings_resolve():
    """The table the run applies: each Trainer setting, the config key its value becomes, or its only values."""
    spiral = os.path.join(ROOT, 'examples', 'spiral', 'mlp_spiral.py')
    by_epoch = {entry['setting']: entry for entry in explain(spiral)['trainer_settings']}
    assert by_epoch['max_epochs']['key'] == 'train_cfg.max_epochs' and by_epoch['max_epochs']['configured'] == 20
    assert by_epoch['max_steps']['key'] is None and by_epoch['max_steps']['unset'] == [-1]
    by_iter = {entry['setting']: entry for entry in explain(spiral, cfg_options={
        'train_cfg': dict(by_epoch=False, max_iters=30, val_interval=10, _delete_=True)})['trainer_settings']}
    assert (by_iter['max_steps']['key'], by_iter['max_steps']['configured']) == ('train_cfg.max_iters', 30)
    assert (by_iter['val_check_interval']['key'], by_iter['val_check_interval']['configured']) == \
        ('train_cfg.val_interval', 10)
    assert by_iter['max_epochs']['key'] is None


def test_a_misspelt_top_level_key_is_a_warning_the_run_also_logs():
    from mm_lightning.tools.explain import UNREAD_KEY
    report = explain(dict(model=dict(type='ToyClassifier'), launcher='none', param_schedulr=[], data_root='data/'))
    assert [entry for entry in report['warnings'] if entry['kind'] == UNREAD_KEY] == [dict(
        kind=UNREAD_KEY, key='param_schedulr', message="param_schedulr: not a key mmengine or mm_lightning reads (the "
                                                       "run ignores it); did you mean 'param_scheduler'?")]


def test_loop_arguments_are_checked_as_the_run_builds_the_loop():
    report = explain(dict(model=dict(type='ToyClassifier'), launcher='none', train_dataloader=data(),
                          optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                          train_cfg=dict(by_epoch=True, max_epochss=2)))
    assert ("train_cfg.max_epochss: EpochBasedTrainLoop takes no argument 'max_epochss' (it takes max_epochs, "
            "val_begin, val_interval, dynamic_intervals); did you mean 'max_epochs'?") in [
        entry['message'] for entry in report['warnings'] if entry['kind'] == 'refusal']
