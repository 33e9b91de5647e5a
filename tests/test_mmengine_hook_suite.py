"""mmengine's own hook tests, run against ``FlexibleRunner``.

mmengine v0.10.7's ``tests/test_hooks`` specify how its hooks behave inside a runner. They are
kept outside the project (``../shared/mmengine-tests/test_hooks`` from the repository root, see
the README there). ``tests/mmengine_suite`` makes their ``RunnerTestCase.build_runner(cfg)`` build
``FlexibleRunner.from_cfg(cfg)``; this test runs them in a pytest subprocess and compares the
outcomes with the expected ones.

Expected: every runner-building test that passes with mmengine's ``Runner`` passes but one that
tests a model with weights that do not fit it (mm_lightning refuses that by design, see
:mod:`mm_lightning.state.weights`), and so do two that fail there only because mmengine's checkpoints
do not load under ``torch.load(weights_only=True)`` (ours do).
"""
import os

import pytest
from mmengine_suite.outcomes import SUITE as TESTS
from mmengine_suite.outcomes import suite_outcomes

SUITE = os.path.join(TESTS, 'test_hooks')

#: Tests that build a runner in pytest's own process (mmengine's ``Runner`` passes 30 of them).
RUNNER_BUILDING = 34
#: Runner-building tests that fail under mmengine's ``Runner`` and must pass under ours.
FIXED_HERE = {
    'test_checkpoint_hook.py::TestCheckpointHook::test_with_runner_0_iter':
        "resumes from the hook's checkpoint; mmengine's holds HistoryBuffer objects, refused by weights_only=True",
    'test_checkpoint_hook.py::TestCheckpointHook::test_with_runner_1_epoch': 'the same, epoch-based',
}
#: Tests expected to fail under our runner: id -> (text of the error line, why).
EXPECTED_FAILURES = {
    'test_ema_hook.py::TestEMAHook::test_with_runner': (
        "load_from: the checkpoint's weights fit none of the model's tensors",
        'tests models the checkpoint does not fit: its DummyWrapper around the saved model (no key fits: '
        "mmengine tests the initial weights), then ToyModel2 (a layer missing) and ToyModel3 (other shapes); "
        'mm_lightning refuses to evaluate weights that leave a model tensor unloaded (weights.REFUSED). Its '
        'other checks (loading the EMA checkpoint it wrote, which fails under mmengine with weights_only=True) '
        'pass'),
    'test_profiler_hook.py::TestProfilerHook::test_with_runner': (
        'No valid profiler activities found',
        'its first ProfilerHook sets activity_with_cpu=False and activity_with_cuda=False, which this torch '
        "refuses; mmengine's Runner fails the same way"),
    'test_sync_buffers_hook.py::TestSyncBuffersHook::test_with_runner': (
        "'nccl' needs GPU devices",
        'builds its runners in two spawned processes that open a gloo group and set RANK/WORLD_SIZE without '
        "a `launcher` key: mmengine's Runner defaults to launcher='none', FlexibleRunner infers 'pytorch' "
        "(mmengine's FlexibleRunner fails here too) and then refuses the config's nccl backend on CPU"),
}
#: mmengine's MultiProcessTestCase reports spawned processes that raised nothing as this skip.
SPAWNED_SUCCESS = 'due to the program abort'


def outcomes(tmp_path) -> dict:
    return suite_outcomes(tmp_path, SUITE, timeout=1200, rootdir=SUITE)


def passed(test: dict) -> bool:
    if test['built_runner_in'] == ['spawned']:
        return test['outcome'] == 'skipped' and SPAWNED_SUCCESS in test['error']
    return test['outcome'] == 'passed'


@pytest.mark.skipif(not os.path.isdir(SUITE), reason=f"mmengine's hook tests are not at {SUITE}")
def test_mmengine_hook_tests_pass_with_flexible_runner(tmp_path, capsys):
    tests = outcomes(tmp_path)
    building = {nodeid: test for nodeid, test in tests.items() if 'pytest' in test['built_runner_in']}
    spawned = {nodeid: test for nodeid, test in tests.items() if test['built_runner_in'] == ['spawned']}
    passing = {nodeid for nodeid, test in building.items() if passed(test)}
    with capsys.disabled():  # the count belongs in the suite's own output, pass or fail
        print(f'\nmmengine hook suite: {len(passing)} of {len(building)} runner-building tests pass')
    for nodeid, test in sorted({**building, **spawned}.items()):
        if not passed(test):
            print(f"  {test['outcome']}: {nodeid}: {test['error']}")
    assert len(building) == RUNNER_BUILDING, sorted(building)
    assert set(FIXED_HERE) <= set(building)

    problems = []
    for nodeid, test in sorted({**building, **spawned}.items()):
        expected = EXPECTED_FAILURES.get(nodeid)
        if expected is None and not passed(test):
            problems.append(f"{nodeid} should pass; {test['outcome']}: {test['error']}")
        elif expected is not None and passed(test):
            problems.append(f'{nodeid} passes now; take it off EXPECTED_FAILURES')
        elif expected is not None and expected[0] not in test['message']:
            problems.append(f"{nodeid} should fail with {expected[0]!r} ({expected[1]}); got: {test['error']}")
    missing = set(EXPECTED_FAILURES) - set(building) - set(spawned)
    problems += [f'{nodeid} did not build a runner' for nodeid in sorted(missing)]
    assert not problems, '\n'.join(problems)
