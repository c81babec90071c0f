//! Token usage: what a run's model turns spent, by model, and the run's
//! budget (`limits = { tokens = N }`).
//!
//! A [`Meter`] belongs to one execution of a run and is shared by its LLM
//! agents. Every finished turn is charged to it, replayed ones included (a
//! resumed run spent those tokens too), so the budget holds across resumes.
//! The first charge past the budget trips it: the step fails with
//! `token_budget` and the run's stop hook ends the whole run.
//!
//! A turn the server reported no usage for is counted by the tokenizer
//! (`estimate`) and marked: a sum that includes such a turn is
//! `estimated`, and says so wherever it is shown.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Tokens spent by some turns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub turns: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Some of it was counted here, not reported by the server.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl Usage {
    /// One turn's usage from the provider's `usage` object (absent fields
    /// count as 0; a missing `total_tokens` is the sum).
    pub fn of_turn(usage: Option<&Value>) -> Usage {
        let field = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
        let (p, c) = (
            field("prompt_tokens").unwrap_or(0),
            field("completion_tokens").unwrap_or(0),
        );
        Usage {
            turns: 1,
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: field("total_tokens").unwrap_or(p + c),
            estimated: usage.and_then(|u| u.get("estimated")) == Some(&Value::Bool(true)),
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.turns += other.turns;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.estimated |= other.estimated;
    }
}

/// Usage in total and by model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    pub total: Usage,
    pub by_model: BTreeMap<String, Usage>,
}

impl Tally {
    pub fn add(&mut self, model: &str, usage: Usage) {
        self.total.add(usage);
        self.by_model
            .entry(model.to_string())
            .or_default()
            .add(usage);
    }

    /// `1,234 tokens (prompt 1,000 · completion 234) in 3 turns`, plus the
    /// split by model when there is more than one.
    pub fn line(&self) -> String {
        let t = &self.total;
        let mut line = format!(
            "{} tokens ({}prompt {} · completion {}) in {} turn{}",
            thousands(t.total_tokens),
            if t.estimated { "estimated: " } else { "" },
            thousands(t.prompt_tokens),
            thousands(t.completion_tokens),
            t.turns,
            if t.turns == 1 { "" } else { "s" }
        );
        if self.by_model.len() > 1 {
            let parts: Vec<String> = self
                .by_model
                .iter()
                .map(|(m, u)| {
                    let mark = if u.estimated { " (estimated)" } else { "" };
                    format!("{m} {}{mark}", thousands(u.total_tokens))
                })
                .collect();
            line.push_str(&format!("; {}", parts.join(", ")));
        }
        line
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

type StopHook = Box<dyn Fn() + Send + Sync>;

/// One execution's usage and budget (see the module doc).
#[derive(Default)]
pub struct Meter {
    budget: Option<u64>,
    tally: Mutex<Tally>,
    tripped: AtomicBool,
    on_trip: Mutex<Option<StopHook>>,
}

impl Meter {
    pub fn new(budget: Option<u64>) -> Meter {
        Meter {
            budget,
            ..Meter::default()
        }
    }

    /// What runs when the budget trips (the run cancels itself).
    pub fn on_trip(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.on_trip.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Tokens spent so far (without copying the tally).
    fn spent(&self) -> u64 {
        self.tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
            .total_tokens
    }

    /// The budget's message once it tripped.
    pub fn tripped(&self) -> Option<String> {
        let budget = self.budget?;
        self.tripped.load(Ordering::SeqCst).then(|| {
            format!(
                "the run's token budget of {} is spent ({} used)",
                thousands(budget),
                thousands(self.spent())
            )
        })
    }

    /// Before a live turn: refused once the budget is spent.
    pub fn check(&self) -> Result<(), String> {
        match self.budget {
            Some(b) if self.spent() >= b => Err(self.trip()),
            _ => Ok(()),
        }
    }

    /// Charges a finished turn; past the budget, trips it.
    pub fn charge(&self, model: &str, usage: Usage) -> Result<(), String> {
        let total = {
            let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            t.add(model, usage);
            t.total.total_tokens
        };
        match self.budget {
            Some(b) if total > b => Err(self.trip()),
            _ => Ok(()),
        }
    }

    fn trip(&self) -> String {
        if !self.tripped.swap(true, Ordering::SeqCst)
            && let Some(hook) = &*self.on_trip.lock().unwrap_or_else(|e| e.into_inner())
        {
            hook();
        }
        self.tripped().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn a_budget_trips_once_past_its_limit_and_says_so() {
        let meter = Meter::new(Some(100));
        let stops = Arc::new(AtomicU32::new(0));
        let s = stops.clone();
        meter.on_trip(move || {
            s.fetch_add(1, Ordering::SeqCst);
        });
        let turn = Usage::of_turn(Some(
            &json!({ "prompt_tokens": 40, "completion_tokens": 20 }),
        ));
        assert_eq!(turn.total_tokens, 60);
        assert!(meter.check().is_ok());
        assert!(meter.charge("m", turn).is_ok());
        let err = meter.charge("m", turn).unwrap_err();
        assert_eq!(err, "the run's token budget of 100 is spent (120 used)");
        assert!(meter.check().is_err());
        assert_eq!(stops.load(Ordering::SeqCst), 1);
        assert_eq!(meter.tally().by_model["m"].turns, 2);
    }

    #[test]
    fn lines_read_like_a_receipt() {
        let mut t = Tally::default();
        t.add(
            "a",
            Usage::of_turn(Some(
                &json!({ "prompt_tokens": 1000, "completion_tokens": 234 }),
            )),
        );
        assert_eq!(
            t.line(),
            "1,234 tokens (prompt 1,000 · completion 234) in 1 turn"
        );
        t.add("b", Usage::of_turn(None));
        assert!(
            t.line().ends_with("in 2 turns; a 1,234, b 0"),
            "{}",
            t.line()
        );
        t.add(
            "b",
            Usage::of_turn(Some(&json!({ "prompt_tokens": 6, "estimated": true }))),
        );
        assert!(
            t.line()
                .starts_with("1,240 tokens (estimated: prompt 1,006 · completion 234)"),
            "{}",
            t.line()
        );
        assert!(t.line().ends_with("b 6 (estimated)"), "{}", t.line());
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
