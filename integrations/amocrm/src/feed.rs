//! The account-wide event feed: every event of some entities and types in a span, read
//! page by page, for pulls that want most of the account's events of those types (a
//! backtest's activities and field changes) and would pay 10 ids per request otherwise.

use crate::client::{enc, Client, PAGE_LIMIT};
use crate::error::Error;
use crate::types::Event;

impl Client {
    /// The account's event feed of `entities` and `types` created in `[from, to]` (Unix
    /// seconds), newest first, one request per page. When the page cap cuts it, the rest
    /// is read as a list ending at the oldest second seen (each event kept once): nothing
    /// is lost and no request goes to an empty stretch. Cheaper than 10 ids per request
    /// when most events are of ids wanted.
    pub async fn event_feed(
        &self,
        (entities, types): (&[&str], &[&str]),
        from: i64,
        mut to: i64,
    ) -> Result<Vec<Event>, Error> {
        let (mut out, mut seen) = (Vec::new(), std::collections::HashSet::new());
        loop {
            let q = feed_query((entities, types), from, Some(to));
            let (items, cut) = self.get_pages::<Event>(&q, "events").await?;
            let oldest = items.iter().filter_map(|e| e.created_at).min();
            out.extend(items.into_iter().filter(|e| seen.insert(e.id.clone())));
            match oldest.filter(|_| cut) {
                None => return Ok(out),
                Some(t) if t < to => to = t,
                Some(t) => {
                    return Err(Error::Decode {
                        what: "events".into(),
                        detail: format!("more events in second {t} than max_pages pages hold"),
                    })
                }
            }
        }
    }

    /// Whether [`Client::event_feed`] of the same arguments would take more than `pages`
    /// requests, at the cost of one (its page `pages + 1`, 204 when there is none).
    pub async fn event_feed_longer_than(
        &self,
        (entities, types): (&[&str], &[&str]),
        (from, to): (i64, i64),
        pages: usize,
    ) -> Result<bool, Error> {
        let q = feed_query((entities, types), from, Some(to));
        let next = pages + 1;
        Ok(self
            .get(&format!("{q}&page={next}&limit={PAGE_LIMIT}"))
            .await?
            .is_some())
    }

    /// The account's event feed of `entities` and `types` from `from` (Unix seconds) on,
    /// with no upper end (the account's clock, not ours, says what is new), when it
    /// takes at most `pages` requests; `None` when it takes more, found out with at most
    /// two requests. For a turn's recently created leads, whose events can only be in
    /// this stretch: page 1 alone usually holds them all; when it links a next page,
    /// page `pages` is asked for first, and only if there is none (so the feed fits in
    /// `pages - 1` pages) are pages 2 and on read, each event kept once (events added
    /// meanwhile push older ones onto later pages, never past the end).
    pub async fn event_feed_within(
        &self,
        (entities, types): (&[&str], &[&str]),
        from: i64,
        pages: usize,
    ) -> Result<Option<Vec<Event>>, Error> {
        let q = feed_query((entities, types), from, None);
        let Some((first, more)) = self.get_page::<Event>(&q, "events", 1).await? else {
            return Ok(Some(Vec::new()));
        };
        if !more || first.is_empty() {
            return Ok(Some(first));
        }
        if pages < 3 || self.get_page::<Event>(&q, "events", pages).await?.is_some() {
            return Ok(None);
        }
        let (rest, cut) = self.get_pages_from::<Event>(&q, "events", 2).await?;
        if cut {
            return Ok(None);
        }
        let mut seen = std::collections::HashSet::new();
        Ok(Some(
            first
                .into_iter()
                .chain(rest)
                .filter(|e| seen.insert(e.id.clone()))
                .collect(),
        ))
    }
}

fn feed_query((entities, types): (&[&str], &[&str]), from: i64, to: Option<i64>) -> String {
    let mut q = format!("/api/v4/events?filter[created_at][from]={from}");
    if let Some(to) = to {
        q.push_str(&format!("&filter[created_at][to]={to}"));
    }
    q.push_str(&format!("&filter[entity]={}", enc(&entities.join(","))));
    if !types.is_empty() {
        q.push_str(&format!("&filter[type]={}", enc(&types.join(","))));
    }
    q
}
