#!/usr/bin/env bash
# deploy/ (issue 10): `make install PREFIX=... DESTDIR=...` installs the binary, the systemd unit
# and the man page; the installed unit passes `systemd-analyze verify` and its sandbox scores OK in
# `systemd-analyze security` (where systemd-analyze exists; skipped with a note otherwise); the man
# page renders without warnings and documents every command the binary lists; every example config
# in deploy/examples/ passes `loco doctor --offline` with keys and tickets made here, and the pairs
# that form one run (volunteer + organiser, cluster-a + cluster-b) share one run fingerprint; the
# Dockerfile's runtime stage installs the package of every shared library the binary needs.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${LOCO_BIN:-$PWD/build/loco}
[ -x "$BIN" ] || { echo "no loco binary at $BIN (make first)"; exit 77; }
W=$(mktemp -d /tmp/loco_it_deploy.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. make install into a staging root: DESTDIR + PREFIX. -o: use the binary under test as it is
# (never rebuild it here); without the outer make's flags (make check's SANITIZE would pick
# another build directory).
BUILD_DIR=$(dirname "$BIN")
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$ROOT" install BUILD="$BUILD_DIR" -o "$BIN" PREFIX=/opt/loco DESTDIR="$W/stage" >"$W/install.out" 2>&1 ||
    fail "make install DESTDIR: $(cat "$W/install.out")"
P="$W/stage/opt/loco"
for f in bin/loco lib/systemd/system/loco.service share/man/man1/loco.1; do [ -f "$P/$f" ] || fail "make install did not install $f"; done
[ "$(stat -c %a "$P/bin/loco")" = 755 ] || fail "the installed binary is not mode 0755"
[ "$(stat -c %a "$P/lib/systemd/system/loco.service")" = 644 ] || fail "the installed unit is not mode 0644"
grep -q "^ExecStart=/opt/loco/bin/loco run -c %E/loco/node.ini$" "$P/lib/systemd/system/loco.service" ||
    fail "the installed unit's ExecStart does not point at PREFIX/bin/loco"
grep -q "/usr/local/bin" "$P/lib/systemd/system/loco.service" && fail "the installed unit still names /usr/local/bin"
cmp -s "$BIN" "$P/bin/loco" || fail "the installed binary differs from $BIN"
# A PREFIX without DESTDIR: the unit names the real path, so systemd-analyze can check it below.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$ROOT" install BUILD="$BUILD_DIR" -o "$BIN" PREFIX="$W/prefix" >"$W/install2.out" 2>&1 ||
    fail "make install PREFIX: $(cat "$W/install2.out")"
"$W/prefix/bin/loco" --help | grep -q "^  doctor" || fail "the installed binary does not run"
echo "ok: make install (PREFIX, DESTDIR) installed the binary, the unit (ExecStart at PREFIX/bin/loco) and the man page"

# 2. The unit.
UNIT="$W/prefix/lib/systemd/system/loco.service"
if command -v systemd-analyze >/dev/null; then
    # verify runs `man` for Documentation=man:loco(1): the installed page is found through MANPATH.
    MANPATH="$W/prefix/share/man" systemd-analyze verify "$UNIT" >"$W/verify.out" 2>&1 ||
        fail "systemd-analyze verify: $(cat "$W/verify.out")"
    [ -s "$W/verify.out" ] && fail "systemd-analyze verify warns: $(cat "$W/verify.out")"
    if systemd-analyze security --help 2>/dev/null | grep -q -- "--offline"; then
        systemd-analyze security --offline=yes "$UNIT" >"$W/security.out" 2>&1
        level=$(sed -nE 's/.*Overall exposure level for loco.service: ([0-9.]+).*/\1/p' "$W/security.out")
        [ -n "$level" ] || fail "systemd-analyze security gave no exposure level: $(tail -n 3 "$W/security.out")"
        awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "the unit's exposure level is $level (over 2.0)"
        echo "ok: systemd-analyze verify is clean; exposure level $level (systemd-analyze security --offline)"
    else
        echo "ok: systemd-analyze verify is clean (this systemd has no security --offline)"
    fi
else
    echo "note: systemd-analyze is not installed: the unit is not verified"
fi

# 3. The man page renders without warnings and documents every command the binary lists.
if command -v groff >/dev/null; then
    groff -man -Tutf8 -ww -z "$ROOT/docs/loco.1" >"$W/groff.out" 2>&1 || fail "groff failed: $(cat "$W/groff.out")"
    [ -s "$W/groff.out" ] && fail "groff warns about docs/loco.1: $(cat "$W/groff.out")"
    if command -v man >/dev/null; then
        MANWIDTH=80 man --warnings -l "$P/share/man/man1/loco.1" >"$W/man.txt" 2>"$W/man.err" || fail "man -l failed: $(cat "$W/man.err")"
        [ -s "$W/man.err" ] && fail "man -l warns: $(cat "$W/man.err")"
    else
        groff -man -Tutf8 "$ROOT/docs/loco.1" 2>/dev/null | sed 's/.\x08//g' >"$W/man.txt"
    fi
    for s in NAME SYNOPSIS COMMANDS OPTIONS CONFIGURATION SIGNALS FILES "EXIT STATUS"; do
        grep -q "^$s" "$W/man.txt" || fail "the man page has no $s section"
    done
    # Every command of `loco --help` (but the test helper) has its entry, and every [section] of the
    # example config is described.
    for c in $("$BIN" --help | awk '/^  [a-z]/ {print $1}'); do
        [ "$c" = net-test ] && continue
        grep -Eq "^       $c( |$)" "$W/man.txt" || fail "the man page does not document 'loco $c'"
    done
    for s in $(sed -nE 's/^\[([a-z]+)\]$/\1/p' "$ROOT/deploy/loco.example.ini"); do
        grep -q "^       \[$s\]" "$W/man.txt" || fail "the man page does not describe the [$s] section"
    done
    echo "ok: the man page renders without warnings and documents every command and config section"
else
    echo "note: groff is not installed: the man page is not rendered"
fi

# 4. Example configs pass loco doctor's offline checks, with a key and a ticket made here.
"$BIN" keygen --out "$W/node.key" >/dev/null || fail "keygen"
"$BIN" keygen --out "$W/authority.key" >/dev/null || fail "keygen (authority)"
NODE_ID=$(awk '/^id =/ {print $3}' "$W/node.key.pub")
AUTH_ID=$(awk '/^id =/ {print $3}' "$W/authority.key.pub")
declare -A FP
for f in "$ROOT"/deploy/examples/*.ini; do
    name=$(basename "$f" .ini)
    args=(--set node.key="$W/node.key")
    if grep -q "^admission = ticket" "$f"; then
        # The run authority of the test signs this node's ticket for the example's run.
        "$BIN" admit -c "$f" --set run.authority="$AUTH_ID" --authority-key "$W/authority.key" --id "$NODE_ID" \
            --expires +30d >"$W/$name.ticket" 2>"$W/$name.admit" || fail "$name: loco admit: $(cat "$W/$name.admit")"
        args+=(--set run.authority="$AUTH_ID" --set node.ticket="$W/$name.ticket")
    fi
    "$BIN" doctor --offline -c "$f" "${args[@]}" >"$W/$name.doctor" 2>&1
    rc=$?
    [ $rc -eq 0 ] || fail "$name.ini: loco doctor --offline exit $rc: $(cat "$W/$name.doctor")"
    grep -q "^FAIL\|^warn" "$W/$name.doctor" && fail "$name.ini: loco doctor --offline: $(grep '^FAIL\|^warn' "$W/$name.doctor")"
    if grep -q "^admission = ticket" "$f"; then
        grep -q "^ok    ticket" "$W/$name.doctor" || fail "$name.ini: the ticket was not checked"
    fi
    FP[$name]=$(sed -nE 's/^ok    config .*fingerprint ([0-9a-f]+)….*/\1/p' "$W/$name.doctor")
    [ -n "${FP[$name]}" ] || fail "$name.ini: no fingerprint in the doctor's output"
done
[ ${#FP[@]} -ge 4 ] || fail "expected at least 4 example configs in deploy/examples, found ${#FP[@]}"
[ "${FP[volunteer]}" = "${FP[organiser]}" ] || fail "volunteer.ini and organiser.ini describe different runs"
[ "${FP[cluster-a]}" = "${FP[cluster-b]}" ] || fail "cluster-a.ini and cluster-b.ini describe different runs"
# A wrong ticket is caught offline: the organiser's run with the volunteer's ticket under another name.
"$BIN" doctor --offline -c "$ROOT/deploy/examples/volunteer.ini" --set node.key="$W/node.key" --set run.authority="$AUTH_ID" \
    --set node.ticket="$W/volunteer.ticket" --set run.name=another-run >"$W/wrong.doctor" 2>&1
[ $? -eq 1 ] && grep -q "^FAIL  ticket .*another run" "$W/wrong.doctor" || fail "a ticket for another run passed: $(cat "$W/wrong.doctor")"
echo "ok: deploy/examples/*.ini (${!FP[*]}) pass loco doctor --offline; volunteer+organiser and cluster-a+b share a run"

# 5. The Dockerfile's runtime stage (not built here: no container engine) installs the Debian
# package of every shared library the binary links directly.
if command -v dpkg >/dev/null && command -v readelf >/dev/null; then
    runtime=$(awk '/^FROM .* AS build/ {b=1} /^FROM debian:bookworm-slim/ {b=0; r=1} r' "$ROOT/deploy/Dockerfile")
    for lib in $(readelf -d "$BIN" | sed -nE 's/.*Shared library: \[(.*)\]/\1/p'); do
        case "$lib" in
        libc.so.*|libm.so.*|ld-linux*) continue;;                         # in every Debian image
        libasan*|libubsan*|liblsan*|libtsan*|libcu*|libstdc++*) continue;; # make check / CUDA=1 builds only
        esac
        path=$(ldd "$BIN" | awk -v l="$lib" '$1 == l {print $3}')
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1)
        [ -n "$pkg" ] || fail "no Debian package owns $lib ($path)"
        grep -qw "$pkg" <<<"$runtime" || fail "deploy/Dockerfile's runtime stage does not install $pkg (for $lib)"
    done
    grep -q "^USER loco" <<<"$runtime" || fail "the runtime image does not run as the loco user"
    echo "ok: the Dockerfile's runtime stage installs every library package the binary needs"
fi
echo "all deploy checks passed"
