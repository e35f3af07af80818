-- A connection change now names its user too ('channel:sender:user'): whether a chat account is
-- within its plan's channel limit depends on the user's other connections (the oldest ones are
-- the ones in use), so replicas drop every cached sender of that user, not only the one changed.
CREATE OR REPLACE FUNCTION notify_connection_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('clawdbot_connections', OLD.channel || ':' || OLD.sender_id || ':' || OLD.user_id);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('clawdbot_connections', NEW.channel || ':' || NEW.sender_id || ':' || NEW.user_id);
    IF TG_OP = 'UPDATE' AND (OLD.channel, OLD.sender_id, OLD.user_id)
            IS DISTINCT FROM (NEW.channel, NEW.sender_id, NEW.user_id) THEN
        PERFORM pg_notify('clawdbot_connections', OLD.channel || ':' || OLD.sender_id || ':' || OLD.user_id);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- Connections of a user in the order they were made (which ones a smaller plan keeps in use).
CREATE INDEX user_channel_connections_user_age ON user_channel_connections (user_id, created_at, id);
