"""Runs the benchmark suite, one `benchmarks/bench.py` process per benchmark, and writes
benchmarks/results.json and the results table of benchmarks/README.md.

    python benchmarks/run.py                       # the whole suite (about 15-25 min on 2 cores)
    python benchmarks/run.py lenet5_digits         # one benchmark; the others keep their last results
    python benchmarks/run.py --table-only          # rebuild README's table from results/*.json

Each benchmark runs kcnn and its baselines alternately; see README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(HERE, "README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"

#: name -> `bench.py` arguments. Sized to stay under ~5 minutes each on 2 loaded cores.
SUITE = {
    # kcnn (its default precision: mixed bfloat16 on a CPU with AMX / AVX-512 BF16) against
    # keras.applications in float32, the same with kcnn's precision, and torchvision at
    # its best in its own process (needs a PyTorch venv, see torch_baseline.py; else "skipped").
    "resnet50_64": [
        "resnet50", "--input-size", "64", "--batch-size", "32", "--steps", "8", "--pairs", "4",
        "--baselines", "keras", "keras_same", "torch",
    ],
    # Each run a fresh process; the keras and torch sides give up after 40 epochs.
    "tta_lenet5_digits": ["tta", "--runs", "4", "--max-epochs", "40"],
    "pipeline_resnet18_32": ["pipeline", "--consumer", "resnet18", "--input-size", "32", "--batch-size", "128", "--steps", "8"],
    "pipeline_resnet50_224": ["pipeline", "--consumer", "resnet50", "--input-size", "224", "--batch-size", "16", "--steps", "3", "--pairs", "2", "--num-images", "512"],
    "gpu_resnet50_224": ["resnet50", "--gpu"],
}


def run_one(name: str, timeout: float) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    output = os.path.join(RESULTS, f"{name}.json")
    command = [sys.executable, os.path.join(HERE, "bench.py"), *SUITE[name], "--output", output]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, timeout=timeout, check=False)
    print(f"== {name}: exit {completed.returncode} after {time.perf_counter() - started:.0f} s", flush=True)


def collect() -> list[dict]:
    results = []
    for name in SUITE:
        path = os.path.join(RESULTS, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                results.append({"name": name, **json.load(f)})
    return results


def write_outputs(results: list[dict]) -> None:
    from harness import to_markdown

    from kcnn._files import write_json

    write_json(os.path.join(HERE, "results.json"), {"results": results})
    machines = {json.dumps({k: v for k, v in r["machine"].items() if k != "load_average"}, sort_keys=True) for r in results if "machine" in r}
    lines = [START, ""]
    for machine in sorted(machines):
        m = json.loads(machine)
        gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "no GPU"
        lines.append(
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {gpus}; {m['platform']}; "
            f"Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}."
        )
    lines += ["", to_markdown(results), "", "| benchmark | command | load average before -> after (1, 5, 15 min) |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | `{r.get('command', '')}` | {r.get('load_average_before')} -> {r.get('load_average_after')} |")
    lines += ["", END]
    with open(README) as f:
        text = f.read()
    if START in text and END in text:
        text = text[: text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines) + "\n"
    with open(README, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(SUITE)}")
    parser.add_argument("--table-only", action="store_true", help="only rebuild results.json and the README table")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SUITE))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(SUITE)}")
    if not args.table_only:
        for name in args.names or SUITE:
            try:
                run_one(name, args.timeout)
            except subprocess.TimeoutExpired:
                print(f"== {name}: timed out after {args.timeout:.0f} s", flush=True)
    write_outputs(collect())
    return 0


if __name__ == "__main__":
    sys.exit(main())
