//! The drain (issue 20): while the process shuts down, new allocations are
//! refused and live ones carry on. Driven with synthetic time, like `server_tests`.

use super::tests::{SHA1, bind, code, decode, peer, permit, user_key};
use crate::codec::{Attribute, Class, MessageBuilder, Method};
use crate::server::Refusal;
use crate::testkit::{Harness, PASSWORD, USER};

#[test]
fn draining_refuses_new_allocations_with_508_but_live_ones_keep_relaying() {
    let mut h = Harness::new();
    let live = Harness::udp(1);
    h.allocate(live);
    permit(&mut h, live, &["93.184.215.1:1"]);
    h.server.set_draining(true);
    assert!(h.server.is_draining());

    // A new client is refused, with integrity (it authenticated) and counted.
    let resp = h.allocate(Harness::udp(2));
    assert_eq!(code(&resp), Some(508));
    assert!(decode(&resp).verify_integrity(&user_key()).is_ok());
    assert_eq!(h.server.stats().refusals[Refusal::Draining as usize], 1);
    assert_eq!(h.server.allocation_count(), 1);

    // The live allocation: relaying both ways, Refresh, CreatePermission and
    // ChannelBind all still work.
    let p = peer("93.184.215.1:7000");
    assert_eq!(h.peer_input(live, p, b"from the peer").len(), 1);
    let tid = h.tid();
    let mut b = MessageBuilder::new(Class::Indication, Method::SEND, tid);
    b.add(&Attribute::XorPeerAddress(p))
        .add(&Attribute::Data(b"to the peer"));
    assert_eq!(h.input(live, &b.finish(None, false)).len(), 1);
    let refresh = h.auth_request(
        live,
        Method::REFRESH,
        &[Attribute::Lifetime(600)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(decode(&refresh).class, Class::Success);
    assert_eq!(
        decode(&permit(&mut h, live, &["93.184.215.2:1"])).class,
        Class::Success
    );
    assert_eq!(
        decode(&bind(&mut h, live, 0x4000, "93.184.215.1:7000")).class,
        Class::Success
    );
    // The refused Allocate left nothing pending.
    assert_eq!(h.server.pending_count(), 0);

    // Ending it leaves nothing live: the driver may stop.
    let delete = h.auth_request(
        live,
        Method::REFRESH,
        &[Attribute::Lifetime(0)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(decode(&delete).class, Class::Success);
    assert_eq!(h.server.allocation_count(), 0);

    // Draining can be called off.
    h.server.set_draining(false);
    assert_eq!(decode(&h.allocate(Harness::udp(2))).class, Class::Success);
}
