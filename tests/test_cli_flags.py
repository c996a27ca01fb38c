"""Every `kcnn` flag is the name of the Python parameter or field it sets, with dashes
(`--learning-rate-factor` sets `fine_tune`'s `learning_rate_factor`), and a former
name is refused with an error that names the new one."""

import argparse
import dataclasses
import inspect

import pytest

import kcnn
from kcnn import data, explain, export, shapes, train, tune
from kcnn.cli import build_parser, main
from kcnn.train.config import TrainConfig
from kcnn.train.overlays import save_segmentations
from kcnn.tune.config import SearchConfig


def _names(*things):
    names = set()
    for thing in things:
        if dataclasses.is_dataclass(thing):
            names |= {field.name for field in dataclasses.fields(thing)}
        else:
            names |= set(inspect.signature(thing).parameters)
    return names


# What each command calls: its flags are these functions' parameters and these
# dataclasses' fields (`kcnn.data.load`'s options are `data_options` in Python).
PYTHON = {
    "train": lambda: _names(train.fit, TrainConfig, data.load),
    "evaluate": lambda: _names(train.evaluate),
    "predict": lambda: _names(train.predict, save_segmentations),
    "fine-tune": lambda: _names(train.fine_tune, train.fit, TrainConfig, data.load, kcnn.resnet18),
    "tune": lambda: _names(tune.search, SearchConfig, TrainConfig, data.load),
    "export": lambda: _names(export.export),
    "explain": lambda: _names(explain.explain),
    "summary": lambda: _names(shapes.trace, kcnn.resnet18),
    "list": lambda: set(),
    "weights": lambda: set(),
}
# Flags with no Python parameter of their own, and short aliases of a flag that is one.
CLI_ONLY = {
    "-h", "--help",
    "--workers",  # `kcnn tune --workers N` starts the processes of a local cluster
    "--names-only", "--names", "--markdown",  # how `kcnn list` prints
    "--output",  # `kcnn explain`: the picture's path (`ExplainResult.save(path)`)
}
ALIASES = {"--lr": "--learning-rate"}


def _commands():
    parser = build_parser()
    [subparsers] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return {name: sub for name, sub in subparsers.choices.items() if name != "finetune"}


def _flags(parser):
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # a former name, refused
            continue
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _flags(sub)
        yield from (option for option in action.option_strings)


def test_every_flag_is_a_python_name_with_dashes():
    commands = _commands()
    assert set(commands) == set(PYTHON)
    different = []
    for name, parser in commands.items():
        python = PYTHON[name]()
        for flag in _flags(parser):
            if flag in CLI_ONLY or ALIASES.get(flag, flag)[2:].replace("-", "_") in python:
                continue
            different.append(f"kcnn {name} {flag}")
    assert not different, f"flags that are no Python name: {different}"


@pytest.mark.parametrize(
    "argv, new",
    [
        (["train", "nothing", "--dataset", "digits"], "--data"),
        (["train", "nothing", "--model-arg", "stem=small"], "--model-kwargs"),
        (["evaluate", "nothing", "--dataset", "digits"], "--data"),
        (["fine-tune", "nothing", "--data", "digits", "--lr-factor", "0.5"], "--learning-rate-factor"),
        (["fine-tune", "nothing", "--data", "digits", "--lr-factor=0.5"], "--learning-rate-factor"),
        (["tune", "--range", "depth=2", "--max-trials", "0"], "--ranges"),
        (["export", "nothing", "--output", "x.onnx", "--dataset", "digits"], "--data"),
        (["explain", "nothing", "x.png", "--output", "y.png", "--class", "7"], "--class-name"),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0],
)
def test_former_flag_names_are_refused_with_the_new_one(argv, new, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    old = next(arg for arg in argv if arg.startswith("--") and arg.split("=")[0] not in ("--data", "--output", "--max-trials"))
    assert f"error: {old.split('=')[0]} is now {new} (a flag is its Python name with dashes): use {new}" in capsys.readouterr().err


def test_lr_stays_the_short_alias_of_learning_rate():
    parser = _commands()["train"]
    assert parser.parse_args(["--lr", "0.5"]).config_learning_rate == parser.parse_args(["--learning-rate", "0.5"]).config_learning_rate == 0.5
