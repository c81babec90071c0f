//! What an embedder adds to the host through the library API: its own
//! middleware layers and its own agent kinds, each registered once and then
//! named by blueprints like the built-in ones.

use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig, SpawnError, Spawner};
use lua_swarm::run::kinds::{AgentKinds, Backend, Decl, Kind};
use lua_swarm::run::{self, BlueprintError, Build, RunOptions};
use lua_swarm::spawn::RustAgent;
use lua_swarm::spawn::kinds::AgentKind;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Signer::random())
}

/// An embedder adds its own layer to a registry and passes it in the run
/// options: blueprints name it like a built-in one (validation asks the
/// same registry), its options reach its factory, and a blueprint naming a
/// layer that no registry has is refused with the known keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedders_add_their_own_layers() {
    use lua_swarm::engine::{Outcome, SpawnError};
    use lua_swarm::spawn::{LayerRegistry, layer_fn};
    let mut layers = LayerRegistry::builtin();
    layers.register("stamp", |opts, _env| {
        let mark = opts
            .get("mark")
            .and_then(|m| m.as_str())
            .ok_or_else(|| SpawnError::LayerOptions {
                layer: "stamp".into(),
                message: "needs `mark`".into(),
            })?
            .to_string();
        Ok(layer_fn(move |inner, ctx| {
            let (inner, mark) = (inner.clone(), mark.clone());
            Box::pin(async move {
                match inner.spawn(ctx).await? {
                    Outcome::Pass(v) => Ok(Outcome::Pass(json!({ "stamped": mark, "value": v }))),
                    other => Ok(other),
                }
            })
        }))
    });
    let opts = RunOptions {
        layers: std::sync::Arc::new(layers),
        ..RunOptions::default()
    };
    let src = "local swarm = require 'swarm'\nreturn swarm.blueprint 's' {\n  agents = { e = swarm.agent.rust { name = 'echo' } },\n  hints = { layers = { { 'stamp', mark = 'ok' }, 'audit' } },\n  flow = function(x) return swarm.step('e', x) end,\n}\n";
    let e = engine();
    let r = run::prepare_source(&e, Path::new("stamp.lua"), src, opts).unwrap();
    let report = r.run(json!(7)).await.unwrap();
    assert_eq!(report.result, json!({ "stamped": "ok", "value": 7 }));
    // Without the embedder's registry the same blueprint is refused.
    let err = run::prepare_source(&e, Path::new("stamp.lua"), src, RunOptions::default())
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("unknown layer `stamp`") && text.contains("audit"),
        "{text}"
    );
}

/// A kind an embedder registers: `swarm.agent.constant { value = n }`
/// answers every step with `n` times the step's input.
const CONSTANT: Kind = Kind {
    info: AgentKind {
        name: "constant",
        about: "answers every step with `value` times its input",
        fields: &[("value", "number")],
        requires: (&["value"], "is required (a number)"),
    },
    read: |d: &Decl<'_>| {
        let value: f64 = d.get("value")?;
        if !value.is_finite() {
            return Err(d.problem("value", "must be finite"));
        }
        Ok(Arc::new(Constant(value)))
    },
};

#[derive(Debug)]
struct Constant(f64);

impl Backend for Constant {
    fn build(&self, _: &Build<'_>, _: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        let value = self.0;
        Ok(Arc::new(RustAgent::new(move |ctx| async move {
            let x = ctx
                .input
                .as_f64()
                .ok_or_else(|| json!("expects a number"))?;
            Ok(json!(value * x))
        })))
    }
}

fn constant_blueprint(decl: &str) -> String {
    format!(
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'k' {{\n  agents = {{ c = {decl} }},\n  hints = {{ layers = {{ 'audit' }} }},\n  flow = function(x) return swarm.step('c', x) end,\n}}\n"
    )
}

/// An embedder registers a kind once (fields and factory together) and
/// passes the registry in the run options: blueprints declare it with its
/// own constructor, validation checks its fields at the user's line, its
/// reader's own checks are reported like validation's, the built stack
/// wraps it in the blueprint's layers, and without that registry the
/// constructor does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedders_add_their_own_agent_kinds() {
    let mut kinds = AgentKinds::builtin();
    kinds.register(CONSTANT);
    let opts = || RunOptions {
        kinds: Arc::new(kinds.clone()),
        ..RunOptions::default()
    };
    let e = engine();
    let path = Path::new("k.lua");
    let ok = constant_blueprint("swarm.agent.constant { value = 3, description = 'x3' }");
    let r = run::prepare_source(&e, path, &ok, opts()).unwrap();
    let report = r.run(json!(7)).await.unwrap();
    assert_eq!(report.result, json!(21.0));

    // Validation knows its fields: a wrong type, an unknown field, a
    // missing required field, each at the constructor's line.
    for (decl, want) in [
        (
            "swarm.agent.constant { value = 'three' }",
            "`agents.c.value` must be a number, got string",
        ),
        (
            "swarm.agent.constant { value = 1, colour = 'red' }",
            "`agents.c.colour` unknown field",
        ),
        (
            "swarm.agent.constant { }",
            "`agents.c.value` is required (a number)",
        ),
        (
            "swarm.agent.constant { value = 1/0 }",
            "`agents.c.value` must be finite",
        ),
    ] {
        let err = run::prepare_source(&e, path, &constant_blueprint(decl), opts())
            .err()
            .expect("refused");
        let run::RunError::Blueprint(BlueprintError::Invalid(_)) = &err else {
            panic!("{decl}: {err}");
        };
        assert!(
            err.to_string().contains(&format!("k.lua:3: {want}")),
            "{decl}: {err}"
        );
    }

    // Without the embedder's registry the constructor does not exist.
    let err = run::prepare_source(&e, path, &ok, RunOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("k.lua:3:"), "{err}");
    assert!(err.to_string().contains("constant"), "{err}");
}

/// Rust functions an embedder registers are named by `swarm.agent.rust`;
/// a name nobody registered is refused when the blueprint loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedders_register_rust_agents_and_run_inline_blueprints() {
    let mut opts = RunOptions::default();
    opts.rust.insert(
        "len",
        RustAgent::new(
            |ctx| async move { Ok(json!(ctx.input.as_str().unwrap_or_default().len())) },
        ),
    );
    let src = "local swarm = require 'swarm'\nreturn swarm.blueprint 'e' {\n  agents = { len = swarm.agent.rust { name = 'len' } },\n  flow = function(w) return swarm.map(w, function(x) return swarm.step('len', x) end) end,\n}\n";
    let e = engine();
    let r = run::prepare_source(&e, Path::new("inline.lua"), src, opts).unwrap();
    let report = r.run(json!(["a", "bb", "ccc"])).await.unwrap();
    assert_eq!(report.result, json!([1, 2, 3]));
    // A blueprint naming a Rust agent nobody registered is refused at load.
    let src2 = src.replace("name = 'len'", "name = 'missing'");
    let err = run::prepare_source(&e, Path::new("inline.lua"), &src2, RunOptions::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("no Rust agent named `missing`"),
        "{err}"
    );
}

/// A prepared blueprint is the embedder's to run whenever it likes: the
/// sweep that detaches silent client sessions never takes its session,
/// however long it waits between runs, and dropping it ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_blueprint_outlives_the_session_sweep() {
    use lua_swarm::auth::Role;
    use lua_swarm::engine::{AttachOptions, Caller};
    use std::time::{Duration, Instant};
    let cfg = EngineConfig {
        heartbeat_timeout: Duration::from_millis(20),
        sweep_every: Duration::from_millis(5),
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, Signer::random());
    let src = "local swarm = require 'swarm'\nreturn swarm.blueprint 'idle' {\n  agents = { e = swarm.agent.rust { name = 'echo' } },\n  flow = function(x) return swarm.step('e', x) end,\n}\n";
    let r = run::prepare_source(&e, Path::new("idle.lua"), src, RunOptions::default()).unwrap();
    assert_eq!(r.run(json!(1)).await.unwrap().result, json!(1));
    // A client session opened after the blueprint's, and silent: once the
    // sweep has taken it, it has looked at the older one too.
    let client = e
        .attach(Caller::Host, AttachOptions::new("client", Role::Observer))
        .unwrap();
    let t0 = Instant::now();
    while e.gate_of(&client).is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the sweep never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = r.run(json!(2)).await.unwrap();
    assert_eq!(report.result, json!(2), "{:?}", report.status);
    // Detachments of the blueprint's session, read off the ledger.
    let released = |e: &Engine| {
        let obs = e
            .attach(Caller::Host, AttachOptions::new("count", Role::Observer))
            .unwrap();
        let mut sub = e.subscribe(&obs, 0).unwrap();
        let mut n = 0;
        while let Some(ev) = sub.try_next().unwrap() {
            let ev = serde_json::to_value(&ev).unwrap();
            n += usize::from(ev["kind"] == "session_detached" && ev["reason"] == "released");
        }
        n
    };
    assert_eq!(released(&e), 0);
    drop(r);
    assert_eq!(released(&e), 1, "dropping the blueprint ends its session");
}
