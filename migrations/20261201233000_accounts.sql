-- Accounts (issue 11): sign-in, roles and suspension on `users`; rotating refresh tokens;
-- users' own provider keys, sealed; the agent settings each user chose. Nothing here holds a
-- password, token or key in clear.

ALTER TABLE users
    -- Argon2id PHC string; NULL for accounts that sign in only through an identity provider.
    ADD COLUMN password_hash text,
    ADD COLUMN role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    -- Set while an admin has suspended the account.
    ADD COLUMN suspended_at  timestamptz,
    ADD COLUMN updated_at    timestamptz NOT NULL DEFAULT now();
-- E-mails are stored lower-cased; this keeps two spellings of one address from both existing.
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

-- A stable id per chat connection, so the API can name one (`DELETE /channels/connections/{id}`)
-- without exposing the sender id in a URL.
ALTER TABLE user_channel_connections ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE;

-- Refresh tokens, as SHA-256 of the token. One login starts a family; each refresh uses the
-- token up and adds the next. A used token presented again revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id  uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- A user's own provider keys: AES-256-GCM under the master key `master_key_id`, with the user
-- and provider as associated data. `hint` is the masked form shown in lists (sk-...abcd).
CREATE TABLE provider_keys (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider      text NOT NULL CHECK (provider IN ('openai', 'anthropic')),
    master_key_id text NOT NULL,
    nonce         bytea NOT NULL,
    ciphertext    bytea NOT NULL,
    hint          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider)
);
-- Rotation finds the rows still sealed under an old master key.
CREATE INDEX provider_keys_master_key ON provider_keys (master_key_id);

-- What the user chose for their agent; the UserWorkspace spec is built from it.
CREATE TABLE user_settings (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    provider      text NOT NULL DEFAULT 'platform' CHECK (provider IN ('platform', 'openai', 'anthropic')),
    model         text,
    endpoint      text,
    temperature   double precision CHECK (temperature >= 0 AND temperature <= 2),
    max_tokens    integer CHECK (max_tokens > 0),
    session_scope text NOT NULL DEFAULT 'per-peer' CHECK (session_scope IN ('per-peer', 'main')),
    web_search    boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
