/* xlua.c: minimal runner, replaced by the full executable (REPL etc.). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_dostring(L, "package.path='" XLUA_SOURCE_LUA_DIR "/?.lua;" XLUA_SOURCE_LUA_DIR "/?/init.lua;" XLUA_BUILD_LUA_DIR "/?.lua;'..package.path");
    lua_newtable(L);
    for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - 1); }
    lua_setglobal(L, "arg");
    if (argc > 1 && luaL_dofile(L, argv[1])) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); return 1; }
    return 0;
}
