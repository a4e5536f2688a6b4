-- bench/cases.lua: the benchmark cases. Each has `xt` (returns the function to time),
-- optionally `torch` ({setup, stmt} in Python), `flops`/`bytes` for rates, and
-- `reference` (a name and a function doing the same work another way).
local xt = require 'xt'
local ffi = require 'ffi'

pcall(ffi.cdef, [[
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void *memcpy(void *dst, const void *src, size_t n);
]])

local N16M = 16 * 1024 * 1024
local cases = {}
local function case(c) cases[#cases + 1] = c end

case {
    name = 'matmul 1024x1024x1024',
    flops = 2 * 1024 ^ 3,
    xt = function()
        local a, b = xt.randn(1024, 1024), xt.randn(1024, 1024)
        return function() return a:matmul(b) end
    end,
    torch = {setup = 'a = torch.randn(1024, 1024); b = torch.randn(1024, 1024)', stmt = 'a @ b'},
    reference = function()
        local a, b, c = xt.randn(1024, 1024), xt.randn(1024, 1024), xt.empty(1024, 1024)
        local pa, pb, pc = ffi.cast('float*', a._c.data), ffi.cast('float*', b._c.data),
                           ffi.cast('float*', c._c.data)
        return 'direct cblas_sgemm', function()
            ffi.C.cblas_sgemm(101, 111, 111, 1024, 1024, 1024, 1, pa, 1024, pb, 1024, 0, pc, 1024)
        end
    end,
}

case {
    name = 'add 16M floats',
    bytes = 3 * 4 * N16M,
    xt = function()
        local a, b = xt.randn(N16M), xt.randn(N16M)
        return function() return a + b end
    end,
    torch = {setup = 'a = torch.randn(16777216); b = torch.randn(16777216)', stmt = 'a + b'},
    reference = function()
        -- streaming bandwidth: memcpy of 192 MB moves 2 x 192 MB (read + write)
        local bytes = 3 * 4 * N16M
        local src, dst = xt.empty(bytes, 'uint8'):fill_(1), xt.empty(bytes, 'uint8'):fill_(0)
        return 'memcpy bandwidth', function() ffi.C.memcpy(dst._c.data, src._c.data, bytes / 2) end
    end,
}

case {
    name = 'mul broadcast [4096,1024]*[1024]',
    xt = function()
        local a, b = xt.randn(4096, 1024), xt.randn(1024)
        return function() return a * b end
    end,
    torch = {setup = 'a = torch.randn(4096, 1024); b = torch.randn(1024)', stmt = 'a * b'},
}

case {
    name = 'exp 4M',
    xt = function()
        local a = xt.randn(4 * 1024 * 1024)
        return function() return a:exp() end
    end,
    torch = {setup = 'a = torch.randn(4194304)', stmt = 'a.exp()'},
}

case {
    name = 'sum [4096,1024] over dim 2',
    xt = function()
        local a = xt.randn(4096, 1024)
        return function() return a:sum(2) end
    end,
    torch = {setup = 'a = torch.randn(4096, 1024)', stmt = 'a.sum(1)'},
}

case {
    name = 'sum [4096,1024] over dim 1',
    xt = function()
        local a = xt.randn(4096, 1024)
        return function() return a:sum(1) end
    end,
    torch = {setup = 'a = torch.randn(4096, 1024)', stmt = 'a.sum(0)'},
}

case {
    name = 'softmax [4096,1024]',
    xt = function()
        local a = xt.randn(4096, 1024)
        return function() return a:softmax(-1) end
    end,
    torch = {setup = 'a = torch.randn(4096, 1024)', stmt = 'a.softmax(-1)'},
}

case {
    name = 'transpose+contiguous [2048,2048]',
    xt = function()
        local a = xt.randn(2048, 2048)
        return function() return a:t():contiguous() end
    end,
    torch = {setup = 'a = torch.randn(2048, 2048)', stmt = 'a.t().contiguous()'},
}

case {
    name = 'linear fwd+bwd [8192,512]x[512,512]',
    flops = 3 * 2 * 8192 * 512 * 512,
    xt = function()
        local x = xt.randn(8192, 512):requires_grad()
        local w = xt.randn(512, 512):requires_grad()
        local b = xt.randn(512):requires_grad()
        local F = xt.C
        return function()
            local y = xt._wrap(F.xt_linear(x._c, w._c, b._c))
            y:sum():backward()
        end
    end,
    torch = {setup = [[
x = torch.randn(8192, 512, requires_grad=True)
w = torch.randn(512, 512, requires_grad=True)
b = torch.randn(512, requires_grad=True)]],
             stmt = 'torch.nn.functional.linear(x, w, b).sum().backward()'},
}

case {
    name = 'bmm [64,128,64]x[64,64,128] (many small GEMMs)',
    flops = 2 * 64 * 128 * 64 * 128,
    xt = function()
        local a, b = xt.randn(64, 128, 64), xt.randn(64, 64, 128)
        return function() return a:bmm(b) end
    end,
    torch = {setup = 'a = torch.randn(64, 128, 64); b = torch.randn(64, 64, 128)',
             stmt = 'torch.bmm(a, b)'},
}

case {
    name = 'matmul fwd+bwd [32,256,512]x[512,512] (batch folded into one GEMM)',
    flops = 3 * 2 * 32 * 256 * 512 * 512,
    xt = function()
        local a = xt.randn(32, 256, 512):requires_grad()
        local w = xt.randn(512, 512):requires_grad()
        return function() a:matmul(w):sum():backward() end
    end,
    torch = {setup = [[
a = torch.randn(32, 256, 512, requires_grad=True)
w = torch.randn(512, 512, requires_grad=True)]],
             stmt = '(a @ w).sum().backward()'},
}

case {
    name = 'conv block fwd+bwd: Conv2d 3x3 64->64 on [32,64,32,32], BatchNorm, ReLU',
    flops = 3 * 2 * 32 * 32 * 32 * 64 * 64 * 9,
    xt = function()
        local nn = xt.nn
        local block = nn.Sequential(nn.Conv2d(64, 64, 3, {padding = 1}), nn.BatchNorm2d(64), nn.ReLU())
        local x = xt.randn(32, 64, 32, 32):requires_grad()
        return function()
            block:zero_grad()
            x.grad = nil
            block(x):sum():backward()
        end
    end,
    torch = {setup = [[
block = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU())
x = torch.randn(32, 64, 32, 32, requires_grad=True)]],
             stmt = 'block.zero_grad(set_to_none=True); x.grad = None; block(x).sum().backward()'},
}

case {
    name = 'stem conv fwd+bwd: Conv2d 3x3 1->32 on [128,1,28,28]',
    flops = 2 * 2 * 128 * 28 * 28 * 32 * 9,
    xt = function()
        local conv = xt.nn.Conv2d(1, 32, 3, {padding = 1})
        local x = xt.randn(128, 1, 28, 28)
        return function()
            conv:zero_grad()
            conv(x):sum():backward()
        end
    end,
    torch = {setup = [[
conv = torch.nn.Conv2d(1, 32, 3, padding=1)
x = torch.randn(128, 1, 28, 28)]],
             stmt = 'conv.zero_grad(set_to_none=True); conv(x).sum().backward()'},
}

return cases
