//! natter-media
