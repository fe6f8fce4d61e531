#!/usr/bin/env bash
# End-to-end test of the Debian package, as root, without touching this
# machine: the .deb (built by scripts/make-deb.sh when missing or older than
# the sources) is installed into an isolated root, a private mount
# namespace with an overlayfs whose lower layer is the host's / and whose
# upper layer is a tmpfs (or, where overlay on / is refused, a debootstrap'd
# bookworm chroot on that tmpfs). Inside: dpkg -i, files and modes,
# pam-auth-update --enable twofactor, real logins through common-auth with
# pamtester (codes from oathtool, time pinned with libfaketime), then
# dpkg --remove / --purge. Everything lives in the namespace and is gone
# when it ends; the host's dpkg database and /etc/pam.d are checked at the
# end.
#
# Environment: DEB_TEST_ROOT=debootstrap forces the debootstrap chroot;
# DEB_TEST_REBUILD=1 rebuilds the .deb even when it looks current.
# shellcheck disable=SC2016,SC2012 # dpkg-query formats; the .deb names are ours
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF=$ROOT/tests/deb-test.sh
OUTDIR=$ROOT/target/deb-test
LOG=$OUTDIR/log

step() { printf 'deb-test: %s\n' "$*"; }
fail() {
  printf 'deb-test: FAIL: %s\n' "$*" >&2
  printf 'deb-test: details: %s\n' "$LOG" >&2
  exit 1
}

# ======================================================================
# Inner part: runs as `deb-test.sh --inner TMPDIR DEB` in a private mount
# namespace (mounts made here never reach the host).
# ======================================================================
inner() {
  local T=$1 DEB=$2
  local R=$T/root
  local MA
  MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
  local SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP # 160 bits
  local PW='Corr3ct-horse' USER_A=tfdebtest USER_B=tfdebskip
  local NOW='2030-06-15 12:00:10' # 20 s before the next step boundary

  # Everything below lives on this tmpfs, which disappears with the namespace.
  mount -t tmpfs -o mode=0700 tmpfs "$T"
  mkdir "$T/upper" "$T/work" "$R"
  local overlay=no
  if [[ "${DEB_TEST_ROOT:-overlay}" == overlay ]] &&
    mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$R" 2>>"$LOG"; then
    # The lower layer is only the root filesystem: a separate /usr or /var
    # would be missing from it.
    if [[ -x "$R/usr/bin/dpkg" && -s "$R/var/lib/dpkg/status" && -x "$R/usr/sbin/pam-auth-update" ]]; then
      overlay=yes
    else
      echo "overlay over / lacks /usr or /var (separate filesystems?)" >>"$LOG"
      umount "$R"
    fi
  fi
  if [[ $overlay == yes ]]; then
    step "isolated root: overlayfs over / (changes go to a tmpfs)"
  else
    step "isolated root: overlay on / not used, debootstrap bookworm (slower)"
    local dbs=(debootstrap)
    if ! command -v debootstrap >/dev/null; then
      # Unpacked on the tmpfs, not installed on the host.
      (cd "$T" && apt-get download -q debootstrap) >>"$LOG" 2>&1 || fail "apt-get download debootstrap"
      dpkg-deb -x "$T"/debootstrap_*.deb "$T/dbs"
      dbs=(env "DEBOOTSTRAP_DIR=$T/dbs/usr/share/debootstrap" "$T/dbs/usr/sbin/debootstrap")
    fi
    "${dbs[@]}" --variant=minbase bookworm "$R" http://deb.debian.org/debian >>"$LOG" 2>&1 ||
      fail "debootstrap"
    cp /etc/resolv.conf "$R/etc/resolv.conf"
  fi
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs -o mode=0755 tmpfs "$R/run"
  mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"

  # A clean environment inside the root.
  in_root() {
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LANG=C.UTF-8 TZ=UTC DEBIAN_FRONTEND=noninteractive "$@"
  }

  # Never start daemons; keep documentation a test may look at.
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
  chmod 0755 "$R/usr/sbin/policy-rc.d"
  printf 'path-include=/usr/share/man/*\npath-include=/usr/share/doc/libpam-twofactor/*\n' \
    >"$R/etc/dpkg/dpkg.cfg.d/zz-deb-test"

  # Test tools: from the host when it has them (overlay), else apt inside.
  local need=()
  in_root test -x /usr/bin/pamtester || need+=(pamtester)
  in_root test -x /usr/bin/oathtool || need+=(oathtool)
  in_root test -e "/usr/lib/$MA/faketime/libfaketime.so.1" || need+=(libfaketime)
  in_root test -x /usr/bin/man || need+=(man-db)
  if [[ ${#need[@]} -gt 0 ]]; then
    step "installing ${need[*]} inside the isolated root"
    { in_root apt-get update -qq && in_root apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
      >>"$LOG" 2>&1 || fail "apt-get install ${need[*]} in the isolated root"
  fi
  local FAKETIME_LIB=/usr/lib/$MA/faketime/libfaketime.so.1

  in_root dpkg-query -W -f='${Status}' libpam-twofactor >/dev/null 2>&1 &&
    fail "libpam-twofactor is already installed in the isolated root (installed on the host?)"

  # A state dir with wrong owner and mode: postinst must fix it.
  install -d -o nobody -g nogroup -m 0755 "$R/var/lib/twofactor"

  local name
  name=$(basename "$DEB")
  cp "$DEB" "$R/root/$name"
  step "dpkg -i $name"
  local dpkg_out
  dpkg_out=$(in_root dpkg -i "/root/$name" 2>&1) || { printf '%s\n' "$dpkg_out" >>"$LOG"; fail "dpkg -i"; }
  printf '%s\n' "$dpkg_out" >>"$LOG"
  # postinst prints the three next steps, in order (issue 17).
  [[ "$dpkg_out" == *"twofactor enroll root"*"twofactor check"*"pam-auth-update --enable twofactor"* ]] ||
    fail "postinst does not print the next steps (enroll yourself, twofactor check, then enable)"

  step "checking installed files, owners and modes"
  check_stat() { # path "mode owner:group type"
    local got
    got=$(in_root stat -c '%a %U:%G %F' "$1" 2>&1) || fail "$1 missing"
    [[ "$got" == "$2" ]] || fail "$1: expected '$2', got '$got'"
    printf '  %-52s %s\n' "$1" "$got"
  }
  check_stat "/lib/$MA/security/pam_twofactor.so" "644 root:root regular file"
  check_stat /usr/sbin/twofactor "755 root:root regular file"
  check_stat /etc/security/twofactor.toml "644 root:root regular file"
  check_stat /var/lib/twofactor "700 root:root directory"
  check_stat /usr/share/pam-configs/twofactor "644 root:root regular file"
  check_stat /usr/share/man/man8/pam_twofactor.8.gz "644 root:root regular file"
  check_stat /usr/share/man/man8/twofactor.8.gz "644 root:root regular file"
  check_stat /usr/share/man/man5/twofactor.toml.5.gz "644 root:root regular file"
  check_stat /lib/systemd/system/pam-twofactor-deliver.socket "644 root:root regular file"
  check_stat /lib/systemd/system/pam-twofactor-deliver@.service "644 root:root regular file"
  check_stat /lib/systemd/system/pam-twofactor-agent.socket "644 root:root regular file"
  check_stat /lib/systemd/system/pam-twofactor-agent.service "644 root:root regular file"
  check_stat /usr/share/pam-twofactor/sql/001_init.sql "644 root:root regular file"
  check_stat /usr/share/pam-twofactor/sql/002_login_calls_plpgsql.sql "644 root:root regular file"
  check_stat /usr/share/bash-completion/completions/twofactor "644 root:root regular file"
  check_stat /usr/share/zsh/vendor-completions/_twofactor "644 root:root regular file"
  check_stat /usr/share/fish/vendor_completions.d/twofactor.fish "644 root:root regular file"
  grep -q 'complete -F _twofactor' "$R/usr/share/bash-completion/completions/twofactor" ||
    fail "the bash completion does not complete twofactor"
  for sub in enroll list status set-delivery disable; do
    grep -q -- "$sub" "$R/usr/share/bash-completion/completions/twofactor" ||
      fail "the bash completion lacks the subcommand $sub"
  done
  # Enabled at install (no systemd runs in this root, so nothing started).
  in_root test -L /etc/systemd/system/sockets.target.wants/pam-twofactor-deliver.socket ||
    fail "pam-twofactor-deliver.socket is not enabled"
  in_root test -L /etc/systemd/system/sockets.target.wants/pam-twofactor-agent.socket ||
    fail "pam-twofactor-agent.socket is not enabled"
  for f in sshd-password-then-code sshd-key-then-code sudo; do
    check_stat "/usr/share/doc/libpam-twofactor/examples/pam.d/$f" "644 root:root regular file"
  done
  # The sshd drop-in is an example only: installing the package must not
  # change how sshd authenticates.
  check_stat /usr/share/doc/libpam-twofactor/examples/ssh/twofactor.conf "644 root:root regular file"
  cmp -s "$R/usr/share/doc/libpam-twofactor/examples/ssh/twofactor.conf" "$ROOT/conf/ssh/twofactor.conf" ||
    fail "examples/ssh/twofactor.conf differs from conf/ssh/twofactor.conf"
  in_root test ! -e /etc/ssh/sshd_config.d/twofactor.conf ||
    fail "the package installed /etc/ssh/sshd_config.d/twofactor.conf"
  cmp -s "$R/etc/security/twofactor.toml" "$ROOT/conf/twofactor.toml" ||
    fail "/etc/security/twofactor.toml differs from conf/twofactor.toml"
  in_root dpkg-query -W -f='${Conffiles}\n' libpam-twofactor | grep -q ' /etc/security/twofactor.toml ' ||
    fail "/etc/security/twofactor.toml is not a conffile"
  for page in pam_twofactor twofactor twofactor.toml; do
    in_root man -w "$page" >/dev/null 2>&1 || fail "man -w $page finds no page"
    in_root sh -c "MANWIDTH=80 man $page 2>&1" | grep -q '^NAME' || fail "man $page does not render"
  done
  in_root twofactor --version >>"$LOG" 2>&1 || fail "twofactor --version"
  # The delivery service's command, run by hand: with no [delivery]
  # command in the shipped config it answers an error and exits 1.
  local answer
  answer=$(printf 'alice\n+15555550100\n123456\n' | in_root twofactor deliver 2>>"$LOG") &&
    fail "twofactor deliver succeeded with no [delivery] command"
  [[ "$answer" == "error: configuration: no [delivery] command is set" ]] ||
    fail "twofactor deliver answered '$answer'"
  step "twofactor deliver (by hand, no command configured): '$answer'"
  grep -q pam_twofactor "$R/etc/pam.d/common-auth" &&
    fail "the profile is Default: no, but common-auth already has pam_twofactor"
  step "profile off by default: common-auth unchanged"

  step "creating users $USER_A (enrolled) and $USER_B (not enrolled)"
  for u in "$USER_A" "$USER_B"; do
    in_root useradd -m -s /bin/sh "$u" >>"$LOG" 2>&1 || fail "useradd $u"
    printf '%s:%s\n' "$u" "$PW" | in_root chpasswd || fail "chpasswd $u"
  done

  step "pam-auth-update --enable twofactor; /etc/pam.d/common-auth is now:"
  in_root pam-auth-update --enable twofactor >>"$LOG" 2>&1 || fail "pam-auth-update --enable"
  grep -v '^#' "$R/etc/pam.d/common-auth" | grep -v '^$' | sed 's/^/  | /'
  # The module must come after the password block, its pam_deny and the
  # pam_permit that primes success, as a plain "requisite" line.
  local ln_unix ln_deny ln_permit ln_tf
  ln_unix=$(grep -n '^auth.*pam_unix\.so' "$R/etc/pam.d/common-auth" | head -1 | cut -d: -f1)
  ln_deny=$(grep -n '^auth[[:space:]]*requisite[[:space:]]*pam_deny\.so' "$R/etc/pam.d/common-auth" | cut -d: -f1)
  ln_permit=$(grep -n '^auth[[:space:]]*required[[:space:]]*pam_permit\.so' "$R/etc/pam.d/common-auth" | cut -d: -f1)
  ln_tf=$(grep -n '^auth[[:space:]]*requisite[[:space:]]*pam_twofactor\.so[[:space:]]*$' "$R/etc/pam.d/common-auth" | cut -d: -f1)
  [[ -n "$ln_unix" && -n "$ln_deny" && -n "$ln_permit" && -n "$ln_tf" ]] ||
    fail "common-auth lacks one of pam_unix, requisite pam_deny, required pam_permit, requisite pam_twofactor"
  ((ln_unix < ln_deny && ln_deny < ln_permit && ln_permit < ln_tf)) ||
    fail "common-auth order is not pam_unix < pam_deny < pam_permit < pam_twofactor"
  step "order ok: pam_unix (line $ln_unix) < requisite pam_deny ($ln_deny) < pam_permit ($ln_permit) < requisite pam_twofactor ($ln_tf)"

  step "twofactor enroll $USER_A --secret-file - (the base32 secret on stdin; default config)"
  printf '%s\n' "$SECRET" | in_root twofactor enroll "$USER_A" --secret-file - --json >>"$LOG" 2>&1 ||
    fail "twofactor enroll"
  # Enabled with only $USER_A enrolled: check must name root (first) and
  # $USER_B, whom unenrolled = "deny" now locks out (issue 17).
  local check_out
  check_out=$(in_root twofactor check 2>&1) &&
    fail "twofactor check says OK while root and $USER_B would be locked out"
  printf '%s\n' "$check_out" >>"$LOG"
  [[ "$check_out" == "/etc/pam.d/common-auth: root (shell "*"twofactor enroll root"*"$USER_B (shell /bin/sh) is not enrolled"* ]] ||
    fail "twofactor check does not name root, then $USER_B, as locked out: $check_out"
  [[ "$check_out" != *"$USER_A (shell"* ]] || fail "twofactor check names the enrolled $USER_A"
  step "twofactor check names root and $USER_B, who would be locked out"
  in_root test -f "/var/lib/twofactor/$USER_A.secret" || fail "no secret record"

  printf '# deb-test: the system stack, as a real service would use it\n@include common-auth\n' \
    >"$R/etc/pam.d/tftest"

  local code wrong c
  code=$(in_root oathtool --totp -b "$SECRET" --now "$NOW UTC")
  # A wrong code: none of the codes the window (1 step either side) accepts.
  local accepted=" " base
  base=$(date -u -d "$NOW UTC" +%s)
  for off in -30 0 30; do
    accepted+="$(in_root oathtool --totp -b "$SECRET" --now "@$((base + off))") "
  done
  for c in 000000 111111 222222 333333; do
    [[ "$accepted" == *" $c "* ]] || { wrong=$c; break; }
  done

  login() { # password code user -> pamtester's exit status; output in $OUT
    local rc=0
    OUT=$(printf '%s\n%s\n' "$1" "$2" |
      in_root env LD_PRELOAD="$FAKETIME_LIB" FAKETIME="@$NOW" \
        pamtester -v tftest "$3" authenticate 2>&1) || rc=$?
    printf -- '--- pamtester tftest %s (rc %s)\n%s\n' "$3" "$rc" "$OUT" >>"$LOG"
    return "$rc"
  }
  failures() {
    in_root twofactor status "$1" --json | sed -n 's/.*"failed_attempts":\([0-9]*\).*/\1/p'
  }

  step "login: wrong password + right code -> denied, code never asked, failed_attempts stays 0"
  login 'wrong-password' "$code" "$USER_A" && fail "wrong password + right code was accepted"
  [[ "$OUT" == *"Verification code"* ]] && fail "the module prompted after a wrong password"
  [[ "$(failures "$USER_A")" == 0 ]] || fail "failed_attempts is $(failures "$USER_A") after a wrong password, expected 0"

  step "login: wrong password + wrong code -> denied, failed_attempts stays 0"
  login 'wrong-password' "$wrong" "$USER_A" && fail "wrong password + wrong code was accepted"
  [[ "$(failures "$USER_A")" == 0 ]] || fail "failed_attempts is $(failures "$USER_A") after a wrong password, expected 0"

  step "login: right password + right code -> success"
  login "$PW" "$code" "$USER_A" || fail "right password + right code was refused: $OUT"
  [[ "$OUT" == *"Verification code"* ]] || fail "no 'Verification code' prompt"
  [[ "$(failures "$USER_A")" == 0 ]] || fail "failed_attempts not 0 after a success"

  step "login: right password + wrong code -> denied, failed_attempts 1"
  login "$PW" "$wrong" "$USER_A" && fail "right password + wrong code was accepted"
  [[ "$(failures "$USER_A")" == 1 ]] || fail "failed_attempts is $(failures "$USER_A") after a wrong code, expected 1"

  step "login: unenrolled $USER_B under unenrolled = \"deny\" (default) -> denied even with the right password"
  login "$PW" 123456 "$USER_B" && fail "unenrolled user let in under deny"

  sed -i 's/^unenrolled = "deny"/unenrolled = "skip"/' "$R/etc/security/twofactor.toml"
  grep -q '^unenrolled = "skip"' "$R/etc/security/twofactor.toml" || fail "could not set unenrolled = skip"
  step "login: unenrolled $USER_B under unenrolled = \"skip\": wrong password -> denied (PAM_IGNORE lets no one in)"
  login 'wrong-password' '' "$USER_B" && fail "skip + wrong password was accepted"
  step "login: unenrolled $USER_B under unenrolled = \"skip\": right password -> success, no code asked"
  login "$PW" '' "$USER_B" || fail "skip + right password was refused: $OUT"
  [[ "$OUT" == *"Verification code"* ]] && fail "the module prompted an unenrolled user under skip"
  cp "$ROOT/conf/twofactor.toml" "$R/etc/security/twofactor.toml"

  step "dpkg -i again (an upgrade): the enabled profile stays in common-auth"
  in_root dpkg -i "/root/$name" >>"$LOG" 2>&1 || fail "dpkg -i (upgrade)"
  grep -q '^auth[[:space:]]*requisite[[:space:]]*pam_twofactor\.so' "$R/etc/pam.d/common-auth" ||
    fail "an upgrade turned the second factor off"

  step "dpkg --remove: pam-auth-update takes the module out of common-auth"
  in_root dpkg --remove libpam-twofactor >>"$LOG" 2>&1 || fail "dpkg --remove"
  grep -q pam_twofactor "$R/etc/pam.d/common-auth" && fail "common-auth still has pam_twofactor after remove"
  in_root test -e "/lib/$MA/security/pam_twofactor.so" && fail "the .so survived remove"
  in_root test -e /usr/sbin/twofactor && fail "twofactor survived remove"
  in_root test -e /etc/security/twofactor.toml || fail "remove (not purge) deleted the conffile"
  login "$PW" '' "$USER_A" || fail "after remove, the password alone no longer logs in: $OUT"

  step "dpkg --purge with an enrollment left: conffile gone, /var/lib/twofactor kept"
  in_root dpkg --purge libpam-twofactor >>"$LOG" 2>&1 || fail "dpkg --purge"
  in_root dpkg-query -W -f='${Status}\n' libpam-twofactor 2>/dev/null | grep -q installed &&
    fail "dpkg still lists libpam-twofactor after purge"
  for f in /etc/security/twofactor.toml /usr/share/pam-configs/twofactor \
    "/lib/$MA/security/pam_twofactor.so" /usr/sbin/twofactor /usr/share/man/man8/pam_twofactor.8.gz \
    /usr/share/doc/libpam-twofactor; do
    in_root test -e "$f" && fail "$f survived purge"
  done
  grep -q pam_twofactor "$R/etc/pam.d/common-auth" && fail "common-auth has pam_twofactor after purge"
  grep -qx twofactor "$R/var/lib/pam/seen" 2>/dev/null && fail "/var/lib/pam/seen still lists twofactor"
  check_stat "/var/lib/twofactor/$USER_A.secret" "600 root:root regular file"
  check_stat /var/lib/twofactor "700 root:root directory"
  grep -q "keeping /var/lib/twofactor" "$LOG" || fail "purge did not say it kept /var/lib/twofactor"

  step "reinstall, twofactor disable, purge: no enrollment left, /var/lib/twofactor removed"
  in_root dpkg -i "/root/$name" >>"$LOG" 2>&1 || fail "dpkg -i (again)"
  in_root twofactor status "$USER_A" --json | grep -q '"enrolled":true' ||
    fail "the kept enrollment is not used after reinstall"
  in_root twofactor disable "$USER_A" >>"$LOG" 2>&1 || fail "twofactor disable"
  in_root dpkg --purge libpam-twofactor >>"$LOG" 2>&1 || fail "dpkg --purge (again)"
  in_root test -e /var/lib/twofactor && fail "/var/lib/twofactor survived purge with no enrollment"
  grep -q pam_twofactor "$R/etc/pam.d/common-auth" && fail "common-auth has pam_twofactor"
  return 0
}

if [[ "${1:-}" == --inner ]]; then
  inner "$2" "$3"
  exit 0
fi

# ======================================================================
# Outer part.
# ======================================================================
if [[ $(id -u) -ne 0 ]]; then
  echo "deb-test: SKIPPED: not root (installing a .deb into an isolated root needs root)"
  exit 0
fi
if ! unshare --mount --propagation private true 2>/dev/null; then
  echo "deb-test: SKIPPED: cannot create a private mount namespace here (unshare --mount failed)"
  exit 0
fi

start=$(date +%s)
mkdir -p "$OUTDIR"
: >"$LOG"

host_status=$(dpkg-query -W -f='${Status}' libpam-twofactor 2>/dev/null || echo absent)
host_pam=$(cat /etc/pam.d/common-auth /var/lib/pam/seen 2>/dev/null | sha256sum)

# Build the .deb when missing or older than anything it is built from.
deb=$(ls -t "$ROOT"/target/deb/libpam-twofactor_*.deb 2>/dev/null | head -1 || true)
if [[ -z "$deb" || "${DEB_TEST_REBUILD:-0}" == 1 ]] ||
  [[ -n "$(cd "$ROOT" && find Cargo.toml Cargo.lock src conf debian docs/man -newer "$deb" -print -quit)" ]]; then
  step "building the .deb (scripts/make-deb.sh)"
  "$ROOT/scripts/make-deb.sh" >>"$LOG" 2>&1 || fail "scripts/make-deb.sh"
  deb=$(ls -t "$ROOT"/target/deb/libpam-twofactor_*.deb | head -1)
else
  step "using ${deb#"$ROOT"/} (up to date)"
fi

T=$(mktemp -d /var/tmp/pam-twofactor-deb-test.XXXXXX)
cleanup() {
  # The namespace is gone once the inner process exits, and its tmpfs
  # with it: only the empty mount point is left.
  rm -rf --one-file-system "$T"
}
trap cleanup EXIT

rc=0
unshare --mount --propagation private "$SELF" --inner "$T" "$deb" || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "deb-test: FAIL (isolated-root steps exited $rc; details: $LOG)"
  exit 1
fi

step "checking the host: dpkg database and PAM stacks untouched"
now_status=$(dpkg-query -W -f='${Status}' libpam-twofactor 2>/dev/null || echo absent)
[[ "$now_status" == "$host_status" ]] || fail "host dpkg status of libpam-twofactor changed: '$host_status' -> '$now_status'"
if [[ "$host_status" == absent ]]; then
  dpkg -s libpam-twofactor >/dev/null 2>&1 && fail "libpam-twofactor is installed on the host"
  grep -q pam_twofactor /etc/pam.d/common-auth && fail "host common-auth has pam_twofactor"
fi
[[ "$(cat /etc/pam.d/common-auth /var/lib/pam/seen 2>/dev/null | sha256sum)" == "$host_pam" ]] ||
  fail "host /etc/pam.d/common-auth or /var/lib/pam/seen changed"
id tfdebtest >/dev/null 2>&1 && fail "the test user exists on the host"
step "took $(($(date +%s) - start)) s"
echo "deb-test: PASS"
