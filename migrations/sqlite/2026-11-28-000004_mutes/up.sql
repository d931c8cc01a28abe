-- Conversations a user muted: no offline push for them (an extension).
CREATE TABLE mutes (
    app TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conv TEXT NOT NULL,
    PRIMARY KEY (app, conv, user_id)
);
