//! The `swarm-run` workload: what a user runs, as whole processes. Each
//! figure starts this same binary with `swarm run` and waits for it: the
//! start-up floor (a 1-step blueprint) and a 1,000-step fan-out, with the
//! journal on (the default) and off. Every run's exit status and printed
//! result are checked. Wall times come from runs nobody watches; the peak
//! RSS from separate runs watched by a sampler.

use super::line;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ONE_STEP: &str = r#"local swarm = require "swarm"
return swarm.blueprint "one" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#;

const FANOUT: &str = r#"local swarm = require "swarm"
return swarm.blueprint "fanout" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local items = {}
    for i = 1, n do items[i] = i end
    local out = swarm.map(items, function(i) return swarm.step("echo", i) end, { concurrency = n })
    local sum = 0
    for _, v in ipairs(out) do sum = sum + v end
    return sum
  end,
}
"#;

/// Median wall time (ms) and largest peak RSS (MB) of `swarm run FILE
/// ARGS`, every run checked to exit 0 printing `expect`. The `runs` timed
/// runs are left alone; the RSS comes from `runs / 3 + 1` further runs
/// watched by a sampler, which on a 2-core machine takes CPU the measured
/// process would otherwise have (it added about a millisecond to a 3 ms
/// start-up).
fn measure(file: &Path, args: &[&str], expect: &str, runs: usize) -> (f64, f64) {
    let mut walls: Vec<f64> = (0..runs)
        .map(|_| run_once(file, args, expect, false).0)
        .collect();
    let peak_kb = (0..runs / 3 + 1)
        .map(|_| run_once(file, args, expect, true).1)
        .max()
        .unwrap_or(0);
    walls.sort_by(f64::total_cmp);
    (walls[walls.len() / 2], peak_kb as f64 / 1024.0)
}

/// One checked `swarm run`: its wall time (ms) and, when `sample`d, its
/// peak RSS (kB).
fn run_once(file: &Path, args: &[&str], expect: &str, sample: bool) -> (f64, i64) {
    let exe = std::env::current_exe().expect("the swarm binary");
    let dir = file.parent().expect("scratch dir");
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .arg("run")
        .arg(file)
        .args(args)
        .arg("--json")
        .env("SWARM_DB", dir.join("journal.db"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn swarm run");
    let stdout = child.stdout.take().expect("stdout");
    let rss_kb = if sample {
        sample_peak_rss(child.id())
    } else {
        0
    };
    let status = child.wait().expect("wait").code().unwrap_or(-1);
    let wall = start.elapsed().as_secs_f64() * 1e3;
    let out = std::io::read_to_string(stdout).unwrap_or_default();
    assert!(
        status == 0 && out.trim() == expect,
        "bench swarm-run: `swarm run {}` exited {status} printing `{}` (expected `{expect}`)",
        file.display(),
        out.trim()
    );
    (wall, rss_kb)
}

/// The child's peak RSS (kB): its `VmHWM`, read until it exits. (`wait4`'s
/// `ru_maxrss` would include this bench process's own, which the child
/// inherits across `exec`.) The high-water mark only grows, so the last
/// read is the peak up to the child's last moments, when it only frees.
/// Reads taken before the child has exec'd `swarm run` (its arguments are
/// still this process's) see this process's copy (after a heavy workload,
/// hundreds of MB) and are skipped.
fn sample_peak_rss(pid: u32) -> i64 {
    let path = format!("/proc/{pid}/status");
    let cmdline = format!("/proc/{pid}/cmdline");
    let mut peak = 0;
    loop {
        let Ok(status) = std::fs::read_to_string(&path) else {
            return peak;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        };
        // Exited: a zombie until waited for.
        if matches!(field("State:").as_deref(), Some("Z" | "X") | None) {
            return peak;
        }
        let args = std::fs::read(&cmdline).unwrap_or_default();
        if args.split(|b| *b == 0).nth(1) == Some(b"run".as_slice()) {
            let hwm = field("VmHWM:").and_then(|kb| kb.parse::<i64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn scratch(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swarm-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let p = dir.join(name);
    std::fs::write(&p, body).expect("blueprint");
    p
}

pub fn swarm_run() {
    let one = scratch("one.lua", ONE_STEP);
    let fan = scratch("fanout.lua", FANOUT);
    for (journal, flag) in [("journal", None), ("no_journal", Some("--no-journal"))] {
        let mut args = vec!["--input", "7"];
        args.extend(flag);
        let (ms, mb) = measure(&one, &args, "7", 21);
        line("swarm-run", &format!("start_1step_ms_{journal}"), ms, "ms");
        line(
            "swarm-run",
            &format!("start_1step_peak_rss_{journal}"),
            mb,
            "MB",
        );
        let mut args = vec!["--input", "1000"];
        args.extend(flag);
        let (ms, mb) = measure(&fan, &args, "500500", 7);
        line("swarm-run", &format!("fanout1000_ms_{journal}"), ms, "ms");
        line(
            "swarm-run",
            &format!("fanout1000_peak_rss_{journal}"),
            mb,
            "MB",
        );
    }
    let _ = std::fs::remove_dir_all(one.parent().expect("scratch dir"));
}
