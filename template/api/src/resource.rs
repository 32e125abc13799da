//! What the domain of every resource shares, and nothing about HTTP: the
//! precondition of a conditional write (optimistic concurrency) and a
//! keyset page. `http/conditional.rs` and `http/pagination.rs` speak them
//! on the wire; a resource's domain (`items.rs`) and store take them.

use uuid::Uuid;

/// What a conditional write requires of the current version (`If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition (`If-Match: *` or, where allowed, no header).
    Any,
    /// The current version must be one of these.
    Versions(Vec<i64>),
}

impl Precondition {
    /// The versions a write may replace; `None` for any.
    pub fn versions(&self) -> Option<&[i64]> {
        match self {
            Self::Any => None,
            Self::Versions(v) => Some(v),
        }
    }
}

/// A page of a collection, in key order, and where the next one starts.
#[derive(Debug)]
pub struct Page<T> {
    /// The entries of this page.
    pub items: Vec<T>,
    /// The key to continue after, if there are more.
    pub next_after: Option<Uuid>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read in key order: the extra row,
    /// when there is one, only says that another page exists (no `COUNT`).
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> Uuid) -> Self {
        let limit = limit as usize;
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(key)
        } else {
            None
        };
        Self { items: rows, next_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_row_only_says_there_is_more() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_overfetch(ids.clone(), 2, |id| *id);
        assert_eq!((page.items.as_slice(), page.next_after), (&ids[..2], Some(ids[1])));
        let last = Page::from_overfetch(ids[..2].to_vec(), 2, |id| *id);
        assert_eq!(last.next_after, None);
    }
}
