"""Building config entries through mmengine's registries (mm_lightning.config.registry).

A config has many ``type`` keys: a bad one must be reported with its key path and registry,
with close matches when there are some. ``toyscope`` is a downstream-style package with its
own registry scope (tests/toyscope).
"""
import sys

import pytest
from lightning.pytorch.callbacks import Callback, EarlyStopping
from mmengine.registry import MODELS, DefaultScope
from toy import ToyClassifier

from mm_lightning import ConfigError
from mm_lightning.config.registry import build, config_key, names_subclass_of, resolve_type, type_name


@pytest.fixture(autouse=True)
def mmengine_scope():
    """mmengine's default scope, whatever an earlier test's run left as the process's current one."""
    with DefaultScope.overwrite_default_scope('mmengine'):
        yield


def test_builds_a_registered_type():
    model = build(MODELS, dict(type='ToyClassifier', hidden=4), 'model')
    assert type(model) is ToyClassifier and model.net[0].out_features == 4


@pytest.mark.parametrize('cfg', [[1], dict(hidden=4), 'ToyClassifier'], ids=['list', 'no-type', 'string'])
def test_entry_without_type_names_the_key(cfg):
    with pytest.raises(ConfigError, match=r"^model\.backbone: expected a dict with a 'type' key"):
        build(MODELS, cfg, 'model.backbone')


def test_unknown_type_names_key_registry_and_close_matches():
    with pytest.raises(ConfigError) as err:
        build(MODELS, dict(type='ToyClasifier'), 'model')
    message = str(err.value)
    assert message.startswith("model.type: 'ToyClasifier' is not in the mmengine::model registry")
    assert "Did you mean" in message and "'ToyClassifier'" in message.split('Did you mean')[1]
    with pytest.raises(ConfigError) as err:
        build(MODELS, dict(type='Qzxwv'), 'custom_model')
    assert str(err.value).startswith("custom_model.type: 'Qzxwv' is not in") and 'Did you mean' not in str(err.value)


def test_dotted_names_are_imported():
    assert type(build(MODELS, dict(type='toy.ToyClassifier'), 'model')) is ToyClassifier
    for name in ('toy.NoSuchModel', 'no_such_package.Model'):
        with pytest.raises(ConfigError, match=rf"model\.type: '{name}' is not in .* not an importable dotted name"):
            build(MODELS, dict(type=name), 'model')


def test_scope_selects_the_registry():
    assert type(build(MODELS, dict(type='ScopedClassifier', _scope_='toyscope'), 'model')).__name__ == \
        'ScopedClassifier'
    with DefaultScope.overwrite_default_scope('toyscope'):
        assert type(build(MODELS, dict(type='ScopedClassifier'), 'model')).__name__ == 'ScopedClassifier'
        assert type(build(MODELS, dict(type='ToyClassifier'), 'model')) is ToyClassifier  # from the parent
    with pytest.raises(ConfigError, match=r"'ScopedClassifier' is not in the mmengine::model registry"):
        build(MODELS, dict(type='ScopedClassifier'), 'model')
    with pytest.raises(ConfigError, match=r"'ScopedClasifier' is not in the toyscope::model registry .*"
                                          r"Did you mean 'ScopedClassifier'"):
        build(MODELS, dict(type='ScopedClasifier', _scope_='toyscope'), 'model')


def test_errors_while_building_name_the_key():
    with pytest.raises(TypeError, match='bogus') as err:
        build(MODELS, dict(type='ToyClassifier', bogus=1), 'model')
    assert "(while building config key 'model')" in err.value.__notes__
    # mmengine's own unknown-type error, raised for a nested entry, becomes a ConfigError with the key
    with pytest.raises(ConfigError, match=r"^model: NoSuchPreprocessor is not in the mmengine::model registry"):
        build(MODELS, dict(type='ToyClassifier', data_preprocessor=dict(type='NoSuchPreprocessor')), 'model')
    with pytest.raises(ValueError) as err, config_key('train_cfg'):
        raise ValueError('bad')
    assert err.value.__notes__ == ["(while building config key 'train_cfg')"]


def test_type_helpers():
    assert type_name('mmpretrain.models.ImageClassifier') == 'ImageClassifier' == type_name('ImageClassifier')
    assert type_name(ToyClassifier) == 'ToyClassifier'
    assert resolve_type('toy.ToyClassifier') is ToyClassifier
    assert resolve_type('toy.NoSuchModel') is None and resolve_type('ToyClassifier') == 'ToyClassifier'
    assert names_subclass_of(dict(type='lightning.pytorch.callbacks.EarlyStopping', monitor='x'), Callback)
    assert names_subclass_of(dict(type=EarlyStopping), Callback) and names_subclass_of(EarlyStopping('x'), Callback)
    assert not names_subclass_of(dict(type='EMAHook'), Callback)
    assert not names_subclass_of(dict(type='toy.ToyClassifier'), Callback)


@pytest.fixture
def broken_package(tmp_path, monkeypatch):
    """A user package whose module imports a dependency that is not installed."""
    package = tmp_path / 'brokenpkg'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'parts.py').write_text('import not_installed_dependency\n\nclass Part:\n    pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield 'brokenpkg.parts.Part'
    for name in ('brokenpkg', 'brokenpkg.parts'):
        sys.modules.pop(name, None)


def test_a_type_whose_module_fails_to_import_reports_that_error_not_not_found(broken_package):
    expected = (r"custom_hooks\[0\]\.type: 'brokenpkg.parts.Part': importing brokenpkg.parts failed: "
                r"No module named 'not_installed_dependency'")
    with pytest.raises(ConfigError, match=expected) as raised:
        build(MODELS, dict(type=broken_package), 'custom_hooks[0]')
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)
    # Deciding whether an entry is a Lightning callback imports it too: the same error, not a routing to HOOKS.
    with pytest.raises(ConfigError, match="importing brokenpkg.parts failed") as raised:
        names_subclass_of(dict(type=broken_package), Callback)
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def _file_not_found(path):
    return FileNotFoundError(2, 'No such file or directory', path)


@pytest.mark.parametrize('cfg, missing, message', [
    (dict(dataset=dict(type='ConcatDataset', datasets=[dict(type='D', data_root='/no/root', ann_file='a.json'),
                                                       dict(type='D', data_root='/no/root', ann_file='b.json')])),
     '/no/root/b.json',
     "train_dataloader.dataset.datasets[1].ann_file: file not found: '/no/root/b.json' "
     "(train_dataloader.dataset.datasets[1].data_root='/no/root' does not exist)"),
    (dict(dataset=dict(type='D', data_prefix=dict(img='/no/images/')), sampler=dict(type='DefaultSampler')),
     '/no/images', "train_dataloader.dataset.data_prefix.img: file not found: '/no/images'"),
    (dict(dataset=dict(type='D')), '/elsewhere/x.json', "train_dataloader: file not found: '/elsewhere/x.json'"),
], ids=['in a list', 'a folder', 'not in the config'])
def test_a_missing_file_names_the_key_that_leads_to_it(cfg, missing, message):
    with pytest.raises(ConfigError) as err, config_key('train_dataloader', cfg):
        raise _file_not_found(missing)
    assert str(err.value) == message
    assert isinstance(err.value, FileNotFoundError)  # what mmengine raises, so its except clauses still catch it
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_a_missing_file_named_in_a_message_only():
    cfg = dict(type='D', ann_file='/no/ann.json')
    with pytest.raises(FileNotFoundError, match=r"^val_evaluator.ann_file: file not found: '/no/ann.json'$"), \
            config_key('val_evaluator', cfg):
        raise FileNotFoundError('file "/no/ann.json" does not exist')
    with pytest.raises(ConfigError, match=r'^val_evaluator: gone$'), config_key('val_evaluator', cfg):
        raise FileNotFoundError('gone')
