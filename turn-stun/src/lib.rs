//! natter-turn
