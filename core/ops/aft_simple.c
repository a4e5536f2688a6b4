/*
 * aft_simple.c: AFT-simple (research notes sections 2, 4.2, 5.2, 5.3), no position bias:
 *
 *   y[b,t,c] = sigmoid(q[b,t,c]) * sum_t' softmax_t'(k[b,:,c]) v[b,t',c]
 *
 * q, k, v, y [B,T,D]. Non-causal, the context is one D-vector per batch item; causal,
 * the sums run over t' <= t and the context is a running (online-softmax) scan. Both are
 * O(B T D) with one exp per element; the work is split over batch items and groups of
 * channels (each scans time with a contiguous inner loop over its channels; aft.h).
 *
 * Causal scan per channel, state (m, n, s) in double: m' = max(m, k_t),
 *   n = n e^(m - m') + e^(k_t - m') v_t,  s = s e^(m - m') + e^(k_t - m'),  A_t = n / s;
 * one of the two exps is 1, so each step takes one exp of -|k_t - m|. Saved: y itself and
 * alpha_t = e^(k_t - m') / s = e^(k_t - L_t), the weight of the newest key (L_t the prefix
 * log-sum-exp). Backward, the reverse scan of section 5.3, whose decay factor is
 * e^(L_t - L_{t+1}) = 1 - alpha_{t+1} (the previous keys' share of the next normaliser),
 * so the backward needs no exp beyond the gate's:
 *   R1_t = H_t + (1 - alpha_{t+1}) R1_{t+1},  R2_t = H_t A_t + (1 - alpha_{t+1}) R2_{t+1}
 *   dV_t = alpha_t R1_t,  dK_t = alpha_t (V_t R1_t - R2_t),  H = G sigmoid(q),
 * where H_t A_t = G_t y_t, so A itself is never needed. Tensors bigger than the caches are
 * written around them (stream_store.h).
 * Non-causal: a = n / s, L = m + log s per (b, c);  h = sum_t H_t,
 *   dV_t = e^(k_t - L) h,  dK_t = e^(k_t - L) h (V_t - a).
 */
#include "aft.h"
#include "stream_store.h"


/* ---- non-causal ------------------------------------------------------------------- */

/* a, L [B,D]; y [B,T,D] */
static void simple_forward(const float *q, const float *k, const float *v, int64_t B,
                           int64_t T, int64_t D, float *a, float *L, float *y)
{
    int64_t cols = aft_group_width(B, D), nch = (D + cols - 1) / cols;
#pragma omp parallel for collapse(2) schedule(static) if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t c0 = ch * cols, nc = D - c0 < cols ? D - c0 : cols;
            float m[AFT_GROUP];
            double s[AFT_GROUP] = {0}, n[AFT_GROUP] = {0};
            for (int64_t c = 0; c < nc; c++) m[c] = -INFINITY;
            for (int64_t t = 0; t < T; t++) {
                const float *kr = k + (b * T + t) * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) m[c] = kr[c] > m[c] ? kr[c] : m[c];
            }
            for (int64_t t = 0; t < T; t++) {
                int64_t o = (b * T + t) * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) {
                    float e = aft_exp_neg(k[o + c] - m[c]);
                    s[c] += e;
                    n[c] += (double)e * v[o + c];
                }
            }
            for (int64_t c = 0; c < nc; c++) {
                a[b * D + c0 + c] = (float)(n[c] / s[c]);
                L[b * D + c0 + c] = (float)(m[c] + log(s[c]));
            }
            for (int64_t t = 0; t < T; t++) {
                int64_t o = (b * T + t) * D + c0;
                const float *ab = a + b * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) y[o + c] = aft_sigmoid(q[o + c]) * ab[c];
            }
        }
}

static void simple_backward(const float *q, const float *k, const float *v, const float *a,
                            const float *L, const float *G, int64_t B, int64_t T, int64_t D,
                            float *dq, float *dk, float *dv)
{
    int64_t cols = aft_group_width(B, D), nch = (D + cols - 1) / cols;
#pragma omp parallel for collapse(2) schedule(static) if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t c0 = ch * cols, nc = D - c0 < cols ? D - c0 : cols;
            const float *ab = a + b * D + c0, *Lb = L + b * D + c0;
            double hs[AFT_GROUP] = {0};
            float h[AFT_GROUP];
            for (int64_t t = 0; t < T; t++) {
                int64_t o = (b * T + t) * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) {
                    float sg = aft_sigmoid(q[o + c]);
                    hs[c] += G[o + c] * sg;
                    if (dq) dq[o + c] = G[o + c] * ab[c] * sg * (1.0f - sg);
                }
            }
            for (int64_t c = 0; c < nc; c++) h[c] = (float)hs[c];
            if (!dk && !dv) continue;
            for (int64_t t = 0; t < T; t++) {
                int64_t o = (b * T + t) * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) {
                    float g = aft_exp_neg(k[o + c] - Lb[c]) * h[c];
                    if (dv) dv[o + c] = g;
                    if (dk) dk[o + c] = g * (v[o + c] - ab[c]);
                }
            }
        }
}

/* ---- causal ---------------------------------------------------------------------- */

/* alpha, y [B,T,D] */
static void simple_causal_forward(const float *q, const float *k, const float *v, int64_t B,
                                  int64_t T, int64_t D, float *alpha, float *y)
{
    int64_t cols = aft_group_width(B, D), nch = (D + cols - 1) / cols;
    bool stream = xt_streams(5 * B * T * D * (int64_t)sizeof(float));
#pragma omp parallel for collapse(2) schedule(static) if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t c0 = ch * cols, nc = D - c0 < cols ? D - c0 : cols;
            float m[AFT_GROUP];
            double s[AFT_GROUP] = {0}, n[AFT_GROUP] = {0};
            float alpha_row[AFT_GROUP] XT_ALIGNED, y_row[AFT_GROUP] XT_ALIGNED;
            for (int64_t c = 0; c < nc; c++) m[c] = -INFINITY;
            for (int64_t t = 0; t < T; t++) {
                int64_t o = (b * T + t) * D + c0;
                float *ar = stream ? alpha_row : alpha + o, *yr = stream ? y_row : y + o;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) {
                    float kt = k[o + c], d = kt - m[c];
                    float x = aft_exp_neg(-fabsf(d)); /* e^(m - m') or e^(k_t - m') */
                    bool up = d > 0; /* k_t is the new max */
                    double decay = up ? x : 1.0f, e = up ? 1.0f : x;
                    m[c] = up ? kt : m[c];
                    n[c] = n[c] * decay + e * v[o + c];
                    s[c] = s[c] * decay + e;
                    /* one division for 1/s and the gate 1/(1 + e^-|q|): r = 1/(s (1 + e^-|q|));
                     * the sums in double, the ratios in float */
                    float qt = q[o + c], eq = aft_exp_neg(-fabsf(qt));
                    float r = 1.0f / ((float)s[c] * (1.0f + eq));
                    ar[c] = (float)e * (r * (1.0f + eq));
                    yr[c] = (float)n[c] * (qt >= 0 ? r : eq * r);
                }
                if (stream) {
                    xt_store_row(alpha + o, alpha_row, nc);
                    xt_store_row(y + o, y_row, nc);
                }
            }
            if (stream) xt_store_fence();
        }
}

/* Rows per block of the backward's reverse scan. Hardware prefetchers follow ascending
 * streams far better than descending ones (a tensor read backwards came at under half the
 * speed), so the backward goes over time in blocks, last block first: an ascending pass
 * does the elementwise part (the gate, H, G y, dq) into scratch and prefetches what the
 * scan reads, then the scan runs down the block from the cache. 32 rows measured best
 * (16 and 64 within noise or slower). */
enum { SIMPLE_BLOCK = 32 };

/* Floats per scratch array of the backward (H and G y): a block of rows, and a line more
 * that keeps the two arrays off the same cache sets. */
enum { SIMPLE_SCRATCH = SIMPLE_BLOCK * AFT_GROUP + 16 };

/* With y = sigmoid(q) A saved in place of A: H A = G y and dq = G A sigmoid'(q) =
 * G y (1 - sigmoid(q)), so the backward reads y where it would read A and the forward
 * writes one tensor fewer. scratch: 2 SIMPLE_SCRATCH floats per thread. */
static void simple_causal_backward(const float *q, const float *v, const float *y,
                                   const float *alpha, const float *G, int64_t B, int64_t T,
                                   int64_t D, float *scratch, float *dq, float *dk, float *dv)
{
    int64_t cols = aft_group_width(B, D), nch = (D + cols - 1) / cols;
    bool stream = xt_streams(8 * B * T * D * (int64_t)sizeof(float));
#pragma omp parallel if (B * T * D > XT_PARALLEL_GRAIN)
    {
        float *h = scratch + omp_get_thread_num() * 2 * SIMPLE_SCRATCH, *gy = h + SIMPLE_SCRATCH;
#pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < B; b++)
            for (int64_t ch = 0; ch < nch; ch++) {
                int64_t c0 = ch * cols, nc = D - c0 < cols ? D - c0 : cols;
                double r1[AFT_GROUP] = {0}, r2[AFT_GROUP] = {0};
                float keep[AFT_GROUP]; /* 1 - alpha_{t+1}; 0 past the end */
                /* a gradient nobody asked for goes to its row buffer and no further */
                float dq_row[AFT_GROUP] XT_ALIGNED, dk_row[AFT_GROUP] XT_ALIGNED,
                    dv_row[AFT_GROUP] XT_ALIGNED;
                for (int64_t c = 0; c < nc; c++) keep[c] = 0.0f;
                for (int64_t t1 = T; t1 > 0; t1 -= SIMPLE_BLOCK) {
                    int64_t t0 = t1 > SIMPLE_BLOCK ? t1 - SIMPLE_BLOCK : 0;
                    for (int64_t t = t0; t < t1; t++) { /* ascending: the elementwise parts */
                        int64_t o = (b * T + t) * D + c0, i = (t - t0) * nc;
                        float *dqr = stream || !dq ? dq_row : dq + o;
#pragma omp simd
                        for (int64_t c = 0; c < nc; c++) {
                            float sg = aft_sigmoid(q[o + c]), g = G[o + c];
                            h[i + c] = g * sg;
                            gy[i + c] = g * y[o + c];
                            dqr[c] = gy[i + c] * (1.0f - sg);
                        }
                        if (stream && dq) xt_store_row(dq + o, dq_row, nc);
                        aft_prefetch(alpha + o, nc); /* what the scan reads next */
                        aft_prefetch(v + o, nc);
                    }
                    for (int64_t t = t1 - 1; t >= t0; t--) { /* descending: the scan */
                        int64_t o = (b * T + t) * D + c0, i = (t - t0) * nc;
                        float *dkr = stream || !dk ? dk_row : dk + o;
                        float *dvr = stream || !dv ? dv_row : dv + o;
#pragma omp simd
                        for (int64_t c = 0; c < nc; c++) {
                            r1[c] = h[i + c] + keep[c] * r1[c];
                            r2[c] = gy[i + c] + keep[c] * r2[c];
                            float al = alpha[o + c];
                            keep[c] = 1.0f - al;
                            dvr[c] = (float)(al * r1[c]);
                            dkr[c] = (float)(al * (v[o + c] * r1[c] - r2[c]));
                        }
                        if (stream) {
                            if (dk) xt_store_row(dk + o, dk_row, nc);
                            if (dv) xt_store_row(dv + o, dv_row, nc);
                        }
                    }
                }
                if (stream) xt_store_fence();
            }
    }
}

/* ---- op ------------------------------------------------------------------------------ */

/* saved: 0 q, 1 k, 2 v (contiguous); non-causal 3 a, 4 L [B,1,D]; causal 3 y, 4 alpha
 * [B,T,D]. iargs: 0 causal. */
static xt_status aft_simple_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *s[5];
    for (int32_t i = 0; i < 5; i++)
        if (!(s[i] = xt_node_saved(node, i))) return xt_last_status();
    xt_tensor *q = s[0];
    int64_t B = q->shape[0], T = q->shape[1], D = q->shape[2];
    xt_tensor *gc = xt_contiguous(dout);
    xt_tensor *dt[3] = {NULL, NULL, NULL};
    bool ok = gc != NULL;
    for (int32_t i = 0; i < 3 && ok; i++)
        if (xt_node_needs(node, i)) ok = (dt[i] = xt_empty(3, q->shape, XT_FLOAT32)) != NULL;
    if (!ok) {
        xt_tensor_release(gc);
        aft_release(3, dt);
        return xt_last_status();
    }
    float *dq = dt[0] ? dt[0]->data : NULL, *dk = dt[1] ? dt[1]->data : NULL;
    float *dv = dt[2] ? dt[2]->data : NULL;
    if (node->iargs[0]) {
        xt_tensor *hold;
        float *scratch = aft_buffer(&hold, 2 * SIMPLE_SCRATCH * omp_get_max_threads());
        if (!scratch) {
            xt_tensor_release(gc);
            aft_release(3, dt);
            return xt_last_status();
        }
        simple_causal_backward(q->data, s[2]->data, s[3]->data, s[4]->data, gc->data, B, T, D,
                               scratch, dq, dk, dv);
        xt_tensor_release(hold);
    } else
        simple_backward(q->data, s[1]->data, s[2]->data, s[3]->data, s[4]->data, gc->data, B,
                        T, D, dq, dk, dv);
    xt_tensor_release(gc);
    for (int32_t i = 0; i < 3; i++) dinputs[i] = dt[i];
    return XT_OK;
}

xt_tensor *xt_aft_simple(xt_tensor *q, xt_tensor *k, xt_tensor *v, int32_t causal)
{
    if (aft_check_qkv("aft_simple", q, k, v)) return NULL;
    int64_t B = q->shape[0], T = q->shape[1], D = q->shape[2];
    int64_t ctx_shape[3] = {B, 1, D};
    xt_tensor *qc = aft_dense(q), *kc = aft_dense(k), *vc = aft_dense(v);
    xt_tensor *y = xt_empty(3, q->shape, XT_FLOAT32);
    /* for the backward, non-causal: the context a and log-normaliser L; causal: y itself
     * and alpha */
    xt_tensor *a = NULL, *L = NULL, *alpha = NULL;
    if (causal)
        alpha = xt_empty(3, q->shape, XT_FLOAT32);
    else
        a = xt_empty(3, ctx_shape, XT_FLOAT32), L = xt_empty(3, ctx_shape, XT_FLOAT32);
    xt_tensor *owned[6] = {qc, kc, vc, a, L, alpha};
    if (!qc || !kc || !vc || !y || (causal ? !alpha : !a || !L)) {
        aft_release(6, owned);
        xt_tensor_release(y);
        return NULL;
    }
    if (causal)
        simple_causal_forward(qc->data, kc->data, vc->data, B, T, D, alpha->data, y->data);
    else
        simple_forward(qc->data, kc->data, vc->data, B, T, D, a->data, L->data, y->data);

    xt_tensor *inputs[3] = {q, k, v};
    xt_tensor *saved[5] = {qc, kc, vc, causal ? y : a, causal ? alpha : L};
    bool ok = true;
    if (xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("aft_simple", aft_simple_backward, 3, inputs);
        ok = node != NULL;
        for (int32_t i = 0; i < 5 && ok; i++) ok = xt_node_save(node, saved[i]) == XT_OK;
        if (ok) {
            node->iargs[0] = causal != 0;
            xt_node_attach(node, y);
        } else {
            xt_node_release(node);
        }
    }
    aft_release(6, owned);
    if (!ok) {
        xt_tensor_release(y);
        return NULL;
    }
    return y;
}
