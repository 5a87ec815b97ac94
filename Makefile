# Convenience front door; the real work is in scripts/ and CMake.
.PHONY: all build run test deps clean

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build -j $$(nproc)

# The development server: a 4 GiB sparse store and certificates under
# ./var/h2/, TLS on 127.0.0.1:7410, in the foreground (Ctrl-C stops it).
run: build
	build/server/h2d serve --dev

test:
	scripts/test

clean:
	rm -rf build build-asan

# Removes the development store and certificates too.
distclean: clean
	rm -rf var
