//! Hot reload with real files and the real watcher.

use lua_swarm::auth::{Role, Signer};
use lua_swarm::engine::{AttachOptions, Caller, Engine, EngineConfig, EventKind};
use lua_swarm::reload::{LiveBlueprints, Reload, Watch};
use lua_swarm::run::RunOptions;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reload-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn blueprint(body: &str) -> String {
    format!(
        "local swarm = require 'swarm'\nlocal h = require 'helper'\nreturn swarm.blueprint 'bp' {{\n  flow = function() {body} end,\n}}\n"
    )
}

struct Rig {
    engine: Engine,
    dev: Arc<LiveBlueprints>,
    watch: Watch,
    file: PathBuf,
    dir: PathBuf,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let dir = dir(name);
        std::fs::write(dir.join("helper.lua"), "return { v = 'h1' }\n").unwrap();
        let file = dir.join("bp.lua");
        std::fs::write(&file, blueprint("return 'v1'")).unwrap();
        let engine = Engine::new(EngineConfig::default(), Signer::random());
        let dev = Arc::new(LiveBlueprints::new(engine.clone(), RunOptions::default()));
        let first = dev.scan(&dir);
        assert!(
            matches!(&first[..], [Reload::Loaded { version: 1, .. }]),
            "{first:?}"
        );
        let watch = Watch::start(dev.clone(), &dir, Duration::from_millis(30)).unwrap();
        Rig {
            engine,
            dev,
            watch,
            file,
            dir,
        }
    }

    /// The next reload report; panics only if none comes within a hang guard.
    async fn next(&mut self) -> Reload {
        tokio::time::timeout(Duration::from_secs(60), self.watch.reloads.recv())
            .await
            .expect("a reload (hang guard)")
            .expect("watcher alive")
    }

    /// Nothing reported for `ms`.
    async fn quiet(&mut self, ms: u64) {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(ms), self.watch.reloads.recv()).await
        {
            panic!("unexpected reload: {r:?}");
        }
    }

    async fn result(&self) -> Value {
        self.dev
            .prepare("bp")
            .unwrap()
            .run(Value::Null)
            .await
            .unwrap()
            .result
    }

    fn version(&self) -> u64 {
        self.dev.live("bp").map_or(0, |v| v.version)
    }
}

fn loaded(r: &Reload) -> u64 {
    match r {
        Reload::Loaded { version, .. } => *version,
        other => panic!("expected a load, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_atomic_saves_errors_fixes_touches_helpers_and_deletes() {
    let mut rig = Rig::new("lifecycle");

    // Write in place.
    std::fs::write(&rig.file, blueprint("return 'v2'")).unwrap();
    assert_eq!(loaded(&rig.next().await), 2);
    assert_eq!(rig.result().await, json!("v2"));

    // Atomic save: a temp file renamed over the original.
    let tmp = rig.dir.join(".bp.lua.swp");
    std::fs::write(&tmp, blueprint("return 'v3'")).unwrap();
    std::fs::rename(&tmp, &rig.file).unwrap();
    assert_eq!(loaded(&rig.next().await), 3);
    assert_eq!(rig.result().await, json!("v3"));

    // A syntax error keeps the last good version live and names the line.
    std::fs::write(&rig.file, blueprint("return (")).unwrap();
    match rig.next().await {
        Reload::Failed { error, kept, .. } => {
            assert!(error.contains("bp.lua:4"), "{error}");
            assert_eq!(kept, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.version(), 3);
    assert_eq!(rig.result().await, json!("v3"));

    // The fix goes live.
    std::fs::write(&rig.file, blueprint("return 'v4 ' .. h.v")).unwrap();
    assert_eq!(loaded(&rig.next().await), 4);
    assert_eq!(rig.result().await, json!("v4 h1"));

    // A touch without a content change reloads nothing.
    let same = std::fs::read(&rig.file).unwrap();
    std::fs::write(&rig.file, same).unwrap();
    rig.quiet(400).await;
    assert_eq!(rig.version(), 4);

    // Editing a required helper reloads the blueprint.
    std::fs::write(rig.dir.join("helper.lua"), "return { v = 'h2' }\n").unwrap();
    assert_eq!(loaded(&rig.next().await), 5);
    assert_eq!(rig.result().await, json!("v4 h2"));

    // Deleting unloads.
    std::fs::remove_file(&rig.file).unwrap();
    assert!(matches!(rig.next().await, Reload::Unloaded { .. }));
    assert!(rig.dev.live("bp").is_none());

    // The ledger has the reloads.
    let obs = rig
        .engine
        .attach(Caller::Host, AttachOptions::new("t", Role::Observer))
        .unwrap();
    let mut sub = rig.engine.subscribe(&obs, 0).unwrap();
    let (mut ok, mut failed) = (0, 0);
    while let Some(ev) = sub.try_next().unwrap() {
        match ev.kind {
            EventKind::BlueprintLoaded { .. } => ok += 1,
            EventKind::BlueprintReloadFailed { error, .. } => {
                failed += 1;
                assert!(error.contains("bp.lua:4"));
            }
            _ => {}
        }
    }
    assert_eq!((ok, failed), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rapid_saves_end_on_the_last_content() {
    let mut rig = Rig::new("rapid");
    for i in 0..100 {
        std::fs::write(&rig.file, blueprint(&format!("return {i}"))).unwrap();
    }
    // However the saves were batched (that depends on the machine's speed),
    // reloads stop at the last content.
    let mut reloads = 0;
    loop {
        match rig.next().await {
            Reload::Loaded { .. } => reloads += 1,
            other => panic!("{other:?}"),
        }
        if rig
            .dev
            .live("bp")
            .is_some_and(|v| v.source.contains("return 99"))
        {
            break;
        }
    }
    assert!(
        (1..=100).contains(&reloads),
        "{reloads} reloads for 100 saves"
    );
    assert_eq!(rig.result().await, json!(99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_finishes_on_its_original_version() {
    let mut rig = Rig::new("inflight");
    std::fs::write(&rig.file, blueprint("swarm.sleep(400); return 'old'")).unwrap();
    assert_eq!(loaded(&rig.next().await), 2);
    let old = rig.dev.prepare("bp").unwrap();
    let in_flight = tokio::spawn(async move { old.run(Value::Null).await.unwrap().result });
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&rig.file, blueprint("return 'new'")).unwrap();
    assert_eq!(loaded(&rig.next().await), 3);
    assert_eq!(rig.result().await, json!("new"));
    assert_eq!(in_flight.await.unwrap(), json!("old"));
}
