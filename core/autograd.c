/*
 * autograd.c: define-by-run reverse mode.
 *
 * An op that needs grad records a node on its result (xt_record). The graph is
 * nodes linked by edges from a node to the nodes (or leaf tensors) of its
 * inputs; a tensor owns its grad_fn, a node owns its edges, so the graph lives
 * exactly as long as the tensors that can reach it. Saved tensors are detached
 * aliases: they share storage (and so the version counter) but hold no graph,
 * which keeps the ownership acyclic.
 *
 * xt_backward: count, for every node reachable from the root, how many edges
 * point at it; then run nodes whose count dropped to zero, in an explicit
 * stack (no recursion, so deep graphs are fine). A node's backward gets the sum
 * of the gradients flowing into it and returns one gradient per input; the
 * engine sums broadcast dims away and accumulates.
 */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- nodes ------------------------------------------------------------------ */

static void note_freed_lua_node(int64_t id);

bool xt_needs_grad(int32_t n, xt_tensor *const *inputs)
{
    if (!xt_is_grad_enabled()) return false;
    for (int32_t i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

xt_node *xt_node_new(const char *name, xt_backward_fn backward, int32_t n,
                     xt_tensor *const *inputs)
{
    xt_node *node = calloc(1, sizeof *node);
    xt_edge *edges = calloc((size_t)(n > 0 ? n : 1), sizeof *edges);
    if (!node || !edges) {
        free(node);
        free(edges);
        return xt_fail_null(XT_ERR_OOM, "%s: out of memory recording the graph", name);
    }
    node->refcount = 1;
    node->name = name;
    node->backward = backward;
    node->n_inputs = n;
    node->inputs = edges;
    for (int32_t i = 0; i < n; i++) {
        xt_tensor *t = inputs[i];
        if (!t) continue;
        edges[i].ndim = t->ndim;
        memcpy(edges[i].shape, t->shape, sizeof t->shape);
        edges[i].dtype = t->dtype;
        if (!t->requires_grad) continue;
        if (t->grad_fn) {
            edges[i].fn = t->grad_fn;
            __atomic_add_fetch(&t->grad_fn->refcount, 1, __ATOMIC_RELAXED);
        } else {
            edges[i].leaf = t;
            xt_tensor_retain(t);
        }
    }
    return node;
}

xt_status xt_node_save(xt_node *node, xt_tensor *t)
{
    if (node->n_saved >= XT_NODE_MAX_SAVED)
        return xt_fail(XT_ERR_STATE, "%s: too many saved tensors", node->name);
    xt_tensor *alias = xt_tensor_new_view(t->storage, t->dtype, t->ndim, t->shape, t->strides,
                                          t->offset);
    if (!alias) return xt_last_status();
    node->saved[node->n_saved] = alias;
    node->saved_version[node->n_saved] = xt_tensor_version(t);
    node->n_saved++;
    return XT_OK;
}

void xt_node_attach(xt_node *node, xt_tensor *out)
{
    xt_node_release(out->grad_fn);
    out->grad_fn = node;
    out->requires_grad = 1;
}

bool xt_node_needs(const xt_node *node, int32_t i)
{
    return i < node->n_inputs && (node->inputs[i].fn || node->inputs[i].leaf);
}

xt_tensor *xt_node_saved(xt_node *node, int32_t i)
{
    xt_tensor *t = node->saved[i];
    if (!t)
        return xt_fail_null(XT_ERR_STATE, "%s: saved tensors were already freed", node->name);
    if (xt_tensor_version(t) != node->saved_version[i])
        return xt_fail_null(XT_ERR_STATE,
                            "%s: a tensor needed for the gradient was modified in place after "
                            "it was used (version %u, expected %u)",
                            node->name, xt_tensor_version(t), node->saved_version[i]);
    return t;
}

static void node_free_saved(xt_node *node)
{
    for (int32_t i = 0; i < node->n_saved; i++) {
        xt_tensor_release(node->saved[i]);
        node->saved[i] = NULL;
    }
    if (node->extra && node->free_extra) node->free_extra(node->extra);
    node->extra = NULL;
    node->released = true;
}

/* Iterative, so releasing the head of a long chain does not recurse. */
void xt_node_release(xt_node *node)
{
    if (!node) return;
    int64_t cap = 16, top = 0;
    xt_node **stack = malloc((size_t)cap * sizeof *stack);
    xt_node *local[1];
    if (!stack) {
        stack = local;
        cap = 1;
    }
    stack[top++] = node;
    while (top > 0) {
        xt_node *n = stack[--top];
        if (__atomic_sub_fetch(&n->refcount, 1, __ATOMIC_ACQ_REL) != 0) continue;
        node_free_saved(n);
        if (!n->backward) note_freed_lua_node(n->iargs[0]);
        if (n->lua_name) free(n->lua_name);
        xt_tensor_release(n->dout);
        for (int32_t i = 0; i < n->n_inputs; i++) {
            xt_tensor_release(n->inputs[i].leaf);
            xt_node *next = n->inputs[i].fn;
            if (!next) continue;
            if (top == cap) {
                xt_node **bigger = stack == local ? NULL : realloc(stack, (size_t)cap * 2 * sizeof *stack);
                if (!bigger) {
                    xt_node_release(next); /* out of memory: fall back to recursion */
                    continue;
                }
                stack = bigger;
                cap *= 2;
            }
            stack[top++] = next;
        }
        free(n->inputs);
        free(n);
    }
    if (stack != local) free(stack);
}

bool xt_record(xt_tensor *out, const char *name, xt_backward_fn backward, int32_t n,
               xt_tensor *const *inputs, uint32_t save_mask)
{
    if (!xt_needs_grad(n, inputs)) return true;
    xt_node *node = xt_node_new(name, backward, n, inputs);
    if (!node) return false;
    for (int32_t i = 0; i < n && i < 31; i++) {
        if (!(save_mask & (1u << i))) continue;
        if (xt_node_save(node, inputs[i]) != XT_OK) {
            xt_node_release(node);
            return false;
        }
    }
    if ((save_mask & XT_SAVE_OUT) && xt_node_save(node, out) != XT_OK) {
        xt_node_release(node);
        return false;
    }
    xt_node_attach(node, out);
    return true;
}

/* ---- tensor-level API --------------------------------------------------------- */

xt_status xt_set_requires_grad(xt_tensor *t, int32_t requires_grad)
{
    if (t->grad_fn && !requires_grad)
        return xt_fail(XT_ERR_STATE,
                       "requires_grad: only leaf tensors can stop requiring grad; use detach()");
    if (requires_grad && t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "requires_grad: only float32 tensors can require grad, got %s",
                       xt_dtype_name(t->dtype));
    if (!t->grad_fn) t->requires_grad = requires_grad != 0;
    return XT_OK;
}

int32_t xt_is_leaf(const xt_tensor *t) { return t->grad_fn == NULL; }

const char *xt_grad_fn_name(const xt_tensor *t) { return t->grad_fn ? t->grad_fn->name : NULL; }

xt_tensor *xt_get_grad(xt_tensor *t)
{
    xt_tensor_retain(t->grad);
    return t->grad;
}

xt_status xt_set_grad(xt_tensor *t, xt_tensor *grad)
{
    if (grad && !xt_same_shape(t, grad)) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE, "grad: assigned gradient has shape %s, tensor has shape %s",
                       xt_shape_str(a, grad->ndim, grad->shape), xt_shape_str(b, t->ndim, t->shape));
    }
    if (grad && grad->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "grad: gradients are float32, got %s", xt_dtype_name(grad->dtype));
    xt_tensor_retain(grad);
    xt_tensor_release(t->grad);
    t->grad = grad;
    return XT_OK;
}

xt_tensor *xt_detach(xt_tensor *t)
{
    return xt_tensor_new_view(t->storage, t->dtype, t->ndim, t->shape, t->strides, t->offset);
}

/* ---- the engine ---------------------------------------------------------------- */

typedef struct node_list {
    xt_node **items;
    int64_t count, cap;
} node_list;

static bool list_push(node_list *l, xt_node *n)
{
    if (l->count == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 64;
        xt_node **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) return false;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->count++] = n;
    return true;
}

/* Accumulate d into leaf->grad: steal d when nobody else holds it, else copy. */
static xt_status accumulate_leaf(xt_tensor *leaf, xt_tensor *d)
{
    if (!leaf->grad) {
        bool alone = d->refcount == 1 && d->storage->refcount == 1 && xt_is_contiguous(d);
        xt_tensor *g = alone ? (xt_tensor_retain(d), d) : xt_clone(d);
        if (!g) return xt_last_status();
        leaf->grad = g;
        return XT_OK;
    }
    return xt_binary_(XT_ADD, leaf->grad, d);
}

/* Sum into edge's target shape and hand d over (consumes the caller's d). */
static xt_status deliver(xt_edge *edge, xt_tensor *d, node_list *ready)
{
    bool broadcast = d->ndim != edge->ndim ||
                     memcmp(d->shape, edge->shape, sizeof(int64_t) * (size_t)d->ndim) != 0;
    if (broadcast) {
        xt_tensor *reduced = xt_sum_to(d, edge->ndim, edge->shape);
        xt_tensor_release(d);
        if (!reduced) return xt_last_status();
        d = reduced;
    }
    xt_status st = XT_OK;
    if (edge->leaf) {
        st = accumulate_leaf(edge->leaf, d);
    } else if (edge->fn) {
        xt_node *fn = edge->fn;
        if (!fn->dout) {
            fn->dout = d;
            d = NULL;
        } else {
            xt_tensor *sum = xt_binary(XT_ADD, fn->dout, d);
            if (!sum) st = xt_last_status();
            else {
                xt_tensor_release(fn->dout);
                fn->dout = sum;
            }
        }
        if (--fn->pending == 0 && !list_push(ready, fn))
            st = xt_fail(XT_ERR_OOM, "backward: out of memory");
    }
    xt_tensor_release(d);
    return st;
}

static xt_status run_node(xt_node *n, node_list *ready, bool retain_graph)
{
    if (n->released)
        return xt_fail(XT_ERR_STATE,
                       "backward: %s: trying to backward through the graph a second time; its "
                       "saved tensors were freed (pass retain_graph=true to the first backward)",
                       n->name);
    xt_tensor *dinputs[n->n_inputs > 0 ? n->n_inputs : 1];
    memset(dinputs, 0, sizeof dinputs);
    xt_status st = XT_OK;
    if (n->dout) {
        st = n->backward(n, n->dout, dinputs);
        if (st != XT_OK) {
            char prefix[128];
            snprintf(prefix, sizeof prefix, "backward of %s: ", n->name);
            if (strncmp(xt_last_error(), prefix, strlen(prefix)) != 0) xt_error_prefix(prefix);
        }
    }
    for (int32_t i = 0; i < n->n_inputs; i++) {
        xt_edge *e = &n->inputs[i];
        if (st == XT_OK && dinputs[i] && (e->fn || e->leaf)) {
            st = deliver(e, dinputs[i], ready);
            dinputs[i] = NULL;
        } else {
            xt_tensor_release(dinputs[i]);
            /* An input with no gradient this time still stops waiting on us. */
            if (st == XT_OK && e->fn && --e->fn->pending == 0 && !list_push(ready, e->fn))
                st = xt_fail(XT_ERR_OOM, "backward: out of memory");
        }
    }
    xt_tensor_release(n->dout);
    n->dout = NULL;
    if (!retain_graph) node_free_saved(n);
    return st;
}

/*
 * A run of the engine. xt_backward_step runs C nodes until the graph is done or a node
 * whose backward is written in Lua is ready; it then returns that node's id and waits:
 * Lua reads the node's output gradient, computes the input gradients, hands them over
 * with xt_backward_supply and steps again. C never calls into Lua.
 */
struct xt_backward_run {
    node_list all, ready;
    bool retain_graph;
    int32_t grad_mode;
    xt_node *waiting;          /* the Lua node handed out by the last step */
    xt_tensor **supplied;      /* its input gradients, one slot per input */
    xt_status status;
};

static void run_fail(xt_backward_run *run, xt_status st)
{
    if (run->status == XT_OK) run->status = st;
}

xt_backward_run *xt_backward_begin(xt_tensor *root, xt_tensor *grad, int32_t retain_graph)
{
    if (!root->requires_grad)
        return xt_fail_null(XT_ERR_STATE,
                            "backward: the tensor does not require grad and has no grad_fn");
    xt_tensor *seed;
    if (grad) {
        if (!xt_same_shape(grad, root)) {
            char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
            return xt_fail_null(XT_ERR_SHAPE, "backward: gradient has shape %s, tensor has shape %s",
                                xt_shape_str(a, grad->ndim, grad->shape),
                                xt_shape_str(b, root->ndim, root->shape));
        }
        seed = grad->dtype == XT_FLOAT32 ? (xt_tensor_retain(grad), grad)
                                         : xt_to_dtype(grad, XT_FLOAT32);
    } else {
        if (xt_numel(root) != 1) {
            char a[XT_SHAPE_STR];
            return xt_fail_null(XT_ERR_SHAPE,
                                "backward: grad can be implied only for a one-element tensor, "
                                "this one has shape %s; pass a gradient",
                                xt_shape_str(a, root->ndim, root->shape));
        }
        seed = xt_full(root->ndim, root->shape, XT_FLOAT32, 1.0);
    }
    if (!seed) return NULL;
    xt_backward_run *run = calloc(1, sizeof *run);
    if (!run) {
        xt_tensor_release(seed);
        return xt_fail_null(XT_ERR_OOM, "backward: out of memory");
    }
    run->retain_graph = retain_graph != 0;
    run->grad_mode = xt_set_grad_enabled(0);

    if (!root->grad_fn) {
        run_fail(run, accumulate_leaf(root, seed));
        xt_tensor_release(seed);
        return run;
    }
    /* Every reachable node, with the count of edges into it. */
    xt_node *start = root->grad_fn;
    if (!list_push(&run->all, start)) run_fail(run, xt_fail(XT_ERR_OOM, "backward: out of memory"));
    start->mark = 1;
    start->pending = 0;
    for (int64_t i = 0; run->status == XT_OK && i < run->all.count; i++) {
        xt_node *n = run->all.items[i];
        for (int32_t k = 0; k < n->n_inputs; k++) {
            xt_node *next = n->inputs[k].fn;
            if (!next) continue;
            if (!next->mark) {
                next->mark = 1;
                next->pending = 0;
                if (!list_push(&run->all, next)) {
                    run_fail(run, xt_fail(XT_ERR_OOM, "backward: out of memory"));
                    break;
                }
            }
            next->pending++;
        }
    }
    if (run->status == XT_OK) {
        xt_tensor_release(start->dout);
        start->dout = seed;
        seed = NULL;
        if (!list_push(&run->ready, start)) run_fail(run, xt_fail(XT_ERR_OOM, "backward: out of memory"));
    }
    xt_tensor_release(seed);
    return run;
}

/* Hand the Lua node's supplied gradients on, as run_node does for a C node. */
static xt_status finish_waiting(xt_backward_run *run)
{
    xt_node *n = run->waiting;
    xt_status st = XT_OK;
    for (int32_t i = 0; i < n->n_inputs; i++) {
        xt_edge *e = &n->inputs[i];
        xt_tensor *d = run->supplied[i];
        run->supplied[i] = NULL;
        if (st == XT_OK && d && (e->fn || e->leaf)) {
            st = deliver(e, d, &run->ready);
        } else {
            xt_tensor_release(d);
            if (st == XT_OK && e->fn && --e->fn->pending == 0 && !list_push(&run->ready, e->fn))
                st = xt_fail(XT_ERR_OOM, "backward: out of memory");
        }
    }
    xt_tensor_release(n->dout);
    n->dout = NULL;
    if (!run->retain_graph) node_free_saved(n);
    free(run->supplied);
    run->supplied = NULL;
    run->waiting = NULL;
    return st;
}

int64_t xt_backward_step(xt_backward_run *run)
{
    if (run->status != XT_OK) return -1;
    if (run->waiting) run_fail(run, finish_waiting(run));
    while (run->status == XT_OK && run->ready.count > 0) {
        xt_node *n = run->ready.items[--run->ready.count];
        if (n->backward) {
            run_fail(run, run_node(n, &run->ready, run->retain_graph));
            continue;
        }
        if (n->released) {
            run_fail(run, xt_fail(XT_ERR_STATE,
                                  "backward: %s: trying to backward through the graph a second "
                                  "time (pass retain_graph=true to the first backward)",
                                  n->name));
            break;
        }
        run->supplied = calloc((size_t)(n->n_inputs > 0 ? n->n_inputs : 1), sizeof(xt_tensor *));
        if (!run->supplied) {
            run_fail(run, xt_fail(XT_ERR_OOM, "backward: out of memory"));
            break;
        }
        run->waiting = n;
        return n->iargs[0];
    }
    return run->status == XT_OK ? 0 : -1;
}

xt_tensor *xt_backward_waiting_dout(xt_backward_run *run)
{
    if (!run->waiting || !run->waiting->dout) return NULL;
    xt_tensor_retain(run->waiting->dout);
    return run->waiting->dout;
}

xt_status xt_backward_supply(xt_backward_run *run, int32_t input, xt_tensor *grad)
{
    xt_node *n = run->waiting;
    if (!n) return xt_fail(XT_ERR_STATE, "backward: no Lua function is waiting for gradients");
    if (input < 0 || input >= n->n_inputs)
        return xt_fail(XT_ERR_ARG, "backward of %s: input %lld does not exist (it has %d)", n->name,
                       (long long)xt_shown(input), n->n_inputs);
    xt_edge *e = &n->inputs[input];
    int32_t nd;
    int64_t shape[XT_MAX_DIMS];
    if (xt_broadcast_shapes(grad->ndim, grad->shape, e->ndim, e->shape, &nd, shape, "backward") ||
        nd != grad->ndim || memcmp(shape, grad->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE, "backward of %s: gradient %lld has shape %s, input has shape %s",
                       n->name, (long long)xt_shown(input), xt_shape_str(a, grad->ndim, grad->shape),
                       xt_shape_str(b, e->ndim, e->shape));
    }
    xt_tensor *g = grad->dtype == XT_FLOAT32 ? (xt_tensor_retain(grad), grad)
                                             : xt_to_dtype(grad, XT_FLOAT32);
    if (!g) return xt_last_status();
    xt_tensor_release(run->supplied[input]);
    run->supplied[input] = g;
    return XT_OK;
}

void xt_backward_end(xt_backward_run *run)
{
    if (!run) return;
    if (run->supplied && run->waiting)
        for (int32_t i = 0; i < run->waiting->n_inputs; i++) xt_tensor_release(run->supplied[i]);
    free(run->supplied);
    for (int64_t i = 0; i < run->all.count; i++) {
        run->all.items[i]->mark = 0;
        xt_tensor_release(run->all.items[i]->dout);
        run->all.items[i]->dout = NULL;
    }
    free(run->all.items);
    free(run->ready.items);
    xt_set_grad_enabled(run->grad_mode);
    free(run);
}

xt_status xt_backward(xt_tensor *root, xt_tensor *grad, int32_t retain_graph)
{
    xt_backward_run *run = xt_backward_begin(root, grad, retain_graph);
    if (!run) return xt_last_status();
    int64_t id = xt_backward_step(run);
    xt_status st = run->status;
    if (id > 0)
        st = xt_fail(XT_ERR_STATE, "backward: the graph holds %s, a function written in Lua; "
                     "run backward from Lua", run->waiting->name);
    xt_backward_end(run);
    return st;
}

/* ---- functions written in Lua ---------------------------------------------------- */

/* Ids of freed Lua nodes, for Lua to drop their closures (C never calls Lua). */
static struct {
    pthread_mutex_t lock;
    int64_t *ids;
    int64_t count, cap;
} freed_lua_nodes = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

static void note_freed_lua_node(int64_t id)
{
    pthread_mutex_lock(&freed_lua_nodes.lock);
    if (freed_lua_nodes.count == freed_lua_nodes.cap) {
        int64_t cap = freed_lua_nodes.cap ? freed_lua_nodes.cap * 2 : 64;
        int64_t *ids = realloc(freed_lua_nodes.ids, (size_t)cap * sizeof *ids);
        if (ids) {
            freed_lua_nodes.ids = ids;
            freed_lua_nodes.cap = cap;
        }
    }
    if (freed_lua_nodes.count < freed_lua_nodes.cap) freed_lua_nodes.ids[freed_lua_nodes.count++] = id;
    pthread_mutex_unlock(&freed_lua_nodes.lock);
}

int32_t xt_lua_nodes_freed(int64_t *ids, int32_t capacity)
{
    pthread_mutex_lock(&freed_lua_nodes.lock);
    int32_t n = 0;
    while (n < capacity && freed_lua_nodes.count > 0) ids[n++] = freed_lua_nodes.ids[--freed_lua_nodes.count];
    pthread_mutex_unlock(&freed_lua_nodes.lock);
    return n;
}

int32_t xt_record_lua(xt_tensor *out, const char *name, int64_t id, int32_t n,
                      xt_tensor *const *inputs)
{
    if (id <= 0) return xt_fail(XT_ERR_ARG, "record_lua: id must be positive"), -1;
    if (!xt_needs_grad(n, inputs)) return 0;
    char *owned_name = strdup(name ? name : "lua function");
    xt_node *node = owned_name ? xt_node_new(owned_name, NULL, n, inputs) : NULL;
    if (!node) {
        free(owned_name);
        if (xt_last_status() == XT_OK) xt_fail(XT_ERR_OOM, "record_lua: out of memory");
        return -1;
    }
    node->iargs[0] = id;
    node->lua_name = owned_name;
    xt_node_attach(node, out);
    return 1;
}
