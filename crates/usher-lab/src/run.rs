//! One architecture's run: start the fleet, seed the users, drive them through the fault
//! timeline, and reduce what they saw to an [`ArchResult`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::Method;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::LabOptions;
use crate::arch::Architecture;
use crate::client::{Client, Jar};
use crate::fleet::{Fleet, FleetSpec};
use crate::report::{ArchResult, Event};
use crate::scenario::{Fault, Scenario};
use crate::stats::Recorder;
use crate::store::PrivateRedis;
use crate::user::{self, Ctx, Plan};

/// The address 30 % of users share, as a corporate NAT would.
const NAT_ADDRESS: &str = "203.0.113.7";
/// The shop killed at the kill event.
const VICTIM: usize = 1;
/// How long a draining shop keeps its clients.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// Runs one architecture; failures to start are reported in the result, not raised.
pub async fn run_arch(
    opts: &LabOptions,
    arch: Architecture,
    spec: FleetSpec,
    progress: &indicatif::ProgressBar,
    redis: Option<&mut PrivateRedis>,
) -> ArchResult {
    match run_inner(opts, arch, spec, progress, redis).await {
        Ok(r) => r,
        Err(e) => ArchResult::failed(arch, format!("{e:#}")),
    }
}

async fn run_inner(
    opts: &LabOptions,
    arch: Architecture,
    spec: FleetSpec,
    progress: &indicatif::ProgressBar,
    redis: Option<&mut PrivateRedis>,
) -> anyhow::Result<ArchResult> {
    progress.set_message(format!("{arch}: starting {} shops and the LB", opts.shops));
    let mut fleet = Fleet::start(spec, opts.shops).await?;
    let client = Client::new(fleet.lb_addr, Duration::from_secs(5));
    progress.set_message(format!("{arch}: signing up {} users", opts.users));
    let plans = plans(opts);
    seed_users(&client, &plans).await?;

    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        client,
        start,
        deadline: start + opts.duration,
        skus: opts.skus.clone(),
        think_ms: opts.think_ms,
        retry_share: opts.retry_share,
    });
    let users: Vec<_> = plans
        .into_iter()
        .map(|p| tokio::spawn(user::run(ctx.clone(), p)))
        .collect();
    let timeline = Timeline::new(&opts.scenario, opts.duration);
    let events = drive_faults(&mut fleet, &timeline, start, (arch, progress), redis).await;
    let mut rec = Recorder::default();
    for u in users {
        rec.merge(u.await.context("a virtual user panicked")?);
    }
    let elapsed = start.elapsed();
    fleet.stop().await;
    Ok(ArchResult::from_run(
        arch, opts, rec, elapsed, events?, &timeline,
    ))
}

/// When the faults happen, from the start of the run.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// `kill -9` of shop-1, if in this run.
    pub kill: Option<Duration>,
    /// Two shops added, if in this run.
    pub scale_out: Option<Duration>,
    /// Every fault in time order.
    pub faults: Vec<(Duration, Fault)>,
}

impl Timeline {
    /// The scenario's faults for a run of `d`.
    pub fn new(scenario: &Scenario, d: Duration) -> Self {
        Self {
            kill: scenario.kill.map(|f| d.mul_f64(f)),
            scale_out: scenario.scale_out.map(|f| d.mul_f64(f)),
            faults: scenario.faults(d),
        }
    }
}

async fn drive_faults(
    fleet: &mut Fleet,
    t: &Timeline,
    start: Instant,
    (arch, progress): (Architecture, &indicatif::ProgressBar),
    mut redis: Option<&mut PrivateRedis>,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let note = |what: String, events: &mut Vec<Event>| {
        progress.set_message(format!("{arch}: {what}"));
        events.push(Event {
            at_secs: start.elapsed().as_secs_f64(),
            event: what,
        });
    };
    progress.set_message(format!("{arch}: steady load"));
    for &(at, fault) in &t.faults {
        tokio::time::sleep_until((start + at).into()).await;
        match fault {
            Fault::Kill => {
                fleet.kill(VICTIM).await;
                note(format!("kill -9 shop-{VICTIM}"), &mut events);
            }
            Fault::ScaleOut => {
                let next = fleet.running().last().map_or(0, |n| n + 1);
                fleet.add(next).await?;
                fleet.add(next + 1).await?;
                note(
                    format!("scale out: shop-{next}, shop-{}", next + 1),
                    &mut events,
                );
            }
            Fault::Drain => {
                let highest = fleet.running().last().copied().unwrap_or(0);
                note(format!("drain shop-{highest}"), &mut events);
                fleet.drain_and_remove(highest, DRAIN_DEADLINE).await?;
                note(format!("removed shop-{highest}"), &mut events);
            }
            Fault::StoreRestart => match redis.as_deref_mut() {
                Some(r) => {
                    r.restart().await?;
                    note(
                        "store restarted (redis-server, nothing persisted)".to_owned(),
                        &mut events,
                    );
                }
                None => anyhow::bail!("the store restart needs --store redis (a private server)"),
            },
        }
    }
    Ok(events)
}

/// Every user's identity and habits, fixed by the seed.
fn plans(opts: &LabOptions) -> Vec<Plan> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    (0..opts.users)
        .map(|i| {
            let ip = if rng.random_bool(opts.nat_share) {
                NAT_ADDRESS.to_owned()
            } else {
                format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
            };
            Plan {
                name: format!("lab-user-{i}"),
                password: format!("pw-{i}-{}", opts.seed),
                ip,
                two_tabs: rng.random_bool(opts.two_tab_share),
                seed: rng.random(),
            }
        })
        .collect()
}

/// Signs every user up (an account that exists already is fine), 32 at a time.
async fn seed_users(client: &Client, plans: &[Plan]) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for chunk in plans.chunks(32) {
        let replies = chunk.iter().map(|p| {
            let client = client.clone();
            let body = json!({ "user": p.name, "password": p.password });
            async move {
                client
                    .send(
                        &mut Jar::default(),
                        Method::POST,
                        "/api/signup",
                        &[],
                        Some(&body),
                    )
                    .await
            }
        });
        for r in join_all(replies).await {
            let fine = r.ok() || r.status.is_some_and(|s| s.as_u16() == 409);
            if !fine {
                failures.push(format!(
                    "{:?} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    if let Some(first) = failures.first() {
        anyhow::bail!(
            "{} of {} sign-ups failed; first: {first}",
            failures.len(),
            plans.len()
        );
    }
    Ok(())
}

/// Runs the futures concurrently and collects their outputs (a panicked one is left out).
async fn join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
