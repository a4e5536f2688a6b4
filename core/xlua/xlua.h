/* xlua/xlua.h: the parts of the xlua executable. core/xlua.c holds main() and the
 * command line; run.c runs Lua code (errors, tracebacks, Ctrl-C); paths.c finds the xt Lua
 * package; repl.c is the interactive loop, whose Lua half is lua/xt/repl.lua. */
#ifndef XLUA_XLUA_H
#define XLUA_XLUA_H

#include <lua.h>

#define XLUA_PROGNAME "xlua"

/* ---- run.c ---------------------------------------------------------------- */

/* Install the SIGINT handler: while Lua code runs under xlua_docall, Ctrl-C raises the
 * error "interrupted!" in it (a second Ctrl-C ends the process); otherwise it only sets
 * the flag that xlua_take_interrupt reads. */
void xlua_init_signals(void);
/* 1 (and clear it) when Ctrl-C was pressed outside xlua_docall, e.g. at the prompt. */
int xlua_take_interrupt(void);

/* Replace os.exit by one that closes the Lua state (running finalizers) before exiting. */
void xlua_replace_exit(lua_State *L);

/* lua_pcall of the function below nargs arguments, with a message handler that adds a
 * traceback and turns non-string error objects into text. On error the message is left
 * on the stack; returns the lua_pcall status. */
int xlua_docall(lua_State *L, int nargs, int nresults);
/* If status is an error, print "xlua: <message>" to stderr and pop it. Returns status. */
int xlua_report(lua_State *L, int status);

/* Run one piece of the command line; each returns a lua_pcall-style status, reported. */
int xlua_run_string(lua_State *L, const char *code, const char *chunkname);
int xlua_run_file(lua_State *L, const char *path, char **args, int nargs); /* path NULL: stdin */
int xlua_require(lua_State *L, const char *spec);   /* "mod" or "name=mod" */

/* ---- paths.c -------------------------------------------------------------- */

/* Put the xt Lua package's directories in front of package.path: the source and build
 * trees when this binary is the one in the build tree, else <prefix>/share/lua/5.1. */
void xlua_set_package_path(lua_State *L);

/* ---- repl.c --------------------------------------------------------------- */

/* Make xt, nn, F and optim globals that load on first use (via xt.repl). Quietly does
 * nothing when the xt package cannot be found, so plain scripts still run. */
void xlua_install_globals(lua_State *L);
/* Read-eval-print until end of input. Returns 0, or 1 when the REPL could not start. */
int xlua_repl(lua_State *L);

#endif
