"""Pytest plugin: mmengine's own hook tests build the runner class named by ``MMENGINE_SUITE_RUNNER``.

mmengine's tests build their runners through ``RunnerTestCase.build_runner(cfg)``, which builds
``Runner.from_cfg(cfg)``. Importing this module replaces that method so it builds
``<MMENGINE_SUITE_RUNNER>.from_cfg(cfg)``: by default ``mm_lightning.FlexibleRunner``;
``mmengine.runner.Runner`` gives the reference outcomes on the same tests.

With ``--suite-report=FILE`` each test's outcome, its error and where it built runners
(in pytest's process, in processes it spawned) are written to FILE as JSON.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
from typing import Any, Dict, Optional

import pytest
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
        entry = self.outcomes.setdefault(report.nodeid, dict(outcome='passed', error='', message=''))
        if report.outcome != 'passed' and entry['outcome'] == 'passed':
            entry.update(outcome=report.outcome, error=error_line(report), message=error_message(report))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.outcomes[report.nodeid] = dict(outcome='error', error=error_line(report),
                                                message=error_message(report))

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
