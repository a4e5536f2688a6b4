/* xlua/run.c: running Lua code the way the `lua` standalone does: a traceback on error,
 * "xlua: message" on stderr, and Ctrl-C turned into a Lua error through a debug hook
 * (a signal handler may not touch the Lua state otherwise). */
#include "xlua.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The state running Lua code under xlua_docall, NULL otherwise; read by the handler. */
static lua_State *volatile running_state;
/* Ctrl-C while running: set by the handler, cleared once the hook has raised the error. */
static volatile sig_atomic_t interrupt_pending;
/* Ctrl-C while no Lua code runs (at the prompt). */
static volatile sig_atomic_t interrupted_idle;

static void install_handler(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: a blocking read at the prompt returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    interrupt_pending = 0;
    luaL_error(L, "interrupted!");
}

static void on_sigint(int sig)
{
    lua_State *L = running_state;
    if (L == NULL) {
        interrupted_idle = 1;
        return;
    }
    /* Code JIT-compiled by LuaJIT does not run hooks, so a tight compiled loop may never
     * see this one: the next Ctrl-C takes the default action and ends the process. */
    signal(sig, SIG_DFL);
    interrupt_pending = 1;
    lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void xlua_init_signals(void) { install_handler(on_sigint); }

int xlua_take_interrupt(void)
{
    int was = interrupted_idle;
    interrupted_idle = 0;
    return was;
}

/* os.exit([status [, close]]): as LuaJIT's, but it closes the Lua state unless close is
 * false, so finalizers run first: tensors go back to libxt, files are flushed, and
 * the sanitizer build sees no leak when a script ends with os.exit. */
static int os_exit(lua_State *L)
{
    int status = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE)
                                     : (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
    int close = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
    fflush(NULL);
    if (close) {
        running_state = NULL;   /* no Ctrl-C hook on a state being freed */
        lua_close(L);
    }
    exit(status);
}

void xlua_replace_exit(lua_State *L)
{
    lua_getglobal(L, "os");
    lua_pushcfunction(L, os_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
}

/* The message handler: error object -> "message\nstack traceback:...". A nil error stays
 * nil: like lua.c, xlua then exits with status 1 and prints nothing (busted ends a failed
 * run with error() under Lua 5.1). */
static int traceback(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) return 1;
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int xlua_docall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;   /* where the function is */
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    running_state = L;
    int status = lua_pcall(L, nargs, nresults, base);
    running_state = NULL;
    install_handler(on_sigint);   /* the handler may have reset it to the default */
    if (interrupt_pending) {      /* Ctrl-C came too late for the hook to run: drop it */
        lua_sethook(L, NULL, 0, 0);
        interrupt_pending = 0;
    }
    lua_remove(L, base);
    return status;
}

int xlua_report(lua_State *L, int status)
{
    if (status != 0 && lua_isnil(L, -1)) {
        lua_pop(L, 1);
    } else if (status != 0) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", XLUA_PROGNAME,
                msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

int xlua_run_string(lua_State *L, const char *code, const char *chunkname)
{
    int status = luaL_loadbuffer(L, code, strlen(code), chunkname);
    if (status == 0) status = xlua_docall(L, 0, 0);
    return xlua_report(L, status);
}

int xlua_run_file(lua_State *L, const char *path, char **args, int nargs)
{
    /* luaL_loadfile reads stdin for NULL; LuaJIT's lexer skips a first line starting
     * with '#', so scripts may start with a shebang. */
    int status = luaL_loadfile(L, path);
    if (status == 0) {
        luaL_checkstack(L, nargs, "too many arguments to script");
        for (int i = 0; i < nargs; i++) lua_pushstring(L, args[i]);
        status = xlua_docall(L, nargs, 0);
    }
    return xlua_report(L, status);
}

int xlua_require(lua_State *L, const char *spec)
{
    /* "-l name=mod" stores require 'mod' in global name; "-l mod" in global mod when
     * mod is a plain identifier (a dotted name has no global of its own). */
    const char *eq = strchr(spec, '=');
    const char *module = eq ? eq + 1 : spec;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    int status = xlua_docall(L, 1, 1);
    if (status != 0) return xlua_report(L, status);
    if (eq) {
        lua_pushlstring(L, spec, (size_t)(eq - spec));
    } else if (strchr(module, '.') == NULL) {
        lua_pushstring(L, module);
    } else {
        lua_pop(L, 1);
        return 0;
    }
    lua_insert(L, -2);
    lua_settable(L, LUA_GLOBALSINDEX);
    return 0;
}
