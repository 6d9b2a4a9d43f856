//! natter-client
