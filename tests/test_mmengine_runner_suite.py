"""mmengine's own runner tests, run against ``FlexibleRunner``.

mmengine v0.10.7's ``tests/test_runner/test_runner.py``, ``test_runner/test_log_processor.py`` and
``tests/test_testing/test_runner_test_case.py`` specify the runner itself: construction, lazy
building, the ``build_*`` methods, hook registration, train/val/test, checkpoints, custom loops.
They are kept outside the project (``../shared/mmengine-tests`` from the repository root, see the
README there). ``tests/mmengine_suite`` puts ``FlexibleRunner`` where they build runners
(``RunnerTestCase.build_runner``, the module's ``Runner``, ``RUNNERS``'s ``'Runner'``); this test
runs them in a pytest subprocess and compares the outcomes with the expected ones.

Reference on a CPU machine (66 tests; the three ``torch.compile`` tests skip without CUDA):
mmengine's ``Runner`` passes 62 (``test_checkpoint`` fails: its own ``torch.load`` of mmengine's
checkpoint under ``weights_only=True``), mmengine's ``FlexibleRunner`` 49.

``EXPECTED_FAILURES`` lists what fails under ours today, with the first error each test meets and
the causes behind it. It shrinks as the runner is fixed: a test that starts passing must be taken
off it, and any other failing test fails this one.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUITE = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'mmengine-tests'))
FILES = ('test_runner/test_runner.py', 'test_runner/test_log_processor.py', 'test_testing/test_runner_test_case.py')
RUN_SUITE = os.path.join(HERE, 'mmengine_suite', 'run_suite.py')

#: Tests the three files hold.
TOTAL = 66
#: Tests that pass under our runner today (raise it as EXPECTED_FAILURES shrinks).
MIN_PASSING = 41
_T = 'test_runner/test_runner.py::TestRunner::'
#: They skip unless CUDA and torch.compile work (mmengine's SKIP_TEST_COMPILE).
COMPILE_SKIP = 'torch.compile is not valid'
COMPILE_TESTS = {f'{_T}test_{stage}_with_compile' for stage in ('train', 'val', 'test')}
#: Tests expected to fail under our runner: id -> (text in ``where: message``, why).
#: ``where`` is the failing line of mmengine's file; the reasons name mm_lightning's code.
EXPECTED_FAILURES = {
    _T + 'test_init': (
        '"either all None or not None" does not match',
        "config.require_together words mmengine's ValueError differently (also 'should be None' for "
        "param_scheduler without optim_wrapper). Behind it: no _train_dataloader/_val_dataloader/"
        '_test_dataloader, _val_loop/_test_loop (dict until built); _train_loop is mm_lightning.loops.TrainLoop, '
        'not a BaseLoop; loop evaluators are ConfigEvaluator, not Evaluator; a built MultiStepLR as '
        "param_scheduler refused by validation's (param_scheduler: DICT | LIST) rule; "
        "dict(linear1='error_type') not refused (mmengine asserts 'Each value of'); 'error_type' raises "
        'ConfigError, not TypeError'),
    _T + 'test_build_logger': (
        "!= 'test_build_logger3'",
        'runner._experiment_name = ... is ignored: RunnerView.build_logger reads experiment_name from the '
        'context; mmengine reads self._experiment_name'),
    _T + 'test_build_message_hub': (
        "!= 'test_build_message_hub3'", 'the same _experiment_name cause, in RunnerView.build_message_hub'),
    _T + 'test_build_visualizer': (
        "!= 'test_build_visualizer3'",
        'the same _experiment_name cause, in RunnerView.build_visualizer; then build_visualizer(str) raises '
        "ConfigError, mmengine TypeError('visualizer should be ...')"),
    _T + 'test_build_model': (
        "model: expected a dict with a 'type' key",
        "build_model(str) raises ConfigError (registry.build); mmengine TypeError('model should be ...')"),
    _T + 'test_build_optim_wrapper': (
        'optim_wrapper: expected a dict or an OptimWrapper',
        "build_optim_wrapper(str) raises ConfigError, mmengine TypeError('optimizer wrapper should be ...'); "
        "then a dict entry that is not a built wrapper: mmengine's ValueError reads 'each item mush be an "
        "optimizer object'"),
    _T + 'test_build_param_scheduler': (
        '`build_optim_wrapper` should be called before',
        'RunnerView.build_param_scheduler raises RuntimeError; mmengine asserts (AssertionError); then '
        '`runner._train_loop = ...`: _train_loop has no setter'),
    _T + 'test_build_evaluator': (
        'test_runner.py:1191: AssertionError',
        "build_evaluator returns mm_lightning's ConfigEvaluator (torchmetrics): a built Evaluator is not "
        'returned as is, the result is no mmengine Evaluator, built metrics are wrapped (no collect_device), '
        "a custom EVALUATOR type is refused and a bare metric accepted (mmengine: TypeError 'evaluator should be')"),
    _T + 'test_build_log_processor': (
        'dictionary update sequence element',
        "context.build_log_processor does dict('invalid-type'); mmengine TypeError('log processor should be ...')"),
    _T + 'test_build_train_loop': (
        "train_cfg: expected a dict, got 'invalid-type'",
        "loops.parse_train_cfg raises ConfigError, mmengine TypeError('train_loop should be ...') and "
        "RuntimeError('Only one of `type` or `by_epoch` ...'); then the loop is mm_lightning.loops.TrainLoop, "
        'not EpochBasedTrainLoop/IterBasedTrainLoop, and a BaseLoop train_cfg.type (CustomTrainLoop) is refused'),
    _T + 'test_build_val_loop': (
        "test_cfg: expected a dict, got 'invalid-type'",
        "loops.parse_eval_cfg raises ConfigError; mmengine TypeError('test_loop should be ...')"),
    _T + 'test_build_test_loop': (
        "test_cfg: expected a dict, got 'invalid-type'", 'the same as test_build_val_loop'),
    _T + 'test_scale_lr': (
        'auto_scale_lr: `base_batch_size` is required',
        'optim.scale_lr raises ConfigError; mmengine asserts (AssertionError)'),
    _T + 'test_train': (
        '"should not be None" does not match',
        "FlexibleRunner.train's RuntimeError words it differently ('train() needs ...'). Behind it: "
        'train_loop is not EpochBasedTrainLoop/IterBasedTrainLoop (no dataloader_iterator); a model without '
        "val_step raises ConfigError (module.bind_eval), mmengine AssertionError('If you want to validate'); "
        '_train_loop not a BaseLoop, no _val_loop/_test_loop'),
    _T + 'test_val': (
        '"should not be None" does not match',
        "FlexibleRunner.val's RuntimeError words it differently. Behind it: _train_loop is never a dict: "
        "val() builds the training loader (LoggerHook.after_val_epoch -> LogProcessor._get_epoch reads "
        'runner._train_loop -> FlexibleRunner.train_loop -> ConfigModule.bind_train); no _test_loop'),
    _T + 'test_test': (
        '"should not be None" does not match',
        "FlexibleRunner._require's RuntimeError words it differently. Behind it: _train_loop is never a dict "
        '(reading it builds the training loader), no _val_loop'),
    _T + 'test_register_hook': (
        'custom_hooks: expected an mmengine Hook or a config dict',
        "HookList.register raises ConfigError; mmengine TypeError('hook should be an instance of Hook or "
        "dict'). Then the _hooks cause"),
    _T + 'test_default_hooks': (
        '0 != 6',
        'runner._hooks: no such attribute; `runner._hooks = []` makes a new one that register_* never fill '
        '(they fill module.hooks.hooks)'),
    _T + 'test_custom_hooks': ("object has no attribute '_hooks'", 'the _hooks cause'),
    _T + 'test_register_hooks': ('0 != 7', 'the _hooks cause'),
    _T + 'test_custom_loop': (
        'CustomTrainLoop2 overrides IterBasedTrainLoop.run()',
        "a train_cfg.type whose run() drives training is refused at construction (loops._train_loop_kind); "
        "Lightning's fit loop iterates instead"),
    _T + 'test_checkpoint': (
        "optim_wrapper.type: 'SGD' is not in the",
        "fails under mmengine's Runner too (weights_only). Here: dict(type='SGD') as optim_wrapper is refused "
        'at construction (validation, optim_wrapper.type) where mmengine only fails if it is built; no '
        '_has_loaded; resume()/load_or_resume() before train() calls load_state_dict on the optim_wrapper '
        "config (checkpoint.load_optimizer_state); mmengine builds wrapper and schedulers first. Then "
        "torch.load of our safe checkpoint does not re-register HistoryBuffer._statistics_methods (by design)"),
}
#: What the subprocess needs besides the project: mmengine's tests import these.
SUITE_IMPORTS = {'parameterized': 'parameterized', 'pkg_resources': 'setuptools<82'}


def outcomes(tmp_path) -> dict:
    missing = [package for module, package in SUITE_IMPORTS.items() if importlib.util.find_spec(module) is None]
    assert not missing, f"mmengine's runner tests need {missing}: pip install -e '.[test]'"
    report = tmp_path / 'outcomes.json'
    python_path = os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))
    env = dict(os.environ, PYTHONPATH=python_path,
               OMP_NUM_THREADS='1', MMENGINE_SUITE_RUNNER='mm_lightning.FlexibleRunner')
    result = subprocess.run(
        [sys.executable, RUN_SUITE, *(os.path.join(SUITE, name) for name in FILES), '-q', '-c', os.devnull,
         '--rootdir', SUITE, f'--suite-report={report}'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report.read_text())['tests']


def located(test: dict) -> str:
    return f"{test['where']}: {test['message']}" if test['where'] else test['message']


@pytest.mark.skipif(not all(os.path.isfile(os.path.join(SUITE, name)) for name in FILES),
                    reason=f"mmengine's runner tests are not at {SUITE}")
def test_mmengine_runner_tests_with_flexible_runner(tmp_path, capsys):
    tests = outcomes(tmp_path)
    passing = {nodeid for nodeid, test in tests.items() if test['outcome'] == 'passed'}
    skipped = {nodeid for nodeid, test in tests.items() if test['outcome'] == 'skipped'}
    with capsys.disabled():  # the count belongs in the suite's own output, pass or fail
        print(f'\nmmengine runner suite: {len(passing)} of {len(tests)} tests pass'
              + (f' ({len(skipped)} skipped)' if skipped else ''))
        for nodeid, test in sorted(tests.items()):
            if test['outcome'] not in ('passed', 'skipped'):
                print(f"  {test['outcome']}: {nodeid} ({test['where'] or '?'}): {test['error']}")
    assert len(tests) == TOTAL, sorted(tests)

    problems = []
    for nodeid, test in sorted(tests.items()):
        expected = EXPECTED_FAILURES.get(nodeid)
        if test['outcome'] == 'skipped':
            if nodeid not in COMPILE_TESTS or COMPILE_SKIP not in test['message']:
                problems.append(f"{nodeid} skipped: {test['error']}")
        elif expected is None and test['outcome'] != 'passed':
            problems.append(f"{nodeid} should pass; {test['outcome']} at {test['where']}: {test['error']}")
        elif expected is not None and test['outcome'] == 'passed':
            problems.append(f'{nodeid} passes now; take it off EXPECTED_FAILURES')
        elif expected is not None and expected[0] not in located(test):
            problems.append(f"{nodeid} should fail with {expected[0]!r} ({expected[1]}); "
                            f"got at {test['where']}: {test['error']}")
    problems += [f'{nodeid} did not run' for nodeid in sorted(set(EXPECTED_FAILURES) - set(tests))]
    assert not problems, '\n'.join(problems)
    assert len(passing) >= MIN_PASSING, f'{len(passing)} tests pass, expected at least {MIN_PASSING}'
