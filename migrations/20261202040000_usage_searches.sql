-- Web searches a message's reply made (reported by the lite agent with its usage; OpenClaw
-- reports none, so its records keep 0).
ALTER TABLE usage_records ADD COLUMN web_searches integer NOT NULL DEFAULT 0;
