"""delight_torch.py: the PyTorch side of bench/delight.lua.

    /usr/bin/python3 bench/delight_torch.py THREADS CALLS CASE[,CASE...]

prints {case: [seconds per call, ...]} as JSON, timed as bench/delight.lua times xt: 3
warm-up calls, then CALLS calls of forward + backward, each timed on its own.

A DeLighT encoder block as the official code computes it (research/delight.md: GroupLinear
as split + transpose + torch.bmm + bias + permute for the shuffle + LayerNorm over the co
chunks + swish, the input mixer as view + cat, a single attention head with an explicit
q k^T softmax (the official SingleHeadAttention), the light FFN, post-norm), built from
PyTorch's own modules (nn.Linear, nn.LayerNorm, nn.SiLU), batch first [B, T, d_m].
"""
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn


def dextra_config(d_p, d_out, d_max, n_layers, g_max):
    """research notes 2.3: [(in, out, groups)] of the GLT layers"""
    mid = math.ceil(n_layers / 2)
    groups = [min(2 ** i, g_max) for i in range(1, mid + 1)]
    sizes = np.linspace(d_p, d_max, mid).astype(int).tolist()
    if n_layers % 2 == 0:
        groups, sizes = groups + groups[::-1], sizes + sizes[::-1]
    else:
        groups, sizes = groups + groups[::-1][1:], sizes + sizes[::-1][1:]
    sizes = sizes[:-1]
    ins, outs = [d_p], []
    for i in range(n_layers - 1):
        q = max(groups[i], groups[i + 1], 8)
        outs.append(int(math.ceil(sizes[i] / q)) * q)
        ins.append(outs[-1] + d_p)
    outs.append(d_out)
    return list(zip(ins, outs, groups))


class GLT(nn.Module):
    """Group linear + shuffle + chunk LayerNorm + swish; groups 1 is a Linear."""

    def __init__(self, nin, nout, groups, shuffle=True):
        super().__init__()
        self.groups, self.shuffle = groups, shuffle
        if groups == 1:
            self.linear = nn.Linear(nin, nout)
            self.norm = nn.LayerNorm(nout)
        else:
            self.weight = nn.Parameter(torch.empty(groups, nin // groups, nout // groups))
            nn.init.xavier_uniform_(self.weight)
            self.bias = nn.Parameter(torch.zeros(groups, 1, nout // groups))
            self.norm = nn.LayerNorm(nout // groups)
        self.act = nn.SiLU()

    def forward(self, x):
        if self.groups == 1:
            return self.act(self.norm(self.linear(x)))
        lead = x.shape[:-1]
        n = x.numel() // x.shape[-1]
        h = x.reshape(n, self.groups, -1).transpose(0, 1)        # [g, n, ci]
        h = torch.bmm(h, self.weight) + self.bias                # [g, n, co]
        if self.shuffle:
            h = h.permute(1, 2, 0).contiguous().view(n, self.groups, -1)
        else:
            h = h.transpose(0, 1)
        h = self.act(self.norm(h))
        return h.reshape(*lead, -1)


class DExTra(nn.Module):
    def __init__(self, d_m, d_o, depth, width_mult, max_groups):
        super().__init__()
        self.config = dextra_config(d_o, d_o, d_m * width_mult, depth, max_groups)
        self.input_layer = GLT(d_m, d_o, 1)
        self.layers = nn.ModuleList([GLT(i, o, g) for i, o, g in self.config])
        self.output_layer = GLT(2 * d_o, d_o, 1)

    def forward(self, x):
        xp = self.input_layer(x)
        out = xp
        lead = xp.shape[:-1]
        for l, layer in enumerate(self.layers):
            out = layer(out)
            g = self.config[l + 1][2] if l + 1 < len(self.config) else 1
            if g == 1:
                out = torch.cat([xp, out], -1)
            else:
                out = torch.cat([xp.reshape(*lead, g, -1), out.reshape(*lead, g, -1)], -1)
                out = out.reshape(*lead, -1)
        return self.output_layer(out)


class DeLighTBlock(nn.Module):
    def __init__(self, d_m, depth, width_mult, max_groups, d_o=None, ffn_reduction=4):
        super().__init__()
        d_o = d_o or d_m // 2
        self.d_o = d_o
        self.dextra = DExTra(d_m, d_o, depth, width_mult, max_groups)
        self.qkv = nn.Linear(d_o, 3 * d_o)
        self.out_proj = nn.Linear(d_o, d_m)
        self.attn_norm = nn.LayerNorm(d_m)
        self.fc1 = nn.Linear(d_m, d_m // ffn_reduction)
        self.fc2 = nn.Linear(d_m // ffn_reduction, d_m)
        self.act = nn.SiLU()
        self.ffn_norm = nn.LayerNorm(d_m)

    def forward(self, x):
        u = self.dextra(x)
        q, k, v = self.qkv(u).chunk(3, dim=-1)
        q = q * self.d_o ** -0.5
        p = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        x = self.attn_norm(x + self.out_proj(torch.bmm(p, v)))
        return self.ffn_norm(x + self.fc2(self.act(self.fc1(x))))


def make_step(case):
    """forward + backward of one case, as bench/delight.lua builds it"""
    B, T, D = 16, 256, 256
    if case == "block":
        m = DeLighTBlock(D, 4, 2.0, 8)
        x, dout = torch.randn(B, T, D, requires_grad=True), torch.randn(B, T, D)
    elif case == "dextra":
        m = DExTra(D, D // 2, 4, 2.0, 8)
        x, dout = torch.randn(B, T, D, requires_grad=True), torch.randn(B, T, D // 2)
    elif case == "glt":
        N, G = B * T, 4
        layer = GLT(640, 512, G)
        z = torch.randn(N, 512, requires_grad=True)
        xp = torch.randn(N, 128, requires_grad=True)
        dout = torch.randn(N, 512)

        def step():
            layer.zero_grad(set_to_none=True)
            z.grad = xp.grad = None
            u = torch.cat([xp.view(N, G, -1), z.view(N, G, -1)], -1).view(N, -1)
            layer(u).backward(dout)
        return step
    else:
        raise ValueError(case)

    def step():
        m.zero_grad(set_to_none=True)
        x.grad = None
        m(x).backward(dout)
    return step


def main():
    threads, calls, cases = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    for case in cases:
        step = make_step(case)
        for _ in range(3):
            step()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        out[case] = times
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
