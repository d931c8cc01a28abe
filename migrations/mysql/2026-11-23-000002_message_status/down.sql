ALTER TABLE messages DROP COLUMN conv_type;
ALTER TABLE messages DROP COLUMN status;
