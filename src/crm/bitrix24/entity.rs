//! Leads and deals behind one [`LeadId`]: a deal's id is `D_<id>` (Bitrix24's own
//! binding notation, as in `UF_CRM_TASK`), a lead's stays its plain `<id>` so the
//! stored data of portals scoring leads keeps working. Every adapter call dispatches
//! on that prefix through [`Entity`].

use crate::config::FieldsSection;
use crate::crm::LeadId;

use super::{is_numeric_id, DEFAULT_SCORE_FIELD};

/// A CRM entity leadscore scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Entity {
    Lead,
    Deal,
}

impl Entity {
    /// The entity and the portal's numeric id behind a leadscore id (`None`: neither
    /// a lead id nor `D_<id>`, so it never reaches the API).
    pub(super) fn of(id: &str) -> Option<(Entity, &str)> {
        match id.strip_prefix("D_") {
            Some(n) if is_numeric_id(n) => Some((Entity::Deal, n)),
            Some(_) => None,
            None if is_numeric_id(id) => Some((Entity::Lead, id)),
            None => None,
        }
    }

    /// The entity owning activities of this `OWNER_TYPE_ID` (1 lead, 2 deal).
    pub(super) fn of_owner_type(owner_type: i64) -> Option<Entity> {
        match owner_type {
            1 => Some(Entity::Lead),
            2 => Some(Entity::Deal),
            _ => None,
        }
    }

    /// The leadscore id of the portal's record `raw`.
    pub(super) fn id(self, raw: &str) -> LeadId {
        match self {
            Entity::Lead => raw.to_string(),
            Entity::Deal => format!("D_{raw}"),
        }
    }

    /// Bitrix24's owner type id (`OWNER_TYPE_ID` of activities, `ownerTypeId` of to-dos).
    pub(super) fn owner_type(self) -> u32 {
        match self {
            Entity::Lead => 1,
            Entity::Deal => 2,
        }
    }

    /// The `UF_CRM_TASK` binding of a task to the record: `L_<id>` or `D_<id>`.
    pub(super) fn binding(self, raw: &str) -> String {
        match self {
            Entity::Lead => format!("L_{raw}"),
            Entity::Deal => format!("D_{raw}"),
        }
    }

    /// The method family: `crm.lead` or `crm.deal` (`.list`, `.update`, `.userfield.*`).
    pub(super) fn methods(self) -> &'static str {
        match self {
            Entity::Lead => "crm.lead",
            Entity::Deal => "crm.deal",
        }
    }

    /// `ENTITY_TYPE` of a timeline comment.
    pub(super) fn comment_type(self) -> &'static str {
        match self {
            Entity::Lead => "lead",
            Entity::Deal => "deal",
        }
    }

    /// The name of the entity in messages and config (`entities = [...]`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Entity::Lead => "lead",
            Entity::Deal => "deal",
        }
    }
}

/// The write-back fields of one entity, resolved from `[portal.fields]` (leads) or
/// `[portal.fields.deal]` (deals).
#[derive(Debug, Clone, Copy)]
pub(super) struct WriteFields<'a> {
    pub score: &'a str,
    pub tier: Option<&'a str>,
    pub tier_values: &'a std::collections::BTreeMap<String, String>,
    pub breakdown: Option<&'a str>,
    /// Where the optional values go: the lead or the deal section.
    fields: &'a FieldsSection,
    entity: Entity,
}

impl<'a> WriteFields<'a> {
    /// The fields an entity's score is written to.
    pub(super) fn of(fields: &'a FieldsSection, entity: Entity) -> WriteFields<'a> {
        match entity {
            Entity::Lead => WriteFields {
                score: fields.score.as_deref().unwrap_or(DEFAULT_SCORE_FIELD),
                tier: fields.tier.as_deref(),
                tier_values: &fields.tier_values,
                breakdown: fields.breakdown.as_deref(),
                fields,
                entity,
            },
            Entity::Deal => WriteFields {
                score: fields.deal.score.as_deref().unwrap_or(DEFAULT_SCORE_FIELD),
                tier: fields.deal.tier.as_deref(),
                tier_values: &fields.deal.tier_values,
                breakdown: fields.deal.breakdown.as_deref(),
                fields,
                entity,
            },
        }
    }

    /// The field an optional value goes to, if this entity's section names one.
    pub(super) fn extra(&self, kind: crate::crm::extras::Extra) -> Option<&'a str> {
        match self.entity {
            Entity::Lead => self.fields.extra(kind),
            Entity::Deal => self.fields.deal.extra(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Entity;

    #[test]
    fn ids_dispatch_on_the_deal_prefix() {
        assert_eq!(Entity::of("42"), Some((Entity::Lead, "42")));
        assert_eq!(Entity::of("D_42"), Some((Entity::Deal, "42")));
        assert_eq!(Entity::of("D_"), None);
        assert_eq!(Entity::of("D_4x"), None);
        assert_eq!(Entity::of("L_42"), None);
        assert_eq!(Entity::Deal.id("7"), "D_7");
        assert_eq!(Entity::Lead.id("7"), "7");
        assert_eq!(Entity::Deal.binding("7"), "D_7");
        assert_eq!(Entity::Lead.binding("7"), "L_7");
        assert_eq!(Entity::of_owner_type(2), Some(Entity::Deal));
        assert_eq!(Entity::of_owner_type(3), None);
    }
}
