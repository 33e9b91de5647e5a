"""Configs in every form mmengine takes, and errors that name the offending key."""
import os

import pytest
import torch
from conftest import data
from mmengine.config import Config
from mmengine.runner.checkpoint import load_checkpoint
from paths import TESTS

from mm_lightning import ConfigError, FlexibleRunner, load_config
from mm_lightning.config.loading import parse_cfg_options

CONFIGS = os.path.join(TESTS, 'configs')


def _run(cfg, tmp_path, **extra):
    cfg = load_config(cfg)
    cfg.merge_from_dict(dict(work_dir=str(tmp_path), experiment_name=f'cfg_{tmp_path.name}', **extra))
    runner = FlexibleRunner.from_cfg(cfg)
    runner.train()
    return runner


def test_base_inheritance_and_default_scope_from_file(tmp_path):
    cfg = Config.fromfile(os.path.join(CONFIGS, 'scoped.py'))
    assert cfg.default_hooks.logger.interval == 1  # from _base_
    runner = _run(cfg, tmp_path)
    assert type(runner.model).__name__ == 'ScopedClassifier'
    assert runner.default_scope.scope_name == 'toyscope'
    assert runner.epoch == 2
    # the dumped config keeps the file's name; the last checkpoint loads with mmengine's loader
    assert os.path.isfile(tmp_path / 'scoped.py')
    with open(tmp_path / 'last_checkpoint') as f:
        last = f.read().strip()
    assert last.endswith('epoch_2.pth')
    fresh = FlexibleRunner.from_cfg(dict(model=dict(type='ToyClassifier', batch_norm=True),
                                         work_dir=str(tmp_path / 'fresh'),
                                         experiment_name=f'fresh_{tmp_path.name}')).model
    load_checkpoint(fresh, last, map_location='cpu', strict=True)
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_the_default_scope_is_honoured_when_training_starts(tmp_path):
    """The scope's own optimizer constructor is found at construction and again when train() checks and
    builds the training parts (mmyolo's YOLOv5OptimizerConstructor, mmaction's TSMOptimWrapperConstructor)."""
    cfg = load_config(os.path.join(CONFIGS, 'scoped.py'), ['optim_wrapper.constructor=ScopedConstructor'])
    runner = _run(cfg, tmp_path)
    assert runner.epoch == 2 and runner.default_scope.scope_name == 'toyscope'
    with pytest.raises(KeyError, match=r"optim_wrapper.constructor: 'ScopedConstructor' is not in the "
                                       r"mmengine::optimizer wrapper constructor registry"):
        _run(load_config(cfg, ['default_scope=mmengine', 'model.type=ToyClassifier']), tmp_path / 'unscoped')


def test_default_scope_selects_the_registry(tmp_path):
    cfg = load_config(os.path.join(CONFIGS, 'scoped.py'), ['default_scope=mmengine'])
    with pytest.raises(ConfigError, match=r"model\.type: 'ScopedClassifier' is not in the mmengine::model"):
        _run(cfg, tmp_path)


@pytest.mark.parametrize('name', ['lazy.py', 'plain.yaml', 'plain.json'])
def test_lazy_yaml_and_json_configs_train(tmp_path, name):
    runner = _run(os.path.join(CONFIGS, name), tmp_path)
    assert runner.iter == 4 and type(runner.model).__name__ == 'ToyClassifier'


def test_dict_config_imports_custom_modules(tmp_path):
    import sys
    sys.modules.pop('toyscope.models', None)
    cfg = dict(custom_imports=dict(imports=['toyscope.models']), default_scope='toyscope',
               model=dict(type='ScopedClassifier'))
    runner = FlexibleRunner.from_cfg(load_config(cfg, dict(work_dir=str(tmp_path),
                                                           experiment_name=f'imp_{tmp_path.name}')))
    assert type(runner.model).__name__ == 'ScopedClassifier'


def test_cfg_options_are_parsed_like_mmengine():
    options = parse_cfg_options(['train_cfg.max_epochs=3', 'model.hidden=[4,5]', 'randomness.deterministic=true',
                                 'work_dir=a=b'])
    assert options == {'train_cfg.max_epochs': 3, 'model.hidden': [4, 5], 'randomness.deterministic': True,
                       'work_dir': 'a=b'}
    cfg = load_config(dict(train_cfg=dict(by_epoch=True, max_epochs=1)), ['train_cfg.max_epochs=3'])
    assert cfg.train_cfg.max_epochs == 3


@pytest.mark.parametrize('item', ['max_epochs', '=3', ''])
def test_bad_cfg_options_item(item):
    with pytest.raises(ConfigError, match='bad --cfg-options item'):
        parse_cfg_options([item])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: 'nowhere.py'"):
        load_config('nowhere.py')


BASE = dict(model=dict(type='ToyClassifier'))


def _build(tmp_path, **cfg):
    full = dict(BASE, work_dir=str(tmp_path), experiment_name=f'err_{tmp_path.name}', **cfg)
    return FlexibleRunner.from_cfg(full)


def test_unknown_type_names_key_path_and_registry(tmp_path):
    with pytest.raises(ConfigError) as err:
        _build(tmp_path, train_dataloader=dict(data(), dataset=dict(type='BlobDatset')),
               train_cfg=dict(by_epoch=True, max_epochs=1),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))).train()
    message = str(err.value)
    assert 'train_dataloader' in message and 'BlobDatset' in message and 'registry' in message


def test_unknown_hook_and_scheduler_types(tmp_path):
    with pytest.raises(ConfigError, match=r"custom_hooks\[0\]\.type: 'NoSuchHook' is not in the mmengine::hook"):
        _build(tmp_path, custom_hooks=[dict(type='NoSuchHook')])
    runner = _build(tmp_path, train_dataloader=data(), train_cfg=dict(by_epoch=True, max_epochs=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    param_scheduler=[dict(type='LinearLR'), dict(type='Warmup')])
    with pytest.raises(ConfigError, match=r"param_scheduler\[1\]\.type: 'Warmup' is not in"):
        runner.train()


def test_train_cfg_without_dataloader_or_optimizer(tmp_path):
    with pytest.raises(ConfigError, match='train_dataloader, train_cfg, optim_wrapper should be either all None'):
        _build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1))
    with pytest.raises(ConfigError, match='without optim_wrapper'):
        _build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1), train_dataloader=data())


def test_param_scheduler_without_optim_wrapper(tmp_path):
    with pytest.raises(ConfigError, match='param_scheduler: param_scheduler should be None when optim_wrapper is None'):
        _build(tmp_path, param_scheduler=dict(type='LinearLR'))


def test_unknown_loop_types_and_keys_are_refused_when_the_loop_is_built(tmp_path):
    # mmengine builds its loops lazily (train(), or runner.train_loop): so are these errors, as mmengine's types
    with pytest.raises(KeyError, match=r"train_cfg\.type: 'MyLoop' is not in the LOOPS registry"):
        _build(tmp_path, train_dataloader=data(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               train_cfg=dict(type='MyLoop', max_epochs=1)).train()
    with pytest.raises(TypeError, match=r"train_cfg.max_iters: EpochBasedTrainLoop takes no argument 'max_iters'"):
        _ = _build(tmp_path, train_dataloader=data(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                   train_cfg=dict(by_epoch=True, max_epochs=1, max_iters=3)).train_loop


def test_resume_pointing_at_missing_file(tmp_path):
    runner = _build(tmp_path, train_dataloader=data(), train_cfg=dict(by_epoch=True, max_epochs=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    resume=str(tmp_path / 'missing.pth'))
    with pytest.raises(ConfigError, match=r"resume: checkpoint file not found: '.*missing\.pth'"):
        runner.train()


def test_unknown_env_cfg_and_randomness_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"env_cfg: unknown keys \['cudnn_bench'\]"):
        _build(tmp_path, env_cfg=dict(cudnn_bench=True))
    with pytest.raises(ConfigError, match=r"randomness: unknown keys \['sed'\]"):
        _build(tmp_path, randomness=dict(sed=1))


def test_data_preprocessor_is_merged_or_refused(tmp_path):
    from toy import ToyClassifier
    runner = _build(tmp_path, data_preprocessor=dict(type='BaseDataPreprocessor', non_blocking=True))
    assert runner.model.data_preprocessor._non_blocking is True
    with pytest.raises(ConfigError, match='data_preprocessor: it configures a model built from a config dict'):
        FlexibleRunner(model=ToyClassifier(), work_dir=str(tmp_path), experiment_name=f'dp_{tmp_path.name}',
                       data_preprocessor=dict(type='BaseDataPreprocessor'))


#: A module ``custom_imports`` names -> (its source, None: no such module; the error after the module's name).
BROKEN_IMPORTS = {
    'missing': (None, "ModuleNotFoundError: No module named 'cfg_mod_missing'; set PYTHONPATH so that sys.path "
                      'holds the directory it is in'),
    'raises': ("raise NameError('boom')\n", 'NameError: boom ({file}, line 1)'),
    'syntax': ('x = (\n', "SyntaxError: '(' was never closed ({file}, line 1)"),
    'imports a missing module': ('import cfg_mod_nowhere\n', "ModuleNotFoundError: No module named 'cfg_mod_nowhere' "
                                                             '({file}, line 1)'),
}


def broken_import_config(tmp_path, monkeypatch, kind):
    """A config file whose custom_imports lists a module that fails to import as ``kind`` says, and the one
    line that names it."""
    source, error = BROKEN_IMPORTS[kind]
    module = f'cfg_mod_{kind.replace(" ", "_")}' if source is not None else 'cfg_mod_missing'
    if source is not None:
        (tmp_path / f'{module}.py').write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / 'config.py'
    config.write_text(f"_base_ = [{os.path.join(CONFIGS, 'scoped.py')!r}]\n"
                      f"custom_imports = dict(imports=['toy', {module!r}], allow_failed_imports=False)\n")
    message = (f"custom_imports: importing {module!r} (listed in {config}) failed: "
               + error.format(file=tmp_path / f'{module}.py'))
    return str(config), message


@pytest.mark.parametrize('kind', list(BROKEN_IMPORTS))
def test_a_custom_import_that_fails_is_one_error_naming_it_in_every_entry_point(kind, tmp_path, monkeypatch):
    from mm_lightning import ConfigModule
    config, message = broken_import_config(tmp_path, monkeypatch, kind)
    for entry_point in (load_config, FlexibleRunner.from_cfg, ConfigModule.from_config):
        with pytest.raises(ConfigError) as err:
            entry_point(config)
        assert str(err.value) == message
        assert isinstance(err.value, ImportError)  # what mmengine raises, so its except clauses still catch it
        assert err.value.__cause__ is not None  # the module's own error, for --debug
    with pytest.raises(ConfigError, match='^custom_imports: importing'):  # a dict's custom_imports alike
        load_config(dict(Config.fromfile(config, import_custom_modules=False)))


def test_allow_failed_imports_warns_as_mmengine_does(tmp_path):
    with pytest.warns(UserWarning, match='cfg_mod_absent failed to import and is ignored'):
        load_config(dict(custom_imports=dict(imports=['cfg_mod_absent'], allow_failed_imports=True)))
