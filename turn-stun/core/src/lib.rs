//! natter-turn-core: sans-IO STUN/TURN codec and allocation state.
