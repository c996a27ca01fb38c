"""Where does `model.fit` lose time against a `train_on_batch` loop on a small CPU?

keras.applications ResNet50, 64x64, batch 32, one model, every variant alternately in
one process (A B C ... A B C ...). For each run it records images/s (wall clock), the
process's CPU milliseconds per image (less sensitive to other processes than wall
time) and which threads spent that CPU (from /proc/self/task, Linux only).

    python benchmarks/fit_gap.py                      # all variants, 3 rounds
    python benchmarks/fit_gap.py tob fit_ds fit_ds_lean --rounds 4 --steps 10
    python benchmarks/fit_gap.py --intra 2 --inter 1  # process-wide thread pools

Variants:
    tob              model.train_on_batch on NumPy batches (the reference point)
    fit_np           model.fit(x, y) on NumPy arrays
    fit_ds           model.fit on from_tensor_slices(...).batch().prefetch(AUTOTUNE)
    fit_ds_map       fit_ds plus a parallel map (cast/normalize), as kcnn.data does
    fit_ds_lean      fit_ds_map with tf.data threading options: private_threadpool_size=1,
                     max_intra_op_parallelism=1 (per dataset; fine in library code)
    fit_ds_noauto    fit_ds_map with autotune off and prefetch(1)
    fit_const        model.fit on one constant batch repeated (no pipeline work at all)
    fit_spe4         fit_ds_map with steps_per_execution=4 (a second model)
    kcnn_pipe        model.fit on kcnn.data's training pipeline (in-memory uint8, parallel
                     map, prefetch AUTOTUNE; --augment adds its augmentation)
    kcnn_pipe_lean   kcnn_pipe with the tf.data threading options of fit_ds_lean
    kcnn_pipe_noauto kcnn_pipe with autotune off (map parallelism and prefetch fixed at 1)
    fit_const_sync   fit_const with tf.data's prefetch injection off: no background thread,
                     the batch is produced inside the step by the thread that asks for it
    fit_const_fed    fit_const with FeedTensors: each step gets eager tensors (next(iterator)
                     in Python) instead of reading the iterator inside the compiled step
    kcnn_pipe_fed    kcnn_pipe with FeedTensors
    fit_const_wait   fit_const with a callback reading the loss after every step (waits for
                     the step like train_on_batch does; kcnn's TerminateOnNonFinite does too)
    tob_kcnn         model.train_on_batch on batches read eagerly from kcnn.data's pipeline
    fn_iter          model.train_function(iterator) in a Python loop: fit's compiled step
                     (iterator read inside the graph) without fit's loop and callbacks
    fn_tensors       model.train_function on a batch of tensors: train_on_batch's
                     compiled step without its Python wrapper

Results go to benchmarks/results/fit_gap.json (or --output).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = (
    "tob",
    "fit_np",
    "fit_ds",
    "fit_ds_map",
    "fit_ds_lean",
    "fit_ds_noauto",
    "fit_const",
    "fit_spe4",
    "kcnn_pipe",
    "kcnn_pipe_lean",
    "kcnn_pipe_noauto",
    "fn_iter",
    "fn_tensors",
    "fit_const_sync",
    "fit_const_fed",
    "kcnn_pipe_fed",
    "fit_const_wait",
    "tob_kcnn",
)


def feed_tensors_callback():
    """A callback making `model.fit` feed each compiled step eager tensors.

    Keras' TensorFlow trainer reads `tf.data` batches inside the compiled step when it
    is given an iterator; given any other iterable it calls the step once per batch with
    tensors (the `train_on_batch` path). Keras builds `model.train_function` before
    `on_train_begin`, so the callback can wrap it there.
    """
    import itertools

    import keras

    class FeedTensors(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            model = self.model
            compiled = model.train_function
            if getattr(compiled, "_feeds_tensors", False):
                return

            def train_function(iterator):
                batches = list(itertools.islice(iterator, model.steps_per_execution))
                if not batches:
                    raise StopIteration
                return compiled(iter(batches))

            train_function._feeds_tensors = True
            model.train_function = train_function

    return FeedTensors()


def thread_cpu():
    """{thread id: (name, CPU seconds)} of this process."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def thread_delta(before, after):
    """CPU seconds per thread-name group between two `thread_cpu` snapshots."""
    groups = collections.Counter()
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if spent > 0:
            groups[re.sub(r"[-_/]?\d+$", "", name)] += spent
    return {name: round(seconds, 2) for name, seconds in groups.most_common()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--intra", type=int, default=0, help="tf.config.threading intra-op threads (0: default)")
    parser.add_argument("--inter", type=int, default=0, help="tf.config.threading inter-op threads (0: default)")
    parser.add_argument("--model", default="ResNet50", help="keras.applications model")
    parser.add_argument("--augment", default=None, choices=("shift", "flip"), help="kcnn_pipe*: kcnn.data augmentation")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "fit_gap.json"))
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    from harness import describe_machine

    from kcnn._files import write_json

    batch, size, steps = args.batch_size, args.input_size, args.steps
    rng = np.random.default_rng(0)
    pool = 8  # distinct batches
    x8 = rng.integers(0, 256, (batch * pool, size, size, 3), dtype=np.uint8)
    x = x8.astype(np.float32) / 255.0
    y = rng.integers(0, 10, batch * pool).astype(np.int32)

    def make(spe=1):
        model = getattr(keras.applications, args.model)(weights=None, input_shape=(size, size, 3), classes=10)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=spe)
        return model

    model = make()
    model4 = make(4) if "fit_spe4" in args.variants else None

    def sliced(with_map, options=None, prefetch=tf.data.AUTOTUNE):
        source = x8 if with_map else x
        ds = tf.data.Dataset.from_tensor_slices((source, y)).repeat().batch(batch)
        if with_map:
            ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.prefetch(prefetch)
        return ds.with_options(options) if options else ds

    lean = tf.data.Options()
    lean.threading.private_threadpool_size = 1
    lean.threading.max_intra_op_parallelism = 1
    noauto = tf.data.Options()
    noauto.autotune.enabled = False

    def fit_on(make_ds, which=None, callbacks=()):
        def run():
            (which or model).fit(make_ds(), epochs=1, steps_per_epoch=steps, verbose=0, callbacks=list(callbacks))

        return run

    fed = [feed_tensors_callback()]

    class Wait(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])

    kcnn_iterator = []

    def tob_kcnn():
        if not kcnn_iterator:
            kcnn_iterator.append(iter(kcnn_train))
        for _ in range(steps):
            images, labels = next(kcnn_iterator[0])
            model.train_on_batch(images, labels)

    def tob():
        for i in range(steps):
            j = (i % pool) * batch
            model.train_on_batch(x[j : j + batch], y[j : j + batch])

    def fit_np():
        model.fit(x[: batch * steps] if steps <= pool else np.resize(x, (batch * steps, *x.shape[1:])),
                  y[: batch * steps] if steps <= pool else np.resize(y, batch * steps),
                  batch_size=batch, epochs=1, verbose=0)

    const = tf.data.Dataset.from_tensors((x[:batch], y[:batch])).repeat()

    def fn_iter():
        model.make_train_function()
        iterator = iter(const)
        for _ in range(steps):
            logs = model.train_function(iterator)
        float(logs["loss"])

    tensors = (tf.constant(x[:batch]), tf.constant(y[:batch]), None)

    def fn_tensors():
        model.make_train_function()
        for _ in range(steps):
            logs = model.train_function([tensors])
        float(logs["loss"])

    from kcnn import data as kdata

    kcnn_train = kdata.load((x8, y), batch_size=batch, validation_split=0, test_split=0, augment=args.augment or False).train.repeat()
    sync = tf.data.Options()
    sync.experimental_optimization.inject_prefetch = False
    fixed = tf.data.Options()
    fixed.autotune.enabled = False  # AUTOTUNE parallelism and buffer sizes then default to 1
    runs = {
        "tob": tob,
        "fit_np": fit_np,
        "fit_ds": fit_on(lambda: sliced(False)),
        "fit_ds_map": fit_on(lambda: sliced(True)),
        "fit_ds_lean": fit_on(lambda: sliced(True, lean)),
        "fit_ds_noauto": fit_on(lambda: sliced(True, noauto, 1)),
        "fit_const": fit_on(lambda: const),
        "fit_spe4": fit_on(lambda: sliced(True), model4),
        "kcnn_pipe": fit_on(lambda: kcnn_train),
        "kcnn_pipe_lean": fit_on(lambda: kcnn_train.with_options(lean)),
        "kcnn_pipe_noauto": fit_on(lambda: kcnn_train.with_options(fixed)),
        "fit_const_sync": fit_on(lambda: const.with_options(sync)),
        "fit_const_fed": fit_on(lambda: const, callbacks=fed),
        "kcnn_pipe_fed": fit_on(lambda: kcnn_train, callbacks=fed),
        "fit_const_wait": fit_on(lambda: const, callbacks=[Wait()]),
        "tob_kcnn": tob_kcnn,
        "fn_iter": fn_iter,
        "fn_tensors": fn_tensors,
    }
    chosen = list(dict.fromkeys(args.variants))
    for name in chosen:  # warm-up: tracing
        runs[name]()
    record = {name: [] for name in chosen}
    for r in range(args.rounds):
        for name in chosen:
            threads = thread_cpu()
            wall, cpu = time.perf_counter(), time.process_time()
            runs[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            record[name].append(
                {
                    "images_per_second": batch * steps / wall,
                    "cpu_ms_per_image": 1e3 * cpu / (batch * steps),
                    "threads_cpu_seconds": thread_delta(threads, thread_cpu()),
                    "load": round(os.getloadavg()[0], 2),
                }
            )
        print(f"round {r}: " + ", ".join(f"{n} {record[n][-1]['images_per_second']:.1f} img/s "
                                         f"{record[n][-1]['cpu_ms_per_image']:.1f} cpu-ms/img" for n in chosen), flush=True)
    reference = chosen[0]
    summary = {}
    for name in chosen:
        ratio = [a["images_per_second"] / b["images_per_second"] for a, b in zip(record[name], record[reference])]
        summary[name] = {
            "images_per_second": statistics.median(r["images_per_second"] for r in record[name]),
            "cpu_ms_per_image": statistics.median(r["cpu_ms_per_image"] for r in record[name]),
            f"ratio_to_{reference}": {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)},
        }
        print(f"{name:14s} {summary[name]['images_per_second']:7.1f} img/s  {summary[name]['cpu_ms_per_image']:6.1f} cpu-ms/img  "
              f"x{summary[name][f'ratio_to_{reference}']['median']:.2f} [{min(ratio):.2f}-{max(ratio):.2f}] vs {reference}")
    result = {
        "benchmark": "fit_gap",
        "command": "python benchmarks/fit_gap.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "model": args.model,
            "batch_size": batch,
            "input_size": size,
            "steps": steps,
            "rounds": args.rounds,
            "intra": args.intra,
            "inter": args.inter,
            "augment": args.augment,
        },
        "machine": describe_machine(),
        "summary": summary,
        "runs": record,
    }
    write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
