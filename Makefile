# Convenience front door; the real work is in scripts/ and CMake.
.PHONY: all build run test soak deps clean distclean install

# make install [PREFIX=/usr/local] [DESTDIR=/staging/root]
PREFIX ?= /usr/local

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

# The long modes: 1000 SIGKILLs of a loaded h2d (SOAK_KILLS=N), 30000
# crash states of the engine (SOAK_CRASH_STATES=N); see scripts/soak.
soak:
	scripts/soak

# Programs, library, h2client.pc, man pages, h2-certs, the systemd unit
# (PREFIX/lib/systemd/system), sysusers.d/h2.conf and, unless one exists,
# h2d.conf: in /etc/h2 for PREFIX=/usr, else PREFIX/etc/h2.  The prefix is
# set at configure time too, as GNUInstallDirs picks directories by it.
install: build
	cmake -S . -B build -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	DESTDIR="$(DESTDIR)" cmake --install build

clean:
	rm -rf build build-asan build-tsan

# Removes the development store and certificates too.
distclean: clean
	rm -rf var
