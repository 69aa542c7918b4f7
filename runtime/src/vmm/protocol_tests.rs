use super::*;
use crate::vmm::virtio_wiring::DeviceKind;
use proptest::prelude::*;

fn requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Pause,
        Request::Resume,
        Request::Shutdown { timeout_ms: None },
        Request::Shutdown {
            timeout_ms: Some(30_000),
        },
        Request::Kill,
        Request::Snapshot {
            resume: false,
            dirty: false,
        },
        Request::Snapshot {
            resume: true,
            dirty: false,
        },
        Request::Snapshot {
            resume: false,
            dirty: true,
        },
        Request::Precopy { round: 0 },
        Request::Precopy { round: 7 },
        Request::PrecopyEnd,
    ]
}

fn responses() -> Vec<Response> {
    let mut counters = crate::vmm::devices::virtio::VirtioCounters::default();
    counters.transport.bad_accesses = 2;
    counters.device.requests = 7;
    vec![
        Response::Status(Status {
            state: RunState::Running,
            uptime_ms: 1234,
            vcpus: 2,
            memory: 128 << 20,
            pid: 4321,
            exits: ExitCounts {
                total: 10,
                io: 4,
                mmio: 3,
                unknown_io: 1,
                unknown_mmio: 0,
                interrupted: 2,
            },
            devices: vec![
                DeviceStatus {
                    kind: DeviceKind::Blk {
                        path: "/var/lib/vmctl/disk.raw".into(),
                        read_only: true,
                    },
                    mmio_base: "0xd0000000".into(),
                    gsi: 5,
                    bad_requests: 2,
                    counters,
                },
                DeviceStatus {
                    kind: DeviceKind::Net {
                        tap: "vmtap0".into(),
                        mac: "52:54:00:12:34:56".into(),
                    },
                    mmio_base: "0xd0001000".into(),
                    gsi: 6,
                    bad_requests: 0,
                    counters: Default::default(),
                },
            ],
            console: Some(ConsoleStatus {
                attached: true,
                dropped_out: 3,
                dropped_in: 0,
            }),
            refused_requests: 1,
        }),
        Response::Status(Status {
            state: RunState::Paused,
            uptime_ms: 0,
            vcpus: 1,
            memory: 1 << 20,
            pid: 1,
            exits: ExitCounts::default(),
            devices: Vec::new(),
            console: None,
            refused_requests: 0,
        }),
        Response::State {
            state: RunState::Paused,
        },
        Response::State {
            state: RunState::Running,
        },
        Response::Shutdown {
            state: RunState::Stopped,
            graceful: true,
            ctrl_alt_del_error: None,
        },
        Response::Snapshot {
            state: RunState::Paused,
            state_bytes: 22_684,
            memory_bytes: 128 << 20,
            written_bytes: 4 << 20,
            took_ms: 12,
            disks: vec![],
        },
        Response::Snapshot {
            state: RunState::Paused,
            state_bytes: 22_684,
            memory_bytes: 128 << 20,
            written_bytes: 8192,
            took_ms: 2,
            disks: vec![vec![[0, 3], [17, 1]], vec![]],
        },
        Response::Precopy {
            state: RunState::Running,
            round: 2,
            dirty_pages: 310,
            written_bytes: 310 * 4096,
            took_ms: 3,
        },
        Response::Shutdown {
            state: RunState::Stopped,
            graceful: false,
            ctrl_alt_del_error: Some("the i8042 is gone".into()),
        },
        Response::Error(ErrorReply::Malformed {
            reason: "expected value at line 1 column 1".into(),
        }),
        Response::Error(ErrorReply::UnknownRequest {
            cmd: "reboot".into(),
            known: Request::NAMES.join(", "),
        }),
        Response::Error(ErrorReply::Version {
            got: Some(2),
            supported: VERSION,
        }),
        Response::Error(ErrorReply::Version {
            got: None,
            supported: VERSION,
        }),
        Response::Error(ErrorReply::Failed {
            reason: "the VM has stopped".into(),
            state: RunState::Stopped,
        }),
    ]
}

#[test]
fn every_request_round_trips_as_one_versioned_line() {
    for req in requests() {
        let line = req.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = String::from_utf8(line.clone()).expect("UTF-8");
        assert!(text.starts_with(r#"{"v":1,"cmd":""#), "{text}");
        assert_eq!(parse_request(line.trim_ascii()), Ok(req));
    }
}

#[test]
fn every_request_name_is_known_and_every_known_name_parses() {
    let names: Vec<String> = requests()
        .iter()
        .map(|r| {
            let text = String::from_utf8(r.to_line()).expect("UTF-8");
            let cmd = text.split(r#""cmd":""#).nth(1).expect("a cmd");
            cmd.split('"').next().expect("its name").to_owned()
        })
        .collect();
    for name in &names {
        assert!(Request::NAMES.contains(&name.as_str()), "{name}");
    }
    for name in Request::NAMES {
        assert!(names.iter().any(|n| n == name), "{name} is not a request");
    }
}

#[test]
fn every_response_round_trips_as_one_versioned_line() {
    for resp in responses() {
        let line = resp.to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = String::from_utf8(line.clone()).expect("UTF-8");
        assert!(text.starts_with(r#"{"v":1,"reply":""#), "{text}");
        assert_eq!(read_reply(&line), Some(Reply::Current(resp)));
    }
}

#[test]
fn the_wire_format_is_the_documented_one() {
    assert_eq!(
        Request::Shutdown {
            timeout_ms: Some(5000)
        }
        .to_line(),
        b"{\"v\":1,\"cmd\":\"shutdown\",\"timeout_ms\":5000}\n"
    );
    assert_eq!(
        Response::Error(ErrorReply::Version {
            got: Some(2),
            supported: 1
        })
        .to_line(),
        b"{\"v\":1,\"reply\":\"error\",\"error\":\"version\",\"got\":2,\"supported\":1}\n"
    );
    assert_eq!(
        legacy::shutdown_line(5000),
        b"{\"cmd\":\"shutdown\",\"timeout_ms\":5000}\n"
    );
}

#[test]
fn an_unknown_request_is_a_typed_error() {
    let e = parse_request(br#"{"v":1,"cmd":"migrate"}"#).unwrap_err();
    assert_eq!(
        e,
        ErrorReply::UnknownRequest {
            cmd: "migrate".into(),
            known: "status, pause, resume, shutdown, kill, snapshot, precopy, precopy_end".into(),
        }
    );
    assert!(e.to_string().contains("\"migrate\""), "{e}");
}

#[test]
fn malformed_lines_are_typed_errors() {
    let malformed: [&[u8]; 9] = [
        b"",
        b"not json",
        b"[1,2]",
        b"\"status\"",
        br#"{"v":1}"#,
        br#"{"v":1,"cmd":7}"#,
        br#"{"v":"1","cmd":"status"}"#,
        br#"{"v":1,"cmd":"shutdown","timeout_ms":"soon"}"#,
        br#"{"v":1,"cmd":"shutdown","timeout":5}"#,
    ];
    for line in malformed {
        let e = parse_request(line);
        assert!(
            matches!(e, Err(ErrorReply::Malformed { .. })),
            "{:?} → {e:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn another_version_is_refused_before_anything_else() {
    for (line, got) in [
        (&br#"{"cmd":"status"}"#[..], None),
        (br#"{"cmd":"shutdown","timeout_ms":5000}"#, None),
        (br#"{"v":0,"cmd":"status"}"#, Some(0)),
        (br#"{"v":2,"cmd":"status"}"#, Some(2)),
        (br#"{"v":2,"cmd":"teleport","to":"mars"}"#, Some(2)),
    ] {
        assert_eq!(
            parse_request(line),
            Err(ErrorReply::Version {
                got,
                supported: VERSION
            })
        );
    }
    let e = parse_request(br#"{"cmd":"status"}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "control protocol version none is not this VMM's version 1"
    );
}

#[test]
fn a_client_reads_a_version_error_of_any_version_and_nothing_else_of_another() {
    let future_error = br#"{"v":2,"reply":"error","error":"version","got":1,"supported":2}"#;
    assert_eq!(
        read_reply(future_error),
        Some(Reply::Current(Response::Error(ErrorReply::Version {
            got: Some(1),
            supported: 2
        })))
    );
    let future_state = br#"{"v":2,"reply":"state","state":"running"}"#;
    assert_eq!(read_reply(future_state), None);
    assert_eq!(read_reply(b"garbage"), None);
    assert_eq!(read_reply(b""), None);
}

#[test]
fn replies_of_an_unversioned_vmm_read_as_legacy() {
    // What the VMMs of the build before this protocol answered.
    let status = br#"{"ok":true,"state":"stopped","uptime_ms":5,"vcpus":1,"memory":1048576,"pid":9,"exits":{"total":0},"devices":[]}"#;
    let refused =
        br#"{"ok":false,"error":"invalid request: unknown field `v`, expected `timeout_ms`"}"#;
    let shutdown = br#"{"ok":true,"state":"stopped","graceful":true}"#;
    let read = |l: &[u8]| match read_reply(l) {
        Some(Reply::Legacy(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(read(status).state, Some(RunState::Stopped));
    assert_eq!(Reply::Legacy(read(status)).state(), Some(RunState::Stopped));
    let r = read(refused);
    assert!(!r.ok);
    assert_eq!(r.state, None);
    assert!(r.error.is_some_and(|e| e.contains("unknown field")));
    assert!(read(shutdown).ok);
}

proptest! {
    #[test]
    fn any_bytes_parse_to_a_request_or_a_typed_error(line in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Never a panic; and an error is answerable as a reply a client reads back.
        if let Err(e) = parse_request(&line) {
            let reply = Response::Error(e);
            prop_assert_eq!(read_reply(&reply.to_line()), Some(Reply::Current(reply)));
        }
    }

    #[test]
    fn json_shaped_lines_parse_to_a_request_or_a_typed_error(
        v in proptest::option::of(0u32..4),
        cmd in "[a-z_]{0,10}",
        extra in proptest::option::of(("[a-z_]{1,10}", any::<i64>())),
    ) {
        let mut line = String::from("{");
        if let Some(v) = v {
            line += &format!("\"v\":{v},");
        }
        line += &format!("\"cmd\":\"{cmd}\"");
        if let Some((k, n)) = &extra {
            line += &format!(",\"{k}\":{n}");
        }
        line += "}";
        match parse_request(line.as_bytes()) {
            Ok(req) => {
                prop_assert_eq!(v, Some(VERSION));
                prop_assert!(Request::NAMES.contains(&cmd.as_str()));
                prop_assert_eq!(parse_request(req.to_line().trim_ascii()), Ok(req));
            }
            Err(ErrorReply::Version { got, .. }) => prop_assert_eq!(got, v),
            Err(ErrorReply::UnknownRequest { cmd: c, .. }) => prop_assert_eq!(c, cmd),
            Err(ErrorReply::Malformed { .. }) => prop_assert!(extra.is_some()),
            Err(e @ ErrorReply::Failed { .. }) => prop_assert!(false, "{e:?}"),
        }
    }
}
