"""The PyTorch baselines, each in a process of its own (no TensorFlow in it).

Run with the Python of a PyTorch environment (never kcnn's: the package and its tests do
not need torch). Build one with

    python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy

Two commands:

    /tmp/torchenv/bin/python benchmarks/torch_baseline.py serve
        A worker for `harness.compare_models`: reads one JSON request per line on stdin
        ({"op": "setup", ...}, {"op": "train"}, {"op": "infer"}, {"op": "quit"}) and
        answers each with one JSON line on stdout ({"error": ...} when it fails).
        torchvision's model, channels-last, AdamW and cross-entropy, with
        `torch.autocast("cpu", torch.bfloat16)` when asked: PyTorch at its best on a CPU.

    /tmp/torchenv/bin/python benchmarks/torch_baseline.py lenet5 --data digits.npz --target 0.985
        Time to accuracy: a torchvision-style LeNet-5 (nn.Module, Adam, batch 32) trained
        on the arrays of digits.npz (x_train, y_train, x_test, y_test; NHWC floats in
        [0, 1]) until its test accuracy reaches --target; prints one JSON line with the
        timestamps `harness.time_to_accuracy` reads.

This file imports torch only inside the functions that train, so its argument handling
and protocol are tested without torch (tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

STARTED = time.time()  # as close to the process start as Python gets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/torch_baseline.py", description="PyTorch baselines in their own process.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="answer JSON requests on stdin (harness.compare_models' worker)")
    lenet = commands.add_parser("lenet5", help="LeNet-5 trained to a target test accuracy")
    lenet.add_argument("--data", required=True, help=".npz with x_train, y_train, x_test, y_test (NHWC, floats in [0, 1])")
    lenet.add_argument("--target", type=float, default=0.985, help="test accuracy to reach (default: 0.985)")
    lenet.add_argument("--max-epochs", type=int, default=60, help="stop here if the target is not reached (default: 60)")
    lenet.add_argument("--batch-size", type=int, default=32, help="default: 32, as Keras' fit")
    lenet.add_argument("--seed", type=int, default=0)
    lenet.add_argument("--started-at", type=float, default=None, help="time.time() when the parent started this process")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("target",):
        value = getattr(args, name, None)
        if value is not None and not 0 < value <= 1:
            print(f"benchmarks/torch_baseline.py: error: --target must be in (0, 1]. Received: {value}", file=sys.stderr)
            return 2
    if args.command == "serve":
        return serve(sys.stdin, sys.stdout)
    print(json.dumps(lenet5_time_to_accuracy(args)), flush=True)
    return 0


# ---------------------------------------------------------------------------
# The worker of compare_models


def serve(requests, replies) -> int:
    """Answers JSON requests, one per line, until {"op": "quit"} or end of input."""
    state: dict = {}
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "quit":
                return 0
            if op == "setup":
                reply = _setup(state, request)
            elif op in ("train", "infer"):
                if "model" not in state:
                    raise ValueError(f"Expected a 'setup' request before {op!r}.")
                reply = _train(state) if op == "train" else _infer(state)
            else:
                raise ValueError(f"Expected op 'setup', 'train', 'infer' or 'quit'. Received: op={op!r}")
        except Exception as error:  # every failure goes back to the parent
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def _setup(state: dict, request: dict) -> dict:
    import numpy as np
    import torch
    import torchvision

    name = request["model"]
    if not hasattr(torchvision.models, name):
        raise ValueError(f"torchvision has no model {name!r}. Received: model={name!r}")
    arrays = np.load(request["data"])
    batch_size, skip = int(request["batch_size"]), int(request.get("skip", 2))
    channels_last = bool(request.get("channels_last", True))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = getattr(torchvision.models, name)(num_classes=int(request["classes"])).to(memory_format=memory_format)
    images = torch.from_numpy(np.ascontiguousarray(arrays["x"].transpose(0, 3, 1, 2))).contiguous(memory_format=memory_format)
    labels = torch.from_numpy(arrays["y"].astype(np.int64))
    count = len(images) - len(images) % batch_size
    state.update(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=float(request.get("learning_rate", 1e-3)), weight_decay=1e-4),
        loss=torch.nn.CrossEntropyLoss(),
        batches=[(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, count, batch_size)],
        batch_size=batch_size,
        skip=skip,
        bfloat16=bool(request.get("bfloat16", False)),
    )
    if len(state["batches"]) <= skip:
        raise ValueError(f"Expected more than skip={skip} batches. Received: {len(state['batches'])} (raise the steps)")
    return {
        "ok": True,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "bfloat16": state["bfloat16"],
    }


def _autocast(state):
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if state["bfloat16"] else contextlib.nullcontext()


def _train(state: dict) -> dict:
    model, optimizer, loss_fn, skip, batch_size = (state[k] for k in ("model", "optimizer", "loss", "skip", "batch_size"))
    model.train()
    marks, cpu = [], []
    start = time.perf_counter()
    for xb, yb in state["batches"]:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(state):
            loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        marks.append(time.perf_counter())
        cpu.append(time.process_time())
    seconds = marks[-1] - marks[skip - 1]
    steps = len(marks) - skip
    return {
        "train_images_per_second": steps * batch_size / seconds,
        "step_seconds": seconds / steps,
        "train_cpu_ms_per_image": 1e3 * (cpu[-1] - cpu[skip - 1]) / (steps * batch_size),
        "fit_call_seconds": marks[-1] - start,
    }


def _infer(state: dict) -> dict:
    import torch

    model = state["model"]
    model.eval()
    with torch.inference_mode(), _autocast(state):
        model(state["batches"][0][0])
        start = time.perf_counter()
        for xb, _ in state["batches"]:
            model(xb)
    return {"inference_images_per_second": len(state["batches"]) * state["batch_size"] / (time.perf_counter() - start)}


# ---------------------------------------------------------------------------
# Time to accuracy


def lenet5_time_to_accuracy(args) -> dict:
    """Trains a LeNet-5 as PyTorch's examples write it until the test accuracy reaches
    `args.target`; returns the timestamps (time.time()) `harness.time_to_accuracy`
    reads: when the process started, when it was ready (imports and data done), and
    per epoch when its training ended, how long the test evaluation took and its
    accuracy."""
    import numpy as np
    import torch
    from torch import nn

    arrays = np.load(args.data)
    x = torch.from_numpy(np.ascontiguousarray(arrays["x_train"].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(arrays["y_train"].astype(np.int64))
    x_test = torch.from_numpy(np.ascontiguousarray(arrays["x_test"].transpose(0, 3, 1, 2)))
    y_test = torch.from_numpy(arrays["y_test"].astype(np.int64))
    classes = int(max(y.max(), y_test.max())) + 1
    ready = time.time()
    torch.manual_seed(args.seed)

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(x.shape[1], 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
            )
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes)
            )

        def forward(self, inputs):
            return self.classifier(self.features(inputs))

    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(args.seed)
    epochs = []
    for epoch in range(args.max_epochs):
        model.train()
        for index in torch.randperm(len(x), generator=generator).split(args.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[index]), y[index]).backward()
            optimizer.step()
        end = time.time()
        model.eval()
        with torch.inference_mode():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        epochs.append({"epoch": epoch + 1, "end": end, "eval_seconds": time.time() - end, "test_accuracy": accuracy})
        if accuracy >= args.target:
            break
    return {
        "side": "torch",
        "what": f"torchvision-style LeNet-5 (torch {torch.__version__}), Adam 1e-3, batch {args.batch_size}",
        "started_at": args.started_at or STARTED,
        "python_started_at": STARTED,
        "ready_at": ready,
        "target": args.target,
        "epochs": epochs,
    }


if __name__ == "__main__":
    sys.exit(main())
