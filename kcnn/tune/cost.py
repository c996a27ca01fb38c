"""The search's cost term: a one-sided penalty above a target cost, in the form of
MnasNet's objective, on multiply-accumulates.

Tan et al. 2019 (MnasNet, eq. 2, section 3) score a model m as

    ACC(m) x (LAT(m) / T) ** w,   w = alpha if LAT(m) <= T else beta.

Their hard constraint is alpha = 0, beta = -1 (a model above the target T is all but
ruled out); their soft constraint, the one they search with, is alpha = beta = -0.07,
from the premise that a model twice as costly must be about 5% more accurate to tie
(2 ** -0.07 = 0.953): it charges a model above T and rewards one below it alike.

kcnn takes alpha = 0, beta = -0.07: the soft constraint's penalty above T, its reward
below T dropped. A model within the target is scored by its accuracy alone, one above
it pays about 5% per doubling of its cost. Below T, cost is no longer what the search
trades accuracy for: a smaller model is preferred only where the accuracies tie
(`kcnn.tune.selection`'s cheapest-within-one-standard-error rule), not paid for
being small.

Here the cost is the MACs per image (`kcnn.shapes.count_macs`: what the search can
count exactly on any machine) and T, by default, the MACs of the cheapest of the search's reference nets that
fits the data (`SearchConfig.references`: LeNet-5, 416,520 MACs on 32x32 digits), so the
search prefers what beats the hand-designed net at its cost, and pays for going above it.

With `SearchConfig.cost="latency"` the cost is instead the latency of the model's
inference path measured on this machine (`kcnn.tune.latency`: the median of timed runs,
in milliseconds per batch) and T `target_latency_ms` (by default the cheapest
reference's latency, measured alike), in the same form: MnasNet's LAT(m) is what they
measured on a phone, MACs the proxy it stands for.

A trial logs `<objective>_cost_weighted` (`CostWeighted`) next to the objective, and the
tuner ranks trials by it; a loss is divided by the factor instead (larger is worse).
An accuracy is at most 1, so a configuration whose factor is below the best score so far
cannot win whatever it learns: a random proposal above that `ceiling` is drawn again
instead of trained (the search's first trials are free: there is no best yet).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import keras

from kcnn.tune.seeding import seeded

__all__ = [
    "EXPONENT",
    "CostWeighted",
    "bounded",
    "ceiling",
    "cheapest_reference",
    "factor",
    "reference_latency",
    "resolve_latency_target",
    "resolve_target",
    "weigh",
    "weighted_name",
]

logger = logging.getLogger("kcnn")

#: The exponent of MACs / T above the target: MnasNet's beta = -0.07 (Tan et al. 2019,
#: sec. 3). Within the target the exponent is 0 (MnasNet's soft constraint has -0.07
#: there too): see the module's docstring.
EXPONENT = -0.07


def factor(macs: float | None, target: float | None) -> float:
    """(macs / target) ** EXPONENT above the target, 1 within it (or without a target or
    a count). Any cost in the target's unit: MACs, or milliseconds of latency."""
    if target is None or macs is None or macs <= target:
        return 1.0
    return (macs / target) ** EXPONENT


def weigh(value: float, macs: float | None, target: float | None, *, maximize: bool = True) -> float:
    """The score of an objective `value` at `macs`: multiplied by the factor when the
    objective is maximized (an accuracy), divided by it when minimized (a loss)."""
    weight = factor(macs, target)
    return value * weight if maximize else value / weight


def bounded(objective: str, *, maximize: bool) -> bool:
    """Whether the objective is an accuracy, maximized and at most 1: only then does a
    factor below the best score rule a configuration out (`ceiling`)."""
    return maximize and "accuracy" in objective


def ceiling(best_score: float | None, target: int | None) -> int | None:
    """The MACs above which a model scores below `best_score` even at accuracy 1
    (`target * best_score ** (1 / EXPONENT)`): a configuration that costs more cannot
    become the search's best, and is not worth a trial. None without a target or a
    positive best score."""
    if target is None or best_score is None or best_score <= 0:
        return None
    return int(target * min(best_score, 1.0) ** (1 / EXPONENT))


def weighted_name(objective: str) -> str:
    """The logged name of the weighted objective: "val_accuracy_cost_weighted"."""
    return f"{objective}_cost_weighted"


class CostWeighted(keras.callbacks.Callback):
    """Logs `<objective>_cost_weighted` at the end of each epoch: the objective weighed
    by the cost of the model trained (its MACs per image, or what `measure` says,
    found once at the start).

    It must come before the callbacks that read the logs (keras-tuner's, `History`),
    which Keras calls in order with the same logs.

    Args:
        objective: the logged quantity, e.g. "val_accuracy".
        target: the cost above which it is charged, in `measure`'s unit.
        maximize: whether the objective is maximized.
        measure: the cost of a model, `measure(model)` (a plain function: keras-tuner
            deep-copies callbacks, and would copy what a bound method refers to);
            default: its MACs per image.
    """

    def __init__(self, objective: str, target: float, *, maximize: bool = True, measure=None):
        super().__init__()
        self.objective = objective
        self.target = target
        self.maximize = maximize
        self.measure = measure
        self.cost = None

    def on_train_begin(self, logs=None):
        from kcnn import shapes

        if self.measure is None:
            self.cost = int(shapes.count_macs(self.model))  # Under a millisecond for these nets.
        else:
            self.cost = self.measure(self.model)

    @property
    def factor(self) -> float:
        """The cost factor of the model trained (1 before training begins)."""
        return factor(self.cost, self.target)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and logs.get(self.objective) is not None:
            value = weigh(float(logs[self.objective]), self.cost, self.target, maximize=self.maximize)
            logs[weighted_name(self.objective)] = value


def resolve_target(target, references: Sequence[str], input_shape, classes: int) -> tuple[int | None, str | None]:
    """(MACs, reference) of a search's target: `target` itself (an int) and None, (None,
    None) for None, or for "references" the MACs and name of the cheapest of
    `references` that builds for the input ((None, None) without references, and with a
    warning when none of them fits)."""
    if target is None or isinstance(target, int):
        return target, None
    if target != "references":
        raise ValueError(f"`target_macs` must be an int, 'references' or None. Received: target_macs={target!r}")
    cheapest = _cheapest_fitting(references, input_shape, classes, "target_macs (--target-macs)")
    if cheapest is None:
        return None, None
    name, macs = cheapest
    logger.info("search: cost charged above %d MACs, those of the reference %s", macs, name)
    return macs, name


def _cheapest_fitting(references, input_shape, classes, option):
    """`cheapest_reference`, with a warning naming `option` (the target to pass instead)
    when references were given and none fits the input."""
    cheapest = cheapest_reference(references, input_shape, classes)
    if cheapest is None and references:
        warnings.warn(
            f"No reference net fits {tuple(input_shape)} images (references: {', '.join(references)}), so the "
            f"search's score has no cost term; pass {option} to set one.",
            stacklevel=4,
        )
    return cheapest


def cheapest_reference(references: Sequence[str], input_shape, classes: int) -> tuple[str, int] | None:
    """(name, MACs) of the cheapest of the registered `references` that builds for the
    input, or None when none does."""
    from kcnn import registry, shapes

    counts = {}
    for name in references:
        try:
            with seeded(0, "target_macs", name):  # Leaves Python's `random` as it was.
                model = registry.create_model(name, input_shape=tuple(input_shape), classes=classes)
        except ValueError as error:
            if not str(error).startswith("The input is too small"):
                raise
            continue
        counts[name] = int(shapes.count_macs(model))
        del model
    if not counts:
        return None
    name = min(counts, key=counts.get)
    return name, counts[name]


def resolve_latency_target(target, references: Sequence[str], input_shape, classes: int, meter) -> tuple[float | None, str | None]:
    """(milliseconds, reference) of a latency cost term's target (`SearchConfig.cost=
    "latency"`): `target` itself and None when given, else the latency of the cheapest
    of `references` by MACs that builds for the input, measured by `meter` (a
    `kcnn.tune.latency.LatencyMeter`: cached in the project, so a resumed search has
    the same target), and its name; (None, None) without one, with a warning when
    none of them fits."""
    if target is not None:
        return float(target), None
    cheapest = _cheapest_fitting(references, input_shape, classes, "target_latency_ms (--target-latency-ms)")
    if cheapest is None:
        return None, None
    name = cheapest[0]
    milliseconds = reference_latency(name, input_shape, classes, meter).median_ms
    logger.info("search: cost charged above %.3g ms per call, the measured latency of the reference %s", milliseconds, name)
    return milliseconds, name


def reference_latency(name: str, input_shape, classes: int, meter):
    """The `kcnn.tune.latency.Latency` of the registered model `name` built for the
    input, measured by `meter` under the reference's key (its name and classes): the
    latency target's (`resolve_latency_target`) and the finish's reference run's
    (`kcnn.tune.finish.with_latency`) are one figure, measured once per project."""
    from kcnn import registry

    with seeded(0, "target_latency", name):  # Leaves Python's `random` as it was.
        model = registry.create_model(name, input_shape=tuple(input_shape), classes=classes)
    return meter.latency(model, {"reference": name, "classes": classes})
