/* xlua.c: the xlua executable: LuaJIT with libxt linked in and the xt package on its
 * path. The command line follows the `lua` standalone interpreter:
 *
 *   xlua [options] [script [args]]
 *
 * Options (-e, -l) run in order, then the script with its arguments in `arg` and `...`;
 * with no script the REPL opens when stdin is a terminal, else stdin is the script.
 * The pieces live in core/xlua/ (see xlua/xlua.h). */
#include "xlua/xlua.h"

#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xt.h"

static void usage(FILE *out)
{
    fprintf(out,
        "usage: " XLUA_PROGNAME " [options] [script [args]]\n"
        "  -e code   run the string code\n"
        "  -l mod    require module mod (into global mod; -l name=mod: into global name)\n"
        "  -i        open the REPL after running the script\n"
        "  -v        print the version\n"
        "  -h        print this help\n"
        "  --        stop handling options\n"
        "  -         run stdin as the script and stop handling options\n"
        "With no script, " XLUA_PROGNAME " opens the REPL when stdin is a terminal and runs\n"
        "stdin otherwise. The globals xt, nn, F (xt.nn.functional) and optim load on first use.\n");
}

static void print_version(void)
{
    printf(XLUA_PROGNAME " %s (%s)\n", xt_version(), LUAJIT_VERSION);
    fflush(stdout);
}

struct options {
    int script;        /* argv index of the script, 0 if none */
    int args_end;      /* where option handling stopped (the script, or argc) */
    int interactive, version, help, has_e;
};

static int bad_option(const char *what, const char *option)
{
    fprintf(stderr, "%s: %s '%s'\n", XLUA_PROGNAME, what, option);
    usage(stderr);
    return -1;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') break;   /* the script, or "-" for stdin */
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        switch (a[1]) {
        case 'i': o->interactive = 1; break;
        case 'v': o->version = 1; break;
        case 'h': o->help = 1; break;
        case 'e':
        case 'l':   /* both take an argument, attached (-eCODE) or next */
            o->has_e |= a[1] == 'e';
            if (a[2] == '\0' && ++i >= argc) return bad_option("missing argument to", a);
            continue;
        default: return bad_option("unrecognized option", a);
        }
        if (a[2] != '\0') return bad_option("unrecognized option", a);
    }
    o->script = i < argc ? i : 0;
    o->args_end = i < argc ? i : argc;
    return 0;
}

/* arg[0] = script, arg[1..] = its arguments, arg[-1..] = the options and the interpreter
 * (with no script, every word of the command line gets a negative index). */
static void create_arg_table(lua_State *L, int argc, char **argv, int script)
{
    int s = script ? script : argc;
    lua_createtable(L, argc - s, s + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - s);
    }
    lua_setglobal(L, "arg");
}

/* -e and -l, in the order given. */
static int run_options(lua_State *L, char **argv, int end)
{
    for (int i = 1; i < end; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
        const char *value = a[2] ? a + 2 : argv[++i];
        int status = a[1] == 'e' ? xlua_run_string(L, value, "=(command line)")
                                  : xlua_require(L, value);
        if (status != 0) return status;
    }
    return 0;
}

static int run(lua_State *L, int argc, char **argv, const struct options *o)
{
    int status = run_options(L, argv, o->args_end);
    if (status != 0) return status;
    if (o->script) {
        int s = o->script;
        int from_stdin = strcmp(argv[s], "-") == 0 && strcmp(argv[s - 1], "--") != 0;
        status = xlua_run_file(L, from_stdin ? NULL : argv[s], argv + s + 1, argc - s - 1);
        if (status != 0) return status;
    }
    if (o->interactive) return xlua_repl(L);
    if (o->script || o->has_e || o->version) return 0;
    if (isatty(STDIN_FILENO)) return xlua_repl(L);
    return xlua_run_file(L, NULL, NULL, 0);
}

int main(int argc, char **argv)
{
    struct options o = {0};
    if (parse_options(argc, argv, &o) != 0) return EXIT_FAILURE;
    if (o.help) {
        usage(stdout);
        return EXIT_SUCCESS;
    }
    if (o.version) print_version();

    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", XLUA_PROGNAME);
        return EXIT_FAILURE;
    }
    lua_gc(L, LUA_GCSTOP, 0);
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART, 0);
    xlua_init_signals();
    xlua_replace_exit(L);
    xlua_set_package_path(L);
    create_arg_table(L, argc, argv, o.script);
    xlua_install_globals(L);

    int status = run(L, argc, argv, &o);
    lua_close(L);
    return status == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
