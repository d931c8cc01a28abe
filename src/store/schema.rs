//! The portable diesel schema, shared by every backend.

diesel::table! {
    users (app, id) {
        app -> Text,
        id -> Text,
        nickname -> Text,
        avatar -> Text,
        updated_us -> BigInt,
    }
}

diesel::table! {
    conversations (app, id) {
        app -> Text,
        id -> Text,
        kind -> Integer,
        conv_type -> Integer,
        creator -> Text,
        name -> Text,
        notice -> Text,
        snap -> Text,
        archived -> Bool,
        deleted -> Bool,
        created_us -> BigInt,
    }
}

diesel::table! {
    conv_members (app, conv, user_id) {
        app -> Text,
        conv -> Text,
        user_id -> Text,
        delivered_upto -> BigInt,
        joined_us -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        app -> Text,
        conv -> Text,
        sender -> Text,
        recipient -> Text,
        kind -> Text,
        payload -> Text,
        extension -> Text,
        sent_us -> BigInt,
        status -> Integer,
        conv_type -> Integer,
    }
}

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    mutes (app, conv, user_id) {
        app -> Text,
        user_id -> Text,
        conv -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(users, conversations, conv_members, messages, counters, mutes);
