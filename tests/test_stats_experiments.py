"""Statistics of the experiment runner, checked against scipy on generated inputs."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mtl_study.stats import (
    MIN_PAIRS_FOR_SIGNIFICANCE,
    compare_arms,
    format_p,
    cross_domain_matrix,
    min_achievable_p_value,
    negative_transfer,
    paired_comparison,
    rank_biserial,
    summarize,
)


def make_rows(arm_means, seeds, tasks=("a", "b"), noise=0.02, seed=0, eval_set="test", metric="macro_f1"):
    rng = np.random.default_rng(seed)
    rows = []
    for arm, per_task in arm_means.items():
        for task in tasks:
            for s in seeds:
                rows.append({"arm": arm, "seed": s, "task": task, "eval_set": eval_set, "metric": metric,
                             "value": float(per_task[task] + rng.normal(0, noise))})
    return rows


def test_summarize_matches_numpy():
    rows = make_rows({"stl": {"a": 0.5, "b": 0.6}, "mtl": {"a": 0.55, "b": 0.58}}, seeds=range(7))
    for s in summarize(rows):
        values = [r["value"] for r in rows if r["arm"] == s.arm and r["task"] == s.task]
        assert s.n == len(values) == 7
        assert s.mean == pytest.approx(np.mean(values))
        assert s.std == pytest.approx(np.std(values, ddof=1))
        assert "±" in s.formatted()


@pytest.mark.parametrize("n,shift", [(6, 0.03), (10, 0.0), (9, -0.02)])
def test_paired_comparison_equals_scipy_wilcoxon(n, shift):
    rng = np.random.default_rng(n)
    b = rng.uniform(0.4, 0.6, n)
    a = b + shift + rng.normal(0, 0.02, n)
    comp = paired_comparison(dict(enumerate(a)), dict(enumerate(b)), arm_a="mtl", arm_b="stl")
    expected = scipy_stats.wilcoxon(a, b, alternative="two-sided")
    assert comp.p_value == pytest.approx(expected.pvalue)
    assert comp.statistic == pytest.approx(expected.statistic)
    assert comp.mean_difference == pytest.approx(np.mean(a - b))
    assert comp.n_pairs == n and comp.note == ""
    # Kerby: |r| = 1 - 2 T / (n (n + 1) / 2) with T = min(W+, W-), the two-sided statistic (no ties here)
    total = n * (n + 1) / 2
    assert abs(comp.effect_size) == pytest.approx(1 - 2 * expected.statistic / total)
    assert math.copysign(1, comp.effect_size) == math.copysign(1, np.median(a - b)) or comp.effect_size == 0
    assert comp.significant == (expected.pvalue < 0.05)


def test_rank_biserial_extremes_and_ties():
    assert rank_biserial([0.1, 0.2, 0.3]) == 1.0
    assert rank_biserial([-0.1, -0.2]) == -1.0
    assert rank_biserial([0.0, 0.0]) is None
    d = np.array([0.1, -0.1, 0.2, 0.0])  # zero dropped, tie mid-ranked
    ranks = scipy_stats.rankdata(np.abs(d[d != 0]))
    expected = (ranks[d[d != 0] > 0].sum() - ranks[d[d != 0] < 0].sum()) / ranks.sum()
    assert rank_biserial(d) == pytest.approx(expected)


def test_too_few_pairs_gives_plain_statement():
    n = MIN_PAIRS_FOR_SIGNIFICANCE - 1
    a, b = {s: 0.9 + s / 100 for s in range(n)}, {s: 0.1 for s in range(n)}
    comp = paired_comparison(a, b)
    # even a perfect, consistent improvement cannot reach 0.05 with 5 pairs
    assert comp.p_value >= min_achievable_p_value(n) - 1e-12 > 0.05
    assert not comp.significant
    assert "unreachable" in comp.note and str(MIN_PAIRS_FOR_SIGNIFICANCE) in comp.note
    assert min_achievable_p_value(MIN_PAIRS_FOR_SIGNIFICANCE) < 0.05
    # the floor of the test the report runs: exact up to 50 pairs (2 / 2**n), scipy's approximation beyond
    assert min_achievable_p_value(10) == 2 / 2**10
    for n in (20, 60):
        extreme = paired_comparison({k: 1.0 + 0.01 * k for k in range(n)}, {k: 0.0 for k in range(n)})
        assert extreme.p_value == pytest.approx(min_achievable_p_value(n), rel=1e-9)


def test_identical_and_disjoint_seeds():
    same = paired_comparison({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same.p_value == 1.0 and same.effect_size is None and "identical" in same.note
    none = paired_comparison({0: 0.5}, {1: 0.5})
    assert none.n_pairs == 0 and none.p_value is None


def test_negative_transfer_table_and_worst_task():
    rows = make_rows({"stl": {"a": 0.60, "b": 0.50}, "mtl": {"a": 0.50, "b": 0.55},
                      "mtl_adapters": {"a": 0.58, "b": 0.52}}, seeds=range(8), noise=0.01)
    nt = negative_transfer(rows, baseline="stl")
    assert {(c.arm_a, c.task) for c in nt.comparisons} == {(a, t) for a in ("mtl", "mtl_adapters") for t in "ab"}
    diffs = {(c.arm_a, c.task): c.mean_difference for c in nt.comparisons}
    worst = min(diffs, key=diffs.get)
    assert (nt.worst.arm_a, nt.worst.task) == worst
    assert nt.worst.significant  # a 0.10 drop with 8 seeds and 0.01 noise
    assert "Worst degradation" in nt.summary_sentence() and worst[1] in nt.summary_sentence()
    assert {c.task for c in nt.degraded_tasks()} == {t for (_, t), d in diffs.items() if d < 0}


def test_duplicate_seed_rows_are_an_error():
    rows = make_rows({"stl": {"a": 0.5}, "mtl": {"a": 0.6}}, seeds=[0, 1], tasks=("a",))
    rows.append(dict(rows[0]))
    with pytest.raises(ValueError, match="duplicate results row"):
        compare_arms(rows, "mtl", "stl", "macro_f1")


def test_cross_domain_matrix_and_asymmetry():
    rows = []
    table = {("cc", "cc"): 0.8, ("cc", "urw"): 0.4, ("urw", "cc"): 0.6, ("urw", "urw"): 0.7}
    for (train, test), value in table.items():
        for seed in range(3):
            rows.append({"arm": "mtl", "seed": seed, "task": "n", "eval_set": test, "metric": "macro_f1",
                         "train_domain": train, "value": value + 0.01 * seed})
    m = cross_domain_matrix(rows, task="n", metric="macro_f1")
    assert m.train_domains == ["cc", "urw"] and m.test_domains == ["cc", "urw"]
    assert m.value("cc", "urw") == pytest.approx(0.41)
    (pair,) = m.asymmetry()
    assert pair["asymmetry"] == pytest.approx(table[("cc", "urw")] - table[("urw", "cc")])
    assert pair["drop_on_b"] == pytest.approx(table[("urw", "urw")] - table[("cc", "urw")])
    with pytest.raises(ValueError, match="train_domain"):
        cross_domain_matrix(rows, task="missing", metric="macro_f1")


# ------------------------------------------------------------------------------------- multiple comparisons
def test_holm_and_bh_adjustments_have_known_values():
    from mtl_study.stats import adjust_p_values

    raw = [0.01, 0.04, None, 0.03, 0.5]
    # Holm: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    assert adjust_p_values(raw, "holm") == pytest.approx([0.04, 0.09, None, 0.09, 0.5])
    # BH: p * m / rank = 0.04, 0.06, 0.0533, 0.5, made monotone from the top
    assert adjust_p_values(raw, "bh") == pytest.approx([0.04, 0.16 / 3, None, 0.16 / 3, 0.5])
    assert adjust_p_values(raw, "none") == raw
    assert adjust_p_values([0.9, 0.6], "holm") == [1.0, 1.0]  # capped at 1
    with pytest.raises(ValueError, match="unknown p-value adjustment 'bonferoni'"):
        adjust_p_values([0.1], "bonferoni")


def test_seeds_needed_follows_the_exact_wilcoxon_floor():
    from mtl_study.stats import min_adjusted_p_value, seeds_needed

    assert min_adjusted_p_value(6, 2, "holm") == pytest.approx(2 * 2 / 2**6)  # 0.0625: 6 seeds are not enough
    assert [seeds_needed(m) for m in (1, 2, 3, 6, 12)] == [6, 7, 7, 8, 9]
    assert seeds_needed(12, method="bh") == 6  # BH's best case: every test at the raw minimum
    assert seeds_needed(1, alpha=0.01) == 8


def test_a_raw_significant_result_is_not_significant_after_adjustment():
    from mtl_study.stats import comparison_family, significance_requirement

    # mtl beats stl on every one of 6 seeds on both tasks: raw p = 2/2^6 = 0.03125, Holm over 2 tests = 0.0625.
    rows = [{"arm": arm, "seed": s, "task": t, "eval_set": "test", "metric": "macro_f1",
             "value": 0.5 + (0.1 + 0.01 * s if arm == "mtl" else 0.0)} for arm in ("stl", "mtl") for s in range(6) for t in "ab"]
    family = comparison_family(rows, baseline="stl", metric="macro_f1")
    assert [c.p_value for c in family] == pytest.approx([0.03125, 0.03125])
    assert [c.adjusted_p_value for c in family] == pytest.approx([0.0625, 0.0625])
    assert not any(c.significant for c in family)
    sentence = significance_requirement(family)
    assert "2 tests" in sentence and "0.0625" in sentence and "need at least 7 seeds" in sentence
    bh = comparison_family(rows, baseline="stl", metric="macro_f1", p_adjust="bh")
    assert all(c.significant for c in bh)  # BH: both at the minimum keeps 0.03125
    nt = negative_transfer(rows, baseline="stl", family=family)
    assert nt.comparisons == family
    baseline_rows = rows + [{"arm": "baseline_majority", "seed": 0, "task": "a", "eval_set": "test",
                             "metric": "macro_f1", "value": 0.3}]
    assert comparison_family(baseline_rows, baseline="stl", metric="macro_f1") == family  # baselines never tested


def test_negative_transfer_sentence_reports_the_adjusted_p():
    rows = make_rows({"stl": {"a": 0.60, "b": 0.50}, "mtl": {"a": 0.50, "b": 0.55}}, seeds=range(8), noise=0.01)
    nt = negative_transfer(rows, baseline="stl")
    worst = nt.worst
    assert worst.task == "a" and worst.p_adjust == "holm"
    from mtl_study.stats import adjust_p_values

    expected = adjust_p_values([c.p_value for c in nt.comparisons], "holm")[nt.comparisons.index(worst)]
    assert worst.adjusted_p_value == pytest.approx(expected) and worst.adjusted_p_value > worst.p_value
    assert f"adjusted p (holm) = {format_p(worst.adjusted_p_value)}" in nt.summary_sentence()


def test_a_tied_seed_makes_a_comparison_untestable_where_it_lowers_the_reachable_p():
    from mtl_study.report import comparison_table
    from mtl_study.stats import adjust_comparisons, paired_comparison, significance_requirement

    # 6 shared seeds, 1 tied: the test ranks 5 differences, so its smallest p is 2/2^5 = 0.0625 (not 2/2^6).
    stl = {s: 0.5 for s in range(6)}
    mtl = {0: 0.5, **{s: 0.6 + 0.01 * s for s in range(1, 6)}}
    comparison = adjust_comparisons([paired_comparison(mtl, stl, arm_a="mtl", arm_b="stl", task="a", eval_set="test")])[0]
    assert comparison.n_pairs == 6 and comparison.testable_pairs == 5
    assert comparison.p_value == pytest.approx(0.0625) and not comparison.significant
    assert comparison_table([comparison]).splitlines()[-1].endswith("| untestable |")
    sentence = significance_requirement([comparison])
    assert "With 5 seed pairs that differ" in sentence and "NO result can be significant" in sentence


def test_the_worst_degradation_is_never_a_significant_gain():
    """A significant result whose ranks favour the multi-task arm is a gain even with a lower mean: a larger,
    non-significant loss elsewhere is the worst degradation."""
    from mtl_study.stats import NegativeTransfer, PairedComparison

    def comparison(task, mean, effect, p):
        return PairedComparison("mtl", "stl", task, "test", "macro_f1", 12, mean, 10.0, p, effect, p_adjust="holm",
                                adjusted_p_value=p)

    gain_in_ranks = comparison("t1", -0.005, 0.90, 0.002)
    real_loss = comparison("t2", -0.15, -0.60, 0.06)
    nt = NegativeTransfer("stl", "macro_f1", [gain_in_ranks, real_loss])
    assert nt.worst is real_loss and "mtl on t2" in nt.summary_sentence()
    significant_loss = comparison("t3", -0.01, -0.80, 0.01)
    assert NegativeTransfer("stl", "macro_f1", [gain_in_ranks, real_loss, significant_loss]).worst is significant_loss
