//! An ssh target as a config names it: `host`, `user@host`, `user@host:port`,
//! `[v6]`, `user@[v6]:port`. Parsed once, checked so that it can never be read by `ssh`
//! as an option, and turned into `ssh` arguments (`-l`, `-p`, the host).

use std::fmt;
use std::str::FromStr;

/// Where a remote host is reached: an optional user, a host (a name, an alias from the
/// ssh config, an IPv4 or an IPv6 literal without brackets) and an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Why an ssh target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target is empty, or has an empty host.
    #[error("ssh target `{target}` names no host")]
    EmptyHost { target: String },
    /// `@` with nothing before it.
    #[error("ssh target `{target}` has an empty user before `@`")]
    EmptyUser { target: String },
    /// A user or host that `ssh` would read as an option, or with characters no
    /// user or host name has (spaces, control characters, quotes, a second `@`, …).
    #[error("ssh target `{target}`: `{part}` is not a valid {what}")]
    InvalidPart {
        target: String,
        part: String,
        what: &'static str,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("ssh target `{target}`: `{port}` is not a port (1-65535)")]
    InvalidPort { target: String, port: String },
    /// `[` without its `]`, or text after `]` that is not `:port`.
    #[error("ssh target `{target}`: an IPv6 address is written `[addr]` or `[addr]:port`")]
    InvalidBrackets { target: String },
}

impl FromStr for SshTarget {
    type Err = TargetError;

    fn from_str(target: &str) -> Result<Self, TargetError> {
        let (user, rest) = match target.split_once('@') {
            Some(("", _)) => {
                return Err(TargetError::EmptyUser {
                    target: target.to_owned(),
                })
            }
            Some((user, rest)) => (Some(user), rest),
            None => (None, target),
        };
        let (host, port) = split_host_port(target, rest)?;
        if host.is_empty() {
            return Err(TargetError::EmptyHost {
                target: target.to_owned(),
            });
        }
        if let Some(user) = user {
            check_part(target, user, "user")?;
        }
        check_part(target, host, "host")?;
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(TargetError::InvalidPort {
                    target: target.to_owned(),
                    port: p.to_owned(),
                }),
            })
            .transpose()?;
        Ok(SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; a bare IPv6 literal (two or more colons)
/// is a host without a port.
fn split_host_port<'a>(
    target: &str,
    rest: &'a str,
) -> Result<(&'a str, Option<&'a str>), TargetError> {
    let brackets = || TargetError::InvalidBrackets {
        target: target.to_owned(),
    };
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(brackets)?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(brackets()),
            },
        };
    }
    if rest.contains(']') {
        return Err(brackets());
    }
    match rest.matches(':').count() {
        0 => Ok((rest, None)),
        1 => {
            let (host, port) = rest.split_once(':').ok_or_else(brackets)?;
            Ok((host, Some(port)))
        }
        _ => Ok((rest, None)),
    }
}

/// A user or host must not start with `-` (it would be an option to `ssh`) and holds
/// only printable, non-space characters without quotes, `@`, `[`, `]` or `/`.
fn check_part(target: &str, part: &str, what: &'static str) -> Result<(), TargetError> {
    let bad_char =
        |c: char| c.is_whitespace() || c.is_control() || "@[]/\\'\"`$;&|<>()".contains(c);
    if part.starts_with('-') || part.chars().any(bad_char) {
        return Err(TargetError::InvalidPart {
            target: target.to_owned(),
            part: part.to_owned(),
            what,
        });
    }
    Ok(())
}

impl SshTarget {
    /// The `ssh` arguments that name this target: `-l USER`, `-p PORT`, then `--` and
    /// the host, which must come last before the remote command.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(user) = &self.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        args.extend(["--".to_owned(), self.host.clone()]);
        args
    }
}

impl fmt::Display for SshTarget {
    /// The target as a user writes it (brackets around an IPv6 host with a port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SshTarget {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn target(user: Option<&str>, host: &str, port: Option<u16>) -> SshTarget {
        SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn the_written_forms_parse() {
        assert_eq!(parse("kvm-02"), target(None, "kvm-02", None));
        assert_eq!(
            parse("root@192.0.2.12"),
            target(Some("root"), "192.0.2.12", None)
        );
        assert_eq!(
            parse("ops@kvm-02.example.com:2222"),
            target(Some("ops"), "kvm-02.example.com", Some(2222))
        );
        assert_eq!(
            parse("[2001:db8::1]:22"),
            target(None, "2001:db8::1", Some(22))
        );
        assert_eq!(
            parse("root@[2001:db8::1]"),
            target(Some("root"), "2001:db8::1", None)
        );
        assert_eq!(parse("2001:db8::1"), target(None, "2001:db8::1", None));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "kvm-02",
            "root@192.0.2.12",
            "ops@h:2222",
            "[2001:db8::1]:22",
            "root@2001:db8::1",
        ] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn bad_targets_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<SshTarget>().expect_err(s);
        assert!(matches!(err(""), TargetError::EmptyHost { .. }));
        assert!(matches!(err("root@"), TargetError::EmptyHost { .. }));
        assert!(matches!(err("@h"), TargetError::EmptyUser { .. }));
        assert!(matches!(err("h:0"), TargetError::InvalidPort { .. }));
        assert!(matches!(err("h:65536"), TargetError::InvalidPort { .. }));
        assert!(matches!(err("h:ssh"), TargetError::InvalidPort { .. }));
        assert!(matches!(err("[::1"), TargetError::InvalidBrackets { .. }));
        assert!(matches!(
            err("[::1]22"),
            TargetError::InvalidBrackets { .. }
        ));
        assert!(matches!(err("h]"), TargetError::InvalidBrackets { .. }));
        assert!(matches!(err("a@b@c"), TargetError::InvalidPart { .. }));
        // Never an option to ssh, never shell text.
        assert!(matches!(
            err("-oProxyCommand=x"),
            TargetError::InvalidPart { .. }
        ));
        assert!(matches!(err("-l@h"), TargetError::InvalidPart { .. }));
        assert!(matches!(err("h;reboot"), TargetError::InvalidPart { .. }));
        assert!(matches!(err("a b"), TargetError::InvalidPart { .. }));
    }

    #[test]
    fn ssh_args_put_the_host_last_after_double_dash() {
        assert_eq!(
            parse("root@h:2222").ssh_args(),
            ["-l", "root", "-p", "2222", "--", "h"]
        );
        assert_eq!(parse("h").ssh_args(), ["--", "h"]);
    }

    #[test]
    fn every_error_names_the_target() {
        for s in ["", "@h", "h:0", "[::1", "-x"] {
            let e = s.parse::<SshTarget>().expect_err(s);
            assert!(e.to_string().contains(&format!("`{s}`")), "{e}");
        }
    }
}
