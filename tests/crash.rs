//! The crash test: a 60-step flow of process agents, each appending one line
//! to a file, killed with SIGKILL at 20+ random points and resumed each time.
//! The final result must equal an uninterrupted run's; every step recorded
//! as completed must have run exactly once (only a step in flight at a kill
//! may run again); the persisted events must have no gaps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: usize = 60;

fn swarm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents/append.sh");
    let bp = dir.join("crash.lua");
    std::fs::write(
        &bp,
        format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "crash" {{
  agents = {{ append = swarm.agent.process {{ cmd = {{ "sh", "{}", "lines.txt" }} }} }},
  flow = function(input)
    local sum = 0
    for i = 1, input.steps do sum = sum + swarm.step("append", i) end
    return {{ steps = input.steps, sum = sum, stamp = swarm.time.now() > 0 }}
  end,
}}
"#,
            script.display()
        ),
    )
    .unwrap();
    (dir, bp)
}

fn input() -> String {
    format!(r#"{{"steps":{STEPS}}}"#)
}

/// The run as `swarm show --json --all` reports it: its head line, then
/// one line per event.
fn show(db: &Path, id: &str) -> Vec<serde_json::Value> {
    let out = swarm()
        .args(["show", id, "--json", "--all", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn completed(db: &Path, id: &str) -> usize {
    show(db, id).first().map_or(0, |head| {
        head["journal"]
            .as_array()
            .map_or(0, |j| j.iter().filter(|e| e["kind"] == "step").count())
    })
}

fn run_exists(db: &Path, id: &str) -> bool {
    db.exists() && !show(db, id).is_empty()
}

/// A small deterministic PRNG (xorshift), seeded from the clock.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs the crash flow to completion as run `id` in `dir`, killing it at
/// random points while `kills` is below `want`. Checks everything and
/// returns the final result.
fn crash_run(
    id: &str,
    rng: &mut Rng,
    kills: &mut usize,
    want: usize,
    seed: u64,
) -> serde_json::Value {
    let (dir, bp) = setup(id);
    let db = dir.join("swarm.db");
    let mut in_flight = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let result = loop {
        assert!(
            Instant::now() < deadline,
            "the crash test did not finish (seed {seed})"
        );
        let mut cmd = swarm();
        if run_exists(&db, id) {
            cmd.args(["resume", id]);
        } else {
            cmd.args([
                "run",
                bp.to_str().unwrap(),
                "--input",
                &input(),
                "--run-id",
                id,
            ]);
        }
        cmd.args(["--db", db.to_str().unwrap(), "--json"]);
        let mut child = cmd.spawn().unwrap();
        if *kills < want {
            std::thread::sleep(Duration::from_millis(3 + rng.below(40)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                *kills += 1;
                // The step after the last completed one may have been in flight.
                in_flight.insert(completed(&db, id) + 1);
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        // A kill that came as the run was exiting, after its end was
        // recorded: the run passed; its result is the journal's.
        if err.contains("already finished (pass)") {
            break show(&db, id)[0]["run"]["result"].clone();
        }
        panic!("run/resume failed (seed {seed}): {err}");
    };

    // Every step ran at least once; only in-flight steps ran again.
    std::thread::sleep(Duration::from_millis(200)); // let orphaned agents finish
    let text = std::fs::read_to_string(dir.join("lines.txt")).unwrap();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts
            .entry(line.trim().parse::<usize>().unwrap())
            .or_insert(0) += 1;
    }
    for step in 1..=STEPS {
        let n = counts.get(&step).copied().unwrap_or(0);
        assert!(n >= 1, "step {step} never ran (seed {seed})");
        if n > 1 {
            assert!(
                in_flight.contains(&step),
                "step {step} ran {n} times but was not in flight at a kill (seed {seed}, in flight: {in_flight:?})"
            );
        }
    }
    assert_eq!(completed(&db, id), STEPS);

    // Persisted events have no gaps.
    let shown = show(&db, id);
    let ids: Vec<i64> = shown[1..].iter().filter_map(|e| e["id"].as_i64()).collect();
    let (min, max, n) = (ids[0], ids[ids.len() - 1], ids.len() as i64);
    assert_eq!(max - min + 1, n, "events have gaps (seed {seed})");
    let status = shown[0]["run"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(status, "pass");
    result
}

#[test]
fn sigkill_at_random_points_then_resume_loses_nothing() {
    // An uninterrupted run for reference.
    let (ref_dir, ref_bp) = setup("reference");
    let out = swarm()
        .args([
            "run",
            ref_bp.to_str().unwrap(),
            "--input",
            &input(),
            "--json",
        ])
        .args(["--db", ref_dir.join("swarm.db").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let mut kills = 0;
    let mut runs = 0;
    while kills < 20 {
        runs += 1;
        let result = crash_run(&format!("crash{runs}"), &mut rng, &mut kills, 20, seed);
        assert_eq!(result, reference, "seed {seed}");
        assert!(runs < 20, "kills are not landing (seed {seed})");
    }
}

/// A `map` flow (4 steps at a time) killed at random points, each time
/// resumed by two processes at once: one owns the run, the other is
/// refused and runs nothing. The agent writes `step pid-of-its-swarm`, so
/// the file shows who ran what.
#[test]
fn map_killed_and_resumed_by_two_processes_runs_journaled_steps_once() {
    const N: usize = 40;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crash-map");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bp = dir.join("map.lua");
    std::fs::write(
        &bp,
        r#"local swarm = require "swarm"
return swarm.blueprint "map" {
  agents = { append = swarm.agent.process { shell = [[doc=$(cat); n=$(printf '%s' "$doc" | sed -n 's/.*"input":\([0-9][0-9]*\).*/\1/p'); [ -n "$n" ] || exit 2; sleep 0.02; echo "$n $PPID" >> lines.txt; echo "$n"]] } },
  flow = function(input)
    local items = {}
    for i = 1, input.n do items[i] = i end
    local got = swarm.map(items, function(i) return swarm.step("append", i) end, { concurrency = 4 })
    local sum = 0
    for _, v in ipairs(got) do sum = sum + v end
    return sum
  end,
}
"#,
    )
    .unwrap();
    let db = dir.join("swarm.db");
    let spawn = |args: &[&str]| {
        let mut c = swarm();
        c.args(args)
            .args(["--db", db.to_str().unwrap(), "--json"])
            .current_dir(&dir);
        c.spawn().unwrap()
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let (mut killed, mut refused, mut finished) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut spawned = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let input = format!(r#"{{"n":{N}}}"#);
    let mut round = 0;
    let result = loop {
        assert!(Instant::now() < deadline, "did not finish (seed {seed})");
        round += 1;
        let children: Vec<_> = if run_exists(&db, "m") {
            vec![spawn(&["resume", "m"]), spawn(&["resume", "m"])]
        } else {
            vec![spawn(&[
                "run",
                bp.to_str().unwrap(),
                "--run-id",
                "m",
                "--input",
                &input,
            ])]
        };
        if round <= 12 {
            std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
        }
        let mut result = None;
        for mut c in children {
            let pid = c.id();
            spawned.insert(pid);
            if round <= 12 && c.try_wait().unwrap().is_none() {
                c.kill().unwrap();
                c.wait().unwrap();
                killed.insert(pid);
                continue;
            }
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => {
                    finished.insert(pid);
                    result =
                        Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
                }
                Some(2) if err.contains("is being run by") || err.contains("already finished") => {
                    refused.insert(pid);
                }
                other => panic!("unexpected exit {other:?} (seed {seed}): {err}"),
            }
        }
        if let Some(r) = result {
            break r;
        }
        // A process killed just after it recorded the run as passed: the
        // result is in the journal.
        let out = swarm()
            .args([
                "show",
                "m",
                "--json",
                "--events",
                "0",
                "--db",
                db.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string);
        if let Some(v) = head.and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok())
            && v["run"]["status"] == "pass"
        {
            break v["run"]["result"].clone();
        }
    };
    assert_eq!(result, serde_json::json!(N * (N + 1) / 2), "seed {seed}");
    let text = std::fs::read_to_string(dir.join("lines.txt")).unwrap();
    let mut by_step: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let step: usize = it.next().unwrap().parse().unwrap();
        let pid: u32 = it.next().unwrap().parse().unwrap();
        by_step.entry(step).or_default().push(pid);
    }
    for step in 1..=N {
        let pids = by_step.get(&step).cloned().unwrap_or_default();
        assert!(!pids.is_empty(), "step {step} never ran (seed {seed})");
        for pid in &pids {
            assert!(
                !refused.contains(pid),
                "a refused resumer ran step {step} (seed {seed})"
            );
        }
        // Only a killed process's step may have run again. An agent whose
        // swarm was killed before it started reports its new parent (pid 1
        // or a subreaper), never one of ours: count only our live processes.
        let survivors = pids
            .iter()
            .filter(|p| spawned.contains(*p) && !killed.contains(*p))
            .count();
        assert!(
            survivors <= 1,
            "step {step} ran in {survivors} live processes: {pids:?} (seed {seed})"
        );
    }
    assert!(
        finished.len() <= 1,
        "more than one process finished the run (seed {seed})"
    );
    eprintln!(
        "{} killed, {} refused, {} rounds",
        killed.len(),
        refused.len(),
        round
    );
    assert!(killed.len() >= 3, "kills are not landing (seed {seed})");
    assert!(
        !refused.is_empty(),
        "no resumer was ever refused (seed {seed})"
    );
}
