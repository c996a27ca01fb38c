"""The implementation of `kcnn.tune`, split by concept; import from `kcnn.tune`.

config.py   SearchConfig and the trials' training settings (no keras-tuner import)
spaces.py   the search spaces: keras-tuner HyperModels that call the kcnn builders
tuners.py   keras-tuner's tuners with trial records, progress, failed-trial handling
search.py   search(): data, project folder, resumption, distribution, the best model
report.py   trial records, trials.csv, the Pareto plot, the results table
"""
