"""Run mmengine's hook or runner tests with ``suite_plugin``: ``python run_suite.py [pytest arguments]``.

For instance, the reference outcomes under mmengine's own ``Runner``::

    MMENGINE_SUITE_RUNNER=mmengine.runner.Runner python tests/mmengine_suite/run_suite.py \
        ../shared/mmengine-tests/test_hooks --suite-report=runner.json

    S=../shared/mmengine-tests
    MMENGINE_SUITE_RUNNER=mmengine.runner.Runner python tests/mmengine_suite/run_suite.py \
        $S/test_runner/test_runner.py $S/test_runner/test_log_processor.py \
        $S/test_testing/test_runner_test_case.py --rootdir $S --suite-report=runner.json

The plugin is imported here at module level on purpose: the processes that mmengine's
multi-process tests spawn re-import this script, so they build the same runner class.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suite_plugin  # noqa: E402  (replaces RunnerTestCase.build_runner)

if __name__ == '__main__':
    import pytest

    sys.exit(pytest.main(['-p', 'no:cacheprovider', *sys.argv[1:]], plugins=[suite_plugin]))
