"""The report's evidence sections: adjusted p-values, the convergence table, reference baselines beside the arms."""

from mtl_study.baselines import baseline_verdicts
from mtl_study.convergence import NOT_CONVERGED, convergence_rows
from mtl_study.report import ReportInputs, write_report


def rows(seeds=range(6), mtl_gain=0.1):
    return [{"arm": arm, "seed": s, "task": t, "eval_set": "test", "metric": "macro_f1", "run_id": f"{arm}__seed{s}",
             "value": 0.5 + (mtl_gain + 0.01 * s if arm == "mtl" else 0.0)}
            for arm in ("stl", "mtl") for s in seeds for t in ("a", "b")]


def summary(arm, seed, **extra):
    return {"run_id": f"{arm}__seed{seed}", "arm": arm, "seed": seed, "extra": extra}


def test_report_shows_raw_and_adjusted_p_and_decides_on_the_adjusted(tmp_path):
    text = write_report(tmp_path, rows(), ReportInputs(title="t", question="q", arm_order=["stl", "mtl"])).read_text()
    tests = text.split("## Paired tests", 1)[1].split("## Negative transfer", 1)[0]
    # raw p 2/2^6 = 0.0312 on both tasks, Holm over the 2 tests: 0.0625 -> not significant, and untestable
    assert "| mtl − stl | a | test | +0.125 | 6 | 0.0312 | 0.0625 |" in tests
    assert "| yes |" not in tests and "untestable" in tests
    assert "need at least 7 seeds" in tests
    transfer = text.split("## Negative transfer", 1)[1]
    assert "| adjusted p (holm) |" in transfer and "| 0.0312 | 0.0625 | too few seeds |" in transfer
    bh = write_report(tmp_path, rows(), ReportInputs(title="t", question="q", p_adjust="bh")).read_text()
    assert "| 0.0312 | 0.0312 | +1.00 | yes |" in bh  # BH keeps both at the minimum


def test_convergence_table_names_the_runs_still_improving(tmp_path):
    summaries = [summary("stl", 0, stopped_by="early_stopping", steps=40, best_step=20, primary_metric="macro_f1",
                         best_validation=0.7, final_validation=0.68, evaluations=8, still_improving=False),
                 summary("stl", 1, stopped_by="max_steps", steps=60, best_step=60, primary_metric="macro_f1",
                         best_validation=0.8, final_validation=0.8, evaluations=12, still_improving=True),
                 summary("mtl", 0, stopped_by="epochs", steps=30, best_step=30, primary_metric="macro_f1",
                         best_validation=0.9, final_validation=0.9, evaluations=6, still_improving=False),
                 summary("mtl", 1)]  # an older run: no keys
    table = {r["arm"]: r for r in convergence_rows(summaries, ["stl", "mtl"])}
    assert (table["stl"]["early_stopping"], table["stl"]["cap"], table["stl"]["median_steps"]) == (1, 1, "50")
    assert table["stl"]["median_best_validation"] == "0.75" and table["stl"]["still_improving"] == ["stl__seed1"]
    assert (table["mtl"]["cap"], table["mtl"]["unknown"]) == (1, 1)
    text = write_report(tmp_path, rows(), ReportInputs(title="t", question="q", run_summaries=summaries)).read_text()
    section = text.split("## Convergence", 1)[1].split("##", 1)[0]
    assert "| stl | 2 | 1 / 1 | 50 | 0.75 (macro_f1) | 1 |" in section
    assert "| mtl | 2 | 0 / 1 (1 unknown) | 30 | 0.9 (macro_f1) | 0 |" in section
    assert NOT_CONVERGED in section.lower() and "stl__seed1" in section


def test_run_summaries_are_read_from_the_runs_folder(tmp_path):
    import json

    from mtl_study.convergence import read_run_summaries

    (tmp_path / "runs" / "stl__seed0").mkdir(parents=True)
    (tmp_path / "runs" / "stl__seed0" / "run_summary.json").write_text(json.dumps(summary("stl", 0, steps=3)))
    assert read_run_summaries(tmp_path, ["stl__seed0", "mtl__seed0"]) == [summary("stl", 0, steps=3)]


def test_old_summaries_show_unknown_and_no_summaries_no_section(tmp_path):
    old = [summary("stl", 0, steps=24), summary("mtl", 0, steps=24)]
    text = write_report(tmp_path, rows(), ReportInputs(title="t", question="q", run_summaries=old)).read_text()
    section = text.split("## Convergence", 1)[1].split("##", 1)[0]
    assert "| stl | 1 | unknown | 24 | unknown (unknown) | unknown |" in section
    assert "convergence unknown" in section and NOT_CONVERGED not in section.lower()
    assert "## Convergence" not in write_report(tmp_path, rows(), ReportInputs(title="t", question="q")).read_text()


def test_baselines_are_rows_of_the_headline_table_and_mark_arms_that_do_not_beat_them(tmp_path):
    baselines = [{"arm": "baseline_majority", "seed": 0, "task": t, "eval_set": "test", "metric": "macro_f1", "value": 0.3}
                 for t in "ab"] + [
                {"arm": "baseline_tfidf_lr", "seed": 0, "task": "a", "eval_set": "test", "metric": "macro_f1", "value": 0.55},
                {"arm": "baseline_tfidf_lr", "seed": 0, "task": "b", "eval_set": "test", "metric": "macro_f1", "value": 0.4}]
    text = write_report(tmp_path, rows(), ReportInputs(title="t", question="q", arm_order=["stl", "mtl"],
                                                        baseline_rows=baselines)).read_text()
    headline = text.split("## Results", 1)[1].split("##", 1)[0]
    assert "| Arm | a (test) | b (test) |" in headline
    assert "| *baseline_tfidf_lr* | 0.550 | 0.400 |" in headline and "| *baseline_majority* | 0.300 | 0.300 |" in headline
    stl_row = next(line for line in headline.splitlines() if line.startswith("| stl |"))
    assert stl_row.count("does not beat baseline_tfidf_lr") == 1  # stl (0.50) loses to 0.55 on a, beats 0.40 on b
    assert "does not beat" not in next(line for line in headline.splitlines() if line.startswith("| mtl |"))
    assert "- a (test): stl does not beat baseline_tfidf_lr (0.550) on macro_f1." in headline
    assert "- b (test): every model arm beats every baseline on macro_f1." in headline
    # baselines never enter the paired tests, even when handed over inside the rows
    mixed = write_report(tmp_path, rows() + baselines, ReportInputs(title="t", question="q")).read_text()
    assert "baseline_" not in mixed.split("## Paired tests", 1)[1].split("## Shift", 1)[0]
    assert baseline_verdicts(rows() + baselines) == [
        "a (test): stl does not beat baseline_tfidf_lr (0.550) on macro_f1.",
        "b (test): every model arm beats every baseline on macro_f1."]


def test_runs_without_validation_are_not_counted_as_converged(tmp_path):
    no_validation = [summary("mtl", s, stopped_by="epochs", steps=400, best_step=None, primary_metric="macro_f1",
                             best_validation=None, evaluations=0, still_improving=None) for s in range(3)]
    text = write_report(tmp_path, rows(), ReportInputs(title="t", question="q", run_summaries=no_validation)).read_text()
    section = text.split("## Convergence", 1)[1].split("##", 1)[0]
    assert "| mtl | 3 | 0 / 3 | 400 | unknown (macro_f1) | unknown |" in section
    assert "cannot tell whether they were still improving" in section


def test_a_significant_loss_in_mean_but_gain_in_ranks_is_mixed_not_negative_transfer(tmp_path):
    # 11 seeds where mtl gains a little, one where it collapses: the mean is below stl, the ranks (and the
    # significant test) favour mtl
    data = []
    for s in range(12):
        data.append({"arm": "stl", "seed": s, "task": "t", "eval_set": "test", "metric": "macro_f1", "value": 0.5})
        data.append({"arm": "mtl", "seed": s, "task": "t", "eval_set": "test", "metric": "macro_f1",
                     "value": 0.51 + 0.001 * s if s < 11 else 0.0})
    text = write_report(tmp_path, data, ReportInputs(title="t", question="q", arm_order=["stl", "mtl"])).read_text()
    transfer = text.split("## Negative transfer", 1)[1]
    assert "| significant | mixed (mean lower, most seeds higher) |" in transfer
    assert "mixed direction: most seeds favour mtl" in transfer and "| negative transfer |" not in transfer


def test_a_significant_loss_on_most_seeds_hidden_by_one_seeds_gain_is_reported(tmp_path):
    # the mirror image: 11 seeds where mtl loses a little, one where it soars; the mean is above stl, the ranks
    # (and the significant test) favour stl: neither "no loss" nor "no negative transfer"
    data = []
    for s in range(12):
        data.append({"arm": "stl", "seed": s, "task": "t", "eval_set": "test", "metric": "macro_f1", "value": 0.5})
        data.append({"arm": "mtl", "seed": s, "task": "t", "eval_set": "test", "metric": "macro_f1",
                     "value": 0.49 - 0.001 * s if s < 11 else 1.0})
    text = write_report(tmp_path, data, ReportInputs(title="t", question="q", arm_order=["stl", "mtl"])).read_text()
    transfer = text.split("## Negative transfer", 1)[1]
    assert "| significant | mixed (mean higher, most seeds lower) |" in transfer
    assert "No negative transfer" not in transfer
    assert ("Worst degradation: mtl on t (test) is +0.028 macro_f1 on the mean, but below stl on most seeds" in transfer
            and "most seeds favour stl" in transfer and "pulled above" in transfer)


def test_the_seeds_of_each_arm_are_listed_when_runs_are_missing(tmp_path):
    data = [r for r in rows(seeds=range(6)) if not (r["arm"] == "mtl" and r["seed"] > 2)]
    text = write_report(tmp_path, data, ReportInputs(title="t", question="q")).read_text()
    assert "seeds per arm: mtl [0, 1, 2] (3); stl [0, 1, 2, 3, 4, 5] (6)" in text
    assert "(6 per arm)" in write_report(tmp_path, rows(), ReportInputs(title="t", question="q")).read_text()


def test_arms_of_a_condition_are_held_against_the_single_task_arm_of_that_condition(tmp_path):
    from mtl_study.stats import comparison_family, negative_transfer

    data = [{**r, "arm": f"{r['arm']}@{domain}", "value": r["value"] - (0.2 if domain == "CC" and r["arm"] == "mtl" else 0)}
            for domain in ("URW", "CC") for r in rows(seeds=range(8))]
    pairs = [("mtl@URW", "stl@URW"), ("mtl@CC", "stl@CC"), ("mtl@CC", "stl@URW")]
    family = comparison_family(data, extra_comparisons=pairs)
    nt = negative_transfer(data, family=family)
    assert {(c.arm_a, c.arm_b) for c in nt.comparisons} == {("mtl@URW", "stl@URW"), ("mtl@CC", "stl@CC")}
    assert nt.worst.arm_a == "mtl@CC"
    text = write_report(tmp_path, data, ReportInputs(title="t", question="q", extra_comparisons=pairs)).read_text()
    assert "## Negative transfer" in text and "| mtl@CC |" in text.split("## Negative transfer", 1)[1]


def test_raw_p_values_are_never_headed_or_described_as_adjusted(tmp_path):
    """--p_adjust none: the verdicts use raw p-values, and every heading and sentence must say so."""
    text = write_report(tmp_path, rows(seeds=range(8)), ReportInputs(title="t", question="q", p_adjust="none")).read_text()
    tests = text.split("## Paired tests", 1)[1].split("## Shift", 1)[0]
    assert "adjusted p" not in tests and "adjusted together" not in tests
    assert "NOT adjusted for the" in tests and "| raw p (NOT adjusted) < α |" in tests
    assert "p-values NOT adjusted (--p_adjust none)" in tests
    holm = write_report(tmp_path, rows(seeds=range(8)), ReportInputs(title="t", question="q")).read_text()
    assert "| adjusted p (holm) |" in holm and "adjusted together" in holm and "NOT adjusted" not in holm
