#!/usr/bin/env bash
# Fuzzes pam-twofactor on the stable toolchain (cargo fuzz -s none: no
# sanitizer, which needs nightly; debug assertions on, so integer overflow
# panics too). See fuzz/README.md.
#
#   fuzz/run.sh [--smoke] [TARGET...]        every target briefly (make test)
#   fuzz/run.sh --long SECONDS [TARGET...]   every target SECONDS each (make fuzz)
#
# Each target first replays fuzz/regressions/<target>/* (inputs that once
# found a bug, one by one), then fuzzes from the committed seeds in
# fuzz/corpus/<target> plus a scratch corpus fuzz/target/corpus-<mode>/<target>
# (new inputs go there, never into the committed seeds).
#
# Smoke: a debug build (opt-level 1, about half the build time), a fixed
# seed and a fixed number of inputs per target from a fresh scratch corpus,
# so two runs on the same tree do the same thing; it also checks that
# auth_flow's seeds reach success, denial, a conversation error and an
# injected write failure. Long: a release build, libFuzzer's fork mode with
# -ignore_crashes (one known bug does not end an hour's run); the scratch
# corpus is kept between long runs.
#
# Crashing inputs land in fuzz/artifacts/<target>/. Exit status 1 on any
# finding (a regression failing again, a crash, a timeout, an OOM or any
# new file in fuzz/artifacts), 2 on usage or build errors.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

ALL_TARGETS=(config_parse record_parse input_classify auth_flow)

usage() {
    echo "usage: $0 [--smoke | --long SECONDS] [TARGET...]" >&2
    exit 2
}

mode=smoke
seconds=
case "${1:-}" in
--smoke) shift ;;
--long)
    mode=long
    seconds="${2:-}"
    [[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || usage
    shift 2
    ;;
-h | --help)
    sed -n '2,24p' "$0"
    exit 0
    ;;
-*) usage ;;
esac
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ -f "fuzz/fuzz_targets/$t.rs" && -d "fuzz/corpus/$t" ]] || {
        echo "unknown target $t (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    }
done

# Inputs per target in a smoke run. auth_flow runs up to 16 logins per
# input against real files (and argon2 for backup codes), so fewer.
smoke_runs() {
    case "$1" in
    auth_flow) echo 3000 ;;
    *) echo 60000 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io (1-2 minutes)"
    cargo install cargo-fuzz --locked
fi

start_all=$(date +%s)
BUILD=(--fuzz-dir fuzz -s none)
if [[ "$mode" == smoke ]]; then
    BUILD+=(--dev)
    profile=debug
else
    # 16 codegen units: a third less build time than cargo fuzz's 1, about
    # the same speed.
    BUILD+=(--release --debug-assertions --codegen-units 16)
    profile=release
fi
echo "== building the fuzz targets ($profile)"
build_targets=("${targets[@]}")
[[ ${#targets[@]} -eq ${#ALL_TARGETS[@]} ]] && build_targets=("")
for t in "${build_targets[@]}"; do
    # shellcheck disable=SC2086 # empty $t builds every target
    cargo fuzz build "${BUILD[@]}" $t || exit 2
done
bindir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/$profile"

# auth_flow's state directory on a private tmpfs when root may mount one, so
# fsync costs nothing (about 5x faster); otherwise the target uses
# /run/pam-twofactor-fuzz or ~/.cache/pam-twofactor-fuzz as it is.
in_tmpfs() {
    unshare --mount --propagation private sh -c \
        'mount -t tmpfs -o mode=0755,size=256m tmpfs /run/pam-twofactor-fuzz && exec "$@"' sh "$@"
}
tmpfs_ok=false
if [[ $EUID -eq 0 ]] && command -v unshare >/dev/null; then
    mkdir -p /run/pam-twofactor-fuzz && chmod 0755 /run/pam-twofactor-fuzz
    in_tmpfs true 2>/dev/null && tmpfs_ok=true
fi

# The first failure in a libFuzzer log, briefly.
show_failure() {
    grep -a -m1 -A14 'panicked at' "$1" ||
        grep -a -m1 -A6 'ERROR: libFuzzer\|==ERROR\|deadly signal' "$1" ||
        tail -n 30 "$1"
}

mkdir -p fuzz/target/logs
failed=()
summary=()
for t in "${targets[@]}"; do
    bin="$bindir/$t"
    wrap=()
    if [[ "$t" == auth_flow && "$tmpfs_ok" == true ]]; then wrap=(in_tmpfs); fi
    mkdir -p "fuzz/artifacts/$t"
    opts=(-seed=1 -timeout=10 -rss_limit_mb=2048 "-artifact_prefix=fuzz/artifacts/$t/"
        -print_final_stats=1)
    # The TOML targets share one dictionary of keys and tricky tokens.
    case "$t" in
    config_parse | record_parse) opts+=(-dict=fuzz/dict/toml.dict) ;;
    esac

    # Regressions: each input on its own, so every one that fails is named.
    shopt -s nullglob
    regressions=(fuzz/regressions/"$t"/*)
    shopt -u nullglob
    if [[ ${#regressions[@]} -gt 0 ]]; then
        echo "== $t: replaying ${#regressions[@]} regression input(s)"
        for input in "${regressions[@]}"; do
            log="fuzz/target/logs/$t.regression.$(basename "$input").log"
            if ! "${wrap[@]}" "$bin" "${opts[@]}" -artifact_prefix=fuzz/target/logs/ "$input" \
                >"$log" 2>&1; then
                echo "!! $t: regression input $input fails again (log: $log):"
                show_failure "$log"
                failed+=("$t ($(basename "$input"))")
            fi
        done
    fi

    if [[ "$mode" == smoke && "$t" == auth_flow ]]; then
        # The seeds must reach what the target is named for: whole logins
        # that succeed, are denied, hit a conversation error and an injected
        # failure of the state write. Each is one line per login in the trace.
        log=fuzz/target/logs/auth_flow.seeds.log
        AUTH_FLOW_TRACE=1 "${wrap[@]}" "$bin" "${opts[@]}" fuzz/corpus/auth_flow/* >"$log" 2>&1 || true
        missing=()
        for want in ': Ok(Allow(Totp' ': Ok(Allow(Backup' ': Ok(Deny(' ': Err(Conversation)' \
            'fault Some(.*: Err(Store'; do
            grep -aq -- "$want" "$log" || missing+=("$want")
        done
        if [[ ${#missing[@]} -gt 0 ]]; then
            echo "!! auth_flow: the seeds no longer reach: ${missing[*]} (log: $log)"
            failed+=("auth_flow (seed coverage)")
        fi
    fi

    work="fuzz/target/corpus-$mode/$t"
    if [[ "$mode" == smoke ]]; then
        rm -rf "$work"
        limits=("-runs=$(smoke_runs "$t")" -max_total_time=120)
    else
        limits=("-max_total_time=$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1
            -ignore_ooms=1)
    fi
    mkdir -p "$work"
    found_before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    log="fuzz/target/logs/$t.$mode.log"
    echo "== $t: fuzzing ($mode), log in $log"
    start=$(date +%s)
    status=ok
    if ! "${wrap[@]}" "$bin" "${opts[@]}" "${limits[@]}" "$work" "fuzz/corpus/$t" >"$log" 2>&1; then
        status=FAILED
    fi
    elapsed=$(($(date +%s) - start))
    found=$(($(find "fuzz/artifacts/$t" -type f | wc -l) - found_before))
    if [[ "$status" == FAILED || "$found" -gt 0 ]]; then
        status=FAILED
        failed+=("$t")
        echo "!! $t: found something ($found new input(s) in fuzz/artifacts/$t/):"
        show_failure "$log"
    fi
    # Executions: "Done N runs" (one process) or the last "#N:" status line
    # (fork mode); the corpus size from the last status line.
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [[ -n "$runs" ]] || runs=$(sed -n 's/^#\([0-9][0-9]*\):\{0,1\}[[:space:]].*/\1/p' "$log" | tail -n 1)
    corp=$(grep -ao 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    summary+=("$(printf '%-16s %-6s %12s execs %6s s  corpus %s  findings %s' \
        "$t" "$status" "${runs:-?}" "$elapsed" "${corp:-?}" "$found")")
done

echo "== summary ($mode, $(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - start_all)) s including the build)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "!! findings in: ${failed[*]}" >&2
    exit 1
fi
