-- Ids compare byte for byte, trailing spaces included: utf8mb4_bin is a PAD SPACE collation, under
-- which 'bob ' equals 'bob'. MariaDB (10.2.2 and later) has a NO PAD binary collation; on MySQL this
-- does nothing. Ids with leading or trailing whitespace are refused at every entry point in any case,
-- which is what keeps 'bob ' from passing for bob there.
SET @s = IF(VERSION() LIKE '%MariaDB%', 'ALTER TABLE users CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin', 'DO 0');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;
SET @s = IF(VERSION() LIKE '%MariaDB%', 'ALTER TABLE conversations CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin', 'DO 0');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;
SET @s = IF(VERSION() LIKE '%MariaDB%', 'ALTER TABLE conv_members CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin', 'DO 0');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;
SET @s = IF(VERSION() LIKE '%MariaDB%', 'ALTER TABLE messages CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin', 'DO 0');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;
SET @s = IF(VERSION() LIKE '%MariaDB%', 'ALTER TABLE counters CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin', 'DO 0');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;
