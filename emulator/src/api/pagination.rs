//! `per_page` / `page` / `cursor` (§1.4). The cursor is an opaque encoding of an offset,
//! present only while more items remain.

use serde_json::{Value, json};

use super::Params;
use crate::error::ApiError;

const DEFAULT_PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 100;

pub(crate) struct Page {
    per_page: usize,
    offset: usize,
}

pub(crate) fn page_of(query: &Params) -> Result<Page, ApiError> {
    let per_page = match query.get("per_page") {
        None => DEFAULT_PER_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PER_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "per_page",
                    format!("must be an integer from 1 to {MAX_PER_PAGE}"),
                )
            })?,
    };
    let offset = if let Some(cursor) = query.get("cursor").filter(|c| !c.is_empty()) {
        decode(cursor)
            .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor returned by this API"))?
    } else if let Some(page) = query.get("page") {
        let page = page
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::invalid("page", "must be an integer of at least 1"))?;
        (page - 1).saturating_mul(per_page)
    } else {
        0
    };
    Ok(Page { per_page, offset })
}

/// One page of `items` and its `pagination` object.
pub(crate) fn paginate<T>(items: Vec<T>, page: &Page) -> (Vec<T>, Value) {
    let total = items.len();
    let slice: Vec<T> = items
        .into_iter()
        .skip(page.offset)
        .take(page.per_page)
        .collect();
    let end = page.offset.saturating_add(slice.len());
    let mut pagination = json!({ "hasNextPage": end < total, "count": slice.len() });
    if end < total {
        pagination["cursor"] = json!(encode(end));
    }
    (slice, pagination)
}

fn encode(offset: usize) -> String {
    format!("offset:{offset}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode(cursor: &str) -> Option<usize> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        assert_eq!(decode(&encode(150)), Some(150));
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("abc"), None);
    }

    #[test]
    fn pages() {
        let page = Page {
            per_page: 2,
            offset: 0,
        };
        let (items, p) = paginate(vec![1, 2, 3], &page);
        assert_eq!(items, [1, 2]);
        assert_eq!(p["hasNextPage"], true);
        let next = Page {
            per_page: 2,
            offset: decode(p["cursor"].as_str().unwrap()).unwrap(),
        };
        let (items, p) = paginate(vec![1, 2, 3], &next);
        assert_eq!(items, [3]);
        assert_eq!(p, json!({"hasNextPage": false, "count": 1}));
    }
}
