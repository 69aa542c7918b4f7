//! The near side of an agent session: the `ssh` process that runs `vmctl agent` on a
//! host, its stdin and stdout as the protocol's channel, and the last lines of its
//! stderr (ssh's and the agent's) to explain a failure — or a connection to a kept
//! agent that serves the protocol on a socket ([`Agent::over_socket`], `remote::kept`). Each answer is awaited at most
//! the session's timeout; an agent that overstays it is given up (its `ssh` killed),
//! since a late answer would be read as the next one.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::protocol::{read_line, write_message, HostProbe, Request, Response, WireError};
use super::ssh::{classify, SshError, SSH_FAILED};

/// How many lines of stderr a session keeps.
const STDERR_LINES: usize = 20;

/// How long a session waits for its `ssh` to end once its input is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How long a request waits for its answer unless the session says otherwise
/// ([`Agent::set_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// `ssh` failed (the connection dropped, or was never made).
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The agent ended without answering.
    #[error("host {host}: the agent ended ({status}){}", last_line(.stderr))]
    Gone {
        host: String,
        /// How it ended, as words.
        status: String,
        /// Its exit code, when it exited.
        code: Option<i32>,
        /// The last lines of its stderr (and ssh's).
        stderr: Vec<String>,
    },
    /// The agent's answer is not a message of this protocol.
    #[error("host {host}: the agent answered outside the protocol: {source}")]
    Protocol {
        host: String,
        #[source]
        source: WireError,
    },
    /// The agent answered with [`Response::Error`].
    #[error("host {host}: the agent refused the request: {message}")]
    Refused { host: String, message: String },
    /// No answer within the session's timeout; the session is given up.
    #[error("host {host}: the agent did not answer within {} s", .after.as_secs_f64())]
    Timeout { host: String, after: Duration },
    /// An answer of another kind than the request asks for.
    #[error("host {host}: the agent answered {found} to {request}")]
    Unexpected {
        host: String,
        request: &'static str,
        found: String,
    },
}

fn last_line(lines: &[String]) -> String {
    lines.last().map(|l| format!(": {l}")).unwrap_or_default()
}

/// A running agent session. Requests are answered in order, one at a time.
pub struct Agent {
    host: String,
    carrier: Carrier,
    stdin: Option<Box<dyn Write + Send>>,
    stdout: LineReader,
    timeout: Option<Duration>,
}

/// What carries a session.
enum Carrier {
    /// `ssh … vmctl agent`, with the last lines of its stderr.
    Ssh { child: Child, stderr: StderrTail },
    /// A connection to a kept agent's socket, shut down when the session ends.
    Socket(UnixStream),
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.host)
            .field(
                "carrier",
                &match &self.carrier {
                    Carrier::Ssh { child, .. } => format!("ssh (pid {})", child.id()),
                    Carrier::Socket(_) => "a kept agent's socket".to_owned(),
                },
            )
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Wraps a spawned `ssh … vmctl agent` whose stdin, stdout and stderr are piped.
    pub(crate) fn new(host: String, mut child: Child) -> Result<Agent, CallError> {
        let gone = |what: &str| CallError::Gone {
            host: host.clone(),
            status: format!("its {what} is not a pipe"),
            code: None,
            stderr: Vec::new(),
        };
        let stdin = child.stdin.take().ok_or_else(|| gone("stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| gone("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| gone("stderr"))?;
        Ok(Agent {
            host,
            stdin: Some(Box::new(stdin)),
            stdout: LineReader::spawn(stdout),
            carrier: Carrier::Ssh {
                child,
                stderr: StderrTail::collect(stderr),
            },
            timeout: Some(DEFAULT_TIMEOUT),
        })
    }

    /// A session on a connection to a kept agent's socket.
    pub(crate) fn over_socket(host: String, stream: UnixStream) -> std::io::Result<Agent> {
        let reader = stream.try_clone()?;
        let writer = stream.try_clone()?;
        Ok(Agent {
            host,
            stdin: Some(Box::new(writer)),
            stdout: LineReader::spawn(reader),
            carrier: Carrier::Socket(stream),
            timeout: Some(DEFAULT_TIMEOUT),
        })
    }

    /// The host as errors name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How long each request waits for its answer (`None`: as long as it takes).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The pid of the local `ssh` that carries the session (none for a kept agent's
    /// socket).
    pub fn ssh_pid(&self) -> Option<u32> {
        match &self.carrier {
            Carrier::Ssh { child, .. } => Some(child.id()),
            Carrier::Socket(_) => None,
        }
    }

    /// Sends `request` and reads its answer. [`Response::Error`] is returned as it
    /// is; an agent that ended, or a dropped connection, is an error.
    pub fn call(&mut self, request: &Request) -> Result<Response, CallError> {
        let sent = match &mut self.stdin {
            Some(stdin) => write_message(stdin, request),
            None => Err(WireError::Closed),
        };
        if sent.is_err() {
            // The far side is gone (a broken pipe): say why, from how it ended.
            return Err(self.ended());
        }
        let line = match self.stdout.next(self.timeout) {
            Next::Line(line) => line,
            Next::End => return Err(self.ended()),
            Next::Failed(source) => {
                return Err(CallError::Protocol {
                    host: self.host.clone(),
                    source,
                })
            }
            Next::Timeout => {
                self.stdin = None;
                self.end_now();
                return Err(CallError::Timeout {
                    host: self.host.clone(),
                    after: self.timeout.unwrap_or_default(),
                });
            }
        };
        serde_json::from_slice(&line).map_err(|e| CallError::Protocol {
            host: self.host.clone(),
            source: WireError::Malformed {
                error: e.to_string(),
                line: String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
            },
        })
    }

    /// [`Request::Probe`]: what the host says about itself.
    pub fn probe(&mut self) -> Result<HostProbe, CallError> {
        match self.call(&Request::Probe)? {
            Response::Probe(probe) => Ok(probe),
            other => Err(self.unexpected("probe", other)),
        }
    }

    /// Turns the session into a carrier of host calls ([`Request::Calls`]): the calls
    /// go on this session's stdin, their answers come from its stdout, many at once.
    /// The returned `Agent` keeps the `ssh` process; drop it after the client to end
    /// the session.
    pub fn into_calls(mut self) -> Result<(crate::hosts::stream::StreamClient, Agent), CallError> {
        match self.call(&Request::Calls)? {
            Response::Calls => {}
            other => return Err(self.unexpected("calls", other)),
        }
        let stdin = self.stdin.take().ok_or_else(|| self.ended())?;
        let lines = std::mem::replace(&mut self.stdout, LineReader::closed());
        let host = self.host.clone();
        let next_line = move || match lines.lines.recv() {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(format!("host {host}: {e}")),
            Err(mpsc::RecvError) => Ok(None),
        };
        let client = crate::hosts::stream::StreamClient::with_lines(stdin, next_line);
        Ok((client, self))
    }

    /// Ends the session: [`Request::Bye`], then the agent's exit. A session that is
    /// already gone is an error saying why.
    pub fn shutdown(mut self) -> Result<(), CallError> {
        match self.call(&Request::Bye)? {
            Response::Bye => {}
            other => return Err(self.unexpected("bye", other)),
        }
        self.stdin = None;
        let _ = self.wait(EXIT_GRACE);
        Ok(())
    }

    /// An answer that does not fit the request.
    pub(crate) fn unexpected(&self, request: &'static str, found: Response) -> CallError {
        match found {
            Response::Error(reply) => CallError::Refused {
                host: self.host.clone(),
                message: reply.message,
            },
            other => CallError::Unexpected {
                host: self.host.clone(),
                request,
                found: format!("{other:?}"),
            },
        }
    }

    /// The error for a session whose `ssh` ended: ssh's own failure (status 255,
    /// classified), or the agent's exit status with its last stderr lines.
    pub(crate) fn ended(&mut self) -> CallError {
        self.stdin = None;
        if let Carrier::Socket(_) = self.carrier {
            return CallError::Gone {
                host: self.host.clone(),
                status: "the kept agent closed the connection".to_owned(),
                code: None,
                stderr: Vec::new(),
            };
        }
        let status = self.wait(EXIT_GRACE);
        let stderr = match &self.carrier {
            Carrier::Ssh { stderr, .. } => stderr.lines(Duration::from_secs(1)),
            Carrier::Socket(_) => Vec::new(),
        };
        match status {
            Some(s) if s.code() == Some(SSH_FAILED) => {
                CallError::Ssh(classify(&self.host, &stderr.join("\n")))
            }
            Some(s) => CallError::Gone {
                host: self.host.clone(),
                status: s.to_string(),
                code: s.code(),
                stderr,
            },
            None => CallError::Gone {
                host: self.host.clone(),
                status: "closed its output but did not exit".to_owned(),
                code: None,
                stderr,
            },
        }
    }

    fn wait(&mut self, grace: Duration) -> Option<ExitStatus> {
        let Carrier::Ssh { child, .. } = &mut self.carrier else {
            return None;
        };
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }
}

impl Agent {
    /// Ends the session at once: kills its `ssh`, or shuts its socket down.
    fn end_now(&mut self) {
        match &mut self.carrier {
            Carrier::Ssh { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Carrier::Socket(stream) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for Agent {
    /// Closes the agent's input (it exits at the end of it; a kept agent ends the
    /// connection and lets go of what it held for it), then ends the local `ssh` if it
    /// has not ended by itself.
    fn drop(&mut self) {
        self.stdin = None;
        if let Carrier::Socket(_) = self.carrier {
            self.end_now();
        } else if self.wait(Duration::from_millis(500)).is_none() {
            self.end_now();
        }
    }
}

/// The lines of the agent's stdout, read by a thread of their own so that a wait for
/// one can end.
#[derive(Debug)]
struct LineReader {
    lines: mpsc::Receiver<Result<Option<Vec<u8>>, WireError>>,
}

enum Next {
    Line(Vec<u8>),
    /// The stream ended or failed: the agent or its connection is gone.
    End,
    /// A line that breaks the protocol (too long).
    Failed(WireError),
    Timeout,
}

impl LineReader {
    /// A reader that has ended (its lines taken elsewhere).
    fn closed() -> LineReader {
        let (_, rx) = mpsc::channel();
        LineReader { lines: rx }
    }

    fn spawn(stdout: impl Read + Send + 'static) -> LineReader {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let line = read_line(&mut reader);
                let last = !matches!(line, Ok(Some(_)) | Err(WireError::TooLong));
                if tx.send(line).is_err() || last {
                    return;
                }
            }
        });
        LineReader { lines: rx }
    }

    fn next(&self, timeout: Option<Duration>) -> Next {
        let line = match timeout {
            Some(timeout) => match self.lines.recv_timeout(timeout) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => return Next::Timeout,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Next::End,
            },
            None => match self.lines.recv() {
                Ok(line) => line,
                Err(mpsc::RecvError) => return Next::End,
            },
        };
        match line {
            Ok(Some(line)) => Next::Line(line),
            Ok(None) | Err(WireError::Io(_)) | Err(WireError::Closed) => Next::End,
            Err(e) => Next::Failed(e),
        }
    }
}

/// The last lines of a child's stderr, read by a thread of their own.
#[derive(Debug)]
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    done: Mutex<mpsc::Receiver<()>>,
}

impl StderrTail {
    fn collect(stderr: impl std::io::Read + Send + 'static) -> StderrTail {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let kept = Arc::clone(&lines);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                line.clear();
                if text.is_empty() {
                    continue;
                }
                if let Ok(mut kept) = kept.lock() {
                    if kept.len() == STDERR_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(text);
                }
            }
            let _ = tx.send(());
        });
        StderrTail {
            lines,
            done: Mutex::new(rx),
        }
    }

    /// The lines kept, after waiting up to `wait` for the stream to end.
    fn lines(&self, wait: Duration) -> Vec<String> {
        if let Ok(done) = self.done.lock() {
            let _ = done.recv_timeout(wait);
        }
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;
    use crate::remote::protocol::{ErrorKind, Hello, PROTOCOL};

    /// An "agent" run locally: `sh -c SCRIPT` with piped stdio.
    fn local(script: &str) -> Agent {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        Agent::new("local-test".into(), child).expect("pipes")
    }

    #[test]
    fn an_agent_that_exits_is_gone_with_its_last_words() {
        let mut agent = local("echo 'vmctl: cannot open the state dir' >&2; exit 3");
        let err = agent.call(&Request::Probe).expect_err("gone");
        let text = err.to_string();
        assert!(matches!(err, CallError::Gone { .. }), "{err:?}");
        assert!(text.contains("local-test"), "{text}");
        assert!(text.contains("cannot open the state dir"), "{text}");
    }

    #[test]
    fn ssh_failing_is_classified() {
        let mut agent =
            local("echo 'ssh: connect to host x port 22: Connection refused' >&2; exit 255");
        let err = agent.call(&Request::Probe).expect_err("gone");
        assert!(
            matches!(err, CallError::Ssh(SshError::Unreachable { ref host, .. }) if host == "local-test"),
            "{err:?}"
        );
    }

    #[test]
    fn an_agent_that_does_not_answer_in_time_is_given_up() {
        let mut agent = local("read line; sleep 10");
        agent.set_timeout(Some(Duration::from_millis(200)));
        let started = Instant::now();
        let err = agent.call(&Request::Probe).expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(&err, CallError::Timeout { host, .. } if host == "local-test"),
            "{err:?}"
        );
        assert!(err.to_string().contains("0.2 s"), "{err}");
        // Given up: the next request fails at once instead of reading a late answer.
        let err = agent.call(&Request::Probe).expect_err("gone");
        assert!(matches!(err, CallError::Gone { .. }), "{err:?}");
    }

    #[test]
    fn garbage_on_stdout_is_a_protocol_error() {
        let mut agent = local("read line; echo 'Welcome to the machine'; cat >/dev/null");
        let err = agent.call(&Request::Probe).expect_err("garbage");
        assert!(matches!(err, CallError::Protocol { .. }), "{err:?}");
    }

    #[test]
    fn an_error_reply_is_refused() {
        let mut agent = local(
            r#"read line; echo '{"type":"error","kind":"failed","message":"no"}'; cat >/dev/null"#,
        );
        let response = agent.call(&Request::Probe).expect("answers");
        assert!(matches!(&response, Response::Error(e) if e.kind == ErrorKind::Failed));
        let err = agent.unexpected("probe", response);
        assert!(matches!(err, CallError::Refused { ref message, .. } if message == "no"));
        let hello = Response::Hello(Hello {
            protocol: PROTOCOL,
            build: String::new(),
        });
        assert!(matches!(
            agent.unexpected("probe", hello),
            CallError::Unexpected { .. }
        ));
    }
}
