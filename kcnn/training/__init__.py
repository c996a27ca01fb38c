"""The implementation of `kcnn.train`, split by concept; import from `kcnn.train`.

    config.py    TrainConfig, what "auto" resolves to on this device, dtype policies
    compile.py   optimizer, schedule, loss, compile (shared with the tuner)
    run.py       the run folder and the callbacks that write it
    loop.py      fit, evaluate, predict, load
    transfer.py  fine_tune, feature_extractor, nearest_neighbours
"""
