//! The load balancer `usher up` runs in its own process, configured as `usher lab` configures its
//! `usher lb` child for the same architecture.
//!
//! The architecture's routing is read from [`Architecture::lb_args`] — the very flags the lab
//! passes — so `usher up --architecture X` balances exactly as the lab measured X. The rest
//! (fast health checks, a short slow start and shutdown grace) suits a demo where a person kills
//! a shop and wants to see the balancer notice within a second or two.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use usher_proxy::{BackendAddr, BackendSection, FileConfig, LbConfig};

use crate::arch::Architecture;

/// The configuration of a load balancer on `listen` in front of `backends` (`(id, addr)`).
pub fn lb_config(
    arch: Architecture,
    listen: SocketAddr,
    backends: &[(String, SocketAddr)],
) -> anyhow::Result<LbConfig> {
    let mut raw = FileConfig {
        listen: Some(listen),
        slow_start: Some(Duration::from_secs(2)),
        ..FileConfig::default()
    };
    raw.health.path = Some("/healthz".to_owned());
    raw.health.interval = Some(Duration::from_millis(500));
    raw.limits.shutdown_grace = Some(Duration::from_secs(2));
    // The admin API is served by `usher up` itself, next to the dashboard.
    raw.admin.listen = Some("off".to_owned());
    for (id, addr) in backends {
        let section = BackendSection {
            id: id.parse().with_context(|| format!("backend id {id:?}"))?,
            addr: BackendAddr(*addr),
            weight: None,
        };
        raw.backends.push(toml::Spanned::new(0..0, section));
    }
    let args = arch.lb_args();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("{arch}: flag {:?} has no value", pair.first());
        };
        apply(&mut raw, flag, value).with_context(|| format!("{arch}: {flag} {value}"))?;
    }
    Ok(LbConfig::from_raw(raw, None)?)
}

/// Sets the field `usher lb`'s `flag` would set.
fn apply(raw: &mut FileConfig, flag: &str, value: &str) -> anyhow::Result<()> {
    match flag {
        "--policy" => raw.policy = Some(value.parse()?),
        "--affinity" => raw.affinity = Some(value.parse()?),
        "--balance-factor" => raw.balance_factor = Some(value.parse()?),
        other => bail!("usher up does not know the load-balancer flag {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use usher_proxy::AffinityMode;

    #[test]
    fn every_architecture_gets_its_routing() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let backends = vec![("shop-0".to_owned(), "127.0.0.1:9001".parse().unwrap())];
        for arch in Architecture::ALL {
            let c = lb_config(arch, listen, &backends).unwrap();
            let args = arch.lb_args();
            assert_eq!(c.policy.as_str(), args[1], "{arch}");
            assert_eq!(c.affinity.to_string(), args[3], "{arch}");
            assert_eq!(c.backends.len(), 1);
            assert_eq!(c.health.path.as_deref(), Some("/healthz"));
            assert!(
                c.admin.listen.is_none(),
                "the admin API is served by usher up"
            );
        }
        let ip = lb_config(Architecture::StickyIpMemory, listen, &backends).unwrap();
        assert_eq!(ip.affinity, AffinityMode::SourceIp);
        assert!((ip.balance_factor - 100.0).abs() < f64::EPSILON);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bad_id = vec![("has space".to_owned(), "127.0.0.1:9001".parse().unwrap())];
        assert!(lb_config(Architecture::Shared, listen, &bad_id).is_err());
        let none = lb_config(Architecture::Shared, listen, &[]).unwrap_err();
        assert!(format!("{none:#}").contains("backend"), "{none:#}");
        let mut raw = FileConfig::default();
        assert!(apply(&mut raw, "--policy", "fastest").is_err());
        assert!(apply(&mut raw, "--frobnicate", "1").is_err());
    }
}
