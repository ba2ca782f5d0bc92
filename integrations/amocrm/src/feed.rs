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
            let q = feed_query((entities, types), from, to);
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
        let q = feed_query((entities, types), from, to);
        let next = pages + 1;
        Ok(self
            .get(&format!("{q}&page={next}&limit={PAGE_LIMIT}"))
            .await?
            .is_some())
    }
}

fn feed_query((entities, types): (&[&str], &[&str]), from: i64, to: i64) -> String {
    let mut q = format!("/api/v4/events?filter[created_at][from]={from}");
    q.push_str(&format!(
        "&filter[created_at][to]={to}&filter[entity]={}",
        enc(&entities.join(","))
    ));
    if !types.is_empty() {
        q.push_str(&format!("&filter[type]={}", enc(&types.join(","))));
    }
    q
}
