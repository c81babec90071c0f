//! One owner per run: a run is executed by exactly one process at a time,
//! holding a lease it renews; another may take it over only when the lease
//! has expired (or, on the same machine, when the owner's process is gone),
//! and a sweep never relabels a finished or live run. Real processes, a
//! real SQLite file, and a real pid namespace for the "container" owner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HANG_GUARD: Duration = Duration::from_secs(60);

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("own-{name}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args)
            .current_dir(&self.0)
            .env("SWARM_DB", self.0.join("swarm.db"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
    fn swarm(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    /// A blueprint whose step waits for the file `gate` (created by the
    /// test), then appends a line to `effects`: each execution is visible.
    fn gated(&self) -> String {
        let body = format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'g' {{\n  agents = {{ work = swarm.agent.process {{ shell = 'echo $$ >> \"{pids}\"; while [ ! -e \"{gate}\" ]; do sleep 0.05; done; echo ran >> \"{fx}\"; echo 1' }} }},\n  flow = function() swarm.step('work', 1); return 'done' end,\n}}\n",
            gate = self.0.join("gate").display(),
            fx = self.0.join("effects").display(),
            pids = self.0.join("pids").display(),
        );
        let p = self.0.join("g.lua");
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }
    /// Kills the agents a killed owner left behind (SIGKILL cannot take
    /// its process groups down with it; `swarm resume` runs the step again).
    fn kill_orphans(&self) {
        let pids = std::fs::read_to_string(self.0.join("pids")).unwrap_or_default();
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: signalling a process group this test started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(self.0.join("pids"));
    }
    fn open_gate(&self) {
        std::fs::write(self.0.join("gate"), "").unwrap();
    }
    fn effects(&self) -> usize {
        std::fs::read_to_string(self.0.join("effects"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
    /// The run as `swarm show --json` reports it.
    fn status(&self, run: &str) -> Option<String> {
        let out = self.swarm(&["show", run, "--json"]);
        let head = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&head).ok()?;
        v["run"]["status"].as_str().map(str::to_string)
    }
}

fn self_has_pids(d: &Dir) -> bool {
    d.0.join("pids").exists()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < HANG_GUARD, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_child(mut c: Child) -> Output {
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < HANG_GUARD, "process hung");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

#[test]
fn two_resumers_at_once_run_the_remaining_steps_once() {
    let d = Dir::new("two");
    let bp = d.gated();
    // Start, then kill the first owner while its step waits at the gate.
    let mut first = d.cmd(&["run", &bp, "--run-id", "two"]).spawn().unwrap();
    wait_for("the run to start", || {
        d.status("two").as_deref() == Some("running")
    });
    wait_for("the step to start", || self_has_pids(&d));
    first.kill().unwrap();
    first.wait().unwrap();
    d.kill_orphans();
    // Two resumers race; exactly one may own the run.
    let a = d.cmd(&["resume", "two"]).spawn().unwrap();
    let b = d.cmd(&["resume", "two"]).spawn().unwrap();
    let (mut a, mut b) = (Some(a), Some(b));
    let t0 = Instant::now();
    let refused = loop {
        assert!(t0.elapsed() < HANG_GUARD, "neither resumer was refused");
        if let Some(c) = a.as_mut()
            && c.try_wait().unwrap().is_some()
        {
            break wait_child(a.take().unwrap());
        }
        if let Some(c) = b.as_mut()
            && c.try_wait().unwrap().is_some()
        {
            break wait_child(b.take().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let msg = text(&refused);
    assert!(
        msg.contains("is being run by") && msg.contains("its lease expires in"),
        "{msg}"
    );
    d.open_gate();
    let owner = wait_child(a.or(b).unwrap());
    assert!(owner.status.success(), "{}", text(&owner));
    assert_eq!(d.effects(), 1, "the step ran more than once");
    assert_eq!(d.status("two").as_deref(), Some("pass"));
}

#[test]
fn an_owner_in_another_pid_namespace_holds_the_run_until_its_lease_expires() {
    let d = Dir::new("container");
    let bp = d.gated();
    // The owner runs as pid 1 of its own pid namespace, like a container's
    // main process: its pid means nothing here.
    let mut owner = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", &bp, "--run-id", "ctr"])
        .current_dir(&d.0)
        .env("SWARM_DB", d.0.join("swarm.db"))
        // Long enough that the resume just below always finds it live.
        .env("SWARM_LEASE_MS", "10000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs the owner in its own pid namespace");
    wait_for("the run to start", || {
        d.status("ctr").as_deref() == Some("running")
    });
    owner.kill().unwrap();
    owner.wait().unwrap();
    // Its lease has not expired: refused, naming the owner.
    let out = d.swarm(&["resume", "ctr"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("(pid 1)") && msg.contains("is being run by"),
        "{msg}"
    );
    // Once it expires (10 s without renewal), the run is interrupted and
    // resumable.
    d.open_gate();
    wait_for("the lease to expire", || {
        d.status("ctr").as_deref() == Some("interrupted")
    });
    let out = d.swarm(&["resume", "ctr"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.status("ctr").as_deref(), Some("pass"));
}

#[test]
fn sweeps_never_relabel_finished_or_live_runs() {
    let d = Dir::new("sweep");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/hello.lua");
    let hello = hello.to_str().unwrap();
    let mut children = Vec::new();
    for i in 0..12 {
        let id = format!("s{i}");
        children.push(d.cmd(&["run", hello, "--run-id", &id]).spawn().unwrap());
        // Every other command opens the journal, which sweeps.
        children.push(d.cmd(&["runs"]).spawn().unwrap());
    }
    for c in children {
        let out = wait_child(c);
        assert!(out.status.success(), "{}", text(&out));
    }
    for i in 0..12 {
        assert_eq!(d.status(&format!("s{i}")).as_deref(), Some("pass"));
    }
}

#[test]
fn signals_interrupt_a_durable_run_and_resume_continues_it() {
    for (sig, name) in [
        (libc::SIGTERM, "term"),
        (libc::SIGHUP, "hup"),
        (libc::SIGINT, "int"),
    ] {
        let d = Dir::new(&format!("sig-{name}"));
        let bp = d.gated();
        let run = d.cmd(&["run", &bp, "--run-id", "sig"]).spawn().unwrap();
        wait_for("the step to start", || self_has_pids(&d));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(run.id() as i32, sig) };
        let out = wait_child(run);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", text(&out));
        assert!(text(&out).contains("swarm resume sig"), "{}", text(&out));
        assert_eq!(d.status("sig").as_deref(), Some("interrupted"));
        // The interrupted step's process group was killed with it.
        let pid: i32 = std::fs::read_to_string(d.0.join("pids"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: probing a pid with signal 0 sends nothing.
        wait_for("the agent to die", || unsafe { libc::kill(pid, 0) } != 0);
        d.open_gate();
        let out = d.swarm(&["resume", "sig"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(d.effects(), 1);
        assert_eq!(d.status("sig").as_deref(), Some("pass"));
    }
}

#[test]
fn a_journal_write_that_fails_interrupts_the_run_and_resume_continues() {
    use std::io::BufRead;
    let d = Dir::new("fault");
    let bp = d.gated();
    let db = d.0.join("swarm.db");
    let run = d
        .cmd(&["run", &bp, "--run-id", "f1"])
        .env("SWARM_DB_BUSY_MS", "200")
        .spawn()
        .unwrap();
    wait_for("the step to start", || self_has_pids(&d));
    // Another process holds the database's write lock past the busy timeout.
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    d.open_gate();
    let out = wait_child(run);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("locked by another process"), "{t}");
    assert!(t.contains("swarm resume f1"), "{t}");
    // Lock released: the run is interrupted (its owner is gone) and resumes.
    drop(locker.stdin.take());
    locker.wait().unwrap();
    wait_for("the run to be resumable", || {
        d.status("f1").as_deref() == Some("interrupted")
    });
    let out = d.swarm(&["resume", "f1", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.status("f1").as_deref(), Some("pass"));
}

#[test]
fn random_floats_replay_bit_exact() {
    let d = Dir::new("floats");
    let bp = d.0.join("f.lua");
    // Each random float feeds a step's input: one ulp off on replay and the
    // input hash would differ (divergence).
    std::fs::write(
        &bp,
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'f' {\n  agents = { e = swarm.agent.rust { name = 'echo' } },\n  flow = function()\n    local sum = 0\n    for i = 1, 300 do\n      local r = math.random() * 10 ^ (i % 30 - 15)\n      sum = sum + swarm.step('e', r)\n    end\n    swarm.ask('go')\n    return sum\n  end,\n}\n",
    )
    .unwrap();
    let bp = bp.display().to_string();
    let out = d.swarm(&["run", &bp, "--run-id", "fl", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(d.swarm(&["answer", "fl", "go", "yes"]).status.success());
    let out = d.swarm(&["resume", "fl", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_edited_helper_is_refused_on_resume_unless_forced() {
    let d = Dir::new("helper");
    std::fs::write(
        d.0.join("util.lua"),
        "return { twice = function(x) return x * 2 end }\n",
    )
    .unwrap();
    let bp = d.0.join("h.lua");
    std::fs::write(
        &bp,
        "local swarm = require 'swarm'\nlocal util = require 'util'\nreturn swarm.blueprint 'h' {\n  flow = function() swarm.ask('go'); return util.twice(21) end,\n}\n",
    )
    .unwrap();
    let bp = bp.display().to_string();
    let out = d.swarm(&["run", &bp, "--run-id", "h1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(d.swarm(&["answer", "h1", "go", "yes"]).status.success());
    std::fs::write(
        d.0.join("util.lua"),
        "return { twice = function(x) return x * 3 end }\n",
    )
    .unwrap();
    let out = d.swarm(&["resume", "h1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("util.lua (was ") && t.contains(", now ") && t.contains("--force"),
        "{t}"
    );
    let out = d.swarm(&["resume", "h1", "--force", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "63");
}

/// The journal entries of `run`, as `swarm show --json` reports them.
fn journal_of(d: &Dir, run: &str) -> Vec<serde_json::Value> {
    let out = d.swarm(&["show", run, "--json"]);
    let head = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&head).unwrap_or_default();
    v["journal"].as_array().cloned().unwrap_or_default()
}

#[test]
fn sleeps_and_clocks_replay_from_the_journal() {
    let d = Dir::new("clock");
    let bp = d.0.join("c.lua");
    std::fs::write(
        &bp,
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'c' {\n  flow = function()\n    swarm.sleep(1500)\n    local t, c = os.time(), os.clock()\n    swarm.ask('go')\n    return { t = t, c = c }\n  end,\n}\n",
    )
    .unwrap();
    let bp = bp.display().to_string();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let run = d.cmd(&["run", &bp, "--run-id", "c1"]).spawn().unwrap();
    // Interrupt it while it sleeps: the wake-up time is already journaled.
    wait_for("the sleep to be journaled", || {
        journal_of(&d, "c1").iter().any(|e| e["kind"] == "sleep")
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_child(run).status.code(), Some(3));
    let wake = journal_of(&d, "c1")
        .iter()
        .find(|e| e["kind"] == "sleep")
        .and_then(|e| e["value"].as_f64())
        .expect("the wake-up time");
    assert!(
        wake >= started + 1500.0 && wake < started + 1500.0 + 60_000.0,
        "{wake}"
    );
    // Resumed, it sleeps what is left, reads the clocks, and waits.
    let out = d.swarm(&["resume", "c1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let kinds: Vec<String> = journal_of(&d, "c1")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "sleep").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"os.time".to_string()) && kinds.contains(&"os.clock".to_string()));
    let recorded: Vec<serde_json::Value> = journal_of(&d, "c1")
        .into_iter()
        .filter(|e| e["kind"] == "os.time" || e["kind"] == "os.clock")
        .map(|e| e["value"].clone())
        .collect();
    assert!(d.swarm(&["answer", "c1", "go", "yes"]).status.success());
    let out = d.swarm(&["resume", "c1", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The replayed flow saw the first reading of each clock.
    assert_eq!(vec![v["t"].clone(), v["c"].clone()], recorded);
}

#[test]
fn prune_deletes_finished_runs_and_show_pages_events() {
    let d = Dir::new("prune");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/hello.lua");
    let hello = hello.to_str().unwrap();
    for i in 0..4 {
        let out = d.swarm(&["run", hello, "--run-id", &format!("p{i}")]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // A waiting run is never pruned.
    let bp = d.0.join("w.lua");
    std::fs::write(&bp, "local swarm = require 'swarm'\nreturn swarm.blueprint 'w' { flow = function() return swarm.ask('go') end }\n").unwrap();
    assert_eq!(
        d.swarm(&["run", bp.to_str().unwrap(), "--run-id", "wait"])
            .status
            .code(),
        Some(3)
    );

    // show: the last N events, a page after an id, all of them; it says
    // what it left out.
    let out = d.swarm(&["show", "p0", "--events", "3"]);
    let t = text(&out);
    assert!(t.contains("showing at most 3 after id "), "{t}");
    let out = d.swarm(&["show", "p0", "--json", "--all"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let total = lines[0]["events_total"].as_u64().unwrap();
    assert_eq!(
        lines.len() as u64,
        total + 1,
        "NDJSON: a head line, then every event"
    );
    let first = lines[1]["id"].as_i64().unwrap();
    let out = d.swarm(&[
        "show",
        "p0",
        "--json",
        "--after",
        &first.to_string(),
        "--events",
        "2",
    ]);
    let page: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(page.len(), 3);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(page[1]).unwrap()["id"],
        lines[2]["id"]
    );

    // prune: keep the newest finished run, delete the rest, leave `wait`.
    let out = d.swarm(&["prune", "--older-than", "0s", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pruned 3 runs"), "{}", text(&out));
    assert_eq!(d.status("p3").as_deref(), Some("pass"));
    assert_eq!(d.status("p0"), None);
    assert_eq!(d.status("wait").as_deref(), Some("waiting"));
    let out = d.swarm(&["show", "p0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn doctor_finds_a_damaged_journal_and_nothing_writes_to_it_after() {
    let d = Dir::new("doctor");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/hello.lua");
    let hello = hello.to_str().unwrap();
    for i in 0..30 {
        assert!(
            d.swarm(&["run", hello, "--run-id", &format!("h{i}")])
                .status
                .success()
        );
    }
    let out = d.swarm(&["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("integrity  ok") && text(&out).contains("all well"));
    // Damage a data page in the middle of the file (every process has
    // exited, so the WAL is checkpointed into it).
    let db = d.0.join("swarm.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let at = (bytes.len() / page / 2) * page;
    bytes[at..at + page].fill(0x41);
    std::fs::write(&db, &bytes).unwrap();
    let out = d.swarm(&["doctor"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("integrity") && (t.contains("problem") || t.contains("malformed")),
        "{t}"
    );
    assert!(t.contains("nothing will be written to this file"), "{t}");
    // From now on no command writes to it: a clear error, the file as it was.
    let before = std::fs::read(&db).unwrap();
    let out = d.swarm(&["run", hello, "--run-id", "after"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("swarm doctor"), "{}", text(&out));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the damaged file was written to"
    );
}

#[test]
fn layer_questions_are_journaled_and_answered_from_another_process() {
    let d = Dir::new("layerq");
    let review = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/review.lua");
    let review = review.to_str().unwrap();
    // The escalation layer asks `escalate:reviewer`; nobody passes it here.
    let run = d
        .cmd(&[
            "run",
            review,
            "--run-id",
            "lq",
            "--wait-answers",
            "--json",
            "--input",
            r#"{"topic":"layers"}"#,
            "--answer",
            "approve=yes",
        ])
        .spawn()
        .unwrap();
    // Answer it from another process once the layer has asked it.
    wait_for("the layer's question to be answerable", || {
        d.swarm(&["answer", "lq", "escalate:reviewer", r#"{"ok":true}"#])
            .status
            .success()
    });
    let out = wait_child(run);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&d.swarm(&["show", "lq"]));
    assert!(
        show.contains("`escalate:reviewer`: {\"ok\":true}"),
        "{show}"
    );
    assert!(show.contains("`approve`: \"yes\""), "{show}");
    assert!(!show.contains("(unanswered)"), "{show}");
}

#[test]
fn a_read_only_journal_still_lists_and_shows_runs() {
    let d = Dir::new("readonly");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/hello.lua");
    let out = d.swarm(&["run", hello.to_str().unwrap(), "--run-id", "ro1"]);
    assert!(out.status.success(), "{}", text(&out));
    // The journal's directory, mounted read-only in a private mount
    // namespace (root can write through file permissions, not a ro mount).
    let dir = d.0.display().to_string();
    let swarm = env!("CARGO_BIN_EXE_swarm");
    let script = format!(
        "mount --bind '{dir}' '{dir}' && mount -o remount,ro,bind '{dir}' && \
         '{swarm}' runs && '{swarm}' show ro1 && '{swarm}' prune --older-than 0s; echo prune-exit=$?"
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env("SWARM_DB", d.0.join("swarm.db"))
        .output()
        .expect("unshare (util-linux)");
    let t = text(&out);
    assert!(t.contains("ro1") && t.contains("status     pass"), "{t}");
    // A command that must write says why it cannot.
    assert!(t.contains("prune-exit=2") && t.contains("read-only"), "{t}");
}

#[test]
fn a_full_disk_interrupts_the_run_and_resume_continues_once_space_is_freed() {
    let d = Dir::new("diskfull");
    let journal = d.0.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let bp = d.0.join("fill.lua");
    // Each step appends its number to a file outside the small disk and
    // returns 5 KB, so the journal outgrows the disk part way through.
    std::fs::write(
        &bp,
        format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'fill' {{\n  agents = {{ work = swarm.agent.process {{ shell = [[doc=$(cat); n=$(printf '%s' \"$doc\" | sed -n 's/.*\"input\":\\([0-9][0-9]*\\).*/\\1/p'); echo $n >> \"{fx}\"; printf '\"%s\"' $(head -c 5000 /dev/zero | tr '\\0' x)]] }} }},\n  flow = function()\n    local n = 0\n    for i = 1, 150 do n = n + #swarm.step('work', i) end\n    return n\n  end,\n}}\n",
            fx = d.0.join("effects").display()
        ),
    )
    .unwrap();
    let swarm = env!("CARGO_BIN_EXE_swarm");
    let (j, bp) = (journal.display(), bp.display());
    // A 12 MiB disk mostly taken by a filler file, in a private mount
    // namespace; freed after the first attempt.
    let script = format!(
        "mount -t tmpfs -o size=12m tmpfs '{j}' && head -c 11600000 /dev/zero > '{j}/filler' && \
         SWARM_DB='{j}/swarm.db' '{swarm}' run '{bp}' --run-id full; echo run-exit=$?; \
         rm '{j}/filler'; SWARM_DB='{j}/swarm.db' '{swarm}' resume full --json; echo resume-exit=$?"
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .current_dir(&d.0)
        .output()
        .expect("unshare (util-linux)");
    let t = text(&out);
    assert!(
        t.contains("run-exit=3"),
        "the full disk did not interrupt the run: {t}"
    );
    assert!(t.contains("full"), "the cause is named: {t}");
    assert!(t.contains("resume-exit=0"), "{t}");
    assert!(
        t.contains("750000"),
        "the resumed run finished with every step: {t}"
    );
    // Journaled steps never ran again: only the step in flight when the
    // write failed may have run twice.
    let effects = std::fs::read_to_string(d.0.join("effects")).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for n in effects.lines() {
        *counts.entry(n.trim().to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 150);
    let twice = counts.values().filter(|c| **c > 1).count();
    assert!(twice <= 1, "{twice} steps ran twice: {counts:?}");
}
