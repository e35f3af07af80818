-- The model that served each message (issue 12: usage and its cost per model). The agent's
-- answer names it (the lite agent reports its provider's model); when it names none of its
-- own (OpenClaw answers as "openclaw") the router records the workspace's model. NULL for
-- records from before this column.
ALTER TABLE usage_records ADD COLUMN model text;
