#!/usr/bin/env bash
# test_certs.sh H2D H2CTL H2CERTS - deploy/h2-certs makes certificates that
# openssl accepts, with the right names, usages and key modes, and that a
# real h2d serves and accepts; rotate-server plus SIGHUP makes h2d serve
# the new certificate to new connections without a restart.
set -u
. "$(dirname "$0")/lib.sh"

H2D=$1
H2CTL=$2
CERTS=$3
D=$WORK/tls

mode() { stat -c %a "$1"; }
serial() { openssl x509 -noout -serial -in "$1"; }
text() { openssl x509 -noout -text -in "$1"; }
# The public key of a private key and of a certificate, to compare.
pub_of_key() { openssl pkey -in "$1" -pubout; }
pub_of_crt() { openssl x509 -in "$1" -noout -pubkey; }
# The serial of the certificate h2d presents to a new connection.
served_serial() {
	openssl s_client -connect "$H2D_ADDR" -CAfile "$D/ca.crt" \
		-cert "$D/alice.crt" -key "$D/alice.key" -verify_return_error \
		</dev/null 2>/dev/null | openssl x509 -noout -serial
}
ctl() { "$H2CTL" --server "$H2D_ADDR" "$@"; }

# --- usage -----------------------------------------------------------------
help=$("$CERTS" --help) || not_ok "--help exits 0"
check "--help names every command" \
	grep -q "init-ca.*server.*client.*rotate-server" <<<"$(tr '\n' ' ' <<<"$help")"
"$CERTS" frobnicate "$D" >/dev/null 2>&1
check_eq "an unknown command is a usage error" "$?" 2
if command -v shellcheck >/dev/null; then
	check "shellcheck -s sh finds nothing in h2-certs" shellcheck -s sh "$CERTS"
else
	not_ok "shellcheck is not installed (scripts/install-deps installs it)"
fi

# --- init-ca ---------------------------------------------------------------
"$CERTS" server "$D" --san DNS:localhost >/dev/null 2>&1
check_eq "server without a CA fails" "$?" 1
"$CERTS" init-ca "$D" >"$WORK/out" 2>&1 || fatal "init-ca: $(cat "$WORK/out")"
check "init-ca: ca.crt verifies against itself" \
	openssl verify -CAfile "$D/ca.crt" "$D/ca.crt"
check_eq "init-ca: ca.key is mode 0600" "$(mode "$D/ca.key")" 600
check "init-ca: a CA certificate (CA:TRUE, keyCertSign)" \
	grep -q "CA:TRUE" <<<"$(text "$D/ca.crt")"
check "init-ca: ECDSA P-256 with SHA-256" \
	grep -q "NIST CURVE: P-256" <<<"$(text "$D/ca.crt")"
check "init-ca: signed with ecdsa-with-SHA256" \
	grep -q "Signature Algorithm: ecdsa-with-SHA256" <<<"$(text "$D/ca.crt")"
before=$(sha256sum "$D/ca.key")
"$CERTS" init-ca "$D" >/dev/null 2>&1
check_eq "init-ca refuses to replace a CA" "$?" 1
check_eq "init-ca left the old CA key alone" "$(sha256sum "$D/ca.key")" "$before"

# --- server ----------------------------------------------------------------
"$CERTS" server "$D" >/dev/null 2>&1
check_eq "server without --san is a usage error" "$?" 2
"$CERTS" server "$D" --san "URI:x" >/dev/null 2>&1
check_eq "server refuses a SAN that is not DNS: or IP:" "$?" 2
"$CERTS" server "$D" --san "DNS:a,b" >/dev/null 2>&1
check_eq "server refuses an untyped SAN entry" "$?" 2
"$CERTS" server "$D" --san DNS:localhost,IP:127.0.0.1 --days 30 \
	>"$WORK/out" 2>&1 || fatal "server: $(cat "$WORK/out")"
check "server: server.crt verifies against ca.crt" \
	openssl verify -CAfile "$D/ca.crt" -purpose sslserver "$D/server.crt"
srv_text=$(text "$D/server.crt")
check "server: SAN DNS:localhost" grep -q "DNS:localhost" <<<"$srv_text"
check "server: SAN IP 127.0.0.1" grep -q "IP Address:127.0.0.1" <<<"$srv_text"
check "server: CN is the first SAN" grep -q "Subject: CN *= *localhost" <<<"$srv_text"
check "server: extended key usage serverAuth only" \
	grep -q "TLS Web Server Authentication$" <<<"$srv_text"
check "server: not a CA" grep -q "CA:FALSE" <<<"$srv_text"
check_eq "server: server.key is mode 0600" "$(mode "$D/server.key")" 600
check_eq "server: the key belongs to the certificate" \
	"$(pub_of_key "$D/server.key")" "$(pub_of_crt "$D/server.crt")"
check "server: --days 30 gives 30 days" \
	openssl x509 -in "$D/server.crt" -noout -checkend $((29 * 86400))
check "server: and not 31" \
	not openssl x509 -in "$D/server.crt" -noout -checkend $((31 * 86400))
"$CERTS" server "$D" --san DNS:other >/dev/null 2>&1
check_eq "server refuses to overwrite server.crt" "$?" 1

# --- client ----------------------------------------------------------------
"$CERTS" client "$D" "bad/name" >/dev/null 2>&1
check_eq "client refuses an identity with a slash" "$?" 2
"$CERTS" client "$D" server >/dev/null 2>&1
check_eq "client refuses the identity \"server\" (file clash)" "$?" 2
"$CERTS" client "$D" alice --bundle "$WORK/alice-tls" >"$WORK/out" 2>&1 ||
	fatal "client: $(cat "$WORK/out")"
check "client: alice.crt verifies against ca.crt" \
	openssl verify -CAfile "$D/ca.crt" -purpose sslclient "$D/alice.crt"
cli_text=$(text "$D/alice.crt")
check "client: CN is the identity" grep -q "Subject: CN *= *alice$" <<<"$cli_text"
check "client: extended key usage clientAuth" \
	grep -q "TLS Web Client Authentication$" <<<"$cli_text"
check_eq "client: alice.key is mode 0600" "$(mode "$D/alice.key")" 600
check_eq "client: the key belongs to the certificate" \
	"$(pub_of_key "$D/alice.key")" "$(pub_of_crt "$D/alice.crt")"
check "client --bundle: ca.crt, client.crt, client.key" \
	cmp -s "$D/alice.crt" "$WORK/alice-tls/client.crt"
check "client --bundle: the bundle's key is alice's" \
	cmp -s "$D/alice.key" "$WORK/alice-tls/client.key"
check_eq "client --bundle: client.key is mode 0600" \
	"$(mode "$WORK/alice-tls/client.key")" 600
check "client --bundle: ca.crt is the CA" cmp -s "$D/ca.crt" "$WORK/alice-tls/ca.crt"
"$CERTS" client "$D" alice >/dev/null 2>&1
check_eq "client refuses to replace alice.crt without --force" "$?" 1
"$CERTS" client "$WORK/other" bob --ca-dir "$D" >"$WORK/out" 2>&1
check "client --ca-dir: issued into another directory with the CA copied" \
	openssl verify -CAfile "$WORK/other/ca.crt" "$WORK/other/bob.crt"
check "client --ca-dir: no CA key copied" test ! -e "$WORK/other/ca.key"

# --- a real h2d accepts them -----------------------------------------------
"$H2D" format --device "$WORK/store.img" --size 64M >/dev/null ||
	fatal "h2d format"
h2d_probe "$H2D"
start_h2d "$WORK/h2d.log" "$H2D" serve --device "$WORK/store.img" \
	--ca "$D/ca.crt" --cert "$D/server.crt" --key "$D/server.key" \
	--access "alice=admin:*" || fatal "h2d serve with h2-certs files"
check "h2ctl with --ca/--cert/--key from h2-certs: volume create" \
	quiet ctl --ca "$D/ca.crt" --cert "$D/alice.crt" --key "$D/alice.key" \
	volume create v1 1M
check "h2ctl with H2_TLS_DIR=the --bundle folder: volume list" \
	quiet env H2_TLS_DIR="$WORK/alice-tls" "$H2CTL" --server "$H2D_ADDR" volume list
check_eq "h2d serves server.crt" "$(served_serial)" "$(serial "$D/server.crt")"

# A client of another CA is refused: h2d trusts ca.crt only.
"$CERTS" init-ca "$WORK/rogue" >/dev/null && "$CERTS" client "$WORK/rogue" alice >/dev/null
ctl --ca "$D/ca.crt" --cert "$WORK/rogue/alice.crt" \
	--key "$WORK/rogue/alice.key" volume list >/dev/null 2>&1
check_eq "h2d refuses a client certificate from another CA" "$?" 1

# --- rotate-server, then SIGHUP ----------------------------------------------
old_serial=$(serial "$D/server.crt")
cp "$D/server.crt" "$WORK/server.crt.before"
"$CERTS" rotate-server "$D" >"$WORK/out" 2>&1 || fatal "rotate-server: $(cat "$WORK/out")"
check "rotate-server tells the operator to reload" \
	grep -q "systemctl reload h2d" "$WORK/out"
check "rotate-server: a new certificate" \
	test "$(serial "$D/server.crt")" != "$old_serial"
check "rotate-server: it verifies against ca.crt" \
	openssl verify -CAfile "$D/ca.crt" -purpose sslserver "$D/server.crt"
new_text=$(text "$D/server.crt")
check "rotate-server: the same SANs as before" \
	grep -q "DNS:localhost, IP Address:127.0.0.1" <<<"$new_text"
check "rotate-server: a new key" \
	test "$(pub_of_key "$D/server.key")" != "$(pub_of_crt "$WORK/server.crt.before")"
check_eq "rotate-server: the new key belongs to the new certificate" \
	"$(pub_of_key "$D/server.key")" "$(pub_of_crt "$D/server.crt")"
check_eq "rotate-server: server.key is mode 0600" "$(mode "$D/server.key")" 600
check "rotate-server: the old pair is kept as .old" \
	cmp -s "$D/server.crt.old" "$WORK/server.crt.before"
check_eq "rotate-server: server.key.old is mode 0600" "$(mode "$D/server.key.old")" 600
check "rotate-server: no temporary files left" \
	test -z "$(find "$D" -name '.*' -type f)"

# h2d runs as its own user and must keep reading its key after a rotation.
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then
	O=$WORK/owned
	"$CERTS" server "$O" --ca-dir "$D" --san DNS:localhost --owner nobody \
		>/dev/null 2>&1
	check_eq "server --owner: the key belongs to that user" \
		"$(stat -c %U "$O/server.key")" nobody
	"$CERTS" rotate-server "$O" --ca-dir "$D" >/dev/null 2>&1
	check_eq "rotate-server run as root keeps the key's owner" \
		"$(stat -c %U:%a "$O/server.key")" nobody:600
else
	echo "# not root: --owner and owner-keeping rotation not tested"
fi

check_eq "before SIGHUP h2d still serves the old certificate" \
	"$(served_serial)" "$old_serial"
kill -HUP "$H2D_PID"
check "h2d logs the reload after SIGHUP" \
	wait_until 30 grep -q "reloaded certificates" "$WORK/h2d.log"
check_eq "after SIGHUP a new connection gets the rotated certificate" \
	"$(served_serial)" "$(serial "$D/server.crt")"
check "after SIGHUP h2ctl connects and lists" \
	quiet ctl --ca "$D/ca.crt" --cert "$D/alice.crt" --key "$D/alice.key" volume list
check "h2d stops cleanly" stop_h2d

finish
