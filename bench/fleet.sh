# shellcheck shell=bash disable=SC2154 # R, MODE, RUN, ... come from run.sh
# bench/fleet.sh: the fleet section of bench/run.sh (sourced by its inner
# part, in the bench's private mount namespace, as root). What one login
# costs through `twofactor agent` and PostgreSQL against the file store, in
# the same run, with the same harness (pam_bench -F: real clock, codes by
# time step) — see bench/README.md, "The fleet".
#
# It starts, all stopped by PID at the end and nothing of the machine's own
# configuration touched:
#   - a PostgreSQL 15 primary and a synchronous standby on 127.0.0.1, private
#     ports and directories under $RUN (initdb / pg_basebackup -R as the
#     postgres user; synchronous_commit = on, synchronous_standby_names =
#     'bench_standby'; scram-sha-256 over loopback TCP, with or without TLS);
#   - `twofactor fleet init` (require_sync_standby on), `fleet add-host bench
#     --password-file`, an admin role `tf_admin` that enrolls `root` with the
#     bench secret (`enroll --secret-file -`); the other bench users are that
#     enrollment's rows copied by SQL, as the file-store fixture copies
#     root's records;
#   - one `twofactor agent` of the measured build without TLS (the targets)
#     and one with TLS (sslmode=require + sslrootcert: what TLS costs).
# The failover (kill -9 of the primary, promotion of the standby, a new
# standby) comes last: it leaves the cluster changed.

PG_BIN=/usr/lib/postgresql/15/bin
FL_DEADLINE=3     # [fleet] deadline_seconds of the bench host
FL_SECRET_USER=root
if [[ $MODE == full ]]; then
  FL_USERS=30000 FL_ROUNDS=20 FL_PER=50 FL_WARM=2 FL_PROCS=(1 16 64) FL_DUR=3000 FL_TROUNDS=3
  FL_COLD=10 FL_FAILOVER=1 FO_PROCS=16 FO_PAUSE=20 FO_PRE=4 FO_GAP=6 FO_CYCLES=3
else
  FL_USERS=400 FL_ROUNDS=2 FL_PER=3 FL_WARM=1 FL_PROCS=(1 4) FL_DUR=300 FL_TROUNDS=1
  FL_COLD=1 FL_FAILOVER=0 FO_PROCS=2 FO_PAUSE=50 FO_PRE=1 FO_GAP=4 FO_CYCLES=1
fi
# Overrides for trying the section alone (bench/run.sh --fleet-only).
FL_FAILOVER=${BENCH_FLEET_FAILOVER:-$FL_FAILOVER}
FD=$RUN/fleet   # everything of this section
PGD=$FD/pg      # the clusters (owned by postgres)
# Clusters by number n (data directory $PGD/dN, socket directory
# $PGD/sockN): PGPID[n], PGPORT[n]. Two TCP ports, A and B: a cluster made to
# replace a dead one takes the dead one's port, so the agent's connection
# string (both ports) stays right, as a replaced server keeps its address.
declare -A PGPID=() PGPORT=()
FL_PRIMARY=1 FL_STANDBY=2
FLEET_STARTED=0

# ------------------------------------------------------------- helpers -----
# The real time in ns, from bash itself (µs resolution, no process spawned).
now_ns() { local t=${EPOCHREALTIME/./}; echo "${t}000"; }
# Whether PID runs (a child of ours that exited is a zombie until waited for).
alive() { [[ -r /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) != Z ]]; }
# A command as the postgres user, from /, with a minimal environment.
pg_as() { (cd / && exec setpriv --reuid=postgres --regid=postgres --clear-groups -- \
  env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 "$@"); }
# psql as the superuser over the Unix socket of cluster n.
psql_su() { # n db args...
  local n=$1 db=$2
  shift 2
  psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGD/sock$n" -p "${PGPORT[$n]}" -U postgres -d "$db" "$@"
}
free_port() {
  local p _
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 30000))
    [[ $p == "${PORT_A:-}" ]] && continue
    if ! ss -Hltn "( sport = :$p )" | grep -q .; then echo "$p"; return; fi
  done
  fail "no free TCP port on 127.0.0.1"
}
# Starts cluster n (data directory $PGD/dN) on 127.0.0.1:PGPORT[n] and its
# own socket directory; sets PGPID[n].
pg_start() { # n
  local n=$1
  install -d -m 0700 -o postgres -g postgres "$PGD/sock$n"
  # Not through pg_as (a function: $! would be the subshell running it):
  # this subshell execs setpriv, which execs env, which execs postgres.
  (cd / && exec setpriv --reuid=postgres --regid=postgres --clear-groups -- env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 \
    "$PG_BIN/postgres" -D "$PGD/d$n" -p "${PGPORT[$n]}" -k "$PGD/sock$n" -c listen_addresses=127.0.0.1) \
    </dev/null >>"$FD/pg$n.log" 2>&1 &
  PGPID[$n]=$!
  local _
  for _ in $(seq 300); do
    if pg_isready -q -h "$PGD/sock$n" -p "${PGPORT[$n]}"; then
      # The PID kept is the postmaster's own (stopped and killed by it).
      [[ $(cat "/proc/${PGPID[$n]}/comm" 2>/dev/null) == postgres ]] || fail "PID ${PGPID[$n]} is not cluster $n's postmaster"
      return 0
    fi
    sleep 0.05
  done
  cat "$FD/pg$n.log" >&2
  fail "PostgreSQL $n did not start"
}
# Stops cluster n by its postmaster's PID (SIGINT: fast shutdown).
pg_stop() { # n
  local pid=${PGPID[$1]:-} _
  [[ -n $pid ]] || return 0
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 200); do alive "$pid" || break; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  PGPID[$1]=''
}
# A standby of cluster `from` in $PGD/dN on `port`, named bench_standby, started.
pg_standby() { # n from port
  local n=$1 from_port=${PGPORT[$2]}
  PGPORT[$n]=$3
  pg_as "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$from_port" -U postgres -D "$PGD/d$n" -R -X stream -c fast \
    >>"$FD/pg$n.log" 2>&1 || { cat "$FD/pg$n.log" >&2; fail "pg_basebackup for standby $n"; }
  # -R wrote standby.signal and a primary_conninfo; this one names us.
  echo "primary_conninfo = 'host=127.0.0.1 port=$from_port user=postgres application_name=bench_standby'" \
    >>"$PGD/d$n/postgresql.auto.conf"
  pg_start "$n"
}
# Waits until cluster n sees bench_standby as a synchronous standby.
pg_wait_sync() { # n
  local _
  for _ in $(seq 600); do
    [[ $(psql_su "$1" postgres -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'bench_standby'" 2>/dev/null) == sync ]] && return 0
    sleep 0.05
  done
  fail "the standby did not become synchronous on cluster $1"
}
# The agents by name: `fleet` (no TLS, $FD/fleet.toml) and `fleet-tls`
# (TLS, $FD/fleet-tls.toml); each binds $FD/NAME.sock.
declare -A AGENT_PID=()
agent_start() { # name
  rm -f "$FD/$1.sock"
  "$CLI" --config "$FD/$1.toml" agent </dev/null >/dev/null 2>>"$FD/$1.agent.log" &
  AGENT_PID[$1]=$!
  local _
  for _ in $(seq 400); do
    [[ -S $FD/$1.sock ]] && return 0
    alive "${AGENT_PID[$1]}" || break
    sleep 0.01
  done
  cat "$FD/$1.agent.log" >&2
  fail "the agent $1 did not start"
}
agent_stop() { # name
  local pid=${AGENT_PID[$1]:-} _
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do alive "$pid" || break; sleep 0.02; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  AGENT_PID[$1]=''
}
fleet_cleanup() {
  [[ $FLEET_STARTED -eq 1 ]] || return 0
  if [[ -n ${FO_HP:-} ]]; then kill -USR1 "$FO_HP" 2>/dev/null || true; wait "$FO_HP" 2>/dev/null || true; FO_HP=''; fi
  local n
  for n in "${!AGENT_PID[@]}"; do agent_stop "$n"; done
  for n in "${!PGPID[@]}"; do pg_stop "$n"; done
}
# pam_bench at the real time (no libfaketime: the database's clock decides).
fl_harness() { "$HARNESS" -F -C "$FD/codes" -d "$FD/pam.d" "$@" </dev/null; }
# Puts the one-user case's user back as enrolled (outside any timing): the
# file store's state file from its pristine copy, the fleet's row by SQL.
solo_reset() { # store
  if [[ $1 == file ]]; then
    cat "$FD/pristine.state" >"$FD/state/solo.state"
    sync "$FD/state/solo.state"
  else
    psql_su "$FL_PRIMARY" twofactor -c "UPDATE twofactor.users SET failures = 0, locked_until = NULL,
      rate_window_start = 0, rate_window_attempts = 0, last_success = NULL WHERE name = 'solo';
      UPDATE twofactor.devices SET last_accepted_step = NULL, drift_pending_step = NULL,
      drift_pending_offset = NULL WHERE user_name = 'solo'" >/dev/null
  fi
}

# --------------------------------------------------------------- set-up -----
fleet_setup() {
  local t0=$SECONDS i u
  id postgres >/dev/null 2>&1 || fail "no postgres user (package postgresql-15)"
  [[ -x $PG_BIN/postgres ]] || fail "no $PG_BIN/postgres (package postgresql-15)"
  install -d -m 0755 "$FD" "$FD/pam.d" "$FD/t" "$FD/c"
  install -d -m 0700 "$FD/state" "$FD/hoststate" "$FD/dbastate" "$FD/adminstate"
  install -d -m 0700 -o postgres -g postgres "$PGD"
  FLEET_STARTED=1
  PORT_A=$(free_port)
  PORT_B=$(free_port)
  PGPORT[1]=$PORT_A
  log "fleet: PostgreSQL primary on 127.0.0.1:$PORT_A, synchronous standby on :$PORT_B"
  pg_as "$PG_BIN/initdb" -D "$PGD/d1" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --no-instructions >>"$FD/pg1.log" 2>&1 || { cat "$FD/pg1.log" >&2; fail "initdb"; }
  printf 'local all postgres trust\nhost replication postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' \
    >"$PGD/d1/pg_hba.conf"
  # In postgresql.conf, so that the standby's copy has them too (as a real
  # standby made by pg_basebackup would): a promoted standby then waits for
  # a standby named bench_standby, as docs/fleet.md warns.
  printf "synchronous_commit = on\nsynchronous_standby_names = 'bench_standby'\nssl = on\n" >>"$PGD/d1/postgresql.conf"
  # TLS for the second agent: a throwaway CA and a certificate for
  # 127.0.0.1 in the data directory (pg_basebackup copies it to standbys).
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=pam-twofactor-bench-ca -keyout "$FD/ca.key" -out "$FD/ca.crt" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
        -keyout "$PGD/d1/server.key" -out "$FD/server.csr" &&
      openssl x509 -req -in "$FD/server.csr" -CA "$FD/ca.crt" -CAkey "$FD/ca.key" -CAcreateserial -days 2 \
        -extfile <(printf 'subjectAltName = IP:127.0.0.1\n') -out "$PGD/d1/server.crt"
  } >>"$FD/tls.log" 2>&1 || { cat "$FD/tls.log" >&2; fail "openssl: the bench certificates"; }
  chown postgres:postgres "$PGD/d1/server.key" "$PGD/d1/server.crt"
  chmod 0600 "$PGD/d1/server.key"
  pg_start 1
  pg_standby 2 1 "$PORT_B"
  pg_wait_sync 1
  FL_PRIMARY=1 FL_STANDBY=2
  psql_su 1 postgres -c "CREATE DATABASE twofactor" >/dev/null

  local db1="host=$PGD/sock1 port=$PORT_A dbname=twofactor"
  printf 'state_dir = "%s"\n[fleet]\ndatabase = "%s user=postgres sslmode=disable"\nagent_socket = "%s"\n' \
    "$FD/dbastate" "$db1" "$FD/none.sock" >"$FD/dba.toml"
  chmod 0600 "$FD/dba.toml"
  "$CLI" --config "$FD/dba.toml" fleet init --json >"$FD/init.json" 2>>"$FD/cli.log" || { cat "$FD/cli.log" >&2; fail "twofactor fleet init"; }
  "$CLI" --config "$FD/dba.toml" fleet add-host bench --password-file "$FD/host.pw" --json >"$FD/add-host.json" 2>>"$FD/cli.log" ||
    { cat "$FD/cli.log" >&2; fail "twofactor fleet add-host"; }
  # The password on psql's stdin, never in an argv (/proc/PID/cmdline).
  echo "CREATE ROLE tf_admin LOGIN IN ROLE twofactor_admin PASSWORD 'bench-admin-password'" |
    psql_su 1 twofactor >/dev/null
  (umask 077 && echo bench-admin-password >"$FD/admin.pw")
  printf 'state_dir = "%s"\n[fleet]\ndatabase = "host=127.0.0.1 port=%s dbname=twofactor user=tf_admin sslmode=disable"\npassword_file = "%s"\nagent_socket = "%s"\n' \
    "$FD/adminstate" "$PORT_A" "$FD/admin.pw" "$FD/none.sock" >"$FD/admin.toml"
  chmod 0600 "$FD/admin.toml"
  printf '%s\n' "$SECRET" | "$CLI" --config "$FD/admin.toml" enroll "$FL_SECRET_USER" --secret-file - --json >"$FD/enroll.json" 2>>"$FD/cli.log" ||
    { cat "$FD/cli.log" >&2; fail "twofactor enroll through the fleet"; }
  # The bench users u00001.. and solo: root's enrollment copied (a fresh
  # generation each), as the file-store fixture copies root's records.
  psql_su 1 twofactor -c "
    INSERT INTO twofactor.users (name, generation, created, backup_created, backup_digits, backup_salt,
                                 backup_m_cost, backup_t_cost, backup_p_cost)
    SELECT n, nextval('twofactor.generation_seq'), u.created, u.backup_created, u.backup_digits, u.backup_salt,
           u.backup_m_cost, u.backup_t_cost, u.backup_p_cost
      FROM twofactor.users u,
           (SELECT format('u%s', lpad(i::text, 5, '0')) AS n FROM generate_series(1, $FL_USERS) i
            UNION ALL SELECT 'solo') x
     WHERE u.name = '$FL_SECRET_USER';
    INSERT INTO twofactor.devices (user_name, label, secret, algorithm, digits, period, created)
    SELECT x.name, d.label, d.secret, d.algorithm, d.digits, d.period, d.created
      FROM twofactor.devices d, twofactor.users x WHERE d.user_name = '$FL_SECRET_USER' AND x.name <> d.user_name;
    INSERT INTO twofactor.backup_codes (user_name, hash)
    SELECT x.name, b.hash FROM twofactor.backup_codes b, twofactor.users x
     WHERE b.user_name = '$FL_SECRET_USER' AND x.name <> b.user_name;
    ANALYZE;" >/dev/null

  # The host: one config for the module and the agent. Both servers listed,
  # the agent follows the writable one.
  local tls
  for tls in fleet fleet-tls; do
    {
      printf 'state_dir = "%s"\n[fleet]\n' "$FD/hoststate"
      if [[ $tls == fleet ]]; then
        printf 'database = "host=127.0.0.1,127.0.0.1 port=%s,%s dbname=twofactor user=tf_host_bench sslmode=disable target_session_attrs=read-write"\n' "$PORT_A" "$PORT_B"
      else
        printf 'database = "host=127.0.0.1,127.0.0.1 port=%s,%s dbname=twofactor user=tf_host_bench sslmode=require target_session_attrs=read-write"\nsslrootcert = "%s"\n' \
          "$PORT_A" "$PORT_B" "$FD/ca.crt"
      fi
      printf 'password_file = "%s"\nagent_socket = "%s"\ndeadline_seconds = %d\n' "$FD/host.pw" "$FD/$tls.sock" "$FL_DEADLINE"
    } >"$FD/$tls.toml"
    chmod 0600 "$FD/$tls.toml"
  done
  # The file store, same users, same secret, defaults.
  printf 'state_dir = "%s"\n' "$FD/state" >"$FD/file.toml"
  chmod 0600 "$FD/file.toml"
  (
    umask 077
    for ((i = 1; i <= FL_USERS; i++)); do
      printf -v u 'u%05d' "$i"
      printf '%s\n' "$OURS_SECRET" >"$FD/state/$u.secret"
      printf '%s\n' "$OURS_STATE" >"$FD/state/$u.state"
    done
    printf '%s\n' "$OURS_SECRET" >"$FD/state/solo.secret"
    printf '%s\n' "$OURS_STATE" >"$FD/state/solo.state"
    printf '%s\n' "$OURS_STATE" >"$FD/pristine.state"
  )
  echo "auth required $SO config=$FD/file.toml" >"$FD/pam.d/file"
  echo "auth required $SO config=$FD/fleet.toml" >"$FD/pam.d/fleet"
  echo "auth required $SO config=$FD/fleet-tls.toml" >"$FD/pam.d/fleet-tls"
  printf 'auth required pam_deny.so\naccount required pam_deny.so\n' >"$FD/pam.d/other"
  # Codes for every step of the next two hours (oathtool), by step.
  local now step0
  now=$(date +%s)
  step0=$((now / 30))
  { echo "$step0 30"; oathtool --totp -b "$SECRET" --now "@$((step0 * 30))" -w 239; } >"$FD/codes"
  agent_start fleet
  agent_start fleet-tls
  R[fl.setup_s]=$((SECONDS - t0))
  R[fl.pg]="PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
  log "fleet: set up in ${R[fl.setup_s]} s ($FL_USERS users in each store, agents ${AGENT_PID[fleet]} and ${AGENT_PID[fleet-tls]} (TLS))"
}

# ----------------------------------------------------------- measurements ---
# Sequential logins, file store and fleet interleaved (rotated per round):
# FL_ROUNDS rounds of FL_PER timed logins (after FL_WARM untimed) per store,
# each login a user not yet used in this time step, with the step's code.
# Three stores: the file store, the fleet through the agent without TLS
# (the targets) and through the agent with TLS; the last two share the
# database's users, hence one user state file.
fl_users() { if [[ $1 == file ]]; then echo "$FD/users.file"; else echo "$FD/users.fleet"; fi; }
fleet_latency() {
  local rep m out
  for ((rep = 1; rep <= FL_ROUNDS; rep++)); do
    log "fleet: sequential logins, round $rep of $FL_ROUNDS ($FL_PER per store)"
    while read -r m; do
      out=$(fl_harness -s "$m" -u 'u%05d' -U "$FL_USERS" -S "$(fl_users "$m")" -n "$FL_PER" -w "$FL_WARM" \
        -o "$FD/t/$m.$rep") || fail "fleet harness: $m sequential"
      [[ $(kv success " $out") == "$(kv logins " $out")" ]] || fail "fleet: a login failed ($m): $out"
    done < <(rotated "$rep" file fleet fleet-tls)
  done
  for m in file fleet fleet-tls; do
    read -r "R[fl.lat.$m.med]" "R[fl.lat.$m.p99]" "R[fl.lat.$m.max]" "R[fl.lat.$m.n]" <<<"$(quantiles 2 "$FD/t/$m".*)"
    read -r "R[fl.lat.$m.auth_med]" "R[fl.lat.$m.auth_p99]" _ _ <<<"$(quantiles 3 "$FD/t/$m".*)"
  done
  R[fl.lat.ratio]=$(round_ratios 2 "$FD/t/fleet" "$FD/t/file")
  R[fl.lat.tls_ratio]=$(round_ratios 2 "$FD/t/fleet-tls" "$FD/t/file")
  R[fl.lat.tls_vs_plain]=$(round_ratios 2 "$FD/t/fleet-tls" "$FD/t/fleet")
  # The host role's connections now (both agents' pools): with TLS or not.
  read -r "R[fl.tls_on]" "R[fl.tls_off]" <<<"$(psql_su "$FL_PRIMARY" postgres -c "SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl)
    FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'tf_host_bench'")"
  [[ ${R[fl.tls_on]} -gt 0 ]] || fail "the TLS agent's connections do not use TLS (pg_stat_ssl: ${R[fl.tls_on]} with, ${R[fl.tls_off]} without)"
}

# quantiles COL FILE... -> "median p99 max count" in µs (nearest rank)
quantiles() {
  local c=$1
  shift
  cat "$@" 2>/dev/null | awk -v c="$c" '{print $c}' | sort -n | awk '{v[NR] = $1} END {
    if (NR == 0) { print "- - - 0"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f %.1f %.1f %d\n", m / 1000, v[int(0.99 * (NR - 1) + 0.5) + 1] / 1000, v[NR] / 1000, NR }'
}

# Logins per second: P workers logging in back to back for FL_DUR ms,
# different users (each its own slice of users) or one user (solo, reset
# before every run). FL_TROUNDS rounds, stores rotated.
fleet_throughput() {
  local rep who p m out key slice nearly
  nearly=$(((FL_DEADLINE * 1000 - 300) * 1000)) # µs: a login this long met the deadline
  for ((rep = 1; rep <= FL_TROUNDS; rep++)); do
    for who in users solo; do
      for p in "${FL_PROCS[@]}"; do
        log "fleet: $p concurrent logins, $who, round $rep of $FL_TROUNDS"
        while read -r m; do
          key=$m.$who.$p
          if [[ $who == users ]]; then
            slice=$((FL_USERS / (3 * p)))
            out=$(fl_harness -s "$m" -u 'u%05d' -U "$FL_USERS" -S "$FD/users.$m" -K "$slice" -P "$p" -T "$FL_DUR" \
              -o "$FD/c/$key.$rep") || fail "fleet harness: $key"
          else
            solo_reset "$m"
            out=$(fl_harness -s "$m" -u solo -P "$p" -T "$FL_DUR" -o "$FD/c/$key.$rep") || fail "fleet harness: $key"
          fi
          echo "$out" >>"$FD/c/$key.out"
        done < <(rotated "$rep" file fleet)
      done
    done
  done
  for who in users solo; do
    for p in "${FL_PROCS[@]}"; do
      for m in file fleet; do
        key=$m.$who.$p
        # logins per second: median over rounds; outcomes summed
        R[fl.tp.$key.per_s]=$(sed -n 's/.* per_s=\([^ ]*\).*/\1/p' "$FD/c/$key.out" | sort -n | awk '{v[NR] = $1} END {
          if (NR == 0) print "-"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
        R[fl.tp.$key.rounds]=$(sed -n 's/.* per_s=\([^ ]*\).*/\1/p' "$FD/c/$key.out" | awk '{printf "%s%.0f", (NR > 1) ? ", " : "", $1}')
        R[fl.tp.$key.exhausted]=$(grep -c 'slice_exhausted=1' "$FD/c/$key.out" || true)
        read -r "R[fl.tp.$key.med]" "R[fl.tp.$key.p99]" "R[fl.tp.$key.max]" "R[fl.tp.$key.n]" <<<"$(quantiles 2 "$FD/c/$key".[0-9]*)"
        # outcome counts from the raw samples: rc, prompt, near the deadline
        R[fl.tp.$key.outcomes]=$(cat "$FD/c/$key".[0-9]* | awk -v nearly="$nearly" '
          { n++; if ($4 == 0) ok++; else if ($6 == 0) np++; else bad++; if ($2 / 1000 >= nearly) late++ }
          END { printf "%d %d %d %d %d", n, ok, bad, np, late }')
      done
    done
  done
}

# A cold agent's first login (the pool is empty: one new connection, TCP +
# SCRAM + a backend) against warm logins, and a login after the pool's
# clients sat idle for 1.5 s (checked with a round trip before use).
fleet_agent_cold() {
  local i out a
  for ((i = 1; i <= FL_COLD; i++)); do
    log "fleet: cold agents, sample $i of $FL_COLD"
    for a in fleet fleet-tls; do
      agent_stop "$a"
      agent_start "$a"
      out=$(fl_harness -s "$a" -u 'u%05d' -U "$FL_USERS" -S "$FD/users.fleet" -n 1 -w 0 -o "$FD/$a.cold.raw") || fail "cold agent login ($a)"
      [[ $(kv success " $out") == 1 ]] || fail "cold agent login failed ($a): $out"
      out=$(fl_harness -s "$a" -u 'u%05d' -U "$FL_USERS" -S "$FD/users.fleet" -n 5 -w 0 -o "$FD/$a.warm.raw") || fail "warm agent login ($a)"
      [[ $(kv success " $out") == 5 ]] || fail "warm agent login failed ($a): $out"
      sleep 1.5
      out=$(fl_harness -s "$a" -u 'u%05d' -U "$FL_USERS" -S "$FD/users.fleet" -n 1 -w 0 -o "$FD/$a.idle.raw") || fail "idle agent login ($a)"
      [[ $(kv success " $out") == 1 ]] || fail "login after an idle pause failed ($a): $out"
    done
  done
  local k
  for a in fleet fleet-tls; do
    for k in cold warm idle; do
      read -r "R[fl.agent.$a.$k.med]" "R[fl.agent.$a.$k.p99]" "R[fl.agent.$a.$k.max]" "R[fl.agent.$a.$k.n]" <<<"$(quantiles 2 "$FD/$a.$k.raw")"
    done
  done
}

# The failover, FO_CYCLES times while FO_PROCS workers log in (each pausing
# FO_PAUSE ms between logins): FO_PRE s of normal logins, then every process
# of the primary gets SIGKILL and the standby is promoted at once; for
# FO_GAP s the new primary has no standby (its commits wait for one, as a
# promoted standby that kept synchronous_standby_names does); then a new
# standby is made from it (pg_basebackup, on the dead primary's port) and
# becomes synchronous. Every login is classified by when it started.
fleet_failover() {
  local hp out kids slice c old new dead_port t_pre
  slice=$((FL_USERS / (2 * FO_PROCS)))
  : >"$FD/fo.events"
  rm -f "$FD/fo.started"
  log "fleet: failover: $FO_PROCS workers; $FO_CYCLES × (kill -9 of the primary, promotion, ${FO_GAP} s without a standby, a new standby)"
  # The harness itself in the background (not fl_harness: $! must be its PID).
  "$HARNESS" -F -C "$FD/codes" -d "$FD/pam.d" -s fleet -u 'u%05d' -U "$FL_USERS" -S "$FD/users.fleet" -K "$slice" \
    -P "$FO_PROCS" -T 600000 -W -I "$FO_PAUSE" -M "cannot be reached" -M "not accepting writes" \
    -H $(((FL_DEADLINE + 1) * 1000)) -Y "$FD/fo.started" -o "$FD/fo.raw" </dev/null >"$FD/fo.out" &
  hp=$!
  FO_HP=$hp
  local _
  for _ in $(seq 1200); do [[ -e $FD/fo.started ]] && break; sleep 0.05; done # it may wait for a new step
  [[ -e $FD/fo.started ]] || fail "the failover harness did not start"
  for ((c = 1; c <= FO_CYCLES; c++)); do
    sleep "$FO_PRE"
    old=$FL_PRIMARY new=$FL_STANDBY
    dead_port=${PGPORT[$old]}
    kids=$(ps -o pid= --ppid "${PGPID[$old]}" | tr -s ' \n' ' ')
    # The kill, bracketed by two readings of the clock: a login that
    # started before the second and ended after the first was in flight.
    t_pre=$(now_ns)
    # shellcheck disable=SC2086 # the PIDs, one word each
    kill -KILL "${PGPID[$old]}" $kids 2>/dev/null || true
    echo "kill $t_pre $(now_ns)" >>"$FD/fo.events"
    wait "${PGPID[$old]}" 2>/dev/null || true
    PGPID[$old]=''
    pg_as "$PG_BIN/pg_ctl" promote -D "$PGD/d$new" -w -t 60 >>"$FD/pg$new.log" 2>&1 || fail "pg_ctl promote"
    echo "promote $(now_ns)" >>"$FD/fo.events"
    FL_PRIMARY=$new
    log "fleet: failover $c: cluster $old killed, cluster $new promoted; no standby for $FO_GAP s"
    sleep "$FO_GAP"
    FL_STANDBY=$(( $(printf '%s\n' "${!PGPORT[@]}" | sort -n | tail -1) + 1 ))
    echo "standby $(now_ns)" >>"$FD/fo.events"
    pg_standby "$FL_STANDBY" "$new" "$dead_port"
    pg_wait_sync "$new"
    echo "sync $(now_ns)" >>"$FD/fo.events"
    log "fleet: failover $c: new standby (cluster $FL_STANDBY) synchronous"
  done
  sleep "$FO_PRE"
  kill -USR1 "$hp"
  FO_HP=''
  wait "$hp" || fail "the failover harness failed: $(cat "$FD/fo.out")"
  out=$(<"$FD/fo.out")
  R[fl.fo.out]=$out
  # Per window, by the login's start (in flight = started before a kill and
  # ended after it): logins, allowed, denied with "cannot be reached",
  # denied with "not accepting writes", denied otherwise, hung (longer than
  # the deadline + 1 s), the longest login (ms).
  local w
  for w in before inflight down promoted synced; do
    R[fl.fo.$w]=$(awk -v w="$w" -v hung=$(((FL_DEADLINE + 1) * 1000000000)) '
      FNR == NR { if ($1 == "kill") { k[++nk] = $2; kp[nk] = $3 } else if ($1 == "promote") p[nk] = $2; else if ($1 == "sync") s[nk] = $2; else b[nk] = $2; next }
      {
        st = $1; en = $1 + $2; win = "before"
        for (i = 1; i <= nk; i++) {
          if (st < kp[i] && en >= k[i]) { win = "inflight"; break }
          if (en < k[i]) break
          if (st < p[i]) win = "down"
          else if (st < s[i]) win = "promoted"
          else win = "synced"
        }
        if (win != w) next
        n++
        if ($4 == 0) ok++
        else if ($5 % 2 == 1) m1++
        else if (int($5 / 2) % 2 == 1) m2++
        else other++
        if ($2 > hung) h++
        if ($2 > mx) mx = $2
      }
      END { printf "%d %d %d %d %d %d %.0f", n, ok, m1, m2, other, h, mx / 1e6 }' "$FD/fo.events" "$FD/fo.raw")
  done
  # Logins allowed that started after a kill was done and ended before the
  # new standby was even started: a code accepted with no synchronous
  # standby. Must be 0. (A login in flight at the kill may have been
  # decided by the old primary, its commit confirmed by the standby that
  # was then promoted: that one is durable and not counted.)
  R[fl.fo.unprotected]=$(awk 'FNR == NR { if ($1 == "kill") k[++nk] = $3; else if ($1 == "standby") b[nk] = $2; next }
    $4 == 0 { en = $1 + $2; for (i = 1; i <= nk; i++) if ($1 > k[i] && en < b[i]) n++ }
    END { print n + 0 }' "$FD/fo.events" "$FD/fo.raw")
  # Seconds from each kill to the promotion, from the promotion to the new
  # standby, and to the first login allowed after the kill.
  R[fl.fo.cycles]=$(awk 'FNR == NR { if ($1 == "kill") k[++nk] = $3; else if ($1 == "promote") p[nk] = $2; else if ($1 == "sync") s[nk] = $2; else b[nk] = $2; next }
    $4 == 0 { en = $1 + $2; for (i = 1; i <= nk; i++) if ($1 > k[i] && (!(i in f) || en < f[i])) f[i] = en }
    END { for (i = 1; i <= nk; i++) printf "%s%.1f/%.1f/%s", (i > 1) ? ", " : "", (p[i] - k[i]) / 1e9, (s[i] - p[i]) / 1e9,
      (i in f) ? sprintf("%.1f", (f[i] - k[i]) / 1e9) : "none" }' "$FD/fo.events" "$FD/fo.raw")
}

# BENCH_FLEET_PARTS (for trying one part with --fleet-only): a subset of
# "latency throughput agents failover"; all by default.
FL_PARTS=" ${BENCH_FLEET_PARTS:-latency throughput agents failover} "
measure_fleet() {
  fleet_setup
  if [[ $FL_PARTS == *" latency "* ]]; then fleet_latency; fi
  if [[ $FL_PARTS == *" throughput "* ]]; then fleet_throughput; fi
  if [[ $FL_PARTS == *" agents "* ]]; then fleet_agent_cold; fi
  agent_stop fleet-tls
  if [[ $FL_FAILOVER -eq 1 && $FL_PARTS == *" failover "* ]]; then fleet_failover; fi
  local t0=$SECONDS
  fleet_cleanup
  log "fleet: agent and clusters stopped in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- report ----
fleet_report() {
  local m who p key
  local pmax=${FL_PROCS[${#FL_PROCS[@]} - 1]}
  echo "### The fleet: a login through \`twofactor agent\` and PostgreSQL, against the file store (issue 16)"
  echo
  echo "${R[fl.pg]:-PostgreSQL ?}: a primary and a synchronous standby (\`synchronous_commit = on\`, \`synchronous_standby_names = 'bench_standby'\`) on 127.0.0.1, scram-sha-256 over TCP; \`fleet init\` with \`require_sync_standby\` on; a \`twofactor agent\` of the measured build without TLS (the targets; a second one with TLS in the sequential and cold/warm figures); \`deadline_seconds = $FL_DEADLINE\`. Both stores with their defaults and the same secret; $FL_USERS users in each. Logins at the real time (the database's clock decides, so libfaketime cannot pin it): pam_bench -F through the real libpam, each login a user not yet used in the current 30-s step with that step's code from oathtool. Set-up took ${R[fl.setup_s]:-?} s."
  echo
  local t3 t4 r
  r=${R[fl.lat.ratio]:-}
  echo "| # | target | measured | result |"
  echo "|---|---|---|---|"
  echo "| F1 | fleet login median ≤ 3× the file-store login (same run) | $(rr "$r"): fleet $(ms1 "${R[fl.lat.fleet.med]:-}") ms, file store $(ms1 "${R[fl.lat.file.med]:-}") ms | $(passfail "$(first "$r")" 3) |"
  echo "| F2 | fleet login p99 ≤ 20 ms | $(ms1 "${R[fl.lat.fleet.p99]:-}") ms (${R[fl.lat.fleet.n]:-?} logins) | $(passfail "$(ms1 "${R[fl.lat.fleet.p99]:-}")" 20) |"
  local n ok bad np late
  read -r n ok bad np late <<<"${R[fl.tp.fleet.users.$pmax.outcomes]:-}"
  t3=${R[fl.tp.fleet.users.$pmax.per_s]:-}
  local t3v="n/a"
  if [[ -n $t3 && $t3 != - ]]; then
    if [[ $MODE == smoke ]]; then t3v="not judged (smoke)"
    elif awk -v a="$t3" 'BEGIN {exit !(a >= 400)}' && [[ ${bad:-1} -eq 0 && ${np:-1} -eq 0 && ${late:-1} -eq 0 ]]; then t3v=PASS
    else t3v=FAIL; fi
  fi
  echo "| F3 | $pmax concurrent logins of different users ≥ 400 per second, no failure, no timeout | $(printf '%.0f' "${t3:-0}")/s (median of rounds: ${R[fl.tp.fleet.users.$pmax.rounds]:-}); ${n:-?} logins: ${bad:-?} failed, ${np:-?} refused without a prompt, ${late:-?} at the deadline | $t3v |"
  if [[ -n ${R[fl.fo.before]:-} ]]; then
    local hung=0 w v
    for w in before inflight down promoted synced; do
      read -r -a v <<<"${R[fl.fo.$w]}"
      hung=$((hung + ${v[5]:-0}))
    done
    read -r -a v <<<"${R[fl.fo.inflight]}"
    local inflight_clean=$(( ${v[2]:-0} + ${v[3]:-0} + ${v[1]:-0} ))
    t4=FAIL
    if [[ $hung -eq 0 && $inflight_clean -eq ${v[0]:-0} && ${R[fl.fo.unprotected]:-1} -eq 0 ]]; then t4=PASS; fi
    [[ $MODE == smoke ]] && t4="not judged (smoke)"
    echo "| F4 | a failover (kill -9 of the primary, promotion of the standby): the logins in flight get a clean denial, none hangs | $FO_CYCLES failovers; ${v[0]:-0} logins in flight at a kill: ${v[1]:-0} allowed, $((${v[2]:-0} + ${v[3]:-0})) denied with the fleet's message, ${v[4]:-0} otherwise; $hung hung (past the deadline + 1 s) in the whole run; ${R[fl.fo.unprotected]:-?} allowed with no standby | $t4 |"
  else
    echo "| F4 | a failover costs the logins in flight a clean denial, not a hang | not run (smoke) | n/a |"
  fi
  echo
  echo "#### One login, sequential (milliseconds)"
  echo
  echo "$FL_ROUNDS rounds of $FL_PER logins per store, stores rotated per round; the ratio is the median of per-round ratios (lowest–highest round)."
  echo
  echo "*Fleet, TLS*: a second agent, the same database, \`sslmode=require\` with \`sslrootcert\` (a throwaway CA; the server's certificate for 127.0.0.1, P-256, verified with its name), not part of the targets. After these rounds \`pg_stat_ssl\` showed ${R[fl.tls_on]:-?} connections of the host role with TLS and ${R[fl.tls_off]:-?} without."
  echo
  echo "| figure | file store | fleet | fleet, TLS | fleet/file | fleet TLS/file | TLS/no TLS |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  echo "| \`pam_start\`..\`pam_end\`, median | $(ms1 "${R[fl.lat.file.med]:-}") | $(ms1 "${R[fl.lat.fleet.med]:-}") | $(ms1 "${R[fl.lat.fleet-tls.med]:-}") | $(rr "${R[fl.lat.ratio]:-}") | $(rr "${R[fl.lat.tls_ratio]:-}") | $(rr "${R[fl.lat.tls_vs_plain]:-}") |"
  echo "| same, p99 | $(ms1 "${R[fl.lat.file.p99]:-}") | $(ms1 "${R[fl.lat.fleet.p99]:-}") | $(ms1 "${R[fl.lat.fleet-tls.p99]:-}") | $(ratio "${R[fl.lat.fleet.p99]:-}" "${R[fl.lat.file.p99]:-}") | $(ratio "${R[fl.lat.fleet-tls.p99]:-}" "${R[fl.lat.file.p99]:-}") | $(ratio "${R[fl.lat.fleet-tls.p99]:-}" "${R[fl.lat.fleet.p99]:-}") |"
  echo "| same, slowest | $(ms1 "${R[fl.lat.file.max]:-}") | $(ms1 "${R[fl.lat.fleet.max]:-}") | $(ms1 "${R[fl.lat.fleet-tls.max]:-}") | | | |"
  echo "| \`pam_authenticate\` alone, median | $(ms1 "${R[fl.lat.file.auth_med]:-}") | $(ms1 "${R[fl.lat.fleet.auth_med]:-}") | $(ms1 "${R[fl.lat.fleet-tls.auth_med]:-}") | $(ratio "${R[fl.lat.fleet.auth_med]:-}" "${R[fl.lat.file.auth_med]:-}") | $(ratio "${R[fl.lat.fleet-tls.auth_med]:-}" "${R[fl.lat.file.auth_med]:-}") | $(ratio "${R[fl.lat.fleet-tls.auth_med]:-}" "${R[fl.lat.fleet.auth_med]:-}") |"
  echo "| logins measured | ${R[fl.lat.file.n]:-} | ${R[fl.lat.fleet.n]:-} | ${R[fl.lat.fleet-tls.n]:-} | | | |"
  echo
  echo "#### Logins per second"
  echo
  echo "P workers, each logging in back to back (a new \`pam_start\` every login) for $FL_DUR ms, $FL_TROUNDS rounds, stores rotated. *Different users*: each worker its own users, each once per step: every login should succeed. *One user* (\`solo\`, put back as enrolled before every run): one code per step can succeed; the others are decided attempts that fail (replays; after \`max_failures\` the lock, and the rate limit). Per second: median over rounds (each round's figure in brackets). Outcomes over all rounds; *at the deadline*: logins that took ≥ $((FL_DEADLINE * 1000 - 300)) ms."
  echo
  echo "| logins | P | store | per second | login median ms | p99 ms | max ms | logins | allowed | denied after the prompt | refused before it | at the deadline |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for who in users solo; do
    for p in "${FL_PROCS[@]}"; do
      for m in file fleet; do
        key=$m.$who.$p
        read -r n ok bad np late <<<"${R[fl.tp.$key.outcomes]:-}"
        local lbl="different users"
        [[ $who == solo ]] && lbl="one user"
        local ex=""
        [[ ${R[fl.tp.$key.exhausted]:-0} != 0 ]] && ex=" (users ran out early in ${R[fl.tp.$key.exhausted]} rounds)"
        echo "| $lbl | $p | $m | $(printf '%.0f' "${R[fl.tp.$key.per_s]:-0}") (${R[fl.tp.$key.rounds]:-})$ex | $(ms1 "${R[fl.tp.$key.med]:-}") | $(ms1 "${R[fl.tp.$key.p99]:-}") | $(ms1 "${R[fl.tp.$key.max]:-}") | ${n:-} | ${ok:-} | ${bad:-} | ${np:-} | ${late:-} |"
      done
    done
  done
  echo
  echo "#### The agent's connections: reuse against a new one"
  echo
  echo "The agent keeps its clients between calls (up to 16 while busy, 8 after 30 s unused; a client idle over 1 s is checked with one round trip before use); there is no switch to turn the pool off, so a new connection is measured as a cold agent's first login (restarted before each sample: its pool is empty, the login's first call opens one connection — TCP, SCRAM-SHA-256, a new backend, and with TLS a handshake — and the second call reuses it). $FL_COLD samples each, for the agent without TLS and the one with TLS."
  echo
  echo "| login through the fleet | no TLS: median ms | p99 ms | max ms | TLS: median ms | p99 ms | max ms | logins each |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  local k lbl
  for k in warm:"warm agent (5 logins right after the cold one)" idle:"after 1.5 s idle (the pool's liveness round trip first)" cold:"cold agent's first login (one new connection)"; do
    lbl=${k#*:} k=${k%%:*}
    echo "| $lbl | $(ms1 "${R[fl.agent.fleet.$k.med]:-}") | $(ms1 "${R[fl.agent.fleet.$k.p99]:-}") | $(ms1 "${R[fl.agent.fleet.$k.max]:-}") | $(ms1 "${R[fl.agent.fleet-tls.$k.med]:-}") | $(ms1 "${R[fl.agent.fleet-tls.$k.p99]:-}") | $(ms1 "${R[fl.agent.fleet-tls.$k.max]:-}") | ${R[fl.agent.fleet.$k.n]:-} |"
  done
  local a conn=() twice=()
  for a in fleet fleet-tls; do
    conn+=("$(awk -v c="${R[fl.agent.$a.cold.med]:-}" -v w="${R[fl.agent.$a.warm.med]:-}" 'BEGIN { if (c == "" || w == "" || c == "-" || w == "-") print "n/a"; else printf "%.1f", (c - w) / 1000 }')")
    twice+=("$(awk -v c="${conn[-1]}" -v w="${R[fl.agent.$a.warm.med]:-}" 'BEGIN { if (c == "n/a" || w == "" || w == "-") print "n/a"; else printf "%.1f", w / 1000 + 2 * c }')")
  done
  echo
  echo "A new connection costs about ${conn[0]} ms without TLS and ${conn[1]} ms with it (cold − warm medians). Without the pool, a login (two calls: \`begin\`, \`attempt\`) would pay it twice: about ${twice[0]} ms instead of $(ms1 "${R[fl.agent.fleet.warm.med]:-}") (TLS: ${twice[1]} ms instead of $(ms1 "${R[fl.agent.fleet-tls.warm.med]:-}"))."
  echo
  if [[ -n ${R[fl.fo.before]:-} ]]; then
    echo "#### Failover"
    echo
    echo "$FO_PROCS workers logging in (each pausing $FO_PAUSE ms after a login), the agent's connection string \`host=127.0.0.1,127.0.0.1 port=A,B target_session_attrs=read-write\`. $FO_CYCLES times: $FO_PRE s of logins, then every process of the primary gets SIGKILL and the standby is promoted at once (\`pg_ctl promote -w\`); the promoted server keeps \`synchronous_standby_names = 'bench_standby'\` from its copy of the configuration, so for the next $FO_GAP s (no standby) its commits wait; then a new standby is made from it (pg_basebackup, on the dead primary's port) and becomes synchronous. Logins by the window they started in, over all cycles; *hung*: longer than the deadline ($FL_DEADLINE s) + 1 s."
    echo
    echo "| window | logins | allowed | denied: \"cannot be reached\" | denied: \"not accepting writes\" | denied otherwise | hung | longest ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    local w lbl v
    for w in before:"before the first kill" inflight:"**in flight at a kill**" down:"kill → promotion" promoted:"promoted, no standby yet" synced:"new standby synchronous (until the next kill)"; do
      read -r -a v <<<"${R[fl.fo.${w%%:*}]}"
      lbl=${w#*:}
      echo "| $lbl | ${v[0]} | ${v[1]} | ${v[2]} | ${v[3]} | ${v[4]} | ${v[5]} | ${v[6]} |"
    done
    echo
    echo "Logins allowed that started after a kill and ended before the new standby was even started (a code accepted with no synchronous standby; must be 0): ${R[fl.fo.unprotected]:-n/a}."
    echo
    echo "Per cycle, seconds from the kill to the promotion / from the promotion to the new standby being synchronous / from the kill to the first login allowed: ${R[fl.fo.cycles]:-n/a}."
    echo
  fi
}
ms1() { awk -v a="$1" 'BEGIN { if (a == "" || a == "-") print "n/a"; else printf "%.2f", a / 1000 }'; }
