"""kcnn.tune.cost: a one-sided penalty on MACs above a target in the search's score
(MnasNet's soft constraint without its reward below the target), and a search ranked by
it (tiny data, a few trials)."""

import csv
import json
import math
import re
import warnings

import numpy as np
import pytest

import kcnn
from kcnn import data as kdata
from kcnn import tune
from kcnn.tune import cost, report
from kcnn.tune.selection import FinishRecord, rank, select_candidates


def test_the_factor_is_one_within_the_target_and_charges_five_percent_per_doubling_above():
    # MnasNet's eq. 2, ACC x (MACs / T) ** w, with w = beta = -0.07 above T (Tan et al. 2019,
    # sec. 3) and w = alpha = 0 within it: one-sided. MnasNet's soft constraint has alpha =
    # -0.07 too, which would reward a model at a quarter of T by 4 ** 0.07 = 1.10; here not.
    assert cost.EXPONENT == -0.07
    assert cost.factor(416_520 // 4, 416_520) == 1.0 != pytest.approx(4**0.07)
    assert cost.factor(416_520, 416_520) == cost.factor(100, 416_520) == cost.factor(10**9, None) == 1.0
    assert cost.factor(2 * 416_520, 416_520) == pytest.approx(2**-0.07) == pytest.approx(0.952638, abs=1e-6)
    assert cost.factor(14_600_000, 416_520) == pytest.approx((14_600_000 / 416_520) ** -0.07)
    # An accuracy is multiplied by it, a loss divided.
    assert cost.weigh(0.99, 4 * 416_520, 416_520) == pytest.approx(0.99 * 4**-0.07)
    assert cost.weigh(0.2, 4 * 416_520, 416_520, maximize=False) == pytest.approx(0.2 / 4**-0.07)
    assert cost.weigh(0.5, None, 416_520) == 0.5
    assert cost.weighted_name("val_accuracy") == "val_accuracy_cost_weighted"


def test_the_callback_logs_the_weighted_objective_for_the_models_macs():
    model = kcnn.lenet5(input_shape=(32, 32, 1), classes=10)  # 416,520 MACs
    callback = cost.CostWeighted("val_accuracy", 416_520 // 4, maximize=True)
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.factor == pytest.approx(4**-0.07)
    logs = {"val_accuracy": 0.9, "loss": 0.3}
    callback.on_epoch_end(0, logs)
    assert logs == {"val_accuracy": 0.9, "loss": 0.3, "val_accuracy_cost_weighted": pytest.approx(0.9 * 4**-0.07)}
    loss = cost.CostWeighted("val_loss", 416_520 // 4, maximize=False)
    loss.set_model(model)
    loss.on_train_begin()
    logs = {"val_loss": 0.2}
    loss.on_epoch_end(0, logs)
    assert logs["val_loss_cost_weighted"] == pytest.approx(0.2 / 4**-0.07)
    logs = {"loss": 0.2}  # No validation this epoch: nothing to weigh.
    loss.on_epoch_end(1, logs)
    assert logs == {"loss": 0.2}


def test_the_target_is_the_cheapest_reference_that_fits_the_data():
    # LeNet-5 on 32x32 digits: 416,520 MACs (LeCun et al. 1998), the ConvNet's are more.
    assert cost.resolve_target("references", ("convnet", "lenet5"), (32, 32, 1), 10) == (416_520, "lenet5")
    assert cost.resolve_target(1234, ("lenet5",), (32, 32, 1), 10) == (1234, None)
    assert cost.resolve_target(None, ("lenet5",), (32, 32, 1), 10) == (None, None)
    assert cost.resolve_target("references", (), (32, 32, 1), 10) == (None, None)
    # 16x16 is too small for LeNet-5 (32x32), not for the ConvNet: the ConvNet sets it.
    convnet = cost.resolve_target("references", ("lenet5", "convnet"), (16, 16, 1), 4)
    from kcnn import shapes

    assert convnet == (shapes.count_macs(kcnn.convnet(input_shape=(16, 16, 1), classes=4)), "convnet")
    with pytest.warns(UserWarning, match=r"No reference net fits \(8, 8, 1\) images \(references: lenet5\)"):
        assert cost.resolve_target("references", ("lenet5",), (8, 8, 1), 4) == (None, None)
    with pytest.raises(ValueError, match="must be an int, 'references' or None. Received: target_macs='cheap'"):
        cost.resolve_target("cheap", ("lenet5",), (32, 32, 1), 10)


def test_the_config_takes_a_target_in_macs_references_or_none():
    assert tune.SearchConfig().target_macs == "references"
    assert tune.SearchConfig(target_macs=840_000).target_macs == 840_000
    assert tune.SearchConfig(target_macs="none").target_macs is None
    for wrong in (0, -5, 1.5, True, "lenet5"):
        with pytest.raises(ValueError, match=r"`target_macs` must be an int >= 1, 'references' or None. Received: target_macs="):
            tune.SearchConfig(target_macs=wrong)


def test_the_finish_ranks_and_selects_by_the_weighted_score():
    target = 400_000
    # 100% at 16x the target (score 100 x 16**-0.07 = 82.4%) against 98.88% within it.
    records = [
        FinishRecord("0001", "trial", validation=1.0, validation_examples=179, macs=16 * target, params=50_000),
        FinishRecord("0002", "trial", validation=0.9888, validation_examples=179, macs=target, params=40_000),
    ]
    ranked = rank(records, target)
    assert [(r.name, r.rank) for r in ranked] == [("0002", 1), ("0001", 2)]
    assert ranked[1].score == pytest.approx(16**-0.07) and ranked[0].score == 0.9888
    # Without the cost term 100% is first: two images (1.12 points) above 98.88%, beyond
    # the 1.00 points of the difference's standard error.
    assert [r.name for r in rank(records)] == ["0001", "0002"]

    def trial(number, value, macs):
        score = cost.weigh(value, macs, target)
        return tune.TrialRecord(f"{number:04d}", number + 1, None, "COMPLETED", score=score, metric=value, macs=macs)

    # Search scores: the top one's standard error is scaled by its factor.
    ranked = sorted([trial(0, 1.0, 16 * target), trial(1, 0.9, target), trial(2, 0.83, target // 4)], key=lambda r: -r.score)
    assert [r.trial_id for r in ranked] == ["0001", "0002", "0000"]
    assert [r.trial_id for r in select_candidates(ranked, 2, 179)] == ["0001", "0002"]


def _digits_like(n=96, size=32, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    return kdata.load((x, np.arange(n) % classes), batch_size=32, validation_split=0.25, test_split=0.25, seed=seed)


def test_a_search_with_a_cost_term_ranks_trials_by_the_weighted_objective(tmp_path):
    ranges = dict(depth=2, filters=(4, 8), hidden_units=8, convs_per_stage=1, strides=1, pool=True, kernel_size=(3, 5))
    target = 60_000  # Below every configuration's MACs, so each pays.
    lines = []
    result = tune.search(
        "convnet", _digits_like(), directory=tmp_path, ranges=ranges, tuner="random", max_trials=3, max_epochs=1,
        top_k=1, finish_epochs=1, seeds=1, references=None, target_macs=target, seed=5,
        on_trial=lambda r: lines.append(r.progress_line("val_accuracy")) if r.status != "RUNNING" else None,
    )  # fmt: skip
    completed = [r for r in result.trials if r.status == "COMPLETED"]
    assert len(completed) == 3
    for record in completed:
        assert record.macs > target
        assert record.score == pytest.approx(record.metric * (record.macs / target) ** -0.07, rel=1e-6)
    # The search's best is the best weighted score, and the finish ranked by it too.
    best = max(completed, key=lambda r: (r.score, -r.macs))
    assert result.best_trial == best.trial_id and result.best_score == pytest.approx(best.score)
    (retrained,) = result.retrained
    assert retrained.score == pytest.approx(retrained.validation * (retrained.macs / target) ** -0.07)
    assert result.target_macs == target
    # trials.csv: the objective's own value, then the score.
    with open(result.trials_csv, newline="") as file:
        rows = {row["trial"]: row for row in csv.DictReader(file)}
    assert list(next(iter(rows.values())))[:4] == ["trial", "status", "val_accuracy", "score"]
    for record in completed:
        row = rows[record.trial_id]
        assert (float(row["val_accuracy"]), float(row["score"])) == (record.metric, record.score)
    # The progress lines and the table show both.
    assert all(re.search(r"val_accuracy \d\.\d{4} \(score \d\.\d{4}\)", line) for line in lines), lines
    assert re.search(r"^trial +val_accuracy +score +params +MACs", result.table(), re.M)
    # The settings (search.json) and the best model's metadata record the target.
    assert json.loads((tmp_path / "search.json").read_text())["target_macs"] == target
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["search"]["target_macs"] == target and metadata["search"]["score"] == pytest.approx(best.score)


def test_without_a_cost_term_the_score_is_the_objective(tmp_path):
    ranges = dict(depth=2, filters=4, hidden_units=8, convs_per_stage=1, strides=2, pool=True, kernel_size=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune.search(
            "convnet", _digits_like(n=48), directory=tmp_path, ranges=ranges, tuner="random", max_trials=1,
            max_epochs=1, top_k=0, references=None,
        )  # fmt: skip
    assert not [w for w in caught if "reference" in str(w.message)]  # No references, no target: nothing to warn.
    (record,) = result.trials
    assert result.target_macs is None and record.score == record.metric and not record.score_note
    assert "(score" not in record.progress_line("val_accuracy")
    assert not math.isnan(record.score)
    assert report.format_results(result.trials, "val_accuracy").splitlines()[0].split()[:3] == ["trial", "val_accuracy", "params"]


def test_a_configuration_that_could_not_beat_the_best_score_even_at_full_accuracy_is_not_proposed():
    import keras_tuner

    from kcnn import shapes
    from kcnn.tune._keras_tuner.tuners import _could_win

    assert cost.ceiling(None, 416_520) is None and cost.ceiling(0.95, None) is None and cost.ceiling(0.0, 416_520) is None
    top = cost.ceiling(0.95, 416_520)
    assert top == int(416_520 * 0.95 ** (1 / -0.07)) == 866_702  # about 2.08x the target
    assert cost.factor(top, 416_520) == pytest.approx(0.95, abs=1e-6)  # 100% there just ties 0.95
    # The space's own check, with the ceiling: the default configuration at 32x32 and its MACs.
    space = tune.get_space("convnet", (32, 32, 1), 10)
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    macs = shapes.count_macs(space.build_model(space.declare(hp.copy())))
    assert space.fits(hp, ceiling=macs) and not space.fits(hp, ceiling=macs - 1) and space.fits(hp)

    # The oracle's check asks the space with the ceiling of the best completed score so far.
    class Recording:
        ceilings = []

        def fits(self, hp, *, ceiling=None):
            self.ceilings.append(ceiling)
            return True

    class Trial:
        def __init__(self, status, score):
            self.status, self.score = status, score

    class Oracle:
        trials = {}

    space, oracle = Recording(), Oracle()
    fits = _could_win(space, oracle, 416_520)
    assert fits(hp) and space.ceilings == [None]  # No trial yet: nothing to beat.
    oracle.trials = {"0000": Trial("COMPLETED", 0.9), "0001": Trial("FAILED", None), "0002": Trial("COMPLETED", 0.95)}
    oracle.trials["0003"] = Trial("RUNNING", None)
    fits(hp)
    assert space.ceilings[-1] == top
    # The reference's bar counts from the first proposal, and while no trial beats it.
    with_bar = _could_win(space, Oracle(), 416_520, bar=0.97)
    with_bar(hp)
    assert space.ceilings[-1] == cost.ceiling(0.97, 416_520)
    with_bar = _could_win(space, oracle, 416_520, bar=0.9)
    with_bar(hp)
    assert space.ceilings[-1] == top


def _quadrants(n=96, size=32, classes=4, seed=0):
    """Images whose class is the bright quadrant: LeNet-5 learns them in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, (n, size, size, 1), dtype=np.uint8)
    half = size // 2
    for image, label in zip(x, y, strict=True):
        row, column = divmod(int(label), 2)
        image[row * half : (row + 1) * half, column * half : (column + 1) * half] += 150
    return kdata.load((x, y), batch_size=32, validation_split=0.25, test_split=0.25, seed=seed)


def test_the_bar_is_the_cheapest_reference_trained_as_a_trial_and_is_kept_for_the_resumed_search(tmp_path, monkeypatch):
    from kcnn import train

    # A trial that cannot learn (learning rate 1e-7) against LeNet-5, which can.
    ranges = dict(depth=2, filters=4, hidden_units=8, convs_per_stage=1, strides=2, pool=True, kernel_size=3, learning_rate=1e-7)
    options = dict(directory=tmp_path, ranges=ranges, tuner="random", max_trials=1, max_epochs=2, top_k=0, seed=3)
    data = _quadrants()
    result = tune.search("convnet", data, references="convnet,lenet5", **options)
    assert result.target_macs == 416_016  # LeNet-5 with 4 classes, cheaper than the ConvNet
    metadata = json.loads((tmp_path / "bar" / "lenet5" / "metadata.json").read_text())
    # Trained as the trials are: their recipe, the search's epochs, scored on the objective.
    assert metadata["status"] == "completed" and metadata["config"]["epochs"] == 2
    expected = {**tune.search_train_config().to_dict(), "epochs": 2, "monitor": "val_accuracy"}
    assert {k: metadata["config"][k] for k in expected} == expected
    assert result.bar == metadata["metrics"]["validation"]["accuracy"]
    # The bar is a candidate for best/ under the same score (at the target, its accuracy) and
    # rule: no trial beat it, so best/ is LeNet-5's run, and says so.
    (trial,) = result.trials
    assert result.bar - trial.score > 0.5 and result.chosen.kind == "reference" and result.chosen.name == "lenet5"
    assert result.model.name == "lenet5" and result.best_trial == "0000"
    best = json.loads((result.path / "metadata.json").read_text())
    assert best["kind"] == "search" and best["metrics"] == metadata["metrics"]
    assert best["search"]["chosen"]["kind"] == "reference" and best["search"]["trial_id"] is None
    assert best["search"]["best_trial"]["trial_id"] == "0000" and best["search"]["best_trial"]["score"] == trial.score
    assert result.verdict().startswith("best/: the reference lenet5 (no trial beat it): validation ")
    # Resumed, the search reads the bar from its run instead of training LeNet-5 again.
    fits = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *args, **kwargs: fits.append(kwargs.get("output")) or real_fit(*args, **kwargs))
    again = tune.search("convnet", data, references="convnet,lenet5", **options)
    assert again.bar == result.bar and fits == [] and again.chosen == result.chosen
    # No bar without a cost term from the references.
    assert tune.search("convnet", data, references="lenet5", **dict(options, directory=tmp_path / "b"), target_macs=10**9).bar is None
