//! `swarm import` of a document nobody vouches for: a run is recorded
//! `blocked` until every entry of it is written (an import cut short is
//! never resumed with half a journal), and hostile documents (a relative
//! or `..` blueprint path, a bad position, an unknown kind) are refused
//! with `import_invalid` and nothing written; lineage that names no run
//! here is dropped and the creation time is the import's.

mod common;

use common::dir::{Dir, text};
use serde_json::{Value, json};

const RECORDER: &str = r#"import json, sys
doc = json.load(sys.stdin)
print(json.dumps({"n": doc["input"]["i"]}))
"#;

/// Three steps, then a question: a waiting run with a journal and a
/// question to carry.
const WAITS: &str = r#"local swarm = require "swarm"
return swarm.blueprint "waits" {
  agents = { rec = swarm.agent.process { cmd = { "python3", "rec.py" } } },
  flow = function(input)
    for i = 1, 3 do swarm.step("rec", { i = i }) end
    return swarm.ask("approve")
  end,
}
"#;

/// A waiting run `w1` and its export.
fn exported(name: &str) -> (Dir, Value) {
    let d = Dir::new(&format!("import-{name}"));
    d.file("rec.py", RECORDER);
    let bp = d.file("waits.lua", WAITS);
    let out = d.swarm(&["run", &bp, "--run-id", "w1"]);
    assert_eq!(out.status.code(), Some(3), "waiting: {}", text(&out));
    let out = d.swarm(&["export", "w1"]);
    assert!(out.status.success(), "{}", text(&out));
    (d, serde_json::from_slice(&out.stdout).unwrap())
}

fn import(d: &Dir, doc: &Value, id: &str) -> std::process::Output {
    let file = d.0.join(format!("{id}.json"));
    std::fs::write(&file, doc.to_string()).unwrap();
    d.swarm(&["import", file.to_str().unwrap(), "--run-id", id])
}

fn head(d: &Dir, run: &str) -> Option<Value> {
    let out = d.swarm(&["show", run, "--json", "--events", "0"]);
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_string();
    serde_json::from_str(&first).ok()
}

#[test]
fn an_import_is_not_resumable_until_it_is_written_whole() {
    let (d, doc) = exported("whole");
    // Each question written notes the run's status at that moment; the
    // second half of the document (its question) is then refused.
    let db = rusqlite::Connection::open(d.db()).unwrap();
    db.execute_batch(
        "CREATE TABLE seen (status TEXT);
         CREATE TRIGGER peek BEFORE INSERT ON questions BEGIN
           INSERT INTO seen SELECT status FROM runs WHERE id = NEW.run;
         END;
         CREATE TRIGGER refuse BEFORE INSERT ON questions WHEN NEW.run = 'cut' BEGIN
           SELECT RAISE(ABORT, 'refused by the test');
         END;",
    )
    .unwrap();
    drop(db);
    let out = import(&d, &doc, "whole");
    assert!(out.status.success(), "{}", text(&out));
    let out = import(&d, &doc, "cut");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let db = rusqlite::Connection::open(d.db()).unwrap();
    let seen: Vec<String> = db
        .prepare("SELECT status FROM seen")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seen, ["blocked"], "while copying, nothing may claim it");
    let whole = head(&d, "whole").unwrap();
    assert_eq!(whole["run"]["status"], "waiting", "{whole}");
    let cut = head(&d, "cut").unwrap();
    assert_eq!(cut["run"]["status"], "blocked", "{cut}");
    assert!(
        cut["run"]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("could not be recorded whole"),
        "{cut}"
    );
    let out = d.swarm(&["resume", "cut"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already finished"), "{}", text(&out));
}

#[test]
fn hostile_documents_are_refused_with_import_invalid_and_nothing_written() {
    let (d, doc) = exported("hostile");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = doc.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "relative",
            with(&|v| v["run"]["path"] = json!("waits.lua")),
            "run.path `waits.lua`",
        ),
        (
            "dotdot",
            with(&|v| v["run"]["path"] = json!("/tmp/../etc/evil.lua")),
            "run.path `/tmp/../etc/evil.lua`",
        ),
        (
            "nopath",
            with(&|v| v["run"]["path"] = json!("")),
            "run.path ``",
        ),
        (
            "badpos",
            with(&|v| v["journal"][1]["pos"] = json!("2/x")),
            "journal[1].pos: `2/x` is not a journal position",
        ),
        (
            "badkind",
            with(&|v| v["journal"][2]["kind"] = json!("os.execute")),
            "journal[2].kind `os.execute` at 3",
        ),
        (
            "badquestion",
            with(&|v| v["questions"][0]["pos"] = json!("0")),
            "questions[0].pos: `0`",
        ),
    ];
    for (id, bad, want) in cases {
        let out = import(&d, &bad, id);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{id}: {t}");
        assert!(t.contains("import_invalid: "), "{id}: {t}");
        assert!(t.contains(want), "{id}: {t}");
        assert!(head(&d, id).is_none(), "{id}: nothing written");
    }
    let out = d.swarm(&["runs", "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1, "only w1: {}", text(&out));
}

#[test]
fn lineage_naming_no_run_here_is_dropped_and_the_time_is_the_imports() {
    let (d, doc) = exported("lineage");
    let mut v = doc.clone();
    v["run"]["created_ms"] = json!(1);
    v["run"]["fork"] = json!({"run": "ghost", "at": "2", "reuse": true});
    v["journal"][0]["from"] = json!({"how": "copied", "run": "ghost", "pos": "1"});
    v["journal"][1]["from"] = json!({"how": "copied", "run": "w1", "pos": "2"});
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = import(&d, &v, "copy");
    assert!(out.status.success(), "{}", text(&out));
    let h = head(&d, "copy").unwrap();
    assert!(h["run"]["fork"].is_null(), "{h}");
    assert!(h["run"]["created_ms"].as_u64().unwrap() >= before, "{h}");
    let journal = h["journal"].as_array().unwrap();
    let at = |p: &str| journal.iter().find(|e| e["pos"] == p).unwrap().clone();
    assert!(at("1").get("from").is_none(), "{h}");
    assert_eq!(at("2")["from"]["run"], "w1", "{h}");
}
