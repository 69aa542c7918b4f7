//! The far side: `vmctl agent` serves the protocol on its stdin and stdout until
//! [`Request::Bye`] or the end of its input (the ssh connection dropped). A line it
//! cannot read gets an [`Response::Error`]; nothing a caller sends makes it panic.

use std::io::{BufRead, Write};

use super::protocol::{
    read_line, write_message, ErrorKind, ErrorReply, Hello, HostProbe, KvmAccess, Request,
    Response, WireError, PROTOCOL,
};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The caller said [`Request::Bye`].
    Bye,
    /// The input ended (the caller or its connection went away).
    Eof,
}

/// Why the agent stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The build id could not be computed.
    #[error(transparent)]
    BuildId(#[from] super::build::BuildIdError),
    /// stdin or stdout failed.
    #[error("the agent's stdin or stdout failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves requests from `reader`, answering on `writer`, as the build `build` (the
/// agent's own: [`Executable::current`]'s sha256).
pub fn serve<R: BufRead, W: Write + Send>(
    mut reader: R,
    mut writer: W,
    build: &str,
) -> Result<End, AgentError> {
    loop {
        let line = match read_line(&mut reader) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(End::Eof),
            Err(WireError::TooLong) => {
                reply(
                    &mut writer,
                    &error(
                        ErrorKind::TooLong,
                        "the request is longer than the protocol allows",
                    ),
                )?;
                continue;
            }
            Err(WireError::Io(e)) => return Err(e.into()),
            Err(e) => return Err(std::io::Error::other(e.to_string()).into()),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let request = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => request,
            Err(e) => {
                reply(
                    &mut writer,
                    &error(
                        ErrorKind::BadRequest,
                        format!("not a request of protocol {PROTOCOL}: {e}"),
                    ),
                )?;
                continue;
            }
        };
        let response = answer(&request, build);
        reply(&mut writer, &response)?;
        if request == Request::Bye {
            return Ok(End::Bye);
        }
        if request == Request::Calls {
            // The agent's own binary runs the host's VMMs (`vmctl vmm`).
            let vmctl = std::env::current_exe()?;
            let served = crate::hosts::wire::Served::new(vmctl);
            crate::hosts::stream::serve_calls(&mut reader, writer, &served)
                .map_err(std::io::Error::other)?;
            return Ok(End::Eof);
        }
    }
}

/// [`serve`] on this process's stdin and stdout as the running executable.
pub fn serve_stdio() -> Result<End, AgentError> {
    let build = &super::build::agent_build_id()?;
    let stdin = std::io::stdin().lock();
    serve(stdin, std::io::stdout(), build)
}

fn answer(request: &Request, build: &str) -> Response {
    match request {
        // The agent always says what it is; the caller decides what a mismatch means.
        Request::Hello(_) => Response::Hello(Hello {
            protocol: PROTOCOL,
            build: build.to_owned(),
        }),
        Request::Probe => Response::Probe(probe(build)),
        Request::Bye => Response::Bye,
        Request::Calls => Response::Calls,
    }
}

fn reply<W: Write>(writer: &mut W, response: &Response) -> Result<(), AgentError> {
    write_message(writer, response).map_err(|e| match e {
        WireError::Io(e) => AgentError::Io(e),
        other => AgentError::Io(std::io::Error::other(other.to_string())),
    })
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply {
        kind,
        message: message.into(),
    })
}

/// What this host says about itself, as the agent sees it.
pub fn probe(build: &str) -> HostProbe {
    HostProbe {
        // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
        euid: unsafe { libc::geteuid() },
        kvm: match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(_) => KvmAccess::Usable,
            Err(e) => KvmAccess::Unusable {
                reason: format!("/dev/kvm: {e}"),
            },
        },
        kernel_release: proc_line("/proc/sys/kernel/osrelease"),
        hostname: proc_line("/proc/sys/kernel/hostname"),
        build: build.to_owned(),
    }
}

/// The first line of a /proc file; empty when it cannot be read (a fact, not an
/// error: the caller decides whether it needs it).
fn proc_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.lines().next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::protocol::{read_message, write_message};

    /// Serves `input` and returns the responses and how the session ended.
    fn session(input: &[u8]) -> (Vec<Response>, End) {
        let mut output = Vec::new();
        let end = serve(input, &mut output, "b".repeat(64).as_str()).expect("serves");
        let mut reader = &output[..];
        let mut responses = Vec::new();
        while let Ok(response) = read_message::<_, Response>(&mut reader) {
            responses.push(response);
        }
        (responses, end)
    }

    fn lines(requests: &[Request]) -> Vec<u8> {
        let mut out = Vec::new();
        for request in requests {
            write_message(&mut out, request).expect("writes");
        }
        out
    }

    #[test]
    fn hello_probe_bye() {
        let input = lines(&[
            Request::Hello(Hello {
                protocol: PROTOCOL,
                build: "a".repeat(64),
            }),
            Request::Probe,
            Request::Bye,
            Request::Probe,
        ]);
        let (responses, end) = session(&input);
        assert_eq!(end, End::Bye);
        assert_eq!(responses.len(), 3, "nothing after bye: {responses:?}");
        assert_eq!(
            responses[0],
            Response::Hello(Hello {
                protocol: PROTOCOL,
                build: "b".repeat(64)
            })
        );
        let Response::Probe(probe) = &responses[1] else {
            panic!("{:?}", responses[1]);
        };
        assert_eq!(probe.build, "b".repeat(64));
        assert!(!probe.kernel_release.is_empty());
        assert_eq!(responses[2], Response::Bye);
    }

    #[test]
    fn bad_lines_get_errors_and_the_session_goes_on() {
        let mut input =
            b"not json\n{\"type\":\"format_disk\"}\n\n{\"type\":\"hello\",\"protocol\":1}\n"
                .to_vec();
        input.extend_from_slice(&[0xff, 0xfe, b'\n']);
        input.extend(lines(&[Request::Probe]));
        let (responses, end) = session(&input);
        assert_eq!(end, End::Eof);
        assert_eq!(responses.len(), 5, "{responses:?}");
        for response in &responses[..4] {
            assert!(
                matches!(
                    response,
                    Response::Error(ErrorReply {
                        kind: ErrorKind::BadRequest,
                        ..
                    })
                ),
                "{response:?}"
            );
        }
        assert!(matches!(responses[4], Response::Probe(_)));
    }

    #[test]
    fn an_empty_input_ends_the_session() {
        let (responses, end) = session(b"");
        assert!(responses.is_empty());
        assert_eq!(end, End::Eof);
    }

    #[test]
    fn probe_says_why_kvm_is_unusable_or_that_it_is_usable() {
        let probed = probe("x");
        match probed.kvm {
            KvmAccess::Usable => {}
            KvmAccess::Unusable { reason } => assert!(reason.starts_with("/dev/kvm: "), "{reason}"),
        }
    }
}
