"""Hyperparameter search over kcnn models with keras-tuner.

    from kcnn import tune
    result = tune.search("convnet", "digits")               # Hyperband, resumable, cost-weighted
    result.best_hyperparameters, result.path                # saved_models/tuning/convnet-digits/best/
    print(result.table())

    config = tune.SearchConfig(tuner="random", max_trials=20, max_macs=50_000_000)
    tune.search("resnet", "cifar10", config, ranges={"stem": "small", "depth": (3, 4)})

    space = tune.ConvNetSpace((32, 32, 1), 10)              # a keras_tuner.HyperModel
    model = space.build(keras_tuner.HyperParameters())      # the default configuration

Spaces call the builders (`kcnn.convnet`, `kcnn.resnet`, ...) and name their
hyperparameters after the builder arguments; trials train as `kcnn.train.fit` does. No
process-wide state is changed, except keras-tuner's chief/worker environment variables,
which a distributed search sets for its duration and restores.

The modules, one concept each:

    config.py        SearchConfig (no TensorFlow: the command line reads it for its flags)
    spaces/          the search spaces: their base, one module per space
    project.py       the project folder: its layout, settings, overwrite, distributed roles
    driver.py        search(): the tuner run, its result, the best model
    cost.py          the cost term of the score (on MACs, after MnasNet's soft constraint)
    budget.py        the time budget: durations, the account of the time used (no TensorFlow)
    stopping.py      trials stopped at an epoch boundary: the budget, the median stopping rule
    report.py        trial records, trials.csv, the Pareto plot, the results table
    selection.py     the statistics of the choices: the trials retrained, the model kept
    finish.py        the top trials retrained with the full recipe, ranked with the references
    references.py    the reference nets: the bar (as a trial), the finish's runs
    folds.py         k-fold scores on the digits of the chosen model and the references
    best.py          best/: the model kept, with the search's facts
    verdict.py       what best/ holds against each reference, as facts and lines
    runs.py          the kcnn.train run folders of the finish and the bar
    seeding.py       the seeded build of a model (Python's `random`, restored)
    _keras_tuner/    every override of keras-tuner's internals (oracles, tuners)
"""

from kcnn._lazy import lazy_exports

_EXPORTS = {
    "SearchConfig": "kcnn.tune.config",
    "search_train_config": "kcnn.tune.config",
    "TUNERS": "kcnn.tune.config",
    "SearchResult": "kcnn.tune.result",
    "search": "kcnn.tune.driver",
    "SPACES": "kcnn.tune.spaces",
    "ConvNetSpace": "kcnn.tune.spaces",
    "InceptionSpace": "kcnn.tune.spaces",
    "ResNetSpace": "kcnn.tune.spaces",
    "SearchSpace": "kcnn.tune.spaces",
    "get_space": "kcnn.tune.spaces",
    "TrialRecord": "kcnn.tune.report",
    "FinishRecord": "kcnn.tune.selection",
    "FolderInUseError": "kcnn._lock",
    "pareto_front": "kcnn.tune.report",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
