"""attention_aft_torch.py: the PyTorch side of bench/attention_aft.lua (the AFT family, fwd+bwd).

  /usr/bin/python3 bench/attention_aft_torch.py time THREADS MIN_TIME CASE...   -> JSON {case: s}
  /usr/bin/python3 bench/attention_aft_torch.py memory THREADS CASE T D         -> peak RSS in MB

Each case is one forward and backward (q, k, v and w require grad; the upstream gradient is
ones). The formulations are the efficient ones a PyTorch user would write, with the same
stabilising max subtractions as xt:
  aft_full:   exp(w - rowmax) (causal: -inf above the diagonal) @ [exp(k - max) v | exp(k - max)]
              in one batched GEMM, then the ratio and the sigmoid gate
  aft_local:  the same GEMM with the window applied to w (0 outside, as AFT-local defines it)
  aft_simple: cumulative sums of exp(k - max) v and exp(k - max) (causal)
  aft_conv:   the paper's form, depth-wise F.conv2d of exp(k) v and exp(k) with exp(w) - 1, plus
              the global sums
Timing mirrors bench/timer.lua: two warm-up calls, then the best of 5 batches.
"""
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F


def aft_bias(q, k, v, w, causal, window=None):
    T = q.shape[1]
    if window is not None:
        t = torch.arange(T)
        diff = t[:, None] - t[None, :]
        inside = (diff >= 0) & (diff < window) if causal else diff.abs() < window
        w = torch.where(inside, w, torch.zeros((), dtype=w.dtype))
    if causal:
        w = w.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    p = torch.exp(w - w.amax(1, keepdim=True))
    e = torch.exp(k - k.amax(1, keepdim=True))
    nd = torch.matmul(p, torch.cat([e * v, e], dim=-1))
    num, den = nd.chunk(2, dim=-1)
    return torch.sigmoid(q) * num / den


def aft_simple(q, k, v, causal):
    e = torch.exp(k - k.amax(1, keepdim=True))
    if causal:
        num, den = torch.cumsum(e * v, 1), torch.cumsum(e, 1)
    else:
        num, den = (e * v).sum(1, keepdim=True), e.sum(1, keepdim=True)
    return torch.sigmoid(q) * num / den


def aft_conv(q, k, v, w):
    C, heads, kh, kw = q.shape[1], w.shape[0], w.shape[1], w.shape[2]
    cg = C // heads
    e = torch.exp(k - k.amax((2, 3), keepdim=True))
    ev = e.repeat_interleave(cg, dim=1) * v
    f = torch.exp(w) - 1
    pad = (kh // 2, kw // 2)
    num = F.conv2d(ev, f.repeat_interleave(cg, dim=0)[:, None], padding=pad, groups=C)
    num = num + ev.sum((2, 3), keepdim=True)
    den = F.conv2d(e, f[:, None], padding=pad, groups=heads) + e.sum((2, 3), keepdim=True)
    return torch.sigmoid(q) * num / den.repeat_interleave(cg, dim=1)


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


def make(case, T=None, D=None):
    """(inputs, forward) for a case; T and D override the sequence shape (memory runs)."""
    if case == "aft_full":
        B, T, D = (8, 1024, 256) if T is None else (1, T, D)
        ins = [leaf(B, T, D), leaf(B, T, D), leaf(B, T, D), leaf(T, T, scale=0.1)]
        return ins, lambda q, k, v, w: aft_bias(q, k, v, w, True)
    if case == "aft_local":
        B, T, D = 4, 3072, 128
        ins = [leaf(B, T, D), leaf(B, T, D), leaf(B, T, D), leaf(T, T, scale=0.1)]
        return ins, lambda q, k, v, w: aft_bias(q, k, v, w, True, window=256)
    if case == "aft_simple":
        B, T, D = (8, 4096, 256) if T is None else (1, T, D)
        ins = [leaf(B, T, D), leaf(B, T, D), leaf(B, T, D)]
        return ins, lambda q, k, v: aft_simple(q, k, v, True)
    if case == "aft_conv":
        ins = [leaf(64, 128, 16, 16), leaf(64, 8, 16, 16), leaf(64, 128, 16, 16),
               leaf(8, 3, 3, scale=0.5)]
        return ins, aft_conv
    raise SystemExit(f"attention_aft_torch.py: unknown case {case}")


def step_fn(ins, fwd):
    def step():
        for t in ins:
            t.grad = None
        y = fwd(*ins)
        y.backward(torch.ones_like(y))
    return step


def time_fn(fn, min_time):
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
    mode, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if mode == "time":
        min_time = float(sys.argv[3])
        out = {}
        for case in sys.argv[4:]:
            out[case] = time_fn(step_fn(*make(case)), min_time)
        json.dump(out, sys.stdout)
    elif mode == "memory":
        case, T, D = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        step_fn(*make(case, T, D))()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    else:
        raise SystemExit("usage: attention_aft_torch.py time THREADS MIN_TIME CASE... | "
                         "memory THREADS CASE T D")


if __name__ == "__main__":
    main()
