"""The command line reports a typo or a missing path before it imports TensorFlow, and
prefixes with `kcnn:` only what kcnn itself logs or warns about."""

import json
import logging
import os
import subprocess
import sys
import textwrap

from kcnn.cli import _LogFormat

# Each: the command line, and what its error says.
REFUSED = [
    (["train", "resnet19"], "kcnn train: error: Unknown model. Did you mean 'resnet18'"),
    (["train", "RESNET18"], "kcnn train: error: Unknown model. Model names are lowercase: use 'resnet18'. Received: name='RESNET18'"),
    (["train", "--data", "no/such/folder"], "there is no folder or file at that path. Received: --data='no/such/folder'"),
    (["train", "--data", "missing.npz"], "Received: --data='missing.npz'"),
    (["tune", "--data", "./nowhere"], "kcnn tune: error: Expected 'digits', a TFDS name"),
    (["evaluate", "no_run"], "kcnn evaluate: error: Expected a run folder or a .keras file; there is nothing at that path. Received: path='no_run'"),
    (["predict", "RUN", "missing.png"], "Expected an image file or a folder of images; there is nothing at that path. Received: images='missing.png'"),
    (["fine-tune", "resnet19", "--weights", "imagenet", "--data", "digits"], "kcnn fine-tune: error: Unknown model."),
    (["fine-tune", "no_run", "--data", "digits"], "Received: path='no_run'"),
    (["export", "no_run", "--output", "model.onnx"], "kcnn export: error: Expected a run folder or a .keras file"),
    (["explain", "RUN", "missing.png", "--output", "x.png"], "kcnn explain: error: Expected an image file; there is nothing at that path. Received: image='missing.png'"),
    (["summary", "vgg17"], "kcnn summary: error: Unknown model. Did you mean 'vgg19', 'vgg16'"),
]

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from kcnn.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        results.append([code, err.getvalue()])
    print(json.dumps({"results": results, "tensorflow": "tensorflow" in sys.modules}))
    """
)


def test_typos_and_missing_paths_are_refused_before_tensorflow_is_imported(tmp_path):
    (tmp_path / "RUN").mkdir()  # an existing "run folder": the next argument is the one refused
    commands = [argv for argv, _ in REFUSED]
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(commands)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    for (argv, expected), (code, err) in zip(REFUSED, report["results"], strict=True):
        assert code == 2 and expected in err, (argv, err)
    assert not report["tensorflow"]


def test_only_kcnns_own_warnings_and_log_lines_get_its_prefix():
    script = textwrap.dedent(
        """
        import warnings
        import kcnn.cli
        warnings.formatwarning = kcnn.cli._format_warning
        warnings.simplefilter("always")
        code = compile("import warnings; warnings.warn('the message', stacklevel=2)", "somewhere.py", "exec")
        exec(code, {"__name__": "kcnn.data.folder_source"})
        exec(code, {"__name__": "tensorflow.python.eager.polymorphic_function"})
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = completed.stderr.splitlines()
    assert lines[0] == "kcnn: warning: the message"
    assert lines[1].endswith("UserWarning: the message") and not lines[1].startswith("kcnn")
    formatter = _LogFormat("%(message)s")

    def line(name, level, message):
        return formatter.format(logging.LogRecord(name, level, __file__, 1, message, None, None))

    assert line("kcnn", logging.INFO, "training from epoch 1") == "kcnn: training from epoch 1"
    assert line("tensorflow", logging.WARNING, "5 out of the last 5 calls to <function f> triggered tf.function retracing.") == (
        "tensorflow: warning: 5 out of the last 5 calls to <function f> triggered tf.function retracing."
    )


def test_the_command_line_drops_tensorflows_retracing_warning_about_keras_steps_only():
    from kcnn.cli import _handler

    def kept(name, message, *args):
        return _handler().filter(logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None))

    # TensorFlow's own format and arguments (polymorphic_function.py), about a Keras step
    # function, which Keras makes per model: dropped.
    template = "%d out of the last %d calls to %s triggered tf.function retracing. Tracing is expensive"
    step = "<function TensorFlowTrainer.make_predict_function.<locals>.one_step_on_data_distributed at 0x7f336adf6ac0>"
    assert not kept("tensorflow", template, 5, 19, step)
    assert not kept("tensorflow", template, 6, 6, step.replace("predict", "train").replace("one_step_on_data_distributed", "multi_step_on_iterator"))
    # Any other function's, another warning, or another logger's: printed.
    assert kept("tensorflow", template, 5, 5, "<function saliency.<locals>.input_gradients at 0x7f33690d6980>")
    assert kept("tensorflow", "Your input ran out of data")
    assert kept("kcnn", template, 5, 19, step)
