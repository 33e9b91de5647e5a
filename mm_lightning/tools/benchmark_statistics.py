"""The statistics of ``mm-lightning benchmark``: repeated runs, their medians and intervals, and the verdicts.

One run of an engine on a shared machine is one sample of a noisy figure: three identical runs
of the spiral example gave mm_lightning/mmengine time ratios of 28, 0.32 and 1.85. So the
benchmark runs each engine ``repeats`` times, interleaved (A B A B ...: each pair runs back to
back, so a slow minute on the machine hits both of a pair), and reads every figure as the
median of its runs. Ratios are taken within each pair, then summarized, which cancels most of
the machine's drift.

The spread reported with a median is its **confidence interval**: the order statistics
``[x(k), x(n+1-k)]`` of the ``n`` runs with the largest ``k`` whose chance of holding the median of
all such runs is at least :data:`CONFIDENCE` (90%), from the binomial distribution alone, whatever
the timings' distribution (five to seven runs: their minimum and maximum). It is what another
run's median is expected to fall in: the interquartile range of five runs is not (three quiet runs
of the spiral example gave ratio medians of 1.16, 1.30 and 1.13, not all within each other's
quartiles). Fewer than five runs cannot have a 90% interval.

A figure is *unreliable* when its interval is wider than the tolerance, the smallest change a
baseline check is asked to detect (as a fraction of the median, or in the figure's own units
for absolute figures), or when its runs are too few to have one. A baseline check decides
nothing on unreliable runs (or an unreliable baseline figure): it is *undecided*. Otherwise it
judges a figure by where its interval lies against the limit (the baseline's median worsened by
the tolerance): wholly beyond it, a regression; wholly within it, a pass; across it, undecided.
So a noisy run neither fails nor passes by chance.

Nothing here imports torch or runs anything, so all of it is tested with made-up timings.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ['PASS', 'REGRESSION', 'UNDECIDED', 'EXIT_STATUS', 'CONFIDENCE', 'interleaved', 'median_interval',
           'Summary', 'summarize', 'pair_ratios', 'Judgement', 'judge', 'overall']

PASS, REGRESSION, UNDECIDED = 'pass', 'regression', 'undecided'
#: Exit status of ``mm-lightning benchmark --baseline`` per verdict (2 is a failed run or a bad config).
EXIT_STATUS = {PASS: 0, REGRESSION: 1, UNDECIDED: 3}
#: The chance that a median's reported interval holds the median of all runs like these.
CONFIDENCE = 0.9


def interleaved(engines: Sequence[str], repeats: int) -> List[Tuple[int, str]]:
    """(repeat, engine) in the order the runs happen: every engine once per repeat, A B A B ..."""
    if repeats < 1:
        raise ValueError(f'repeats: expected at least 1, got {repeats}')
    return [(repeat, engine) for repeat in range(repeats) for engine in engines]


def median_interval(runs: Sequence[float], confidence: float = CONFIDENCE) -> Tuple[float, float, float]:
    """``(low, high, coverage)``: the narrowest interval of order statistics ``[x(k), x(n+1-k)]`` of ``runs``
    that holds their population's median with probability ``coverage`` >= ``confidence`` (distribution-free:
    each run falls below the median with probability 1/2); the range, with its lower coverage, when none does."""
    ordered = sorted(runs)
    n = len(ordered)
    if n == 0:
        raise ValueError('median_interval: no runs')

    def coverage(k: int) -> float:  # P(x(k) <= median <= x(n+1-k)) = 1 - 2 P(Binomial(n, 1/2) < k)
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], max(coverage(k), 0.0)


@dataclass(frozen=True)
class Summary:
    """A figure over repeated runs: median, its confidence interval (``low``, ``high``, ``coverage``: see the
    module doc), range and quartiles (``inclusive`` method), and the runs in the order they ran."""

    median: float
    low: float
    high: float
    coverage: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    runs: Tuple[float, ...]

    def spread(self, relative: bool = True) -> float:
        """The width of the median's interval, as a fraction of the median (``relative``) or in the figure's
        units."""
        width = self.high - self.low
        if not relative:
            return width
        if self.median == 0:
            return 0.0 if width == 0 else math.inf
        return width / abs(self.median)

    def too_few(self) -> bool:
        """Whether the runs are too few for an interval of the median at :data:`CONFIDENCE`."""
        return self.coverage < CONFIDENCE

    def unreliable(self, tolerance: float, relative: bool = True) -> bool:
        """Whether the median's interval is wider than the tolerance, or the runs too few to have one."""
        return self.too_few() or self.spread(relative) > tolerance

    def to_json(self, tolerance: float, relative: bool = True) -> Dict[str, Any]:
        return dict(median=self.median, low=self.low, high=self.high, coverage=self.coverage, min=self.minimum,
                    max=self.maximum, q1=self.q1, q3=self.q3, spread=self.spread(relative),
                    unreliable=self.unreliable(tolerance, relative), runs=list(self.runs))


def summarize(values: Iterable[Optional[float]]) -> Optional[Summary]:
    """The summary of the runs that have the figure (None where none has)."""
    runs = tuple(float(value) for value in values if value is not None)
    if not runs:
        return None
    if len(runs) == 1:
        q1 = q3 = runs[0]
    else:
        q1, _, q3 = statistics.quantiles(runs, n=4, method='inclusive')
    low, high, coverage = median_interval(runs)
    return Summary(statistics.median(runs), low, high, coverage, min(runs), max(runs), q1, q3, runs)


def pair_ratios(ours: Sequence[Optional[float]], reference: Sequence[Optional[float]]) -> List[Optional[float]]:
    """``ours[i] / reference[i]`` for each interleaved pair; None where either is missing or the reference is 0."""
    if len(ours) != len(reference):
        raise ValueError(f'pairs: {len(ours)} runs against {len(reference)}')
    return [a / b if a is not None and b else None for a, b in zip(ours, reference)]


@dataclass(frozen=True)
class Judgement:
    """A figure against its baseline: the verdict, the limit it was read against, and why, in one line."""

    verdict: str
    limit: float
    message: str


def judge(name: str, current: Summary, reference: float, *, better: str, tolerance: float, relative: bool = True,
          reference_unreliable: bool = False) -> Judgement:
    """Whether ``current`` is worse than ``reference`` by more than ``tolerance``, read with its spread.

    ``better`` is 'lower' or 'higher'. The limit is the reference worsened by the tolerance (a
    fraction of it, or in the figure's units when not ``relative``). Runs that cannot be trusted
    decide nothing: too few runs for an interval of the median, an interval wider than the
    tolerance, or a baseline figure that was itself unreliable leave it undecided. Otherwise the
    median's interval wholly beyond the limit is a regression, wholly within it a pass, and across
    it undecided.
    """
    if better not in ('lower', 'higher'):
        raise ValueError(f"better: expected 'lower' or 'higher', got {better!r}")
    margin = abs(reference) * tolerance if relative else tolerance
    lower = better == 'lower'
    limit = reference + margin if lower else reference - margin
    best, worst = (current.low, current.high) if lower else (current.high, current.low)
    allowed = f'{tolerance:.0%}' if relative else f'{tolerance:g}'
    figures = (f'median {current.median:.4g}, {current.coverage:.0%} interval {current.low:.4g}-{current.high:.4g} '
               f'over {len(current.runs)} runs, baseline {reference:.4g}, limit {limit:.4g} ({better} is better)')
    if current.too_few():
        return Judgement(UNDECIDED, limit, f'{name}: {len(current.runs)} run(s) are too few for a '
                                           f'{CONFIDENCE:.0%} interval of the median (5 needed): {figures}')
    if current.unreliable(tolerance, relative):
        return Judgement(UNDECIDED, limit, f"{name}: the median's interval is wider than {allowed}: {figures}")
    if reference_unreliable:
        return Judgement(UNDECIDED, limit, f"{name}: the baseline's own runs spread wider than {allowed}: {figures}")
    if (best > limit) if lower else (best < limit):
        return Judgement(REGRESSION, limit, f'{name}: worse than the baseline by more than {allowed}: {figures}')
    if (worst > limit) if lower else (worst < limit):
        return Judgement(UNDECIDED, limit, f'{name}: the runs straddle the limit: {figures}')
    return Judgement(PASS, limit, f'{name}: within {allowed} of the baseline: {figures}')


def overall(judgements: Sequence[Judgement]) -> str:
    """One verdict for them all: a regression decides; else any undecided figure, or none at all, leaves it
    undecided (a baseline that shares no figure with the report passes nothing)."""
    verdicts = {judgement.verdict for judgement in judgements}
    if REGRESSION in verdicts:
        return REGRESSION
    return UNDECIDED if UNDECIDED in verdicts or not verdicts else PASS
