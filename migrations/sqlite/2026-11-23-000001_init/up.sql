-- Users: nickname and avatar shown in group member lists.
CREATE TABLE users (
    app VARCHAR(64) NOT NULL,
    id VARCHAR(64) NOT NULL,
    nickname VARCHAR(255) NOT NULL,
    avatar VARCHAR(1024) NOT NULL,
    updated_us BIGINT NOT NULL,
    PRIMARY KEY (app, id)
);

-- Conversations: groups (kind 0) and direct conversations between two users (kind 1). Their last
-- message is read from `messages` (index messages_by_conv), not kept here, so sending costs no update.
CREATE TABLE conversations (
    app VARCHAR(64) NOT NULL,
    id VARCHAR(160) NOT NULL,
    kind INTEGER NOT NULL,
    conv_type INTEGER NOT NULL DEFAULT 0,
    creator VARCHAR(64) NOT NULL,
    name VARCHAR(255) NOT NULL,
    notice TEXT NOT NULL,
    snap VARCHAR(1024) NOT NULL,
    archived BOOLEAN NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT 0,
    created_us BIGINT NOT NULL,
    PRIMARY KEY (app, id)
);

-- Membership, with each member's delivery watermark (highest message id delivered to it).
CREATE TABLE conv_members (
    app VARCHAR(64) NOT NULL,
    conv VARCHAR(160) NOT NULL,
    user_id VARCHAR(64) NOT NULL,
    delivered_upto BIGINT NOT NULL DEFAULT 0,
    joined_us BIGINT NOT NULL,
    PRIMARY KEY (app, conv, user_id)
);
CREATE INDEX conv_members_by_user ON conv_members (app, user_id);

-- Messages: time-ordered 64-bit ids. INTEGER PRIMARY KEY makes the id the rowid: appends go to the
-- end of the table and there is no separate primary-key index.
CREATE TABLE messages (
    id INTEGER NOT NULL PRIMARY KEY,
    app VARCHAR(64) NOT NULL,
    conv VARCHAR(160) NOT NULL,
    sender VARCHAR(64) NOT NULL,
    recipient VARCHAR(64) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    payload TEXT NOT NULL,
    extension TEXT NOT NULL,
    sent_us BIGINT NOT NULL
);
CREATE INDEX messages_by_conv ON messages (app, conv, id);

-- Named counters (group ids).
CREATE TABLE counters (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
