"""Pytest plugin: mmengine's own hook and runner tests build the runner class named by ``MMENGINE_SUITE_RUNNER``.

mmengine's hook tests build their runners through ``RunnerTestCase.build_runner(cfg)``, which builds
``Runner.from_cfg(cfg)``. Importing this module replaces that method so it builds
``<MMENGINE_SUITE_RUNNER>.from_cfg(cfg)``: by default ``mm_lightning.FlexibleRunner``;
``mmengine.runner.Runner`` gives the reference outcomes on the same tests.

mmengine's runner tests (``test_runner/test_runner.py``) also build ``Runner(...)``,
``Runner.from_cfg(...)`` and ``RUNNERS.build(...)`` directly, from the ``Runner`` their module
imported from ``mmengine.runner``. For each test the plugin puts the configured class under
those names: the test module's global ``Runner`` (when it is mmengine's ``Runner``) and the
``'Runner'`` entry of mmengine's root ``RUNNERS`` registry; both are restored after the test.
Classes the module defined at import (``class CustomRunner(Runner)``) keep the base the file
gave them.

With ``--suite-report=FILE`` each test's outcome, its error, the line of the test's own file
where it failed (``where``, e.g. ``test_runner.py:1191``) and where it built runners (in
pytest's process, in processes it spawned) are written to FILE as JSON.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
from typing import Any, Dict, Optional

import pytest
from mmengine.registry import RUNNERS
from mmengine.runner import Runner as MMENGINE_RUNNER
from mmengine.testing import RunnerTestCase

RUNNER_VARIABLE = 'MMENGINE_SUITE_RUNNER'
DEFAULT_RUNNER = 'mm_lightning.FlexibleRunner'
# Spawned processes inherit these: where to record builds, the test running, pytest's pid.
BUILDS_VARIABLE = 'MMENGINE_SUITE_BUILDS'
CURRENT_TEST_VARIABLE = 'MMENGINE_SUITE_CURRENT_TEST'
PYTEST_PID_VARIABLE = 'MMENGINE_SUITE_PYTEST_PID'
MESSAGE_CHARS = 4000


def runner_class() -> type:
    module, _, name = os.environ.get(RUNNER_VARIABLE, DEFAULT_RUNNER).rpartition('.')
    return getattr(importlib.import_module(module), name)


def build_runner(self: RunnerTestCase, cfg: Any) -> Any:
    """``RunnerTestCase.build_runner`` with the configured runner class."""
    cfg.experiment_name = self.experiment_name
    builds = os.environ.get(BUILDS_VARIABLE)
    if builds:
        where = 'pytest' if str(os.getpid()) == os.environ.get(PYTEST_PID_VARIABLE) else 'spawned'
        with open(builds, 'a') as f:
            f.write(f'{os.environ.get(CURRENT_TEST_VARIABLE, self.id())}\t{where}\n')
    return runner_class().from_cfg(cfg)


RunnerTestCase.build_runner = build_runner

#: Not there: a name the test module or the registry did not have before the test.
_ABSENT = object()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Any:
    """Run the test (setup, call, teardown) with the configured class as ``Runner``."""
    runner = runner_class()
    module = getattr(item, 'module', None)
    module_runner = getattr(module, 'Runner', _ABSENT) if module is not None else _ABSENT
    if module_runner is MMENGINE_RUNNER:
        module.Runner = runner
    registered = RUNNERS.module_dict.get('Runner', _ABSENT)
    RUNNERS.module_dict['Runner'] = runner
    try:
        yield
    finally:
        if module_runner is MMENGINE_RUNNER:
            module.Runner = module_runner
        if registered is _ABSENT:
            RUNNERS.module_dict.pop('Runner', None)
        else:
            RUNNERS.module_dict['Runner'] = registered


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--suite-report', help='write per-test outcomes as JSON to this file')


def pytest_configure(config: pytest.Config) -> None:
    report = config.getoption('suite_report')
    if report:
        config.pluginmanager.register(OutcomeReport(report), 'mmengine_suite_outcomes')


class OutcomeReport:
    """Each test's outcome (its first failing phase wins), written when the session ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.outcomes: Dict[str, Dict[str, Any]] = {}
        handle, self.builds = tempfile.mkstemp(suffix='.builds')
        os.close(handle)
        os.environ[BUILDS_VARIABLE] = self.builds
        os.environ[PYTEST_PID_VARIABLE] = str(os.getpid())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        os.environ[CURRENT_TEST_VARIABLE] = item.nodeid

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.outcomes.setdefault(report.nodeid, dict(outcome='passed', error='', message='', where=''))
        if report.outcome != 'passed' and entry['outcome'] == 'passed':
            entry.update(outcome=report.outcome, error=error_line(report), message=error_message(report),
                         where=failing_line(report))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.outcomes[report.nodeid] = dict(outcome='error', error=error_line(report),
                                                message=error_message(report), where='')

    def pytest_sessionfinish(self) -> None:
        built: Dict[str, set] = {}
        with open(self.builds) as f:
            for line in f:
                nodeid, where = line.rstrip('\n').split('\t')
                built.setdefault(nodeid, set()).add(where)
        os.remove(self.builds)
        for nodeid, entry in self.outcomes.items():
            entry['built_runner_in'] = sorted(built.get(nodeid, ()))
        with open(self.path, 'w') as f:
            json.dump(dict(runner=os.environ.get(RUNNER_VARIABLE, DEFAULT_RUNNER), tests=self.outcomes), f, indent=1)


def error_message(report: Any) -> str:
    """The exception pytest shows for a failure (a spawned process's traceback included), or a skip's reason."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2]
    crash: Optional[Any] = getattr(report.longrepr, 'reprcrash', None)
    if crash is not None and crash.message:
        return crash.message[-MESSAGE_CHARS:]
    lines = str(report.longrepr).splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith('E ')]
    return '\n'.join(errors or lines[-1:])[-MESSAGE_CHARS:]


def error_line(report: Any) -> str:
    """The first line of :func:`error_message`."""
    lines = error_message(report).splitlines()
    return lines[0] if lines else ''


def failing_line(report: Any) -> str:
    """``file:line`` of the innermost traceback entry in the test's own file (the failing statement)."""
    test_file = os.path.basename(report.nodeid.split('::')[0])
    traceback = getattr(report.longrepr, 'reprtraceback', None)
    for entry in reversed(getattr(traceback, 'reprentries', None) or []):
        location = getattr(entry, 'reprfileloc', None)
        if location is not None and os.path.basename(str(location.path)) == test_file:
            return f'{test_file}:{location.lineno}'
    return ''
