-- The router's tables (issue 5). The accounts and billing work adds its own migrations and
-- builds on `users`; nothing here stores conversation content for longer than it takes to
-- deliver it (the agent owns conversations).

CREATE TABLE users (
    id           uuid PRIMARY KEY,
    email        text UNIQUE,
    display_name text,
    -- free | pro | team; the UserWorkspace carries the plan the operator and router enforce,
    -- this column is the accounts side's record of it.
    plan         text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'team')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Which chat account belongs to which user: (channel, sender id) -> user.
CREATE TABLE user_channel_connections (
    channel    text NOT NULL,
    sender_id  text NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, sender_id)
);
CREATE INDEX user_channel_connections_user ON user_channel_connections (user_id);

-- One-time connection codes, stored as SHA-256 of the code only.
CREATE TABLE connection_codes (
    code_hash   bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    used_by     text
);
CREATE INDEX connection_codes_user ON connection_codes (user_id);

-- Every accepted webhook message, written before the webhook is acknowledged: the durable
-- record that lets any replica finish a message another replica started (crash, hibernated
-- tenant woken later). The unique key is the cross-replica dedupe backstop behind Redis.
CREATE TABLE inbound_messages (
    id            bigserial PRIMARY KEY,
    channel       text NOT NULL,
    external_id   text NOT NULL,
    sender_id     text NOT NULL,
    user_id       uuid REFERENCES users (id) ON DELETE CASCADE,
    -- The message and where to reply; cleared once delivered.
    payload       jsonb,
    -- received: being processed; held: waiting for a hibernated agent; done; failed.
    state         text NOT NULL DEFAULT 'received'
                  CHECK (state IN ('received', 'held', 'done', 'failed')),
    outcome       text,
    attempts      integer NOT NULL DEFAULT 0,
    claimed_until timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    UNIQUE (channel, external_id)
);
CREATE INDEX inbound_messages_pending ON inbound_messages (claimed_until)
    WHERE state IN ('received', 'held');
CREATE INDEX inbound_messages_done ON inbound_messages (done_at) WHERE state IN ('done', 'failed');

-- Usage per routed message: the basis of billing. Tokens as the agent reported them, or an
-- estimate (estimated = true) when it reported none.
CREATE TABLE usage_records (
    id                bigserial PRIMARY KEY,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace         text NOT NULL,
    channel           text NOT NULL,
    messages          integer NOT NULL DEFAULT 1,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    total_tokens      bigint NOT NULL,
    estimated         boolean NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_user_time ON usage_records (user_id, recorded_at);

-- Replicas cache (channel, sender) -> user; a change of a connection tells them all.
CREATE FUNCTION notify_connection_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('clawdbot_connections', OLD.channel || ':' || OLD.sender_id);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('clawdbot_connections', NEW.channel || ':' || NEW.sender_id);
    IF TG_OP = 'UPDATE' AND (OLD.channel, OLD.sender_id) IS DISTINCT FROM (NEW.channel, NEW.sender_id) THEN
        PERFORM pg_notify('clawdbot_connections', OLD.channel || ':' || OLD.sender_id);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER user_channel_connections_notify
    AFTER INSERT OR UPDATE OR DELETE ON user_channel_connections
    FOR EACH ROW EXECUTE FUNCTION notify_connection_change();
