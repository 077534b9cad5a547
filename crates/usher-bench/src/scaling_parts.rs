//! The five scaling curves. Each returns its Markdown section.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::checks;
use crate::configs::Mode;
use crate::procs::Proc;
use crate::procstat;
use crate::scaling::{Ctx, runs_table};
use crate::systems::{self, Running, System, UsherOpts};

/// 1. Concurrency 64, 256, 1024: usher, HAProxy and NGINX with one thread, round-robin.
pub fn concurrency(ctx: &mut Ctx) -> anyhow::Result<String> {
    let (_bp, backends) = ctx.bench.backends(3, 1, None)?;
    let mut running = Vec::new();
    for s in [System::Usher, System::Haproxy, System::Nginx] {
        let r = systems::start(
            &ctx.bench.env,
            s,
            &backends,
            1,
            Mode::Rr,
            &UsherOpts::default(),
            "conc",
        )?;
        ctx.bench.prepare(&r, Mode::Rr, backends.len(), "conc")?;
        running.push(r);
    }
    let mut rows = Vec::new();
    for c in [64, 256, 1024] {
        let targets: Vec<_> = running
            .iter()
            .map(|r| (r.system.as_str().to_owned(), r, None))
            .collect();
        rows.extend(ctx.interleave("conc", &format!("c={c}"), c, &targets)?);
    }
    Ok(format!(
        "## 1. Concurrency (1 thread/worker, round-robin, 3 backends)\n\n{}\n",
        runs_table(&rows)
    ))
}

/// 2. N mostly idle keep-alive client connections: usher's RSS, and req/s of a c64 run beside them.
pub fn idle(ctx: &mut Ctx, n: usize) -> anyhow::Result<String> {
    let (_bp, backends) = ctx.bench.backends(3, 1, None)?;
    let r = ctx.usher(&backends, Mode::Rr, &UsherOpts::default(), "idle")?;
    let pid = r.proc.as_ref().context("no usher process")?.pid();
    let base_rows = ctx.interleave("idle", "before", 64, &[("usher".to_owned(), &r, None)])?;
    let before = procstat::tree_mem(pid);
    let args = vec![
        "idle".to_owned(),
        "--connect".to_owned(),
        r.addr.to_string(),
        "--conns".to_owned(),
        n.to_string(),
    ];
    let log = ctx.raw.join("idle-holder.log");
    let (holder, got) =
        Proc::spawn_reading("idle holder", "0", &ctx.bench.me, &args, &log, "holding", 1)?;
    let held: usize = got.first().and_then(|(k, _)| k.parse().ok()).unwrap_or(0);
    let holding = procstat::tree_mem(pid);
    let rows = ctx.interleave(
        "idle",
        &format!("{held} idle conns open"),
        64,
        &[("usher".to_owned(), &r, None)],
    )?;
    let after = procstat::tree_mem(pid);
    drop(holder);
    let mib = |k: u64| k as f64 / 1024.0;
    let mut s = format!("## 2. {n} mostly idle keep-alive client connections (1 thread)\n\n");
    let _ = writeln!(
        s,
        "`usher-bench idle --connect LB --conns {n}` (pinned to cpu 0) opened {held} connections, one GET \
         on each, and held them; then a c64 wrk run measured req/s beside them. Target: RSS ≤ 150 MiB.\n"
    );
    s.push_str("| moment | LB RSS | LB peak (VmHWM) |\n|---|---|---|\n");
    for (m, mem) in [
        ("after a c64 run, no idle conns", before),
        ("holding the idle conns", holding),
        ("holding them, after the c64 run(s)", after),
    ] {
        let _ = writeln!(
            s,
            "| {m} | {:.1} MiB | {:.1} MiB |",
            mib(mem.rss_kib),
            mib(mem.hwm_kib)
        );
    }
    let verdict = if mib(after.hwm_kib) <= 150.0 {
        "met"
    } else {
        "**missed**"
    };
    let _ = writeln!(
        s,
        "\nPeak {:.1} MiB: target ≤ 150 MiB {verdict}. Growth per idle connection: {:.1} KiB.\n",
        mib(after.hwm_kib),
        (holding.rss_kib.saturating_sub(before.rss_kib)) as f64 / held.max(1) as f64
    );
    let mut all = base_rows;
    all.extend(rows);
    s.push_str(&runs_table(&all));
    s.push('\n');
    Ok(s)
}

/// 3. Backends 3, 30, 300 (one backend process with N ports) × round-robin, least-conn, maglev.
pub fn backends(ctx: &mut Ctx) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for n in [3, 30, 300] {
        let (_bp, backends) = ctx.bench.backends(1, n, None)?;
        let mut running: Vec<(String, Running)> = Vec::new();
        for policy in ["round-robin", "least-conn", "maglev"] {
            let opts = UsherOpts {
                policy: policy.to_owned(),
                ..UsherOpts::default()
            };
            let r = ctx.usher(&backends, Mode::Rr, &opts, &format!("{policy}-{n}"))?;
            let (ok, err) = ctx.bench.rt.block_on(crate::drive::drive(r.addr, 30, 1));
            if ok != 30 || err != 0 {
                bail!("usher --policy {policy} with {n} backends: {ok}/30 requests answered 200");
            }
            running.push((policy.to_owned(), r));
        }
        if let Some((_, rr)) = running.first() {
            ctx.bench
                .rt
                .block_on(checks::check_rr(rr.addr, n.min(30)))?;
        }
        let targets: Vec<_> = running.iter().map(|(p, r)| (p.clone(), r, None)).collect();
        rows.extend(ctx.interleave("backends", &format!("{n} backends"), 64, &targets)?);
    }
    Ok(format!(
        "## 3. Number of backends (1 thread, c64, no affinity; N ports served by one backend process)\n\n\
         Selection cost should stay flat: req/s should not fall as backends grow.\n\n{}\n",
        runs_table(&rows)
    ))
}

/// 4. Learned app-cookie table from 1k to `max` entries: RSS growth per entry.
pub fn app_cookie(ctx: &mut Ctx, max: usize) -> anyhow::Result<String> {
    let (_bp, backends) = ctx.bench.backends(3, 1, Some("JSESSIONID"))?;
    let cfg = ctx.raw.join("app-cookie-lb.toml");
    let mut text = format!(
        "# usher-bench scaling: learned app-cookie table\npolicy = \"round-robin\"\n\
         affinity = \"app-cookie:JSESSIONID\"\nthreads = 1\n\n[app_cookie]\ncapacity = {}\nttl = \"1h\"\n\n\
         [admin]\nlisten = \"off\"\n",
        (max * 2).max(1000)
    );
    for (name, addr) in &backends {
        let _ = write!(text, "\n[[backend]]\nid = \"{name}\"\naddr = \"{addr}\"\n");
    }
    std::fs::write(&cfg, text)?;
    let opts = UsherOpts {
        affinity: Some("app-cookie:JSESSIONID".to_owned()),
        config: Some(cfg),
        ..UsherOpts::default()
    };
    let r = ctx.usher(&backends, Mode::Rr, &opts, "appcookie")?;
    let pid = r.proc.as_ref().context("no usher process")?.pid();
    let check = ctx.bench.rt.block_on(async {
        let c = checks::learn_cookies(r.addr, "JSESSIONID", 30).await?;
        checks::check_sticky(r.addr, &c, backends.len()).await
    });
    let check = match check {
        Ok(d) => format!("stickiness check: {d}"),
        Err(e) => format!("stickiness check **FAILED**: {e:#}"),
    };
    let base = procstat::tree_mem(pid);
    let mut s = String::from("## 4. Learned app-cookie table (1 thread)\n\n");
    let _ = writeln!(
        s,
        "Backends answer every request with a new `Set-Cookie: JSESSIONID=…`; usher runs with \
         `--affinity app-cookie:JSESSIONID` and `[app_cookie] capacity = {}` (config: `app-cookie-lb.toml` in the raw \
         directory). `usher-bench drive` (cpu 0, 64 connections, no cookie) sends requests until the table has \
         learned the number of entries shown (each response teaches one). {check}.\n",
        (max * 2).max(1000)
    );
    s.push_str("| entries learned | LB RSS | Δ RSS since 1k entries | bytes / entry since 1k | bytes / entry (this step) | drive req/s |\n|---|---|---|---|---|---|\n");
    let _ = writeln!(
        s,
        "| ~160 (checks) | {:.1} MiB | | | | |",
        base.rss_kib as f64 / 1024.0
    );
    let (mut total, mut prev) = (0usize, base.rss_kib);
    let mut at_1k: Option<u64> = None;
    let mut target = 1000usize;
    while target <= max {
        let o = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&ctx.bench.me)
            .args([
                "drive",
                "--connect",
                &r.addr.to_string(),
                "--requests",
                &(target - total).to_string(),
                "--conns",
                "64",
            ])
            .output()
            .context("cannot run usher-bench drive")?;
        let out = String::from_utf8_lossy(&o.stdout);
        let f: Vec<&str> = out.split_whitespace().collect();
        let (ok, errors, secs): (usize, usize, f64) = match f.as_slice() {
            ["driven", a, b, c] => (a.parse()?, b.parse()?, c.parse()?),
            _ => bail!("drive printed {out:?}"),
        };
        if errors > 0 {
            bail!("drive: {errors} failed requests (of {})", target - total);
        }
        let m = procstat::tree_mem(pid);
        // From the 1k point on: the first step also pays for connection buffers and warm-up.
        let first = *at_1k.get_or_insert(m.rss_kib);
        let d_all = m.rss_kib.saturating_sub(first) as f64 * 1024.0;
        let d_step = m.rss_kib.saturating_sub(prev) as f64 * 1024.0;
        let since = target.saturating_sub(1000);
        let _ = writeln!(
            s,
            "| {target} | {:.1} MiB | {} | {} | {:.0} | {:.0} |",
            m.rss_kib as f64 / 1024.0,
            if since == 0 {
                "—".to_owned()
            } else {
                format!("{:.1} MiB", d_all / 1_048_576.0)
            },
            if since == 0 {
                "—".to_owned()
            } else {
                format!("{:.0}", d_all / since as f64)
            },
            d_step / (target - total) as f64,
            ok as f64 / secs.max(1e-9)
        );
        eprintln!("   appcookie {target} entries: RSS {} KiB", m.rss_kib);
        total = target;
        prev = m.rss_kib;
        target *= 10;
    }
    s.push('\n');
    Ok(s)
}

/// 5. Sealed cookie vs no affinity: usher sticky vs rr at c64, 1 thread.
pub fn sticky(ctx: &mut Ctx) -> anyhow::Result<String> {
    let (_bp, backends) = ctx.bench.backends(3, 1, None)?;
    let rr = ctx.usher(&backends, Mode::Rr, &UsherOpts::default(), "sticky-rr")?;
    let st = ctx.usher(
        &backends,
        Mode::Sticky,
        &UsherOpts::default(),
        "sticky-cookie",
    )?;
    ctx.bench.prepare(&rr, Mode::Rr, 3, "scaling-rr")?;
    let (cookies, _) = ctx.bench.prepare(&st, Mode::Sticky, 3, "scaling-sticky")?;
    let targets: Vec<(String, &Running, Option<PathBuf>)> = vec![
        ("usher --affinity none".to_owned(), &rr, None),
        ("usher --affinity cookie".to_owned(), &st, cookies),
    ];
    let rows = ctx.interleave("sticky", "c64", 64, &targets)?;
    let med = |name: &str| {
        crate::compare_report::summarize(
            &rows
                .iter()
                .filter(|r| r.system == name)
                .map(|r| r.m)
                .collect::<Vec<_>>(),
        )
        .map(|a| a.rps.median)
    };
    let mut s = format!(
        "## 5. Sealed cookie vs no affinity (1 thread, c64)\n\n{}\n",
        runs_table(&rows)
    );
    if let (Some(a), Some(b)) = (med("usher --affinity none"), med("usher --affinity cookie")) {
        let cost = (1.0 - b / a) * 100.0;
        let _ = writeln!(
            s,
            "Sticky costs {cost:.1} % throughput (target ≤ 5 %: {}).\n",
            if cost <= 5.0 { "met" } else { "**missed**" }
        );
    }
    Ok(s)
}
