//! Where a run and its journal entries came from, when not from the run's
//! own live calls: a fork records its source run and the position it was
//! forked at, and each entry a fork took from its source says how (copied
//! before the fork point, edited there, or reused past it) and what the
//! original call spent. Plain data, stored with the run and the entry by
//! every store, so lineage reads the same on SQLite, memory and Postgres.

use super::JournalEntry;

/// The run a fork was made from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForkOf {
    /// The source run's id.
    pub run: String,
    /// The journal position the fork ran live from.
    pub at: String,
    /// Whether calls past `at` whose request is unchanged reuse the
    /// source's recorded result (`--reuse unchanged`).
    pub reuse: bool,
}

/// How an entry was taken from another run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Taken {
    /// Copied from before the fork point, as recorded.
    Copied,
    /// Copied from before the fork point, its result replaced (`--set`).
    Edited,
    /// Past the fork point: the request was the one the source recorded
    /// there, so its result was reused instead of running again.
    Reused,
}

impl Taken {
    pub fn as_str(self) -> &'static str {
        match self {
            Taken::Copied => "copied",
            Taken::Edited => "edited",
            Taken::Reused => "reused",
        }
    }
}

/// Where an entry came from: `how`, from run `run` at position `pos`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub how: Taken,
    pub run: String,
    pub pos: String,
    /// Model tokens the original call spent (this run spent none on it).
    #[serde(default)]
    pub tokens: u64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}@{}", self.how.as_str(), self.run, self.pos)
    }
}

impl JournalEntry {
    /// Model tokens the call behind this entry spent, wherever it ran.
    pub fn original_tokens(&self) -> u64 {
        self.from.as_ref().map_or(self.tokens, |o| o.tokens)
    }

    /// This entry as run `run` takes it from its source, `how`, recorded
    /// under `epoch`: it spends nothing here, and says where it came from.
    pub fn taken(&self, run: &str, how: Taken, epoch: u64) -> JournalEntry {
        JournalEntry {
            run: run.to_string(),
            tokens: 0,
            epoch,
            from: Some(Box::new(Origin {
                how,
                run: self.run.clone(),
                pos: self.pos.clone(),
                tokens: self.original_tokens(),
            })),
            ..self.clone()
        }
    }
}
