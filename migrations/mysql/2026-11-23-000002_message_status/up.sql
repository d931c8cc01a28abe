-- The gateway's message status, as sent by its client (0 for other front-ends).
ALTER TABLE messages ADD COLUMN status INTEGER NOT NULL DEFAULT 0;
