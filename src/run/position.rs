//! Journal positions as the flow numbers them (`lua/swarm/flow.lua`):
//! `5` is the fifth journaled call of the flow, `3/2:1` the first call of
//! branch 2 of the gather at position 3 (nesting repeats `/B:N`), and an
//! LLM step's own entries sit under its position (`5~t1`, `5~t1~call_7`).
//! Parsed once here, and ordered as the flow makes the calls: a fork keeps
//! what comes before its position and runs the rest.

use std::cmp::Ordering;

/// A parsed position: the call numbers and branch indexes on the way to
/// it (`3/2:1` is `[3, 2, 1]`), and whether it is an entry inside a step
/// (`~…`) rather than the step itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    path: Vec<u64>,
    inner: bool,
}

/// Where an entry stands relative to a fork point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Made before the fork point (or in a sibling branch of a gather the
    /// fork point is in, which does not wait for it): kept.
    Before,
    /// The fork point itself, a call inside it, or one made after it.
    After,
}

impl Position {
    /// `text` as a position, or why it is not one.
    pub fn parse(text: &str) -> Result<Position, String> {
        let bad =
            |why: &str| format!("`{text}` is not a journal position ({why}; e.g. 12 or 3/2:1)");
        let (call, inner) = match text.split_once('~') {
            Some((call, tail)) => {
                check_tail(tail).map_err(|why| bad(&why))?;
                (call, true)
            }
            None => (text, false),
        };
        let mut segments = call.split('/');
        let number = |s: &str| match s.parse::<u64>() {
            Ok(n) if n >= 1 && !s.starts_with('+') => Ok(n),
            _ => Err(bad(&format!("`{s}` is not a number from 1"))),
        };
        let mut path = vec![number(segments.next().unwrap_or_default())?];
        for seg in segments {
            let (branch, n) = seg
                .split_once(':')
                .ok_or_else(|| bad("a branch is written B:N"))?;
            path.push(number(branch)?);
            path.push(number(n)?);
        }
        Ok(Position { path, inner })
    }

    /// The number of the top-level call this position is in (`3` for
    /// `3/2:1`).
    pub fn top(&self) -> u64 {
        self.path[0]
    }

    /// Where this position stands relative to fork point `at`.
    pub fn relative_to(&self, at: &Position) -> Relation {
        for (i, (mine, theirs)) in self.path.iter().zip(&at.path).enumerate() {
            match mine.cmp(theirs) {
                Ordering::Equal => continue,
                // Another branch of the same gather: not after the fork point.
                _ if i % 2 == 1 => return Relation::Before,
                Ordering::Less => return Relation::Before,
                Ordering::Greater => return Relation::After,
            }
        }
        // One is a prefix of the other: the fork point itself, a call
        // within it, or (shorter) the gather that holds it, which has no
        // entry of its own; an entry inside a step goes with its step.
        if self.path.len() < at.path.len() && !self.inner {
            Relation::Before
        } else {
            Relation::After
        }
    }

    /// The call the flow makes right after this one (same gather
    /// branch); an entry inside a step stands for its step.
    pub fn next(&self) -> Position {
        let mut path = self.path.clone();
        if let Some(last) = path.last_mut() {
            *last += 1;
        }
        Position { path, inner: false }
    }

    /// The flow's order where it is total (a call before the next one),
    /// branches by index: for picking the first of several positions.
    pub fn order(&self, other: &Position) -> Ordering {
        self.path
            .cmp(&other.path)
            .then(self.inner.cmp(&other.inner))
    }
}

/// The part of an LLM step's entry after its step (`t1`, `t1~call_7`):
/// a turn `tN` from 1, then any tool call's id.
fn check_tail(tail: &str) -> Result<(), String> {
    let turn = tail.split('~').next().unwrap_or_default();
    let n = turn.strip_prefix('t').and_then(|n| n.parse::<u64>().ok());
    if !matches!(n, Some(n) if n >= 1) || turn.starts_with("t+") {
        return Err(format!("`~{turn}` is not a turn: ~t1, ~t2, …"));
    }
    // What follows is a tool call's id, as the model named it.
    Ok(())
}

impl std::fmt::Display for Position {
    /// The position as the flow writes it, without an inner tail.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path[0])?;
        for pair in self.path[1..].chunks(2) {
            write!(f, "/{}:{}", pair[0], pair.get(1).copied().unwrap_or(1))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pos: &str, at: &str) -> Relation {
        Position::parse(pos)
            .unwrap()
            .relative_to(&Position::parse(at).unwrap())
    }

    #[test]
    fn positions_before_a_fork_point_are_kept() {
        use Relation::*;
        for (pos, at, want) in [
            ("11", "12", Before),
            ("12", "12", After),
            ("13", "12", After),
            ("2", "12", Before),
            ("3/2:1", "12", Before),
            ("12/1:1", "12", After),
            ("11~t1", "12", Before),
            ("12~t1", "12", After),
            ("3/1:4", "3/2:1", Before),
            ("3/2:1", "3/2:1", After),
            ("3/2:2", "3/2:1", After),
            ("3/3:1", "3/2:1", Before),
            ("2", "3/2:1", Before),
            ("4", "3/2:1", After),
            ("3/2:1~t2", "3/2:1", After),
            ("3/2:1/1:1", "3/2:1", After),
        ] {
            assert_eq!(rel(pos, at), want, "{pos} against {at}");
        }
    }

    #[test]
    fn malformed_positions_are_refused_naming_the_text() {
        for bad in [
            "", "0", "x", "3/2", "3/:1", "-1", "3/2:0", "+4", "5~", "5~x1", "5~t0", "5~t+1",
        ] {
            let e = Position::parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        assert!(Position::parse("3/2:1/4:5~t1~call_1").is_ok());
        assert_eq!(Position::parse("011"), Position::parse("11"));
    }
}
