# Convenience front door; the real work is in scripts/ and CMake.
.PHONY: all build test deps clean

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build -j $$(nproc)

test:
	scripts/test

clean:
	rm -rf build build-asan
