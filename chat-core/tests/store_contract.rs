//! One contract for [`MessageStore`], run against SQLite and PostgreSQL.
//! PostgreSQL must be reachable (scripts/test-deps.sh starts it): these tests
//! fail, never skip, without it.

mod common;

use natter_chat::store::*;
use natter_proto::*;
use std::sync::Arc;

const TTL: i64 = 30 * 24 * 3600 * 1000;

fn dev(u: &str, d: u32, g: i64) -> DeviceRef {
    DeviceRef {
        user: UserId::new(u),
        device: d,
        generation: g,
    }
}

/// The credential generation `setup` gives a device (alice's device 2 is 12).
fn generation_of(user: &str, device: u32) -> i64 {
    let base = match user {
        "alice" => 10,
        "bob" => 20,
        "carol" => 30,
        _ => 0,
    };
    base + i64::from(device)
}

fn send(from: &str, dev: u32, cid: &str, to: Target, body: &str) -> BatchOp {
    send_from_generation(from, dev, generation_of(from, dev), cid, to, body)
}

fn send_from_generation(
    from: &str,
    dev: u32,
    generation: i64,
    cid: &str,
    to: Target,
    body: &str,
) -> BatchOp {
    BatchOp::Send(NewMessage {
        sender: UserId::new(from),
        sender_device: dev,
        sender_generation: generation,
        client_id: ClientMsgId::new(cid),
        to,
        kind: Kind::text(),
        body: body.as_bytes().to_vec(),
        system: None,
    })
}

fn user(u: &str) -> Target {
    Target::User(UserId::new(u))
}

fn sent(o: &OpOutcome) -> Sent {
    match o {
        OpOutcome::Send(SendOutcome::Stored(s) | SendOutcome::Duplicate(s)) => s.clone(),
        other => panic!("expected a stored send, got {other:?}"),
    }
}

fn targets(q: &[Queued]) -> Vec<(String, u32, &'static str)> {
    q.iter()
        .map(|e| {
            let what = match &e.frame {
                QueuedFrame::Msg(_) => "msg",
                QueuedFrame::Receipt(r) if r.status == ReceiptStatus::Read => "read",
                QueuedFrame::Receipt(_) => "delivered",
            };
            (e.user.0.clone(), e.device, what)
        })
        .collect()
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name("sqlite").await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name("postgres").await } )*
        }
    };
}

contract!(
    send_fans_out_and_is_idempotent,
    refusals_name_the_problem,
    delivery_receipts_and_body_deletion,
    read_receipts_and_read_sync,
    fetch_is_ordered_and_bound_to_generation,
    groups_membership_and_system_messages,
    pending_filters_and_status,
    presence_contacts_push_tokens,
    purge_expired_and_orphans,
    queue_entries_chain_per_device_under_concurrent_commits,
    a_large_batch_queues_every_entry_in_order,
    migration_2002_moves_direct_status_into_the_message_row,
    migration_2003_leads_the_idempotency_index_with_the_client_id,
    a_reregistered_device_that_reuses_client_ids_is_stored,
);

async fn setup(engine: &str) -> (natter_common::testing::TestDb, Arc<dyn MessageStore>) {
    let t = common::fresh(engine).await;
    let store = for_db(&t.db);
    common::add_user(&t.db, "alice", &[(1, 11), (2, 12)]).await;
    common::add_user(&t.db, "bob", &[(1, 21), (2, 22)]).await;
    common::add_user(&t.db, "carol", &[(1, 31)]).await;
    (t, store)
}

async fn send_fans_out_and_is_idempotent(engine: &str) {
    let (t, s) = setup(engine).await;
    let c = s
        .commit(
            &[
                send("alice", 1, "c1", user("bob"), "hi"),
                send("alice", 1, "c1", user("bob"), "hi again"),
            ],
            1000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    let first = sent(&c.outcomes[0]);
    assert!(!first.dup);
    assert_eq!(first.ts, 1000);
    // The repeat in the same batch gets the same ack, marked dup.
    assert!(
        matches!(&c.outcomes[1], OpOutcome::Send(SendOutcome::Duplicate(d)) if d.msg_id == first.msg_id && d.dup)
    );
    // Both of bob's devices and alice's other device; never the sending device.
    let mut got = targets(&c.queued);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".into(), 2, "msg"),
            ("bob".into(), 1, "msg"),
            ("bob".into(), 2, "msg")
        ]
    );
    let QueuedFrame::Msg(m) = &c.queued[0].frame else {
        panic!()
    };
    assert_eq!(m.body.as_text(), Some("hi"));
    assert_eq!(
        m.from,
        From {
            user: UserId::new("alice"),
            device: 1
        }
    );
    assert!(c.queued.windows(2).all(|w| w[0].seq < w[1].seq));
    // Resent in a later batch: the original ack, nothing new queued.
    let again = s
        .commit(&[send("alice", 1, "c1", user("bob"), "x")], 5000, TTL, 1024)
        .await
        .unwrap();
    assert_eq!(
        sent(&again.outcomes[0]),
        Sent {
            dup: true,
            ..first.clone()
        }
    );
    assert!(again.queued.is_empty());
    // The same client id from another device is another message.
    let other = s
        .commit(&[send("alice", 2, "c1", user("bob"), "x")], 5000, TTL, 1024)
        .await
        .unwrap();
    assert_ne!(sent(&other.outcomes[0]).msg_id, first.msg_id);
    // Messages to oneself reach one's other devices only, with no status.
    let me = s
        .commit(
            &[send("carol", 1, "n1", user("carol"), "note")],
            6000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert!(me.queued.is_empty());
    assert!(
        s.message_status(sent(&me.outcomes[0]).msg_id)
            .await
            .unwrap()
            .unwrap()
            .recipients
            .is_empty()
    );
    t.cleanup().await;
}

async fn refusals_name_the_problem(engine: &str) {
    let (t, s) = setup(engine).await;
    let c = s
        .commit(
            &[
                send("alice", 1, "a", user("nobody"), "x"),
                send("alice", 1, "b", Target::Group(GroupId::new("nogroup")), "x"),
            ],
            1,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert!(
        matches!(&c.outcomes[0], OpOutcome::Send(SendOutcome::Refused(ErrorCode::UnknownRecipient, m)) if m.contains("nobody"))
    );
    assert!(matches!(
        &c.outcomes[1],
        OpOutcome::Send(SendOutcome::Refused(ErrorCode::UnknownGroup, _))
    ));
    assert!(c.queued.is_empty());
    // Not a member of an existing group.
    let (o, _) = s
        .commit_group(
            &GroupChange::Create {
                group_id: GroupId::new("g1"),
                name: "g".into(),
                by: UserId::new("alice"),
                members: vec![UserId::new("bob")],
            },
            2,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert!(matches!(o, GroupOutcome::Done(Some(_))));
    let c = s
        .commit(
            &[send(
                "carol",
                1,
                "c",
                Target::Group(GroupId::new("g1")),
                "x",
            )],
            3,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert!(matches!(
        &c.outcomes[0],
        OpOutcome::Send(SendOutcome::Refused(ErrorCode::NotAMember, _))
    ));
    // A refused id can be used again once the problem is fixed (nothing was stored).
    let c = s
        .commit(&[send("alice", 1, "a", user("bob"), "x")], 4, TTL, 1024)
        .await
        .unwrap();
    assert!(matches!(
        &c.outcomes[0],
        OpOutcome::Send(SendOutcome::Stored(_))
    ));
    t.cleanup().await;
}

async fn delivery_receipts_and_body_deletion(engine: &str) {
    let (t, s) = setup(engine).await;
    let c = s
        .commit(
            &[send("alice", 1, "c1", user("bob"), "hi")],
            1000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    let id = sent(&c.outcomes[0]).msg_id;
    // Bob's device 1 gets it: one delivered receipt to each of alice's devices.
    let d = s
        .commit(
            &[BatchOp::Delivered(dev("bob", 1, 21), vec![id, 999_999])],
            2000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert_eq!(d.outcomes[0], OpOutcome::Unknown(vec![999_999]));
    let mut got = targets(&d.queued);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".into(), 1, "delivered"),
            ("alice".into(), 2, "delivered")
        ]
    );
    let QueuedFrame::Receipt(r) = &d.queued[0].frame else {
        panic!()
    };
    assert_eq!(
        (r.msg_id, r.by.as_str(), r.ts, r.id.as_str()),
        (id, "bob", 2000, "c1")
    );
    assert_eq!(r.receipt_id, d.queued[0].seq as u64);
    assert_eq!(r.to, user("bob"));
    // The body stays while bob's device 2 and alice's device 2 still wait.
    let st = s.message_status(id).await.unwrap().unwrap();
    assert_eq!(st.pending_devices, 2);
    assert_eq!(st.recipients[0].delivered_at, Some(2000));
    // Acking again is unknown; bob's second device adds no second receipt.
    let d = s
        .commit(
            &[
                BatchOp::Delivered(dev("bob", 1, 21), vec![id]),
                BatchOp::Delivered(dev("bob", 2, 22), vec![id]),
            ],
            3000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert_eq!(
        d.outcomes,
        vec![OpOutcome::Unknown(vec![id]), OpOutcome::Unknown(vec![])]
    );
    assert!(d.queued.is_empty());
    // The sender's copy delivered: every device has it, the body is gone, the
    // metadata stays for status and idempotency.
    s.commit(
        &[BatchOp::Delivered(dev("alice", 2, 12), vec![id])],
        3500,
        TTL,
        1024,
    )
    .await
    .unwrap();
    let st = s.message_status(id).await.unwrap().unwrap();
    assert_eq!(st.pending_devices, 0);
    assert!(
        s.pending(
            &dev("bob", 1, 21),
            &PendingFilter {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert_body_gone(&t.db, id).await;
    // Receipts are acked by the sender's devices.
    let q = s.fetch(&dev("alice", 1, 11), 0, 10).await.unwrap();
    assert_eq!(q.len(), 1);
    let rid = q[0].seq as u64;
    let a = s
        .commit(
            &[
                BatchOp::Ack(dev("alice", 1, 11), vec![rid, rid + 1000]),
                BatchOp::Ack(dev("bob", 1, 21), vec![rid]),
            ],
            4000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert_eq!(
        a.outcomes,
        vec![
            OpOutcome::Unknown(vec![rid + 1000]),
            OpOutcome::Unknown(vec![rid])
        ]
    );
    assert!(
        s.fetch(&dev("alice", 1, 11), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    t.cleanup().await;
}

async fn assert_body_gone(db: &natter_common::Db, id: u64) {
    let body: Option<Vec<u8>> = match db {
        natter_common::Db::Sqlite(p) => {
            sqlx::query_scalar("SELECT body FROM chat_messages WHERE msg_id = $1")
                .bind(id as i64)
                .fetch_one(p)
                .await
                .unwrap()
        }
        natter_common::Db::Postgres(p) => {
            sqlx::query_scalar("SELECT body FROM chat_messages WHERE msg_id = $1")
                .bind(id as i64)
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert_eq!(body, None);
}

async fn read_receipts_and_read_sync(engine: &str) {
    let (t, s) = setup(engine).await;
    let c = s
        .commit(
            &[send("alice", 1, "c1", user("bob"), "hi")],
            1000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    let id = sent(&c.outcomes[0]).msg_id;
    // Read before any delivered: delivered is implied and sent first.
    let r = s
        .commit(
            &[BatchOp::Read(dev("bob", 2, 22), vec![id, 424242])],
            2000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert_eq!(r.outcomes[0], OpOutcome::Unknown(vec![424242]));
    let got = targets(&r.queued);
    assert_eq!(
        got,
        vec![
            ("alice".into(), 1, "delivered"),
            ("alice".into(), 2, "delivered"),
            ("alice".into(), 1, "read"),
            ("alice".into(), 2, "read"),
            ("bob".into(), 1, "read"),
        ]
    );
    let st = s.message_status(id).await.unwrap().unwrap();
    assert_eq!(
        (st.recipients[0].delivered_at, st.recipients[0].read_at),
        (Some(2000), Some(2000))
    );
    // Reading again changes nothing; the sender reading its own message is unknown.
    let r = s
        .commit(
            &[
                BatchOp::Read(dev("bob", 1, 21), vec![id]),
                BatchOp::Read(dev("alice", 2, 12), vec![id]),
            ],
            3000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert_eq!(
        r.outcomes,
        vec![OpOutcome::Unknown(vec![]), OpOutcome::Unknown(vec![id])]
    );
    assert!(r.queued.is_empty());
    t.cleanup().await;
}

async fn fetch_is_ordered_and_bound_to_generation(engine: &str) {
    let (t, s) = setup(engine).await;
    for i in 0..5 {
        s.commit(
            &[send(
                "alice",
                1,
                &format!("c{i}"),
                user("carol"),
                &format!("m{i}"),
            )],
            1000 + i,
            TTL,
            1024,
        )
        .await
        .unwrap();
    }
    let all = s.fetch(&dev("carol", 1, 31), 0, 100).await.unwrap();
    let bodies: Vec<String> = all
        .iter()
        .map(|q| match &q.frame {
            QueuedFrame::Msg(m) => m.body.as_text().unwrap().to_owned(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    let page = s.fetch(&dev("carol", 1, 31), all[1].seq, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|q| q.seq).collect::<Vec<_>>(),
        vec![all[2].seq, all[3].seq]
    );
    // Another generation of the same device id sees nothing of the old queue.
    assert!(
        s.fetch(&dev("carol", 1, 99), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    common::set_generation(&t.db, "carol", 1, 99).await;
    assert_eq!(
        s.device_generation(&UserId::new("carol"), 1).await.unwrap(),
        Some(99)
    );
    let stale = s
        .stale_devices(&[dev("carol", 1, 31), dev("alice", 1, 11), dev("bob", 7, 1)])
        .await
        .unwrap();
    assert_eq!(stale, vec![dev("carol", 1, 31), dev("bob", 7, 1)]);
    // New messages go to the new generation only.
    s.commit(
        &[send("alice", 1, "c9", user("carol"), "new")],
        2000,
        TTL,
        1024,
    )
    .await
    .unwrap();
    assert_eq!(
        s.fetch(&dev("carol", 1, 99), 0, 100).await.unwrap().len(),
        1
    );
    t.cleanup().await;
}

async fn groups_membership_and_system_messages(engine: &str) {
    let (t, s) = setup(engine).await;
    let g = GroupId::new("g1");
    let create = GroupChange::Create {
        group_id: g.clone(),
        name: "Team".into(),
        by: UserId::new("alice"),
        members: vec![UserId::new("bob")],
    };
    let (o, q) = s.commit_group(&create, 10, TTL, 3).await.unwrap();
    let GroupOutcome::Done(Some(info)) = o else {
        panic!("{o:?}")
    };
    assert_eq!(
        info.members
            .iter()
            .map(|m| (m.user_id.as_str(), m.admin))
            .collect::<Vec<_>>(),
        vec![("alice", true), ("bob", false)]
    );
    // The system message reaches every member device (the actor's too).
    assert_eq!(q.len(), 4);
    let QueuedFrame::Msg(m) = &q[0].frame else {
        panic!()
    };
    assert_eq!(m.kind.as_str(), "system");
    assert_eq!(
        m.system,
        Some(SystemEvent::GroupCreated {
            name: "Team".into(),
            members: vec![UserId::new("alice"), UserId::new("bob")]
        })
    );
    assert_eq!(
        s.commit_group(&create, 11, TTL, 3).await.unwrap().0,
        GroupOutcome::Exists
    );
    // Only admins rename and add; unknown users and the size limit are refused.
    let rename = |by: &str| GroupChange::Rename {
        group_id: g.clone(),
        by: UserId::new(by),
        name: "New".into(),
    };
    assert_eq!(
        s.commit_group(&rename("bob"), 12, TTL, 3).await.unwrap().0,
        GroupOutcome::NotAdmin
    );
    assert_eq!(
        s.commit_group(&rename("carol"), 12, TTL, 3)
            .await
            .unwrap()
            .0,
        GroupOutcome::NotMember
    );
    assert!(
        matches!(s.commit_group(&rename("alice"), 12, TTL, 3).await.unwrap().0, GroupOutcome::Done(Some(i)) if i.name == "New")
    );
    let add = |users: &[&str]| GroupChange::AddMembers {
        group_id: g.clone(),
        by: UserId::new("alice"),
        users: users.iter().map(|u| UserId::new(*u)).collect(),
    };
    assert_eq!(
        s.commit_group(&add(&["zed"]), 13, TTL, 3).await.unwrap().0,
        GroupOutcome::UnknownUsers(vec![UserId::new("zed")])
    );
    common::add_user(&t.db, "dave", &[(1, 41)]).await;
    assert_eq!(
        s.commit_group(&add(&["carol", "dave"]), 13, TTL, 3)
            .await
            .unwrap()
            .0,
        GroupOutcome::Full { limit: 3 }
    );
    let (o, q) = s.commit_group(&add(&["carol"]), 14, TTL, 3).await.unwrap();
    assert!(matches!(o, GroupOutcome::Done(Some(ref i)) if i.members.len() == 3));
    assert_eq!(q.len(), 5, "alice 2 + bob 2 + carol 1");
    // Group messages fan out to members.
    let c = s
        .commit(
            &[send("bob", 1, "gm", Target::Group(g.clone()), "hello")],
            15,
            TTL,
            3,
        )
        .await
        .unwrap();
    let mut got = targets(&c.queued);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".into(), 1, "msg"),
            ("alice".into(), 2, "msg"),
            ("bob".into(), 2, "msg"),
            ("carol".into(), 1, "msg")
        ]
    );
    let st = s
        .message_status(sent(&c.outcomes[0]).msg_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.recipients.len(), 2);
    // Removal: the removed member is told, then no longer receives.
    let remove = GroupChange::RemoveMember {
        group_id: g.clone(),
        by: UserId::new("alice"),
        user: UserId::new("carol"),
    };
    let (o, q) = s.commit_group(&remove, 16, TTL, 3).await.unwrap();
    assert!(matches!(o, GroupOutcome::Done(Some(ref i)) if i.members.len() == 2));
    assert!(q.iter().any(|e| e.user.as_str() == "carol"));
    let c = s
        .commit(
            &[send("carol", 1, "x", Target::Group(g.clone()), "x")],
            17,
            TTL,
            3,
        )
        .await
        .unwrap();
    assert!(matches!(
        &c.outcomes[0],
        OpOutcome::Send(SendOutcome::Refused(ErrorCode::NotAMember, _))
    ));
    assert_eq!(
        s.commit_group(&remove, 17, TTL, 3).await.unwrap().0,
        GroupOutcome::UserNotMember
    );
    // The last admin leaving hands admin to the longest-standing member.
    let leave = |u: &str| GroupChange::RemoveMember {
        group_id: g.clone(),
        by: UserId::new(u),
        user: UserId::new(u),
    };
    let (o, _) = s.commit_group(&leave("alice"), 18, TTL, 3).await.unwrap();
    let GroupOutcome::Done(Some(i)) = o else {
        panic!()
    };
    assert_eq!(
        i.members
            .iter()
            .map(|m| (m.user_id.as_str(), m.admin))
            .collect::<Vec<_>>(),
        vec![("bob", true)]
    );
    // The sole admin cannot demote themself; the last member leaving deletes the group.
    let demote = GroupChange::SetAdmin {
        group_id: g.clone(),
        by: UserId::new("bob"),
        user: UserId::new("bob"),
        admin: false,
    };
    assert!(
        matches!(s.commit_group(&demote, 19, TTL, 3).await.unwrap().0, GroupOutcome::Done(Some(ref i)) if i.members[0].admin)
    );
    assert_eq!(s.groups_of(&UserId::new("bob")).await.unwrap().len(), 1);
    assert_eq!(
        s.commit_group(&leave("bob"), 20, TTL, 3).await.unwrap().0,
        GroupOutcome::Done(None)
    );
    assert!(s.group(&g).await.unwrap().is_none());
    assert_eq!(
        s.commit_group(&rename("bob"), 21, TTL, 3).await.unwrap().0,
        GroupOutcome::NotFound
    );
    t.cleanup().await;
}

async fn pending_filters_and_status(engine: &str) {
    let (t, s) = setup(engine).await;
    s.commit(
        &[send("alice", 1, "a1", user("bob"), "from alice")],
        1000,
        TTL,
        1024,
    )
    .await
    .unwrap();
    s.commit(
        &[send("carol", 1, "c1", user("bob"), "from carol")],
        2000,
        TTL,
        1024,
    )
    .await
    .unwrap();
    s.commit(
        &[send("bob", 2, "b1", user("carol"), "bob to carol")],
        3000,
        TTL,
        1024,
    )
    .await
    .unwrap();
    let bob1 = dev("bob", 1, 21);
    let all = s
        .pending(
            &bob1,
            &PendingFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["a1", "c1", "b1"]
    );
    let with_carol = PendingFilter {
        conversation: Some(user("carol")),
        limit: 10,
        ..Default::default()
    };
    let got = s.pending(&bob1, &with_carol).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["c1", "b1"]
    );
    let window = PendingFilter {
        since: Some(1500),
        until: Some(3000),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.pending(&bob1, &window).await.unwrap().len(), 1);
    let limited = PendingFilter {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(s.pending(&bob1, &limited).await.unwrap().len(), 1);
    assert!(s.message_status(123456).await.unwrap().is_none());
    let st = s.message_status(all[0].msg_id).await.unwrap().unwrap();
    assert_eq!(
        (
            st.sender.as_str(),
            st.id.as_str(),
            st.pending_devices,
            st.expires_at
        ),
        ("alice", "a1", 3, 1000 + TTL)
    );
    t.cleanup().await;
}

async fn presence_contacts_push_tokens(engine: &str) {
    let (t, s) = setup(engine).await;
    let alice = UserId::new("alice");
    assert_eq!(
        s.presence(&alice).await.unwrap(),
        (PresencePrivacy::Everyone, None)
    );
    s.save_last_seen(&[(alice.clone(), 500)]).await.unwrap();
    s.set_privacy(&alice, PresencePrivacy::Contacts)
        .await
        .unwrap();
    s.save_last_seen(&[(alice.clone(), 700), (UserId::new("bob"), 600)])
        .await
        .unwrap();
    assert_eq!(
        s.presence(&alice).await.unwrap(),
        (PresencePrivacy::Contacts, Some(700))
    );
    s.set_contacts(
        &alice,
        &[UserId::new("bob"), UserId::new("bob"), UserId::new("carol")],
    )
    .await
    .unwrap();
    s.set_contacts(&alice, &[UserId::new("bob")]).await.unwrap();
    assert_eq!(s.contacts(&alice).await.unwrap(), vec![UserId::new("bob")]);
    assert!(s.is_contact(&alice, &UserId::new("bob")).await.unwrap());
    assert!(!s.is_contact(&alice, &UserId::new("carol")).await.unwrap());
    assert!(s.user_exists(&alice).await.unwrap());
    assert!(!s.user_exists(&UserId::new("zed")).await.unwrap());
    let tok = PushToken {
        platform: "fcm".into(),
        token: "t1".into(),
        voip_token: None,
    };
    s.set_push_token(&dev("alice", 1, 11), &tok, 1)
        .await
        .unwrap();
    s.set_push_token(
        &dev("alice", 1, 11),
        &PushToken {
            token: "t2".into(),
            ..tok.clone()
        },
        2,
    )
    .await
    .unwrap();
    let got = s
        .push_tokens(&[
            dev("alice", 1, 11),
            dev("alice", 2, 12),
            dev("alice", 1, 99),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![(
            dev("alice", 1, 11),
            PushToken {
                platform: "fcm".into(),
                token: "t2".into(),
                voip_token: None,
            }
        )]
    );
    assert!(s.delete_push_token(&alice, 1).await.unwrap());
    assert!(!s.delete_push_token(&alice, 1).await.unwrap());

    // An iOS device: an APNs token and a PushKit token. A dead VoIP token
    // goes alone; a dead device token takes the registration; a token the
    // device already replaced is left alone.
    let ios = PushToken {
        platform: "apns".into(),
        token: "a1".into(),
        voip_token: Some("v1".into()),
    };
    s.set_push_token(&dev("alice", 2, 12), &ios, 3)
        .await
        .unwrap();
    let tokens_of_2 = || async { s.push_tokens(&[dev("alice", 2, 12)]).await.unwrap() };
    assert_eq!(
        tokens_of_2().await,
        vec![(dev("alice", 2, 12), ios.clone())]
    );
    assert!(!s.forget_dead_push_token(&alice, 2, "old").await.unwrap());
    assert!(s.forget_dead_push_token(&alice, 2, "v1").await.unwrap());
    assert_eq!(
        tokens_of_2().await,
        vec![(
            dev("alice", 2, 12),
            PushToken {
                voip_token: None,
                ..ios.clone()
            }
        )]
    );
    assert!(s.forget_dead_push_token(&alice, 2, "a1").await.unwrap());
    assert!(tokens_of_2().await.is_empty());
    t.cleanup().await;
}

async fn purge_expired_and_orphans(engine: &str) {
    let (t, s) = setup(engine).await;
    let c = s
        .commit(
            &[send("alice", 1, "old", user("bob"), "x")],
            1000,
            10_000,
            1024,
        )
        .await
        .unwrap();
    let old = sent(&c.outcomes[0]).msg_id;
    s.commit(
        &[send("alice", 1, "new", user("carol"), "y")],
        1000,
        TTL,
        1024,
    )
    .await
    .unwrap();
    assert_eq!(s.purge(5000).await.unwrap(), Purged::default());
    let p = s.purge(11_000).await.unwrap();
    assert_eq!(p.messages, 1);
    assert!(s.message_status(old).await.unwrap().is_none());
    assert!(s.fetch(&dev("bob", 1, 21), 0, 10).await.unwrap().is_empty());
    // A removed device's queue goes; the message body goes with its last copy.
    common::remove_device(&t.db, "carol", 1).await;
    let p = s.purge(12_000).await.unwrap();
    assert_eq!(p.orphan_queue, 1);
    let st = s
        .message_status(
            sent(
                &s.commit(&[send("alice", 1, "new", user("carol"), "y")], 1, TTL, 1024)
                    .await
                    .unwrap()
                    .outcomes[0],
            )
            .msg_id,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.pending_devices, 1, "only alice's device 2 copy remains");
    t.cleanup().await;
}

/// Each device's entries form one chain in commit order (`prev` = the entry
/// before), even when several writers (nodes) commit at once: what lets a
/// session spot a live delivery that overtook an earlier one. SQLite has one
/// writer and reports no chain.
async fn queue_entries_chain_per_device_under_concurrent_commits(engine: &str) {
    let (t, s) = setup(engine).await;
    // SQLite is used by one writer task only (concurrent writers would meet
    // "database is locked"); PostgreSQL gets the several writers of a cluster.
    let (n_writers, rounds) = if engine == "sqlite" { (1, 60) } else { (4, 15) };
    let mut writers = Vec::new();
    for w in 0..n_writers {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..rounds {
                let ops = [
                    send("alice", 1, &format!("w{w}-{i}a"), user("bob"), "x"),
                    send("carol", 1, &format!("w{w}-{i}b"), user("bob"), "y"),
                ];
                let c = s.commit(&ops, 1000, TTL, 1024).await.unwrap();
                got.extend(
                    c.queued
                        .into_iter()
                        .filter(|q| q.user.as_str() == "bob" && q.device == 1),
                );
            }
            got
        }));
    }
    let mut entries = Vec::new();
    for w in writers {
        entries.extend(w.await.unwrap());
    }
    assert_eq!(entries.len(), 4 * 15 * 2);
    if engine == "sqlite" {
        assert!(entries.iter().all(|q| q.prev.is_none()));
    } else {
        // Sorted by seq, each entry's prev is exactly the one before it.
        entries.sort_by_key(|q| q.seq);
        let mut last = 0;
        for q in &entries {
            assert_eq!(q.prev, Some(last), "entry {} does not follow {last}", q.seq);
            last = q.seq;
        }
    }
    t.cleanup().await;
}

/// 150 messages to bob from alice's device 1: 450 queue rows in one commit,
/// more than the largest multi-row statement, so several statement shapes
/// are used. Every row gets its own sequence number, each device's entries
/// are in send order, and reading the queue gives back the same entries.
async fn a_large_batch_queues_every_entry_in_order(engine: &str) {
    let (t, s) = setup(engine).await;
    let ops: Vec<BatchOp> = (0..150)
        .map(|i| {
            send(
                "alice",
                1,
                &format!("big{i}"),
                user("bob"),
                &format!("m{i}"),
            )
        })
        .collect();
    let c = s.commit(&ops, 1000, TTL, 1024).await.unwrap();
    assert_eq!(
        c.queued.len(),
        450,
        "bob's two devices and alice's other one"
    );
    assert!(
        c.queued.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers are distinct and in commit order"
    );
    let ids: Vec<u64> = c.outcomes.iter().map(|o| sent(o).msg_id).collect();
    for (user_id, device, generation) in [("bob", 1, 21), ("bob", 2, 22), ("alice", 2, 12)] {
        let mine: Vec<(i64, u64, String)> = c
            .queued
            .iter()
            .filter(|q| q.user.as_str() == user_id && q.device == device)
            .map(|q| match &q.frame {
                QueuedFrame::Msg(m) => (q.seq, m.msg_id, m.body.as_text().unwrap().to_owned()),
                other => panic!("a message entry, not {other:?}"),
            })
            .collect();
        let got_ids: Vec<u64> = mine.iter().map(|e| e.1).collect();
        assert_eq!(got_ids, ids, "{user_id}/{device}: entries in send order");
        assert!(
            mine.iter().enumerate().all(|(i, e)| e.2 == format!("m{i}")),
            "{user_id}/{device}: each entry carries its own message"
        );
        let fetched = s
            .fetch(&dev(user_id, device, generation), 0, 1000)
            .await
            .unwrap();
        let fetched: Vec<(i64, u64)> = fetched
            .iter()
            .map(|q| match &q.frame {
                QueuedFrame::Msg(m) => (q.seq, m.msg_id),
                other => panic!("a message entry, not {other:?}"),
            })
            .collect();
        let committed: Vec<(i64, u64)> = mine.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            fetched, committed,
            "{user_id}/{device}: the queue holds what the commit said"
        );
    }
    t.cleanup().await;
}

async fn raw_sql(db: &natter_common::Db, sql: &'static str) {
    match db {
        natter_common::Db::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        natter_common::Db::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// Status written in the 2001 layout (every recipient in `chat_status`) reads
/// the same after migration 2002 moved 1:1 state into the message rows.
async fn migration_2002_moves_direct_status_into_the_message_row(engine: &str) {
    let (t, before, after) = match engine {
        "sqlite" => (
            natter_common::testing::TestDb::sqlite().await,
            include_str!("../migrations/sqlite/2001_chat.sql"),
            include_str!("../migrations/sqlite/2002_direct_status.sql"),
        ),
        _ => (
            natter_common::testing::TestDb::postgres().await,
            include_str!("../migrations/postgres/2001_chat.sql"),
            include_str!("../migrations/postgres/2002_direct_status.sql"),
        ),
    };
    common::auth_schema(&t.db).await;
    raw_sql(&t.db, before).await;
    raw_sql(
        &t.db,
        "INSERT INTO chat_messages (msg_id, sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, created_at, expires_at) VALUES
           (1, 'alice', 1, 'read', 'u', 'bob', 'text', NULL, 10, 99999999),
           (2, 'alice', 1, 'delivered', 'u', 'bob', 'text', NULL, 20, 99999999),
           (3, 'alice', 1, 'pending', 'u', 'bob', 'text', NULL, 30, 99999999),
           (4, 'alice', 1, 'group', 'g', 'g1', 'text', NULL, 40, 99999999);
         INSERT INTO chat_status (msg_id, user_id, delivered_at, read_at) VALUES
           (1, 'bob', 100, 200), (2, 'bob', 150, NULL), (3, 'bob', NULL, NULL),
           (4, 'bob', 300, NULL), (4, 'carol', NULL, NULL);",
    )
    .await;
    raw_sql(&t.db, after).await;
    let s = for_db(&t.db);
    let recipients = |st: Option<MessageStatus>| {
        st.expect("message kept")
            .recipients
            .into_iter()
            .map(|r| (r.user_id.0, r.delivered_at, r.read_at))
            .collect::<Vec<_>>()
    };
    let bob = |d, r| ("bob".to_owned(), d, r);
    assert_eq!(
        recipients(s.message_status(1).await.unwrap()),
        [bob(Some(100), Some(200))]
    );
    assert_eq!(
        recipients(s.message_status(2).await.unwrap()),
        [bob(Some(150), None)]
    );
    assert_eq!(
        recipients(s.message_status(3).await.unwrap()),
        [bob(None, None)]
    );
    assert_eq!(
        recipients(s.message_status(4).await.unwrap()),
        [bob(Some(300), None), ("carol".to_owned(), None, None)]
    );
    let left: i64 = match &t.db {
        natter_common::Db::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM chat_status")
            .fetch_one(p)
            .await
            .unwrap(),
        natter_common::Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM chat_status")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert_eq!(left, 2, "only the group message keeps chat_status rows");
}

/// One text value of a query, on either engine.
async fn scalar_text(db: &natter_common::Db, sql: &'static str) -> String {
    match db {
        natter_common::Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        natter_common::Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .unwrap_or_else(|e| panic!("{e}: {sql}"))
}

/// Migration 2003 leads the idempotency index with the client id (SQLite
/// rebuilds the message table and its two child tables for it): messages,
/// queues, group status, cascades, idempotency and the id high-water marks
/// all come through.
///
/// Then migration 2004 adds the sender's credential generation to that key
/// (another rebuild on SQLite): old rows take their device's generation, so
/// a resend across the upgrade is still a duplicate.
async fn migration_2003_leads_the_idempotency_index_with_the_client_id(engine: &str) {
    let (t, before, step2, after, generation) = match engine {
        "sqlite" => (
            natter_common::testing::TestDb::sqlite().await,
            include_str!("../migrations/sqlite/2001_chat.sql"),
            include_str!("../migrations/sqlite/2002_direct_status.sql"),
            include_str!("../migrations/sqlite/2003_client_id_first.sql"),
            include_str!("../migrations/sqlite/2004_sender_generation.sql"),
        ),
        _ => (
            natter_common::testing::TestDb::postgres().await,
            include_str!("../migrations/postgres/2001_chat.sql"),
            include_str!("../migrations/postgres/2002_direct_status.sql"),
            // The released texts, run as one string each as sqlx ran them;
            // the current 2004 builds its index concurrently and runs step by
            // step (tests/migrations_postgres.rs).
            include_str!("../migrations/postgres-released/2003_client_id_first.sql"),
            include_str!("../migrations/postgres-released/2004_sender_generation.sql"),
        ),
    };
    common::auth_schema(&t.db).await;
    raw_sql(&t.db, before).await;
    raw_sql(&t.db, step2).await;
    common::add_user(&t.db, "alice", &[(1, 11)]).await;
    common::add_user(&t.db, "bob", &[(1, 21)]).await;
    // Message 5 and queue entry 7 existed and are gone: their ids must not
    // come back (PostgreSQL's identity sequences stand where they would be).
    raw_sql(
        &t.db,
        "INSERT INTO chat_messages (msg_id, sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, created_at, expires_at) VALUES
           (1, 'alice', 1, 'a-1', 'u', 'bob', 'text', NULL, 10, 99999999),
           (2, 'alice', 1, 'a-2', 'u', 'bob', 'text', NULL, 20, 99999999),
           (3, 'alice', 1, 'a-3', 'g', 'g1', 'text', NULL, 30, 99999999),
           (5, 'alice', 1, 'a-5', 'u', 'bob', 'text', NULL, 50, 99999999);
         INSERT INTO chat_status (msg_id, user_id, delivered_at, read_at) VALUES (3, 'bob', 300, NULL);
         INSERT INTO chat_queue (seq, user_id, device_id, generation, kind, msg_id, peer, at) VALUES
           (1, 'bob', 1, 21, 0, 1, NULL, 10), (2, 'bob', 1, 21, 0, 3, NULL, 30),
           (7, 'bob', 1, 21, 0, 5, NULL, 50);
         DELETE FROM chat_messages WHERE msg_id = 5;",
    )
    .await;
    if engine == "sqlite" {
        raw_sql(
            &t.db,
            "UPDATE chat_messages SET body = X'6869' WHERE msg_id = 1",
        )
        .await;
    } else {
        raw_sql(
            &t.db,
            "UPDATE chat_messages SET body = decode('6869', 'hex') WHERE msg_id = 1;
             SELECT setval(pg_get_serial_sequence('chat_messages', 'msg_id'), 5);
             SELECT setval(pg_get_serial_sequence('chat_queue', 'seq'), 7);",
        )
        .await;
    }
    raw_sql(&t.db, after).await;
    raw_sql(&t.db, generation).await;

    let index = match engine {
        "sqlite" => {
            scalar_text(
                &t.db,
                "SELECT group_concat(name, ', ') FROM (SELECT name FROM pragma_index_info(
                   (SELECT name FROM pragma_index_list('chat_messages') WHERE origin = 'u'))
                 ORDER BY seqno)",
            )
            .await
        }
        _ => {
            scalar_text(
                &t.db,
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'chat_messages_client_id'",
            )
            .await
        }
    };
    assert!(
        index.contains("client_id, sender_user, sender_device, sender_generation"),
        "{index}"
    );
    let s = for_db(&t.db);
    let bob = dev("bob", 1, 21);
    let pending = s.fetch(&bob, 0, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|q| q.seq).collect::<Vec<_>>(),
        [1, 2],
        "the queue came through in order"
    );
    match &pending[0].frame {
        QueuedFrame::Msg(m) => assert_eq!((m.msg_id, m.body.0.as_slice()), (1, &b"hi"[..])),
        other => panic!("expected message 1, got {other:?}"),
    }
    let st = s.message_status(3).await.unwrap().expect("message 3 kept");
    assert_eq!(
        st.recipients
            .iter()
            .map(|r| (r.user_id.as_str(), r.delivered_at))
            .collect::<Vec<_>>(),
        [("bob", Some(300))],
        "group status rows came through"
    );
    // A resend is still recognised; a new message takes fresh ids.
    let c = s
        .commit(
            &[
                send("alice", 1, "a-1", user("bob"), "hi"),
                send("alice", 1, "a-9", user("bob"), "new"),
            ],
            1000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    assert!(
        matches!(&c.outcomes[0], OpOutcome::Send(SendOutcome::Duplicate(d)) if d.msg_id == 1),
        "{:?}",
        c.outcomes[0]
    );
    let fresh = sent(&c.outcomes[1]);
    assert!(fresh.msg_id > 5, "message id {} reused", fresh.msg_id);
    assert!(
        c.queued.iter().all(|q| q.seq > 7),
        "queue seq reused: {:?}",
        c.queued.iter().map(|q| q.seq).collect::<Vec<_>>()
    );
    // Deleting a message still empties its queue entries (the rebuilt
    // children refer to the rebuilt message table).
    raw_sql(&t.db, "DELETE FROM chat_messages WHERE msg_id = 1").await;
    let left = s.fetch(&bob, 0, 10).await.unwrap();
    assert!(
        left.iter()
            .all(|q| !matches!(&q.frame, QueuedFrame::Msg(m) if m.msg_id == 1)),
        "cascade to the queue"
    );
    assert_eq!(left.len(), 2, "message 3 and the new one");
}

/// A device id that re-registers (a new credential generation) and starts
/// its client ids over is a new sender: its messages are stored, not
/// answered with its predecessor's ack. Resends within one generation are
/// still duplicates, in separate commits and within one batch.
async fn a_reregistered_device_that_reuses_client_ids_is_stored(engine: &str) {
    let (t, s) = setup(engine).await;
    let first = s
        .commit(
            &[send("alice", 1, "m-1", user("bob"), "before")],
            1000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    let before = sent(&first.outcomes[0]);
    assert!(!before.dup);

    common::set_generation(&t.db, "alice", 1, 15).await;
    let c = s
        .commit(
            &[
                send_from_generation("alice", 1, 15, "m-1", user("bob"), "after"),
                send_from_generation("alice", 1, 15, "m-1", user("bob"), "after"),
            ],
            2000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    let after = sent(&c.outcomes[0]);
    assert!(
        !after.dup,
        "the new generation's message was taken for the old one's"
    );
    assert_ne!(after.msg_id, before.msg_id);
    let repeat = sent(&c.outcomes[1]);
    assert!(repeat.dup && repeat.msg_id == after.msg_id, "{repeat:?}");

    // Both generations' messages reach the recipient, each with its own body.
    let bob = dev("bob", 1, 21);
    let bodies: Vec<Vec<u8>> = s
        .fetch(&bob, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|q| match q.frame {
            QueuedFrame::Msg(m) => Some(m.body.0.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, [b"before".to_vec(), b"after".to_vec()]);

    // A later resend of the new generation is a duplicate of its own message.
    let again = s
        .commit(
            &[send_from_generation(
                "alice",
                1,
                15,
                "m-1",
                user("bob"),
                "after",
            )],
            3000,
            TTL,
            1024,
        )
        .await
        .unwrap();
    let again = sent(&again.outcomes[0]);
    assert!(again.dup && again.msg_id == after.msg_id, "{again:?}");
    t.cleanup().await;
}
