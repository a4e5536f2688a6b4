/* xlua/repl.c: the interactive loop. C reads lines (GNU readline on a terminal, plain
 * lines from a pipe), runs them and handles Ctrl-C; lua/xt/repl.lua decides what a chunk
 * means (expression or statement, complete or not), prints results and completes words.
 *
 * On a terminal readline runs through its callback interface, so that Ctrl-C at the
 * prompt can drop the line being typed (and any unfinished chunk) and show a new prompt,
 * instead of ending the process. */
#include "xlua.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <luajit.h>
#include "xt.h"

#define PROMPT "> "
#define PROMPT_MORE ">> "
#define HISTORY_MAX 1000

struct repl {
    lua_State *L;
    int tty;                      /* stdin is a terminal: readline, prompts, history */
    int module_ref;               /* registry reference to the xt.repl table */
    char history_path[PATH_MAX];  /* "" when history is off */
    int history_warned;           /* a failed save is reported once */
};

enum { READ_LINE, READ_EOF, READ_CANCEL };

/* Push xt.repl's function `name`. */
static void push_repl_function(struct repl *r, const char *name)
{
    lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->module_ref);
    lua_getfield(r->L, -1, name);
    lua_remove(r->L, -2);
}

/* An error message in the REPL: printed as is (it carries its traceback), then popped. */
static void print_error(lua_State *L)
{
    const char *msg = lua_isnil(L, -1) ? "(error object is a nil value)" : lua_tostring(L, -1);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
}

void xlua_install_globals(lua_State *L)
{
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "xt.repl");
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_getfield(L, -1, "install_globals");
        lua_pushvalue(L, LUA_GLOBALSINDEX);
        lua_pcall(L, 1, 0, 0);
    }
    lua_settop(L, top);
}

/* ---- reading lines --------------------------------------------------------- */

static char *rl_line;       /* what readline's line handler received (NULL: end of input) */
static int rl_line_done;

static void on_line(char *line)
{
    rl_line = line;
    rl_line_done = 1;
    rl_callback_handler_remove();   /* no new prompt until the next read */
}

/* Readline 8.1 and later print the newline themselves at end of input, when bracketed
 * paste is on. */
static int readline_ended_line(void)
{
#if RL_READLINE_VERSION >= 0x0801
    const char *paste = rl_variable_value("enable-bracketed-paste");
    return paste != NULL && strcmp(paste, "on") == 0;
#else
    return 0;
#endif
}

static int read_tty(const char *prompt, char **line)
{
    /* SIGINT stays blocked except inside pselect, so it is never lost between the flag
     * check and the wait, and never lands inside readline's own key handling. */
    sigset_t sigint, saved, waiting;
    sigemptyset(&sigint);
    sigaddset(&sigint, SIGINT);
    sigprocmask(SIG_BLOCK, &sigint, &saved);
    waiting = saved;
    sigdelset(&waiting, SIGINT);
    xlua_take_interrupt();

    rl_line = NULL;
    rl_line_done = 0;
    rl_callback_handler_install(prompt, on_line);
    int result = READ_LINE;
    while (!rl_line_done) {
        if (xlua_take_interrupt()) {
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_callback_handler_remove();
            fputs("\n", stdout);
            result = READ_CANCEL;
            break;
        }
        fd_set in;
        FD_ZERO(&in);
        FD_SET(STDIN_FILENO, &in);
        if (pselect(STDIN_FILENO + 1, &in, NULL, NULL, NULL, &waiting) < 0) {
            if (errno == EINTR) continue;
            rl_callback_handler_remove();
            break;   /* stdin is gone: end of input */
        }
        rl_callback_read_char();
    }
    sigprocmask(SIG_SETMASK, &saved, NULL);
    if (result == READ_CANCEL) return READ_CANCEL;
    if (rl_line == NULL) {   /* Ctrl-D: leave the shell's prompt on a line of its own */
        if (!readline_ended_line()) fputs("\n", stdout);
        return READ_EOF;
    }
    *line = rl_line;
    return READ_LINE;
}

static int read_pipe(char **line)
{
    char *buf = NULL;
    size_t cap = 0;
    errno = 0;
    ssize_t n = getline(&buf, &cap, stdin);
    if (n < 0) {
        free(buf);
        if (errno == EINTR) {
            clearerr(stdin);
            xlua_take_interrupt();
            return READ_CANCEL;
        }
        return READ_EOF;
    }
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = '\0';
    *line = buf;
    return READ_LINE;
}

/* One line into *line (malloc'd). */
static int read_line(struct repl *r, const char *prompt, char **line)
{
    fflush(stdout);
    return r->tty ? read_tty(prompt, line) : read_pipe(line);
}

/* ---- history ----------------------------------------------------------------- */

static void history_open(struct repl *r)
{
    const char *path = getenv("XLUA_HISTORY");   /* set but empty: no history file */
    r->history_path[0] = '\0';
    if (path == NULL) {
        const char *home = getenv("HOME");
        if (home == NULL || !*home) return;
        if (snprintf(r->history_path, sizeof r->history_path, "%s/.xlua_history", home) >=
            (int)sizeof r->history_path)
            r->history_path[0] = '\0';
    } else if (strlen(path) < sizeof r->history_path) {
        strcpy(r->history_path, path);
    }
    using_history();
    stifle_history(HISTORY_MAX);
    /* A "#<time>" line before each entry lets a multi-line chunk come back as one entry. */
    history_comment_char = '#';
    history_write_timestamps = 1;
    history_multiline_entries = 1;
    if (r->history_path[0]) read_history(r->history_path);   /* a missing file is fine */
}

/* Remember a chunk (several lines are one entry) and append it to the file at once, so
 * history survives os.exit and crashes. An unwritable file only costs a warning. */
static void history_add(struct repl *r, const char *chunk)
{
    if (!r->tty || chunk[strspn(chunk, " \t\n")] == '\0') return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, chunk) == 0) return;
    add_history(chunk);
    if (!r->history_path[0]) return;
    int err = append_history(1, r->history_path);
    if (err == ENOENT) err = write_history(r->history_path);
    if (err && !r->history_warned) {
        fprintf(stderr, "%s: cannot save history to %s: %s\n", XLUA_PROGNAME,
                r->history_path, strerror(err));
        r->history_warned = 1;
    }
}

static void history_close(struct repl *r)
{
    if (r->history_path[0]) history_truncate_file(r->history_path, HISTORY_MAX);
    clear_history();
}

/* ---- completion: readline asks, xt.repl.complete answers ------------------------ */

static struct repl *completing;   /* the REPL readline is working for */
static char **candidates;         /* strdup'd answers not yet handed to readline */
static size_t candidate_next, candidate_count;

static char *next_candidate(const char *text, int state)
{
    (void)text;
    (void)state;
    return candidate_next < candidate_count ? candidates[candidate_next++] : NULL;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;        /* never fall back to file names */
    rl_completion_append_character = '\0';   /* the user types '(' or '.' next */
    struct repl *r = completing;
    lua_State *L = r->L;
    int top = lua_gettop(L);
    push_repl_function(r, "complete");
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return NULL;
    }
    size_t n = lua_objlen(L, -1);
    candidates = calloc(n + 1, sizeof *candidates);
    candidate_next = candidate_count = 0;
    for (size_t i = 1; candidates && i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        const char *s = lua_tostring(L, -1);
        char *copy = s ? strdup(s) : NULL;
        if (copy) candidates[candidate_count++] = copy;
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    char **matches = candidate_count ? rl_completion_matches(text, next_candidate) : NULL;
    while (candidate_next < candidate_count) free(candidates[candidate_next++]);
    free(candidates);
    candidates = NULL;
    candidate_count = candidate_next = 0;
    return matches;
}

static void readline_setup(struct repl *r)
{
    completing = r;
    rl_readline_name = "xlua";   /* for $if xlua in ~/.inputrc */
    rl_attempted_completion_function = complete;
    /* '.' and ':' are not breaks: the word to complete is a whole path like xt.nn.Lin */
    rl_completer_word_break_characters = (char *)" \t\n\"'`@$><=;|&{}()[],+-*/%^~#";
}

/* ---- the loop ---------------------------------------------------------------- */

enum { CHUNK_OK, CHUNK_NONE, CHUNK_EOF };

/* Read lines until they make a chunk that compiles (pushes the function, CHUNK_OK), a
 * syntax error (reported, CHUNK_NONE), Ctrl-C (CHUNK_NONE) or end of input (CHUNK_EOF). */
static int read_chunk(struct repl *r)
{
    lua_State *L = r->L;
    char *line;
    int got = read_line(r, PROMPT, &line);
    if (got == READ_EOF) return CHUNK_EOF;
    if (got == READ_CANCEL) return CHUNK_NONE;
    lua_pushstring(L, line);   /* the chunk so far */
    free(line);
    for (;;) {
        push_repl_function(r, "compile");
        lua_pushvalue(L, -2);
        int status = xlua_docall(L, 1, 3);   /* -> fn | nil, message, incomplete */
        if (status != 0) {
            print_error(L);
            lua_pop(L, 1);
            return CHUNK_NONE;
        }
        if (lua_isfunction(L, -3)) {
            lua_pop(L, 2);
            history_add(r, lua_tostring(L, -2));
            lua_remove(L, -2);
            return CHUNK_OK;
        }
        int incomplete = lua_toboolean(L, -1);
        lua_pop(L, 1);
        lua_remove(L, -2);   /* chunk, message */
        if (!incomplete) {
            history_add(r, lua_tostring(L, -2));   /* kept, to be fixed and rerun */
            print_error(L);
            lua_pop(L, 1);
            return CHUNK_NONE;
        }
        got = read_line(r, PROMPT_MORE, &line);
        if (got == READ_CANCEL) {
            lua_pop(L, 2);
            return CHUNK_NONE;
        }
        if (got == READ_EOF) {   /* input ended inside a chunk: say what was missing */
            print_error(L);
            lua_pop(L, 1);
            return CHUNK_EOF;
        }
        lua_pop(L, 1);
        lua_pushliteral(L, "\n");
        lua_pushstring(L, line);
        free(line);
        lua_concat(L, 3);
    }
}

/* Run the function on top; print what it returns through xt.repl.show. */
static void eval_print(struct repl *r)
{
    lua_State *L = r->L;
    int base = lua_gettop(L) - 1;
    if (xlua_docall(L, 0, LUA_MULTRET) != 0) {
        print_error(L);
        return;
    }
    int n = lua_gettop(L) - base;
    if (n == 0) return;
    push_repl_function(r, "show");
    lua_insert(L, base + 1);
    if (xlua_docall(L, n, 0) != 0) print_error(L);
}

static void banner(void)
{
    printf("xlua %s (%s) -- xt, nn, F and optim are globals; Tab completes, Ctrl-D exits\n",
           xt_version(), LUAJIT_VERSION);
}

int xlua_repl(lua_State *L)
{
    struct repl r = {.L = L, .tty = isatty(STDIN_FILENO)};
    lua_getglobal(L, "require");
    lua_pushliteral(L, "xt.repl");
    if (xlua_report(L, xlua_docall(L, 1, 1)) != 0) return 1;
    r.module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (r.tty) {
        banner();
        history_open(&r);
        readline_setup(&r);
    }
    for (;;) {
        int top = lua_gettop(L);
        int got = read_chunk(&r);
        if (got == CHUNK_EOF) break;
        if (got == CHUNK_OK) eval_print(&r);
        lua_settop(L, top);
    }
    if (r.tty) history_close(&r);
    fflush(stdout);
    luaL_unref(L, LUA_REGISTRYINDEX, r.module_ref);
    return 0;
}
