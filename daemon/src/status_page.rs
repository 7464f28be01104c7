//! Pages of `azbroker status`. The cache holds up to 100,000 keys and a frame
//! at most 64 KiB (about 1,000 entries), so status goes out a page at a time:
//! each page holds the credentials and cache entries from the client's offsets
//! on, as many as fit in one frame, and says how many there are in all.
//!
//! Each page is a fresh look at the daemon, so the lists are put in a total
//! order every time; only the page's window of the cache is sorted (a
//! selection, not a sort of the whole cache, per page).

use std::cmp::Ordering;

use azbroker_proto::{
    CacheEntryStatus, CredentialStatus, DaemonFrame, Reply, StatusPage, StatusQuery, StatusReport,
    MAX_FRAME_LEN,
};
use serde::Serialize;

/// Longest credential error shown; longer ones are cut (a page must hold at
/// least one credential, and an error is read for its start).
pub const MAX_ERROR_SHOWN: usize = 4 * 1024;
/// The fewest bytes a cache entry encodes to (a short name, one short scope):
/// bounds how many entries one page can hold.
const MIN_ENTRY_LEN: usize = 16;

/// The page of `header`'s daemon that `query` asks for. `cache` is reordered.
pub fn build<E>(
    header: StatusReport,
    credentials: Vec<CredentialStatus>,
    cache: &mut [E],
    order: impl Fn(&E, &E) -> Ordering + Copy,
    show: impl Fn(&E) -> CacheEntryStatus,
    query: &StatusQuery,
) -> StatusPage {
    let mut page = StatusPage {
        report: StatusReport {
            credentials: Vec::new(),
            cache: Vec::new(),
            ..header
        },
        credentials_total: credentials.len() as u64,
        cache_total: cache.len() as u64,
    };
    let mut budget = MAX_FRAME_LEN.saturating_sub(empty_page_len(&page));
    let skip = usize::try_from(query.credentials_from).unwrap_or(usize::MAX);
    for mut credential in credentials.into_iter().skip(skip) {
        if let Some(error) = &mut credential.last_error {
            shorten(error);
        }
        if !fits(&credential, &mut budget) {
            break;
        }
        page.report.credentials.push(credential);
    }
    let limit = query.cache_limit.map_or(usize::MAX, |n| n as usize);
    let from = usize::try_from(query.cache_from).unwrap_or(usize::MAX);
    for entry in window(cache, from, limit.min(budget / MIN_ENTRY_LEN), order) {
        let entry = show(entry);
        if !fits(&entry, &mut budget) {
            break;
        }
        page.report.cache.push(entry);
    }
    page
}

/// Bytes of `page` framed as a reply with both lists empty, and room for
/// their lengths and the id to grow to their longest varints.
fn empty_page_len(page: &StatusPage) -> usize {
    let frame = DaemonFrame {
        id: u64::MAX,
        reply: Reply::StatusPage(Box::new(page.clone())),
    };
    const LIST_LEN_GROWTH: usize = 2 * 4;
    encoded_len(&frame) + LIST_LEN_GROWTH
}

/// Takes `item`'s encoded length from `budget` if it fits.
fn fits<T: Serialize>(item: &T, budget: &mut usize) -> bool {
    let len = encoded_len(item);
    match budget.checked_sub(len) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

fn encoded_len<T: Serialize>(item: &T) -> usize {
    postcard::serialize_with_flavor(item, postcard::ser_flavors::Size::default())
        .expect("status types always encode")
}

/// Positions `from..from + count` of `items` in `order`, sorted, leaving the
/// rest unsorted: two selections and a sort of the window.
fn window<E>(
    items: &mut [E],
    from: usize,
    count: usize,
    order: impl Fn(&E, &E) -> Ordering + Copy,
) -> &[E] {
    let from = from.min(items.len());
    if from > 0 && from < items.len() {
        // Afterwards everything from `from` on sorts after everything before it.
        items.select_nth_unstable_by(from, order);
    }
    let rest = &mut items[from..];
    let count = count.min(rest.len());
    if count < rest.len() && count > 0 {
        rest.select_nth_unstable_by(count, order);
    }
    let window = &mut rest[..count];
    window.sort_unstable_by(order);
    window
}

/// Cuts `text` to [`MAX_ERROR_SHOWN`] bytes at a character boundary.
fn shorten(text: &mut String) {
    if text.len() <= MAX_ERROR_SHOWN {
        return;
    }
    let mut end = MAX_ERROR_SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(" [...]");
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::{frame, CredentialState};

    fn header() -> StatusReport {
        StatusReport {
            daemon_pid: 1,
            daemon_version: "0.1.0".into(),
            protocol_version: 1,
            uptime_secs: 9,
            socket_path: "/run/user/1000/azbroker/azbroker.sock".into(),
            store: "file /home/u/.local/state/azbroker/accounts.json".into(),
            credentials: Vec::new(),
            cache: Vec::new(),
            counters: Default::default(),
            names: Vec::new(),
        }
    }

    fn credential(n: usize, error: Option<String>) -> CredentialStatus {
        CredentialStatus {
            credential: "EnvironmentCredential".into(),
            identity: format!("{n:012x}"),
            state: CredentialState::Failing,
            acquisitions: 3,
            last_success: None,
            last_error: error,
            profile: None,
        }
    }

    fn entry(n: usize) -> CacheEntryStatus {
        CacheEntryStatus {
            credential: "EnvironmentCredential".into(),
            tenant: Some("11111111-1111-1111-1111-111111111111".into()),
            scopes: vec![format!("https://resource-{n:05}.example.com/.default")],
            expires_on: 1_900_000_000,
            refresh_on: 1_899_990_000,
            hits: n as u64,
            identity: "0a1b2c3d4e5f".into(),
        }
    }

    fn by_scopes(a: &CacheEntryStatus, b: &CacheEntryStatus) -> Ordering {
        a.scopes.cmp(&b.scopes)
    }

    fn page(
        credentials: Vec<CredentialStatus>,
        cache: &mut [CacheEntryStatus],
        query: StatusQuery,
    ) -> StatusPage {
        let page = build(
            header(),
            credentials,
            cache,
            by_scopes,
            Clone::clone,
            &query,
        );
        let framed = DaemonFrame {
            id: u64::MAX,
            reply: Reply::StatusPage(Box::new(page.clone())),
        };
        frame::encode(&framed).expect("every page fits in a frame");
        page
    }

    fn query(credentials_from: u64, cache_from: u64, cache_limit: Option<u32>) -> StatusQuery {
        StatusQuery {
            credentials_from,
            cache_from,
            cache_limit,
        }
    }

    #[test]
    fn ten_thousand_entries_come_in_frames_each_entry_once_in_order() {
        let mut cache: Vec<CacheEntryStatus> = (0..10_000).rev().map(entry).collect();
        let credentials: Vec<_> = (0..3).map(|n| credential(n, None)).collect();
        let mut seen = Vec::new();
        let mut pages = 0;
        while seen.len() < 10_000 {
            let page = page(
                credentials.clone(),
                &mut cache,
                query(3, seen.len() as u64, None),
            );
            assert_eq!((page.cache_total, page.credentials_total), (10_000, 3));
            assert!(page.report.credentials.is_empty());
            assert!(!page.report.cache.is_empty());
            seen.extend(page.report.cache.into_iter().map(|e| e.hits));
            pages += 1;
        }
        assert_eq!(seen, (0..10_000).collect::<Vec<u64>>());
        assert!(pages > 10, "{pages} pages: entries are ~100 bytes");
        let beyond = page(credentials, &mut cache, query(3, 10_000, None));
        assert!(beyond.report.cache.is_empty());
    }

    #[test]
    fn the_first_page_holds_credentials_then_what_fits_of_the_cache() {
        let mut cache: Vec<CacheEntryStatus> = (0..5_000).map(entry).collect();
        let credentials: Vec<_> = (0..3).map(|n| credential(n, None)).collect();
        let first = page(credentials, &mut cache, query(0, 0, None));
        assert_eq!(first.report.credentials.len(), 3);
        assert!(first.report.cache.len() > 100);
        assert!(first.report.cache.len() < 5_000);
        assert_eq!(first.report.cache[0].hits, 0);
    }

    #[test]
    fn a_limit_caps_the_entries() {
        let mut cache: Vec<CacheEntryStatus> = (0..500).rev().map(entry).collect();
        let page = page(Vec::new(), &mut cache, query(0, 20, Some(5)));
        let hits: Vec<u64> = page.report.cache.iter().map(|e| e.hits).collect();
        assert_eq!(hits, [20, 21, 22, 23, 24]);
        let none = self::page(Vec::new(), &mut cache, query(0, 0, Some(0)));
        assert!(none.report.cache.is_empty());
        assert_eq!(none.cache_total, 500);
    }

    #[test]
    fn huge_errors_are_cut_so_every_credential_fits_a_page() {
        let error = "é".repeat(40 * 1024);
        let credentials: Vec<_> = (0..40)
            .map(|n| credential(n, Some(error.clone())))
            .collect();
        let mut from = 0;
        while from < 40 {
            let page = page(credentials.clone(), &mut [], query(from, 0, None));
            assert!(!page.report.credentials.is_empty());
            for shown in &page.report.credentials {
                let shown = shown.last_error.as_deref().unwrap();
                assert!(shown.len() <= MAX_ERROR_SHOWN + 6 && shown.ends_with(" [...]"));
            }
            from += page.report.credentials.len() as u64;
        }
    }
}
