//! One sentence per claim the lab tests, written from the measured figures — never from
//! expectations: when a figure contradicts the claim, the sentence says so.

use super::ArchResult;

fn get<'a>(results: &'a [ArchResult], name: &str) -> Option<&'a ArchResult> {
    results
        .iter()
        .find(|r| r.architecture == name && r.error.is_none())
}

/// The verdicts for the architectures that ran.
pub fn verdicts(results: &[ArchResult]) -> Vec<String> {
    let mut out = Vec::new();
    let shared = get(results, "shared");

    // Sessions in one server's memory are lost with it (or never found, without stickiness);
    // a shared store or a signed token loses none.
    let ran: Vec<&ArchResult> = results.iter().filter(|r| r.error.is_none()).collect();
    if !ran.is_empty() {
        let list = |f: fn(&ArchResult) -> u64| {
            ran.iter()
                .map(|r| format!("{} {}", r.architecture, f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "signed-in users found signed out (sessions lost): {}",
            list(|r| r.sessions_lost)
        ));
        out.push(format!(
            "cart items added and then missing: {}",
            list(|r| r.cart_items_lost)
        ));
    }
    // Sticky load is uneven; IP stickiness worse behind NAT.
    if let (Some(ip), Some(cookie)) = (
        get(results, "sticky-ip-memory"),
        get(results, "sticky-cookie-memory"),
    ) {
        let verb = if ip.imbalance.max_over_mean > cookie.imbalance.max_over_mean {
            "more uneven than"
        } else {
            "NOT more uneven than"
        };
        out.push(format!(
            "source-IP stickiness behind a shared NAT address is {verb} cookie stickiness: \
             busiest shop {:.2}x the mean vs {:.2}x",
            ip.imbalance.max_over_mean, cookie.imbalance.max_over_mean
        ));
    }
    if let Some(s) = shared {
        let sticky: Vec<String> = ["sticky-cookie-memory", "sticky-ip-memory"]
            .iter()
            .filter_map(|n| get(results, n))
            .map(|r| format!("{} {:.2}x", r.architecture, r.imbalance.max_over_mean))
            .collect();
        if !sticky.is_empty() {
            out.push(format!(
                "load balance (busiest shop / mean): shared {:.2}x; {}",
                s.imbalance.max_over_mean,
                sticky.join(", ")
            ));
        }
    }
    // Scaling out: new shops get their share at once only when nothing is pinned.
    let fair: Vec<String> = results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| {
            let t = r
                .fair_share_secs
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.0}s"));
            format!("{} {t}", r.architecture)
        })
        .collect();
    if !fair.is_empty() {
        out.push(format!(
            "new shops carried a fair share after: {}",
            fair.join(", ")
        ));
    }
    // Retries need idempotency.
    let dups: Vec<String> = results
        .iter()
        .filter(|r| r.error.is_none() && r.retried_checkouts > 0)
        .map(|r| {
            format!(
                "{} {} duplicate orders from {} retried checkouts",
                r.architecture, r.duplicate_orders, r.retried_checkouts
            )
        })
        .collect();
    if !dups.is_empty() {
        out.push(dups.join("; "));
    }
    // The price of a shared store: a round trip per request.
    if let (Some(s), Some(m)) = (shared, get(results, "sticky-cookie-memory")) {
        out.push(format!(
            "a shared store costs latency: p50 {:.1} ms (shared) vs {:.1} ms (sticky-cookie-memory)",
            s.latency_ms.p50, m.latency_ms.p50
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, lost: u64, max_over_mean: f64) -> ArchResult {
        let mut r = ArchResult {
            architecture: name.to_owned(),
            sessions_lost: lost,
            ..ArchResult::default()
        };
        r.imbalance.max_over_mean = max_over_mean;
        r
    }

    #[test]
    fn verdicts_follow_the_figures() {
        let rs = [
            result("sticky-cookie-memory", 212, 1.1),
            result("sticky-ip-memory", 180, 1.9),
            result("shared", 0, 1.02),
        ];
        let v = verdicts(&rs).join("\n");
        assert!(
            v.contains("(sessions lost): sticky-cookie-memory 212, sticky-ip-memory 180, shared 0"),
            "{v}"
        );
        assert!(v.contains("is more uneven than"), "{v}");

        let rs = [
            result("sticky-cookie-memory", 1, 1.5),
            result("sticky-ip-memory", 1, 1.2),
        ];
        assert!(verdicts(&rs).join("\n").contains("NOT more uneven"));
    }
}
