//! natter-tests
