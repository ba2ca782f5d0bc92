//! Company aggregates for buying-group rules: which people of a company were active
//! when, gathered from each of its leads as the lead is scored.
//!
//! Trees (JSON values like the rest of the store):
//! - `company`: `portal \0 key` → [`CompanyRecord`]: the company's name and, per lead,
//!   the people that lead's activities show with their latest time per kind.
//! - `company_of`: `portal \0 lead` → key, so a lead whose company changed (a new
//!   e-mail) leaves the old company's aggregate.
//!
//! Updates hold one lock (workers of a portal may score two leads of one company at
//! once); the caller flushes with the rest of its turn.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{dec, enc, lead_key, Store, StoreError};
use crate::crm::LeadId;
use crate::scoring::{Company, CompanyKey, Member};

/// A company as stored: its display name and each known lead's people.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompanyRecord {
    pub name: String,
    pub leads: BTreeMap<LeadId, Vec<Member>>,
}

impl CompanyRecord {
    /// The engine's input: every person once, with the latest time per kind across the
    /// leads that show them (an amoCRM contact may appear under several leads).
    pub fn company(&self) -> Company {
        let mut people: BTreeMap<&str, Member> = BTreeMap::new();
        for m in self.leads.values().flatten() {
            let p = people.entry(&m.id).or_insert_with(|| Member {
                id: m.id.clone(),
                latest: BTreeMap::new(),
            });
            for (kind, &at) in &m.latest {
                let slot = p.latest.entry(kind.clone()).or_insert(at);
                *slot = (*slot).max(at);
            }
        }
        Company {
            name: self.name.clone(),
            people: people.into_values().collect(),
        }
    }
}

/// What [`Store::company_put`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompanyUpdate {
    /// The lead's company after the update (`None`: the lead has none).
    pub company: Option<Company>,
    /// Other leads of the lead's company, when its people there changed: they may read
    /// differently now (the caller decides whether the rules' view of it moved).
    pub affected: Vec<LeadId>,
    /// Leads of a company the lead left (a new e-mail, a deleted lead): their group
    /// lost this lead's people.
    pub left: Vec<LeadId>,
    /// The company's aggregate before this update (`None`: the lead starts it, or has
    /// no company).
    pub before: Option<Company>,
}

/// The company trees.
pub(super) struct CompanyTrees {
    by_key: sled::Tree,
    of_lead: sled::Tree,
    lock: Mutex<()>,
}

impl CompanyTrees {
    pub(super) fn open(db: &sled::Db) -> Result<CompanyTrees, StoreError> {
        Ok(CompanyTrees {
            by_key: db.open_tree("company")?,
            of_lead: db.open_tree("company_of")?,
            lock: Mutex::new(()),
        })
    }

    fn get(&self, portal: &str, key: &str) -> Result<Option<CompanyRecord>, StoreError> {
        match self.by_key.get(lead_key(portal, key))? {
            Some(v) => dec("company", &v).map(Some),
            None => Ok(None),
        }
    }

    fn put(&self, portal: &str, key: &str, rec: &CompanyRecord) -> Result<(), StoreError> {
        let k = lead_key(portal, key);
        if rec.leads.is_empty() {
            self.by_key.remove(k)?;
        } else {
            self.by_key.insert(k, enc(rec))?;
        }
        Ok(())
    }
}

impl Store {
    /// Record the people `lead` shows under its company `key` (`None`: it has none
    /// now), leaving any company it belonged to before, and return its company's
    /// aggregate with the other leads this changed. The caller flushes.
    pub fn company_put(
        &self,
        portal: &str,
        lead: &str,
        key: Option<&CompanyKey>,
        people: Vec<Member>,
    ) -> Result<CompanyUpdate, StoreError> {
        let trees = &self.companies;
        let _guard = trees.lock.lock().unwrap_or_else(|p| p.into_inner());
        let of = lead_key(portal, lead);
        let before: Option<String> = match trees.of_lead.get(&of)? {
            Some(v) => Some(dec("company_of", &v)?),
            None => None,
        };
        let mut out = CompanyUpdate::default();
        if let Some(old) = before
            .as_deref()
            .filter(|o| Some(*o) != key.map(|k| &k.key[..]))
        {
            if let Some(mut rec) = trees.get(portal, old)? {
                if rec.leads.remove(lead).is_some_and(|p| !p.is_empty()) {
                    out.left.extend(rec.leads.keys().cloned());
                }
                trees.put(portal, old, &rec)?;
            }
        }
        let Some(key) = key else {
            trees.of_lead.remove(&of)?;
            return Ok(out);
        };
        let prior = trees.get(portal, &key.key)?;
        out.before = prior.as_ref().map(CompanyRecord::company);
        let mut rec = prior.unwrap_or_default();
        rec.name.clone_from(&key.name);
        let changed = rec.leads.get(lead) != Some(&people);
        rec.leads.insert(lead.to_string(), people);
        trees.put(portal, &key.key, &rec)?;
        if before.as_deref() != Some(&key.key) {
            trees.of_lead.insert(&of, enc(&key.key))?;
        }
        if changed {
            out.affected
                .extend(rec.leads.keys().filter(|l| *l != lead).cloned());
        }
        out.company = Some(rec.company());
        Ok(out)
    }

    /// A company's record, for `explain` and tests.
    pub fn company_record(
        &self,
        portal: &str,
        key: &str,
    ) -> Result<Option<CompanyRecord>, StoreError> {
        self.companies.get(portal, key)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        format!("2026-11-{s}T10:00:00Z").parse().unwrap()
    }

    fn person(id: &str, day: &str) -> Vec<Member> {
        vec![Member {
            id: id.into(),
            latest: [("page_view".to_string(), at(day))].into(),
        }]
    }

    fn key(k: &str) -> CompanyKey {
        CompanyKey {
            key: k.into(),
            name: "Ромашка".into(),
        }
    }

    /// Leads join one aggregate; a changed share names the others to re-score, an
    /// unchanged one names nobody (no re-score loop); a lead that moves to another
    /// company leaves the old one, whose leads are then named.
    #[test]
    fn leads_join_change_and_leave_a_company() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let k = key("domain:romashka.ru");
        let u = s
            .company_put("p", "1", Some(&k), person("lead:1", "20"))
            .unwrap();
        assert!(u.affected.is_empty() && u.before.is_none());
        let u = s
            .company_put("p", "2", Some(&k), person("lead:2", "21"))
            .unwrap();
        assert_eq!(u.affected, vec!["1".to_string()]);
        assert_eq!(u.before.map(|b| b.people.len()), Some(1));
        let c = u.company.unwrap();
        assert_eq!(c.name, "Ромашка");
        assert_eq!(c.people.len(), 2);
        let again = s
            .company_put("p", "2", Some(&k), person("lead:2", "21"))
            .unwrap();
        assert!(again.affected.is_empty(), "same share, nothing to re-score");
        let moved = s
            .company_put(
                "p",
                "2",
                Some(&key("domain:other.ru")),
                person("lead:2", "21"),
            )
            .unwrap();
        assert_eq!(moved.left, vec!["1".to_string()]);
        assert!(moved.affected.is_empty(), "alone in its new company");
        let rec = s
            .company_record("p", "domain:romashka.ru")
            .unwrap()
            .unwrap();
        assert_eq!(rec.leads.keys().collect::<Vec<_>>(), vec!["1"]);
        let gone = s.company_put("p", "1", None, Vec::new()).unwrap();
        assert_eq!(gone.company, None);
        assert_eq!(s.company_record("p", "domain:romashka.ru").unwrap(), None);
    }

    /// One contact under two leads is one person, with the later time.
    #[test]
    fn a_contact_under_two_leads_is_one_person() {
        let rec = CompanyRecord {
            name: "Ромашка".into(),
            leads: [
                ("1".to_string(), person("contact:5", "20")),
                ("2".to_string(), person("contact:5", "22")),
            ]
            .into(),
        };
        let c = rec.company();
        assert_eq!(c.people.len(), 1);
        assert_eq!(c.people[0].latest["page_view"], at("22"));
    }
}
