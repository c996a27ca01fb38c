from kcnn.cli import main


def test_list_prints_the_model_table(capsys):
    assert main(["list", "lenet*"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "1998" in out and "61,706" in out and "LeCun" in out


def test_list_names_only_and_unknown_pattern(capsys):
    assert main(["list", "vgg1[69]", "--names-only"]) == 0
    assert capsys.readouterr().out.split() == ["vgg16", "vgg19"]
    assert main(["list", "nothing*"]) == 2
    assert "Received: pattern='nothing*'" in capsys.readouterr().err


def test_summary_traces_every_layer(capsys):
    assert main(["summary", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "conv1 (Conv2D)" in out and "55x55x96" in out and "pool5" in out
    assert "Total params: 60,965,224" in out


def test_summary_refuses_a_too_small_input(capsys):
    assert main(["summary", "alexnet", "--input-size", "40"]) == 2
    assert "at least 67x67" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: kcnn" in capsys.readouterr().out
