//! Auth hot paths, on one core: access-token verification (every request and
//! socket pays it) and one-time-code verification with the configured argon2
//! parameters (OWASP's argon2id: 19 MiB, 2 passes, 1 lane).
//!
//! Run: `cargo bench -p natter-auth --bench auth_bench`

use natter_auth::secrets::{Argon2Params, SecretHasher};
use natter_common::token::{Claims, TokenKeys};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn rate(label: &str, mut op: impl FnMut(), min_time: Duration) -> f64 {
    // Warm up caches and branch predictors.
    for _ in 0..100 {
        op();
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < min_time {
        for _ in 0..100 {
            op();
        }
        n += 100;
    }
    let secs = start.elapsed().as_secs_f64();
    let per_sec = n as f64 / secs;
    println!(
        "{label:<52} {per_sec:>14.0} /s  ({:.3} µs each, {n} ops in {secs:.2} s)",
        1e6 / per_sec
    );
    per_sec
}

fn main() {
    let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", &[b"previous-key"]);
    let claims = Claims {
        sub: "9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b".into(),
        dev: 3,
        generation: 123_456_789,
        iat: 1_800_000_000,
        exp: 1_800_000_900,
    };
    let token = keys.sign(&claims);
    println!("token length: {} bytes", token.len());
    rate(
        "access-token verification (HS256 JWT, 1 thread)",
        || {
            black_box(keys.verify(black_box(&token), 1_800_000_100).unwrap());
        },
        Duration::from_secs(3),
    );
    rate(
        "access-token signing (1 thread)",
        || {
            black_box(keys.sign(black_box(&claims)));
        },
        Duration::from_secs(2),
    );

    let hasher = SecretHasher::new(Argon2Params::default()).unwrap();
    let stored = hasher.hash_blocking("482913").unwrap();
    println!("argon2 parameters: {:?}", Argon2Params::default());
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        black_box(
            hasher
                .verify_blocking(black_box("482913"), &stored)
                .unwrap(),
        );
        n += 1;
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "{:<52} {per_sec:>14.1} /s  ({:.1} ms each, {n} ops)",
        "code verification (argon2id, 1 thread)",
        1e3 / per_sec
    );
}
