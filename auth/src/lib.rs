//! natter-auth
