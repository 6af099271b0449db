"""Anytime-valid decisions for adaptive studies: is a comparison of two groups of runs settled yet?

An adaptive study runs a stage in waves along a replicate axis (lr/wd draws, seeds). After each wave
`decide` looks at everything recorded so far and says, for one comparison of two groups A and B:
A better, B better, equal within a stated margin, or open. However many waves it looks at, the
chance that it declares a difference where there is none stays ≤ the comparison's α.

The method is testing by betting (Shafer, JRSS-A 2021; Waudby-Smith & Ramdas, JRSS-B 2024), in the
two-sample form of Shekhar & Ramdas ("Nonparametric two-sample testing by betting", IEEE Trans. Inf.
Theory, 2023). The replicates are cut into units independent of each other (a block of
`block` consecutive lr/wd draws of both groups; one seed). Each unit pays g in [−1, 1], antisymmetric
in A and B, with conditional mean ≤ 0 when A is not better. Staking the fraction λ of one's wealth on
every unit gives the wealth ∏(1 + λ g), a nonnegative supermartingale of mean ≤ 1 under that null; by
Ville's inequality it ever reaches 2/α with probability ≤ α/2, however often it is looked at and
whenever the study stops (Ramdas, Grünwald, Vovk & Shafer, Statist. Sci. 2023). λ is not tuned: the
evidence is the mean of the wealth over a fixed grid of λ in (0, 1), itself a test supermartingale,
so that a strong effect meets large stakes and a weak one small stakes with no learning lag. "A
better" and "B better" are two such tests at α/2 each. Nothing is random: the evidence is a pure
function of the records, so a study stopped and run again decides the same.

Why blocks, and the moving best. The paper compares the EDFs of Δ = error − the model's best error;
the comparison is about shape, not level (ViT_C's errors are lower everywhere; that is not what
"steeper" means), so its null is "the two models' errors have the same distribution up to a shift".
The best moves as draws arrive. Δ against the best of the draws so far is not a martingale payoff:
given the past, a group whose best so far is unluckily high counts more of its next draws as near
it, and the two groups' luck differs. Fixing each model's best from a first wave fails the same way
(two groups from one population get different references, and with enough later draws the test
finds that difference). What a shift cannot change is a Δ inside a block: each block is its own
reference, blocks are independent, and under the null A's and B's blocks have the same law whatever
the two levels and whether or not the draws are paired (pairing, draw k being the same seeded
(lr, wd) for every model, makes the comparison less noisy). No test of this null can be exact at a
finer grain than a block without knowing the shift. Two block statistics:

- `lrwd_edf`, the paper's: per block, the share of the draws other than the block's best within t
  points of it, for each t in `within`; the payoff is A's share − B's, mixed over the thresholds.
  Its reference is the best of `block` draws, not of 64: it answers the paper's question at a
  smaller reference, and, the evidence of a block being at most doubled, with 16 blocks it settles
  only large effects.
- `lrwd_spread`: per pair of draws (blocks of 2), how far apart the model's two errors are (after
  the diverged draws: a block with more of them is worse); the payoff is sign(B's − A's) weighted by
  size (below). Paired, the two models face the same two (lr, wd), so the comparison is sharp. It
  measures how much the error moves with lr/wd (Gini's mean difference), which can order two models
  otherwise than the share near the best when the best is one lucky draw: bench/bench_adaptive.py
  shows both on the committed records.

Per-seed comparisons (`metric`, e.g. a training-length gap; `optimizer_gap`, SGD − AdamW per seed
from `optimizer_gaps`) take d = B − A per seed (A − B where higher is better), positive when A did
better. method="nonparametric": under "no difference" A's and B's values at a seed are exchangeable,
so d is symmetric about 0 and the seed pays clip(d / c, −1, 1), c the median |d| of the seeds before
it (known in advance, so the payoff keeps mean 0); this is exact, but a seed's evidence is at most
doubled, so `least_replicates` is ~10 at α = 0.0125. method="normal": d is taken as normal with
unknown variance and the evidence is the t-test Bayes factor with a right-Haar prior on the scale and
a normal prior on the standardized effect (Rouder, Speckman, Sun, Morey & Iverson, Psychon. Bull.
Rev. 2009, at fixed g), mixed over g in GAUSS_G: a test martingale under "mean 0" in the filtration
of the scale-invariant data (Pérez-Ortiz, Lardy, de Heide & Grünwald, Ann. Statist. 2024;
Grünwald, de Heide & Koolen, "Safe testing", JRSS-B 2024). It is two-sided, at 1/α, the direction
being the sign of the mean difference; a diverged run (±inf) has no place in it.

Diverged runs count by the study's EDF convention (stability.DIVERGED_CONVENTIONS), applied by
`replicate_values`: by stemsweep's a diverged draw is a failed setting, inf, within no threshold;
by pycls's it counts at its error before divergence, and one that never evaluated is left out. A
run that failed for good is left out (NaN) and named in the Decision, never silently: a paired unit
with one is dropped whole, both groups' replicates of it being reported.

Equivalence (optional; its own α and a margin in the statistic's units): "equal" needs both
one-sided nulls "A better by ≥ margin" and "B better by ≥ margin" rejected at α_eq each (an
intersection–union test, Berger 1982), for `lrwd_edf` at every threshold (margin: a share, 0.1 = 10
points of share), else with d taken as symmetric about its centre (margin in points).

The study's α is split over its comparisons by Bonferroni (`bonferroni`: α/m each), valid for
e-processes as for p-values: P(some comparison ever declares a false difference) ≤ Σ α/m = α.

Tuning stops by the expected gain of more draws (`expected_best`, `expected_gain`, `tuning_settled`):
Dodge, Gururangan, Card, Schwartz & Smith, "Show Your Work: Improved Reporting of Experimental
Results", EMNLP 2019, expected validation performance: the expected best of n draws from the EDF of
the draws so far. It is a stopping rule, with no error rate.

Written here rather than taken from PyPI: `confseq` (0.0.11, "Alpha", last release January 2023; an
sdist that compiles C++ against pybind11 ~2.6 and installs pytest and matplotlib as run-time
dependencies) and `expectation` (0.6.x requires Python ≥ 3.12; GPL-3.0 plus a further licence
clause; "the public API may still evolve") are not kept well enough to depend on, and the betting
e-processes here are a few lines of numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stemsweep.analysis.stability import lrwd_results
from stemsweep.config import ConfigError

STATISTICS = ("lrwd_edf", "lrwd_spread", "optimizer_gap", "metric")
METHODS = ("nonparametric", "normal")
A_BETTER, B_BETTER, EQUAL, OPEN = "a_better", "b_better", "equal", "open"
OUTCOMES = (A_BETTER, B_BETTER, EQUAL, OPEN)
# The betting fractions, mixed with equal weights: the uniform prior on λ in (0, 1) by the midpoint
# rule, fixed before any data.
LAMBDAS = (np.arange(20) + 0.5) / 20
# The normal method's prior variances of the standardized effect, mixed with equal weights: effects
# from a third of a standard deviation to ten.
GAUSS_G = (0.1, 1.0, 10.0, 100.0)
BLOCKS = {"lrwd_edf": 4, "lrwd_spread": 2}  # draws per unit unless the comparison says
EDF_WITHIN = (1.0, 2.0, 4.0, 8.0)  # lrwd_edf's thresholds in points unless the comparison says
# A record status that is not final yet: its replicate is pending, not left out.
NOT_FINAL = ("running", "resumable")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class Comparison:
    """One question of a study: is group A better than group B by `statistic`?

    statistic: "lrwd_edf" (values: each lr/wd draw's error; A better: more of A's draws within
    `within` points of the best of their block), "lrwd_spread" (the same values; A better: A's error
    moves less between two draws), "optimizer_gap" (values: each seed's SGD − AdamW error,
    `optimizer_gaps`; A better: A loses less with SGD), "metric" (values: a metric per seed; A better:
    lower, or higher with higher_is_better). replicate: the axis the waves run along ("lrwd.draw",
    "seed"), for display. wave: replicates per wave; a decision is made after each whole wave from
    min_replicates on; max_replicates ends the comparison (open at max). paired: replicate k of A and
    of B belong together (the same draw, the same seed); unpaired, each group's values are matched
    in order, skipping its own left-out ones. within (lrwd_edf; default EDF_WITHIN): Δ thresholds in
    points. block (lr/wd; default BLOCKS): draws per unit, dividing wave and max_replicates.
    margin: the equivalence margin (a share in (0, 1) for lrwd_edf, points otherwise); None: no
    equivalence test. method (per-seed statistics): "nonparametric" or "normal" (METHODS).
    """

    name: str
    a: str
    b: str
    statistic: str
    replicate: str = "seed"
    wave: int = 8
    min_replicates: int = 8
    max_replicates: int = 64
    paired: bool = True
    within: tuple[float, ...] | None = None
    block: int | None = None
    margin: float | None = None
    higher_is_better: bool = False
    method: str = "nonparametric"

    def __post_init__(self) -> None:
        where = f"comparison {self.name!r}"
        _check(self.statistic in STATISTICS,
               f"{where}: statistic={self.statistic!r} is not allowed: choose one of {', '.join(STATISTICS)}")
        _check(self.a != self.b, f"{where}: a={self.a!r} and b={self.b!r} must be two different groups")
        _check(self.method in METHODS, f"{where}: method={self.method!r} is not allowed: choose one of "
               f"{', '.join(METHODS)}")
        for field in ("wave", "min_replicates", "max_replicates"):
            value = getattr(self, field)
            _check(isinstance(value, int) and value >= 1, f"{where}: {field}={value!r} is not allowed: an integer >= 1")
        _check(self.min_replicates <= self.max_replicates, f"{where}: min_replicates={self.min_replicates} is not "
               f"allowed: at most max_replicates={self.max_replicates}")
        lrwd = self.statistic in BLOCKS
        if lrwd:
            object.__setattr__(self, "block", BLOCKS[self.statistic] if self.block is None else self.block)
            _check(isinstance(self.block, int) and self.block >= 2,
                   f"{where}: block={self.block!r} is not allowed: an integer >= 2 (draws per unit)")
            for field in ("wave", "max_replicates"):
                _check(getattr(self, field) % self.block == 0,
                       f"{where}: {field}={getattr(self, field)} is not allowed: a multiple of block={self.block}")
            _check(self.method == "nonparametric", f"{where}: method={self.method!r} is not allowed for "
                   f"{self.statistic}: it is nonparametric")
            _check(not self.higher_is_better, f"{where}: higher_is_better is for a metric, not {self.statistic}")
        else:
            _check(self.block in (None, 1), f"{where}: block is for the lr/wd statistics, not {self.statistic}")
            object.__setattr__(self, "block", 1)
            _check(self.statistic == "metric" or not self.higher_is_better,
                   f"{where}: higher_is_better is for a metric, not {self.statistic}")
        if self.statistic == "lrwd_edf":
            within = EDF_WITHIN if self.within is None else tuple(self.within)
            object.__setattr__(self, "within", within)
            _check(len(within) > 0 and all(math.isfinite(t) and t > 0 for t in within),
                   f"{where}: within={within!r} is not allowed: one or more thresholds > 0, in points")
        else:
            _check(self.within is None, f"{where}: within is for lrwd_edf, not {self.statistic}")
        if self.margin is not None:
            share = self.statistic == "lrwd_edf"
            _check(self.method == "nonparametric", f"{where}: margin is not allowed with method='normal': the "
                   "equivalence test is nonparametric")
            _check(isinstance(self.margin, (int, float)) and 0 < self.margin < (1 if share else math.inf),
                   f"{where}: margin={self.margin!r} is not allowed: "
                   + ("a share of draws in (0, 1)" if share else "a number of points > 0"))

    def looks(self) -> list[int]:
        """The replicate counts after which a decision is made: each wave's end, from min_replicates on."""
        ends = range(self.wave, self.max_replicates + self.wave, self.wave)
        return sorted({min(n, self.max_replicates) for n in ends if min(n, self.max_replicates) >= self.min_replicates})


@dataclass(frozen=True)
class Decision:
    """Where a comparison stands after the replicates seen.

    outcome: one of OUTCOMES. n: the replicates per group at the look that decided, or at the last
    look made while open (0 before the first). units: the units of evidence used by then. evidence:
    the larger of evidence_a (the e-value for "A better") and evidence_b; threshold: where it
    settles (2/α: α/2 a direction; the normal method: one two-sided Bayes factor at 1/α, counted
    for the side its mean difference is on, the other side having 1). equivalence_evidence: the
    smallest of the equivalence e-values (None without a margin), settled at equivalence_threshold
    = 1/α_eq. seen: replicates per group available. at_max: open with the maximum reached ("open at
    N"). left_out_a, left_out_b: replicates below n not used: left out (failed for good), or, paired,
    in a unit with one that was.
    """

    comparison: str
    outcome: str
    n: int
    units: int
    evidence: float
    threshold: float
    evidence_a: float
    evidence_b: float
    equivalence_evidence: float | None
    equivalence_threshold: float | None
    seen: int
    at_max: bool
    left_out_a: tuple[int, ...]
    left_out_b: tuple[int, ...]

    @property
    def settled(self) -> bool:
        return self.outcome != OPEN


@dataclass(frozen=True)
class Replicates:
    """One group's values by replicate (`replicate_values`): values[k] is replicate k's error (inf:
    diverged, by stemsweep's convention; NaN: left out); left_out maps a left-out replicate to why
    (its status); pending lists the replicates with no final record yet."""

    values: np.ndarray
    left_out: dict[int, str]
    pending: tuple[int, ...]


# --- the records → values --------------------------------------------------------------------------

def replicate_values(runs: pd.DataFrame, replicate: str, diverged: str = "stemsweep") -> Replicates:
    """One group's runs (a load_runs table narrowed to the group) as values by replicate.

    `replicate` names the integer column that numbers the replicates ("seed", or the lr/wd draw
    index the study adds: records do not carry it). Diverged runs count by the `diverged` convention
    (stability.lrwd_results): inf by stemsweep's, their error before divergence by pycls's. A failed
    run, and by pycls's convention a diverged one that never evaluated, is left out (NaN, named in
    left_out); a running or resumable run, or a replicate below the last with no record, is pending.
    """
    _check(replicate in runs.columns,
           f"replicate={replicate!r} is not a column of the runs: give one of {', '.join(map(str, runs.columns))}")
    index = pd.to_numeric(runs[replicate], errors="coerce")
    bad = runs.loc[index.isna() | (index < 0) | (index % 1 != 0), replicate]
    _check(bad.empty, f"{replicate}={bad.iloc[0] if len(bad) else None} is not allowed: "
           "replicates are numbered by integers >= 0")
    index = index.astype(int)
    twice = index[index.duplicated()]
    _check(twice.empty, f"{replicate}={twice.iloc[0] if len(twice) else None} has more than one run in the "
           "group: a group has one run per replicate")
    size = int(index.max()) + 1 if len(index) else 0
    values = np.full(size, np.nan)
    try:
        counted = lrwd_results(runs, diverged)
    except ValueError as error:  # an unknown convention, or pycls's without errors before divergence
        raise ConfigError(str(error)) from None
    errors = counted["error"].to_numpy(dtype=float)
    values[index[counted.index].to_numpy()] = np.where(np.isnan(errors), np.inf, errors)
    left_out, pending = {}, set(range(size)) - set(index.tolist())
    for row, status in runs.loc[~runs.index.isin(counted.index), "status"].items():
        if status in NOT_FINAL:
            pending.add(int(index[row]))
        else:
            left_out[int(index[row])] = "diverged without an error" if status == "diverged" else str(status)
    return Replicates(values=values, left_out=dict(sorted(left_out.items())), pending=tuple(sorted(pending)))


def optimizer_gaps(sgd: Sequence[float], adamw: Sequence[float]) -> np.ndarray:
    """Per seed, error(SGD) − error(AdamW) in points, from two arrays by seed (inf: diverged, NaN: left
    out). A diverged SGD run against a finished AdamW one is +inf (SGD failed), the reverse −inf; both
    diverged is 0 (the optimizer made no difference: both failed); NaN stays NaN."""
    sgd, adamw = np.asarray(sgd, dtype=float), np.asarray(adamw, dtype=float)
    _check(sgd.shape == adamw.shape and sgd.ndim == 1,
           f"sgd and adamw are not allowed with shapes {sgd.shape} and {adamw.shape}: one value per seed each")
    with np.errstate(invalid="ignore"):
        gaps = sgd - adamw
    gaps[np.isinf(sgd) & np.isinf(adamw)] = 0.0
    return gaps


# --- units and what each pays ------------------------------------------------------------------------

def _units(spec: Comparison, a: np.ndarray, b: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """The complete units among the replicates seen: A's and B's values (units × block), the replicate
    count by which each unit is complete, and each group's replicates not used."""
    size = spec.block
    if spec.paired:
        whole = min(a.size, b.size) // size * size
        missing = (np.isnan(a[:whole]) | np.isnan(b[:whole])).reshape(-1, size).any(axis=1)
        kept = np.flatnonzero(~missing)
        # A unit with a replicate left out is dropped whole, on both sides: its pairs belong together.
        dropped = tuple(int(k) for k in np.flatnonzero(np.repeat(missing, size)))
        return (a[:whole].reshape(-1, size)[kept], b[:whole].reshape(-1, size)[kept], (kept + 1) * size,
                dropped, dropped)
    present_a, present_b = np.flatnonzero(~np.isnan(a)), np.flatnonzero(~np.isnan(b))
    count = min(present_a.size, present_b.size) // size
    take_a, take_b = present_a[:count * size].reshape(-1, size), present_b[:count * size].reshape(-1, size)
    return (a[take_a], b[take_b], np.maximum(take_a[:, -1], take_b[:, -1]) + 1,
            tuple(int(k) for k in np.flatnonzero(np.isnan(a))), tuple(int(k) for k in np.flatnonzero(np.isnan(b))))


def block_shares(blocks: np.ndarray, within: Sequence[float]) -> np.ndarray:
    """For each block of draws (rows; inf: diverged), the share of its draws other than its best whose
    Δ to the block's best is < t, for each t in `within` (blocks × thresholds). A block with no
    finished draw has share 0: no draw is within any threshold of a failed setting."""
    ordered = np.sort(blocks, axis=1)  # inf (diverged) last
    with np.errstate(invalid="ignore"):
        deltas = ordered[:, 1:] - ordered[:, :1]  # NaN where the best itself diverged: within nothing
        return np.stack([(deltas < t).mean(axis=1) for t in within], axis=1)


def block_spreads(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each block of draws (rows; inf: diverged): how many diverged, and the mean Δ of its other
    finished draws to its best finished one (0 with fewer than two finished). Neither changes when
    every error moves by the same amount: the model's level cancels."""
    finished = np.isfinite(blocks)
    count = finished.sum(axis=1)
    best = np.where(finished, blocks, np.inf).min(axis=1)
    total = np.where(finished, blocks - np.where(np.isfinite(best), best, 0.0)[:, None], 0.0).sum(axis=1)
    spread = total / np.maximum(count - 1, 1)
    return blocks.shape[1] - count, spread


def _differences(spec: Comparison, a_units: np.ndarray, b_units: np.ndarray) -> np.ndarray:
    """d per unit, antisymmetric in A and B and > 0 where A did better: lrwd_edf, A's block share −
    B's, averaged over the thresholds; lrwd_spread, B's block spread − A's (±inf where one block has
    more diverged draws: a failed setting is worse than any Δ); per seed, B − A (A − B where higher is
    better). A tie, ±inf on both sides included, is 0."""
    if spec.statistic == "lrwd_edf":
        return (block_shares(a_units, spec.within) - block_shares(b_units, spec.within)).mean(axis=1)
    if spec.statistic == "lrwd_spread":
        (diverged_a, spread_a), (diverged_b, spread_b) = block_spreads(a_units), block_spreads(b_units)
        return np.where(diverged_a == diverged_b, spread_b - spread_a, np.copysign(np.inf, diverged_b - diverged_a))
    better, worse = (a_units[:, 0], b_units[:, 0]) if spec.higher_is_better else (b_units[:, 0], a_units[:, 0])
    with np.errstate(invalid="ignore"):
        d = better - worse
    d[better == worse] = 0.0
    return d


def _scales(d: np.ndarray) -> np.ndarray:
    """Each unit's payoff scale: the median |d| of the units before it (finite, nonzero), known before
    the unit is; while there is none, a vanishing scale, which makes the payoff the sign of d."""
    scales = np.full(d.size, np.finfo(float).tiny)
    for i in range(1, d.size):
        past = np.abs(d[:i])
        past = past[np.isfinite(past) & (past > 0)]
        if past.size:
            scales[i] = np.median(past)
    return scales


def _log_wealth(payoffs: np.ndarray) -> np.ndarray:
    """log of the mixture wealth after each unit, for payoffs (units × 1) in [−1, 1]: log of the mean
    over LAMBDAS of ∏(1 + λ g)."""
    if payoffs.shape[0] == 0:
        return np.zeros(0)
    paths = np.cumsum(np.log1p(LAMBDAS[None, :] * payoffs), axis=0)  # units × λ
    top = paths.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(paths - top).mean(axis=1, keepdims=True)))[:, 0]


def normal_log_evidence(d: np.ndarray) -> np.ndarray:
    """log of the normal method's Bayes factor after each unit, for "the mean of d is 0" against "it is
    not": the one-sample t statistic's Bayes factor (1 + n g)^(−1/2) · ((1 + t²/ν) / (1 + t²/(ν(1 +
    n g))))^((ν + 1)/2), ν = n − 1, averaged over g in GAUSS_G; 1 for n < 2 (one value fixes no scale).
    Values all equal make t infinite, and the factor its limit (1 + n g)^(ν/2)."""
    evidence = np.zeros(d.size)
    g = np.asarray(GAUSS_G)
    for n in range(2, d.size + 1):
        mean, variance, nu = d[:n].mean(), d[:n].var(ddof=1), n - 1
        spread = 1.0 + n * g
        if mean == 0:
            ratio = np.zeros_like(g)
        elif variance <= 1e-24 * mean * mean:
            ratio = np.log(spread)
        else:
            t2 = n * mean * mean / variance
            ratio = np.log1p(t2 / nu) - np.log1p(t2 / (nu * spread))
        logs = -0.5 * np.log(spread) + (nu + 1) / 2 * ratio
        evidence[n - 1] = logs.max() + np.log(np.exp(logs - logs.max()).mean())
    return evidence


def _evidence_paths(spec: Comparison, a_units: np.ndarray, b_units: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """log e-values after each unit: for "A better", for "B better", and the smaller of the two
    equivalence e-values (None without a margin). Every payoff has conditional mean ≤ 0 under its null."""
    d = _differences(spec, a_units, b_units)
    if spec.method == "normal":
        _check(np.all(np.isfinite(d)), f"comparison {spec.name!r}: a diverged run (inf) has no place in "
               "method='normal': use method='nonparametric'")
        evidence, side = normal_log_evidence(d), np.sign(np.cumsum(d))
        return np.where(side > 0, evidence, 0.0), np.where(side < 0, evidence, 0.0), None
    scales = _scales(d)

    def payoff(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # x over a vanishing scale: ±inf, clipped to its sign
            return np.clip(x / scales, -1.0, 1.0)[:, None]

    g = payoff(d)
    if spec.margin is None:
        return _log_wealth(g), _log_wealth(-g), None
    # d centred at ≥ margin (A better by the margin) falls when d − margin keeps coming out negative;
    # d centred at ≤ −margin when d + margin keeps coming out positive.
    above, below = -payoff(d - spec.margin), payoff(d + spec.margin)
    return _log_wealth(g), _log_wealth(-g), np.minimum(_log_wealth(above), _log_wealth(below))


# --- the decision ----------------------------------------------------------------------------------

def _alpha(name: str, alpha: float) -> float:
    _check(isinstance(alpha, (int, float)) and 0 < alpha < 1, f"{name}={alpha!r} is not allowed: a number in (0, 1)")
    return float(alpha)


def _threshold(spec: Comparison, alpha: float) -> float:
    return (1.0 if spec.method == "normal" else 2.0) / alpha


def _values(name: str, values: Sequence[float], gaps: bool) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    _check(array.ndim == 1, f"{name} is not allowed with shape {array.shape}: one value per replicate")
    _check(gaps or not np.any(array == -np.inf),
           f"{name} has -inf: a value is finite, inf (a diverged run) or NaN (left out)")
    return array


def decide_waves(spec: Comparison, a: Sequence[float], b: Sequence[float], alpha: float,
                 alpha_equivalence: float | None = None) -> list[Decision]:
    """The decision at each look the replicates seen allow (each wave's end from min_replicates on), up
    to the first that settles the comparison: its evidence wave by wave, for status and reports.
    Replicates beyond max_replicates are not used. Arguments as `decide`."""
    alpha = _alpha("alpha", alpha)
    if spec.margin is not None:
        _check(alpha_equivalence is not None,
               f"comparison {spec.name!r} has margin={spec.margin}: give alpha_equivalence, its own error rate")
        alpha_equivalence = _alpha("alpha_equivalence", alpha_equivalence)
    else:
        _check(alpha_equivalence is None,
               f"alpha_equivalence={alpha_equivalence} is not allowed for comparison {spec.name!r}: it has no margin")
    gaps = spec.statistic == "optimizer_gap"
    a = _values("a", a, gaps)[:spec.max_replicates]
    b = _values("b", b, gaps)[:spec.max_replicates]
    a_units, b_units, complete, left_a, left_b = _units(spec, a, b)
    up, down, equal = _evidence_paths(spec, a_units, b_units)
    seen, threshold = min(a.size, b.size), _threshold(spec, alpha)
    eq_threshold = None if alpha_equivalence is None else 1.0 / alpha_equivalence
    decisions = []
    for n in spec.looks():
        if n > seen:
            break
        units = int(np.searchsorted(complete, n, side="right"))
        e_a = float(np.exp(up[units - 1])) if units else 1.0
        e_b = float(np.exp(down[units - 1])) if units else 1.0
        e_eq = None if equal is None else (float(np.exp(equal[units - 1])) if units else 1.0)
        if e_a >= threshold:
            outcome = A_BETTER
        elif e_b >= threshold:
            outcome = B_BETTER
        elif e_eq is not None and e_eq >= eq_threshold:
            outcome = EQUAL
        else:
            outcome = OPEN
        decisions.append(Decision(
            comparison=spec.name, outcome=outcome, n=n, units=units, evidence=max(e_a, e_b), threshold=threshold,
            evidence_a=e_a, evidence_b=e_b, equivalence_evidence=e_eq, equivalence_threshold=eq_threshold,
            seen=seen, at_max=outcome == OPEN and n == spec.max_replicates,
            left_out_a=tuple(k for k in left_a if k < n), left_out_b=tuple(k for k in left_b if k < n)))
        if outcome != OPEN:
            break
    return decisions


def decide(spec: Comparison, a: Sequence[float], b: Sequence[float], alpha: float,
           alpha_equivalence: float | None = None) -> Decision:
    """The comparison's decision from every replicate recorded so far.

    a, b: each group's values by replicate index (`replicate_values`: an error per draw, a metric
    per seed; `optimizer_gaps` for the optimizer gap): inf a diverged run counted as failed, NaN a
    replicate left out. alpha: this comparison's share of the study's error rate (`bonferroni`);
    alpha_equivalence: the equivalence test's own, required with a margin and refused without.

    A pure function of the data: the looks are taken in order and the first that settles the
    comparison is its decision (replicates recorded after it do not change it); open otherwise, with
    at_max once the maximum is reached; before the first look, open with n = 0.
    """
    decisions = decide_waves(spec, a, b, alpha, alpha_equivalence)
    if decisions:
        return decisions[-1]
    eq_threshold = None if alpha_equivalence is None else 1.0 / alpha_equivalence
    return Decision(comparison=spec.name, outcome=OPEN, n=0, units=0, evidence=1.0,
                    threshold=_threshold(spec, alpha), evidence_a=1.0, evidence_b=1.0,
                    equivalence_evidence=None if eq_threshold is None else 1.0,
                    equivalence_threshold=eq_threshold, seen=min(len(a), len(b)), at_max=False,
                    left_out_a=(), left_out_b=())


def least_replicates(spec: Comparison, alpha: float) -> int | None:
    """The fewest replicates per group at which `spec` can declare a difference at `alpha`, every unit
    as one-sided as it can be; None if even that does not settle it by max_replicates. A study whose
    maximum is below this can only end open."""
    threshold = math.log(_threshold(spec, _alpha("alpha", alpha)))
    units = spec.max_replicates // spec.block
    if spec.method == "normal":
        best = normal_log_evidence(np.ones(units))  # a constant difference: t is infinite
    else:
        best = _log_wealth(np.ones((units, 1)))
    for n in spec.looks():
        done = n // spec.block
        if done and best[done - 1] >= threshold:
            return n
    return None


def bonferroni(alpha: float, comparisons: Sequence[Comparison]) -> dict[str, float]:
    """The study's error rate split over its comparisons, α/m each, by name: the chance that any of
    them declares a difference that is not there stays ≤ α, e-processes or not."""
    alpha = _alpha("alpha", alpha)
    names = [c.name for c in comparisons]
    _check(len(names) > 0, "a study with an error rate needs at least one comparison")
    twice = sorted({n for n in names if names.count(n) > 1})
    _check(not twice, f"comparison name {twice[0] if twice else None!r} is used twice: names must differ")
    return {name: alpha / len(names) for name in names}


# --- tuning: the expected gain of more draws ----------------------------------------------------------

def _errors(errors: Sequence[float]) -> np.ndarray:
    values = np.asarray(errors, dtype=float)
    values = values[~np.isnan(values)]  # left out
    _check(values.size > 0, "no draw's error to tune from: give at least one")
    _check(not np.any(values == -np.inf), "errors has -inf: an error is finite, inf (diverged) or NaN (left out)")
    return np.sort(values)


def expected_best(errors: Sequence[float], n: int) -> float:
    """The expected lowest error of n draws with replacement from the EDF of `errors` (Dodge et al.,
    EMNLP 2019, "expected validation performance", for an error): Σ_i e_(i) [((N − i + 1)/N)^n −
    ((N − i)/N)^n] over the sorted errors e_(1) ≤ … ≤ e_(N). A diverged draw (inf) is never the best:
    the expectation is given at least one finished draw (inf if there is none). NaN is left out."""
    _check(isinstance(n, (int, np.integer)) and n >= 1, f"n={n!r} is not allowed: an integer >= 1")
    values = _errors(errors)
    size, finite = values.size, int(np.isfinite(values).sum())
    if finite == 0:
        return math.inf
    above = (size - np.arange(finite + 1)) / size  # the share of draws above e_(i), i = 0 … finite
    p_best = above[:-1] ** n - above[1:] ** n  # P(the best of n is e_(i))
    return float(np.dot(values[:finite], p_best) / (1.0 - above[finite] ** n))


def expected_gain(errors: Sequence[float], more: int) -> float:
    """How much lower the expected best error is with `more` draws than with the N drawn so far, both
    from the EDF of the N (`expected_best`): expected_best(N) − expected_best(N + more), ≥ 0; inf
    while no draw has finished."""
    _check(isinstance(more, (int, np.integer)) and more >= 1, f"more={more!r} is not allowed: an integer >= 1")
    values = _errors(errors)
    if not np.isfinite(values).any():
        return math.inf
    return expected_best(values, values.size) - expected_best(values, values.size + more)


def tuning_settled(errors: Sequence[float], more: int, epsilon: float) -> bool:
    """Whether a cell's tuning may stop drawing: `more` further draws would lower its expected best
    error by less than `epsilon` points (`expected_gain`)."""
    _check(isinstance(epsilon, (int, float)) and epsilon > 0, f"epsilon={epsilon!r} is not allowed: points > 0")
    return expected_gain(errors, more) < epsilon
