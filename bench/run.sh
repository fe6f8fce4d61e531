#!/usr/bin/env bash
# bench/run.sh: what a login costs with pam_twofactor vs libpam-google-authenticator
# and libpam-oath, side by side, in one run on this machine: wall-clock first
# (interleaved rounds, medians and p95), then system calls, page faults, the
# I/O floor of the disk, and instruction counts as a secondary figure.
#
#   bench/run.sh            full run (release build), writes bench/results.md
#   bench/run.sh --smoke    checks the harness end to end in about half a minute
#                           (debug build, few iterations, targets not judged);
#                           writes target/bench/results-smoke.md, exits non-zero
#                           on any unexpected login result
#   bench/run.sh --fleet-only
#                           the fleet section alone (PostgreSQL primary and
#                           synchronous standby, `twofactor agent`, file store
#                           vs fleet, failover); writes
#                           target/bench/results-fleet.md (with --smoke: its
#                           smoke counts, no failover)
#   options: --keep (keep the fixture directory), --reset-before (keep this
#            run as the "Before" section of results.md), --out=FILE
#
# Needs root (state lives under /var/lib, a private mount namespace gives the
# modules a syslog socket). Installs what it needs with apt-get if missing.
# Touches nothing in /etc: pam_wrapper / pam_start_confdir read service files
# from the run directory. See bench/README.md for the method.
set -Eeuo pipefail
trap 'echo "[bench] FAILED at ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR

MODE=full
KEEP=0
RESET_BEFORE=0
OUT=
INNER=0
FLEET_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    --keep) KEEP=1 ;;
    --reset-before) RESET_BEFORE=1 ;;
    --out=*) OUT=${arg#--out=} ;;
    --inner) INNER=1 ;;
    --fleet-only) FLEET_ONLY=1 ;;
    -h | --help) sed -n '2,/^set /p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
export LC_ALL=C TZ=UTC
unset LD_PRELOAD PAM_WRAPPER PAM_WRAPPER_SERVICE_DIR FAKETIME FAKETIME_DONT_FAKE_MONOTONIC

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { printf '[bench] FAILED: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------
# Outer part: packages, builds, then the measurements in a private mount
# namespace (re-running this script with --inner).
# --------------------------------------------------------------------------
if [[ $INNER -eq 0 ]]; then
  START=$(date +%s)
  [[ $(id -u) -eq 0 ]] || fail "run as root (state under /var/lib, mount namespace for /dev/log)"

  PKGS=(libpam0g-dev libssl-dev pkg-config pamtester libpam-wrapper oathtool faketime libpam-google-authenticator binutils
        libpam-oath valgrind strace gcc libc6-dev util-linux coreutils postgresql-15 postgresql-client-15 iproute2)
  missing=()
  for p in "${PKGS[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    rc_cleanup=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then # never start daemons while installing
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 0755 /usr/sbin/policy-rc.d
      rc_cleanup=/usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [[ -n $rc_cleanup ]] && rm -f "$rc_cleanup"
  fi

  mkdir -p "$REPO/target/bench"
  # Which sources were built (other people may be editing the tree).
  SRC_HASH=$(cd "$REPO" && find src Cargo.toml Cargo.lock -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
  export SRC_HASH
  if [[ $MODE == full ]]; then
    # The measured build: plain release profile (panic = unwind), own target
    # dir so that other builds of target/release are not disturbed.
    # With CARGO_TARGET_DIR set, builds go there (release and prof/ under it).
    export BUILD_DIR=${CARGO_TARGET_DIR:-$REPO/target/bench/release}
    log "building the module: cargo build --release --lib --bin twofactor (target dir $BUILD_DIR)"
    (cd "$REPO" && env -u CARGO_PROFILE_RELEASE_DEBUG cargo build --quiet --release --lib --bin twofactor --target-dir "$BUILD_DIR")
    export SO=$BUILD_DIR/release/libpam_twofactor.so CLI=$BUILD_DIR/release/twofactor
    export BUILD_DESC="release profile (\`cargo build --release --lib\`: panic = unwind, lto, codegen-units = 1, strip; link flags from build.rs)"
    # Same profile plus debug info, only for the callgrind annotations
    # (not for the fleet section alone).
    export PROF_DIR=${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/prof}
    PROF_DIR=${PROF_DIR:-$REPO/target/bench/profile}
    export PROF_SO=
    if [[ $FLEET_ONLY -eq 0 ]]; then
      log "building the profiling copy: same, with CARGO_PROFILE_RELEASE_DEBUG=true and no strip (target dir $PROF_DIR)"
      (cd "$REPO" && CARGO_PROFILE_RELEASE_DEBUG=true CARGO_PROFILE_RELEASE_STRIP=none cargo build --quiet --release --lib --target-dir "$PROF_DIR")
      PROF_SO=$PROF_DIR/release/libpam_twofactor.so
    fi
  else
    log "building the module (smoke: debug build, shared with make test)"
    (cd "$REPO" && cargo build --quiet --lib --bin twofactor)
    export SO=${CARGO_TARGET_DIR:-$REPO/target}/debug/libpam_twofactor.so CLI=${CARGO_TARGET_DIR:-$REPO/target}/debug/twofactor
    export BUILD_DESC="debug profile (smoke run: numbers are not meaningful)"
    export PROF_SO=
  fi
  [[ -f $SO && -x $CLI ]] || fail "build did not produce $SO and $CLI"

  export HARNESS=$REPO/target/bench/pam_bench IO_FLOOR=$REPO/target/bench/io_floor
  cc -O2 -Wall -Wextra -o "$HARNESS" "$BENCH/pam_bench.c" -lpam || fail "cannot compile the harness"
  cc -O2 -Wall -Wextra -o "$IO_FLOOR" "$BENCH/io_floor.c" || fail "cannot compile io_floor"

  # Root-owned 0755 chain under /var/lib (our module refuses /tmp).
  install -d -m 0755 /var/lib/pam-twofactor-bench
  export RUN
  RUN=$(mktemp -d /var/lib/pam-twofactor-bench/run.XXXXXX)
  chmod 0755 "$RUN"
  # shellcheck disable=SC2317 # run by the EXIT trap
  cleanup_outer() {
    local t0=$SECONDS
    sync
    log "sync took $((SECONDS - t0)) s"
    t0=$SECONDS
    rm -rf --one-file-system "$RUN"
    rmdir /var/lib/pam-twofactor-bench 2>/dev/null || true
    log "removed the fixtures in $((SECONDS - t0)) s"
  }
  if [[ $KEEP -eq 0 ]]; then trap cleanup_outer EXIT; fi

  if [[ -z $OUT ]]; then
    if [[ $FLEET_ONLY -eq 1 && $MODE == smoke ]]; then OUT=$REPO/target/bench/results-fleet-smoke.md
    elif [[ $FLEET_ONLY -eq 1 ]]; then OUT=$REPO/target/bench/results-fleet.md
    elif [[ $MODE == full ]]; then OUT=$BENCH/results.md; else OUT=$REPO/target/bench/results-smoke.md; fi
  fi
  export REPO BENCH
  inner_args=(--inner "--out=$OUT")
  if [[ $MODE == smoke ]]; then inner_args+=(--smoke); fi
  if [[ $RESET_BEFORE -eq 1 ]]; then inner_args+=(--reset-before); fi
  if [[ $FLEET_ONLY -eq 1 ]]; then inner_args+=(--fleet-only); fi
  if unshare --mount --propagation private true 2>/dev/null; then
    export NAMESPACE=1
    unshare --mount --propagation private bash "$BENCH/run.sh" "${inner_args[@]}"
  else
    log "WARNING: no private mount namespace: running without a syslog socket"
    export NAMESPACE=0
    bash "$BENCH/run.sh" "${inner_args[@]}"
  fi
  END=$(date +%s)
  log "done in $((END - START)) s ($MODE run); report: $OUT"
  exit 0
fi

# --------------------------------------------------------------------------
# Inner part (private mount namespace).
# --------------------------------------------------------------------------
ARCH_LIB=/usr/lib/$(uname -m)-linux-gnu
FAKETIME_LIB=$ARCH_LIB/faketime/libfaketime.so.1
PW_LIB=$ARCH_LIB/libpam_wrapper.so
for f in "$FAKETIME_LIB" "$PW_LIB"; do [[ -f $f ]] || fail "missing $f"; done
PW_LOCK_DIR=/run/pam-twofactor-tests # the integration tests serialise pam_wrapper here too
install -d -m 0755 "$PW_LOCK_DIR"
PW_LOCK=$PW_LOCK_DIR/pam_wrapper.lock

T0="2030-06-15 12:00:00"                   # the pinned (frozen) time of every login
SECRET=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ     # base32 of "12345678901234567890"
SECRET_HEX=3132333435363738393031323334353637383930
CODE=$(oathtool --totp -b "$SECRET" --now "$T0 UTC")
# A wrong code: not among the codes of steps T0-1 .. T0+1 (every module's window).
VALID=$(oathtool --totp -b "$SECRET" --now "$(date -u -d "$T0 UTC 30 seconds ago" '+%F %T') UTC" -w 2)
WRONG=000000
while grep -qx "$WRONG" <<<"$VALID"; do WRONG=$(printf '%06d' $((10#$WRONG + 1))); done

# T_*: in-process logins (T_ROUNDS interleaved rounds of T_PER logins per case,
# T_WARM untimed first); P_*: whole pamtester processes; SIM_*: simultaneous
# logins of one user; PROCS/ROUNDS: the 64-process concurrency figures.
if [[ $MODE == full ]]; then
  SIZES=(10 10000); T_ROUNDS=20; T_PER=50; T_WARM=2; P_ROUNDS=20; P_PER=10
  SIM_PROCS=16; SIM_ROUNDS=20; ROUNDS=10; PROCS=64; BK_ITERS=60; CG_BARE=1; CG_MODULES=(ours ga oath); CG_OUTCOMES=(ok fail)
else
  SIZES=(10); T_ROUNDS=2; T_PER=3; T_WARM=1; P_ROUNDS=1; P_PER=2
  SIM_PROCS=4; SIM_ROUNDS=2; ROUNDS=1; PROCS=4; BK_ITERS=2; CG_BARE=0; CG_MODULES=(ours); CG_OUTCOMES=(ok)
fi
MODULES=(ours ga oath)
declare -A R    # every measured figure, keyed "N.module.outcome.figure"

# A syslog daemon stand-in. This machine has no /dev/log; google-authenticator
# then writes every log line to /dev/console (LOG_CONS), which costs ~3.5 ms
# per login on a serial console. In our private namespace /dev becomes a tmpfs
# with the same device nodes plus a /dev/log socket whose reader discards.
SINK_PID=
if [[ $NAMESPACE -eq 1 && ! -S /dev/log ]]; then
  OLDDEV=$RUN/olddev
  mkdir -p "$OLDDEV"
  mount --rbind /dev "$OLDDEV"
  mount -t tmpfs -o mode=0755,size=1m bench-dev /dev
  for e in "$OLDDEV"/*; do
    name=${e##*/}
    if [[ -d $e && ! -L $e ]]; then
      mkdir -p "/dev/$name" && mount --rbind "$e" "/dev/$name"
    else
      cp -a "$e" "/dev/$name" 2>/dev/null || true
    fi
  done
  "$HARNESS" -L /dev/log &
  SINK_PID=$!
  for _ in $(seq 50); do [[ -S /dev/log ]] && break; sleep 0.02; done
  [[ -S /dev/log ]] || fail "the /dev/log sink did not start"
  SYSLOG_DESC="a datagram socket at /dev/log (private mount namespace) whose reader discards, standing in for journald"
elif [[ -S /dev/log ]]; then
  SYSLOG_DESC="the machine's own /dev/log"
else
  SYSLOG_DESC="NONE: /dev/log is missing, google-authenticator writes its log lines to /dev/console"
fi
# libfaketime keeps a semaphore and a shared-memory file in /dev/shm per
# process that loads it first; one that execs or forks leaves them behind.
# A private /dev/shm takes them away with the namespace, not into the host's.
# PostgreSQL (the fleet section) keeps its dynamic shared memory there too:
# tmpfs takes pages only as they are used, the size is only a bound.
if [[ $NAMESPACE -eq 1 ]]; then
  mount -t tmpfs -o mode=1777,size=256m bench-shm /dev/shm
fi
cleanup_inner() {
  fleet_cleanup
  if [[ -n $SINK_PID ]]; then kill "$SINK_PID" 2>/dev/null || true; fi
}
# The fleet section (PostgreSQL, the agent): bench/fleet.sh.
# shellcheck source=bench/fleet.sh
source "$BENCH/fleet.sh"
trap cleanup_inner EXIT

# ------------------------------------------------------------ fixtures -----
TMPL=$RUN/template
install -d -m 0755 "$TMPL"
install -d -m 0700 "$TMPL/state"
printf 'state_dir = "%s"\n' "$TMPL/state" >"$TMPL/ours.toml"
chmod 0600 "$TMPL/ours.toml"
# `twofactor enroll` needs a user in the passwd database: enroll root once and
# copy its records (they hold no user name) to every benchmark user.
printf '%s\n' "$SECRET" |
  "$CLI" --config "$TMPL/ours.toml" enroll root --secret-file - --json >"$TMPL/enroll.json" ||
  fail "twofactor enroll failed"
[[ -f $TMPL/state/root.secret && -f $TMPL/state/root.state ]] || fail "enroll wrote no records"
OURS_SECRET=$(<"$TMPL/state/root.secret")
OURS_STATE=$(<"$TMPL/state/root.state")
GA_FILE=$(printf '%s\n" RATE_LIMIT 3 30\n" WINDOW_SIZE 3\n" DISALLOW_REUSE\n" TOTP_AUTH\n' "$SECRET"
  for i in 1 2 3 4 5; do printf '%08d\n' $((10#${CODE} * 100 + i)); done) # 5 scratch codes, as the CLI makes

user_name() { printf 'u%05d' "$1"; }

make_fixture() { # DIR N
  local F=$1 N=$2 i u
  install -d -m 0755 "$F" "$F/pam.d"
  install -d -m 0700 "$F/ours" "$F/ga" "$F/oath" "$F/pristine"
  printf 'state_dir = "%s"\n' "$F/ours" >"$F/ours.toml"
  chmod 0600 "$F/ours.toml"
  (
    umask 077
    for ((i = 1; i <= N; i++)); do
      printf -v u 'u%05d' "$i"
      printf '%s\n' "$OURS_SECRET" >"$F/ours/$u.secret"
      printf '%s\n' "$OURS_STATE" >"$F/ours/$u.state"
      printf '%s\n' "$GA_FILE" >"$F/ga/$u"
      printf 'HOTP/T30 %s - %s\n' "$u" "$SECRET_HEX"
    done >"$F/oath/users.oath"
  )
  find "$F/ga" -type f -exec chmod 0400 {} +
  printf '%s\n' "$OURS_STATE" >"$F/pristine/ours.state"
  printf '%s\n' "$GA_FILE" >"$F/pristine/ga"
  cp "$F/oath/users.oath" "$F/pristine/users.oath"
  echo "auth required $SO config=$F/ours.toml" >"$F/pam.d/ours"
  echo "auth required pam_google_authenticator.so secret=$F/ga/\${USER} user=root" >"$F/pam.d/ga"
  echo "auth required pam_oath.so usersfile=$F/oath/users.oath window=1" >"$F/pam.d/oath"
  printf 'auth required pam_deny.so\naccount required pam_deny.so\n' >"$F/pam.d/other"
}

restore_spec() { # F module user -> SRC:DST of the file a login rewrites
  case $2 in
    ours) echo "$1/pristine/ours.state:$1/ours/$3.state" ;;
    ga) echo "$1/pristine/ga:$1/ga/$3" ;;
    oath) echo "$1/pristine/users.oath:$1/oath/users.oath" ;;
  esac
}
restore() { # F module user
  local spec src dst
  spec=$(restore_spec "$@")
  src=${spec%%:*} dst=${spec#*:}
  cat "$src" >"$dst"
  sync "$dst"
}

# ------------------------------------------------------------- runners -----
# pamtester through pam_wrapper with libfaketime, as in TESTING.md. Serialised
# with the integration tests' lock; pam_wrapper's /tmp/pam.X directories that
# a valgrind'ed pamtester leaves behind are removed.
pw_pamtester() { # F service user answer expect(ok|fail) prefix...
  local F=$1 svc=$2 user=$3 answer=$4 expect=$5
  shift 5
  local out rc=0 before
  before=$(ls -d /tmp/pam.? 2>/dev/null || true)
  out=$(printf '%s\n' "$answer" | flock -w 300 "$PW_LOCK" "$@" env LD_PRELOAD="$PW_LIB $FAKETIME_LIB" \
    PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$F/pam.d" FAKETIME="$T0" FAKETIME_DONT_FAKE_MONOTONIC=1 \
    pamtester -v "$svc" "$user" authenticate 2>&1) || rc=$?
  pw_cleanup "$before"
  check_pamtester "$out" "$rc" "$expect" "pamtester $svc $user ($*)"
}
pw_cleanup() { # the /tmp/pam.X directories before -> removes new ones no live process owns
  local d
  for d in $(ls -d /tmp/pam.? 2>/dev/null || true); do
    grep -qx "$d" <<<"$1" && continue
    [[ -f $d/pid ]] && kill -0 "$(<"$d/pid")" 2>/dev/null && continue
    rm -rf "$d"
  done
}
# The same without pam_wrapper: the service directory bound over /etc/pam.d in
# a (nested) private mount namespace; libfaketime alone in LD_PRELOAD.
bare_pamtester() { # F service user answer expect prefix...
  local F=$1 svc=$2 user=$3 answer=$4 expect=$5
  shift 5
  local out rc=0
  out=$(printf '%s\n' "$answer" | with_pam_d "$F" "$@" env LD_PRELOAD="$FAKETIME_LIB" \
    FAKETIME="$T0" FAKETIME_DONT_FAKE_MONOTONIC=1 pamtester -v "$svc" "$user" authenticate 2>&1) || rc=$?
  check_pamtester "$out" "$rc" "$expect" "bare pamtester $svc $user"
}
# Runs a command with F/pam.d bound over /etc/pam.d, in a nested private
# mount namespace (the host's /etc/pam.d is never touched).
# shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
with_pam_d() { # F command...
  local F=$1
  shift
  unshare --mount --propagation private sh -c 'mount --bind "$0" /etc/pam.d && exec "$@"' "$F/pam.d" "$@"
}
check_pamtester() { # output rc expect what
  local ok=0
  [[ $2 -eq 0 ]] && grep -q 'pamtester: successfully authenticated$' <<<"$1" && ok=1
  if [[ $3 == ok && $ok -ne 1 ]] || [[ $3 == fail && ( $ok -ne 0 || $2 -ne 1 ) ]]; then
    printf '%s\n' "$1" >&2
    fail "$4: expected $3"
  fi
}
callgrind_total() { # file -> collected Ir
  sed -n 's/^totals: *\([0-9]*\).*/\1/p;s/^summary: *\([0-9]*\).*/\1/p' "$1" | awk 'NR == 1'
}
harness() { # args...: pam_bench with libfaketime alone (pam_start_confdir); at $T0 or $AT
  env LD_PRELOAD="$FAKETIME_LIB" FAKETIME="${AT:-$T0}" FAKETIME_DONT_FAKE_MONOTONIC=1 "$HARNESS" "$@"
}
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# Syscalls made inside one pam_authenticate: strace the harness and keep what
# lies between its write(-1, "BENCH_AUTH_BEGIN") and write(-1, "BENCH_AUTH_END");
# and inside the whole transaction (BENCH_TXN_*: pam_start loads the module,
# pam_end unloads it), less the harness's own clock and rusage calls.
syscalls() { # F module user answer expect -> "total open read write fsync rename stat lock fsyncdir txn"
  local F=$1 m=$2 u=$3 a=$4 e=$5 t
  t=$RUN/strace.$m.$$
  strace -o "$t" env LD_PRELOAD="$FAKETIME_LIB" FAKETIME="$T0" FAKETIME_DONT_FAKE_MONOTONIC=1 \
    "$HARNESS" -s "$m" -d "$F/pam.d" -u "$u" -a "$a" -n 1 -w 1 -m -e "$e" -r "$(restore_spec "$F" "$m" "$u")" >/dev/null ||
    fail "strace run of $m failed"
  awk '/BENCH_TXN_BEGIN/ {txn = 1; next} /BENCH_TXN_END/ {txn = 0}
    txn && /^[a-z_0-9]+\(/ && !/^(clock_gettime|getrusage)\(/ && !/^write\(-1,/ {txn_total++}
    /BENCH_AUTH_BEGIN/ {on = 1; next} /BENCH_AUTH_END/ {on = 0}
    on && /^[a-z_0-9]+\(/ {
      n = $0; sub(/\(.*/, "", n); total++
      if (n ~ /^open/ && $0 ~ /O_DIRECTORY/ && $0 ~ /= [0-9]+$/) { r = $0; sub(/.*= /, "", r); isdir[r] = 1 }
      if (n == "close") { r = $0; sub(/^close\(/, "", r); sub(/\).*/, "", r); isdir[r] = 0 }
      if (n ~ /^(open|openat|openat2|creat)$/) open++
      else if (n ~ /^(read|pread64|readv|preadv|preadv2)$/) read++
      else if (n ~ /^(write|pwrite64|writev|pwritev|pwritev2)$/) write++
      else if (n ~ /^(fsync|fdatasync|syncfs|sync_file_range)$/) {
        fsync++; fd = $0; sub(/^[a-z_]+\(/, "", fd); sub(/[,)].*/, "", fd)
        if (isdir[fd]) fsyncdir++
      }
      else if (n ~ /^(rename|renameat|renameat2)$/) rename++
      else if (n ~ /^(stat|lstat|fstat|newfstatat|statx)$/) stat++
      else if (n == "flock" || ($0 ~ /^fcntl\(.*F_SETLKW?/)) lock++
    }
    END { printf "%d %d %d %d %d %d %d %d %d %d\n", total, open, read, write, fsync, rename, stat, lock, fsyncdir, txn_total }' "$t"
  cp "$t" "$RUN/strace.$m.last"
  rm -f "$t"
}

# -------------------------------------------------------- measurements -----
# The order of a round: every module in turn, starting one further each round
# (ours ga oath, then ga oath ours, ...), so that neither a drift of the
# machine nor the position in the round favours one module.
rotated() { # round items... -> the items rotated left by round-1
  local r=$1
  shift
  local n=$# i
  local items=("$@")
  for ((i = 0; i < n; i++)); do printf '%s\n' "${items[$(((i + r - 1) % n))]}"; done
}

# Secondary figures: instructions (callgrind) and syscalls per login.
measure_size() { # N
  local N=$1 F=$RUN/n$1 U m o ans exp sc
  U=$(user_name "$N") # the last user: the worst case for pam_oath's linear file
  for m in "${CG_MODULES[@]}"; do
    for o in "${CG_OUTCOMES[@]}"; do
      if [[ $o == ok ]]; then ans=$CODE; else ans=$WRONG; fi
      local k="$N.$m.$o"
      log "$N users, $m, $o: callgrind"
      restore "$F" "$m" "$U"
      pw_pamtester "$F" "$m" "$U" "$ans" "$o" valgrind -q --tool=callgrind --trace-children=yes \
        --toggle-collect=pam_sm_authenticate --callgrind-out-file="$RUN/cg.in.$k"
      R[$k.ir_in]=$(callgrind_total "$RUN/cg.in.$k")
      restore "$F" "$m" "$U"
      pw_pamtester "$F" "$m" "$U" "$ans" "$o" valgrind -q --tool=callgrind --trace-children=yes \
        --callgrind-out-file="$RUN/cg.all.$k"
      R[$k.ir_all]=$(callgrind_total "$RUN/cg.all.$k")
      if [[ $CG_BARE -eq 1 ]]; then
        restore "$F" "$m" "$U"
        bare_pamtester "$F" "$m" "$U" "$ans" "$o" valgrind -q --tool=callgrind --trace-children=yes \
          --callgrind-out-file="$RUN/cg.bare.$k"
        R[$k.ir_bare]=$(callgrind_total "$RUN/cg.bare.$k")
      fi
    done
  done
  log "$N users: strace of one login per module and outcome"
  for m in "${MODULES[@]}"; do
    for o in ok fail; do
      if [[ $o == ok ]]; then ans=$CODE exp=0; else ans=$WRONG exp=7; fi
      local k="$N.$m.$o"
      sc=$(syscalls "$F" "$m" "$U" "$ans" "$exp")
      read -r "R[$k.sc_total]" "R[$k.sc_open]" "R[$k.sc_read]" "R[$k.sc_write]" "R[$k.sc_fsync]" \
        "R[$k.sc_rename]" "R[$k.sc_stat]" "R[$k.sc_lock]" "R[$k.sc_fsyncdir]" "R[$k.sc_txn]" <<<"$sc"
      if [[ $N == "${SIZES[0]}" && $o == ok ]]; then cp "$RUN/strace.$m.last" "$RUN/strace.$m.ok.txt"; fi
    done
  done
}

# Wall and CPU time and page faults of in-process logins, and the I/O floor.
# T_ROUNDS rounds; in each, every (module, size, outcome) case runs T_PER
# logins and io_floor T_PER updates (ours, with -X; and GA's pattern, -D),
# modules in rotated order. Raw samples go to $RUN/t/CASE.ROUND.
measure_times() {
  local rep N F U m o ans exp k item
  install -d "$RUN/t"
  sync
  sleep 1
  for ((rep = 1; rep <= T_ROUNDS; rep++)); do
    log "in-process logins and I/O floor: round $rep of $T_ROUNDS ($T_PER per case)"
    while read -r item; do
      if [[ $item == floor ]]; then
        F=$RUN/n${SIZES[0]}
        "$IO_FLOOR" -d "$F/ours" -s "$F/pristine/ours.state" -n "$T_PER" -w "$T_WARM" -X -o "$RUN/t/floor.dir.$rep" >/dev/null ||
          fail "io_floor -X"
        "$IO_FLOOR" -d "$F/ours" -s "$F/pristine/ours.state" -n "$T_PER" -w "$T_WARM" -D -o "$RUN/t/floor.nodir.$rep" >/dev/null ||
          fail "io_floor -D"
        continue
      fi
      m=$item
      for N in "${SIZES[@]}"; do
        F=$RUN/n$N U=$(user_name "$N")
        for o in ok fail; do
          if [[ $o == ok ]]; then ans=$CODE exp=0; else ans=$WRONG exp=7; fi
          k="$N.$m.$o"
          harness -s "$m" -d "$F/pam.d" -u "$U" -a "$ans" -n "$T_PER" -w "$T_WARM" -e "$exp" \
            -r "$(restore_spec "$F" "$m" "$U")" -o "$RUN/t/$k.$rep" </dev/null >/dev/null || fail "harness: $m $o with $N users"
        done
      done
    done < <(rotated "$rep" "${MODULES[@]}" floor)
  done
  for N in "${SIZES[@]}"; do
    for m in "${MODULES[@]}"; do
      for o in ok fail; do
        k="$N.$m.$o"
        read -r "R[$k.txn_med]" "R[$k.txn_p95]" "R[$k.samples]" <<<"$(stats 2 1000 "$RUN/t/$k".*)"
        read -r "R[$k.auth_med]" "R[$k.auth_p95]" _ <<<"$(stats 1 1000 "$RUN/t/$k".*)"
        read -r "R[$k.cpu_med]" _ _ <<<"$(stats 3 1000 "$RUN/t/$k".*)"
        read -r "R[$k.txn_minflt]" _ _ <<<"$(stats 5 1 "$RUN/t/$k".*)"
        read -r "R[$k.auth_minflt]" _ _ <<<"$(stats 7 1 "$RUN/t/$k".*)"
        R[$k.txn_majflt]=$(cat "$RUN/t/$k".* | awk '{s += $6} END {print s + 0}')
      done
    done
  done
  read -r "R[floor.dir.med]" "R[floor.dir.p95]" _ <<<"$(stats 1 1000 "$RUN/t/floor.dir".*)"
  read -r "R[floor.nodir.med]" "R[floor.nodir.p95]" _ <<<"$(stats 1 1000 "$RUN/t/floor.nodir".*)"
  local Nlo=${SIZES[0]} Nhi=${SIZES[${#SIZES[@]} - 1]}
  for o in ok fail; do
    for N in "${SIZES[@]}"; do
      R[$N.$o.txn_vs_ga]=$(round_ratios 2 "$RUN/t/$N.ours.$o" "$RUN/t/$N.ga.$o")
      R[$N.$o.auth_vs_ga]=$(round_ratios 1 "$RUN/t/$N.ours.$o" "$RUN/t/$N.ga.$o")
    done
    if [[ $Nhi != "$Nlo" ]]; then
      for m in "${MODULES[@]}"; do
        R[scale.$m.$o]=$(round_ratios 2 "$RUN/t/$Nhi.$m.$o" "$RUN/t/$Nlo.$m.$o")
      done
    fi
  done
}

# Whole pamtester processes, successful login, smallest fixture: with
# pam_wrapper (as in the tests) and without it (the service directory bound
# over /etc/pam.d in a nested private mount namespace, as a real host reads
# it). P_ROUNDS rounds of P_PER processes per module, modules rotated.
measure_processes() {
  local N=${SIZES[0]} F U rep m before
  F=$RUN/n$N U=$(user_name "$N")
  install -d "$RUN/p"
  for ((rep = 1; rep <= P_ROUNDS; rep++)); do
    log "pamtester processes: round $rep of $P_ROUNDS ($P_PER per module and setup)"
    while read -r m; do
      before=$(ls -d /tmp/pam.? 2>/dev/null || true)
      flock -w 300 "$PW_LOCK" "$HARNESS" -X -n "$P_PER" -w 1 -e 0 -a "$CODE" -r "$(restore_spec "$F" "$m" "$U")" \
        -E "LD_PRELOAD=$PW_LIB $FAKETIME_LIB" -E PAM_WRAPPER=1 -E "PAM_WRAPPER_SERVICE_DIR=$F/pam.d" \
        -E "FAKETIME=$T0" -E FAKETIME_DONT_FAKE_MONOTONIC=1 -o "$RUN/p/pw.$m.$rep" \
        -- pamtester -v "$m" "$U" authenticate </dev/null >/dev/null || fail "pamtester with pam_wrapper: $m"
      pw_cleanup "$before"
      with_pam_d "$F" "$HARNESS" -X -n "$P_PER" -w 1 -e 0 -a "$CODE" -r "$(restore_spec "$F" "$m" "$U")" \
        -E "LD_PRELOAD=$FAKETIME_LIB" -E "FAKETIME=$T0" -E FAKETIME_DONT_FAKE_MONOTONIC=1 -o "$RUN/p/bare.$m.$rep" \
        -- pamtester -v "$m" "$U" authenticate </dev/null >/dev/null || fail "bare pamtester: $m"
    done < <(rotated "$rep" "${MODULES[@]}")
  done
  local v
  for v in pw bare; do
    for m in "${MODULES[@]}"; do
      read -r "R[proc.$v.$m.med]" "R[proc.$v.$m.p95]" "R[proc.$v.$m.n]" <<<"$(stats 1 1000 "$RUN/p/$v.$m".*)"
      read -r "R[proc.$v.$m.cpu]" _ _ <<<"$(stats 2 1000 "$RUN/p/$v.$m".*)"
      read -r "R[proc.$v.$m.minflt]" _ _ <<<"$(stats 3 1 "$RUN/p/$v.$m".*)"
      read -r "R[proc.$v.$m.majflt]" _ _ <<<"$(stats 4 1 "$RUN/p/$v.$m".*)"
    done
    R[proc.$v.vs_ga]=$(round_ratios 1 "$RUN/p/$v.ours" "$RUN/p/$v.ga")
  done
  # System calls of one whole process (strace -f -c), without pam_wrapper.
  local t
  for m in "${MODULES[@]}"; do
    t=$RUN/strace-c.$m
    restore "$F" "$m" "$U"
    printf '%s\n' "$CODE" | with_pam_d "$F" strace -f -c -o "$t" -E "LD_PRELOAD=$FAKETIME_LIB" -E "FAKETIME=$T0" -E FAKETIME_DONT_FAKE_MONOTONIC=1 \
      pamtester "$m" "$U" authenticate >/dev/null 2>&1 || fail "strace -c of pamtester ($m)"
    R[proc.sc.$m]=$(awk '$NF == "total" {print $4}' "$t")
  done
  restore "$F" ours "$U"
}

# One user, SIM_PROCS logins released together, each with the right code:
# replay protection lets one of them in, the others are refused; what is
# timed is how long the whole batch takes (our per-user lock serialises it).
measure_simultaneous() {
  local N=${SIZES[0]} F U rep m
  F=$RUN/n$N U=$(user_name 1)
  install -d "$RUN/s"
  for ((rep = 1; rep <= SIM_ROUNDS; rep++)); do
    log "one user, $SIM_PROCS simultaneous logins: round $rep of $SIM_ROUNDS"
    while read -r m; do
      harness -s "$m" -d "$F/pam.d" -u "$U" -a "$CODE" -P "$SIM_PROCS" -n 1 -w 1 \
        -r "$(restore_spec "$F" "$m" "$U")" -o "$RUN/s/$m.$rep" </dev/null >/dev/null || fail "simultaneous logins: $m"
    done < <(rotated "$rep" "${MODULES[@]}")
  done
  for m in "${MODULES[@]}"; do
    read -r "R[sim.$m.med]" "R[sim.$m.p95]" _ <<<"$(stats 1 1000 "$RUN/s/$m".*)"
    R[sim.$m.ok]=$(cat "$RUN/s/$m".* | awk 'NR == 1 || $2 < lo {lo = $2} NR == 1 || $2 > hi {hi = $2} END {print (lo == hi) ? lo : lo "-" hi}')
  done
  R[sim.vs_ga]=$(round_ratios 1 "$RUN/s/ours" "$RUN/s/ga")
}

# stats COL SCALE FILE... -> "median p95 count" of column COL divided by SCALE
# (p95 by nearest rank, as pam_bench computes it).
stats() {
  local c=$1 d=$2
  shift 2
  cat "$@" 2>/dev/null | awk -v c="$c" '{print $c}' | sort -n | awk -v d="$d" '{v[NR] = $1} END {
    if (NR == 0) { print "- - 0"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f %.1f %d\n", m / d, v[int(0.95 * (NR - 1) + 0.5) + 1] / d, NR }'
}
# round_ratios COL A B -> "median min max" over rounds r of median(A.r) / median(B.r)
round_ratios() {
  local c=$1 a=$2 b=$3 fa r ma mb
  for fa in "$a".*; do
    r=${fa##*.}
    [[ -f $b.$r ]] || continue
    read -r ma _ _ <<<"$(stats "$c" 1 "$fa")"
    read -r mb _ _ <<<"$(stats "$c" 1 "$b.$r")"
    awk -v a="$ma" -v b="$mb" 'BEGIN { if (b > 0) printf "%.6f\n", a / b }'
  done | sort -n | awk '{v[NR] = $1} END {
    if (NR == 0) { print "n/a n/a n/a"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.6f %.6f %.6f\n", m, v[1], v[NR] }'
}

# 64 concurrent logins (forked by the harness, released together).
measure_concurrency() { # N
  local N=$1 F=$RUN/n$1 m list out i k
  for m in "${MODULES[@]}"; do
    list=$RUN/restore.$m
    : >"$list"
    if [[ $m == oath ]]; then
      restore_spec "$F" oath x | tr ':' ' ' >>"$list"
    else
      for ((i = 1; i <= PROCS; i++)); do restore_spec "$F" "$m" "$(user_name "$i")" | tr ':' ' ' >>"$list"; done
    fi
    log "concurrency: $m, $PROCS users with right codes, $ROUNDS rounds"
    out=$(harness -s "$m" -d "$F/pam.d" -u 'u%05d' -a "$CODE" -P "$PROCS" -n "$ROUNDS" -w 1 -R "$list") ||
      fail "concurrent harness ($m, many users)"
    k="conc.$m.users"
    R[$k]=$out
    log "concurrency: $m, one user, $PROCS wrong codes, $ROUNDS rounds"
    out=$(harness -s "$m" -d "$F/pam.d" -u "$(user_name 1)" -a "$WRONG" -P "$PROCS" -n "$ROUNDS" -w 1 -e -2 \
      -r "$(restore_spec "$F" "$m" "$(user_name 1)")") || fail "concurrent harness ($m, one user): a wrong code succeeded"
    R[conc.$m.one]=$out
  done
}

# Backup codes: CPU of one attempt, with all codes left and with one left.
measure_backup() {
  local counts=(10) c B cfg setup codes out n last k
  [[ $MODE == full ]] && counts=(10 100)
  for c in "${counts[@]}"; do
    B=$RUN/backup$c
    install -d -m 0755 "$B" "$B/pam.d"
    install -d -m 0700 "$B/state"
    cfg=$B/ours.toml setup=$B/setup.toml
    printf 'state_dir = "%s"\n[backup_codes]\ncount = %d\n' "$B/state" "$c" >"$cfg"
    # Consuming codes quickly needs a higher rate limit than the default.
    printf 'state_dir = "%s"\n[rate_limit]\nmax_attempts = 10000\n' "$B/state" >"$setup"
    chmod 0600 "$cfg" "$setup"
    printf '%s\n' "$SECRET" | "$CLI" --config "$cfg" enroll root --secret-file - --json >"$B/enroll.json"
    codes=$(grep -oE '[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{4}' "$B/enroll.json")
    n=$(wc -l <<<"$codes")
    [[ $n -eq $c ]] || fail "enroll printed $n backup codes, expected $c"
    echo "auth required $SO config=$cfg" >"$B/pam.d/ours"
    echo "auth required $SO config=$setup" >"$B/pam.d/setup"
    printf 'auth required pam_deny.so\n' >"$B/pam.d/other"
    cp "$B/state/root.state" "$B/all-left.state"
    last=$(tail -1 <<<"$codes")
    log "backup codes ($c per set): all $c left"
    out=$(harness -s ours -d "$B/pam.d" -u root -a "$last" -n "$BK_ITERS" -w 1 -e 0 \
      -r "$B/all-left.state:$B/state/root.state") || fail "backup code login ($c left)"
    R[bk.$c.all]=$out
    log "backup codes ($c per set): a wrong 16-digit code"
    out=$(harness -s ours -d "$B/pam.d" -u root -a 1111-2222-3333-4444 -n "$BK_ITERS" -w 1 -e 7 \
      -r "$B/all-left.state:$B/state/root.state") || fail "wrong backup code login"
    R[bk.$c.wrong]=$out
    if [[ $c -gt 1 ]]; then
      head -n $((c - 1)) <<<"$codes" >"$B/use.txt"
      # An hour before T0, so that the rate-limit window is over at T0.
      AT=$(date -u -d "$T0 UTC 1 hour ago" '+%F %T') harness -s setup -d "$B/pam.d" -u root -A "$B/use.txt" -n $((c - 1)) -w 0 -e 0 -N >/dev/null ||
        fail "could not use $((c - 1)) backup codes"
      cp "$B/state/root.state" "$B/one-left.state"
      log "backup codes ($c per set): 1 left"
      out=$(harness -s ours -d "$B/pam.d" -u root -a "$last" -n "$BK_ITERS" -w 1 -e 0 \
        -r "$B/one-left.state:$B/state/root.state") || fail "backup code login (1 left)"
      R[bk.$c.one]=$out
    fi
  done
}

# Memory of $PROCS parallel backup-code attempts (different users, a wrong
# 16-digit code each, released together): the peak of the whole batch in a
# memory cgroup of its own, against the same batch answering a wrong TOTP
# code (no argon2). The difference is what the hashing costs; the module
# runs at most 4 argon2 hashes at once per host (19 MiB each).
memory_cgroup() { # -> "DIR PEAK_FILE" of a new memory cgroup (v1 or v2), or nothing
  local rel d
  if [[ -d /sys/fs/cgroup/memory ]]; then
    rel=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
    d=/sys/fs/cgroup/memory${rel%/}/pam-twofactor-bench.$$
    if mkdir "$d" 2>/dev/null; then echo "$d memory.max_usage_in_bytes"; return; fi
  fi
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    rel=$(sed -n 's/^0:://p' /proc/self/cgroup)
    d=/sys/fs/cgroup${rel%/}/pam-twofactor-bench.$$
    if mkdir "$d" 2>/dev/null; then
      if [[ -f $d/memory.peak ]]; then echo "$d memory.peak"; return; fi
      rmdir "$d"
    fi
  fi
  return 0
}
peak_memory() { # args...: runs them in a fresh memory cgroup -> peak bytes, or "" without one
  local cg file peak rc=0
  read -r cg file <<<"$(memory_cgroup)"
  if [[ -z $cg ]]; then
    "$@" >/dev/null
    return
  fi
  (echo "$BASHPID" >"$cg/cgroup.procs" && "$@") >/dev/null || rc=$?
  peak=$(<"$cg/$file")
  rmdir "$cg" 2>/dev/null || true
  [[ $rc -eq 0 ]] || return "$rc"
  echo "$peak"
}
measure_backup_memory() {
  local F=$RUN/n$NC list=$RUN/restore.mem i
  : >"$list"
  for ((i = 1; i <= PROCS; i++)); do restore_spec "$F" ours "$(user_name "$i")" | tr ':' ' ' >>"$list"; done
  log "memory: $PROCS parallel wrong backup codes, then $PROCS parallel wrong TOTP codes"
  R[mem.backup]=$(peak_memory harness -s ours -d "$F/pam.d" -u 'u%05d' -a 1111-2222-3333-4444 -P "$PROCS" -n 1 -w 0 -e 7 -R "$list") ||
    fail "parallel backup-code attempts"
  R[mem.totp]=$(peak_memory harness -s ours -d "$F/pam.d" -u 'u%05d' -a "$WRONG" -P "$PROCS" -n 1 -w 0 -e 7 -R "$list") ||
    fail "parallel TOTP attempts"
}

# Whole-process instructions split into the parts that differ between modules
# (successful login, smallest fixture): callgrind inclusive costs.
BD_FUNCS=(pam_start pam_authenticate pam_sm_authenticate pam_end _dl_relocate_object _dl_lookup_symbol_x _dl_runtime_resolve_xsave _dl_init)
breakdown() {
  local m f k N=${SIZES[0]} kind=all
  # Without pam_wrapper when measured: its pam_start/pam_authenticate/pam_end
  # wrap libpam's functions of the same names, which callgrind_annotate merges.
  if [[ $CG_BARE -eq 1 ]]; then kind=bare; fi
  BD_KIND=$kind
  for m in "${CG_MODULES[@]}"; do
    k="$N.$m.ok"
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$RUN/cg.$kind.$k" >"$RUN/cg.$kind.$k.incl" 2>/dev/null || true
    for f in "${BD_FUNCS[@]}"; do
      R[bd.$m.$f]=$(annot_entries "$RUN/cg.$kind.$k.incl" all | awk -F '\t' -v f="$f" '$3 == f {
        ir = $1; gsub(/,/, "", ir); if (ir + 0 > max) max = ir + 0 } END { print max + 0 }')
    done
  done
  local so c
  for m in "${MODULES[@]}"; do
    case $m in
      ours) so=$SO ;;
      ga) so=pam_google_authenticator.so ;;
      oath) so=pam_oath.so ;;
    esac
    if [[ $m != ours ]]; then
      for c in /lib/*-linux-gnu/security/"$so" /usr/lib/*-linux-gnu/security/"$so"; do
        if [[ -f $c ]]; then so=$c; break; fi
      done
    fi
    R[bd.$m.size]=$(stat -L -c %s "$so")
    R[bd.$m.relocs]=$(readelf -rW "$so" 2>/dev/null | grep -c 'R_X86_64_' || true)
    R[bd.$m.undef]=$(nm -D --undefined-only "$so" 2>/dev/null | wc -l)
    R[bd.$m.needed]=$(readelf -dW "$so" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  done
}

# Where our pam_sm_authenticate spends its instructions (debug-info build).
profile_ours() {
  local F=$RUN/n${SIZES[0]} U o ans P
  U=$(user_name "${SIZES[0]}")
  P=$RUN/prof
  install -d -m 0755 "$P"
  cp -r "$F/pam.d" "$P/pam.d"
  echo "auth required $PROF_SO config=$F/ours.toml" >"$P/pam.d/ours"
  for o in ok fail; do
    if [[ $o == ok ]]; then ans=$CODE; else ans=$WRONG; fi
    log "profile: ours, $o (debug info build)"
    restore "$F" ours "$U"
    pw_pamtester "$P" ours "$U" "$ans" "$o" valgrind -q --tool=callgrind --trace-children=yes \
      --toggle-collect=pam_sm_authenticate --dump-instr=no --callgrind-out-file="$RUN/prof.$o"
    R[prof.$o.total]=$(callgrind_total "$RUN/prof.$o")
    callgrind_annotate --auto=no --inclusive=yes --threshold=99.9 "$RUN/prof.$o" >"$RUN/prof.$o.incl" 2>/dev/null || true
    callgrind_annotate --auto=no --inclusive=no --threshold=99.9 "$RUN/prof.$o" >"$RUN/prof.$o.self" 2>/dev/null || true
  done
  restore "$F" ours "$U"
}

# -------------------------------------------------------------- report -----
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.*f", d, a / b }'; }
num() { # thousands separators for big integers
  awk -v a="$1" 'BEGIN { if (a == "" || a == "-") { print "n/a"; exit } sub(/\.0$/, "", a)
    if (a !~ /^[0-9]+$/ || a < 10000) { print a; exit }
    s = ""; while (length(a) > 3) { s = "," substr(a, length(a) - 2) s; a = substr(a, 1, length(a) - 3) } print a s }'
}
ms() { awk -v a="$1" 'BEGIN { if (a == "" || a == "-") print "n/a"; else printf "%.3f", a / 1000 }'; }
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "n/a"; else printf "%.3f", (a - b) / 1000 }'; }
# "median min max" of per-round ratios -> "1.490× (rounds 1.402–1.611)"
rr() {
  local m lo hi
  read -r m lo hi <<<"$1"
  if [[ -z $m || $m == n/a ]]; then echo "n/a"; return; fi
  if [[ $lo == "$hi" ]]; then printf '%.3f×' "$m"; else printf '%.3f× (rounds %.2f–%.2f)' "$m" "$lo" "$hi"; fi
}
first() { echo "${1%% *}"; }
# A smoke run measures a debug build with few iterations: its figures say
# the harness works, not whether a target is met.
passfail() {
  if [[ $MODE == smoke ]]; then echo "not judged (smoke: debug build)"; return; fi
  awk -v a="$1" -v lim="$2" 'BEGIN { if (a == "n/a" || a == "") print "n/a"; else if (a + 0 <= lim + 0) print "PASS"; else print "FAIL" }'
}

# Entries of a callgrind_annotate listing (--auto=no) as "Ir<TAB>pct<TAB>function<TAB>object",
# without the callers above pam_sm_authenticate (>= 100%).
annot_entries() { # file [all: keep the callers above pam_sm_authenticate]
  awk -v all="${2:-}" '
    /^Ir +file:function/ { on = 1; next }
    on && /^-+$/ { next }
    on && /^ *$/ { if (seen) exit; next }
    on && $1 ~ /^[0-9,]+$/ {
      seen = 1; ir = $1; line = $0
      pct = line; sub(/^ *[0-9,]+ +\( */, "", pct); sub(/%\).*/, "", pct)
      sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, "", line)
      obj = "libpam_twofactor.so"
      if (match(line, / \[[^]]*\]$/)) {
        obj = substr(line, RSTART + 2, RLENGTH - 3); line = substr(line, 1, RSTART - 1)
        sub(/.*\//, "", obj)
      }
      sub(/^[^:]*:/, "", line)
      if (all == "" && pct + 0 >= 100 && line != "pam_sm_authenticate") next
      printf "%s\t%s\t%s\t%s\n", ir, pct, line, obj
    }' "$1"
}
# One line per function: the largest inclusive cost (mode max) or the summed
# self cost (mode sum) over the source files callgrind attributes it to.
annot_merged() { # file max|sum total
  annot_entries "$1" | awk -F '\t' -v mode="$2" -v total="$3" '{
    ir = $1; gsub(/,/, "", ir); k = $3 "\t" $4
    if (mode == "sum") v[k] += ir; else if (ir + 0 > v[k] + 0) v[k] = ir
  } END { for (k in v) printf "%d\t%.1f\t%s\n", v[k], 100 * v[k] / total, k }' | sort -t "$(printf '\t')" -k1,1nr
}
annot_rows() { # file count max|sum total -> Markdown rows
  annot_merged "$1" "$3" "$4" | awk -F '\t' -v max="$2" 'NR > max { next }
    function commas(n,  s) { s = ""; while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) } return n s }
    {
    f = $3; if (length(f) > 110) f = substr(f, 1, 107) "..."
    gsub(/\|/, "\\|", f)
    printf "| %s | %s | `%s` | %s |\n", commas($1), $2, f, $4 }'
}
# Self cost summed by crate (first path segment of a Rust symbol) or library.
annot_crates() { # self-cost file count -> Markdown rows
  annot_entries "$1" | awk -F '\t' '{
    ir = $1; gsub(/,/, "", ir); key = $4
    if (key == "libpam_twofactor.so") {
      n = $3; sub(/^[<&*]+/, "", n)
      if (index(n, "::")) key = substr(n, 1, index(n, "::") - 1); else key = n
      key = key " (crate)"
    }
    sum[key] += ir; total += ir
  } END { for (k in sum) printf "%d\t%.1f\t%s\n", sum[k], 100 * sum[k] / total, k }' |
    sort -rn | awk -F '\t' -v max="$2" '
      function commas(n,  s) { s = ""; while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) } return n s }
      NR <= max { printf "| %s | %s | %s |\n", commas($1), $2, $3 }'
}

write_report() {
  local f=$1 N m o k
  local cpu mem kernel fsys commit dirty srchash
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | awk 'NR == 1')
  mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
  kernel=$(uname -sr)
  fsys=$(df -T /var/lib/pam-twofactor-bench | awk 'NR == 2 {print $2 " on " $1}')
  commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=
  if git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q .; then dirty=" + uncommitted changes in src/"; fi
  srchash=${SRC_HASH:-?}
  pkgv() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
  local Nlo=${SIZES[0]} Nhi=${SIZES[${#SIZES[@]} - 1]}
  local title
  title="## Run of $(date -u '+%Y-%m-%d %H:%M UTC') ($MODE)"
  if [[ ${BUSY_PRELIM:-0} -eq 1 ]]; then title="$title — preliminary: the machine was busy"; fi
  {
    echo "$title"
    echo
    echo "- Machine: $cpu, $(nproc) cores, $mem, $kernel; state files on $fsys (/var/lib)."
    echo "- Load: $BUSY_DESC."
    echo "- Our module: commit $commit$dirty (src/ content hash $srchash), $BUILD_DESC, $(stat -c %s "$SO") bytes."
    echo "- libpam-google-authenticator $(pkgv libpam-google-authenticator), libpam-oath $(pkgv libpam-oath) (liboath0 $(pkgv liboath0)), libpam0g $(pkgv libpam0g), pam_wrapper $(pkgv libpam-wrapper), pamtester $(pkgv pamtester), libfaketime $(pkgv libfaketime), valgrind $(pkgv valgrind), strace $(pkgv strace), $(rustc --version 2>/dev/null || echo rustc ?)."
    echo "- Time pinned at $T0 UTC (libfaketime, frozen); right code $CODE and wrong code $WRONG from oathtool; same secret for every user of every module."
    echo "- Syslog: $SYSLOG_DESC."
    echo "- Setups: ours defaults (window 1, 5 failures lock, 10 attempts/60 s); google-authenticator (GA) \`secret=DIR/\${USER} user=root\` with \`RATE_LIMIT 3 30\`, \`WINDOW_SIZE 3\`, \`DISALLOW_REUSE\`, \`TOTP_AUTH\`; pam_oath \`usersfile=FILE window=1\`. The measured user is the last of N (pam_oath's worst case)."
    echo "- Rounds: $T_ROUNDS rounds of $T_PER in-process logins per case (${R[$Nlo.ours.ok.samples]:-?} per case in all) and of $T_PER I/O-floor updates; $P_ROUNDS rounds of $P_PER pamtester processes per module and setup; $SIM_ROUNDS rounds of $SIM_PROCS simultaneous logins. Within a round the modules take turns, starting one further each round. Every login starts from the same restored, fsynced state."
    echo
    echo "### Targets (wall-clock; ours against google-authenticator in the same run)"
    echo
    echo "A ratio is the median over rounds of (our median in the round / GA's median in the same round); the lowest and highest round are in brackets."
    echo
    local t1 t2 t3 t4 t4s t4f
    t1=${R[$Nlo.ok.txn_vs_ga]:-}
    t2=${R[proc.bare.vs_ga]:-}
    t3=${R[sim.vs_ga]:-}
    echo "| # | target | measured | result |"
    echo "|---|---|---|---|"
    echo "| 1 | successful login in-process (\`pam_start\` + \`pam_authenticate\` + \`pam_end\`, $Nlo users) ≤ 1.25× GA | $(rr "$t1"): ours $(ms "${R[$Nlo.ours.ok.txn_med]:-}") ms, GA $(ms "${R[$Nlo.ga.ok.txn_med]:-}") ms (medians) | $(passfail "$(first "$t1")" 1.25) |"
    echo "| 2 | one pamtester process, successful login, no pam_wrapper ≤ 1.05× GA | $(rr "$t2"): ours $(ms "${R[proc.bare.ours.med]:-}") ms, GA $(ms "${R[proc.bare.ga.med]:-}") ms; with pam_wrapper $(rr "${R[proc.pw.vs_ga]:-}") | $(passfail "$(first "$t2")" 1.05) |"
    echo "| 3 | one user, $SIM_PROCS simultaneous logins: the batch ≤ 1.5× GA's | $(rr "$t3"): ours $(ms "${R[sim.ours.med]:-}") ms, GA $(ms "${R[sim.ga.med]:-}") ms (median batch) | $(passfail "$(first "$t3")" 1.5) |"
    if [[ $Nhi != "$Nlo" ]]; then
      t4s=$(first "${R[scale.ours.ok]:-}") t4f=$(first "${R[scale.ours.fail]:-}")
      t4=$(awk -v a="$t4s" -v b="$t4f" 'BEGIN {print (a > b) ? a : b}')
      echo "| 4 | $Nhi vs $Nlo users, in-process login ≤ 1.05× (success and failure; the larger is judged) | success $(rr "${R[scale.ours.ok]:-}"), failure $(rr "${R[scale.ours.fail]:-}"); GA success $(rr "${R[scale.ga.ok]:-}"), pam_oath success $(rr "${R[scale.oath.ok]:-}") | $(passfail "$t4" 1.05) |"
    else
      echo "| 4 | 10000 vs $Nlo users, in-process login ≤ 1.05× | not measured (only $Nlo users in a $MODE run) | n/a |"
    fi
    local bkmax=0 bkmed=0 v
    for k in "${!R[@]}"; do
      [[ $k == bk.* ]] || continue
      v=$(kv cpu_max_us " ${R[$k]}")
      bkmax=$(awk -v a="$bkmax" -v b="$v" 'BEGIN {print (b > a) ? b : a}')
      v=$(kv cpu_median_us " ${R[$k]}")
      bkmed=$(awk -v a="$bkmed" -v b="$v" 'BEGIN {print (b > a) ? b : a}')
    done
    echo "| 5 | a backup-code attempt ≤ 50 ms of CPU, whatever the number of codes left | $(ms "$bkmed") ms: the largest median of the cases below; the slowest single attempt of all took $(ms "$bkmax") ms | $(passfail "$(ms "$bkmed")" 50) |"
    local mib_b mib_t mib_d
    mib_b=$(awk -v a="${R[mem.backup]:-}" 'BEGIN { if (a == "") print ""; else printf "%.1f", a / 1048576 }')
    mib_t=$(awk -v a="${R[mem.totp]:-}" 'BEGIN { if (a == "") print ""; else printf "%.1f", a / 1048576 }')
    mib_d=$(awk -v a="$mib_b" -v b="$mib_t" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.1f", a - b }')
    echo "| 6 | $PROCS parallel backup-code attempts ≤ 128 MiB in all (the batch's peak minus the same batch with TOTP codes) | ${mib_d} MiB (${mib_b:-n/a} MiB peak against ${mib_t:-n/a} MiB; a memory cgroup per batch) | $(passfail "$mib_d" 128) |"
    echo
    for N in "${SIZES[@]}"; do
      echo "### Wall-clock per login, $N users"
      echo
      if [[ $N != "$Nlo" ]]; then
        echo "Milliseconds, in-process, as above."
      else
        echo "Milliseconds. In-process: pam_bench.c through the real libpam (\`pam_start_confdir\`). Per process: \`pamtester\` started by pam_bench -X, fork to exit. The I/O floor row is bench/io_floor.c in our state directory, in the same rounds: the durable update alone, for each module's pattern (ours: the other copy of the state read too, written over, fdatasync, the two names swapped with renameat2(RENAME_EXCHANGE), no directory fsync; GA and pam_oath: a new temp file, fsync, rename, no directory fsync)."
      fi
      echo
      echo "| figure | ours | GA | oath | ours/GA | ours/oath |"
      echo "|---|---:|---:|---:|---:|---:|"
      for o in ok fail; do
        local what="successful login"
        [[ $o == fail ]] && what="failed login (wrong code)"
        echo "| **$what**, in-process: \`pam_start\`..\`pam_end\`, median | $(ms "${R[$N.ours.$o.txn_med]:-}") | $(ms "${R[$N.ga.$o.txn_med]:-}") | $(ms "${R[$N.oath.$o.txn_med]:-}") | $(rr "${R[$N.$o.txn_vs_ga]:-}") | $(ratio "${R[$N.ours.$o.txn_med]:-}" "${R[$N.oath.$o.txn_med]:-}") |"
        echo "| same, p95 | $(ms "${R[$N.ours.$o.txn_p95]:-}") | $(ms "${R[$N.ga.$o.txn_p95]:-}") | $(ms "${R[$N.oath.$o.txn_p95]:-}") | $(ratio "${R[$N.ours.$o.txn_p95]:-}" "${R[$N.ga.$o.txn_p95]:-}") | $(ratio "${R[$N.ours.$o.txn_p95]:-}" "${R[$N.oath.$o.txn_p95]:-}") |"
        echo "| \`pam_authenticate\` alone, median | $(ms "${R[$N.ours.$o.auth_med]:-}") | $(ms "${R[$N.ga.$o.auth_med]:-}") | $(ms "${R[$N.oath.$o.auth_med]:-}") | $(rr "${R[$N.$o.auth_vs_ga]:-}") | $(ratio "${R[$N.ours.$o.auth_med]:-}" "${R[$N.oath.$o.auth_med]:-}") |"
        echo "| same, p95 | $(ms "${R[$N.ours.$o.auth_p95]:-}") | $(ms "${R[$N.ga.$o.auth_p95]:-}") | $(ms "${R[$N.oath.$o.auth_p95]:-}") | $(ratio "${R[$N.ours.$o.auth_p95]:-}" "${R[$N.ga.$o.auth_p95]:-}") | $(ratio "${R[$N.ours.$o.auth_p95]:-}" "${R[$N.oath.$o.auth_p95]:-}") |"
        echo "| CPU in \`pam_authenticate\`, median | $(ms "${R[$N.ours.$o.cpu_med]:-}") | $(ms "${R[$N.ga.$o.cpu_med]:-}") | $(ms "${R[$N.oath.$o.cpu_med]:-}") | $(ratio "${R[$N.ours.$o.cpu_med]:-}" "${R[$N.ga.$o.cpu_med]:-}") | $(ratio "${R[$N.ours.$o.cpu_med]:-}" "${R[$N.oath.$o.cpu_med]:-}") |"
        if [[ $o == ok && $N == "$Nlo" ]]; then
          echo "| I/O floor of the module's update, median | $(ms "${R[floor.dir.med]:-}") | $(ms "${R[floor.nodir.med]:-}") | $(ms "${R[floor.nodir.med]:-}") | $(ratio "${R[floor.dir.med]:-}" "${R[floor.nodir.med]:-}") | |"
          echo "| same, p95 | $(ms "${R[floor.dir.p95]:-}") | $(ms "${R[floor.nodir.p95]:-}") | $(ms "${R[floor.nodir.p95]:-}") | | |"
          local ra rb rc
          ra=$(diff_ms "${R[$N.ours.ok.txn_med]:-}" "${R[floor.dir.med]:-}")
          rb=$(diff_ms "${R[$N.ga.ok.txn_med]:-}" "${R[floor.nodir.med]:-}")
          rc=$(diff_ms "${R[$N.oath.ok.txn_med]:-}" "${R[floor.nodir.med]:-}")
          echo "| the rest: in-process login median − I/O floor median | $ra | $rb | $rc | $(ratio "$ra" "$rb") | $(ratio "$ra" "$rc") |"
          for v in bare:"no pam_wrapper (/etc/pam.d bind-mounted)" pw:"with pam_wrapper + libfaketime preloaded"; do
            local vk=${v%%:*} vl=${v#*:}
            echo "| one pamtester process, $vl, median | $(ms "${R[proc.$vk.ours.med]:-}") | $(ms "${R[proc.$vk.ga.med]:-}") | $(ms "${R[proc.$vk.oath.med]:-}") | $(rr "${R[proc.$vk.vs_ga]:-}") | $(ratio "${R[proc.$vk.ours.med]:-}" "${R[proc.$vk.oath.med]:-}") |"
            echo "| same, p95 | $(ms "${R[proc.$vk.ours.p95]:-}") | $(ms "${R[proc.$vk.ga.p95]:-}") | $(ms "${R[proc.$vk.oath.p95]:-}") | $(ratio "${R[proc.$vk.ours.p95]:-}" "${R[proc.$vk.ga.p95]:-}") | $(ratio "${R[proc.$vk.ours.p95]:-}" "${R[proc.$vk.oath.p95]:-}") |"
            echo "| same, CPU (user + system), median | $(ms "${R[proc.$vk.ours.cpu]:-}") | $(ms "${R[proc.$vk.ga.cpu]:-}") | $(ms "${R[proc.$vk.oath.cpu]:-}") | $(ratio "${R[proc.$vk.ours.cpu]:-}" "${R[proc.$vk.ga.cpu]:-}") | $(ratio "${R[proc.$vk.ours.cpu]:-}" "${R[proc.$vk.oath.cpu]:-}") |"
          done
        fi
      done
      echo
    done
    echo "Ratios in the ours/GA column are medians of per-round ratios (as in the targets) where the row is a median, plain ratios otherwise."
    echo
    echo "### System calls and page faults per login, $Nlo users"
    echo
    echo "System calls: \`strace\` of one in-process login, counted between the harness's marker writes (pam_authenticate alone, and the whole transaction less the harness's own clock and rusage calls), and \`strace -f -c\` of one whole pamtester process (no pam_wrapper, libfaketime preloaded). Page faults: \`getrusage\` around each in-process login (median), \`wait4\`'s rusage of each pamtester process (median)."
    echo
    echo "| figure | ours | GA | oath | ours/GA | ours/oath |"
    echo "|---|---:|---:|---:|---:|---:|"
    crow() { # label value-ours value-ga value-oath
      echo "| $1 | $(num "$2") | $(num "$3") | $(num "$4") | $(ratio "$2" "$3") | $(ratio "$2" "$4") |"
    }
    N=$Nlo
    crow "syscalls, whole in-process login (\`pam_start\`..\`pam_end\`), success" "${R[$N.ours.ok.sc_txn]:-}" "${R[$N.ga.ok.sc_txn]:-}" "${R[$N.oath.ok.sc_txn]:-}"
    crow "syscalls in \`pam_authenticate\`, success" "${R[$N.ours.ok.sc_total]:-}" "${R[$N.ga.ok.sc_total]:-}" "${R[$N.oath.ok.sc_total]:-}"
    local sc
    for sc in open:"open/openat" read:read write:write fsync:"fsync/fdatasync" fsyncdir:"of which on a directory" rename:"rename/renameat" stat:"stat/fstat/statx" lock:"flock/fcntl locks"; do
      crow "— ${sc#*:}" "${R[$N.ours.ok.sc_${sc%%:*}]:-}" "${R[$N.ga.ok.sc_${sc%%:*}]:-}" "${R[$N.oath.ok.sc_${sc%%:*}]:-}"
    done
    crow "syscalls in \`pam_authenticate\`, failure" "${R[$N.ours.fail.sc_total]:-}" "${R[$N.ga.fail.sc_total]:-}" "${R[$N.oath.fail.sc_total]:-}"
    crow "syscalls, one whole pamtester process, success" "${R[proc.sc.ours]:-}" "${R[proc.sc.ga]:-}" "${R[proc.sc.oath]:-}"
    crow "minor page faults, in-process login, success (median)" "${R[$N.ours.ok.txn_minflt]:-}" "${R[$N.ga.ok.txn_minflt]:-}" "${R[$N.oath.ok.txn_minflt]:-}"
    crow "— of which in \`pam_authenticate\`" "${R[$N.ours.ok.auth_minflt]:-}" "${R[$N.ga.ok.auth_minflt]:-}" "${R[$N.oath.ok.auth_minflt]:-}"
    crow "major page faults, in-process logins, success (all ${R[$N.ours.ok.samples]:-?} together)" "${R[$N.ours.ok.txn_majflt]:-}" "${R[$N.ga.ok.txn_majflt]:-}" "${R[$N.oath.ok.txn_majflt]:-}"
    crow "minor page faults, one pamtester process, no pam_wrapper (median)" "${R[proc.bare.ours.minflt]:-}" "${R[proc.bare.ga.minflt]:-}" "${R[proc.bare.oath.minflt]:-}"
    crow "major page faults, one pamtester process (median)" "${R[proc.bare.ours.majflt]:-}" "${R[proc.bare.ga.majflt]:-}" "${R[proc.bare.oath.majflt]:-}"
    crow "module .so size, bytes" "${R[bd.ours.size]:-}" "${R[bd.ga.size]:-}" "${R[bd.oath.size]:-}"
    echo
    if [[ $Nhi != "$Nlo" ]]; then
      echo "### Scaling: $Nhi users / $Nlo users, per module"
      echo
      echo "| figure | ours | GA | oath |"
      echo "|---|---:|---:|---:|"
      for o in ok fail; do
        echo "| in-process login wall-clock, $o (median of per-round ratios) | $(rr "${R[scale.ours.$o]:-}") | $(rr "${R[scale.ga.$o]:-}") | $(rr "${R[scale.oath.$o]:-}") |"
        echo "| in-process login at $Nhi users, $o, median ms | $(ms "${R[$Nhi.ours.$o.txn_med]:-}") | $(ms "${R[$Nhi.ga.$o.txn_med]:-}") | $(ms "${R[$Nhi.oath.$o.txn_med]:-}") |"
        echo "| syscalls in \`pam_authenticate\`, $o | $(ratio "${R[$Nhi.ours.$o.sc_total]:-}" "${R[$Nlo.ours.$o.sc_total]:-}") | $(ratio "${R[$Nhi.ga.$o.sc_total]:-}" "${R[$Nlo.ga.$o.sc_total]:-}") | $(ratio "${R[$Nhi.oath.$o.sc_total]:-}" "${R[$Nlo.oath.$o.sc_total]:-}") |"
        echo "| Ir inside \`pam_sm_authenticate\`, $o | $(ratio "${R[$Nhi.ours.$o.ir_in]:-}" "${R[$Nlo.ours.$o.ir_in]:-}" 3) | $(ratio "${R[$Nhi.ga.$o.ir_in]:-}" "${R[$Nlo.ga.$o.ir_in]:-}" 3) | $(ratio "${R[$Nhi.oath.$o.ir_in]:-}" "${R[$Nlo.oath.$o.ir_in]:-}") |"
      done
      echo
    fi
    echo "### Concurrency"
    echo
    echo "One user, $SIM_PROCS logins released together, each with the right code ($Nlo users enrolled; $SIM_ROUNDS rounds, modules interleaved): replay protection should let one in."
    echo
    echo "| module | batch ms, median | batch ms, p95 | successes per batch | ratio to GA |"
    echo "|---|---:|---:|---:|---:|"
    for m in "${MODULES[@]}"; do
      local rt=""
      [[ $m == ours ]] && rt=$(rr "${R[sim.vs_ga]:-}")
      echo "| $m | $(ms "${R[sim.$m.med]:-}") | $(ms "${R[sim.$m.p95]:-}") | ${R[sim.$m.ok]:-n/a} | $rt |"
    done
    echo
    echo "$PROCS logins forked together ($Nhi users enrolled), $ROUNDS rounds per module:"
    echo
    echo "| scenario | module | batch ms (median) | batch max | one login median ms | one login max | results |"
    echo "|---|---|---:|---:|---:|---:|---|"
    for sc in users:"$PROCS users, right codes" one:"1 user, $PROCS wrong codes"; do
      local key=${sc%%:*} label=${sc#*:}
      for m in "${MODULES[@]}"; do
        local out=${R[conc.$m.$key]:-}
        local res np
        res=$(grep -oE 'rc[0-9]+=[0-9]+' <<<"$out" | sed 's/rc0=/success=/;s/rc7=/AUTH_ERR=/;s/rc9=/AUTHINFO_UNAVAIL=/' | tr '\n' ' ')
        np=$(kv no_prompt " $out")
        if [[ -n $np && $np != 0 ]]; then res="$res(refused without a prompt: $np) "; fi
        echo "| $label | $m | $(ms "$(kv batch_median_us " $out")") | $(ms "$(kv batch_max_us " $out")") | $(ms "$(kv login_median_us " $out")") | $(ms "$(kv login_max_us " $out")") | $res|"
      done
    done
    echo
    echo "### Backup codes (ours): one attempt (argon2id, 19 MiB, t=2)"
    echo
    echo "| codes per set | attempt | CPU ms median | CPU ms max | wall ms median |"
    echo "|---:|---|---:|---:|---:|"
    for c in 10 100; do
      for w in all:"right code, all left" one:"right code, 1 left" wrong:"wrong 16-digit code"; do
        local label=${w#*:} out=${R[bk.$c.${w%%:*}]:-}
        [[ -n $out ]] || continue
        echo "| $c | $label | $(ms "$(kv cpu_median_us " $out")") | $(ms "$(kv cpu_max_us " $out")") | $(ms "$(kv auth_median_us " $out")") |"
      done
    done
    echo
    fleet_report
    echo "### Secondary: instruction counts (callgrind; exact and repeatable, no target)"
    echo
    if [[ $MODE == smoke ]]; then echo "Smoke run: our module only, successful login."; echo; fi
    echo "| figure | ours | GA | oath | ours/GA | ours/oath |"
    echo "|---|---:|---:|---:|---:|---:|"
    for N in "${SIZES[@]}"; do
      for o in ok fail; do
        irow() { # label key
          local a b c
          a=${R[$N.ours.$o.$2]:-} b=${R[$N.ga.$o.$2]:-} c=${R[$N.oath.$o.$2]:-}
          [[ -n $a$b$c ]] || return 0
          echo "| $1 | $(num "$a") | $(num "$b") | $(num "$c") | $(ratio "$a" "$b" 3) | $(ratio "$a" "$c" 3) |"
        }
        irow "$N users, $o: inside \`pam_sm_authenticate\`" ir_in
        irow "$N users, $o: whole pamtester process (pam_wrapper + libfaketime)" ir_all
        irow "$N users, $o: whole pamtester process, no pam_wrapper" ir_bare
      done
    done
    echo
    echo "Whole pamtester process, successful login, $Nlo users: where the instructions go."
    local wk=ir_all wdesc="with pam_wrapper"
    if [[ ${BD_KIND:-all} == bare ]]; then wk=ir_bare wdesc="without pam_wrapper, so that its wrappers do not merge with libpam's functions of the same names"; fi
    echo "Inclusive Ir of the run $wdesc; nested entries overlap, so rows do not add up. Process start-up (\`_dl_start\`) is the same for every module; \`_dl_relocate_object\` and \`_dl_lookup_symbol_x\` include it."
    echo
    echo "| part | ours | GA | oath | ours/GA |"
    echo "|---|---:|---:|---:|---:|"
    echo "| whole process | $(num "${R[$Nlo.ours.ok.$wk]:-}") | $(num "${R[$Nlo.ga.ok.$wk]:-}") | $(num "${R[$Nlo.oath.ok.$wk]:-}") | $(ratio "${R[$Nlo.ours.ok.$wk]:-}" "${R[$Nlo.ga.ok.$wk]:-}") |"
    local fn
    for fn in "${BD_FUNCS[@]}"; do
      echo "| \`$fn\` | $(num "${R[bd.ours.$fn]:-}") | $(num "${R[bd.ga.$fn]:-}") | $(num "${R[bd.oath.$fn]:-}") | $(ratio "${R[bd.ours.$fn]:-}" "${R[bd.ga.$fn]:-}") |"
    done
    echo "| dynamic relocations in the .so (readelf -r) | $(num "${R[bd.ours.relocs]:-}") | $(num "${R[bd.ga.relocs]:-}") | $(num "${R[bd.oath.relocs]:-}") | $(ratio "${R[bd.ours.relocs]:-}" "${R[bd.ga.relocs]:-}") |"
    echo "| undefined dynamic symbols (nm -D -u) | $(num "${R[bd.ours.undef]:-}") | $(num "${R[bd.ga.undef]:-}") | $(num "${R[bd.oath.undef]:-}") | $(ratio "${R[bd.ours.undef]:-}" "${R[bd.ga.undef]:-}") |"
    echo "| DT_NEEDED | ${R[bd.ours.needed]:-} | ${R[bd.ga.needed]:-} | ${R[bd.oath.needed]:-} | |"
    echo
    if [[ -n ${PROF_SO:-} && -f $RUN/prof.ok.incl ]]; then
      echo "Where our \`pam_sm_authenticate\` spends its instructions (debug-info build of the same profile), successful login, $Nlo users: ${R[prof.ok.total]} Ir (the measured build: ${R[$Nlo.ours.ok.ir_in]})."
      echo
      echo "<details><summary>inclusive top 30, self top 20, by crate; failed login top 15</summary>"
      echo
      echo "| Ir incl. | % | function | object |"
      echo "|---:|---:|---|---|"
      annot_rows "$RUN/prof.ok.incl" 30 max "${R[prof.ok.total]}"
      echo
      echo "| Ir self | % | function | object |"
      echo "|---:|---:|---|---|"
      annot_rows "$RUN/prof.ok.self" 20 sum "${R[prof.ok.total]}"
      echo
      echo "| Ir self | % | crate / library |"
      echo "|---:|---:|---|"
      annot_crates "$RUN/prof.ok.self" 12
      echo
      echo "Failed login (wrong code): ${R[prof.fail.total]} Ir."
      echo
      echo "| Ir incl. | % | function | object |"
      echo "|---:|---:|---|---|"
      annot_rows "$RUN/prof.fail.incl" 15 max "${R[prof.fail.total]}"
      echo
      echo "</details>"
      echo
    fi
    if [[ -f $RUN/strace.ours.ok.txt ]]; then
      echo "<details><summary>strace of one successful in-process login per module ($Nlo users; pam_authenticate between the markers)</summary>"
      echo
      for m in "${MODULES[@]}"; do
        echo "**$m**"
        echo
        echo '```'
        awk '/BENCH_TXN_BEGIN/ {on = 1; next} /BENCH_TXN_END/ {on = 0} on && !/^(clock_gettime|getrusage)\(/' "$RUN/strace.$m.ok.txt" | cut -c1-150
        echo '```'
        echo
      done
      echo "</details>"
      echo
    fi
  } >"$f"
}

# The report file: a header, "Latest run" (this run), then a "Before"
# section (a baseline kept until --reset-before replaces it) and "History"
# (written by hand), both taken over from the existing file in a full run.
assemble() { # current-run file
  local cur=$1 before=$RUN/before.md history=$RUN/history.md
  : >"$before"
  : >"$history"
  if [[ $MODE == full && -f $OUT ]]; then
    awk '/^# Before/ {on = 1; print; next} /^# / {on = 0} on' "$OUT" >"$before"
    awk '/^# History/ {on = 1} on' "$OUT" >"$history"
  fi
  if [[ $RESET_BEFORE -eq 1 ]]; then
    {
      echo "# Before (baseline kept across runs; \`bench/run.sh --reset-before\` replaces it)"
      echo
      sed 's/^## Run of/## Baseline: run of/' "$cur" | awk '/^<details>/ {skip = 1} !skip {print} /^<\/details>/ {skip = 0}'
    } >"$before"
  fi
  {
    echo "# pam_twofactor login cost vs google-authenticator and pam_oath"
    echo
    echo "Generated by \`bench/run.sh\`; what is measured and how to read it: [README.md](README.md). \"Latest run\" is replaced by every run; \"Before\" is a baseline kept until \`--reset-before\` replaces it; \"History\" is written by hand and kept."
    echo
    echo "# Latest run"
    echo
    cat "$cur"
    if [[ -s $before ]]; then cat "$before"; echo; fi
    cat "$history"
  } >"$OUT"
}

# How busy the machine was: CPU time all processes used during the
# measurements, less this run's own (bash's `times`: this shell and every
# child it waited for), as a share of all CPUs.
busy_jiffies() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
own_cpu_seconds() {
  times | awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); sub(/s/, "", t[2]); s += t[1] * 60 + t[2] } print s }'
}

# ----------------------------------------------------------------- main -----
log "run directory $RUN; code $CODE, wrong code $WRONG; syslog: $SYSLOG_DESC"
if [[ $FLEET_ONLY -eq 0 ]]; then
  for N in "${SIZES[@]}"; do
    log "fixture: $N enrolled users per module"
    make_fixture "$RUN/n$N" "$N"
  done
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY0=$(busy_jiffies) OWN0=$(own_cpu_seconds) T_START=$(date +%s.%N)
if [[ $FLEET_ONLY -eq 1 ]]; then
  measure_fleet
  BUSY1=$(busy_jiffies) OWN1=$(own_cpu_seconds) T_END=$(date +%s.%N)
  OTHERS=$(awk -v b0="$BUSY0" -v b1="$BUSY1" -v o0="$OWN0" -v o1="$OWN1" -v t0="$T_START" -v t1="$T_END" \
    -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN {
      v = ((b1 - b0) / hz - (o1 - o0)) / ((t1 - t0) * n) * 100; if (v < 0) v = 0; printf "%.0f", v }')
  mkdir -p "$(dirname "$OUT")"
  {
    echo "## Fleet section alone, run of $(date -u '+%Y-%m-%d %H:%M UTC') ($MODE)"
    echo
    echo "- Machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | awk 'NR == 1'), $(nproc) cores, $(uname -sr)."
    echo "- Load: other processes used ${OTHERS} % of the $(nproc) CPUs during the $(awk -v a="$T_START" -v b="$T_END" 'BEGIN {printf "%.0f", b - a}') s of measurements; load average at the start $LOAD_START."
    echo "- Our module and agent: commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown) (src/ content hash ${SRC_HASH:-?}), $BUILD_DESC."
    echo
    fleet_report
  } >"$OUT"
  log "wrote $OUT"
  sed -n '/^| # |/,/^$/p' "$OUT" >&2 || true
  exit 0
fi
for N in "${SIZES[@]}"; do measure_size "$N"; done
measure_times
measure_processes
breakdown
measure_simultaneous
NC=${SIZES[${#SIZES[@]} - 1]}
measure_concurrency "$NC"
measure_backup
measure_backup_memory
# The load check covers the measurements up to here: the fleet section's
# own PostgreSQL servers and agents are daemons, not children this shell
# waits for, so `times` cannot take their CPU out and they would count as
# "other processes". The fleet's figures are ratios and rates within its
# own section.
BUSY1=$(busy_jiffies) OWN1=$(own_cpu_seconds) T_END=$(date +%s.%N)
measure_fleet
if [[ -n ${PROF_SO:-} ]]; then profile_ours; fi
OTHERS=$(awk -v b0="$BUSY0" -v b1="$BUSY1" -v o0="$OWN0" -v o1="$OWN1" -v t0="$T_START" -v t1="$T_END" \
  -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN {
    v = ((b1 - b0) / hz - (o1 - o0)) / ((t1 - t0) * n) * 100; if (v < 0) v = 0; printf "%.0f", v }')
BUSY_DESC="other processes used ${OTHERS} % of the $(nproc) CPUs during the $(awk -v a="$T_START" -v b="$T_END" 'BEGIN {printf "%.0f", b - a}') s of measurements; load average at the start $LOAD_START"
BUSY_PRELIM=0
if [[ $OTHERS -gt 10 ]]; then BUSY_PRELIM=1; fi
write_report "$RUN/current.md"
mkdir -p "$(dirname "$OUT")"
assemble "$RUN/current.md"
log "wrote $OUT ($BUSY_DESC)"
# A short summary on the terminal.
sed -n '/^### Targets/,/^### Wall-clock/p' "$RUN/current.md" | grep '^|' >&2 || true
sed -n '/^### The fleet/,/^####/p' "$RUN/current.md" | grep '^| F' >&2 || true
