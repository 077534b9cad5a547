//! What the reports say about the run: date, tool versions, kernel, CPU, fd limit.

use std::fmt::Write as _;
use std::path::Path;

use crate::procs::capture;

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    date_of_days((secs / 86_400) as i64)
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn date_of_days(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Number of CPUs listed in /proc/cpuinfo (falls back to the scheduler's view).
pub fn cpu_count() -> usize {
    let n = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The CPU model name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// The soft fd limit of this process (`ulimit -n`).
pub fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

/// Markdown bullet list: versions of usher (git rev), haproxy, nginx, wrk, kernel, CPU.
pub fn versions(repo: &Path) -> String {
    let repo_s = repo.display().to_string();
    let rev = capture("git", &["-C", &repo_s, "rev-parse", "--short", "HEAD"]);
    let dirty = !capture(
        "git",
        &[
            "-C",
            &repo_s,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_empty();
    let first = |s: String| s.lines().next().unwrap_or("?").to_owned();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- usher: git {rev}{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "- haproxy: {}", first(capture("haproxy", &["-v"])));
    let _ = writeln!(s, "- nginx: {}", first(capture("nginx", &["-v"])));
    let _ = writeln!(s, "- wrk: {}", first(capture("wrk", &["--version"])));
    let _ = writeln!(s, "- kernel: {}", capture("uname", &["-sr"]));
    let _ = writeln!(s, "- CPU: {} × {}", cpu_count(), cpu_model());
    let _ = writeln!(s, "- fd limit (ulimit -n): {}", fd_limit());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        s,
        "- load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    s
}

/// The pinning, as the reports print it.
pub fn pinning() -> String {
    let n = cpu_count();
    let mut s = String::from(
        "wrk `taskset -c 0` with `-t1`; a proxy with 1 thread/worker `taskset -c 1`, with 2 \
         `taskset -c 0,1`; the three backends (one thread each) floating on `taskset -c 0,1`.",
    );
    if n > 2 {
        let _ = write!(
            s,
            " This machine has {n} CPUs; the same 2-CPU layout is used (cpu0 = load, cpu1 = proxy), the other CPUs stay idle."
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(date_of_days(0), "1970-01-01");
        assert_eq!(date_of_days(11_016), "2000-02-29");
        assert_eq!(date_of_days(20_454), "2026-01-01");
        assert_eq!(today().len(), 10);
    }
}
