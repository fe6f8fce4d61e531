#!/usr/bin/env bash
# Builds the Debian package libpam-twofactor into target/deb/ and runs
# lintian on it. Works as root on a fresh Debian 12 machine: installs the
# build dependencies when missing. Rust itself comes from rustup (see
# debian/rules for how cargo is found: $CARGO, ~/.cargo, /root/.cargo, PATH).
#
# dpkg-buildpackage writes its output next to the source directory, so the
# build runs in a copy of the tree under target/deb-build/ (the checkout's
# parent may be read-only or shared); cargo's cache for it stays in
# target/deb-build/cargo so a rebuild only recompiles what changed.
#
# Environment: LINTIAN=0 skips lintian.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/deb
WORK=$ROOT/target/deb-build
SRC=$WORK/src/pam-twofactor

log() { printf 'make-deb: %s\n' "$*"; }

# --- build dependencies ---------------------------------------------------
# build-essential: dpkg-checkbuilddeps requires it (and rustc links with cc).
deps=(build-essential debhelper dpkg-dev libpam0g-dev libssl-dev pkg-config)
[[ "${LINTIAN:-1}" == 0 ]] || deps+=(lintian)
missing=()
for pkg in "${deps[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "make-deb: missing packages: ${missing[*]}" >&2
    echo "make-deb: install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  for pkg in "${missing[@]}"; do
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
      log "apt-get update (no candidate for $pkg)"
      apt-get update -qq || { echo "make-deb: apt-get update failed" >&2; exit 1; }
      break
    fi
  done
  log "installing ${missing[*]}"
  mkdir -p "$WORK"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
    { cat "$WORK/apt.log" >&2; echo "make-deb: apt-get install failed" >&2; exit 1; }
fi

# --- a clean copy of the tree ---------------------------------------------
log "copying the source tree to ${SRC#"$ROOT"/}"
rm -rf "$WORK/src"
mkdir -p "$SRC" "$OUT"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and untracked-but-not-ignored files: the working tree as it is,
  # without target/ or .git.
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | tar --null --ignore-failed-read -T - -cf -) | tar -C "$SRC" -xf -
else
  tar -C "$ROOT" --exclude=./target --exclude=./.git --exclude=./fuzz/target \
    -cf - . | tar -C "$SRC" -xf -
fi

# --- build ----------------------------------------------------------------
export CARGO_TARGET_DIR=$WORK/cargo
log "dpkg-buildpackage -us -uc -b (log: ${WORK#"$ROOT"/}/build.log)"
if ! (cd "$SRC" && dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1; then
  tail -n 40 "$WORK/build.log" >&2
  echo "make-deb: dpkg-buildpackage failed; full log: $WORK/build.log" >&2
  exit 1
fi

# dpkg-buildpackage wrote the .deb, .buildinfo and .changes next to $SRC.
version=$(cd "$SRC" && dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
rm -f "$OUT"/libpam-twofactor_*.deb "$OUT"/pam-twofactor_*.buildinfo "$OUT"/pam-twofactor_*.changes
mv "$WORK/src"/*.deb "$WORK/src"/*.buildinfo "$WORK/src"/*.changes "$OUT"/
deb=$OUT/libpam-twofactor_${version}_${arch}.deb
[[ -f "$deb" ]] || { echo "make-deb: $deb was not built" >&2; exit 1; }
changes=$OUT/pam-twofactor_${version}_${arch}.changes

# --- lintian --------------------------------------------------------------
if [[ "${LINTIAN:-1}" != 0 ]]; then
  log "lintian (errors fail the build; warnings are shown)"
  rc=0
  report=$(lintian --fail-on error --display-info "$changes" 2>&1) || rc=$?
  # lintian warns about running as root; the package is only read.
  grep -v 'running with root privileges is not recommended' <<<"$report" || true
  [[ $rc -eq 0 ]] || { echo "make-deb: lintian found errors (exit $rc)" >&2; exit 1; }
fi

rm -rf "$WORK/src"
log "built $deb"
echo "$deb"
