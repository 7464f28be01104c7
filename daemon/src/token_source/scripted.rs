//! A scripted [`TokenSource`] for tests: answers from a script, in order,
//! counts its acquisitions, and can hold an answer until the test releases it
//! (an acquisition "in flight").
//!
//! The daemon builds its sources itself (`sources::build`), so a test hands
//! one in by [`register`]ing it under an authority host of its own: every
//! credential of a chain with that authority gets it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use azbroker_proto::Secret;
use tokio::sync::Semaphore;

use super::{SourceError, SourceRequest, Token, TokenSource};
use crate::clock;

struct Step {
    answer: Result<Token, SourceError>,
    /// The answer waits for a permit here when set.
    gate: Option<Arc<Semaphore>>,
}

#[derive(Default)]
pub struct ScriptedSource {
    script: Mutex<VecDeque<Step>>,
    calls: AtomicUsize,
    silent_calls: AtomicUsize,
}

impl ScriptedSource {
    pub fn new() -> Arc<ScriptedSource> {
        Arc::new(ScriptedSource::default())
    }

    /// The next acquisition answers `answer`.
    pub fn then(&self, answer: Result<Token, SourceError>) {
        self.push(answer, None);
    }

    /// The next acquisition answers `answer` once the returned gate gets a permit.
    pub fn then_held(&self, answer: Result<Token, SourceError>) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        self.push(answer, Some(gate.clone()));
        gate
    }

    fn push(&self, answer: Result<Token, SourceError>, gate: Option<Arc<Semaphore>>) {
        self.script.lock().unwrap().push_back(Step { answer, gate });
    }

    /// Acquisitions started so far, silent ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    /// Background (silent) acquisitions started so far.
    pub fn silent_calls(&self) -> usize {
        self.silent_calls.load(SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenSource for ScriptedSource {
    async fn acquire(&self, _: &SourceRequest) -> Result<Token, SourceError> {
        self.calls.fetch_add(1, SeqCst);
        let step = self.script.lock().unwrap().pop_front();
        let Some(step) = step else {
            return Err(SourceError::failed("the script has no answer left"));
        };
        if let Some(gate) = step.gate {
            let _ = gate.acquire().await.expect("gate closed").forget();
        }
        step.answer
    }

    async fn acquire_silently(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        self.silent_calls.fetch_add(1, SeqCst);
        self.acquire(request).await
    }
}

/// A token `text` living `lifetime` seconds, with the server's `refresh_in` hint.
pub fn token(text: &str, lifetime: i64, refresh_in: Option<i64>) -> Token {
    Token {
        access_token: Secret::new(text.to_string()),
        expires_on: clock::now_secs() + lifetime,
        refresh_in,
        tenant: None,
    }
}

fn registered_sources() -> &'static Mutex<HashMap<String, Arc<ScriptedSource>>> {
    static SOURCES: OnceLock<Mutex<HashMap<String, Arc<ScriptedSource>>>> = OnceLock::new();
    SOURCES.get_or_init(Default::default)
}

/// Serves `source` to every credential under `authority_host`.
pub fn register(authority_host: &str, source: Arc<ScriptedSource>) {
    registered_sources()
        .lock()
        .unwrap()
        .insert(authority_host.to_string(), source);
}

/// The source registered for `authority_host`, if a test registered one.
pub fn registered(authority_host: &str) -> Option<Arc<dyn TokenSource>> {
    let sources = registered_sources().lock().unwrap();
    let source = sources.get(authority_host)?.clone();
    Some(source)
}
