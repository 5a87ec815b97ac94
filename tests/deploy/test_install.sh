#!/usr/bin/env bash
# test_install.sh BUILD PREFIX CC VERSION [SANITIZE] - "cmake --install
# BUILD --prefix PREFIX" installs everything an operator and a library
# user need, with every path inside the files pointing into PREFIX; a C
# program builds against the installed libh2client with pkg-config, both
# shared and static (--static), and runs; the installed h2d, h2ctl and
# h2-certs work together; the example configuration is valid; the man
# pages format without warnings and name every option the programs have;
# installing again keeps an edited h2d.conf; DESTDIR and the prefix /usr
# put the configuration in /etc.  PREFIX is left in place for
# test_systemd.sh (the fixture deploy_prefix).
set -u
. "$(dirname "$0")/lib.sh"

BUILD=$1
PREFIX=$2
CC=$3
VERSION=$4
SANITIZE=${5:-}
SRC=$(cd "$(dirname "$0")" && pwd)

# Absolute install directories in the cache would make --prefix write
# outside PREFIX (into the real /etc, say): refuse to run then.
if grep -Eq '^(CMAKE_INSTALL_(BIN|LIB|INCLUDE|SYSCONF|DATAROOT|MAN)DIR|H2_SYSTEMD_UNITDIR|H2_SYSUSERSDIR):[A-Z]*=/' \
	"$BUILD/CMakeCache.txt"; then
	skip_all "$BUILD is configured with absolute install directories;" \
		"cmake --install --prefix would write outside the test prefix"
fi

# Installing rewrites BUILD/install_manifest.txt: keep the operator's.
if [ -f "$BUILD/install_manifest.txt" ]; then
	cp -p "$BUILD/install_manifest.txt" "$WORK/manifest"
fi
# shellcheck disable=SC2317 # run by the EXIT trap
restore_manifest() {
	if [ -f "$WORK/manifest" ]; then
		cp -p "$WORK/manifest" "$BUILD/install_manifest.txt"
	else
		rm -f "$BUILD/install_manifest.txt"
	fi
	cleanup
}
trap restore_manifest EXIT

rm -rf "$PREFIX"
cmake --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" 2>&1 ||
	fatal "cmake --install: $(cat "$WORK/install.log")"
ok "cmake --install --prefix $PREFIX"

PC=$(find "$PREFIX" -name h2client.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$PC" ] || fatal "no h2client.pc installed"
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$PC")
LIBDIR=$(pkg-config --variable=libdir h2client)

for f in bin/h2d bin/h2ctl bin/h2-certs; do
	check "installed $f, executable" test -x "$PREFIX/$f"
done
for f in include/h2client.h share/man/man8/h2d.8 share/man/man1/h2ctl.1 \
	share/man/man5/h2d.conf.5 lib/systemd/system/h2d.service \
	lib/sysusers.d/h2.conf etc/h2/h2d.conf etc/h2/h2d.conf.example; do
	check "installed $f" test -f "$PREFIX/$f"
done
check "installed libh2client.so.0 in the pkg-config libdir" test -f "$LIBDIR/libh2client.so.0"
check "installed libh2client.a in the pkg-config libdir" test -f "$LIBDIR/libh2client.a"
check "no @VARIABLE@ left unsubstituted in the installed files" \
	not grep -rlE '@(H2|CMAKE)_[A-Z_]+@' "$PREFIX/lib/systemd" "$PREFIX/etc" \
	"$PREFIX/share/man" "$PC"
check "h2d.service runs the installed h2d with the installed config" \
	grep -qx "ExecStart=$PREFIX/bin/h2d serve --config $PREFIX/etc/h2/h2d.conf" \
	"$PREFIX/lib/systemd/system/h2d.service"
check "h2d.conf names TLS files under the installed config directory" \
	grep -qx "ca = $PREFIX/etc/h2/tls/ca.crt" "$PREFIX/etc/h2/h2d.conf"

# --- pkg-config ---------------------------------------------------------------
check_eq "pkg-config --modversion h2client" "$(pkg-config --modversion h2client)" "$VERSION"
check_eq "h2client.pc's prefix is the install prefix" \
	"$(pkg-config --variable=prefix h2client)" "$PREFIX"
check_eq "pkg-config --cflags h2client" "$(pkg-config --cflags h2client | xargs)" \
	"-I$PREFIX/include"
static_libs=$(pkg-config --static --libs h2client)
for l in -lprotobuf-c -lssl -lcrypto -lpthread; do
	check "pkg-config --static --libs names $l" grep -q -- "$l" <<<"$static_libs"
done

# A sanitizer build's library needs the sanitizer runtime in the program.
CFLAGS="-std=c11 -Wall -Wextra -Werror -Wstrict-prototypes -pedantic"
[ -z "$SANITIZE" ] || CFLAGS="$CFLAGS -fsanitize=$SANITIZE"

# shellcheck disable=SC2046,SC2086 # the flags are to be split into words
"$CC" $CFLAGS -o "$WORK/consumer-shared" "$SRC/consumer.c" \
	$(pkg-config --cflags --libs h2client) >"$WORK/cc.log" 2>&1
check "a C program builds against the shared library with pkg-config" \
	test $? -eq 0 || cat "$WORK/cc.log"
check "it is linked to libh2client.so.0" \
	grep -q "NEEDED.*libh2client.so.0" <<<"$(readelf -d "$WORK/consumer-shared")"

# --static gives the private dependencies; -l:libh2client.a picks the
# archive although the .so sits beside it.
static_libs=${static_libs//-lh2client/-l:libh2client.a}
# shellcheck disable=SC2046,SC2086
"$CC" $CFLAGS -o "$WORK/consumer-static" "$SRC/consumer.c" \
	$(pkg-config --cflags h2client) $static_libs >"$WORK/cc.log" 2>&1
check "a C program builds against the static library with pkg-config --static" \
	test $? -eq 0 || cat "$WORK/cc.log"
check "it does not need libh2client.so" \
	not grep -q "libh2client" <<<"$(readelf -d "$WORK/consumer-static")"

# --- the installed programs, together ------------------------------------------
T=$WORK/tls
if "$PREFIX/bin/h2-certs" init-ca "$T" >/dev/null &&
	"$PREFIX/bin/h2-certs" server "$T" --san DNS:localhost,IP:127.0.0.1 >/dev/null &&
	"$PREFIX/bin/h2-certs" client "$T" admin >/dev/null; then
	ok "the installed h2-certs makes a CA, a server and a client"
else
	fatal "the installed h2-certs makes a CA, a server and a client"
fi

for v in shared static; do
	LD_LIBRARY_PATH=$LIBDIR "$WORK/consumer-$v" closed "$T/ca.crt" \
		"$T/admin.crt" "$T/admin.key" >"$WORK/run.log" 2>&1
	check "consumer ($v) gets H2_ECONNECT from a closed port" test $? -eq 0 ||
		cat "$WORK/run.log"
done

"$PREFIX/bin/h2d" format --device "$WORK/store.img" --size 64M >/dev/null ||
	fatal "the installed h2d formats a store"

# The example configuration with every commented-out default switched on,
# pointed at this store and these certificates, passes --check-config.
sed -e 's/^;\([a-z_0-9]* = \)/\1/' \
	-e "s|^device = .*|device = $WORK/store.img|" \
	-e "s|^ready_file = .*|ready_file = $WORK/ready-from-config.json|" \
	-e "s|$PREFIX/etc/h2/tls|$T|" \
	"$PREFIX/etc/h2/h2d.conf.example" >"$WORK/h2d.conf"
check "the example h2d.conf has commented-out defaults to switch on" \
	grep -q '^flush_interval_ms = ' "$WORK/h2d.conf"
"$PREFIX/bin/h2d" serve --config "$WORK/h2d.conf" --check-config \
	>"$WORK/check.log" 2>&1
check "the example h2d.conf, every key set, passes h2d serve --check-config" \
	test $? -eq 0 || cat "$WORK/check.log"

h2d_probe "$PREFIX/bin/h2d"
start_h2d "$WORK/h2d.log" "$PREFIX/bin/h2d" serve --config "$WORK/h2d.conf" ||
	fatal "the installed h2d serves the example configuration"
for v in shared static; do
	out=$(LD_LIBRARY_PATH=$LIBDIR "$WORK/consumer-$v" connect "$H2D_ADDR" \
		"$T/ca.crt" "$T/admin.crt" "$T/admin.key" 2>&1)
	check_eq "consumer ($v) connects to the installed h2d as admin" "$out" \
		"identity=admin"
done
check "the installed h2ctl creates a volume (rule admin = admin:*)" \
	quiet "$PREFIX/bin/h2ctl" --server "$H2D_ADDR" --ca "$T/ca.crt" \
	--cert "$T/admin.crt" --key "$T/admin.key" volume create v 1M
check "h2d stops cleanly" stop_h2d

# --- man pages ------------------------------------------------------------------
for p in man8/h2d.8 man1/h2ctl.1 man5/h2d.conf.5; do
	f=$PREFIX/share/man/$p
	check_eq "groff -man -ww finds nothing in $p" \
		"$(groff -man -ww -z "$f" 2>&1)" ""
	check_eq "man -l --warnings renders $p without a word" \
		"$(MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null)" ""
done

# options_of CMD...: every --long-option CMD's help mentions.
options_of() {
	"$@" --help 2>&1 | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u
}
# check_documented PAGE CMD...: each option of CMD appears in PAGE.
check_documented() {
	local page=$1 missing=
	shift
	[ -n "$(options_of "$@")" ] || missing="(no options found in the help)"
	for o in $(options_of "$@"); do
		grep -qF -- "${o//-/\\-}" "$page" || missing="$missing $o"
	done
	check_eq "$(basename "$page") documents every option of \"$(basename "$1") ${*:2}\"" \
		"$missing" ""
}
check_documented "$PREFIX/share/man/man8/h2d.8" "$PREFIX/bin/h2d" serve
check_documented "$PREFIX/share/man/man8/h2d.8" "$PREFIX/bin/h2d" format
check_documented "$PREFIX/share/man/man8/h2d.8" "$PREFIX/bin/h2d" check
check_documented "$PREFIX/share/man/man1/h2ctl.1" "$PREFIX/bin/h2ctl"
check_documented "$PREFIX/share/man/man1/h2ctl.1" "$PREFIX/bin/h2ctl" bench
# The commands: the words before the arguments in "h2ctl --help".
missing=
[ "$("$PREFIX/bin/h2ctl" --help | grep -c '^  [a-z]')" -ge 10 ] ||
	missing="(no commands found in the help)"
while read -r c; do
	grep -Eq "^\.B[IR]? +\"?$c( |\"|$)" "$PREFIX/share/man/man1/h2ctl.1" ||
		missing="$missing [$c]"
done < <("$PREFIX/bin/h2ctl" --help | sed -n '/^commands:/,/^$/p' |
	awk -F '  +' 'NR > 1 && NF > 1 {
		n = split($2, w, " "); c = ""
		for (i = 1; i <= n && w[i] ~ /^[a-z]+$/; i++)
			c = c (c == "" ? "" : " ") w[i]
		print c }')
check_eq "h2ctl.1 documents every command of h2ctl --help" "$missing" ""
# The keys h2d knows, from its own answer to an unknown key in each section.
keys=
for sec in store server tls; do
	printf '[%s]\nzz_no_such_key = 1\n' "$sec" >"$WORK/probe.conf"
	keys="$keys $("$PREFIX/bin/h2d" serve --config "$WORK/probe.conf" 2>&1 |
		sed -n 's/.*the keys there are //p' | tr -d ',')"
done
check "h2d names its configuration keys" test "$(wc -w <<<"$keys")" -ge 15
missing=
for k in $keys; do
	grep -q "^\.B $k$" "$PREFIX/share/man/man5/h2d.conf.5" || missing="$missing $k"
done
check_eq "h2d.conf.5 documents every key h2d knows" "$missing" ""
missing=
for k in $keys; do
	grep -q "^;*$k = " "$PREFIX/etc/h2/h2d.conf.example" || missing="$missing $k"
done
check_eq "h2d.conf.example shows every key h2d knows" "$missing" ""

# --- installing again, DESTDIR, prefix /usr -------------------------------------
echo "# edited by the operator" >>"$PREFIX/etc/h2/h2d.conf"
cmake --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" 2>&1
check "installing again succeeds" test $? -eq 0
check "installing again keeps an edited h2d.conf" \
	grep -q "edited by the operator" "$PREFIX/etc/h2/h2d.conf"
check "installing again says it kept h2d.conf" grep -q "Keeping:" "$WORK/install.log"
check "h2d.conf.example is still the pristine example" \
	not grep -q "edited by the operator" "$PREFIX/etc/h2/h2d.conf.example"

STAGE=$WORK/stage
DESTDIR=$STAGE cmake --install "$BUILD" --prefix /usr >"$WORK/install.log" 2>&1
check "DESTDIR=STAGE cmake --install --prefix /usr succeeds" test $? -eq 0 ||
	cat "$WORK/install.log"
check "with the prefix /usr the configuration goes to /etc/h2" \
	test -f "$STAGE/etc/h2/h2d.conf"
check "and the unit to /usr/lib/systemd/system" \
	test -f "$STAGE/usr/lib/systemd/system/h2d.service"
check "and the unit reads /etc/h2/h2d.conf, with ConfigurationDirectory=h2" \
	grep -qx "ConfigurationDirectory=h2" "$STAGE/usr/lib/systemd/system/h2d.service"
check "and runs /usr/bin/h2d" \
	grep -qx "ExecStart=/usr/bin/h2d serve --config /etc/h2/h2d.conf" \
	"$STAGE/usr/lib/systemd/system/h2d.service"
check "and h2client.pc says prefix=/usr" \
	test -n "$(grep -rlx 'prefix=/usr' "$STAGE/usr" --include=h2client.pc)"
check "DESTDIR kept everything under STAGE" \
	test -z "$(find "$STAGE" -mindepth 1 -maxdepth 1 ! -name usr ! -name etc)"

finish
