//! Property tests of the frame and message decoders (fuzzing that stays, on
//! stable Rust): arbitrary bytes never panic and fail cleanly, arbitrary valid
//! messages round-trip, truncations and trailing bytes are rejected, and the
//! length prefix limit holds. Case counts are bounded so a run takes seconds;
//! a failing case is shrunk and saved under `proptest-regressions/`.

use azbroker_proto::diagnose::{
    AddressScope, EndpointCheck, EnvironmentEntry, NetworkSettingsReport, ProcessEnvironment,
    ResolvedAddress, Step, StepKind, StepOutcome,
};
use azbroker_proto::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use azbroker_proto::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Cases per property: a few thousand over all of them, seconds in a debug build.
const CASES: u32 = 1_000;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

// ---- strategies for valid messages -------------------------------------------------

/// Any text, short: every Unicode scalar value may appear.
fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn secret() -> impl Strategy<Value = Secret> {
    text().prop_map(Secret::from)
}

fn credential_kind() -> impl Strategy<Value = CredentialKind> {
    proptest::sample::select(CredentialKind::ALL.to_vec())
}

fn credential_spec() -> impl Strategy<Value = CredentialSpec> {
    prop_oneof![
        (
            opt_text(),
            opt_text(),
            option::of(secret()),
            opt_text(),
            option::of(secret())
        )
            .prop_map(
                |(tenant_id, client_id, client_secret, certificate_path, certificate_password)| {
                    CredentialSpec::Environment {
                        tenant_id,
                        client_id,
                        client_secret,
                        certificate_path,
                        certificate_password,
                    }
                }
            ),
        (opt_text(), opt_text(), opt_text()).prop_map(|(tenant_id, client_id, token_file)| {
            CredentialSpec::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            }
        }),
        (opt_text(), opt_text(), option::of(secret())).prop_map(|(client_id, endpoint, header)| {
            CredentialSpec::ManagedIdentity {
                client_id,
                endpoint,
                header,
            }
        }),
        Just(CredentialSpec::VisualStudio),
        tool_spec().prop_map(CredentialSpec::AzureCli),
        tool_spec().prop_map(CredentialSpec::AzurePowerShell),
        tool_spec().prop_map(CredentialSpec::AzureDeveloperCli),
        (opt_text(), opt_text(), any::<u32>(), any::<bool>()).prop_map(
            |(client_id, tenant_id, timeout_secs, use_broker)| CredentialSpec::InteractiveBrowser {
                client_id,
                tenant_id,
                timeout_secs,
                use_broker,
            }
        ),
        (opt_text(), opt_text()).prop_map(|(client_id, tenant_id)| CredentialSpec::DeviceCode {
            client_id,
            tenant_id
        }),
    ]
}

fn tool_spec() -> impl Strategy<Value = ToolSpec> {
    (opt_text(), opt_text(), vec((text(), text()), 0..4)).prop_map(
        |(executable, profile_dir, env)| ToolSpec {
            executable,
            profile_dir,
            env,
        },
    )
}

fn chain() -> impl Strategy<Value = ChainSpec> {
    (text(), vec(credential_spec(), 0..5), text(), any::<bool>()).prop_map(
        |(authority_host, credentials, selected_by, interactive)| ChainSpec {
            authority_host,
            credentials,
            selected_by,
            interactive,
        },
    )
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (text(), any::<u16>()).prop_map(|(host, port)| Endpoint { host, port })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u32>(), text(), any::<u32>(), chain()).prop_map(
            |(protocol_version, client_name, pid, chain)| Request::Hello(Hello {
                protocol_version,
                client_name,
                pid,
                chain,
            })
        ),
        (texts(), opt_text(), opt_text(), any::<u32>()).prop_map(
            |(scopes, tenant, claims, min_validity_secs)| Request::GetToken(GetToken {
                scopes,
                tenant,
                claims,
                min_validity_secs,
            })
        ),
        Just(Request::Status),
        (any::<(u64, u64)>(), option::of(any::<u32>())).prop_map(
            |((credentials_from, cache_from), cache_limit)| Request::StatusPage(StatusQuery {
                credentials_from,
                cache_from,
                cache_limit,
            })
        ),
        texts().prop_map(|scopes| Request::Invalidate(Invalidate {
            scopes,
            credentials: vec![CredentialKind::AzureCli],
        })),
        Just(Request::Shutdown),
        (
            prop_oneof![Just(LoginMethod::Browser), Just(LoginMethod::DeviceCode)],
            opt_text(),
            opt_text(),
            texts(),
            any::<u32>()
        )
            .prop_map(|(method, tenant, client_id, scopes, timeout_secs)| {
                Request::Login(Login {
                    method,
                    tenant,
                    client_id,
                    scopes,
                    timeout_secs,
                })
            }),
        (any::<bool>(), opt_text(), opt_text()).prop_map(|(all, tenant, client_id)| {
            Request::Logout(Logout {
                all,
                tenant,
                client_id,
            })
        }),
        Just(Request::ManagedIdentity),
        (vec(endpoint(), 0..4), any::<u32>()).prop_map(|(endpoints, timeout_ms)| {
            Request::Diagnose(DiagnoseRequest {
                endpoints,
                timeout_ms,
            })
        }),
        (
            any::<u64>(),
            option::of(any::<i64>()),
            opt_text(),
            any::<u32>()
        )
            .prop_map(
                |(after_seq, since_ms, name, limit)| Request::Audit(AuditQuery {
                    after_seq,
                    since_ms,
                    name,
                    limit,
                })
            ),
    ]
}

fn audit_outcome() -> impl Strategy<Value = AuditOutcome> {
    proptest::sample::select(vec![
        AuditOutcome::Hit,
        AuditOutcome::Acquired,
        AuditOutcome::Refreshed,
        AuditOutcome::Denied,
        AuditOutcome::Failed,
    ])
}

fn audit_record() -> impl Strategy<Value = AuditRecord> {
    (
        (
            any::<i64>(),
            opt_text(),
            text(),
            option::of(any::<u32>()),
            opt_text(),
        ),
        (
            texts(),
            opt_text(),
            opt_text(),
            audit_outcome(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |((time_ms, name, client, pid, exe), (scopes, tenant, credential, outcome, count))| {
                AuditRecord {
                    time_ms,
                    name,
                    client,
                    pid,
                    exe,
                    scopes,
                    tenant,
                    credential,
                    outcome,
                    count,
                }
            },
        )
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    proptest::sample::select(vec![
        ErrorKind::CredentialUnavailable,
        ErrorKind::AuthenticationFailed,
        ErrorKind::Timeout,
        ErrorKind::InvalidRequest,
        ErrorKind::Refused,
        ErrorKind::Internal,
    ])
}

fn wire_error() -> impl Strategy<Value = WireError> {
    let reason = (text(), any::<bool>(), text()).prop_map(|(credential, unavailable, reason)| {
        CredentialReason {
            credential,
            unavailable,
            reason,
        }
    });
    (error_kind(), text(), vec(reason, 0..3)).prop_map(|(kind, message, reasons)| WireError {
        kind,
        message,
        reasons,
    })
}

fn status_report() -> impl Strategy<Value = StatusReport> {
    let credential = (
        text(),
        text(),
        proptest::sample::select(vec![
            CredentialState::Idle,
            CredentialState::Healthy,
            CredentialState::Unavailable,
            CredentialState::Failing,
        ]),
        any::<u64>(),
        option::of(any::<i64>()),
        opt_text(),
    )
        .prop_map(
            |(credential, identity, state, acquisitions, last_success, last_error)| {
                CredentialStatus {
                    credential,
                    identity,
                    state,
                    acquisitions,
                    last_success,
                    profile: last_error.clone(),
                    last_error,
                }
            },
        );
    let entry = (
        text(),
        opt_text(),
        texts(),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        text(),
    )
        .prop_map(
            |(credential, tenant, scopes, expires_on, refresh_on, hits, identity)| {
                CacheEntryStatus {
                    credential,
                    tenant,
                    scopes,
                    expires_on,
                    refresh_on,
                    hits,
                    identity,
                }
            },
        );
    let counters = any::<[u64; 10]>().prop_map(|c| Counters {
        requests: c[0],
        cache_hits: c[1],
        cache_misses: c[2],
        upstream_acquisitions: c[3],
        refreshes: c[4],
        refresh_failures: c[5],
        errors: c[6],
        connections_accepted: c[7],
        connections_refused: c[8],
        connections_open: c[9],
    });
    let name_count = (text(), any::<[u64; 3]>()).prop_map(|(name, c)| NameCount {
        name,
        requests: c[0],
        hits: c[1],
        denied: c[2],
    });
    (
        (
            any::<u32>(),
            text(),
            any::<u32>(),
            any::<u64>(),
            text(),
            text(),
        ),
        vec(credential, 0..3),
        vec(entry, 0..3),
        counters,
        vec(name_count, 0..3),
    )
        .prop_map(
            |(
                (daemon_pid, daemon_version, protocol_version, uptime_secs, socket_path, store),
                credentials,
                cache,
                counters,
                names,
            )| StatusReport {
                daemon_pid,
                daemon_version,
                protocol_version,
                uptime_secs,
                socket_path,
                store,
                credentials,
                cache,
                counters,
                names,
            },
        )
}

fn diagnosis() -> impl Strategy<Value = Diagnosis> {
    let problem = proptest::sample::select(vec![
        NetworkProblem::NameResolution,
        NetworkProblem::Refused,
        NetworkProblem::Timeout,
        NetworkProblem::Unreachable,
        NetworkProblem::Certificate,
        NetworkProblem::Proxy,
        NetworkProblem::Other,
    ]);
    let outcome = prop_oneof![
        Just(StepOutcome::Passed),
        problem.prop_map(StepOutcome::Failed)
    ];
    let kind = proptest::sample::select(vec![
        StepKind::Resolve,
        StepKind::Connect,
        StepKind::ProxyTunnel,
        StepKind::Tls,
    ]);
    let step = (kind, text(), outcome, any::<u32>(), text()).prop_map(
        |(kind, target, outcome, millis, detail)| Step {
            kind,
            target,
            outcome,
            millis,
            detail,
        },
    );
    let scope = proptest::sample::select(vec![
        AddressScope::Public,
        AddressScope::Private,
        AddressScope::Loopback,
        AddressScope::LinkLocal,
        AddressScope::Other,
    ]);
    let address = (text(), scope).prop_map(|(address, scope)| ResolvedAddress { address, scope });
    let check = (endpoint(), opt_text(), vec(address, 0..3), vec(step, 0..4)).prop_map(
        |(endpoint, proxy, addresses, steps)| EndpointCheck {
            endpoint,
            proxy,
            addresses,
            steps,
        },
    );
    let settings = (opt_text(), opt_text(), opt_text(), texts()).prop_map(
        |(https_proxy, http_proxy, no_proxy, extra_roots)| NetworkSettingsReport {
            https_proxy,
            http_proxy,
            no_proxy,
            extra_roots,
        },
    );
    let entries = || {
        vec(
            (text(), opt_text()).prop_map(|(name, value)| EnvironmentEntry { name, value }),
            0..3,
        )
    };
    let environment = (entries(), entries(), entries()).prop_map(|(tools, profiles, variables)| {
        ProcessEnvironment {
            tools,
            profiles,
            variables,
        }
    });
    (
        settings,
        vec(check, 0..3),
        vec(credential_kind(), 0..4),
        environment,
    )
        .prop_map(
            |(settings, endpoints, implemented, environment)| Diagnosis {
                settings,
                endpoints,
                implemented,
                environment,
            },
        )
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u32>(), text(), any::<u32>()).prop_map(
            |(protocol_version, daemon_version, daemon_pid)| Reply::Welcome(Welcome {
                protocol_version,
                daemon_version,
                daemon_pid,
            })
        ),
        (
            secret(),
            text(),
            any::<i64>(),
            any::<i64>(),
            opt_text(),
            text(),
            any::<(bool, bool)>()
        )
            .prop_map(
                |(
                    access_token,
                    token_type,
                    expires_on,
                    refresh_on,
                    tenant,
                    credential,
                    (cached, stale),
                )| {
                    Reply::Token(TokenReply {
                        access_token,
                        token_type,
                        expires_on,
                        refresh_on,
                        tenant,
                        credential,
                        cached,
                        stale,
                    })
                }
            ),
        status_report().prop_map(|s| Reply::Status(Box::new(s))),
        (status_report(), any::<(u64, u64)>()).prop_map(
            |(report, (credentials_total, cache_total))| Reply::StatusPage(Box::new(StatusPage {
                report,
                credentials_total,
                cache_total,
            }))
        ),
        any::<u64>().prop_map(|removed| Reply::Invalidated { removed }),
        Just(Reply::ShuttingDown),
        wire_error().prop_map(Reply::Error),
        text().prop_map(|message| Reply::LoginProgress { message }),
        (opt_text(), opt_text(), text()).prop_map(|(username, tenant, store)| {
            Reply::LoggedIn(LoggedIn {
                username,
                tenant,
                store,
            })
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(accounts, tokens_dropped)| Reply::LoggedOut {
            accounts,
            tokens_dropped,
        }),
        option::of((text(), text()).prop_map(|(endpoint, header_file)| {
            ManagedIdentityEndpoint {
                endpoint,
                header_file,
            }
        }))
        .prop_map(Reply::ManagedIdentity),
        diagnosis().prop_map(|d| Reply::Diagnosis(Box::new(d))),
        (vec((any::<u64>(), audit_record()), 0..3), any::<u64>())
            .prop_map(|(records, next_seq)| Reply::Audit(AuditPage { records, next_seq })),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    (any::<u64>(), request()).prop_map(|(id, request)| ClientFrame { id, request })
}

fn daemon_frame() -> impl Strategy<Value = DaemonFrame> {
    (any::<u64>(), reply()).prop_map(|(id, reply)| DaemonFrame { id, reply })
}

// ---- helpers ----------------------------------------------------------------------------

/// A decode error must be one of the kinds a reader expects, and its text one
/// short line (it is logged and sent back to the peer).
fn assert_clean(error: &FrameError) {
    let text = error.to_string();
    assert!(!text.is_empty() && text.len() < 300, "{text:?}");
    assert!(!text.contains('\n'), "{text:?}");
}

/// Decoding arbitrary bytes as `T`: no panic; an error is clean; a success
/// re-encodes to a message that decodes to the same value.
fn decode_anything<T>(body: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    match frame::decode::<T>(body) {
        Ok(message) => {
            if let Ok(bytes) = frame::encode(&message) {
                let again: T = frame::decode(&bytes[HEADER_LEN..]).expect("re-encoded message");
                assert_eq!(again, message);
            }
        }
        Err(e) => assert_clean(&e),
    }
}

/// Feeds `stream` to [`buffered::decode_front`] in pieces of the given sizes
/// (cycled), as a reader's successive reads would bring it, consuming each
/// frame it finds; panics when the decoder asks for bytes past the stream's end.
fn read_in_pieces<T: serde::de::DeserializeOwned>(stream: &[u8], pieces: &[usize]) -> Vec<T> {
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut sizes = pieces.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap().min(rest.len());
        buffer.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match buffered::decode_front::<T>(&buffer).unwrap() {
                buffered::Buffered::Frame { message, consumed } => {
                    messages.push(message);
                    buffer.drain(..consumed);
                }
                buffered::Buffered::NeedMore { missing } => {
                    let at_end = buffer.is_empty() && rest.is_empty();
                    assert!(missing > 0 && (missing <= rest.len() || at_end));
                    break;
                }
            }
        }
    }
    assert!(buffer.is_empty(), "bytes left over");
    messages
}

/// Frames split at every byte boundary decode the same.
#[test]
fn frames_split_at_every_boundary_decode_the_same() {
    let sent: Vec<ClientFrame> = (1..=3)
        .map(|id| ClientFrame {
            id,
            request: Request::Status,
        })
        .collect();
    let stream: Vec<u8> = sent
        .iter()
        .flat_map(|m| frame::encode(m).unwrap())
        .collect();
    for size in 1..=stream.len() {
        assert_eq!(
            read_in_pieces::<ClientFrame>(&stream, &[size]),
            sent,
            "pieces of {size}"
        );
    }
    assert_eq!(
        read_in_pieces::<ClientFrame>(&stream, &[1, 5, 2, 7, 3]),
        sent
    );
}

// ---- properties -------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bodies_never_panic(body in vec(any::<u8>(), 0..512)) {
        decode_anything::<ClientFrame>(&body);
        decode_anything::<DaemonFrame>(&body);
        let _ = peek_hello_version(&body);
    }

    /// Bodies that start like a real message (a valid id and variant) reach
    /// deeper into the decoders than uniform noise does.
    #[test]
    fn bodies_with_a_valid_prefix_never_panic(
        id in any::<u64>(),
        variant in 0u8..12,
        tail in vec(any::<u8>(), 0..256),
    ) {
        let mut body = postcard::to_stdvec(&id).unwrap();
        body.push(variant);
        body.extend_from_slice(&tail);
        decode_anything::<ClientFrame>(&body);
        decode_anything::<DaemonFrame>(&body);
    }

    #[test]
    fn arbitrary_streams_split_cleanly(bytes in vec(any::<u8>(), 0..1024)) {
        match frame::split(&bytes) {
            Ok(bodies) => {
                let total: usize = bodies.iter().map(|b| HEADER_LEN + b.len()).sum();
                prop_assert_eq!(total, bytes.len());
                prop_assert!(bodies.iter().all(|b| !b.is_empty() && b.len() <= MAX_FRAME_LEN));
            }
            Err(e) => assert_clean(&e),
        }
        match frame::whole_frame_len(&bytes) {
            None => prop_assert!(
                bytes.len() < HEADER_LEN
                    || bytes.len() < HEADER_LEN + u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize
            ),
            Some(Ok(len)) => prop_assert!(len > HEADER_LEN && len <= bytes.len()),
            Some(Err(e)) => assert_clean(&e),
        }
    }

    #[test]
    fn client_frames_round_trip(message in client_frame()) {
        let bytes = frame::encode(&message).unwrap();
        prop_assert_eq!(frame::whole_frame_len(&bytes), Some(Ok(bytes.len())));
        let bodies = frame::split(&bytes).unwrap();
        prop_assert_eq!(bodies.len(), 1);
        prop_assert_eq!(frame::decode::<ClientFrame>(bodies[0]).unwrap(), message.clone());
        if let Request::Hello(hello) = &message.request {
            prop_assert_eq!(peek_hello_version(bodies[0]), Some((message.id, hello.protocol_version)));
        }
    }

    #[test]
    fn daemon_frames_round_trip(message in daemon_frame()) {
        let bytes = frame::encode(&message).unwrap();
        prop_assert_eq!(frame::whole_frame_len(&bytes), Some(Ok(bytes.len())));
        let back: DaemonFrame = frame::decode(&bytes[HEADER_LEN..]).unwrap();
        prop_assert_eq!(back, message);
    }

    #[test]
    fn truncated_frames_are_rejected(message in client_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = frame::encode(&message).unwrap();
        let body = &bytes[HEADER_LEN..];
        let cut = cut.index(body.len());
        prop_assert_eq!(frame::decode::<ClientFrame>(&body[..cut]), Err(FrameError::Truncated));
        // The reader waits for the rest instead of decoding part of a frame.
        prop_assert_eq!(frame::whole_frame_len(&bytes[..HEADER_LEN + cut]), None);
        prop_assert_eq!(frame::split(&bytes[..HEADER_LEN + cut]), Err(FrameError::Truncated));
    }

    #[test]
    fn truncated_replies_are_rejected(message in daemon_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = frame::encode(&message).unwrap();
        let body = &bytes[HEADER_LEN..];
        let cut = cut.index(body.len());
        prop_assert_eq!(frame::decode::<DaemonFrame>(&body[..cut]), Err(FrameError::Truncated));
    }

    #[test]
    fn trailing_bytes_are_rejected(message in client_frame(), extra in vec(any::<u8>(), 1..64)) {
        let bytes = frame::encode(&message).unwrap();
        let mut body = bytes[HEADER_LEN..].to_vec();
        body.extend_from_slice(&extra);
        prop_assert_eq!(
            frame::decode::<ClientFrame>(&body),
            Err(FrameError::TrailingBytes(extra.len()))
        );
    }

    #[test]
    fn the_length_prefix_limit_holds(
        len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX,
        tail in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let too_large = FrameError::TooLarge(len as usize);
        prop_assert_eq!(frame::body_len(len.to_be_bytes()), Err(too_large.clone()));
        // Refused from the prefix alone, before any body byte is waited for.
        prop_assert_eq!(frame::whole_frame_len(&bytes), Some(Err(too_large.clone())));
        prop_assert_eq!(frame::split(&bytes), Err(too_large));
    }

    #[test]
    fn messages_over_the_limit_cannot_be_encoded(extra in 0usize..4096) {
        let hello = ClientFrame {
            id: 1,
            request: Request::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "x".repeat(MAX_FRAME_LEN + extra),
                pid: 1,
                chain: ChainSpec {
                    authority_host: String::new(),
                    credentials: Vec::new(),
                    selected_by: String::new(),
                    interactive: true,
                },
            }),
        };
        prop_assert!(matches!(frame::encode(&hello), Err(FrameError::TooLarge(_))));
        let mut buf = vec![1, 2, 3];
        prop_assert!(frame::encode_into(&mut buf, &hello).is_err());
        prop_assert!(buf.is_empty(), "a failed encode leaves no partial frame");
    }

    /// The buffered decoder on arbitrary bytes: no panic, a clean error, and
    /// "need more" only when the frame really is not all there.
    #[test]
    fn arbitrary_read_buffers_decode_cleanly(bytes in vec(any::<u8>(), 0..1024)) {
        match buffered::decode_front::<ClientFrame>(&bytes) {
            Ok(buffered::Buffered::NeedMore { missing }) => {
                prop_assert!(missing > 0);
                prop_assert_eq!(frame::whole_frame_len(&bytes), None);
            }
            Ok(buffered::Buffered::Frame { consumed, .. }) => {
                prop_assert_eq!(frame::whole_frame_len(&bytes), Some(Ok(consumed)));
            }
            Err(e) => assert_clean(&e),
        }
    }

    /// Replies read in pieces of any sizes decode to what was sent, each
    /// consumed whole, and the decoder asks for exactly the bytes it lacks.
    #[test]
    fn replies_split_across_reads_decode_the_same(
        sent in vec(daemon_frame(), 1..4),
        pieces in vec(1usize..64, 1..16),
    ) {
        let stream: Vec<u8> = sent.iter().flat_map(|m| frame::encode(m).unwrap()).collect();
        prop_assert_eq!(read_in_pieces::<DaemonFrame>(&stream, &pieces), sent);
    }
}
