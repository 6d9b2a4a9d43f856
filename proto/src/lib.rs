//! natter-proto
