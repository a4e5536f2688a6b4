-- delight_spec: DeLighT (research/delight.md). Layer dims, groups and parameter counts equal
-- the notes' worked examples exactly (§ 3 table, the embedding DExTra, the unit-test config,
-- the NMT totals of § 5); finite-difference checks of group_linear, DExTra and the block;
-- DExTra against a PyTorch re-implementation of the official structure
-- (tests/fixtures/make_delight_fixtures.py); block-wise scaling; the pluggable attention.
local xt = require 'xt'
local nn, F = xt.nn, xt.nn.functional
local gradcheck = xt.autograd.gradcheck

local FIXTURES = 'tests/fixtures/delight/'

local function max_abs_diff(a, b) return (a - b):abs():amax():item() end

local function error_of(fn)
    local ok, err = pcall(fn)
    assert.is_false(ok, 'expected an error')
    return tostring(err)
end

local function glt_list(m)
    local parts = {}
    for _, e in ipairs(m.layers) do parts[#parts + 1] = string.format('%d->%d g%d', e['in'], e.out, e.groups) end
    return table.concat(parts, ', ')
end

-- the parameters of m as gradcheck inputs, after x
local function with_params(x, m)
    local inputs = {x}
    for _, p in ipairs(m:parameters()) do inputs[#inputs + 1] = p end
    return inputs
end

describe('DExTra layer schedule and parameter counts (notes § 3)', function()
    -- d_m 512, g_max 16, d_o 256; the blocks' (N, m_w) from block-wise scaling
    local TABLE = {
        {4, 2.0, '256->256 g2, 512->1024 g4, 1280->1024 g4, 1280->256 g2', 923136, 1385856, 1912448},
        {4, 2.143, '256->256 g2, 512->1104 g4, 1360->1104 g4, 1360->256 g2', 991536, 1454256, 1980848},
        {5, 2.286, '256->256 g2, 512->720 g4, 976->1176 g8, 1432->720 g4, 976->256 g2', 919422, 1382142, 1908734},
        {5, 2.429, '256->256 g2, 512->752 g4, 1008->1248 g8, 1504->752 g4, 1008->256 g2', 966568, 1429288, 1955880},
        {6, 2.571, '256->256 g2, 512->792 g4, 1048->1320 g8, 1576->1320 g8, 1576->792 g4, 1048->256 g2',
         1283676, 1746396, 2272988},
        {6, 2.714, '256->256 g2, 512->824 g4, 1080->1392 g8, 1648->1392 g8, 1648->824 g4, 1080->256 g2',
         1361296, 1824016, 2350608},
        {7, 2.857, '256->256 g2, 512->664 g4, 920->1072 g8, 1328->1472 g16, 1728->1064 g8, 1320->664 g4, 920->256 g2',
         1200942, 1663662, 2190254},
        {8, 3.0, '256->256 g2, 512->688 g4, 944->1120 g8, 1376->1536 g16, 1792->1536 g16, 1792->1112 g8, '
                 .. '1368->688 g4, 944->256 g2', 1435350, 1898070, 2424662},
    }

    it('gives every block of the NMT d_m = 512 model its GLT list and parameter count', function()
        for b, row in ipairs(TABLE) do
            local d = nn.DExTra{d_m = 512, d_o = 256, depth = row[1], width_mult = row[2], max_groups = 16}
            assert.are.equal(row[3], glt_list(d), 'block ' .. b)
            assert.are.equal(row[4], d:num_parameters(), 'block ' .. b)
        end
    end)

    it('gives the encoder and decoder blocks their parameter counts', function()
        for b, row in ipairs(TABLE) do
            local opts = {d_m = 512, depth = row[1], width_mult = row[2], max_groups = 16}
            assert.are.equal(row[5], nn.DeLighTBlock(opts):num_parameters(), 'encoder block ' .. b)
            opts.cross_attention = true
            assert.are.equal(row[6], nn.DeLighTBlock(opts):num_parameters(), 'decoder block ' .. b)
        end
    end)

    it('builds the embedding DExTra 128 -> 512', function()
        local d = nn.DExTra{d_m = 128, d_p = 256, d_o = 512, depth = 4, width_mult = 2, max_groups = 16}
        assert.are.equal('256->256 g2, 512->256 g4, 512->256 g4, 512->512 g2', glt_list(d))
        assert.are.same({256, 128}, d.input_layer.weight.shape:totable())
        assert.are.same({512, 768}, d.output_layer.weight.shape:totable())
        assert.are.equal(659968, d:num_parameters())
    end)

    it('builds the small unit-test config', function()
        local d = nn.DExTra{d_m = 16, d_p = 8, d_o = 8, depth = 4, width_mult = 2, max_groups = 4}
        assert.are.equal('8->8 g2, 16->32 g4, 40->32 g4, 40->8 g2', glt_list(d))
        assert.are.same({8, 16}, d.output_layer.weight.shape:totable())
        assert.are.equal(1072, d:num_parameters())
        local d2 = nn.DExTra{d_m = 16, d_p = 8, d_o = 8, depth = 4, width_mult = 2, max_groups = 2}
        assert.are.equal('8->8 g2, 16->32 g2, 40->32 g2, 40->8 g2', glt_list(d2))
        assert.are.equal(1552, d2:num_parameters())
    end)

    it("uses the code's default g_max: the next power of two of d_m / 32", function()
        local want = {[128] = 4, [256] = 8, [384] = 16, [512] = 16, [640] = 32, [1024] = 32}
        for d_m, g in pairs(want) do
            assert.are.equal(g, nn.DExTra{d_m = d_m, depth = 4}.max_groups, 'd_m ' .. d_m)
        end
    end)

    it('stores GLT weights [g, ci, co] with the official xavier bound and zero biases', function()
        local d = nn.DExTra{d_m = 512, d_o = 256, depth = 4, width_mult = 2, max_groups = 16}
        local l3 = d.dextra_layers:children()[3]
        assert.are.same({4, 320, 256}, l3.weight.shape:totable())
        assert.are.same({4, 256}, l3.bias.shape:totable())
        assert.are.same({256}, l3.norm.weight.shape:totable())
        local bound = math.sqrt(6 / (320 * 256 + 1024))   -- fan_in ci*co, fan_out g*co
        local amax = l3.weight:abs():amax():item()
        assert.is_true(amax <= bound and amax > 0.95 * bound)
        assert.are.equal(0, l3.bias:abs():amax():item())
    end)
end)

describe('whole models (notes § 5)', function()
    it('scales blocks as the official NMT and LM configs do', function()
        local nmt = require('xt.nn.delight').block_scaling(8, 4, 8, 2)
        local depths, widths = {}, {}
        for i, s in ipairs(nmt) do depths[i], widths[i] = s.depth, s.width_mult end
        assert.are.same({4, 4, 5, 5, 6, 6, 7, 8}, depths)
        assert.are.same({2.0, 2.143, 2.286, 2.429, 2.571, 2.714, 2.857, 3.0}, widths)
        local lm = require('xt.nn.delight').block_scaling(12, 4, 12, 2)
        depths = {}
        for i, s in ipairs(lm) do depths[i] = s.depth end
        assert.are.same({4, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12}, depths)
        assert.are.equal(4.0, lm[12].width_mult)
        assert.are.equal(2.182, lm[2].width_mult)
    end)

    -- Non-embedding NMT totals: two embedding DExTras 128 -> d_m, the encoder and decoder
    -- stacks, the output projection d_m -> 128 without bias (fairseq has none when d_m is
    -- already 128).
    local function nmt_params(d_m)
        local common = {blocks = 8, d_m = d_m, min_depth = 4, max_depth = 8, width_mult = 2, verbose = false}
        local enc = nn.DeLighT(common)
        common.cross_attention = true
        local dec = nn.DeLighT(common)
        local emb = nn.DExTra{d_m = 128, d_p = d_m / 2, d_o = d_m, depth = 4, width_mult = 2,
                              max_groups = require('xt.nn.delight').default_max_groups(d_m)}
        return 2 * emb:num_parameters() + enc:num_parameters() + dec:num_parameters() +
               (d_m ~= 128 and 128 * d_m or 0)
    end

    it('matches the non-embedding NMT totals at d_m = 128 and 256', function()
        assert.are.equal(2496224, nmt_params(128))
        assert.are.equal(8190376, nmt_params(256))
    end)

    it('prints each block: depth, width multiplier, widest layer, parameters', function()
        local m = nn.DeLighT{blocks = 4, d_m = 64, min_depth = 4, max_depth = 6, width_mult = 2, verbose = false}
        local tbl = m:scaling_table()
        local rows = {}
        for line in tbl:gmatch('[^\n]+') do rows[#rows + 1] = line end
        assert.are.equal(7, #rows)   -- title, header, 4 blocks, total
        local blocks = m.blocks:children()
        for b = 1, 4 do
            local depth, mw, width, n = rows[b + 2]:match('^%s*%d+%s+(%d+)%s+([%d.]+)%s+(%d+)%s+(%d+)$')
            assert.are.equal(m.plan[b].depth, tonumber(depth))
            assert.are.equal(blocks[b].dextra.depth, tonumber(depth))
            assert.are.equal(m.plan[b].width_mult, tonumber(mw))
            assert.are.equal(blocks[b].dextra:max_width(), tonumber(width))
            assert.are.equal(blocks[b]:num_parameters(), tonumber(n))
        end
        assert.are.same({4, 4, 5, 6}, {m.plan[1].depth, m.plan[2].depth, m.plan[3].depth, m.plan[4].depth})
        assert.is_truthy(rows[7]:find(tostring(m:num_parameters()), 1, true))
        local u = nn.DeLighT{blocks = 3, d_m = 64, min_depth = 4, max_depth = 6, scaling = 'uniform', verbose = false}
        for _, s in ipairs(u.plan) do assert.are.same({depth = 4, width_mult = 2}, s) end
    end)
end)

describe('F.group_linear', function()
    local function inputs(n, din, g, co, bias)
        return xt.randn(n, din):requires_grad(), (xt.randn(g, din / g, co) * 0.5):requires_grad(),
               bias and (xt.randn(g, co) * 0.5):requires_grad() or nil
    end

    it('passes gradcheck with shuffle on and off, with and without bias', function()
        xt.manual_seed(11)
        for _, shuffle in ipairs{false, true} do
            for _, bias in ipairs{false, true} do
                local x, w, b = inputs(5, 6, 3, 2, bias)
                assert.is_true(gradcheck(function(x_, w_, b_)
                    return F.group_linear(x_, w_, b_, {groups = 3, shuffle = shuffle})
                end, {x, w, b}))
            end
        end
    end)

    it('passes gradcheck as a fused DExTra layer: mix, chunk LayerNorm, swish', function()
        xt.manual_seed(12)
        local x, w, b = inputs(4, 6, 2, 3, true)
        local mix = xt.randn(4, 4):requires_grad()
        local w2 = (xt.randn(2, 5, 3) * 0.5):requires_grad()
        local gamma, beta = (xt.randn(3) * 0.2 + 1):requires_grad(), (xt.randn(3) * 0.2):requires_grad()
        assert.is_true(gradcheck(function(x_, m_, w_, b_, g_, be_)
            return F.group_linear(x_, w_, b_, {shuffle = true, mix = m_, norm = true, norm_weight = g_,
                                               norm_bias = be_, activation = 'swish'})
        end, {x, mix, w2, b, gamma, beta}, {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('equals the per-group composition, with the shuffle as the notes define it', function()
        xt.manual_seed(13)
        local x, w, b = inputs(7, 8, 4, 3, true)
        local parts = {}
        for k = 1, 4 do parts[k] = x:narrow(2, 2 * k - 1, 2):matmul(w[k]) + b[k] end
        local plain = xt.cat(parts, 2)
        assert.is_true(max_abs_diff(F.group_linear(x, w, b, {groups = 4}), plain) < 1e-5)
        local shuffled = xt.stack(parts, 3):view(7, 12)   -- y[j*g + k] = A[k, j]
        assert.is_true(max_abs_diff(F.group_linear(x, w, b, {groups = 4, shuffle = true}), shuffled) < 1e-5)
    end)

    it('names what is wrong', function()
        local x, w = xt.randn(2, 6), xt.randn(3, 2, 2)
        assert.is_truthy(error_of(function() F.group_linear(x, w, nil, {groups = 2}) end):find('groups = 2, but w has shape'))
        assert.is_truthy(error_of(function() F.group_linear(x, xt.randn(4, 2, 2)) end):find('group_linear: 4 groups'))
        assert.is_truthy(error_of(function() F.group_linear(x, w, nil, {activation = 'relu'}) end):find("'swish' or nil"))
        assert.is_truthy(error_of(function() F.group_linear(x, w, nil, {shufle = true}) end):find("unknown option 'shufle'"))
        assert.is_truthy(error_of(function() F.group_linear(x, w, nil, {norm_weight = xt.ones(2)}) end):find('need norm = true'))
    end)
end)

describe('nn.GroupLinear', function()
    it('stores a groups = 1 layer as nn.Linear does and computes the same', function()
        xt.manual_seed(14)
        local m = nn.GroupLinear{in_features = 6, out_features = 4}
        assert.are.same({4, 6}, m.weight.shape:totable())
        local x = xt.randn(3, 5, 6)
        local want = F.linear(x, m.weight, m.bias)
        assert.is_true(max_abs_diff(m(x), want) < 1e-5)
    end)

    it('checks its options and its mix input', function()
        assert.is_truthy(error_of(function() nn.GroupLinear{in_features = 6, out_features = 4, groups = 4} end)
            :find('4 groups do not divide in_features %(6%)'))
        local m = nn.GroupLinear{in_features = 4, out_features = 4, groups = 2, mix_features = 2}
        assert.is_truthy(error_of(function() m(xt.randn(2, 4)) end):find('call it as m%(x, mix%)'))
        assert.are.same({2, 4}, m(xt.randn(2, 4), xt.randn(2, 2)).shape:totable())
    end)
end)

describe('nn.DExTra', function()
    local function load_case(case, m)
        local sd = {}
        for _, e in ipairs(m:named_parameters()) do
            sd[e[1]] = xt.load_npy(FIXTURES .. case .. '.param.' .. e[1] .. '.npy')
        end
        m:load_state_dict(sd)
    end

    local CASES = {
        {'unit', {d_m = 16, d_p = 8, d_o = 8, width_mult = 2, depth = 4, max_groups = 4}},
        {'odd_no_shuffle', {d_m = 32, d_p = 16, d_o = 16, width_mult = 1.5, depth = 5, max_groups = 4,
                            shuffle = false}},
        {'embedding', {d_m = 16, d_p = 16, d_o = 32, width_mult = 2, depth = 3, max_groups = 2}},
    }
    for _, c in ipairs(CASES) do
        it('matches the PyTorch re-implementation of the official unit: ' .. c[1], function()
            local m = nn.DExTra(c[2])
            load_case(c[1], m)
            local x = xt.load_npy(FIXTURES .. c[1] .. '.x.npy'):requires_grad()
            local out = m(x)
            local want = xt.load_npy(FIXTURES .. c[1] .. '.out.npy')
            assert.are.same(want.shape:totable(), out.shape:totable())
            assert.is_true(max_abs_diff(out, want) < 2e-5, 'output differs by ' .. max_abs_diff(out, want))
            out:backward(xt.load_npy(FIXTURES .. c[1] .. '.dout.npy'))
            local dx = xt.load_npy(FIXTURES .. c[1] .. '.dx.npy')
            assert.is_true(max_abs_diff(x.grad, dx) < 1e-4, 'dx differs by ' .. max_abs_diff(x.grad, dx))
            for _, e in ipairs(m:named_parameters()) do
                local g = xt.load_npy(FIXTURES .. c[1] .. '.grad.' .. e[1] .. '.npy')
                local d = max_abs_diff(e[2].grad, g)
                assert.is_true(d < 1e-4 * math.max(1, g:abs():amax():item()), e[1] .. ' gradient differs by ' .. d)
            end
        end)
    end

    it('passes gradcheck on the unit config (input and every parameter)', function()
        xt.manual_seed(15)
        local m = nn.DExTra{d_m = 16, d_p = 8, d_o = 8, depth = 4, width_mult = 2, max_groups = 4}
        local x = xt.randn(3, 16):requires_grad()
        assert.is_true(gradcheck(function(x_) return m(x_) end, with_params(x, m),
                                 {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it("passes gradcheck in mode 'paper', whose first layer is a linear map of the input", function()
        xt.manual_seed(16)
        local m = nn.DExTra{d_m = 16, d_o = 8, depth = 3, width_mult = 2, mode = 'paper', max_groups = 2}
        assert.are.equal('16->24 g1, 40->32 g2, 48->8 g1', glt_list(m))
        assert.is_nil(m.input_layer)
        local x = xt.randn(2, 16):requires_grad()
        assert.is_true(gradcheck(function(x_) return m(x_) end, with_params(x, m),
                                 {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('builds the paper schedule: groups 1, 2, 4, ... mirrored, widths up to d_max then down to d_o', function()
        local m = nn.DExTra{d_m = 256, d_o = 128, depth = 5, width_mult = 2, mode = 'paper'}
        assert.are.equal(8, m.max_groups)   -- ceil(256 / 32)
        assert.are.equal('256->342 g1, 598->428 g2, 684->512 g4, 768->320 g2, 576->128 g1', glt_list(m))
    end)

    it('applies dropout only in training', function()
        xt.manual_seed(17)
        local m = nn.DExTra{d_m = 16, d_o = 8, depth = 2, dropout = 0.5, max_groups = 2}
        local x = xt.randn(4, 16)
        m:eval()
        local a, b = m(x), m(x)
        assert.are.equal(0, max_abs_diff(a, b))
        m:train()
        assert.is_true(max_abs_diff(m(x), a) > 0)
    end)

    it('names impossible configurations', function()
        assert.is_truthy(error_of(function() nn.DExTra{d_m = 16, depth = 1} end):find('depth must be an integer >= 2'))
        assert.is_truthy(error_of(function() nn.DExTra{d_m = 16, d_o = 6, depth = 4, max_groups = 4} end)
            :find('groups, which do not divide'))
        assert.is_truthy(error_of(function() nn.DExTra{d_m = 16, depth = 4, mode = 'x'} end):find("mode must be 'code' or 'paper'"))
        local m = nn.DExTra{d_m = 16, depth = 2, max_groups = 2}
        assert.is_truthy(error_of(function() m(xt.randn(2, 8)) end):find('expected x of shape %[..., 16%]'))
    end)
end)

describe('nn.DeLighTBlock', function()
    local small = {d_m = 16, depth = 4, width_mult = 2, max_groups = 2}
    local function opts(extra)
        local o = {}
        for k, v in pairs(small) do o[k] = v end
        for k, v in pairs(extra or {}) do o[k] = v end
        return o
    end

    for _, norm in ipairs{'post', 'pre'} do
        it('passes gradcheck, ' .. norm .. '-norm, causal softmax attention', function()
            xt.manual_seed(18)
            local m = nn.DeLighTBlock(opts{norm = norm, causal = true})
            local x = xt.randn(2, 3, 16):requires_grad()
            assert.is_true(gradcheck(function(x_) return m(x_) end, with_params(x, m),
                                     {eps = 1e-3, atol = 3e-3, rtol = 3e-2}))
        end)
    end

    it('passes gradcheck with cross-attention, through the memory too', function()
        xt.manual_seed(19)
        local m = nn.DeLighTBlock(opts{cross_attention = true, causal = true})
        local x, mem = xt.randn(2, 3, 16):requires_grad(), xt.randn(2, 4, 16):requires_grad()
        local inputs = with_params(x, m)
        table.insert(inputs, 2, mem)
        assert.is_true(gradcheck(function(x_, m_) return m(x_, m_) end, inputs,
                                 {eps = 1e-3, atol = 3e-3, rtol = 3e-2}))
    end)

    it('is causal when asked: outputs before t do not see inputs at t', function()
        xt.manual_seed(20)
        local m = nn.DeLighTBlock(opts{causal = true})
        local x = xt.randn(1, 5, 16)
        local y = m(x)
        local x2 = x:clone()
        x2[1][4]:copy_(xt.randn(16))
        local y2 = m(x2)
        assert.are.equal(0, max_abs_diff(y:narrow(2, 1, 3), y2:narrow(2, 1, 3)))
        assert.is_true(max_abs_diff(y:narrow(2, 4, 2), y2:narrow(2, 4, 2)) > 0)
    end)

    it('uses one head at width d_o, the attention\'s own output projection dropped', function()
        local m = nn.DeLighTBlock(opts{})
        assert.are.equal(8, m.d_o)
        assert.are.equal(1, m.attn.heads)
        assert.are.same({24, 8}, m.attn.in_proj_weight.shape:totable())
        assert.are.equal('Identity', m.attn.out_proj.__name)
        assert.are.same({16, 8}, m.out_proj.weight.shape:totable())
        assert.are.same({4, 16}, m.fc1.weight.shape:totable())   -- d_m -> d_m / 4
    end)

    it('takes any attention module by function, and names unknown ones', function()
        xt.manual_seed(21)
        local seen
        local m = nn.DeLighTBlock(opts{attention = function(cfg)
            seen = cfg
            return nn.Linear(cfg.d_o, cfg.d_o)
        end})
        assert.are.equal(8, seen.d_o)
        assert.are.same({2, 3, 16}, m(xt.randn(2, 3, 16)).shape:totable())
        assert.is_truthy(error_of(function() nn.DeLighTBlock(opts{attention = 'sparse'}) end)
            :find("unknown attention 'sparse'"))
    end)

    for _, kind in ipairs{'aft_full', 'aft_simple', 'aft_local'} do
        local class = require('xt.nn.delight').attention_kinds[kind].class
        it('plugs in ' .. kind .. ' (nn.' .. class .. ') by name, looked up when the block is built', function()
            local o = opts{attention = kind, causal = true, seq_len = 4, window = 2}
            if not nn[class] then
                -- without the AFT modules the block says which one it needs
                assert.is_truthy(error_of(function() nn.DeLighTBlock(o) end):find('needs nn.' .. class, 1, true))
                return
            end
            xt.manual_seed(22)
            local m = nn.DeLighTBlock(o)
            assert.are.equal(class, m.attn.__name)
            local x = xt.randn(2, 4, 16):requires_grad()
            assert.is_true(gradcheck(function(x_) return m(x_) end, {x}, {eps = 1e-3, atol = 3e-3, rtol = 3e-2}))
        end)
    end

    it('names bad inputs', function()
        local m = nn.DeLighTBlock(opts{})
        assert.is_truthy(error_of(function() m(xt.randn(2, 3, 8)) end):find('expected x of shape %[B,T,16%]'))
        assert.is_truthy(error_of(function() m(xt.randn(2, 3, 16), xt.randn(2, 3, 16)) end):find('no cross%-attention'))
        assert.is_truthy(error_of(function() nn.DeLighTBlock(opts{norm = 'mid'}) end):find("norm must be 'post' or 'pre'"))
    end)
end)

describe('nn.DeLighT', function()
    it('stacks blocks and runs forward and backward', function()
        xt.manual_seed(23)
        local m = nn.DeLighT{blocks = 3, d_m = 32, min_depth = 3, max_depth = 5, width_mult = 2,
                             norm = 'pre', final_norm = true, causal = true, verbose = false}
        local x = xt.randn(2, 4, 32)
        local y = m(x)
        assert.are.same({2, 4, 32}, y.shape:totable())
        y:square():mean():backward()
        for _, e in ipairs(m:named_parameters()) do assert.is_truthy(e[2].grad, e[1]) end
        assert.is_truthy(error_of(function() nn.DeLighT{d_m = 32, depth = 4} end):find("unknown option 'depth'"))
    end)
end)

describe('models with DeLighT blocks', function()
    it('token_classifier and pixel_transformer build them with block-wise scaling', function()
        xt.manual_seed(24)
        local tc = require('xt.models.token_classifier'){in_channels = 1, image_size = {8, 8}, patch = 4,
                                                         classes = 3, dim = 16, depth = 2, attention = 'delight'}
        assert.are.same({2, 3}, tc(xt.randn(2, 1, 8, 8)).shape:totable())
        local blocks = tc.blocks:children()
        assert.are.equal(4, blocks[1].dextra.depth)
        assert.are.equal(8, blocks[2].dextra.depth)
        local pt = require('xt.models.pixel_transformer'){seq_len = 6, attention = 'delight', dim = 16, depth = 1}
        assert.are.equal(4, pt.blocks:children()[1].dextra.depth)
    end)
end)

describe('DeLighTBlock:step', function()
    it('decodes incrementally with the outputs of the full forward', function()
        for _, attention in ipairs{'softmax', 'aft_simple'} do
            xt.manual_seed(25)
            local m = nn.DeLighTBlock{d_m = 16, depth = 4, width_mult = 2, causal = true,
                                      attention = attention, seq_len = 6}
            m:eval()
            local x = xt.randn(2, 6, 16)
            local full = m(x)
            local cache, outs, pos = {}, {}, 1
            for _, t in ipairs{1, 2, 3} do
                outs[#outs + 1] = m:step(x:narrow(2, pos, t), cache)
                pos = pos + t
            end
            local diff = (full - xt.cat(outs, 2)):abs():max():item()
            assert.is_true(diff < 1e-5, attention .. ' differs by ' .. diff)
        end
    end)

    it('names what it cannot do', function()
        local m = nn.DeLighTBlock{d_m = 16, depth = 4, width_mult = 2}
        assert.is_truthy(error_of(function() m:step(xt.randn(2, 1, 16), {}) end):find('needs a causal block'))
        local c = nn.DeLighTBlock{d_m = 16, depth = 4, width_mult = 2, causal = true}
        assert.is_truthy(error_of(function() c:step(xt.randn(2, 1, 8), {}) end):find('expected x of shape'))
    end)
end)
