//! The Blob service data plane with an Entra ID bearer token: list containers
//! of an account, list blobs of a container, following `NextMarker` pages.
//! Field names follow the Azure MCP Server's storage tools.

use reqwest::Url;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::endpoints::{parse_https_base, STORAGE_SCOPE};
use crate::errors::ToolError;
use crate::http::Response;
use crate::server::Context;

/// A Blob service version that accepts bearer tokens and that Azure and
/// Azurite both serve.
const STORAGE_API_VERSION: &str = "2024-11-04";
/// A listing returns at most this many items; more asks for a narrower prefix.
const MAX_ITEMS: usize = 5000;

/// Containers of a storage account.
pub async fn container_list(
    ctx: &Context,
    account: &str,
    prefix: Option<&str>,
    tenant: Option<&str>,
) -> Result<Value, ToolError> {
    let endpoint = account_endpoint(account, ctx.endpoints()?.storage_suffix)?;
    let (items, truncated) = list(
        ctx,
        endpoint,
        &[("comp", "list")],
        prefix,
        tenant,
        "Container",
    )
    .await?;
    let containers: Vec<Value> = items.iter().map(container_json).collect();
    Ok(json!({ "containers": containers, "truncated": truncated }))
}

/// Blobs of a container.
pub async fn blob_list(
    ctx: &Context,
    account: &str,
    container: &str,
    prefix: Option<&str>,
    tenant: Option<&str>,
) -> Result<Value, ToolError> {
    check_container_name(container)?;
    let endpoint = account_endpoint(account, ctx.endpoints()?.storage_suffix)?;
    let container_url = endpoint
        .join(container)
        .map_err(|e| ToolError::invalid_argument(format!("container {container:?}: {e}")))?;
    let query = [("restype", "container"), ("comp", "list")];
    let (items, truncated) = list(ctx, container_url, &query, prefix, tenant, "Blob").await?;
    let blobs: Vec<Value> = items.iter().map(blob_json).collect();
    Ok(json!({ "blobs": blobs, "truncated": truncated }))
}

/// The Blob service endpoint of `account`: an account name in this cloud
/// (`https://<name>.blob.<suffix>/`), or an https endpoint URL as given (an
/// emulator's is path-style, e.g. `https://127.0.0.1:10000/devstoreaccount1`).
fn account_endpoint(account: &str, suffix: &str) -> Result<Url, ToolError> {
    let account = account.trim();
    if account.contains("://") {
        return parse_https_base(account).map_err(|e| {
            ToolError::invalid_argument(format!("account endpoint {account:?}: {e}"))
        });
    }
    let valid_name = (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid_name {
        return Err(ToolError::invalid_argument(format!(
            "account {account:?} is neither a storage account name (3-24 lowercase letters and \
             digits) nor an https Blob service endpoint URL"
        )));
    }
    Url::parse(&format!("https://{account}.blob.{suffix}/"))
        .map_err(|e| ToolError::invalid_argument(format!("account {account:?}: {e}")))
}

/// Azure's container naming rules, checked before anything is sent.
fn check_container_name(name: &str) -> Result<(), ToolError> {
    let special = matches!(name, "$root" | "$logs" | "$web");
    let bytes = name.as_bytes();
    let valid = (3..=63).contains(&name.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.contains("--");
    if special || valid {
        Ok(())
    } else {
        Err(ToolError::invalid_argument(format!(
            "container {name:?} is not a valid container name (3-63 lowercase letters, digits \
             and single hyphens, starting and ending with a letter or digit)"
        )))
    }
}

/// One parsed `<Container>` or `<Blob>`: its `Name` and `Properties`.
#[derive(Debug)]
struct Item {
    name: String,
    properties: Vec<(String, String)>,
}

impl Item {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every `<item_tag>` of a paged listing, following `NextMarker`.
async fn list(
    ctx: &Context,
    url: Url,
    query: &[(&str, &str)],
    prefix: Option<&str>,
    tenant: Option<&str>,
    item_tag: &str,
) -> Result<(Vec<Item>, bool), ToolError> {
    let mut items = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut page_url = url.clone();
        {
            let mut pairs = page_url.query_pairs_mut();
            pairs.extend_pairs(query);
            if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
                pairs.append_pair("prefix", prefix);
            }
            if let Some(marker) = &marker {
                pairs.append_pair("marker", marker);
            }
        }
        let headers = [
            ("x-ms-version", STORAGE_API_VERSION.to_string()),
            ("x-ms-date", http_date(OffsetDateTime::now_utc())),
        ];
        let response = ctx.get(&page_url, STORAGE_SCOPE, tenant, &headers).await?;
        if !response.status.is_success() {
            return Err(storage_error(&response));
        }
        let (page, next) = parse_enumeration(&response.body, item_tag)?;
        items.extend(page);
        if items.len() >= MAX_ITEMS {
            items.truncate(MAX_ITEMS);
            return Ok((items, true));
        }
        match next {
            Some(next) => marker = Some(next),
            None => return Ok((items, false)),
        }
    }
}

/// An `EnumerationResults` document: its items and its `NextMarker`, if any.
fn parse_enumeration(
    body: &[u8],
    item_tag: &str,
) -> Result<(Vec<Item>, Option<String>), ToolError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ToolError::bad_response("the Blob service's listing is not UTF-8".into()))?;
    // Azure Storage prefixes its XML with a byte order mark.
    let document =
        roxmltree::Document::parse(text.trim_start_matches('\u{feff}')).map_err(|e| {
            ToolError::bad_response(format!("the Blob service's listing is not XML: {e}"))
        })?;
    let root = document.root_element();
    if root.tag_name().name() != "EnumerationResults" {
        return Err(ToolError::bad_response(format!(
            "expected EnumerationResults from the Blob service, got {}",
            root.tag_name().name()
        )));
    }
    let items = root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == item_tag)
        .map(|node| {
            let child_text = |name: &str| {
                node.children()
                    .find(|c| c.tag_name().name() == name)
                    .and_then(|c| c.text())
                    .unwrap_or_default()
                    .to_string()
            };
            let properties = node
                .children()
                .find(|c| c.tag_name().name() == "Properties")
                .map(|props| {
                    props
                        .children()
                        .filter(|p| p.is_element())
                        .map(|p| {
                            (
                                p.tag_name().name().to_string(),
                                p.text().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Item {
                name: child_text("Name"),
                properties,
            }
        })
        .collect();
    let next = root
        .children()
        .find(|c| c.tag_name().name() == "NextMarker")
        .and_then(|c| c.text())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok((items, next))
}

fn container_json(item: &Item) -> Value {
    let mut fields = Map::new();
    fields.insert("name".into(), json!(item.name));
    put_date(&mut fields, "lastModified", item.property("Last-Modified"));
    put(&mut fields, "eTag", item.property("Etag"));
    put(&mut fields, "leaseStatus", item.property("LeaseStatus"));
    put(&mut fields, "leaseState", item.property("LeaseState"));
    put(&mut fields, "leaseDuration", item.property("LeaseDuration"));
    put(&mut fields, "publicAccess", item.property("PublicAccess"));
    put_bool(
        &mut fields,
        "hasImmutabilityPolicy",
        item.property("HasImmutabilityPolicy"),
    );
    put_bool(&mut fields, "hasLegalHold", item.property("HasLegalHold"));
    Value::Object(fields)
}

fn blob_json(item: &Item) -> Value {
    let mut fields = Map::new();
    fields.insert("name".into(), json!(item.name));
    put_date(&mut fields, "lastModified", item.property("Last-Modified"));
    put(&mut fields, "eTag", item.property("Etag"));
    if let Some(length) = item
        .property("Content-Length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        fields.insert("contentLength".into(), json!(length));
    }
    put(&mut fields, "contentType", item.property("Content-Type"));
    put(&mut fields, "blobType", item.property("BlobType"));
    put(&mut fields, "accessTier", item.property("AccessTier"));
    put(&mut fields, "leaseStatus", item.property("LeaseStatus"));
    put(&mut fields, "leaseState", item.property("LeaseState"));
    put_date(&mut fields, "createdOn", item.property("Creation-Time"));
    Value::Object(fields)
}

fn put(fields: &mut Map<String, Value>, name: &str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        fields.insert(name.into(), json!(value));
    }
}

fn put_bool(fields: &mut Map<String, Value>, name: &str, value: Option<&str>) {
    if let Some(value) = value.and_then(|v| v.parse::<bool>().ok()) {
        fields.insert(name.into(), json!(value));
    }
}

/// Storage dates are RFC 1123 (`Tue, 26 Nov 2024 04:15:00 GMT`); results use RFC 3339.
fn put_date(fields: &mut Map<String, Value>, name: &str, value: Option<&str>) {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = value
        .and_then(|v| PrimitiveDateTime::parse(v, format).ok())
        .and_then(|t| t.assume_utc().format(&Rfc3339).ok());
    if let Some(date) = parsed.or_else(|| value.map(str::to_string)) {
        fields.insert(name.into(), json!(date));
    }
}

/// `x-ms-date`: RFC 1123 in GMT.
fn http_date(now: OffsetDateTime) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    now.to_offset(time::UtcOffset::UTC)
        .format(format)
        .expect("a UTC date formats")
}

/// The Blob service's `<Error><Code/><Message/></Error>` as a tool error.
fn storage_error(response: &Response) -> ToolError {
    let text = String::from_utf8_lossy(&response.body);
    let parsed = roxmltree::Document::parse(text.trim_start_matches('\u{feff}')).ok();
    let field = |name: &str| {
        parsed.as_ref().and_then(|d| {
            d.root_element()
                .children()
                .find(|c| c.tag_name().name() == name)
                .and_then(|c| c.text())
                .map(|t| t.trim().to_string())
        })
    };
    let code = field("Code")
        .or_else(|| {
            response
                .headers
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    // The first line of the message; the rest is request id and time.
    let mut message = field("Message")
        .and_then(|m| m.lines().next().map(str::to_string))
        .unwrap_or_else(|| format!("The Blob service answered {}.", response.status));
    if let Some(detail) = field("AuthenticationErrorDetail").filter(|d| !d.is_empty()) {
        message.push_str(&format!(" ({detail})"));
    }
    // The two 403s read alike but need different people: a data role (RBAC)
    // is granted on the account, a network rule by whoever runs its firewall.
    match code.as_str() {
        "AuthorizationPermissionMismatch" => message.push_str(
            " The signed-in identity needs a data role on the account, e.g. 'Storage Blob Data Reader'.",
        ),
        "AuthorizationFailure" => message.push_str(
            " The storage account's network rules ('Firewalls and virtual networks', or public \
             network access disabled) do not admit this client's address: ask the account's \
             owner to add your public IP address or virtual network, or reach the account \
             through its private endpoint (VPN). A missing data role would say \
             AuthorizationPermissionMismatch instead.",
        ),
        _ => {}
    }
    ToolError::request_failed(response.status.as_u16(), &code, &message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    #[test]
    fn accounts_are_names_or_https_endpoints() {
        assert_eq!(
            account_endpoint("mystorage", "core.windows.net")
                .unwrap()
                .as_str(),
            "https://mystorage.blob.core.windows.net/"
        );
        assert_eq!(
            account_endpoint(
                "https://127.0.0.1:10000/devstoreaccount1",
                "core.windows.net"
            )
            .unwrap()
            .as_str(),
            "https://127.0.0.1:10000/devstoreaccount1/"
        );
        for bad in [
            "My_Storage",
            "ab",
            "http://127.0.0.1:10000/devstoreaccount1",
            "x.y",
        ] {
            assert_eq!(
                account_endpoint(bad, "core.windows.net")
                    .unwrap_err()
                    .status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn container_names() {
        for good in ["abc", "my-container-1", "$root", "$logs"] {
            assert!(check_container_name(good).is_ok(), "{good}");
        }
        for bad in ["ab", "-abc", "abc-", "a--b", "ABC", "a/b", "$other", ""] {
            assert!(check_container_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_listings_and_markers() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\
            <EnumerationResults ServiceEndpoint=\"https://127.0.0.1:10000/devstoreaccount1\" ContainerName=\"c1\">\
            <Prefix/><MaxResults>2</MaxResults><Blobs>\
            <Blob><Name>a.txt</Name><Properties><Creation-Time>Tue, 26 Nov 2024 04:15:00 GMT</Creation-Time>\
            <Last-Modified>Tue, 26 Nov 2024 04:15:01 GMT</Last-Modified><Etag>0x8DD</Etag>\
            <Content-Length>5</Content-Length><Content-Type>text/plain</Content-Type>\
            <BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><LeaseStatus>unlocked</LeaseStatus>\
            <LeaseState>available</LeaseState></Properties></Blob>\
            <Blob><Name>b/c.txt</Name><Properties><Content-Length>0</Content-Length></Properties></Blob>\
            </Blobs><NextMarker>marker-2</NextMarker></EnumerationResults>";
        let (items, next) = parse_enumeration(xml.as_bytes(), "Blob").unwrap();
        assert_eq!(next.as_deref(), Some("marker-2"));
        assert_eq!(
            blob_json(&items[0]),
            json!({
                "name": "a.txt",
                "lastModified": "2024-11-26T04:15:01Z",
                "eTag": "0x8DD",
                "contentLength": 5,
                "contentType": "text/plain",
                "blobType": "BlockBlob",
                "accessTier": "Hot",
                "leaseStatus": "unlocked",
                "leaseState": "available",
                "createdOn": "2024-11-26T04:15:00Z",
            })
        );
        assert_eq!(
            blob_json(&items[1]),
            json!({"name": "b/c.txt", "contentLength": 0})
        );

        let last = "<EnumerationResults><Containers><Container><Name>c1</Name><Properties>\
            <HasLegalHold>false</HasLegalHold></Properties></Container></Containers><NextMarker/></EnumerationResults>";
        let (items, next) = parse_enumeration(last.as_bytes(), "Container").unwrap();
        assert_eq!(next, None);
        assert_eq!(
            container_json(&items[0]),
            json!({"name": "c1", "hasLegalHold": false})
        );

        assert_eq!(
            parse_enumeration(b"<Error/>", "Blob").unwrap_err().status,
            502
        );
        assert_eq!(
            parse_enumeration(b"not xml", "Blob").unwrap_err().status,
            502
        );
    }

    #[test]
    fn storage_errors() {
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationPermissionMismatch</Code>\
            <Message>This request is not authorized to perform this operation using this permission.\nRequestId:1\nTime:2024</Message></Error>";
        let error = storage_error(&Response {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        });
        assert_eq!(error.status, 403);
        assert_eq!(
            error.message,
            "This request is not authorized to perform this operation using this permission. \
             The signed-in identity needs a data role on the account, e.g. 'Storage Blob Data Reader'. \
             Status: 403 (AuthorizationPermissionMismatch)"
        );

        // The account's firewall: the same 403, another code, another remedy.
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationFailure</Code>\
            <Message>This request is not authorized to perform this operation.\nRequestId:2\nTime:2024</Message></Error>";
        let error = storage_error(&Response {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        });
        assert_eq!(error.status, 403);
        assert!(
            error.message.starts_with(
                "This request is not authorized to perform this operation. The storage account's network rules"
            ),
            "{}",
            error.message
        );
        assert!(
            !error.message.contains("needs a data role"),
            "{}",
            error.message
        );
        assert!(
            error
                .message
                .ends_with("Status: 403 (AuthorizationFailure)"),
            "{}",
            error.message
        );

        // Azurite's (and Azure's) bearer failures say why in AuthenticationErrorDetail.
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Error>\n  \
            <Code>AuthenticationFailed</Code>\n  <Message>Server failed to authenticate the request.\nRequestId:1</Message>\n  \
            <AuthenticationErrorDetail>Invalid token audience.</AuthenticationErrorDetail>\n</Error>";
        let error = storage_error(&Response {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        });
        assert_eq!(
            error.message,
            "Server failed to authenticate the request. (Invalid token audience.) Status: 403 (AuthenticationFailed)"
        );
    }

    #[test]
    fn dates() {
        let t = OffsetDateTime::from_unix_timestamp(1_732_594_500).unwrap();
        assert_eq!(http_date(t), "Tue, 26 Nov 2024 04:15:00 GMT");
    }
}
