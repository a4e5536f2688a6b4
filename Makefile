# The two commands: `make run` (the main experiment) and `make test` (every test).
# Both install missing Debian packages first (tools/install_deps.sh), then build with CMake.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
RUN_ARGS ?=
FUZZ_SECONDS ?= 10

.PHONY: all deps build run test test-sanitize fuzz bench clean install

all: build

deps:
	@sh tools/install_deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

run: build
	$(BUILD)/xlua experiments/aft_conv_cifar.lua $(RUN_ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The whole suite again under AddressSanitizer + UBSan (what CI runs second).
test-sanitize: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DXT_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j$(JOBS)

# The file readers' libFuzzer harnesses (clang, ASan + UBSan), FUZZ_SECONDS each.
fuzz: deps
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)

bench: build
	$(BUILD)/xlua bench/run.lua

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
