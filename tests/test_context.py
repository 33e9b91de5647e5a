"""The run's identity and outputs: named and seeded without writing; written when opened."""
import os

from mmengine.config import Config

from mm_lightning.context import create_context


def _context(tmp_path, **changes):
    kwargs = dict(work_dir=str(tmp_path / 'work'), cfg=Config(dict(a=1)), launcher='none', env_cfg={},
                  randomness=dict(seed=3), experiment_name=f'ctx_{tmp_path.name}', default_scope='mmengine',
                  log_level='INFO', log_processor=None, visualizer=None)
    kwargs.update(changes)
    return create_context(**kwargs)


def test_created_context_writes_nothing_until_opened(tmp_path):
    context = _context(tmp_path)
    assert context.seed == 3 and context.experiment_name.startswith(f'ctx_{tmp_path.name}_')
    assert not os.path.exists(tmp_path / 'work')
    context.open(Config(dict(a=1)), 'hooks info')
    log = os.path.join(context.log_dir, f'{context.timestamp}.log')
    assert os.path.isfile(log) and os.path.isfile(os.path.join(context.work_dir, f'{context.timestamp}.py'))
    with open(log) as f:
        text = f.read()
    assert 'Hooks will be executed in the following order:\nhooks info' in text
    context.open(Config(dict(a=1)), 'again')  # once only
    with open(log) as f:
        assert 'again' not in f.read()


def test_set_randomness_updates_the_runs_seed(tmp_path):
    context = _context(tmp_path)
    context.set_randomness(11, deterministic=False)
    assert context.seed == 11 and context.randomness['seed'] == 11
