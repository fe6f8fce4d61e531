-- pam-twofactor fleet schema, version 1 (docs/fleet.md, "Schema").
--
-- Applied once, inside one transaction, by a superuser (`twofactor fleet
-- init`). Every attempt is decided here, under the user's row lock, with the
-- rules of src/policy/mod.rs; tests/fleet_cases.toml runs the same cases
-- against both.
--
-- Conventions:
-- * Times are Unix seconds (bigint); steps are TOTP time steps.
-- * Every function runs with `SET search_path = pg_catalog, twofactor,
--   pg_temp`: pg_temp LAST, because a schema left out of search_path is
--   searched FIRST for tables, and any role may create temporary tables
--   that would then shadow ours inside a SECURITY DEFINER function.
-- * Functions with a `p_now bigint` argument (the `_at` twins) take the
--   time of the decision from it; NULL means "read the database clock",
--   and they read it only AFTER the user's row lock is held, so that a
--   decision never uses a time older than the state it reads. The public
--   functions pass NULL; tests call the twins as superuser to pin time.
-- * Normal outcomes are verdicts, never errors. Errors are raised only for
--   bad arguments (SQLSTATE 22023 invalid_parameter_value) and for
--   `require_sync_standby` (SQLSTATE TF001, see _require_sync_standby).

-- The group roles are cluster-global: create them only where missing.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['twofactor_owner', 'twofactor_host', 'twofactor_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        -- A group role must never be a way in, even if it pre-existed.
        EXECUTE pg_catalog.format('ALTER ROLE %I NOLOGIN', r);
    END LOOP;
END
$roles$;

-- fleet_status() reads pg_stat_replication.sync_state, which only members
-- of pg_read_all_stats (or superusers) see; the functions run as the owner.
GRANT pg_read_all_stats TO twofactor_owner;

CREATE SCHEMA IF NOT EXISTS twofactor AUTHORIZATION twofactor_owner;
ALTER SCHEMA twofactor OWNER TO twofactor_owner;

-- pgcrypto for hmac(). A fresh database gets it in our schema (where only
-- the owner may create objects); a database that already has it elsewhere
-- keeps it there, and _hmac below names that schema explicitly.
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA twofactor;

DO $hmac$
DECLARE
    s name;
BEGIN
    SELECT n.nspname INTO s
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pgcrypto';
    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION twofactor._hmac(p_data bytea, p_key bytea, p_type text)
        RETURNS bytea LANGUAGE sql IMMUTABLE STRICT
        SET search_path = pg_catalog, pg_temp
        AS 'SELECT %I.hmac(p_data, p_key, p_type)'
    $f$, s);
END
$hmac$;

------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS twofactor.schema_version (
    version int NOT NULL
);

-- The fleet's rules: one row. Names, meanings, defaults and ranges as the
-- config file's (src/config/mod.rs, src/config/raw.rs).
CREATE TABLE IF NOT EXISTS twofactor.policy (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    "window" int NOT NULL DEFAULT 1 CHECK ("window" BETWEEN 0 AND 10),
    max_failures int NOT NULL DEFAULT 5 CHECK (max_failures BETWEEN 1 AND 1000),
    lock_seconds bigint NOT NULL DEFAULT 1800 CHECK (lock_seconds BETWEEN 1 AND 31 * 86400),
    max_attempts int NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 10000),
    per_seconds bigint NOT NULL DEFAULT 60 CHECK (per_seconds BETWEEN 1 AND 86400),
    max_drift_steps int NOT NULL DEFAULT 10 CHECK (max_drift_steps BETWEEN 0 AND 100),
    grace_seconds bigint NOT NULL DEFAULT 0 CHECK (grace_seconds BETWEEN 0 AND 7 * 86400),
    backup_codes int NOT NULL DEFAULT 10 CHECK (backup_codes BETWEEN 1 AND 100),
    delivery_valid_seconds bigint NOT NULL DEFAULT 300
        CHECK (delivery_valid_seconds BETWEEN 30 AND 3600),
    delivery_max_per_hour int NOT NULL DEFAULT 5 CHECK (delivery_max_per_hour BETWEEN 1 AND 100),
    enroll_at_login boolean NOT NULL DEFAULT false,
    totp_algorithm text NOT NULL DEFAULT 'SHA1'
        CHECK (totp_algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    totp_digits int NOT NULL DEFAULT 6 CHECK (totp_digits BETWEEN 6 AND 8),
    totp_period int NOT NULL DEFAULT 30 CHECK (totp_period BETWEEN 10 AND 300),
    -- Refuse every write when commits do not wait for a synchronous
    -- standby (a code accepted then could be accepted again after a
    -- failover). On by default: turning it off is the admin's choice.
    require_sync_standby boolean NOT NULL DEFAULT true
);
INSERT INTO twofactor.policy DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Generations come from one sequence, never restart per user: a user
-- disabled and enrolled again must not get back a generation an open
-- prompt still holds.
CREATE SEQUENCE IF NOT EXISTS twofactor.generation_seq;

CREATE TABLE IF NOT EXISTS twofactor.users (
    -- src/records/username.rs
    name text PRIMARY KEY
        CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$'),
    generation bigint NOT NULL,
    created bigint NOT NULL,
    deliver_to text
        CHECK (deliver_to IS NULL OR (length(deliver_to) BETWEEN 1 AND 128
               AND octet_length(deliver_to) <= 128 AND deliver_to !~ '[[:cntrl:]]')),
    backup_created bigint NOT NULL,
    backup_digits int NOT NULL CHECK (backup_digits IN (8, 16)),
    backup_salt bytea NOT NULL CHECK (octet_length(backup_salt) = 16),
    backup_m_cost int NOT NULL,
    backup_t_cost int NOT NULL,
    backup_p_cost int NOT NULL,
    failures int NOT NULL DEFAULT 0 CHECK (failures >= 0),
    locked_until bigint,
    rate_window_start bigint NOT NULL DEFAULT 0,
    rate_window_attempts int NOT NULL DEFAULT 0 CHECK (rate_window_attempts >= 0),
    last_success bigint,
    delivered_hash bytea CHECK (octet_length(delivered_hash) = 32),
    delivered_expires bigint,
    deliveries bigint[] NOT NULL DEFAULT '{}',
    CHECK ((delivered_hash IS NULL) = (delivered_expires IS NULL)),
    CHECK (backup_t_cost BETWEEN 1 AND 16 AND backup_p_cost >= 1
           AND backup_m_cost BETWEEN 8 * backup_p_cost AND 262144)
);

CREATE TABLE IF NOT EXISTS twofactor.devices (
    user_name text NOT NULL REFERENCES twofactor.users (name) ON DELETE CASCADE,
    label text NOT NULL CHECK (label ~ '^[A-Za-z0-9_.-]{1,32}$'),
    -- Raw key bytes: 80 bits (imported google-authenticator keys) to 512.
    secret bytea NOT NULL CHECK (octet_length(secret) BETWEEN 10 AND 64),
    algorithm text NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits int NOT NULL CHECK (digits BETWEEN 6 AND 8),
    period int NOT NULL CHECK (period BETWEEN 10 AND 300),
    created bigint NOT NULL,
    last_accepted_step bigint,
    drift_steps bigint NOT NULL DEFAULT 0,
    -- The drift check an attempt answered `drift_suspected` with: the next
    -- answer may confirm exactly this (step + 1); any decided answer ends it.
    drift_pending_step bigint,
    drift_pending_offset bigint,
    PRIMARY KEY (user_name, label),
    CHECK ((drift_pending_step IS NULL) = (drift_pending_offset IS NULL))
);

CREATE TABLE IF NOT EXISTS twofactor.backup_codes (
    user_name text NOT NULL REFERENCES twofactor.users (name) ON DELETE CASCADE,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    used_at bigint,
    UNIQUE (user_name, hash)
);

CREATE TABLE IF NOT EXISTS twofactor.grace (
    user_name text NOT NULL REFERENCES twofactor.users (name) ON DELETE CASCADE,
    host text NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (user_name, host)
);

CREATE TABLE IF NOT EXISTS twofactor.hosts (
    name text PRIMARY KEY,
    role text NOT NULL,
    added bigint NOT NULL
);

------------------------------------------------------------------------
-- Internal helpers (no EXECUTE for anyone but the owner)
------------------------------------------------------------------------

-- The database clock, in whole Unix seconds.
CREATE OR REPLACE FUNCTION twofactor._clock() RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$ SELECT floor(extract(epoch FROM clock_timestamp()))::bigint $$;

-- Raises 22023 with a message: for arguments no caller should send.
CREATE OR REPLACE FUNCTION twofactor._bad(p_message text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'twofactor: %', p_message USING ERRCODE = 'invalid_parameter_value';
END
$$;

-- require_sync_standby: refuses (SQLSTATE TF001, "writes are not protected
-- by a synchronous standby") when this session's commits would not wait for
-- a synchronous standby. Checked before anything is read or written. The
-- agent maps TF001 to a denial with that message.
CREATE OR REPLACE FUNCTION twofactor._require_sync_standby() RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    IF (SELECT p.require_sync_standby FROM twofactor.policy p)
       AND (current_setting('synchronous_standby_names') = ''
            OR current_setting('synchronous_commit') IN ('off', 'local')) THEN
        RAISE EXCEPTION 'writes are not protected by a synchronous standby'
            USING ERRCODE = 'TF001',
                  HINT = 'set synchronous_standby_names and synchronous_commit, '
                         'or turn require_sync_standby off with admin_set_policy';
    END IF;
END
$$;

-- HOTP (RFC 4226 §5.3): HMAC of the 8-byte big-endian counter, dynamic
-- truncation, modulo 10^digits, zero-padded.
CREATE OR REPLACE FUNCTION twofactor.hotp(p_secret bytea, p_algorithm text, p_counter bigint,
                                          p_digits int) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
DECLARE
    h bytea;
    o int;
    bin bigint;
BEGIN
    IF p_algorithm NOT IN ('SHA1', 'SHA256', 'SHA512') THEN
        PERFORM twofactor._bad(format('unknown algorithm %L (SHA1, SHA256 or SHA512)', p_algorithm));
    END IF;
    IF p_digits NOT BETWEEN 6 AND 8 THEN
        PERFORM twofactor._bad(format('digits %s not in 6..8', p_digits));
    END IF;
    IF p_counter < 0 THEN
        PERFORM twofactor._bad('negative counter');
    END IF;
    h := twofactor._hmac(int8send(p_counter), p_secret, lower(p_algorithm));
    o := get_byte(h, octet_length(h) - 1) & 15;
    bin := ((get_byte(h, o) & 127)::bigint << 24)
         | (get_byte(h, o + 1)::bigint << 16)
         | (get_byte(h, o + 2)::bigint << 8)
         | get_byte(h, o + 3)::bigint;
    RETURN lpad((bin % (ARRAY[1000000, 10000000, 100000000])[p_digits - 5])::text, p_digits, '0');
END
$$;

-- otp::match_in_steps: looks for p_code among steps p_first..p_last, the
-- middle step first, then the others oldest first; the first step newer
-- than p_last_accepted is `fresh`, else the first older-or-equal match is
-- `replayed`. A code of another length than the device's matches nothing.
CREATE OR REPLACE FUNCTION twofactor._match_steps(
    p_secret bytea, p_algorithm text, p_digits int, p_period int, p_code text,
    p_first bigint, p_last bigint, p_last_accepted bigint,
    OUT fresh bigint, OUT replayed bigint)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
DECLARE
    v_middle bigint;
    s bigint;
BEGIN
    IF p_code IS NULL OR length(p_code) <> p_digits OR p_first > p_last
       OR p_digits NOT BETWEEN 6 AND 8 OR p_period NOT BETWEEN 10 AND 300
       OR octet_length(p_secret) = 0 THEN
        RETURN;
    END IF;
    v_middle := p_first + (p_last - p_first) / 2;
    FOR s IN SELECT g FROM generate_series(p_first, p_last) AS g ORDER BY g <> v_middle, g LOOP
        IF twofactor.hotp(p_secret, p_algorithm, s, p_digits) = p_code THEN
            IF p_last_accepted IS NOT NULL AND s <= p_last_accepted THEN
                replayed := coalesce(replayed, s);
            ELSE
                fresh := s;
                RETURN;
            END IF;
        END IF;
    END LOOP;
END
$$;

-- policy::refusal: the rate limit, then the lock, without changing anything.
CREATE OR REPLACE FUNCTION twofactor._refusal(
    p_start bigint, p_attempts int, p_locked_until bigint, p_now bigint,
    p_max_attempts int, p_per bigint, OUT refusal text, OUT until bigint)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    -- The window is over, or lies in the future (the clock stepped back).
    IF p_now >= p_start + p_per OR p_now < p_start THEN
        p_start := p_now;
        p_attempts := 0;
    END IF;
    IF p_attempts >= p_max_attempts THEN
        refusal := 'rate_limited';
        until := p_start + p_per;
    ELSIF p_locked_until IS NOT NULL AND p_now < p_locked_until THEN
        refusal := 'locked_out';
        until := p_locked_until;
    END IF;
END
$$;

-- records::valid_host: what may be remembered for grace.
CREATE OR REPLACE FUNCTION twofactor._valid_host(p_host text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    SELECT coalesce(p_host ~ '^[A-Za-z0-9.:_%-]{1,255}$'
                    AND octet_length(p_host) = length(p_host), false)
$$;

-- Writes back the mutable state columns of a user's row.
CREATE OR REPLACE FUNCTION twofactor._store(u twofactor.users) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    UPDATE twofactor.users t
       SET failures = u.failures,
           locked_until = u.locked_until,
           rate_window_start = u.rate_window_start,
           rate_window_attempts = u.rate_window_attempts,
           last_success = u.last_success,
           delivered_hash = u.delivered_hash,
           delivered_expires = u.delivered_expires,
           deliveries = u.deliveries
     WHERE t.name = u.name
$$;

-- Argument checks shared by the enrolling functions.
CREATE OR REPLACE FUNCTION twofactor._check_device(
    p_user text, p_label text, p_secret bytea, p_algorithm text, p_digits int, p_period int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    IF p_user IS NULL OR p_user !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$' THEN
        PERFORM twofactor._bad('bad user name');
    END IF;
    IF p_label IS NULL OR p_label !~ '^[A-Za-z0-9_.-]{1,32}$' THEN
        PERFORM twofactor._bad('bad device label (1 to 32 of A-Z a-z 0-9 _ . -)');
    END IF;
    IF p_secret IS NULL OR octet_length(p_secret) NOT BETWEEN 10 AND 64 THEN
        PERFORM twofactor._bad('the secret must be 10 to 64 bytes');
    END IF;
    IF p_algorithm IS NULL OR p_algorithm NOT IN ('SHA1', 'SHA256', 'SHA512') THEN
        PERFORM twofactor._bad(format('unknown algorithm %L (SHA1, SHA256 or SHA512)', p_algorithm));
    END IF;
    IF p_digits IS NULL OR p_digits NOT BETWEEN 6 AND 8 THEN
        PERFORM twofactor._bad('digits not in 6..8');
    END IF;
    IF p_period IS NULL OR p_period NOT BETWEEN 10 AND 300 THEN
        PERFORM twofactor._bad('period not in 10..300');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION twofactor._check_backup(
    p_digits int, p_salt bytea, p_m int, p_t int, p_p int, p_hashes bytea[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    IF p_digits IS NULL OR p_digits NOT IN (8, 16) THEN
        PERFORM twofactor._bad('backup digits must be 8 or 16');
    END IF;
    IF p_salt IS NULL OR octet_length(p_salt) <> 16 THEN
        PERFORM twofactor._bad('the backup salt must be 16 bytes');
    END IF;
    IF p_m IS NULL OR p_t IS NULL OR p_p IS NULL OR p_t NOT BETWEEN 1 AND 16 OR p_p < 1
       OR p_m NOT BETWEEN 8 * p_p AND 262144 THEN
        PERFORM twofactor._bad('unsupported argon2id cost');
    END IF;
    IF p_hashes IS NULL OR cardinality(p_hashes) NOT BETWEEN 1 AND 100
       OR EXISTS (SELECT 1 FROM unnest(p_hashes) h WHERE h IS NULL OR octet_length(h) <> 32) THEN
        PERFORM twofactor._bad('1 to 100 backup hashes of 32 bytes');
    END IF;
END
$$;

-- Stores a backup set (replacing any previous one; its used codes die
-- with it, as `decide` keeps only used hashes of the current set).
CREATE OR REPLACE FUNCTION twofactor._put_backup(
    p_user text, p_now bigint, p_digits int, p_salt bytea, p_m int, p_t int, p_p int,
    p_hashes bytea[])
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    UPDATE twofactor.users
       SET backup_created = p_now, backup_digits = p_digits, backup_salt = p_salt,
           backup_m_cost = p_m, backup_t_cost = p_t, backup_p_cost = p_p
     WHERE name = p_user;
    DELETE FROM twofactor.backup_codes WHERE user_name = p_user;
    INSERT INTO twofactor.backup_codes (user_name, hash)
        SELECT DISTINCT p_user, h FROM unnest(p_hashes) AS h;
$$;

------------------------------------------------------------------------
-- Host functions
------------------------------------------------------------------------

-- The cheap look before the prompt: changes nothing, takes no lock.
CREATE OR REPLACE FUNCTION twofactor.begin_login_at(p_user text, p_rhost text, p_now bigint)
RETURNS TABLE (enrolled boolean, generation bigint, grace boolean, refusal text,
               refusal_until bigint, deliver_to text, backup_digits int, backup_salt bytea,
               backup_m_cost int, backup_t_cost int, backup_p_cost int,
               enroll_at_login boolean, totp_algorithm text, totp_digits int,
               totp_period int, backup_codes int, now bigint, delivered_pending boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    pol twofactor.policy%ROWTYPE;
    u twofactor.users%ROWTYPE;
    r record;
BEGIN
    SELECT * INTO STRICT pol FROM twofactor.policy;
    now := coalesce(p_now, twofactor._clock());
    enroll_at_login := pol.enroll_at_login;
    totp_algorithm := pol.totp_algorithm;
    totp_digits := pol.totp_digits;
    totp_period := pol.totp_period;
    backup_codes := pol.backup_codes;
    SELECT * INTO u FROM twofactor.users x WHERE x.name = p_user;
    enrolled := FOUND;
    IF enrolled THEN
        generation := u.generation;
        deliver_to := u.deliver_to;
        backup_digits := u.backup_digits;
        backup_salt := u.backup_salt;
        backup_m_cost := u.backup_m_cost;
        backup_t_cost := u.backup_t_cost;
        backup_p_cost := u.backup_p_cost;
        -- A code sent by message waits to be typed: only then must the host
        -- hash a TOTP-length answer (argon2) to compare it.
        delivered_pending := u.delivered_hash IS NOT NULL AND now < u.delivered_expires;
        SELECT * INTO r FROM twofactor._refusal(u.rate_window_start, u.rate_window_attempts,
                                                u.locked_until, now, pol.max_attempts,
                                                pol.per_seconds);
        refusal := r.refusal;
        refusal_until := r.until;
        -- policy::in_grace
        grace := pol.grace_seconds > 0
             AND NOT (u.locked_until IS NOT NULL AND now < u.locked_until)
             AND EXISTS (SELECT 1 FROM twofactor.grace g
                          WHERE g.user_name = p_user AND g.host = p_rhost
                            AND g.at <= now AND now - g.at < pol.grace_seconds);
    ELSE
        grace := false;
        delivered_pending := false;
    END IF;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.begin_login(p_user text, p_rhost text)
RETURNS TABLE (enrolled boolean, generation bigint, grace boolean, refusal text,
               refusal_until bigint, deliver_to text, backup_digits int, backup_salt bytea,
               backup_m_cost int, backup_t_cost int, backup_p_cost int,
               enroll_at_login boolean, totp_algorithm text, totp_digits int,
               totp_period int, backup_codes int, now bigint, delivered_pending boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$ SELECT * FROM twofactor.begin_login_at(p_user, p_rhost, NULL) $$;

-- One attempt: policy::decide under the user's row lock. p_code: the typed
-- digits when they can be a TOTP code (anything but 6 to 8 ASCII digits is
-- taken as no code); p_hash: the argon2 hash of the answer with the user's
-- backup salt, when it can be a backup or delivered code; p_hash_deferred:
-- the host skipped hashing because begin_login showed a refusal.
CREATE OR REPLACE FUNCTION twofactor.attempt_at(
    p_user text, p_generation bigint, p_code text, p_hash bytea, p_hash_deferred boolean,
    p_drift_device text, p_drift_step bigint, p_rhost text, p_now bigint)
RETURNS TABLE (verdict text, device text, step bigint, drift_offset bigint, off_by bigint,
               period int, remaining int, until bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    pol twofactor.policy%ROWTYPE;
    u twofactor.users%ROWTYPE;
    d twofactor.devices%ROWTYPE;
    m record;
    r record;
    v_now bigint;
    v_code text;
    v_failure text;   -- wrong_code, replayed, malformed, drift_not_confirmed, drift_suspected
    v_success text;   -- totp, drift, delivered, backup
    v_ours bigint;
    v_center bigint;
BEGIN
    PERFORM twofactor._require_sync_standby();
    IF p_user IS NULL THEN
        PERFORM twofactor._bad('no user');
    END IF;
    IF p_hash IS NOT NULL AND octet_length(p_hash) <> 32 THEN
        PERFORM twofactor._bad('the hash must be 32 bytes');
    END IF;
    IF p_now < 0 THEN
        PERFORM twofactor._bad('negative time');
    END IF;
    SELECT * INTO u FROM twofactor.users x WHERE x.name = p_user FOR UPDATE;
    IF NOT FOUND THEN
        verdict := 'not_enrolled';
        RETURN NEXT;
        RETURN;
    END IF;
    -- The clock is read only now that the row is ours.
    v_now := coalesce(p_now, twofactor._clock());
    IF p_generation IS DISTINCT FROM u.generation THEN
        verdict := 'record_changed';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO STRICT pol FROM twofactor.policy;

    IF p_hash_deferred AND p_hash IS NULL THEN
        SELECT * INTO r FROM twofactor._refusal(u.rate_window_start, u.rate_window_attempts,
                                                u.locked_until, v_now, pol.max_attempts,
                                                pol.per_seconds);
        IF r.refusal IS NULL THEN
            -- The lock ended (or an admin unlocked) since the cheap look:
            -- decide only once the answer is hashed. Nothing written.
            verdict := 'retry_with_hash';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- Rate limit: a fixed window; every attempt counts, whatever its outcome.
    IF v_now >= u.rate_window_start + pol.per_seconds OR v_now < u.rate_window_start THEN
        u.rate_window_start := v_now;
        u.rate_window_attempts := 0;
    END IF;
    IF u.rate_window_attempts >= pol.max_attempts THEN
        PERFORM twofactor._store(u);
        verdict := 'rate_limited';
        until := u.rate_window_start + pol.per_seconds;
        RETURN NEXT;
        RETURN;
    END IF;
    u.rate_window_attempts := u.rate_window_attempts + 1;

    -- Lockout: refuses even a right code while it lasts; once over, the
    -- failures start again from zero.
    IF u.locked_until IS NOT NULL THEN
        IF v_now < u.locked_until THEN
            PERFORM twofactor._store(u);
            verdict := 'locked_out';
            until := u.locked_until;
            RETURN NEXT;
            RETURN;
        END IF;
        u.locked_until := NULL;
        u.failures := 0;
    END IF;

    v_code := CASE WHEN p_code ~ '^[0-9]{6,8}$' THEN p_code END;

    IF p_drift_device IS NOT NULL THEN
        -- The confirmation must be exactly the pending check's step + 1 of
        -- that device, and fresh.
        SELECT * INTO d FROM twofactor.devices x
         WHERE x.user_name = p_user AND x.label = p_drift_device;
        IF FOUND AND d.drift_pending_step IS NOT NULL AND d.drift_pending_step = p_drift_step THEN
            SELECT * INTO m FROM twofactor._match_steps(
                d.secret, d.algorithm, d.digits, d.period, v_code,
                d.drift_pending_step + 1, d.drift_pending_step + 1, d.last_accepted_step);
            IF m.fresh IS NOT NULL THEN
                v_success := 'drift';
                device := d.label;
                step := m.fresh;
                drift_offset := d.drift_pending_offset;
                period := d.period;
            END IF;
        END IF;
        IF v_success IS NULL THEN
            v_failure := 'drift_not_confirmed';
        END IF;
    ELSE
        v_failure := CASE WHEN v_code IS NOT NULL OR p_hash IS NOT NULL
                          THEN 'wrong_code' ELSE 'malformed' END;
        -- Every device whose digit count fits, with its learned offset;
        -- replay protection is per device.
        IF v_code IS NOT NULL THEN
            FOR d IN SELECT * FROM twofactor.devices x WHERE x.user_name = p_user
                      ORDER BY x.created, x.label COLLATE "C" LOOP
                CONTINUE WHEN length(v_code) <> d.digits;
                v_center := greatest(v_now / d.period + d.drift_steps, 0);
                SELECT * INTO m FROM twofactor._match_steps(
                    d.secret, d.algorithm, d.digits, d.period, v_code,
                    greatest(v_center - pol."window", 0), v_center + pol."window",
                    d.last_accepted_step);
                IF m.fresh IS NOT NULL THEN
                    v_success := 'totp';
                    device := d.label;
                    step := m.fresh;
                    period := d.period;
                    EXIT;
                END IF;
                IF m.replayed IS NOT NULL THEN
                    v_failure := 'replayed';
                END IF;
            END LOOP;
        END IF;
        -- A delivered code (unexpired), then an unused backup code.
        IF v_success IS NULL AND p_hash IS NOT NULL THEN
            IF u.delivered_hash = p_hash AND v_now < u.delivered_expires THEN
                v_success := 'delivered';
            ELSIF EXISTS (SELECT 1 FROM twofactor.backup_codes b
                           WHERE b.user_name = p_user AND b.hash = p_hash
                             AND b.used_at IS NULL) THEN
                v_success := 'backup';
            END IF;
        END IF;
        -- A wrong code may be a device whose clock is off: a fresh match
        -- outside the window but within max_drift_steps.
        IF v_success IS NULL AND v_code IS NOT NULL AND v_failure = 'wrong_code'
           AND pol.max_drift_steps > pol."window" THEN
            FOR d IN SELECT * FROM twofactor.devices x WHERE x.user_name = p_user
                      ORDER BY x.created, x.label COLLATE "C" LOOP
                CONTINUE WHEN length(v_code) <> d.digits;
                v_ours := v_now / d.period;
                v_center := greatest(v_ours + d.drift_steps, 0);
                SELECT * INTO m FROM twofactor._match_steps(
                    d.secret, d.algorithm, d.digits, d.period, v_code,
                    greatest(v_center - pol.max_drift_steps, 0), v_center + pol.max_drift_steps,
                    d.last_accepted_step);
                IF m.fresh IS NOT NULL THEN
                    v_failure := 'drift_suspected';
                    device := d.label;
                    step := m.fresh;
                    drift_offset := m.fresh - v_ours;
                    off_by := abs(m.fresh - v_center);
                    period := d.period;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
    END IF;

    -- A pending drift check lives for one decided answer only.
    UPDATE twofactor.devices x SET drift_pending_step = NULL, drift_pending_offset = NULL
     WHERE x.user_name = p_user AND x.drift_pending_step IS NOT NULL;

    IF v_success IS NULL THEN
        IF v_failure = 'drift_suspected' THEN
            -- No answer is free: the matched step is spent for the device.
            UPDATE twofactor.devices x
               SET last_accepted_step = greatest(coalesce(x.last_accepted_step, step), step)
             WHERE x.user_name = p_user AND x.label = device;
        END IF;
        u.failures := u.failures + 1;
        IF u.failures >= pol.max_failures THEN
            u.locked_until := v_now + pol.lock_seconds;
            until := u.locked_until;
        END IF;
        IF v_failure = 'drift_suspected' AND until IS NOT NULL THEN
            verdict := 'drift_suspected_locked';
            device := NULL;
            step := NULL;
            drift_offset := NULL;
            off_by := NULL;
            period := NULL;
        ELSIF v_failure = 'drift_suspected' THEN
            verdict := 'drift_suspected';
            UPDATE twofactor.devices x
               SET drift_pending_step = step, drift_pending_offset = drift_offset
             WHERE x.user_name = p_user AND x.label = device;
        ELSE
            verdict := v_failure;
        END IF;
        PERFORM twofactor._store(u);
        RETURN NEXT;
        RETURN;
    END IF;

    IF v_success = 'totp' THEN
        UPDATE twofactor.devices x SET last_accepted_step = step
         WHERE x.user_name = p_user AND x.label = device;
        verdict := 'allow_totp';
    ELSIF v_success = 'drift' THEN
        UPDATE twofactor.devices x SET last_accepted_step = step, drift_steps = drift_offset
         WHERE x.user_name = p_user AND x.label = device;
        verdict := 'allow_drift';
    ELSIF v_success = 'backup' THEN
        UPDATE twofactor.backup_codes b SET used_at = v_now
         WHERE b.user_name = p_user AND b.hash = p_hash AND b.used_at IS NULL;
        SELECT count(*)::int INTO remaining FROM twofactor.backup_codes b
         WHERE b.user_name = p_user AND b.used_at IS NULL;
        verdict := 'allow_backup';
    ELSE
        u.delivered_hash := NULL;
        u.delivered_expires := NULL;
        verdict := 'allow_delivered';
    END IF;

    -- Every success resets the failures and may open a grace period.
    u.failures := 0;
    u.last_success := v_now;
    IF pol.grace_seconds > 0 AND twofactor._valid_host(p_rhost) THEN
        DELETE FROM twofactor.grace g
         WHERE g.user_name = p_user AND g.at <= v_now AND v_now - g.at >= pol.grace_seconds;
        -- records::MAX_GRACE_HOSTS = 64: the oldest goes first.
        IF (SELECT count(*) FROM twofactor.grace g WHERE g.user_name = p_user) >= 64 THEN
            DELETE FROM twofactor.grace g
             WHERE g.user_name = p_user
               AND g.host = (SELECT o.host FROM twofactor.grace o WHERE o.user_name = p_user
                              ORDER BY o.at, o.host COLLATE "C" LIMIT 1);
        END IF;
        INSERT INTO twofactor.grace AS g (user_name, host, at) VALUES (p_user, p_rhost, v_now)
            ON CONFLICT (user_name, host) DO UPDATE SET at = excluded.at;
    END IF;
    PERFORM twofactor._store(u);
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.attempt(
    p_user text, p_generation bigint, p_code text, p_hash bytea, p_hash_deferred boolean,
    p_drift_device text, p_drift_step bigint, p_rhost text)
RETURNS TABLE (verdict text, device text, step bigint, drift_offset bigint, off_by bigint,
               period int, remaining int, until bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    SELECT * FROM twofactor.attempt_at(p_user, p_generation, p_code, p_hash, p_hash_deferred,
                                       p_drift_device, p_drift_step, p_rhost, NULL)
$$;

-- A code by message (login/by_message.rs): the refusal, then the hourly
-- limit, then the hash and expiry are stored. The host sends the code only
-- after `stored`.
CREATE OR REPLACE FUNCTION twofactor.record_delivery_at(
    p_user text, p_generation bigint, p_hash bytea, p_now bigint)
RETURNS TABLE (verdict text, expires bigint, until bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    pol twofactor.policy%ROWTYPE;
    u twofactor.users%ROWTYPE;
    r record;
    v_now bigint;
BEGIN
    PERFORM twofactor._require_sync_standby();
    IF p_hash IS NULL OR octet_length(p_hash) <> 32 THEN
        PERFORM twofactor._bad('the hash must be 32 bytes');
    END IF;
    SELECT * INTO u FROM twofactor.users x WHERE x.name = p_user FOR UPDATE;
    IF NOT FOUND THEN
        verdict := 'not_enrolled';
        RETURN NEXT;
        RETURN;
    END IF;
    v_now := coalesce(p_now, twofactor._clock());
    IF p_generation IS DISTINCT FROM u.generation THEN
        verdict := 'record_changed';
        RETURN NEXT;
        RETURN;
    END IF;
    IF u.deliver_to IS NULL THEN
        verdict := 'no_target';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO STRICT pol FROM twofactor.policy;
    SELECT * INTO r FROM twofactor._refusal(u.rate_window_start, u.rate_window_attempts,
                                            u.locked_until, v_now, pol.max_attempts,
                                            pol.per_seconds);
    IF r.refusal IS NOT NULL THEN
        verdict := r.refusal;
        until := r.until;
        RETURN NEXT;
        RETURN;
    END IF;
    -- policy::count_delivery: sends an hour old or more, or in the future,
    -- are dropped first (and stay dropped, as the file store writes them).
    u.deliveries := ARRAY(SELECT t FROM unnest(u.deliveries) WITH ORDINALITY AS a(t, i)
                           WHERE t <= v_now AND v_now - t < 3600 ORDER BY i);
    IF cardinality(u.deliveries) >= pol.delivery_max_per_hour THEN
        PERFORM twofactor._store(u);
        verdict := 'hour_full';
        until := (SELECT min(t) FROM unnest(u.deliveries) t) + 3600;
        RETURN NEXT;
        RETURN;
    END IF;
    u.deliveries := u.deliveries || v_now;
    u.delivered_hash := p_hash;
    u.delivered_expires := v_now + pol.delivery_valid_seconds;
    PERFORM twofactor._store(u);
    verdict := 'stored';
    expires := u.delivered_expires;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.record_delivery(p_user text, p_generation bigint, p_hash bytea)
RETURNS TABLE (verdict text, expires bigint, until bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$ SELECT * FROM twofactor.record_delivery_at(p_user, p_generation, p_hash, NULL) $$;

-- Enrollment at first login (login/enroll.rs): only for a user with no
-- enrollment, only if the policy allows it, only with the policy's TOTP
-- parameters and backup-code count, and only once a code from the new
-- secret matched within the window at the database's time (that step is
-- stored as used).
CREATE OR REPLACE FUNCTION twofactor.enroll_first_at(
    p_user text, p_label text, p_secret bytea, p_algorithm text, p_digits int, p_period int,
    p_code text, p_backup_digits int, p_backup_salt bytea, p_m_cost int, p_t_cost int,
    p_p_cost int, p_backup_hashes bytea[], p_now bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
DECLARE
    pol twofactor.policy%ROWTYPE;
    m record;
    v_now bigint;
    v_center bigint;
BEGIN
    PERFORM twofactor._require_sync_standby();
    PERFORM twofactor._check_device(p_user, p_label, p_secret, p_algorithm, p_digits, p_period);
    PERFORM twofactor._check_backup(p_backup_digits, p_backup_salt, p_m_cost, p_t_cost,
                                    p_p_cost, p_backup_hashes);
    IF octet_length(p_secret) < 16 THEN
        PERFORM twofactor._bad('a new secret must be at least 16 bytes');
    END IF;
    SELECT * INTO STRICT pol FROM twofactor.policy;
    IF NOT pol.enroll_at_login THEN
        RETURN 'not_allowed';
    END IF;
    IF (p_algorithm, p_digits, p_period) IS DISTINCT FROM
       (pol.totp_algorithm, pol.totp_digits, pol.totp_period)
       OR cardinality(p_backup_hashes) <> pol.backup_codes THEN
        PERFORM twofactor._bad('the enrollment does not follow the fleet policy (begin_login gives it)');
    END IF;
    IF EXISTS (SELECT 1 FROM twofactor.users x WHERE x.name = p_user) THEN
        RETURN 'exists';
    END IF;
    v_now := coalesce(p_now, twofactor._clock());
    v_center := v_now / p_period;
    SELECT * INTO m FROM twofactor._match_steps(
        p_secret, p_algorithm, p_digits, p_period,
        CASE WHEN p_code ~ '^[0-9]{6,8}$' THEN p_code END,
        greatest(v_center - pol."window", 0), v_center + pol."window", NULL);
    IF m.fresh IS NULL THEN
        RETURN 'wrong_code';
    END IF;
    -- A parallel enrollment of the same user may have won: keep theirs.
    INSERT INTO twofactor.users (name, generation, created, backup_created, backup_digits,
                                 backup_salt, backup_m_cost, backup_t_cost, backup_p_cost)
    VALUES (p_user, nextval('twofactor.generation_seq'), v_now, v_now, p_backup_digits,
            p_backup_salt, p_m_cost, p_t_cost, p_p_cost)
    ON CONFLICT (name) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'exists';
    END IF;
    INSERT INTO twofactor.devices (user_name, label, secret, algorithm, digits, period, created,
                                   last_accepted_step)
    VALUES (p_user, p_label, p_secret, p_algorithm, p_digits, p_period, v_now, m.fresh);
    PERFORM twofactor._put_backup(p_user, v_now, p_backup_digits, p_backup_salt, p_m_cost,
                                  p_t_cost, p_p_cost, p_backup_hashes);
    RETURN 'enrolled';
END
$$;

CREATE OR REPLACE FUNCTION twofactor.enroll_first(
    p_user text, p_label text, p_secret bytea, p_algorithm text, p_digits int, p_period int,
    p_code text, p_backup_digits int, p_backup_salt bytea, p_m_cost int, p_t_cost int,
    p_p_cost int, p_backup_hashes bytea[])
RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    SELECT twofactor.enroll_first_at(p_user, p_label, p_secret, p_algorithm, p_digits, p_period,
                                     p_code, p_backup_digits, p_backup_salt, p_m_cost, p_t_cost,
                                     p_p_cost, p_backup_hashes, NULL)
$$;

-- For `twofactor fleet status` and `twofactor check` (hosts and admins).
CREATE OR REPLACE FUNCTION twofactor.fleet_status()
RETURNS TABLE (schema_version int, synchronous_standby_names text, synchronous_commit text,
               sync_standbys int, host_can_read_seeds boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    SELECT (SELECT max(v.version) FROM twofactor.schema_version v),
           current_setting('synchronous_standby_names'),
           current_setting('synchronous_commit'),
           (SELECT count(*)::int FROM pg_stat_replication s
             WHERE s.sync_state IN ('sync', 'quorum')),
           has_column_privilege('twofactor_host', 'twofactor.devices', 'secret', 'SELECT')
$$;

------------------------------------------------------------------------
-- Admin functions: write seeds, never return them. Each bumps the
-- user's generation when it changes the enrollment.
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION twofactor.admin_enroll(
    p_user text, p_label text, p_secret bytea, p_algorithm text, p_digits int, p_period int,
    p_mode text, p_deliver_to text, p_backup_digits int, p_backup_salt bytea, p_m_cost int,
    p_t_cost int, p_p_cost int, p_backup_hashes bytea[])
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
DECLARE
    v_now bigint := twofactor._clock();
    v_exists boolean;
BEGIN
    PERFORM twofactor._check_device(p_user, p_label, p_secret, p_algorithm, p_digits, p_period);
    IF p_mode IS NULL OR p_mode NOT IN ('new', 'force', 'add') THEN
        PERFORM twofactor._bad('mode must be new, force or add');
    END IF;
    PERFORM 1 FROM twofactor.users x WHERE x.name = p_user FOR UPDATE;
    v_exists := FOUND;
    IF p_mode = 'add' THEN
        -- `add` ignores the backup and delivery arguments.
        IF NOT v_exists THEN
            RETURN 'not_enrolled';
        END IF;
        IF EXISTS (SELECT 1 FROM twofactor.devices x
                    WHERE x.user_name = p_user AND x.label = p_label) THEN
            RETURN 'label_exists';
        END IF;
        IF (SELECT count(*) FROM twofactor.devices x WHERE x.user_name = p_user) >= 16 THEN
            PERFORM twofactor._bad('a user has at most 16 devices');
        END IF;
        INSERT INTO twofactor.devices (user_name, label, secret, algorithm, digits, period, created)
        VALUES (p_user, p_label, p_secret, p_algorithm, p_digits, p_period, v_now);
        UPDATE twofactor.users x SET generation = nextval('twofactor.generation_seq')
         WHERE x.name = p_user;
        RETURN 'enrolled';
    END IF;
    PERFORM twofactor._check_backup(p_backup_digits, p_backup_salt, p_m_cost, p_t_cost,
                                    p_p_cost, p_backup_hashes);
    IF p_deliver_to IS NOT NULL AND (length(p_deliver_to) NOT BETWEEN 1 AND 128
                                     OR octet_length(p_deliver_to) > 128
                                     OR p_deliver_to ~ '[[:cntrl:]]') THEN
        PERFORM twofactor._bad('deliver_to: empty, too long or control characters');
    END IF;
    IF v_exists AND p_mode = 'new' THEN
        RETURN 'exists';
    END IF;
    -- force: devices, backup set and all state go.
    DELETE FROM twofactor.users x WHERE x.name = p_user;
    INSERT INTO twofactor.users (name, generation, created, deliver_to, backup_created,
                                 backup_digits, backup_salt, backup_m_cost, backup_t_cost,
                                 backup_p_cost)
    VALUES (p_user, nextval('twofactor.generation_seq'), v_now, p_deliver_to, v_now,
            p_backup_digits, p_backup_salt, p_m_cost, p_t_cost, p_p_cost);
    INSERT INTO twofactor.devices (user_name, label, secret, algorithm, digits, period, created)
    VALUES (p_user, p_label, p_secret, p_algorithm, p_digits, p_period, v_now);
    PERFORM twofactor._put_backup(p_user, v_now, p_backup_digits, p_backup_salt, p_m_cost,
                                  p_t_cost, p_p_cost, p_backup_hashes);
    RETURN 'enrolled';
END
$$;

CREATE OR REPLACE FUNCTION twofactor.admin_users()
RETURNS TABLE (user_name text, generation bigint, created bigint, devices text[],
               backup_left int, failures int, locked_until bigint, last_success bigint,
               deliver_to text, now bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    WITH c AS (SELECT twofactor._clock() AS now)
    SELECT u.name, u.generation, u.created,
           ARRAY(SELECT d.label FROM twofactor.devices d WHERE d.user_name = u.name
                  ORDER BY d.created, d.label COLLATE "C"),
           (SELECT count(*)::int FROM twofactor.backup_codes b
             WHERE b.user_name = u.name AND b.used_at IS NULL),
           -- policy::failures_at and policy::lock_at
           CASE WHEN u.locked_until IS NOT NULL AND u.locked_until <= c.now THEN 0
                ELSE u.failures END,
           CASE WHEN u.locked_until > c.now THEN u.locked_until END,
           u.last_success, u.deliver_to, c.now
      FROM twofactor.users u, c
     ORDER BY u.name COLLATE "C"
$$;

CREATE OR REPLACE FUNCTION twofactor.admin_devices(p_user text)
RETURNS TABLE (label text, algorithm text, digits int, period int, created bigint,
               last_accepted_step bigint, drift_steps bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    SELECT d.label, d.algorithm, d.digits, d.period, d.created, d.last_accepted_step,
           d.drift_steps
      FROM twofactor.devices d
     WHERE d.user_name = p_user
     ORDER BY d.created, d.label COLLATE "C"
$$;

CREATE OR REPLACE FUNCTION twofactor.admin_set_backup(
    p_user text, p_backup_digits int, p_salt bytea, p_m int, p_t int, p_p int,
    p_hashes bytea[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    PERFORM twofactor._check_backup(p_backup_digits, p_salt, p_m, p_t, p_p, p_hashes);
    PERFORM 1 FROM twofactor.users x WHERE x.name = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM twofactor._put_backup(p_user, twofactor._clock(), p_backup_digits, p_salt, p_m, p_t,
                                  p_p, p_hashes);
    UPDATE twofactor.users x SET generation = nextval('twofactor.generation_seq')
     WHERE x.name = p_user;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.admin_remove_device(p_user text, p_label text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM twofactor.users x WHERE x.name = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_enrolled';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM twofactor.devices x
                    WHERE x.user_name = p_user AND x.label = p_label) THEN
        RETURN 'no_such_device';
    END IF;
    IF (SELECT count(*) FROM twofactor.devices x WHERE x.user_name = p_user) <= 1 THEN
        RETURN 'last_device';
    END IF;
    DELETE FROM twofactor.devices x WHERE x.user_name = p_user AND x.label = p_label;
    UPDATE twofactor.users x SET generation = nextval('twofactor.generation_seq')
     WHERE x.name = p_user;
    RETURN 'removed';
END
$$;

-- policy::unlock: failures, lock and rate window. Used steps, used backup
-- codes, learned offsets and grace stay (clearing them would let a code be
-- replayed). Not an enrollment change: the generation stays.
CREATE OR REPLACE FUNCTION twofactor.admin_unlock(p_user text)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    WITH changed AS (
        UPDATE twofactor.users x
           SET failures = 0, locked_until = NULL, rate_window_start = 0, rate_window_attempts = 0
         WHERE x.name = p_user
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM changed)
$$;

CREATE OR REPLACE FUNCTION twofactor.admin_disable(p_user text)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
    WITH gone AS (DELETE FROM twofactor.users x WHERE x.name = p_user RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- The target is part of the enrollment (the file store keeps it in the
-- secret record): changing it bumps the generation.
CREATE OR REPLACE FUNCTION twofactor.admin_set_delivery(p_user text, p_target text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    IF p_target IS NOT NULL AND (length(p_target) NOT BETWEEN 1 AND 128
                                 OR octet_length(p_target) > 128
                                 OR p_target ~ '[[:cntrl:]]') THEN
        PERFORM twofactor._bad('deliver_to: empty, too long or control characters');
    END IF;
    UPDATE twofactor.users x
       SET deliver_to = p_target, generation = nextval('twofactor.generation_seq')
     WHERE x.name = p_user;
    RETURN FOUND;
END
$$;

-- For `fleet push`: state only moves the safe way. Failures, lock and last
-- success never go down, steps only move forward, used codes stay used;
-- learned offsets are taken as given.
CREATE OR REPLACE FUNCTION twofactor.admin_import_state(
    p_user text, p_failures int, p_locked_until bigint, p_last_success bigint,
    p_used_backup bytea[], p_labels text[], p_steps bigint[], p_drifts bigint[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
DECLARE
    v_now bigint := twofactor._clock();
    i int;
BEGIN
    IF coalesce(cardinality(p_labels), 0) <> coalesce(cardinality(p_steps), 0)
       OR coalesce(cardinality(p_labels), 0) <> coalesce(cardinality(p_drifts), 0) THEN
        PERFORM twofactor._bad('labels, steps and drifts must have the same length');
    END IF;
    IF p_failures < 0 THEN
        PERFORM twofactor._bad('negative failures');
    END IF;
    PERFORM 1 FROM twofactor.users x WHERE x.name = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE twofactor.users x
       SET failures = greatest(x.failures, coalesce(p_failures, 0)),
           locked_until = greatest(x.locked_until, p_locked_until),
           last_success = greatest(x.last_success, p_last_success)
     WHERE x.name = p_user;
    UPDATE twofactor.backup_codes b SET used_at = coalesce(b.used_at, v_now)
     WHERE b.user_name = p_user AND b.hash = ANY (coalesce(p_used_backup, '{}'));
    FOR i IN 1 .. coalesce(cardinality(p_labels), 0) LOOP
        UPDATE twofactor.devices x
           SET last_accepted_step = greatest(x.last_accepted_step, p_steps[i]),
               drift_steps = coalesce(p_drifts[i], x.drift_steps)
         WHERE x.user_name = p_user AND x.label = p_labels[i];
        IF NOT FOUND THEN
            PERFORM twofactor._bad(format('no device %L', p_labels[i]));
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- Keys as the policy table's columns; an unknown key or a null is refused,
-- and the table's CHECKs refuse a value out of range.
CREATE OR REPLACE FUNCTION twofactor.admin_set_policy(p jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'object' THEN
        PERFORM twofactor._bad('the policy must be a JSON object');
    END IF;
    FOR k IN SELECT jsonb_object_keys(p) LOOP
        IF k NOT IN ('window', 'max_failures', 'lock_seconds', 'max_attempts', 'per_seconds',
                     'max_drift_steps', 'grace_seconds', 'backup_codes',
                     'delivery_valid_seconds', 'delivery_max_per_hour', 'enroll_at_login',
                     'totp_algorithm', 'totp_digits', 'totp_period',
                     'require_sync_standby') THEN
            PERFORM twofactor._bad(format('unknown policy key %L', k));
        END IF;
        IF jsonb_typeof(p -> k) = 'null' THEN
            PERFORM twofactor._bad(format('policy key %L is null', k));
        END IF;
    END LOOP;
    UPDATE twofactor.policy x SET
        "window" = coalesce((p ->> 'window')::int, x."window"),
        max_failures = coalesce((p ->> 'max_failures')::int, x.max_failures),
        lock_seconds = coalesce((p ->> 'lock_seconds')::bigint, x.lock_seconds),
        max_attempts = coalesce((p ->> 'max_attempts')::int, x.max_attempts),
        per_seconds = coalesce((p ->> 'per_seconds')::bigint, x.per_seconds),
        max_drift_steps = coalesce((p ->> 'max_drift_steps')::int, x.max_drift_steps),
        grace_seconds = coalesce((p ->> 'grace_seconds')::bigint, x.grace_seconds),
        backup_codes = coalesce((p ->> 'backup_codes')::int, x.backup_codes),
        delivery_valid_seconds =
            coalesce((p ->> 'delivery_valid_seconds')::bigint, x.delivery_valid_seconds),
        delivery_max_per_hour =
            coalesce((p ->> 'delivery_max_per_hour')::int, x.delivery_max_per_hour),
        enroll_at_login = coalesce((p ->> 'enroll_at_login')::boolean, x.enroll_at_login),
        totp_algorithm = coalesce(p ->> 'totp_algorithm', x.totp_algorithm),
        totp_digits = coalesce((p ->> 'totp_digits')::int, x.totp_digits),
        totp_period = coalesce((p ->> 'totp_period')::int, x.totp_period),
        require_sync_standby =
            coalesce((p ->> 'require_sync_standby')::boolean, x.require_sync_standby);
END
$$;

------------------------------------------------------------------------
-- Ownership and rights
------------------------------------------------------------------------

-- Every table, sequence and function of ours (not pgcrypto's) belongs to
-- twofactor_owner, and PUBLIC may execute none of our functions.
DO $own$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS obj, c.relkind
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'twofactor'::regnamespace AND c.relkind IN ('r', 'S')
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                                 WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid
                                   AND e.deptype = 'e') LOOP
        EXECUTE pg_catalog.format('ALTER %s %s OWNER TO twofactor_owner',
                                  CASE r.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.obj);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS obj
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'twofactor'::regnamespace
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                                 WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid
                                   AND e.deptype = 'e') LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO twofactor_owner', r.obj);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.obj);
    END LOOP;
END
$own$;

-- Calling a function needs USAGE on its schema; no table rights at all.
GRANT USAGE ON SCHEMA twofactor TO twofactor_host, twofactor_admin;

GRANT EXECUTE ON FUNCTION
    twofactor.begin_login(text, text),
    twofactor.attempt(text, bigint, text, bytea, boolean, text, bigint, text),
    twofactor.record_delivery(text, bigint, bytea),
    twofactor.enroll_first(text, text, bytea, text, int, int, text, int, bytea, int, int, int,
                           bytea[]),
    twofactor.fleet_status()
TO twofactor_host;

GRANT EXECUTE ON FUNCTION
    twofactor.fleet_status(),
    twofactor.admin_enroll(text, text, bytea, text, int, int, text, text, int, bytea, int, int,
                           int, bytea[]),
    twofactor.admin_users(),
    twofactor.admin_devices(text),
    twofactor.admin_set_backup(text, int, bytea, int, int, int, bytea[]),
    twofactor.admin_remove_device(text, text),
    twofactor.admin_unlock(text),
    twofactor.admin_disable(text),
    twofactor.admin_set_delivery(text, text),
    twofactor.admin_import_state(text, int, bigint, bigint, bytea[], text[], bigint[], bigint[]),
    twofactor.admin_set_policy(jsonb)
TO twofactor_admin;

INSERT INTO twofactor.schema_version (version) VALUES (1);
