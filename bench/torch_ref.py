"""torch_ref.py: time the PyTorch side of bench/run.lua's cases, in the same run.

Reads a JSON list of cases on stdin: {"name", "setup", "stmt"} with Python code over
`torch`; prints one JSON object {name: seconds_per_call}. Timing mirrors bench/timer.lua:
two warm-up calls, then the best of 5 batches of at least min_time/5 seconds.
"""
import json
import sys
import time

import torch


def time_stmt(fn, min_time):
    fn(); fn()
    t0 = time.perf_counter(); fn()
    once = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, int(min_time / 5 / once))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def main():
    threads = int(sys.argv[1])
    min_time = float(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    results = {}
    for case in json.load(sys.stdin):
        scope = {"torch": torch}
        exec(case["setup"], scope)
        exec("def _bench_fn():\n    " + case["stmt"].replace("\n", "\n    "), scope)
        results[case["name"]] = time_stmt(scope["_bench_fn"], min_time)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
