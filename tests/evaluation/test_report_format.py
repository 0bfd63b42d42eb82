"""Renderings of evaluate's result say what is true: p-values at the bootstrap's floor as
bounds, which model was scored, whole group sizes, the --compare verdict, intervals in
Markdown; explanations name untitled movies readably (audit issue 26)."""

import pytest

from movierec.evaluation import stats as S
from movierec.evaluation.report import _md, _sections, format_markdown, format_table, word_p_values

ROUNDS = 500
FLOOR = 2 / (ROUNDS + 1)  # the smallest p-value paired() gives with 500 rounds: 0.00399...


def _test(diff: float, p: float, better: bool) -> dict:
    return {"difference": diff, "ci": [diff - 0.01, diff + 0.01], "p_value": p, "better": better}


def _result(**extra) -> dict:
    bias = {"rmse": _test(-0.05, FLOOR, True), "ndcg@10": _test(0.02, 0.01, True)}
    cv = {"rmse": _test(-0.03, FLOOR, True), "ndcg@10": _test(0.001, 0.6, True)}
    res = {"rmse": 0.8, "ndcg@10": 0.3, "ci": {"rmse": [0.79, 0.81], "ndcg@10": [0.28, 0.32]}, "confidence": 0.95,
           "baselines": {"bias": {"rmse": 0.85, "ci": {"rmse": [0.84, 0.86]}}}, "ablations": {},
           "significance": {"bias": {"kind": "baseline", **bias, "verdict": S.verdict("bias", "baseline", bias)}},
           "compared_version": {"version": "v1", "paired": cv, "verdict": S.verdict("vs v1", "version", cv)},
           "bootstrap_rounds": ROUNDS, "split": "random", "model_version": None, "fit_seconds": 0.67}
    res.update(extra)
    return res


def test_a_p_value_at_the_bootstrap_floor_is_said_as_a_bound():
    res = _result()
    assert "p = 0.004" in res["significance"]["bias"]["verdict"]  # how stats words it
    report = _md(_sections(res, [10], {}, ("v1", [])))
    for text in (format_table(res, [10]), format_markdown(res, [10]), report):
        assert "p = 0.004" not in text
        assert "RMSE -0.0500, p < 0.004" in text and "RMSE -0.0300, p < 0.004" in text
        assert "ndcg@10 +0.0200, p = 0.010" in text  # above the floor: the value itself
    assert "| < 0.004 |" in report and "| 0.010 |" in report  # the significance table's p column


def test_the_stored_verdicts_are_reworded_so_json_and_report_agree():
    res = word_p_values(_result())  # what `movierec evaluate` does before any output
    assert res["significance"]["bias"]["verdict"] == \
        "bias: the model is better (RMSE -0.0500, p < 0.004; ndcg@10 +0.0200, p = 0.010)"
    assert res["compared_version"]["verdict"] == "vs v1: this model is better (RMSE -0.0300, p < 0.004)"
    assert res["significance"]["bias"]["verdict"] in _md(_sections(res, [10], {}, ("v1", [])))
    assert word_p_values(res) == res  # rewording twice changes nothing


def test_a_tests_own_resample_count_sets_its_floor():
    t = {"rmse": {**_test(-0.05, 2 / 301, True), "rounds": 300}}  # fewer usable resamples than asked for
    res = _result(significance={"b": {"kind": "baseline", **t, "verdict": S.verdict("b", "baseline", t)}})
    assert "RMSE -0.0500, p < 0.007" in format_table(res, [10])


def test_a_floor_that_is_a_round_number_is_an_inclusive_bound():
    t = {"rmse": _test(-0.05, 2 / 500, True)}
    res = _result(bootstrap_rounds=499, significance={"b": {"kind": "baseline", **t,
                                                            "verdict": S.verdict("b", "baseline", t)}})
    assert "RMSE -0.0500, p <= 0.004" in format_table(res, [10])


def test_without_the_rounds_p_values_are_shown_as_before():
    res = _result()
    del res["bootstrap_rounds"]
    assert "RMSE -0.0500, p = 0.004" in format_table(res, [10])


def test_the_scored_model_is_named_truthfully():
    text = format_table(_result(), [10])
    assert "model None" not in text and "None" not in text
    assert "model: fitted for this evaluation (no saved version)" in text
    assert "model: holdout model of version v3" in format_table(_result(model_version="v3"), [10])
    kfold = _result(model_version="v3", folds=[{}, {}, {}])
    assert "version v3 on the configured fold, fitted here on the other folds" in format_table(kfold, [10])
    assert "fit seconds (mean per fold): 0.67" in format_table(kfold, [10])
    header = _md(_sections(_result(), [10], {}, None))
    assert "`None`" not in header and "Model: fitted for this evaluation (no saved version)." in header


def test_k_fold_group_sizes_are_whole_numbers_and_say_so():
    groups = {"gender=F": {"users": 123.4, "n_test": 2050.6, "rmse": 0.8},
              "gender=M": {"users": 200.0, "n_test": 3000.0, "rmse": 0.82}}
    res = _result(folds=[{}, {}, {}], groups=groups, fairness={})
    md = _md(_sections(res, [10], {}, None))
    assert "| gender=F | 123 | 2051 |" in md and "| gender=M | 200 | 3000 |" in md
    assert "users (mean per fold)" in md and "123.4" not in md and "200.0" not in md
    single = _md(_sections(_result(groups=groups, fairness={}), [10], {}, None))
    assert "| group | users | n_test |" in single


def test_the_compare_verdict_is_in_table_and_markdown():
    res = _result()
    for text in (format_table(res, [10]), format_markdown(res, [10])):
        assert "vs v1: this model is better (RMSE -0.0300, p < 0.004) (paired over the same test users)" in text
    noted = _result(compared_version={"version": "v1", "paired": None, "note": "no paired test: no holdout"})
    assert "vs v1: no paired test: no holdout" in format_table(noted, [10])
    assert "vs v1: no paired test: no holdout" in format_markdown(noted, [10])


def test_markdown_keeps_the_confidence_intervals():
    md = format_markdown(_result(), [10])
    assert "| movierec | 0.8000 [0.7900, 0.8100] |" in md
    assert "0.3000 [0.2800, 0.3200]" in md and "| baseline: bias | 0.8500 [0.8400, 0.8600] |" in md
    assert "95% confidence interval" in md


@pytest.mark.parametrize("title, named", [("5", "movie 5"), ("", "movie 5"), ("Heat (1995)", "Heat (1995)")])
def test_an_explanation_names_an_untitled_movie_readably(title, named):
    from movierec.explain import _sentence

    ev = {"similar_rated": [{"movie_id": "5", "title": title, "your_rating": 3.5}], "trusted_friends": [],
          "genre_sentiment": []}
    assert _sentence(ev) == f"You rated {named} (3.5) highly and this is close to them in taste."
