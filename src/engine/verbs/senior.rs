//! Senior verbs: ask a human, resume with the answer, wait for it.
//!
//! `query_senior` suspends the task and returns a resume key (128 random
//! bits). The answer is stored on the entry, so `await_resume` returns at
//! once when the answer came first: the asker may detach and come back.

use crate::auth::{CapToken, Verb, nonce};
use crate::engine::events::EventKind;
use crate::engine::state::{Access, ResumeEntry, TaskStatus};
use crate::engine::{Engine, EngineError, TaskId};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// An unanswered senior question.
#[derive(Debug, Clone)]
pub struct PendingQuestion {
    pub key: String,
    pub task: TaskId,
    pub question: Arc<Value>,
}

impl Engine {
    /// Suspends `task` with a question for a senior; returns the resume key.
    pub fn query_senior(
        &self,
        tok: &CapToken,
        task: TaskId,
        question: Value,
    ) -> Result<String, EngineError> {
        let key = self.with_state("query_senior", |s| {
            s.authorize(tok, Access::on(Verb::QuerySenior, task))?;
            s.admit("the question", &question, s.config.max_payload_bytes)?;
            let key = format!("{:032x}", nonce());
            let question = Arc::new(question);
            let t = s.task_mut(task)?;
            if t.status.is_settled() {
                return Err(EngineError::InvalidState {
                    task: task.0,
                    status: t.status,
                    verb: "query_senior",
                    needs: "a task that has not settled",
                });
            }
            let resumed_status = match t.status {
                TaskStatus::Suspended => TaskStatus::Running,
                other => other,
            };
            t.status = TaskStatus::Suspended;
            t.resume_keys.push(key.clone());
            t.wake();
            s.open_questions.insert(key.clone());
            s.resumes.insert(
                key.clone(),
                ResumeEntry {
                    task,
                    question: question.clone(),
                    answer: None,
                    notify: Default::default(),
                    resumed_status,
                },
            );
            let k: Arc<str> = Arc::from(key.as_str());
            s.emit(
                Some(task),
                EventKind::SeniorQueried {
                    key: k.clone(),
                    question,
                },
            );
            s.emit(Some(task), EventKind::TaskSuspended { key: k });
            Ok(key)
        })?;
        self.questions_notify().notify_waiters();
        Ok(key)
    }

    /// Answers the question behind `key`; the task leaves `suspended`.
    pub fn resume(&self, tok: &CapToken, key: &str, answer: Value) -> Result<(), EngineError> {
        self.with_state("resume", |s| {
            let task = s.resumes.get(key).map(|e| e.task);
            s.authorize(
                tok,
                Access {
                    verb: Verb::Resume,
                    task,
                    spawn_depth: None,
                },
            )?;
            s.admit("the answer", &answer, s.config.max_payload_bytes)?;
            let entry = s
                .resumes
                .get_mut(key)
                .ok_or_else(|| EngineError::UnknownResumeKey(key.to_string()))?;
            if entry.answer.is_some() {
                return Err(EngineError::AlreadyAnswered(key.to_string()));
            }
            entry.answer = Some(Arc::new(answer));
            entry.notify.notify_waiters();
            s.open_questions.remove(key);
            let (task, back_to) = (entry.task, entry.resumed_status);
            if let Some(t) = s.tasks.get_mut(&task)
                && t.status == TaskStatus::Suspended
            {
                t.status = back_to;
            }
            let k: Arc<str> = Arc::from(key);
            s.emit(Some(task), EventKind::SeniorAnswered { key: k.clone() });
            s.emit(Some(task), EventKind::TaskResumed { key: k });
            Ok(())
        })
    }

    /// The answer behind `key`: at once if it is there, otherwise waits up
    /// to `timeout`.
    pub async fn await_resume(
        &self,
        tok: &CapToken,
        key: &str,
        timeout: Duration,
    ) -> Result<Arc<Value>, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut authorized = false;
        loop {
            let (answer, notify) = self.with_state("await_resume", |s| {
                if !authorized {
                    let task = s.resumes.get(key).map(|e| e.task);
                    let access = match task {
                        Some(t) => Access::on(Verb::AwaitResume, t),
                        None => Access::verb(Verb::AwaitResume),
                    };
                    s.authorize(tok, access)?;
                }
                let entry = s
                    .resumes
                    .get(key)
                    .ok_or_else(|| EngineError::UnknownResumeKey(key.to_string()))?;
                Ok::<_, EngineError>((entry.answer.clone(), entry.notify.clone()))
            })?;
            authorized = true;
            if let Some(a) = answer {
                return Ok(a);
            }
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(a) = self.with_state("await_resume", |s| {
                s.resumes.get(key).and_then(|e| e.answer.clone())
            }) {
                return Ok(a);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(EngineError::Timeout {
                    what: "await_resume",
                    ms: timeout.as_millis() as u64,
                });
            }
        }
    }

    /// Unanswered senior questions whose keys are not in `seen`; waits up to
    /// `hold` for one when there is none. Gated as `resume`: whoever may
    /// answer may list.
    pub async fn pending_questions(
        &self,
        tok: &CapToken,
        seen: &HashSet<String>,
        hold: Duration,
    ) -> Result<Vec<PendingQuestion>, EngineError> {
        self.with_state("pending_questions", |s| {
            s.authorize(tok, Access::verb(Verb::Resume))
        })?;
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notified = self.questions_notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let open = self.with_state("pending_questions", |s| {
                s.open_questions
                    .iter()
                    .filter(|k| !seen.contains(*k))
                    .filter_map(|k| {
                        let e = s.resumes.get(k).filter(|e| s.visible(tok, Some(e.task)))?;
                        Some(PendingQuestion {
                            key: k.clone(),
                            task: e.task,
                            question: e.question.clone(),
                        })
                    })
                    .collect::<Vec<_>>()
            });
            if !open.is_empty() {
                return Ok(open);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// The question behind `key` and whether it is answered.
    pub fn senior_question(&self, key: &str) -> Option<(TaskId, Arc<Value>, bool)> {
        self.with_state("senior_question", |s| {
            s.resumes
                .get(key)
                .map(|e| (e.task, e.question.clone(), e.answer.is_some()))
        })
    }
}
