"""The benchmark's statistics with made-up timings: run order, medians, spreads, the unreliable flag, verdicts."""
import math

import pytest

from mm_lightning.tools.benchmark_statistics import (
    EXIT_STATUS,
    PASS,
    REGRESSION,
    UNDECIDED,
    interleaved,
    judge,
    overall,
    pair_ratios,
    summarize,
)


def test_runs_alternate_between_engines_one_pair_per_repeat():
    assert interleaved(['mm_lightning', 'mmengine'], 3) == [(0, 'mm_lightning'), (0, 'mmengine'),
                                                             (1, 'mm_lightning'), (1, 'mmengine'),
                                                             (2, 'mm_lightning'), (2, 'mmengine')]
    assert interleaved(['mmengine'], 2) == [(0, 'mmengine'), (1, 'mmengine')]
    with pytest.raises(ValueError, match='repeats'):
        interleaved(['mmengine'], 0)


def test_a_summary_has_the_median_the_range_and_the_quartiles():
    summary = summarize([30.0, 10.0, None, 20.0, 50.0, 40.0])  # a run without the figure does not count
    assert (summary.median, summary.minimum, summary.maximum) == (30.0, 10.0, 50.0)
    assert (summary.q1, summary.q3) == (20.0, 40.0)
    assert summary.runs == (30.0, 10.0, 20.0, 50.0, 40.0)  # in the order they ran
    assert summary.spread() == pytest.approx(20 / 30) and summary.spread(relative=False) == 20.0
    assert summarize([1.0, 3.0]).median == 2.0 and (summarize([1.0, 3.0]).q1, summarize([1.0, 3.0]).q3) == (1.5, 2.5)
    assert summarize([None, None]) is None and summarize([]) is None


def test_one_slow_run_moves_neither_the_median_nor_the_quartiles_much():
    summary = summarize([10.0, 10.5, 9.5, 10.2, 300.0])
    assert summary.median == 10.2 and summary.maximum == 300.0
    assert not summary.unreliable(tolerance=0.1)  # IQR 10.0..10.5: 5% of the median


def test_unreliable_when_the_spread_is_wider_than_the_tolerance_or_there_is_one_run():
    summary = summarize([0.5, 1.0, 2.0])  # IQR 0.75..1.5 around 1.0: 75%
    assert summary.unreliable(tolerance=0.2) and not summary.unreliable(tolerance=0.75)
    assert summarize([1.0]).unreliable(tolerance=10.0)  # no spread to know it by
    assert not summarize([0.1, 0.1, 0.3]).unreliable(tolerance=0.15, relative=False)  # IQR 0.1 share points
    assert summarize([0.0, 0.0]).spread() == 0.0 and summarize([-1.0, 0.0, 1.0]).spread() == math.inf
    assert summarize([1.0, 2.0, 3.0]).to_json(0.2) == dict(median=2.0, min=1.0, max=3.0, q1=1.5, q3=2.5, spread=0.5,
                                                           unreliable=True, runs=[1.0, 2.0, 3.0])


def test_ratios_are_taken_within_each_pair():
    assert pair_ratios([8.0, 80.0, None, 1.0], [10.0, 100.0, 5.0, 0.0]) == [0.8, 0.8, None, None]
    with pytest.raises(ValueError, match='pairs'):
        pair_ratios([1.0], [1.0, 2.0])


STEADY = summarize([1.00, 1.02, 0.98, 1.01, 0.99])


@pytest.mark.parametrize('runs, reference, better, verdict', [
    ([1.00, 1.02, 0.98, 1.01, 0.99], 1.0, 'lower', PASS),
    ([1.50, 1.52, 1.48, 1.51, 1.49], 1.0, 'lower', REGRESSION),
    ([1.18, 1.22, 1.19, 1.21, 1.20], 1.0, 'lower', UNDECIDED),    # its quartiles straddle the limit 1.2
    ([0.50, 1.00, 2.00, 1.20, 0.80], 1.0, 'lower', UNDECIDED),    # median 1.0, but noisy: decides nothing
    ([0.30, 28.0, 1.85, 2.00, 0.40], 1.0, 'lower', UNDECIDED),    # the 0.32 / 28 / 1.85
    ([5.0], 1.0, 'lower', UNDECIDED),                             # one run
    ([50.0, 50.5, 49.5], 100.0, 'higher', REGRESSION),            # throughput halved
    ([101.0, 99.0, 100.0], 100.0, 'higher', PASS),
])
def test_a_figure_is_judged_by_its_quartiles_against_the_limit(runs, reference, better, verdict):
    assert judge('f', summarize(runs), reference, better=better, tolerance=0.2).verdict == verdict


def test_the_judgement_says_why_and_reads_absolute_figures_in_their_units():
    judgement = judge('ratio.time_per_iter_ms', summarize([1.5, 1.52, 1.48]), 1.0, better='lower', tolerance=0.2)
    assert judgement.limit == pytest.approx(1.2)
    assert judgement.message.startswith('ratio.time_per_iter_ms: worse than the baseline by more than 20%: median 1.5')
    share = judge('share', summarize([0.35, 0.36, 0.34]), 0.2, better='lower', tolerance=0.1, relative=False)
    assert share.verdict == REGRESSION and share.limit == pytest.approx(0.3) and 'more than 0.1:' in share.message
    noisy_baseline = judge('f', STEADY, 1.0, better='lower', tolerance=0.2, reference_unreliable=True)
    assert noisy_baseline.verdict == UNDECIDED and "the baseline's own runs" in noisy_baseline.message
    with pytest.raises(ValueError, match='better'):
        judge('f', STEADY, 1.0, better='faster', tolerance=0.2)


def test_one_verdict_for_all_figures_and_its_exit_status():
    def of(*verdicts):
        return [judge('f', STEADY, {PASS: 1.0, REGRESSION: 0.1, UNDECIDED: 0.835}[v], better='lower', tolerance=0.2)
                for v in verdicts]
    assert [j.verdict for j in of(PASS, REGRESSION, UNDECIDED)] == [PASS, REGRESSION, UNDECIDED]
    assert overall(of(PASS, PASS)) == PASS
    assert overall(of(PASS, UNDECIDED)) == UNDECIDED
    assert overall(of(UNDECIDED, REGRESSION, PASS)) == REGRESSION  # a decided regression decides
    assert overall([]) == UNDECIDED
    assert EXIT_STATUS == {PASS: 0, REGRESSION: 1, UNDECIDED: 3}
