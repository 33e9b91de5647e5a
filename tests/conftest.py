import importlib.util
import logging
import os
import sys
import warnings

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import toy  # noqa: E402,F401  (registers the test components)

warnings.filterwarnings('ignore', category=DeprecationWarning)
# mmengine's loggers are process-wide and keep the stream they were created with: under pytest that can be
# an earlier test's closed capture stream. A log line lost there must not print a logging error into a
# later test's output.
logging.raiseExceptions = False


def data(size=40, seed=0, shuffle=True, batch_size=8, sampler='DefaultSampler', **extra):
    return dict(dataset=dict(type='BlobDataset', size=size, seed=seed),
                sampler=dict(type=sampler, shuffle=shuffle), batch_size=batch_size, num_workers=0, **extra)


#: Set to ``required`` (CI's second step, which installs ``.[test,deepspeed]``), a ``deepspeed`` test fails
#: instead of skipping where DeepSpeed is missing. DeepSpeed stays out of the ``test`` extra: mmengine
#: imports it in every process once installed, a fifth of each short subprocess run's time.
DEEPSPEED_ENV = 'MM_LIGHTNING_DEEPSPEED'


OPENMMLAB_SUITE = os.path.join(HERE, 'openmmlab')


#: Test files by the time they take (most first, measured on 2 cores): with ``-n`` they start first, so the
#: workers end together instead of one finishing a long file alone. Other files follow in collection order.
LONGEST_FIRST = ('test_flexible_runner_example.py', 'test_fsdp.py', 'test_resume.py', 'test_distributed_resume.py',
                 'test_mmdet_parity.py', 'test_deepspeed.py', 'test_examples.py', 'test_tools.py',
                 'test_mmengine_hook_suite.py',
                 'test_resume_files.py', 'test_benchmark.py', 'test_compare_benchmark.py',
                 'test_mmengine_runner_suite.py', 'test_explain.py', 'test_builtin_hooks.py', 'test_cli.py',
                 'test_metrics.py', 'test_strategies.py', 'test_readme.py')


def pytest_configure(config):
    if hasattr(config.option, 'loadscopereorder'):
        config.option.loadscopereorder = False  # xdist's own order (most tests first) is not the longest first


def pytest_collection_modifyitems(config, items):
    """The longest files first (:data:`LONGEST_FIRST`); the OpenMMLab suite marked ``openmmlab``, so one run
    selects it with the DeepSpeed tests."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep their own order
    for item in items:
        if str(item.path).startswith(OPENMMLAB_SUITE + os.sep):
            item.add_marker(pytest.mark.openmmlab)


def pytest_runtest_setup(item):
    if item.get_closest_marker('deepspeed') and importlib.util.find_spec('deepspeed') is None:
        reason = 'needs DeepSpeed: pip install -e ".[test,deepspeed]"'
        if os.environ.get(DEEPSPEED_ENV) == 'required':
            pytest.fail(f'{reason} ({DEEPSPEED_ENV}=required)')
        pytest.skip(reason)


@pytest.fixture
def toy_data():
    return data


@pytest.fixture
def no_launcher_environment(monkeypatch):
    """No torchrun, SLURM or MPI variables: a machine outside any launcher."""
    from mm_lightning.translate.launchers import LAUNCHERS
    for rule in LAUNCHERS.values():
        for name in (rule.world_size, rule.per_node, rule.nodes, *rule.process):
            if name:
                monkeypatch.delenv(name, raising=False)


#: Files of model and optimizer state: the bulk of what tests write (checkpoints of full-size models in the
#: OpenMMLab suite), removed when a test that wrote them has passed. Directories and logs stay, since
#: mmengine's process-wide loggers and visualizers may still write into an earlier test's work_dir.
STATE_FILE_SUFFIXES = ('.pth', '.ckpt', '.pt', '.distcp')


@pytest.fixture(autouse=True)
def _free_state_files(request):
    yield
    report, tmp_path = getattr(request.node, 'rep_call', None), request.node.funcargs.get('tmp_path')
    if tmp_path is None or report is None or not report.passed:
        return
    for path in tmp_path.rglob('*'):
        if path.suffix in STATE_FILE_SUFFIXES and path.is_file():
            path.unlink()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``rep_call``), for fixtures that act on the outcome."""
    report = yield
    setattr(item, f'rep_{report.when}', report)
    return report
