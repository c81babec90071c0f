//! Fenced ownership, tried as an operator having a bad day would: an owner
//! frozen (SIGSTOP) past its lease while another process takes the run,
//! and a resumer whose clock is far off. Real processes, real signals, a
//! real SQLite journal; every wait polls a condition under a hang guard.
//!
//! The promise: no step starts in an owner that was fenced out, and a
//! resumer's clock decides nothing (leases are judged on the machine's
//! boot clock, which `libfaketime` does not reach).

mod common;

use common::HANG_GUARD;
use common::dir::{Dir, text, wait_exit};
use std::process::{Child, Output};
use std::time::Instant;

/// A 30-step flow whose steps from the fourth on wait for the file `gate`.
/// Each step appends `start <i> <pid of its swarm process>` to `effects`
/// as it begins, so every execution of every step is visible and whose.
fn stepped(d: &Dir) -> String {
    let agent = format!(
        "import json, os, sys, time\n\
         i = json.load(sys.stdin)['input']\n\
         with open({fx:?}, 'a') as f:\n    f.write('start %d %d\\n' % (i, os.getppid()))\n\
         while i >= 4 and not os.path.exists({gate:?}):\n    time.sleep(0.02)\n\
         print(i)\n",
        fx = d.0.join("effects").display().to_string(),
        gate = d.0.join("gate").display().to_string(),
    );
    let agent = d.file("agent.py", &agent);
    let body = format!(
        "local swarm = require 'swarm'\n\
         return swarm.blueprint 'thirty' {{\n\
           agents = {{ work = swarm.agent.process {{ cmd = {{ 'python3', {agent:?} }} }} }},\n\
           flow = function()\n\
             local sum = 0\n\
             for i = 1, 30 do sum = sum + swarm.step('work', i) end\n\
             return sum\n\
           end,\n\
         }}\n"
    );
    d.file("thirty.lua", &body)
}

/// `(step, pid)` of every step execution so far.
fn starts(d: &Dir) -> Vec<(u32, u32)> {
    std::fs::read_to_string(d.0.join("effects"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < HANG_GUARD, "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// `swarm resume run` until it is not refused as owned (exit 2), under
/// the hang guard. Returns the resumer's output.
fn resume_until_taken(d: &Dir, run: &str, env: &[(&str, &str)]) -> Output {
    let t0 = Instant::now();
    loop {
        let mut c = d.cmd(&["resume", run]);
        c.envs(env.iter().copied());
        let out = wait_exit(c.spawn().unwrap(), HANG_GUARD.as_secs());
        if !(out.status.code() == Some(2) && text(&out).contains("is being run by")) {
            return out;
        }
        assert!(t0.elapsed() < HANG_GUARD, "the run was never taken over");
    }
}

/// Starts run `id` of the stepped flow with a 1 s lease, and freezes its
/// owner (SIGSTOP) once steps 1-3 are done and step 4 waits at the gate.
/// Returns the owner and its pid.
fn frozen_at_step_four(d: &Dir, id: &str) -> (Child, u32) {
    let bp = stepped(d);
    let mut owner = d.cmd(&["run", &bp, "--run-id", id]);
    owner.env("SWARM_LEASE_MS", "1000");
    let owner = owner.spawn().unwrap();
    let pid = owner.id();
    wait_for("the fourth step to start", || starts(d).len() >= 4);
    signal(&owner, libc::SIGSTOP);
    (owner, pid)
}

/// The run as `swarm show --json` reports it.
fn shown(d: &Dir, id: &str) -> serde_json::Value {
    let out = d.swarm(&["show", id, "--json"]);
    let head = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(head.lines().next().unwrap_or("null")).unwrap()
}

#[test]
fn a_frozen_owner_woken_after_a_takeover_runs_no_further_step_and_says_it_lost_the_run() {
    let d = Dir::new("fence-frozen");
    let (owner, old) = frozen_at_step_four(&d, "frozen");
    // The lease lapses while it is frozen; a resumer takes the run over
    // and, once the gate opens, runs it to the end.
    std::fs::write(d.0.join("gate"), "").unwrap();
    let taken = resume_until_taken(&d, "frozen", &[("SWARM_LEASE_MS", "1000")]);
    assert!(taken.status.success(), "{}", text(&taken));
    assert_eq!(String::from_utf8_lossy(&taken.stdout).trim(), "465");
    let before_wake = starts(&d).iter().filter(|(_, p)| *p == old).count();
    assert_eq!(before_wake, 4, "{:?}", starts(&d));
    // Woken, the old owner starts nothing more, says it lost the run and
    // does not print a result as if it had passed.
    signal(&owner, libc::SIGCONT);
    let out = wait_exit(owner, HANG_GUARD.as_secs());
    let after_wake = starts(&d).iter().filter(|(_, p)| *p == old).count();
    assert_eq!(
        after_wake,
        4,
        "the fenced owner started steps: {:?}",
        starts(&d)
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("lost run frozen"), "{msg}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("465"),
        "{msg}"
    );
    // Every step ran once in the new owner, the fourth (in flight when the
    // old one froze) possibly in both: never any other.
    for i in 1..=30u32 {
        let n = starts(&d).iter().filter(|(s, _)| *s == i).count();
        assert!(n == 1 || (i == 4 && n == 2), "step {i} ran {n} times");
    }
    let head = shown(&d, "frozen");
    assert_eq!(head["run"]["status"], "pass", "{head}");
    assert_eq!(head["run"]["result"], 465);
}

/// libfaketime's preload library, where Debian's `libfaketime` puts it.
fn faketime() -> Option<String> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_string);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing (CI installs it: apt-get install libfaketime)"
        );
        eprintln!("skipped: libfaketime is not installed (apt-get install libfaketime)");
    }
    found
}

#[test]
fn a_resumer_whose_clock_runs_ahead_cannot_take_a_live_run() {
    let Some(lib) = faketime() else { return };
    let d = Dir::new("fence-ahead");
    let bp = stepped(&d);
    // A short lease, renewed every third of it: the resumers below try
    // across several renewals.
    let mut owner = d.cmd(&["run", &bp, "--run-id", "live"]);
    owner.env("SWARM_LEASE_MS", "1500");
    let owner = owner.spawn().unwrap();
    wait_for("the fourth step to start", || starts(&d).len() >= 4);
    // The faked clock really is ahead in the resumer (checked, so that a
    // preload that silently did nothing cannot make this test pass).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let date = std::process::Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+45s")
        .output()
        .unwrap();
    let faked: u64 = String::from_utf8_lossy(&date.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(faked >= now + 40, "libfaketime did not shift the clock");
    for (ahead, tries) in [("+45s", 6), ("+1h", 3)] {
        for _ in 0..tries {
            let mut c = d.cmd(&["resume", "live"]);
            c.env("LD_PRELOAD", &lib).env("FAKETIME", ahead);
            c.env("SWARM_LEASE_MS", "1500");
            let out = wait_exit(c.spawn().unwrap(), HANG_GUARD.as_secs());
            assert_eq!(out.status.code(), Some(2), "{ahead}: {}", text(&out));
            assert!(text(&out).contains("is being run by"), "{}", text(&out));
        }
    }
    // The owner was never disturbed: it finishes the run alone.
    std::fs::write(d.0.join("gate"), "").unwrap();
    let out = wait_exit(owner, HANG_GUARD.as_secs());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "465");
    assert_eq!(starts(&d).len(), 30, "{:?}", starts(&d));
}

#[test]
fn a_resumer_whose_clock_runs_behind_still_takes_a_dead_owners_run() {
    let Some(lib) = faketime() else { return };
    let d = Dir::new("fence-behind");
    let bp = stepped(&d);
    // The owner runs in its own pid namespace (like a container's main
    // process): its pid means nothing here, so only its lease can free
    // the run once it is killed.
    let mut owner = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", &bp, "--run-id", "dead", "--db", &d.db()])
        .env("SWARM_LEASE_MS", "1500")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs the owner in its own pid namespace");
    wait_for("the fourth step to start", || starts(&d).len() >= 4);
    owner.kill().unwrap();
    owner.wait().unwrap();
    std::fs::write(d.0.join("gate"), "").unwrap();
    // An hour behind: a wall-clock lease would look 59 minutes from over.
    let out = resume_until_taken(
        &d,
        "dead",
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", "-1h"),
            ("SWARM_LEASE_MS", "1500"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "465");
}

#[test]
fn cancelling_a_frozen_owners_run_fences_it_out_and_it_starts_nothing_on_waking() {
    let d = Dir::new("fence-cancel");
    let (owner, old) = frozen_at_step_four(&d, "halt");
    // Once its lease lapsed nobody executes the run: the cancel is final
    // at once (before, it is a request the owner would act on).
    let t0 = Instant::now();
    loop {
        let out = d.swarm(&["cancel", "halt"]);
        assert!(out.status.success(), "{}", text(&out));
        if String::from_utf8_lossy(&out.stdout).trim() == "cancelled" {
            break;
        }
        assert!(t0.elapsed() < HANG_GUARD, "never cancelled: {}", text(&out));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::write(d.0.join("gate"), "").unwrap();
    signal(&owner, libc::SIGCONT);
    let out = wait_exit(owner, HANG_GUARD.as_secs());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("set cancelled from outside"),
        "{}",
        text(&out)
    );
    let by_old = starts(&d).iter().filter(|(_, p)| *p == old).count();
    assert_eq!(
        by_old,
        4,
        "the fenced owner started steps: {:?}",
        starts(&d)
    );
    let head = shown(&d, "halt");
    assert_eq!(head["run"]["status"], "cancelled", "{head}");
    let again = d.swarm(&["resume", "halt"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
}
