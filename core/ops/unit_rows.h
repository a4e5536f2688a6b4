/*
 * unit_rows.h: reading the [rows, width] matrices of a batched operand [..., rows, width]
 * in place, as GEMM operands. "Units" are the leading dims flattened (batch x heads).
 *
 * A tensor is readable in place when its rows have unit stride and do not overlap; the rows
 * may be any distance apart and the units anywhere (heads permuted out of [B,T,H,d], a
 * narrowed cache, an expanded dim). Unit n's matrix then starts at data + off[n] with rows
 * ld floats apart. Anything else is copied once (outside the autograd graph).
 */
#ifndef XT_UNIT_ROWS_H
#define XT_UNIT_ROWS_H

#include "internal.h"

typedef struct xt_unit_rows {
    const float *data;
    int64_t ld;      /* floats between rows */
    int64_t *off;    /* [units] start of each unit's matrix, owned */
} xt_unit_rows;

/* t itself (+1) when readable in place, else a contiguous copy made without grad; NULL on
 * OOM. Either way the caller releases it, and it shares t's values. */
xt_tensor *xt_unit_rows_readable(xt_tensor *t);

/* The operand view of t (readable in place) over `units` units; XT_ERR_OOM (message naming
 * op) on failure, with nothing left allocated. */
xt_status xt_unit_rows_of(const xt_tensor *t, int64_t units, xt_unit_rows *rows, const char *op);
void xt_unit_rows_free(xt_unit_rows *rows);

/* Row i of unit n. */
static inline const float *xt_unit_row(const xt_unit_rows *r, int64_t n, int64_t i)
{
    return r->data + r->off[n] + i * r->ld;
}

#endif
