-- API keys: the identity that rate limits and scopes attach to. Only a
-- SHA-256 of the key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    -- The key's public start (such as `ak_3f9a1c2e`): safe to log and to
    -- name the key by when revoking it.
    prefix      text        NOT NULL UNIQUE,
    secret_hash bytea       NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    scopes      text[]      NOT NULL,
    -- A per-key override of the default per-key rate, such as `500/1m;burst=50`.
    rate        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One row whose version every change to api_keys bumps, in the same
-- transaction. Replicas poll it (one index-free read) and reload their key
-- snapshot only when it moved. The row lock serialises key changes, so the
-- version order is the commit order and no change can be missed.
CREATE TABLE api_keys_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint  NOT NULL
);
INSERT INTO api_keys_version (version) VALUES (0);

CREATE FUNCTION api_keys_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE api_keys_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_bump_version();
