-- SQLite compares text byte for byte already (BINARY collation): nothing to change. The migration
-- exists so that both backends carry the same history (see the MySQL one).
SELECT 1;
