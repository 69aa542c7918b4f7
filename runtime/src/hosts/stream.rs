//! Host calls over a byte stream (an agent's stdin and stdout, over SSH): one JSON
//! object per line, each call and its answer carrying the same `id`, so one connection
//! carries many calls at once — the steps of one host run in parallel, and a long one
//! does not hold up the rest.
//!
//! - [`StreamClient`] is the caller's end: [`StreamClient::call`] may be used from
//!   many threads; a reader thread hands each answer to the call waiting for its id.
//!   When the stream ends, every waiting and later call fails with
//!   [`LinkError::Gone`].
//! - [`serve_calls`] is the agent's end: it answers each call with [`Served`], slow
//!   ones (facts, steps, sweeps, locks that wait) on their own threads, and returns
//!   when the stream ends — the agent then exits, and with it every lock it held.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::remote::LinkError;
use super::wire::{Answer, Call, Served, WireError};

/// The longest line either end accepts (64 MiB: a host's facts with thousands of VMs
/// fit many times over).
pub const MAX_LINE: usize = 64 << 20;

/// A call or an answer with the id that pairs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    #[serde(flatten)]
    pub body: T,
}

type Waiting = Arc<Mutex<Option<HashMap<u64, mpsc::Sender<Answer>>>>>;

/// The caller's end of a stream of calls.
pub struct StreamClient {
    writer: Mutex<Box<dyn Write + Send>>,
    /// Calls waiting for their answer, by id; `None` once the stream has ended.
    waiting: Waiting,
    next: AtomicU64,
    /// Why the stream ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
}

impl StreamClient {
    /// Calls go to `writer`; answers come from `reader`, read on a thread of its own.
    pub fn new(writer: Box<dyn Write + Send>, mut reader: Box<dyn BufRead + Send>) -> StreamClient {
        StreamClient::with_lines(writer, move || read_line(&mut *reader))
    }

    /// Calls go to `writer`; answers are the lines `next_line` yields (`Ok(None)` at the
    /// end), taken on a thread of its own.
    pub fn with_lines(
        writer: Box<dyn Write + Send>,
        next_line: impl FnMut() -> Result<Option<Vec<u8>>, String> + Send + 'static,
    ) -> StreamClient {
        let waiting: Waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        let ended = Arc::new(Mutex::new(None));
        let (w, e) = (Arc::clone(&waiting), Arc::clone(&ended));
        std::thread::Builder::new()
            .name("vmctl-answers".into())
            .spawn(move || read_answers(next_line, &w, &e))
            .map(drop)
            .unwrap_or_else(|err| {
                if let Ok(mut ended) = ended.lock() {
                    *ended = Some(format!("cannot start the reader: {err}"));
                }
            });
        StreamClient {
            writer: Mutex::new(writer),
            waiting,
            next: AtomicU64::new(1),
            ended,
        }
    }

    fn gone(&self) -> LinkError {
        let reason = self
            .ended
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "the stream ended".into());
        LinkError::Gone { reason }
    }

    /// Sends `call` and waits for its answer.
    pub fn call(&self, call: &Call) -> Result<Answer, LinkError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        match self.waiting.lock() {
            Ok(mut waiting) => match waiting.as_mut() {
                Some(map) => {
                    map.insert(id, tx);
                }
                None => return Err(self.gone()),
            },
            Err(_) => return Err(self.gone()),
        }
        let envelope = Envelope {
            id,
            body: call.clone(),
        };
        let sent = serde_json::to_vec(&envelope)
            .map_err(|e| e.to_string())
            .and_then(|mut line| {
                line.push(b'\n');
                let mut writer = self.writer.lock().map_err(|e| e.to_string())?;
                writer
                    .write_all(&line)
                    .and_then(|()| writer.flush())
                    .map_err(|e| e.to_string())
            });
        if let Err(reason) = sent {
            if let Ok(mut waiting) = self.waiting.lock() {
                if let Some(map) = waiting.as_mut() {
                    map.remove(&id);
                }
            }
            return Err(LinkError::Gone { reason });
        }
        rx.recv().map_err(|_| self.gone())
    }
}

/// Hands each answer to the call waiting for its id, until the stream ends; then fails
/// every call still waiting (their senders drop).
fn read_answers(
    mut next_line: impl FnMut() -> Result<Option<Vec<u8>>, String>,
    waiting: &Waiting,
    ended: &Mutex<Option<String>>,
) {
    let reason = loop {
        let line = match next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break "the agent closed the connection".to_owned(),
            Err(e) => break e,
        };
        let envelope: Envelope<Answer> = match serde_json::from_slice(&line) {
            Ok(envelope) => envelope,
            Err(e) => break format!("the agent sent something that is not an answer: {e}"),
        };
        let sender = waiting
            .lock()
            .ok()
            .and_then(|mut w| w.as_mut().and_then(|map| map.remove(&envelope.id)));
        if let Some(sender) = sender {
            let _ = sender.send(envelope.body);
        }
    };
    if let Ok(mut ended) = ended.lock() {
        *ended = Some(reason);
    }
    // Dropping the senders wakes every waiting call with an error.
    if let Ok(mut waiting) = waiting.lock() {
        *waiting = None;
    }
}

/// One line without its newline, at most [`MAX_LINE`] bytes; `None` at the end.
fn read_line(reader: &mut dyn BufRead) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    let n = std::io::Read::take(reader, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading from the agent failed: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        return Err(format!("a line longer than {MAX_LINE} bytes"));
    }
    Ok(Some(line))
}

/// Whether answering `call` may take long (so it gets a thread of its own).
fn is_slow(call: &Call) -> bool {
    matches!(
        call,
        Call::Facts { .. }
            | Call::Run { .. }
            | Call::Sweep { .. }
            | Call::Lock { .. }
            | Call::Migration { .. }
    )
}

/// Answers the calls read from `reader` on `writer` until `reader` ends. A line that is
/// not a call is answered as failed (with id 0 when it has none) and serving goes on.
pub fn serve_calls(
    reader: &mut dyn BufRead,
    writer: impl Write + Send,
    served: &Served,
) -> Result<(), String> {
    let writer = Mutex::new(writer);
    let answer = |id: u64, body: Answer| {
        if let Ok(mut line) = serde_json::to_vec(&Envelope { id, body }) {
            line.push(b'\n');
            if let Ok(mut w) = writer.lock() {
                let _ = w.write_all(&line).and_then(|()| w.flush());
            }
        }
    };
    std::thread::scope(|scope| loop {
        let line = match read_line(reader) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e),
        };
        let envelope: Envelope<Call> = match serde_json::from_slice(&line) {
            Ok(envelope) => envelope,
            Err(e) => {
                let id = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                    .unwrap_or(0);
                let error = WireError {
                    message: format!("not a call of this vmctl: {e}"),
                    held: None,
                };
                answer(id, Answer::Failed { error });
                continue;
            }
        };
        let Envelope { id, body } = envelope;
        if is_slow(&body) {
            let answer = &answer;
            scope.spawn(move || answer(id, served.answer(body)));
        } else {
            answer(id, served.answer(body));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use vmctl_planner::facts::FactsRequest;

    /// A client talking to `serve_calls` in-process over two OS pipes.
    fn connected(state: &std::path::Path) -> (StreamClient, std::thread::JoinHandle<()>) {
        let (call_r, call_w) = std::io::pipe().unwrap();
        let (answer_r, answer_w) = std::io::pipe().unwrap();
        let state = state.to_owned();
        let agent = std::thread::spawn(move || {
            let served = Served::new("/nonexistent/vmctl".into());
            served.answer(Call::Open {
                host: "far".into(),
                state_dir: state,
                netns: None,
            });
            let _ = serve_calls(&mut BufReader::new(call_r), Box::new(answer_w), &served);
        });
        let client = StreamClient::new(Box::new(call_w), Box::new(BufReader::new(answer_r)));
        (client, agent)
    }

    #[test]
    fn calls_from_many_threads_get_their_own_answers() {
        let state = tempfile::tempdir().unwrap();
        let (client, agent) = connected(state.path());
        std::thread::scope(|scope| {
            for i in 0..8 {
                let client = &client;
                let state = state.path();
                scope.spawn(move || {
                    let project = format!("p{i}");
                    let facts = client
                        .call(&Call::Facts {
                            request: FactsRequest::new(&project, state, None),
                        })
                        .unwrap();
                    assert!(matches!(facts, Answer::Facts { .. }), "{facts:?}");
                    let tidied = client.call(&Call::Tidy { project }).unwrap();
                    assert_eq!(tidied, Answer::Tidied);
                });
            }
        });
        drop(client);
        agent.join().unwrap();
    }

    #[test]
    fn a_line_that_is_no_call_is_answered_as_failed_and_serving_goes_on() {
        let (call_r, mut call_w) = std::io::pipe().unwrap();
        let (answer_r, answer_w) = std::io::pipe().unwrap();
        let agent = std::thread::spawn(move || {
            let served = Served::new("/nonexistent/vmctl".into());
            serve_calls(&mut BufReader::new(call_r), Box::new(answer_w), &served)
        });
        call_w
            .write_all(
                b"{\"id\":7,\"call\":\"format-disk\"}\nnot json\n{\"id\":8,\"call\":\"cancel\"}\n",
            )
            .unwrap();
        drop(call_w);
        let answers: Vec<Envelope<Answer>> = BufReader::new(answer_r)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].id, 7);
        assert!(matches!(answers[0].body, Answer::Failed { .. }));
        assert_eq!(answers[1].id, 0);
        assert_eq!(answers[2].body, Answer::Cancelled);
        assert_eq!(agent.join().unwrap(), Ok(()));
    }

    #[test]
    fn when_the_agent_goes_every_call_fails_plainly() {
        let (_call_r, call_w) = std::io::pipe().unwrap();
        let (answer_r, answer_w) = std::io::pipe().unwrap();
        let client = StreamClient::new(Box::new(call_w), Box::new(BufReader::new(answer_r)));
        drop(answer_w);
        let err = client.call(&Call::Cancel).unwrap_err();
        assert!(err.to_string().contains("closed the connection"), "{err}");
    }
}
