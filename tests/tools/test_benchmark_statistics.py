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
    median_interval,
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


def test_a_summary_has_the_median_its_interval_the_range_and_the_quartiles():
    summary = summarize([30.0, 10.0, None, 20.0, 50.0, 40.0])  # a run without the figure does not count
    assert (summary.median, summary.minimum, summary.maximum) == (30.0, 10.0, 50.0)
    assert (summary.q1, summary.q3) == (20.0, 40.0)
    assert (summary.low, summary.high, summary.coverage) == (10.0, 50.0, 0.9375)  # 5 runs: min..max
    assert summary.runs == (30.0, 10.0, 20.0, 50.0, 40.0)  # in the order they ran
    assert summary.spread() == pytest.approx(40 / 30) and summary.spread(relative=False) == 40.0
    assert summarize([1.0, 3.0]).median == 2.0 and (summarize([1.0, 3.0]).q1, summarize([1.0, 3.0]).q3) == (1.5, 2.5)
    assert summarize([None, None]) is None and summarize([]) is None


@pytest.mark.parametrize('n, k, coverage', [
    (1, 1, 0.0), (2, 1, 0.5), (4, 1, 0.875),           # too few for 90%: the range, with what it covers
    (5, 1, 0.9375), (7, 1, 0.984375),                   # 5 to 7 runs: the minimum and maximum
    (8, 2, 0.9296875), (9, 2, 0.9609375), (11, 3, 0.9345703125),
])
def test_the_median_interval_is_the_narrowest_pair_of_order_statistics_covering_90_percent(n, k, coverage):
    runs = [float(i) for i in range(n, 0, -1)]  # order does not matter
    low, high, covered = median_interval(runs)
    assert (low, high) == (k, n + 1 - k) and covered == pytest.approx(coverage)
    with pytest.raises(ValueError, match='no runs'):
        median_interval([])


def test_the_median_interval_holds_the_true_median_as_often_as_it_says():
    # Deterministic stand-in for repeated benchmarks: 2000 sets of 5 skewed timings from a seeded generator.
    import random
    rng = random.Random(0)
    sets = [summarize([rng.lognormvariate(0, 0.15) for _ in range(5)]) for _ in range(2000)]
    held = sum(summary.low <= 1.0 <= summary.high for summary in sets)  # 1.0: the lognormal's median
    assert 0.92 < held / len(sets) < 0.96  # 0.9375 by the binomial argument, whatever the distribution


def test_one_slow_run_moves_the_median_little_but_widens_its_interval():
    summary = summarize([10.0, 10.5, 9.5, 10.2, 300.0])
    assert summary.median == 10.2 and summary.maximum == 300.0 and summary.high == 300.0
    assert summary.unreliable(tolerance=0.1)  # a 5-run median's 90% interval reaches the slow run
    nine = summarize([10.0, 10.5, 9.5, 10.2, 300.0, 10.1, 9.9, 10.3, 9.8])
    assert (nine.low, nine.high) == (9.8, 10.5) and not nine.unreliable(tolerance=0.1)  # more runs ride it out


def test_unreliable_when_the_interval_is_wider_than_the_tolerance_or_the_runs_too_few():
    summary = summarize([0.5, 0.9, 1.0, 1.1, 2.0])  # interval 0.5..2 around 1.0: 150%; quartiles: 20%
    assert summary.unreliable(tolerance=0.2) and not summary.unreliable(tolerance=1.5)
    assert summarize([1.0]).unreliable(tolerance=10.0)  # no spread to know it by
    assert summarize([1.0, 1.0, 1.0, 1.0]).unreliable(tolerance=10.0)  # four runs: at most 87.5% covered
    assert not summarize([0.1, 0.1, 0.2, 0.1, 0.2]).unreliable(tolerance=0.15, relative=False)  # 0.1 share points
    assert summarize([0.0, 0.0]).spread() == 0.0 and summarize([-1.0, 0.0, 1.0]).spread() == math.inf
    assert summarize([1.0, 2.0, 3.0]).to_json(0.2) == dict(
        median=2.0, low=1.0, high=3.0, coverage=0.75, min=1.0, max=3.0, q1=1.5, q3=2.5, spread=1.0, unreliable=True,
        runs=[1.0, 2.0, 3.0])


def test_ratios_are_taken_within_each_pair():
    assert pair_ratios([8.0, 80.0, None, 1.0], [10.0, 100.0, 5.0, 0.0]) == [0.8, 0.8, None, None]
    with pytest.raises(ValueError, match='pairs'):
        pair_ratios([1.0], [1.0, 2.0])


STEADY = summarize([1.00, 1.02, 0.98, 1.01, 0.99])


@pytest.mark.parametrize('runs, reference, better, verdict', [
    ([1.00, 1.02, 0.98, 1.01, 0.99], 1.0, 'lower', PASS),
    ([1.50, 1.52, 1.48, 1.51, 1.49], 1.0, 'lower', REGRESSION),
    ([1.18, 1.22, 1.19, 1.21, 1.20], 1.0, 'lower', UNDECIDED),    # its interval straddles the limit 1.2
    ([0.50, 1.00, 2.00, 1.20, 0.80], 1.0, 'lower', UNDECIDED),    # median 1.0, but noisy: decides nothing
    ([0.30, 28.0, 1.85, 2.00, 0.40], 1.0, 'lower', UNDECIDED),    # the 0.32 / 28 / 1.85
    ([5.0], 1.0, 'lower', UNDECIDED),                             # one run
    ([1.5, 1.5, 1.5], 1.0, 'lower', UNDECIDED),                   # three runs: too few for a 90% interval
    ([50.0, 50.5, 49.5, 50.2, 49.8], 100.0, 'higher', REGRESSION),  # throughput halved
    ([101.0, 99.0, 100.0, 100.5, 99.5], 100.0, 'higher', PASS),
])
def test_a_figure_is_judged_by_its_median_interval_against_the_limit(runs, reference, better, verdict):
    assert judge('f', summarize(runs), reference, better=better, tolerance=0.2).verdict == verdict


def test_the_judgement_says_why_and_reads_absolute_figures_in_their_units():
    judgement = judge('ratio.time_per_iter_ms', summarize([1.5, 1.52, 1.48, 1.51, 1.49]), 1.0, better='lower',
                      tolerance=0.2)
    assert judgement.limit == pytest.approx(1.2)
    assert judgement.message.startswith('ratio.time_per_iter_ms: worse than the baseline by more than 20%: median 1.5')
    share = judge('share', summarize([0.35, 0.36, 0.34, 0.35, 0.35]), 0.2, better='lower', tolerance=0.1,
                  relative=False)
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
