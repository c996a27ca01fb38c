"""Hyperparameter search over kcnn models with keras-tuner.

    from kcnn import tune
    result = tune.search("convnet", "digits")               # Hyperband, resumable
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
"""

from kcnn.tuning.config import TUNERS, SearchConfig, parse_address, search_train_config
from kcnn.tuning.report import TrialRecord, format_results, pareto_front
from kcnn.tuning.search import SearchResult, search
from kcnn.tuning.spaces import SPACES, ConvNetSpace, InceptionSpace, ResNetSpace, SearchSpace, get_space
from kcnn.tuning.tuners import collect_trials

__all__ = [
    "SPACES",
    "TUNERS",
    "ConvNetSpace",
    "InceptionSpace",
    "ResNetSpace",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "TrialRecord",
    "collect_trials",
    "format_results",
    "get_space",
    "pareto_front",
    "parse_address",
    "search",
    "search_train_config",
]
