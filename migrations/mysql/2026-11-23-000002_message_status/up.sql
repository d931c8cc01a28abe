-- The gateway's message status, as sent by its client (0 for other front-ends), and the type of the
-- conversation at send time (the gateway's MsgId packs it).
ALTER TABLE messages ADD COLUMN status INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN conv_type INTEGER NOT NULL DEFAULT 0;
