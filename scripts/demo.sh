#!/usr/bin/env bash
# `make demo`: the whole job in a sandbox, touching nothing in /etc.
# Builds (done by make), writes a throwaway config and state directory,
# enrolls the current user there, and logs in through the real libpam
# (pam_wrapper + pamtester) with codes computed by oathtool at a pinned time.
set -euo pipefail
cd "$(dirname "$0")/.."

SO="$PWD/target/debug/libpam_twofactor.so"
CLI="$PWD/target/debug/twofactor"
WRAPPER=libpam_wrapper.so
FAKETIME_LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
USER_NAME=$(id -un)

# The state directory's ancestors must not be group/world-writable (the
# module refuses /tmp), so the sandbox lives under /run (root) or ~/.cache.
if [[ $(id -u) -eq 0 ]]; then base=/run; else base="$HOME/.cache"; mkdir -p "$base"; fi
SANDBOX=$(mktemp -d "$base/pam-twofactor-demo.XXXXXX")
chmod 0755 "$SANDBOX"
trap 'rm -rf "$SANDBOX"' EXIT
install -d -m 0700 "$SANDBOX/state"
mkdir "$SANDBOX/pam.d"
CONFIG="$SANDBOX/twofactor.toml"
cat > "$CONFIG" <<TOML
state_dir = "$SANDBOX/state"
issuer = "pam-twofactor demo"
TOML
chmod 0600 "$CONFIG"
echo "auth required $SO config=$CONFIG" > "$SANDBOX/pam.d/demo"
printf 'auth required pam_deny.so\naccount required pam_deny.so\n' > "$SANDBOX/pam.d/other"

step() { printf '\n== %s\n' "$*"; }

# One login through real libpam; the time is pinned so the codes are exact.
login() { # login TIME ANSWER
  local out rc=0
  out=$(printf '%s\n' "$2" | LD_PRELOAD="$WRAPPER $FAKETIME_LIB" PAM_WRAPPER=1 \
    PAM_WRAPPER_SERVICE_DIR="$SANDBOX/pam.d" FAKETIME="$1" FAKETIME_DONT_FAKE_MONOTONIC=1 \
    pamtester demo "$USER_NAME" authenticate 2>&1) || rc=$?
  out=$(printf '%s' "$out" | grep -v PWRAP | sed 's/^Verification code: //' | tr '\n' ' ')
  if [[ $rc -eq 0 ]]; then echo "   -> ACCEPTED  ${out}"; else echo "   -> REFUSED   ${out}"; fi
}

SECRET=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ
T0="2030-06-15 12:00:00"
# Secrets go through stdin, never the arguments (every local user can read
# /proc/PID/cmdline); printf is a shell builtin, so it runs no process.
totp() { printf '%s\n' "$SECRET" | oathtool --totp -b - --now "$1 UTC"; }
step "Enroll $USER_NAME in the sandbox (twofactor enroll --secret-file -; a fixed demo secret so the codes are reproducible)"
ENROLL_TEXT=$(printf '%s\n' "$SECRET" | "$CLI" --config "$CONFIG" enroll "$USER_NAME" --secret-file -)
printf '%s\n' "$ENROLL_TEXT"
BACKUP=$(printf '%s\n' "$ENROLL_TEXT" | grep -m1 -oE '[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{4}')

CODE=$(totp "$T0")
step "Log in at $T0 UTC with the code oathtool computes ($CODE)"
login "$T0" "$CODE"
step "Replay the same code 10 seconds later (RFC 6238 5.2: each code works once)"
login "2030-06-15 12:00:10" "$CODE"
step "A wrong code"
login "2030-06-15 12:00:40" "000000"
step "A backup code ($BACKUP), then the same backup code again"
login "2030-06-15 12:01:00" "$BACKUP"
login "2030-06-15 12:01:05" "$BACKUP"
step "Four more wrong codes: with the reused backup code that makes five failures in a row, which locks"
for s in 10 15 20 25; do login "2030-06-15 12:01:$s" "111111"; done
step "Even the right code is refused while locked"
login "2030-06-15 12:02:00" "$(totp '2030-06-15 12:02:00')"
"$CLI" --config "$CONFIG" status "$USER_NAME" | sed 's/^/   /'
step "twofactor unlock clears it, and the next code logs in"
"$CLI" --config "$CONFIG" unlock "$USER_NAME"
login "2030-06-15 12:02:30" "$(totp '2030-06-15 12:02:30')"

if [[ -t 0 && -t 1 ]]; then
  step "Try it with your own phone (optional)"
  read -r -p "Enroll a fresh random secret and scan it with your app? [y/N] " yes
  if [[ "$yes" == [yY]* ]]; then
    "$CLI" --config "$CONFIG" enroll "$USER_NAME" --force
    read -r -p "Type the code your app shows: " code
    out=$(printf '%s\n' "$code" | LD_PRELOAD="$WRAPPER" PAM_WRAPPER=1 \
      PAM_WRAPPER_SERVICE_DIR="$SANDBOX/pam.d" pamtester demo "$USER_NAME" authenticate 2>&1) \
      && echo "   -> ACCEPTED: your phone and this module agree." \
      || echo "   -> REFUSED: check the phone's clock and that you scanned the new code."
  fi
fi
step "Done; the sandbox $SANDBOX is removed."
