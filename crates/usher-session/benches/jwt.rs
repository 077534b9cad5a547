//! Verify cost per algorithm. Tokens and rings are built outside the measured loop; the loop
//! is one `KeyRing::verify` (header checks, signature, claims).

use criterion::{Criterion, criterion_group, criterion_main};
use usher_session::jwt::{Algorithm, Claims, KeyFile, VerifyOptions};

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_verify");
    for alg in Algorithm::ALL {
        let file = match KeyFile::generate(alg) {
            Ok(f) => f,
            Err(e) => panic!("keygen {alg}: {e}"),
        };
        let ring = match file.ring(VerifyOptions::default().with_issuer("usher")) {
            Ok(r) => r,
            Err(e) => panic!("ring {alg}: {e}"),
        };
        let now = 1_800_000_000;
        let mut claims = Claims::new("alice", now, 300);
        claims.iss = Some("usher".into());
        claims.sid = Some("AAAAAAAAAAAAAAAAAAAAAA".into());
        let token = match ring.sign(&claims) {
            Ok(t) => t,
            Err(e) => panic!("sign {alg}: {e}"),
        };
        assert!(ring.verify(&token, now).is_ok());
        group.bench_function(alg.name(), |b| {
            b.iter(|| ring.verify(std::hint::black_box(&token), now))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
