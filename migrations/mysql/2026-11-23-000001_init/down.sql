DROP TABLE counters;
DROP TABLE messages;
DROP TABLE conv_members;
DROP TABLE conversations;
DROP TABLE users;
