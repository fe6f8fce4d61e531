-- pam-twofactor fleet schema, version 2: the functions every login calls,
-- and the helpers they call, in PL/pgSQL instead of SQL.
--
-- Same arguments, results, rights and behaviour as in 001_init.sql. Why:
-- a SQL-language function with a SET clause (our `search_path`) or
-- SECURITY DEFINER is never inlined, and PostgreSQL (before 18) parses and
-- plans its body again at every call; PL/pgSQL keeps each statement's plan
-- for the life of the connection, and the agent keeps its connections. A
-- login runs begin_login and attempt: with these as SQL, parsing and
-- planning `_store`'s UPDATE alone took about as long as the rest of the
-- attempt (bench/README.md, the fleet section).
--
-- CREATE OR REPLACE keeps the owner and the grants of version 1.

CREATE OR REPLACE FUNCTION twofactor._clock() RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RETURN floor(extract(epoch FROM clock_timestamp()))::bigint;
END
$$;

CREATE OR REPLACE FUNCTION twofactor._valid_host(p_host text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RETURN coalesce(p_host ~ '^[A-Za-z0-9.:_%-]{1,255}$'
                    AND octet_length(p_host) = length(p_host), false);
END
$$;

CREATE OR REPLACE FUNCTION twofactor._store(u twofactor.users) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    UPDATE twofactor.users t
       SET failures = u.failures,
           locked_until = u.locked_until,
           rate_window_start = u.rate_window_start,
           rate_window_attempts = u.rate_window_attempts,
           last_success = u.last_success,
           delivered_hash = u.delivered_hash,
           delivered_expires = u.delivered_expires,
           deliveries = u.deliveries
     WHERE t.name = u.name;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.begin_login(p_user text, p_rhost text)
RETURNS TABLE (enrolled boolean, generation bigint, grace boolean, refusal text,
               refusal_until bigint, deliver_to text, backup_digits int, backup_salt bytea,
               backup_m_cost int, backup_t_cost int, backup_p_cost int,
               enroll_at_login boolean, totp_algorithm text, totp_digits int,
               totp_period int, backup_codes int, now bigint, delivered_pending boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM twofactor.begin_login_at(p_user, p_rhost, NULL);
END
$$;

CREATE OR REPLACE FUNCTION twofactor.attempt(
    p_user text, p_generation bigint, p_code text, p_hash bytea, p_hash_deferred boolean,
    p_drift_device text, p_drift_step bigint, p_rhost text)
RETURNS TABLE (verdict text, device text, step bigint, drift_offset bigint, off_by bigint,
               period int, remaining int, until bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM twofactor.attempt_at(p_user, p_generation, p_code, p_hash,
                                                    p_hash_deferred, p_drift_device,
                                                    p_drift_step, p_rhost, NULL);
END
$$;

CREATE OR REPLACE FUNCTION twofactor.record_delivery(p_user text, p_generation bigint, p_hash bytea)
RETURNS TABLE (verdict text, expires bigint, until bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM twofactor.record_delivery_at(p_user, p_generation, p_hash, NULL);
END
$$;

CREATE OR REPLACE FUNCTION twofactor.enroll_first(
    p_user text, p_label text, p_secret bytea, p_algorithm text, p_digits int, p_period int,
    p_code text, p_backup_digits int, p_backup_salt bytea, p_m_cost int, p_t_cost int,
    p_p_cost int, p_backup_hashes bytea[])
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, twofactor, pg_temp
AS $$
BEGIN
    RETURN twofactor.enroll_first_at(p_user, p_label, p_secret, p_algorithm, p_digits, p_period,
                                     p_code, p_backup_digits, p_backup_salt, p_m_cost, p_t_cost,
                                     p_p_cost, p_backup_hashes, NULL);
END
$$;

UPDATE twofactor.schema_version SET version = 2;
