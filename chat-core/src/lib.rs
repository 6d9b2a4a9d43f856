//! natter-chat
