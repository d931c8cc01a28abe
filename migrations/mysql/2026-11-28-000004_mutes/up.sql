-- Conversations a user muted: no offline push for them (an extension). Ids compare byte for byte,
-- trailing spaces included (NO PAD on MariaDB, as the other tables since 2026-11-28-000003).
CREATE TABLE mutes (
    app VARCHAR(64) NOT NULL,
    user_id VARCHAR(64) NOT NULL,
    conv VARCHAR(160) NOT NULL,
    PRIMARY KEY (app, conv, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
SET @s = IF(VERSION() LIKE '%MariaDB%', 'ALTER TABLE mutes CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin', 'DO 0');
PREPARE stmt FROM @s;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;
