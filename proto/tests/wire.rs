//! Round trips and malformed input for the wire contract.

use azbroker_proto::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use azbroker_proto::*;

fn chain() -> ChainSpec {
    ChainSpec::from_lookup(|name| match name {
        "AZURE_TENANT_ID" => Some("tenant-1".into()),
        "AZURE_CLIENT_ID" => Some("client-1".into()),
        "AZURE_CLIENT_SECRET" => Some("s3cret".into()),
        _ => None,
    })
    .unwrap()
}

fn sample_requests() -> Vec<Request> {
    vec![
        Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "test".into(),
            pid: 42,
            chain: chain(),
        }),
        Request::GetToken(GetToken {
            scopes: vec!["https://management.azure.com/.default".into()],
            tenant: Some("t".into()),
            claims: Some("{\"access_token\":{}}".into()),
            min_validity_secs: 600,
        }),
        Request::Status,
        Request::Invalidate(Invalidate {
            scopes: vec![],
            credentials: vec![],
        }),
        Request::RegisterExec(RegisterExec {
            name: "storage-agent".into(),
            allow_scopes: vec!["https://storage.azure.com/*".into()],
            deny_scopes: vec![],
        }),
        Request::Shutdown,
        Request::Login(Login {
            method: LoginMethod::DeviceCode,
            tenant: Some("contoso.onmicrosoft.com".into()),
            client_id: None,
            scopes: vec![],
            timeout_secs: 0,
        }),
        Request::Logout(Logout {
            all: true,
            tenant: None,
            client_id: Some("c".into()),
        }),
        Request::ManagedIdentity,
        Request::Audit(AuditQuery {
            after_seq: 7,
            since_ms: Some(1_700_000_000_000),
            name: Some("agent".into()),
            limit: 100,
        }),
    ]
}

fn sample_replies() -> Vec<Reply> {
    vec![
        Reply::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: "0.1.0".into(),
            daemon_pid: 7,
        }),
        Reply::Token(TokenReply {
            access_token: Secret::new("eyJ0eXAi.x.y"),
            token_type: "Bearer".into(),
            expires_on: 1_700_000_000,
            refresh_on: 1_699_999_000,
            tenant: None,
            credential: "AzureCliCredential".into(),
            cached: true,
            stale: false,
        }),
        Reply::Status(Box::new(StatusReport {
            daemon_pid: 1,
            daemon_version: "0.1.0".into(),
            protocol_version: 1,
            uptime_secs: 3,
            socket_path: "/run/user/0/azbroker/azbroker.sock".into(),
            store: "none".into(),
            credentials: vec![CredentialStatus {
                credential: "AzureCliCredential".into(),
                identity: "abcd".into(),
                state: CredentialState::Healthy,
                acquisitions: 1,
                last_success: Some(5),
                last_error: None,
                profile: Some("az in /home/u/.azure".into()),
            }],
            cache: vec![CacheEntryStatus {
                credential: "AzureCliCredential".into(),
                tenant: None,
                scopes: vec!["s".into()],
                expires_on: 10,
                refresh_on: 5,
                hits: 2,
                identity: "0a1b2c3d4e5f".into(),
            }],
            counters: Counters::default(),
            names: vec![NameCount {
                name: "agent".into(),
                requests: 3,
                hits: 2,
                denied: 1,
            }],
        })),
        Reply::Invalidated { removed: 3 },
        Reply::ExecRegistered,
        Reply::ManagedIdentity(None),
        Reply::ManagedIdentity(Some(ManagedIdentityEndpoint {
            endpoint: "http://127.0.0.1:41741/msi/token".into(),
            header_file: "/run/user/0/azbroker/azbroker.sock.identity-header".into(),
        })),
        Reply::ShuttingDown,
        Reply::LoginProgress {
            message: "To sign in, use a web browser to open the page".into(),
        },
        Reply::LoggedIn(LoggedIn {
            username: Some("user@contoso.example".into()),
            tenant: None,
            store: "file /x".into(),
        }),
        Reply::LoggedOut {
            accounts: 1,
            tokens_dropped: 2,
        },
        Reply::Audit(AuditPage {
            records: vec![(
                8,
                AuditRecord {
                    time_ms: 1_700_000_000_123,
                    name: Some("agent".into()),
                    client: "azbroker-az-shim".into(),
                    pid: Some(4242),
                    exe: Some("/usr/bin/python3".into()),
                    scopes: vec!["https://storage.azure.com/.default".into()],
                    tenant: None,
                    credential: Some("AzureCliCredential".into()),
                    outcome: AuditOutcome::Denied,
                    count: 1,
                },
            )],
            next_seq: 8,
        }),
        // Last: display_of_error_lists_each_reason takes it.
        Reply::Error(WireError {
            kind: ErrorKind::CredentialUnavailable,
            message: "no credential".into(),
            reasons: vec![CredentialReason {
                credential: "AzureCliCredential".into(),
                unavailable: true,
                reason: "az not found".into(),
            }],
        }),
    ]
}

#[test]
fn appended_variants_keep_the_indices_of_older_ones() {
    // Older clients and daemons must still decode everything they knew.
    let shutdown = frame::encode(&ClientFrame {
        id: 1,
        request: Request::Shutdown,
    })
    .unwrap();
    assert_eq!(&shutdown[HEADER_LEN..], [1, 4]);
    let logout = frame::encode(&ClientFrame {
        id: 1,
        request: Request::Logout(Logout {
            all: false,
            tenant: None,
            client_id: None,
        }),
    })
    .unwrap();
    assert_eq!(logout[HEADER_LEN + 1], 6);
    let error = frame::encode(&DaemonFrame {
        id: 1,
        reply: Reply::Error(WireError::new(ErrorKind::Internal, "x")),
    })
    .unwrap();
    assert_eq!(error[HEADER_LEN + 1], 5);
    // Audit came after RegisterExec and ExecRegistered.
    let audit = frame::encode(&ClientFrame {
        id: 1,
        request: Request::Audit(AuditQuery {
            after_seq: 0,
            since_ms: None,
            name: None,
            limit: 0,
        }),
    })
    .unwrap();
    assert_eq!(audit[HEADER_LEN + 1], 11);
    let page = frame::encode(&DaemonFrame {
        id: 1,
        reply: Reply::Audit(AuditPage {
            records: vec![],
            next_seq: 0,
        }),
    })
    .unwrap();
    assert_eq!(page[HEADER_LEN + 1], 13);
}

#[test]
fn every_request_round_trips() {
    for (id, request) in sample_requests().into_iter().enumerate() {
        let frame = ClientFrame {
            id: id as u64,
            request,
        };
        let bytes = frame::encode(&frame).unwrap();
        let bodies = frame::split(&bytes).unwrap();
        assert_eq!(bodies.len(), 1);
        let back: ClientFrame = frame::decode(bodies[0]).unwrap();
        assert_eq!(back, frame);
    }
}

#[test]
fn every_reply_round_trips() {
    for (id, reply) in sample_replies().into_iter().enumerate() {
        let frame = DaemonFrame {
            id: u64::MAX - id as u64,
            reply,
        };
        let bytes = frame::encode(&frame).unwrap();
        let back: DaemonFrame = frame::decode(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(back, frame);
    }
}

#[test]
fn length_prefix_matches_body() {
    let bytes = frame::encode(&ClientFrame {
        id: 1,
        request: Request::Status,
    })
    .unwrap();
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - HEADER_LEN);
}

#[test]
fn oversize_length_is_rejected_before_reading_the_body() {
    let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
    assert_eq!(
        frame::body_len(header),
        Err(FrameError::TooLarge(MAX_FRAME_LEN + 1))
    );
    assert_eq!(
        frame::body_len(u32::MAX.to_be_bytes()),
        Err(FrameError::TooLarge(u32::MAX as usize))
    );
    assert_eq!(
        frame::body_len((MAX_FRAME_LEN as u32).to_be_bytes()),
        Ok(MAX_FRAME_LEN)
    );
}

#[test]
fn empty_frame_is_rejected() {
    assert_eq!(frame::body_len([0, 0, 0, 0]), Err(FrameError::Empty));
}

#[test]
fn oversize_message_cannot_be_encoded() {
    let request = Request::GetToken(GetToken {
        scopes: vec!["x".repeat(MAX_FRAME_LEN)],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    });
    let err = frame::encode(&ClientFrame { id: 1, request }).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge(_)), "{err:?}");
}

#[test]
fn truncated_body_is_rejected() {
    let bytes = frame::encode(&ClientFrame {
        id: 9,
        request: sample_requests().remove(1),
    })
    .unwrap();
    let body = &bytes[HEADER_LEN..];
    for cut in 0..body.len() {
        let result = frame::decode::<ClientFrame>(&body[..cut]);
        assert!(result.is_err(), "a body cut at {cut} decoded");
    }
    assert_eq!(
        frame::decode::<ClientFrame>(&body[..body.len() - 1]),
        Err(FrameError::Truncated)
    );
    assert_eq!(
        frame::split(&bytes[..bytes.len() - 1]),
        Err(FrameError::Truncated)
    );
    assert_eq!(frame::split(&bytes[..2]), Err(FrameError::Truncated));
}

#[test]
fn trailing_bytes_are_rejected() {
    let bytes = frame::encode(&ClientFrame {
        id: 1,
        request: Request::Status,
    })
    .unwrap();
    let mut body = bytes[HEADER_LEN..].to_vec();
    body.push(0);
    assert_eq!(
        frame::decode::<ClientFrame>(&body),
        Err(FrameError::TrailingBytes(1))
    );
}

#[test]
fn unknown_variant_is_rejected() {
    // id 1, Request variant 200: no such request.
    let body = [1u8, 200, 1];
    let err = frame::decode::<ClientFrame>(&body).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    // A known variant with garbage where a string should be.
    let body = [1u8, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(frame::decode::<ClientFrame>(&body).is_err());
}

#[test]
fn invalid_utf8_is_rejected() {
    // GetToken with one scope of two bytes that are not UTF-8.
    let body = [1u8, 1, 1, 2, 0xc3, 0x28, 0, 0, 0];
    assert!(frame::decode::<ClientFrame>(&body).is_err());
}

#[test]
fn hello_version_can_be_read_even_when_the_rest_does_not_parse() {
    let bytes = frame::encode(&ClientFrame {
        id: 5,
        request: sample_requests().remove(0),
    })
    .unwrap();
    let mut body = bytes[HEADER_LEN..].to_vec();
    // A future version (protocol_version is the third varint) with an unparseable tail.
    body[2] = 99;
    body.truncate(4);
    body.extend_from_slice(&[0xff; 8]);
    assert!(frame::decode::<ClientFrame>(&body).is_err());
    assert_eq!(peek_hello_version(&body), Some((5, 99)));
    // Not a Hello.
    let status = frame::encode(&ClientFrame {
        id: 5,
        request: Request::Status,
    })
    .unwrap();
    assert_eq!(peek_hello_version(&status[HEADER_LEN..]), None);
    assert_eq!(peek_hello_version(&[]), None);
}

#[test]
fn secrets_in_requests_do_not_show_in_debug() {
    let shown = format!("{:?}", sample_requests());
    assert!(!shown.contains("s3cret"), "{shown}");
    let shown = format!("{:?}", sample_replies());
    assert!(!shown.contains("eyJ0eXAi"), "{shown}");
}

#[test]
fn display_of_error_lists_each_reason() {
    let Reply::Error(err) = sample_replies().pop().unwrap() else {
        unreachable!()
    };
    assert_eq!(
        err.to_string(),
        "no credential; AzureCliCredential: az not found"
    );
}

#[test]
fn borrowed_token_frames_encode_like_owned_ones() {
    for (tenant, cached, stale) in [(None, true, true), (Some("t-1"), false, false)] {
        let owned = DaemonFrame {
            id: 300,
            reply: Reply::Token(TokenReply {
                access_token: Secret::new("eyJ0eXAi.payload.signature"),
                token_type: "Bearer".into(),
                expires_on: 1_700_000_000,
                refresh_on: 1_699_999_000,
                tenant: tenant.map(String::from),
                credential: "EnvironmentCredential".into(),
                cached,
                stale,
            }),
        };
        let borrowed = TokenFrameRef {
            id: 300,
            token: TokenReplyRef {
                access_token: "eyJ0eXAi.payload.signature",
                token_type: "Bearer",
                expires_on: 1_700_000_000,
                refresh_on: 1_699_999_000,
                tenant,
                credential: "EnvironmentCredential",
                cached,
                stale,
            },
        };
        assert_eq!(
            frame::encode(&borrowed).unwrap(),
            frame::encode(&owned).unwrap()
        );
    }
}

#[test]
fn borrowed_client_frames_encode_like_owned_ones() {
    for request in sample_requests() {
        let borrowed = frame::encode(&ClientFrameRef {
            id: 9,
            request: &request,
        })
        .unwrap();
        let owned = frame::encode(&ClientFrame { id: 9, request }).unwrap();
        assert_eq!(borrowed, owned);
    }
}

#[test]
fn encoding_into_a_buffer_replaces_its_contents() {
    let mut buf = vec![0xAA; 100];
    frame::encode_into(
        &mut buf,
        &ClientFrame {
            id: 1,
            request: Request::Status,
        },
    )
    .unwrap();
    assert_eq!(
        buf,
        frame::encode(&ClientFrame {
            id: 1,
            request: Request::Status
        })
        .unwrap()
    );
    let huge = "x".repeat(MAX_FRAME_LEN + 1);
    let too_large = ClientFrame {
        id: 2,
        request: Request::Invalidate(Invalidate {
            scopes: vec![huge],
            credentials: vec![],
        }),
    };
    assert!(matches!(
        frame::encode_into(&mut buf, &too_large),
        Err(FrameError::TooLarge(_))
    ));
}

#[test]
fn a_frame_is_whole_only_when_all_of_it_is_there() {
    let whole = frame::encode(&ClientFrame {
        id: 7,
        request: Request::Status,
    })
    .unwrap();
    assert!(frame::whole_frame_len(&whole[..2]).is_none());
    assert!(frame::whole_frame_len(&whole[..whole.len() - 1]).is_none());
    assert_eq!(
        frame::whole_frame_len(&whole).unwrap().unwrap(),
        whole.len()
    );
    // A second frame behind the first does not change the first's length.
    let two = [whole.clone(), whole.clone()].concat();
    assert_eq!(frame::whole_frame_len(&two).unwrap().unwrap(), whole.len());
    // A prefix announcing more than a frame may hold is an error at once.
    let too_large = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    assert!(frame::whole_frame_len(&too_large).unwrap().is_err());
}

#[test]
fn a_borrowed_token_reply_never_shows_the_token() {
    let frame = TokenFrameRef {
        id: 1,
        token: TokenReplyRef {
            access_token: "eyJ0eXAi.secret-payload.signature",
            token_type: "Bearer",
            expires_on: 1_700_000_000,
            refresh_on: 1_699_999_000,
            tenant: None,
            credential: "AzureCliCredential",
            cached: true,
            stale: false,
        },
    };
    let shown = format!("{frame:?}");
    assert!(!shown.contains("secret-payload"), "{shown}");
    assert!(shown.contains("AzureCliCredential"), "{shown}");
}
