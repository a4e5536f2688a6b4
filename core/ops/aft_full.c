/*
 * aft_full.c: AFT-full (research notes sections 1, 4.1, 5.1).
 *
 *   y[b,t,c] = sigmoid(q[b,t,c]) * sum_t' exp(k[b,t',c] + w[t,t']) v[b,t',c]
 *                                  / sum_t' exp(k[b,t',c] + w[t,t'])
 * q, k, v, y [B,T,D]; w [T,T], shared by every batch item and channel; causal limits the
 * sums to t' <= t.
 *
 * AFT-full is AFT-local whose window covers the whole sequence, so it runs on the same
 * engine (aft_local.c): per block of query rows, exp(w - rowmax) [Tb,T] times the stack
 * [E V | E] of all batch items [T,2BD] in one GEMM (only the keys up to the block's end
 * when causal, which skips the masked upper triangle), and the backward's two GEMMs
 * with the transposed block and against [E V | -E]. Memory is O(T D) plus w and dw.
 */
#include "aft.h"

xt_tensor *xt_aft_full(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w, int32_t causal)
{
    if (aft_check_qkv("aft_full", q, k, v)) return NULL;
    return aft_bias_attention("aft_full", q, k, v, w, q->shape[1], causal);
}
