"""The statistics of ``mm-lightning benchmark``: repeated runs, their medians and spreads, and the verdicts.

One run of an engine on a shared machine is one sample of a noisy figure: three identical runs
of the spiral example gave mm_lightning/mmengine time ratios of 28, 0.32 and 1.85. So the
benchmark runs each engine ``repeats`` times, interleaved (A B A B ...: each pair runs back to
back, so a slow minute on the machine hits both of a pair), and reads every figure as the
median of its runs with their spread. Ratios are taken within each pair, then summarized,
which cancels most of the machine's drift.

A figure is *unreliable* when its interquartile range is wider than the tolerance, the
smallest change a baseline check is asked to detect (as a fraction of the median, or in the
figure's own units for absolute figures); one run has no spread and is unreliable too. A
baseline check decides nothing on unreliable runs (or an unreliable baseline figure): it is
*undecided*. Otherwise it judges a figure by where its interquartile range lies against the
limit (the baseline's median worsened by the tolerance): wholly beyond it, a regression; wholly
within it, a pass; across it, undecided. So a noisy run neither fails nor passes by chance.

Nothing here imports torch or runs anything, so all of it is tested with made-up timings.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ['PASS', 'REGRESSION', 'UNDECIDED', 'EXIT_STATUS', 'interleaved', 'Summary', 'summarize', 'pair_ratios',
           'Judgement', 'judge', 'overall']

PASS, REGRESSION, UNDECIDED = 'pass', 'regression', 'undecided'
#: Exit status of ``mm-lightning benchmark --baseline`` per verdict (2 is a failed run or a bad config).
EXIT_STATUS = {PASS: 0, REGRESSION: 1, UNDECIDED: 3}


def interleaved(engines: Sequence[str], repeats: int) -> List[Tuple[int, str]]:
    """(repeat, engine) in the order the runs happen: every engine once per repeat, A B A B ..."""
    if repeats < 1:
        raise ValueError(f'repeats: expected at least 1, got {repeats}')
    return [(repeat, engine) for repeat in range(repeats) for engine in engines]


@dataclass(frozen=True)
class Summary:
    """A figure over repeated runs: median, range and quartiles (``inclusive`` method), and the runs."""

    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    runs: Tuple[float, ...]

    def spread(self, relative: bool = True) -> float:
        """The interquartile range, as a fraction of the median (``relative``) or in the figure's units."""
        iqr = self.q3 - self.q1
        if not relative:
            return iqr
        if self.median == 0:
            return 0.0 if iqr == 0 else math.inf
        return iqr / abs(self.median)

    def unreliable(self, tolerance: float, relative: bool = True) -> bool:
        """Whether the runs disagree by more than the tolerance, or are too few (one) to tell."""
        return len(self.runs) < 2 or self.spread(relative) > tolerance

    def to_json(self, tolerance: float, relative: bool = True) -> Dict[str, Any]:
        return dict(median=self.median, min=self.minimum, max=self.maximum, q1=self.q1, q3=self.q3,
                    spread=self.spread(relative), unreliable=self.unreliable(tolerance, relative),
                    runs=list(self.runs))


def summarize(values: Iterable[Optional[float]]) -> Optional[Summary]:
    """The summary of the runs that have the figure (None where none has)."""
    runs = tuple(float(value) for value in values if value is not None)
    if not runs:
        return None
    if len(runs) == 1:
        q1 = q3 = runs[0]
    else:
        q1, _, q3 = statistics.quantiles(runs, n=4, method='inclusive')
    return Summary(statistics.median(runs), min(runs), max(runs), q1, q3, runs)


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
    decide nothing: one run, runs spread wider than the tolerance, or a baseline figure that was
    itself unreliable leave it undecided. Otherwise the interquartile range of the runs wholly
    beyond the limit is a regression, wholly within it a pass, and across it undecided.
    """
    if better not in ('lower', 'higher'):
        raise ValueError(f"better: expected 'lower' or 'higher', got {better!r}")
    margin = abs(reference) * tolerance if relative else tolerance
    lower = better == 'lower'
    limit = reference + margin if lower else reference - margin
    best, worst = (current.q1, current.q3) if lower else (current.q3, current.q1)
    allowed = f'{tolerance:.0%}' if relative else f'{tolerance:g}'
    figures = (f'median {current.median:.4g}, IQR {current.q1:.4g}-{current.q3:.4g} over {len(current.runs)} runs, '
               f'baseline {reference:.4g}, limit {limit:.4g} ({better} is better)')
    if len(current.runs) < 2:
        return Judgement(UNDECIDED, limit, f'{name}: one run has no spread to judge it by: {figures}')
    if current.unreliable(tolerance, relative):
        return Judgement(UNDECIDED, limit, f'{name}: the runs spread wider than {allowed}: {figures}')
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
