"""Anytime-valid decisions of adaptive studies (stemsweep.analysis.sequential): the decision rule on
hand-made cases, the records → values step with both diverged conventions, the Dodge et al. expected
best against brute force, and small null simulations that hold the error rate."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from stemsweep.analysis import sequential as sq
from stemsweep.config import ConfigError

ALPHA = 0.05


def metric(**overrides) -> sq.Comparison:
    """A per-seed comparison: 2 to 10 seeds in waves of 2."""
    return sq.Comparison(**{"name": "m", "a": "ViT_C", "b": "ViT_P", "statistic": "metric", "wave": 2,
                            "min_replicates": 2, "max_replicates": 10, **overrides})


def lrwd(statistic: str = "lrwd_spread", **overrides) -> sq.Comparison:
    """An lr/wd comparison as in the paper study: 8 to 64 draws in waves of 8."""
    return sq.Comparison(**{"name": statistic, "a": "ViT_C", "b": "ViT_P", "statistic": statistic,
                            "replicate": "lrwd.draw", **overrides})


def mixture(*payoffs: float) -> float:
    """The evidence after these payoffs, computed here: the mean over λ of ∏(1 + λ g)."""
    lambdas = (np.arange(20) + 0.5) / 20
    return float(np.mean([np.prod([1 + lam * g for g in payoffs]) for lam in lambdas]))


# --- the specification -------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"statistic": "edf"}, "statistic='edf' is not allowed: choose one of lrwd_edf, lrwd_spread"),
    ({"statistic": "lrwd_edf", "wave": 6}, "wave=6 is not allowed: a multiple of block=4"),
    ({"statistic": "lrwd_spread", "block": 1}, "block=1 is not allowed: an integer >= 2"),
    ({"statistic": "lrwd_edf", "wave": 4, "max_replicates": 8, "margin": 1.5},
     "margin=1.5 is not allowed: a share of draws in (0, 1)"),
    ({"statistic": "lrwd_spread", "method": "normal"}, "method='normal' is not allowed for lrwd_spread"),
    ({"within": (1.0,)}, "within is for lrwd_edf, not metric"),
    ({"min_replicates": 20}, "min_replicates=20 is not allowed: at most max_replicates=10"),
    ({"method": "normal", "margin": 1.0}, "margin is not allowed with method='normal'"),
    ({"b": "ViT_C"}, "a='ViT_C' and b='ViT_C' must be two different groups"),
])
def test_a_bad_comparison_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=f"^comparison 'm': {message[:20]}") as raised:
        metric(**overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_defaults_and_looks():
    edf, spread = lrwd("lrwd_edf"), lrwd()
    assert (edf.block, edf.within, spread.block, spread.within) == (4, sq.EDF_WITHIN, 2, None)
    assert edf.looks() == [8, 16, 24, 32, 40, 48, 56, 64]
    assert metric(wave=4, min_replicates=5).looks() == [8, 10]  # the last wave is short


# --- the decision rule --------------------------------------------------------------------------------

def test_evidence_by_hand_and_the_first_settling_look():
    spec = metric()
    d = np.array([1.0, 3.0, 2.0, 0.5])  # B − A: A better at every seed
    decision = sq.decide(spec, np.zeros(4), d, ALPHA)
    # payoffs: the sign first, then d over the median |d| before it, clipped to [−1, 1]
    payoffs = (1.0, 1.0, 1.0, 0.5 / 2.0)
    assert decision.outcome == sq.OPEN and (decision.n, decision.units, decision.seen) == (4, 4, 4)
    assert decision.evidence_a == pytest.approx(mixture(*payoffs))
    assert decision.evidence_b == pytest.approx(mixture(*(-g for g in payoffs)))
    assert decision.threshold == 2 / ALPHA and not decision.at_max
    # all-out agreement settles at the fewest replicates any data could: 8 seeds at α = 0.05
    settled = sq.decide(spec, np.zeros(10), np.full(10, 2.0), ALPHA)
    assert settled.outcome == sq.A_BETTER and settled.n == 8 == sq.least_replicates(spec, ALPHA)
    assert settled.evidence == pytest.approx(mixture(*[1.0] * 8)) and settled.evidence >= settled.threshold
    assert mixture(*[1.0] * 7) < 2 / ALPHA  # …and not one wave earlier
    flipped = sq.decide(spec, np.full(10, 2.0), np.zeros(10), ALPHA)
    assert flipped.outcome == sq.B_BETTER and flipped.n == 8
    assert sq.decide(metric(higher_is_better=True), np.zeros(10), np.full(10, 2.0), ALPHA).outcome == sq.B_BETTER


def test_ties_bring_no_evidence_and_stay_open_at_the_maximum():
    spec = metric()
    decision = sq.decide(spec, np.full(12, 30.0), np.full(12, 30.0), ALPHA)
    assert decision.outcome == sq.OPEN and decision.at_max and decision.n == 10 and decision.units == 10
    assert decision.evidence_a == pytest.approx(1.0) and decision.evidence_b == pytest.approx(1.0)
    # inf against inf is a tie too (both diverged)
    assert sq.decide(spec, np.full(10, np.inf), np.full(10, np.inf), ALPHA).evidence == pytest.approx(1.0)


def test_open_at_the_maximum_when_the_evidence_is_mixed():
    rng = np.random.default_rng(3)
    a, b = rng.normal(30, 1, 80), rng.normal(30, 1, 80)
    decision = sq.decide(lrwd(), a, b, ALPHA)
    assert decision.outcome == sq.OPEN and decision.at_max and decision.n == 64 and decision.seen == 64
    assert decision.units == 32  # pairs of draws; replicates beyond the maximum are not used
    assert decision == sq.decide(lrwd(), a[:64], b[:64], ALPHA)


def test_a_single_wave():
    spec = lrwd("lrwd_edf")
    a, b = np.array([30, 30.5, 31, 45, 30, 30.2, 30.4, 30.6]), np.array([40, 48, 52, 60, 40, 47, 49, 55])
    waves = sq.decide_waves(spec, a, b, ALPHA)
    assert len(waves) == 1 and waves[0].n == 8 and waves[0].units == 2 and waves[0].outcome == sq.OPEN
    assert waves[0].evidence_a == pytest.approx(mixture(1.0, 1.0))  # two blocks, both all A's way
    assert sq.decide(spec, a[:7], b[:7], ALPHA).n == 0  # before the first whole wave: no look yet


def test_the_decision_is_a_pure_function_of_the_records_up_to_its_look():
    spec = metric()
    d = np.array([2.0] * 8 + [-5.0] * 2)
    settled = sq.decide(spec, np.zeros(8), d[:8], ALPHA)
    assert settled.outcome == sq.A_BETTER
    # replicates recorded after it (a study that ran ahead) do not change it, nor does asking again
    later = sq.decide(spec, np.zeros(10), d, ALPHA)
    assert later.seen == 10 and later == sq.decide(spec, np.zeros(10), d, ALPHA)
    assert (later.outcome, later.n, later.units, later.evidence) == (settled.outcome, 8, 8, settled.evidence)
    assert [w.n for w in sq.decide_waves(spec, np.zeros(10), d, ALPHA)] == [2, 4, 6, 8]


def test_block_statistics_and_diverged_draws():
    blocks = np.array([[30.0, 30.5, 33.0, 40.0],
                       [31.0, np.inf, 31.5, 50.0],
                       [np.inf, np.inf, np.inf, np.inf],
                       [np.inf, 42.0, np.inf, np.inf]])
    # Δ to the block's best of the other three draws: (0.5, 3, 10), (0.5, 19, inf), all failed, (inf ×3)
    assert sq.block_shares(blocks, (1.0, 4.0)).tolist() == [[1 / 3, 2 / 3], [1 / 3, 1 / 3], [0, 0], [0, 0]]
    diverged, spread = sq.block_spreads(blocks)
    assert diverged.tolist() == [0, 1, 4, 3]
    assert spread == pytest.approx([(0.5 + 3 + 10) / 3, (0.5 + 19) / 2, 0.0, 0.0])
    # A block with more diverged draws loses to any block with fewer, whatever its spread.
    spec = lrwd(wave=2, min_replicates=2, max_replicates=2)
    assert sq.decide(spec, [30, 90], [30, np.inf], ALPHA).evidence_a == pytest.approx(mixture(1.0))
    assert sq.decide(spec, [30, np.inf], [30, 31], ALPHA).evidence_b == pytest.approx(mixture(1.0))


def test_lrwd_decisions_ignore_each_models_level():
    rng = np.random.default_rng(5)
    a = 30 + rng.gamma(1.0, 2.0, 64)
    b = 30 + rng.gamma(1.0, 6.0, 64)
    b[::9] = np.inf
    for statistic in ("lrwd_edf", "lrwd_spread"):
        spec = lrwd(statistic)
        decision = sq.decide(spec, a, b, ALPHA)
        shifted = sq.decide(spec, a - 25.0, b + 10.0, ALPHA)
        assert (shifted.outcome, shifted.n) == (decision.outcome, decision.n)
        assert shifted.evidence == pytest.approx(decision.evidence)
        assert decision.outcome == sq.A_BETTER  # A's errors 3× as concentrated, B diverging at 1 in 9


def test_left_out_replicates_are_reported_and_paired_units_dropped_whole():
    a, b = np.full(8, 30.0), np.array([31.0, 32, 33, np.nan, 35, 36, 37, 38])
    paired = sq.decide(lrwd("lrwd_edf"), a, b, ALPHA)
    assert paired.units == 1 and paired.left_out_a == paired.left_out_b == (0, 1, 2, 3)
    unpaired = sq.decide(lrwd("lrwd_edf", paired=False), a, b, ALPHA)
    # unpaired, each group skips its own: B's 7 values make one block of 4 with A's first 4
    assert unpaired.units == 1 and unpaired.left_out_a == () and unpaired.left_out_b == (3,)
    seeds = sq.decide(metric(), [1.0, np.nan, 1.0, 1.0], [2.0, 2.0, np.nan, 2.0], ALPHA)
    assert seeds.units == 2 and seeds.left_out_a == seeds.left_out_b == (1, 2)


def test_equivalence_within_a_margin():
    rng = np.random.default_rng(11)
    a, b = rng.normal(20, 0.1, 40), rng.normal(20, 0.1, 40)
    spec = metric(max_replicates=40, margin=1.0)
    decision = sq.decide(spec, a, b, ALPHA, alpha_equivalence=0.05)
    assert decision.outcome == sq.EQUAL and decision.equivalence_evidence >= decision.equivalence_threshold == 20
    assert decision.n < 40
    # a real difference of 2 points is never "equal within 1"
    assert sq.decide(spec, a, b + 2.0, ALPHA, alpha_equivalence=0.05).outcome == sq.A_BETTER
    with pytest.raises(ConfigError, match="has margin=1.0: give alpha_equivalence"):
        sq.decide(spec, a, b, ALPHA)
    with pytest.raises(ConfigError, match="alpha_equivalence=0.05 is not allowed .* it has no margin"):
        sq.decide(metric(), a, b, ALPHA, alpha_equivalence=0.05)


def test_the_normal_method_is_the_t_tests_bayes_factor():
    d = np.array([0.8, 1.9, 1.1])
    got = np.exp(sq.normal_log_evidence(d))
    assert got[0] == 1.0
    # Independently: the t statistic's density under each normal prior on the effect, integrated
    # numerically over the noncentrality, against its central density.
    for n in (2, 3):
        t = d[:n].mean() / (d[:n].std(ddof=1) / np.sqrt(n))
        factors = []
        for g in sq.GAUSS_G:
            def integrand(delta, g=g, n=n, t=t):
                return stats.nct.pdf(t, n - 1, delta * np.sqrt(n)) * stats.norm.pdf(delta, 0, np.sqrt(g))
            factors.append(integrate.quad(integrand, -np.inf, np.inf, limit=200)[0] / stats.t.pdf(t, n - 1))
        assert got[n - 1] == pytest.approx(np.mean(factors), rel=1e-5)
    spec = metric(method="normal", wave=1)
    decision = sq.decide(spec, np.zeros(10), np.full(10, 3.0) + np.arange(10) * 0.01, 0.0125)
    assert decision.outcome == sq.A_BETTER and decision.threshold == 80 and decision.evidence_b == 1.0
    assert decision.n == sq.least_replicates(spec, 0.0125) == 3
    with pytest.raises(ConfigError, match="a diverged run .* has no place in method='normal'"):
        sq.decide(spec, np.zeros(4), [1.0, np.inf, 1.0, 1.0], ALPHA)


def test_bad_values_are_one_clear_line():
    with pytest.raises(ConfigError, match=r"alpha=1.5 is not allowed: a number in \(0, 1\)"):
        sq.decide(metric(), [1.0], [2.0], 1.5)
    with pytest.raises(ConfigError, match="a has -inf"):
        sq.decide(metric(), [-np.inf], [2.0], ALPHA)
    with pytest.raises(ConfigError, match=r"a is not allowed with shape \(2, 2\)"):
        sq.decide(metric(), np.zeros((2, 2)), [2.0], ALPHA)
    assert sq.decide(metric(statistic="optimizer_gap"), [-np.inf, 1.0], [2.0, 2.0], ALPHA).units == 2


def test_optimizer_gaps_count_diverged_runs():
    gaps = sq.optimizer_gaps([30.0, np.inf, 28.0, np.inf, np.nan], [25.0, 26.0, np.inf, np.inf, 25.0])
    assert gaps[:4].tolist() == [5.0, np.inf, -np.inf, 0.0] and np.isnan(gaps[4])


def test_bonferroni_splits_the_studys_alpha():
    comparisons = [metric(name="gap"), lrwd(name="edf_sgd"), lrwd(name="edf_adamw")]
    assert sq.bonferroni(0.06, comparisons) == pytest.approx({"gap": 0.02, "edf_sgd": 0.02, "edf_adamw": 0.02})
    with pytest.raises(ConfigError, match="comparison name 'gap' is used twice"):
        sq.bonferroni(0.05, [metric(name="gap"), metric(name="gap")])


# --- records → values ----------------------------------------------------------------------------------

def group_runs() -> pd.DataFrame:
    rows = [(0, "done", 31.0, np.nan), (1, "diverged", np.nan, 44.0), (2, "failed", np.nan, np.nan),
            (3, "diverged", np.nan, np.nan), (4, "running", np.nan, np.nan), (6, "done", 33.0, np.nan)]
    return pd.DataFrame(rows, columns=["seed", "status", "error", "error_before_divergence"])


def test_replicate_values_by_each_diverged_convention():
    stemsweep = sq.replicate_values(group_runs(), "seed")
    assert stemsweep.values[[0, 1, 3, 6]].tolist() == [31.0, np.inf, np.inf, 33.0]
    assert np.isnan(stemsweep.values[[2, 4, 5]]).all()
    assert stemsweep.left_out == {2: "failed"} and stemsweep.pending == (4, 5)
    pycls = sq.replicate_values(group_runs(), "seed", diverged="pycls")
    assert pycls.values[[0, 1, 6]].tolist() == [31.0, 44.0, 33.0] and np.isnan(pycls.values[3])
    assert pycls.left_out == {2: "failed", 3: "diverged without an error"} and pycls.pending == (4, 5)


def test_replicate_values_refuses_what_it_cannot_number():
    runs = group_runs()
    with pytest.raises(ConfigError, match="diverged='both' is not allowed"):
        sq.replicate_values(runs, "seed", diverged="both")
    with pytest.raises(ConfigError, match="diverged='pycls' counts each diverged run at its error before"):
        sq.replicate_values(runs.drop(columns="error_before_divergence"), "seed", diverged="pycls")
    with pytest.raises(ConfigError, match="replicate='draw' is not a column of the runs"):
        sq.replicate_values(runs, "draw")
    with pytest.raises(ConfigError, match="seed=6 has more than one run in the group"):
        sq.replicate_values(pd.concat([runs, runs.tail(1)], ignore_index=True), "seed")
    with pytest.raises(ConfigError, match="seed=-1 is not allowed"):
        sq.replicate_values(runs.assign(seed=[0, 1, 2, 3, 4, -1]), "seed")


# --- tuning: expected best against brute force ---------------------------------------------------------

@pytest.mark.parametrize("errors", [[31.0, 29.5, 33.0, 29.5, 40.0], [35.0, np.inf, 30.0, np.inf], [np.inf, 32.0]])
def test_expected_best_against_every_draw_enumerated(errors):
    for n in (1, 2, 3, 4):
        mins = [min(pick) for pick in itertools.product(errors, repeat=n)]
        finished = [m for m in mins if np.isfinite(m)]  # given at least one finished draw
        assert sq.expected_best(errors, n) == pytest.approx(np.mean(finished))
    for more in (1, 3):
        enumerated = {n: np.mean([m for m in (min(p) for p in itertools.product(errors, repeat=n)) if np.isfinite(m)])
                      for n in (len(errors), len(errors) + more)}
        assert sq.expected_gain(errors, more) == pytest.approx(enumerated[len(errors)] - enumerated[len(errors) + more])


def test_expected_gain_and_when_tuning_stops():
    assert sq.expected_best([30.0], 5) == 30.0 and sq.expected_gain([30.0, 30.0], 8) == 0.0
    assert sq.expected_best([np.inf, np.inf], 3) == np.inf and sq.expected_gain([np.inf], 1) == np.inf
    assert sq.expected_best([31.0, np.nan, 33.0], 1) == pytest.approx(32.0)  # NaN: left out
    spread = np.linspace(20, 60, 9)
    assert sq.expected_gain(spread, 8) > 1.0 and not sq.tuning_settled(spread, 8, 1.0)
    assert sq.tuning_settled(np.r_[20.0, np.full(30, 20.05)], 8, 0.1)
    with pytest.raises(ConfigError, match="epsilon=0 is not allowed"):
        sq.tuning_settled(spread, 8, 0)
    with pytest.raises(ConfigError, match="no draw's error to tune from"):
        sq.expected_best([np.nan], 2)


# --- the error rate under the null ------------------------------------------------------------------------

def bowl_pair(rng: np.random.Generator, size: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired lr/wd draws of two models with one error surface, B's `shift` points higher: a null."""
    u = rng.random((size, 2))
    surface = 40 * ((u - (0.55, 0.45)) ** 2).sum(axis=1)
    a, b = 30 + surface + 0.5 * rng.standard_normal(size), 30 + shift + surface + 0.5 * rng.standard_normal(size)
    a[u[:, 0] > 0.9] = b[u[:, 0] > 0.9] = np.inf
    return a, b


@pytest.mark.parametrize(("spec", "draw"), [
    (lrwd("lrwd_edf"), lambda rng: bowl_pair(rng, 64, 10.0)),
    (lrwd("lrwd_spread"), lambda rng: bowl_pair(rng, 64, 0.0)),
    (metric(max_replicates=40), lambda rng: (rng.standard_t(3, 40), rng.standard_t(3, 40))),
    (metric(method="normal", max_replicates=40), lambda rng: (rng.normal(0, 1, 40), rng.normal(0, 1, 40))),
], ids=["lrwd_edf", "lrwd_spread", "seeds", "seeds_normal"])
def test_a_null_study_declares_differences_at_most_at_alpha(spec, draw):
    # At α = 0.2 and up to 40 seeds or 64 draws, so that a payoff not centred under the null shows in
    # 400 studies: Ville's bound is not tight (these rates are 3–9%), but d biased by 0.3 takes
    # lrwd_spread's to 49% and lrwd_edf's to 100%. Fixed seed; under a second each.
    alpha, studies = 0.2, 400
    rng = np.random.default_rng(2026)
    declared = sum(sq.decide(spec, *draw(rng), alpha).settled for _ in range(studies))
    rate, se = declared / studies, np.sqrt(alpha * (1 - alpha) / studies)
    assert rate <= alpha + 3 * se
