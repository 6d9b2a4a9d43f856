//! natter-signaling
