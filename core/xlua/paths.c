/* xlua/paths.c: where the xt Lua package lives. The same binary runs from the build tree
 * (package in <source>/lua, generated cdef.lua and paths.lua in <build>/lua) and after
 * `cmake --install` (everything in <prefix>/share/lua/5.1, found relative to the binary so
 * an installed tree can be moved, with the configured prefix as a fallback). */
#include "xlua.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The directory of the running executable, or "" when /proc is not there. */
static void exe_dir(char out[PATH_MAX])
{
    ssize_t n = readlink("/proc/self/exe", out, PATH_MAX - 1);
    if (n <= 0) n = 0;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash) *slash = '\0';
    else out[0] = '\0';
}

static int same_dir(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) == 0;
}

static int has_package(const char *lua_dir)
{
    char init[PATH_MAX];
    if (snprintf(init, sizeof init, "%s/xt/init.lua", lua_dir) >= (int)sizeof init) return 0;
    return access(init, R_OK) == 0;
}

/* package.path = "<dir>/?.lua;<dir>/?/init.lua;" for each dir, then what was there. */
static void prepend(lua_State *L, const char *const *dirs, int n)
{
    lua_getglobal(L, "package");
    int top = lua_gettop(L);
    for (int i = 0; i < n; i++) lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dirs[i], dirs[i]);
    lua_getfield(L, top, "path");
    lua_concat(L, n + 1);
    lua_setfield(L, top, "path");
    lua_pop(L, 1);
}

void xlua_set_package_path(lua_State *L)
{
    const char *const build_tree[] = {XLUA_SOURCE_LUA_DIR, XLUA_BUILD_LUA_DIR};
    char dir[PATH_MAX], here_lua[PATH_MAX + 16], installed[PATH_MAX + 32], resolved[PATH_MAX];
    exe_dir(dir);
    snprintf(here_lua, sizeof here_lua, "%s/lua", dir);
    snprintf(installed, sizeof installed, "%s/../share/lua/5.1", dir);

    if (dir[0] && same_dir(here_lua, XLUA_BUILD_LUA_DIR)) {
        prepend(L, build_tree, 2);
    } else if (dir[0] && has_package(installed) && realpath(installed, resolved)) {
        const char *d = resolved;
        prepend(L, &d, 1);
    } else if (has_package(XLUA_INSTALL_LUA_DIR)) {
        const char *d = XLUA_INSTALL_LUA_DIR;
        prepend(L, &d, 1);
    } else {
        prepend(L, build_tree, 2);   /* a binary copied out of the build tree */
    }
}
