//! The agent protocol: newline-delimited JSON over the agent's stdin (requests) and
//! stdout (responses), one response per request, in order. Both ends use these types,
//! so the wire format is whatever serde makes of them: `{"type":"hello",…}`.
//!
//! Versioned: the first request of a session is [`Request::Hello`] with the caller's
//! [`PROTOCOL`] and build id; the agent answers [`Response::Hello`] with its own. A
//! caller that sees another build ships itself (the build id is the sha256 of the
//! executable, see [`super::build`]); a caller that sees another protocol with the same
//! build has found a bug. New requests are new variants; a change to an existing one
//! bumps [`PROTOCOL`]. An agent answers a request it cannot read (bad JSON, a request
//! type it does not know) with [`Response::Error`] and goes on serving.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL: u32 = 1;

/// The longest line either end accepts (16 MiB): a peer that sends more without a
/// newline is not speaking this protocol.
pub const MAX_LINE: usize = 16 << 20;

/// What the caller asks the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The handshake: the caller's protocol and build.
    Hello(Hello),
    /// What the host says about itself ([`HostProbe`]).
    Probe,
    /// The end of the session: the agent answers [`Response::Bye`] and exits.
    Bye,
    /// From the next line on, the session carries host calls (`hosts::wire::Call`)
    /// paired with their answers by id (`hosts::stream`), many at once, until its input
    /// ends. The agent answers [`Response::Calls`] first.
    Calls,
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The agent's protocol and build.
    Hello(Hello),
    /// The answer to [`Request::Probe`].
    Probe(HostProbe),
    /// The answer to [`Request::Bye`]; the agent exits after writing it.
    Bye,
    /// The answer to [`Request::Calls`]: host calls from the next line on.
    Calls,
    /// The request could not be read or not be answered.
    Error(ErrorReply),
}

/// Both sides of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// [`PROTOCOL`] of the sender.
    pub protocol: u32,
    /// The sender's build id: the sha256 of its executable, in hex.
    pub build: String,
}

/// What a host says about itself when the agent starts (the answer to a probe): who
/// the agent runs as, whether it can run VMs, and its build. Not the host's live state,
/// which is `vmctl_planner::facts::HostFacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostProbe {
    /// The agent's effective uid (0: it may do everything vmctl does).
    pub euid: u32,
    /// Whether `/dev/kvm` opens read-write for the agent.
    pub kvm: KvmAccess,
    /// `uname -r`.
    pub kernel_release: String,
    /// The host's name (its UTS namespace's).
    pub hostname: String,
    /// The agent's build id.
    pub build: String,
}

/// Whether the agent can use `/dev/kvm`, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvmAccess {
    Usable,
    Unusable { reason: String },
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

/// The kind of [`ErrorReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not JSON, or not a request of this protocol (an unknown `type`, a
    /// missing or unknown field).
    BadRequest,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
    /// The request was understood but failed on the host.
    Failed,
}

/// Why a message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reading or writing the stream failed.
    #[error("the agent connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream.
    #[error("the agent connection was closed")]
    Closed,
    /// A line longer than [`MAX_LINE`].
    #[error("a message longer than {MAX_LINE} bytes")]
    TooLong,
    /// A line that is not a message of this protocol.
    #[error("not a message of vmctl's agent protocol: {error}: {line}")]
    Malformed { error: String, line: String },
}

/// Writes one message as a JSON line and flushes it.
pub fn write_message<W: Write, T: Serialize>(writer: &mut W, message: &T) -> Result<(), WireError> {
    let mut line = serde_json::to_vec(message).map_err(|e| std::io::Error::other(e.to_string()))?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()?;
    Ok(())
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes. `Ok(None)` at
/// the end of the stream; a line too long is consumed up to its newline and reported.
pub fn read_line<R: BufRead>(reader: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if available.is_empty() {
            return match (line.is_empty() && !too_long, too_long) {
                (true, _) => Ok(None),
                (false, true) => Err(WireError::TooLong),
                (false, false) => Ok(Some(line)),
            };
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            return if too_long {
                Err(WireError::TooLong)
            } else {
                Ok(Some(line))
            };
        }
    }
}

/// Reads and parses one message; the end of the stream is [`WireError::Closed`].
pub fn read_message<R: BufRead, T: for<'de> Deserialize<'de>>(
    reader: &mut R,
) -> Result<T, WireError> {
    let line = read_line(reader)?.ok_or(WireError::Closed)?;
    serde_json::from_slice(&line).map_err(|e| WireError::Malformed {
        error: e.to_string(),
        line: String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).expect("serializes")
    }

    #[test]
    fn the_wire_format_is_tagged_json() {
        let hello = Request::Hello(Hello {
            protocol: 1,
            build: "ab".into(),
        });
        assert_eq!(
            json(&hello),
            r#"{"type":"hello","protocol":1,"build":"ab"}"#
        );
        assert_eq!(json(&Request::Probe), r#"{"type":"probe"}"#);
        assert_eq!(json(&Request::Bye), r#"{"type":"bye"}"#);
        let probe = Response::Probe(HostProbe {
            euid: 0,
            kvm: KvmAccess::Unusable {
                reason: "no such file".into(),
            },
            kernel_release: "6.1".into(),
            hostname: "h".into(),
            build: "ab".into(),
        });
        assert_eq!(
            json(&probe),
            r#"{"type":"probe","euid":0,"kvm":{"state":"unusable","reason":"no such file"},"kernel_release":"6.1","hostname":"h","build":"ab"}"#
        );
        let error = Response::Error(ErrorReply {
            kind: ErrorKind::BadRequest,
            message: "m".into(),
        });
        assert_eq!(
            json(&error),
            r#"{"type":"error","kind":"bad_request","message":"m"}"#
        );
    }

    #[test]
    fn messages_round_trip_through_lines() {
        let mut wire = Vec::new();
        let sent = [
            Request::Hello(Hello {
                protocol: PROTOCOL,
                build: "x".into(),
            }),
            Request::Probe,
            Request::Bye,
        ];
        for request in &sent {
            write_message(&mut wire, request).expect("writes");
        }
        let mut reader = &wire[..];
        for request in &sent {
            assert_eq!(
                &read_message::<_, Request>(&mut reader).expect("reads"),
                request
            );
        }
        assert!(matches!(
            read_message::<_, Request>(&mut reader),
            Err(WireError::Closed)
        ));
    }

    #[test]
    fn unknown_types_and_fields_are_malformed() {
        for line in [
            "{\"type\":\"reboot\"}\n",
            "{\"type\":\"hello\",\"protocol\":1,\"build\":\"x\",\"y\":2}\n",
            "{\"type\":\"hello\",\"protocol\":1}\n",
            "not json\n",
        ] {
            let result = read_message::<_, Request>(&mut line.as_bytes());
            assert!(matches!(result, Err(WireError::Malformed { .. })), "{line}");
        }
    }

    #[test]
    fn a_line_too_long_is_refused_and_the_next_one_read() {
        let mut input = vec![b'x'; MAX_LINE + 1];
        input.extend_from_slice(b"\n{\"type\":\"bye\"}\n");
        let mut reader = std::io::BufReader::with_capacity(4096, &input[..]);
        assert!(matches!(read_line(&mut reader), Err(WireError::TooLong)));
        assert_eq!(
            read_message::<_, Request>(&mut reader).expect("next line"),
            Request::Bye
        );
    }

    #[test]
    fn a_last_line_without_newline_is_read() {
        let mut reader = &b"{\"type\":\"bye\"}"[..];
        assert_eq!(
            read_message::<_, Request>(&mut reader).expect("reads"),
            Request::Bye
        );
    }
}
