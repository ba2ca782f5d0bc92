//! The account's records, as the sandbox stores them and as tests read them back
//! (snapshots are clones; changing one changes nothing in the account), plus the
//! builders the seed API takes.

use serde_json::Value;

/// What kind of record an event, note or task is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityType {
    /// A lead (сделка).
    Lead,
    /// A contact.
    Contact,
    /// A company.
    Company,
}

impl EntityType {
    /// The singular name used by `/api/v4/events` (`lead`).
    pub fn event_name(self) -> &'static str {
        match self {
            EntityType::Lead => "lead",
            EntityType::Contact => "contact",
            EntityType::Company => "company",
        }
    }

    /// The plural name used by tasks, notes and URLs (`leads`).
    pub fn plural(self) -> &'static str {
        match self {
            EntityType::Lead => "leads",
            EntityType::Contact => "contacts",
            EntityType::Company => "companies",
        }
    }

    /// The numeric `element_type` of API v2 payloads (contact 1, lead 2, company 3).
    pub fn v2_element_type(self) -> u8 {
        match self {
            EntityType::Contact => 1,
            EntityType::Lead => 2,
            EntityType::Company => 3,
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Self> {
        match s {
            "lead" | "leads" => Some(EntityType::Lead),
            "contact" | "contacts" => Some(EntityType::Contact),
            "company" | "companies" => Some(EntityType::Company),
            _ => None,
        }
    }
}

/// A custom field's type, as `type` / `field_type` spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// `text`: one string.
    Text,
    /// `numeric`: a number, returned as a string.
    Numeric,
    /// `textarea`: long text.
    Textarea,
    /// `select`: one enum.
    Select,
    /// `radiobutton`: one enum.
    Radiobutton,
    /// `multiselect`: several enums.
    Multiselect,
    /// `multitext`: several strings with enum codes (PHONE, EMAIL).
    Multitext,
    /// `date`: a unix timestamp.
    Date,
    /// `checkbox`: a boolean.
    Checkbox,
    /// `url`: a link.
    Url,
}

impl FieldType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Numeric => "numeric",
            FieldType::Textarea => "textarea",
            FieldType::Select => "select",
            FieldType::Radiobutton => "radiobutton",
            FieldType::Multiselect => "multiselect",
            FieldType::Multitext => "multitext",
            FieldType::Date => "date",
            FieldType::Checkbox => "checkbox",
            FieldType::Url => "url",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => FieldType::Text,
            "numeric" => FieldType::Numeric,
            "textarea" => FieldType::Textarea,
            "select" => FieldType::Select,
            "radiobutton" => FieldType::Radiobutton,
            "multiselect" => FieldType::Multiselect,
            "multitext" => FieldType::Multitext,
            "date" => FieldType::Date,
            "checkbox" => FieldType::Checkbox,
            "url" => FieldType::Url,
            _ => return None,
        })
    }

    /// Whether values are picked from `enums`.
    pub fn has_enums(self) -> bool {
        matches!(
            self,
            FieldType::Select
                | FieldType::Radiobutton
                | FieldType::Multiselect
                | FieldType::Multitext
        )
    }
}

/// One choice of a select-like field.
#[derive(Clone, Debug, PartialEq)]
pub struct EnumOption {
    /// `enum_id`.
    pub id: u64,
    /// Display text.
    pub value: String,
    /// Sort order.
    pub sort: i64,
    /// `enum_code` (multitext fields: WORK, MOB, …).
    pub code: Option<String>,
}

/// A custom field definition.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomField {
    /// `field_id`.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Type.
    pub field_type: FieldType,
    /// Symbolic code (`POSITION`, `EMAIL`, or one the integration chose).
    pub code: Option<String>,
    /// Sort order.
    pub sort: i64,
    /// Editable only through the API (users cannot change it in the UI).
    pub is_api_only: bool,
    /// Choices of select-like fields.
    pub enums: Vec<EnumOption>,
    /// Which records the field belongs to.
    pub entity_type: EntityType,
}

/// What the seed API needs to create a lead custom field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSpec {
    /// Display name.
    pub name: String,
    /// Type.
    pub field_type: FieldType,
    /// Optional symbolic code.
    pub code: Option<String>,
    /// `is_api_only`.
    pub is_api_only: bool,
    /// Choice texts for select-like fields, in order.
    pub enums: Vec<String>,
}

impl FieldSpec {
    /// A field of `field_type` named `name`.
    pub fn new(name: &str, field_type: FieldType) -> Self {
        Self {
            name: name.to_owned(),
            field_type,
            code: None,
            is_api_only: false,
            enums: Vec::new(),
        }
    }

    /// A `select` with the given choices.
    pub fn select(name: &str, choices: &[&str]) -> Self {
        let mut spec = Self::new(name, FieldType::Select);
        spec.enums = choices.iter().map(|c| (*c).to_owned()).collect();
        spec
    }

    /// Marks the field `is_api_only`.
    pub fn api_only(mut self) -> Self {
        self.is_api_only = true;
        self
    }

    /// Sets the symbolic code.
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }
}

/// One stored value of a custom field, already in the shape GET returns.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredValue {
    /// `value`: a string for text and numeric fields, the enum text for enums, a unix
    /// timestamp for dates, a bool for checkboxes.
    pub value: Value,
    /// `enum_id` of select-like fields.
    pub enum_id: Option<u64>,
    /// `enum_code` of multitext fields.
    pub enum_code: Option<String>,
}

impl StoredValue {
    /// The value as text (numbers and bools formatted, enums by their text).
    pub fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// The values of one field on one record.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldValues {
    /// `field_id`.
    pub field_id: u64,
    /// Values, at least one.
    pub values: Vec<StoredValue>,
}

/// A value the seed API writes into a custom field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// Text, textarea, url (and numeric given as text).
    Text(String),
    /// Numeric.
    Number(f64),
    /// A select or radiobutton choice by `enum_id`.
    Enum(u64),
    /// Multiselect choices by `enum_id`.
    Enums(Vec<u64>),
    /// A date as a unix timestamp.
    Date(i64),
    /// A checkbox.
    Flag(bool),
}

/// A tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Tag id.
    pub id: u64,
    /// Tag name.
    pub name: String,
}

/// A contact linked to a lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkedContact {
    /// Contact id.
    pub id: u64,
    /// Whether it is the lead's main contact.
    pub is_main: bool,
}

/// A lead.
#[derive(Clone, Debug, PartialEq)]
pub struct Lead {
    /// Lead id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Sale value.
    pub price: i64,
    /// Responsible user.
    pub responsible_user_id: u64,
    /// Group of the responsible user.
    pub group_id: u64,
    /// Stage.
    pub status_id: u64,
    /// Pipeline.
    pub pipeline_id: u64,
    /// Who created it.
    pub created_by: u64,
    /// Who changed it last.
    pub updated_by: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; moves only on a real change.
    pub updated_at: i64,
    /// Set when the lead reaches stage 142 or 143.
    pub closed_at: Option<i64>,
    /// Why a lost lead was lost (an id of the account's loss reasons).
    pub loss_reason_id: Option<u64>,
    /// Custom field values in field order of first write.
    pub fields: Vec<FieldValues>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Linked contacts.
    pub contacts: Vec<LinkedContact>,
    /// Linked companies.
    pub companies: Vec<u64>,
}

impl Lead {
    /// The values of `field_id`, if set.
    pub fn values(&self, field_id: u64) -> Option<&[StoredValue]> {
        self.fields
            .iter()
            .find(|f| f.field_id == field_id)
            .map(|f| f.values.as_slice())
    }

    /// The first value of `field_id` as text.
    pub fn text(&self, field_id: u64) -> Option<String> {
        self.values(field_id)
            .and_then(|v| v.first())
            .map(StoredValue::text)
    }

    /// The first `enum_id` of `field_id`.
    pub fn enum_id(&self, field_id: u64) -> Option<u64> {
        self.values(field_id)
            .and_then(|v| v.first())
            .and_then(|v| v.enum_id)
    }
}

/// A contact.
#[derive(Clone, Debug, PartialEq)]
pub struct Contact {
    /// Contact id.
    pub id: u64,
    /// Full name.
    pub name: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Responsible user.
    pub responsible_user_id: u64,
    /// Who created it.
    pub created_by: u64,
    /// Who changed it last.
    pub updated_by: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// POSITION, EMAIL, PHONE and any other contact fields.
    pub fields: Vec<FieldValues>,
    /// Linked companies.
    pub companies: Vec<u64>,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// A company.
#[derive(Clone, Debug, PartialEq)]
pub struct Company {
    /// Company id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Responsible user.
    pub responsible_user_id: u64,
    /// Who created it.
    pub created_by: u64,
    /// Who changed it last.
    pub updated_by: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// PHONE, EMAIL, WEB, ADDRESS and any other company fields.
    pub fields: Vec<FieldValues>,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// An entry of the account's event feed (`/api/v4/events`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// String id, as amoCRM's are.
    pub id: String,
    /// `type`, e.g. `incoming_call`, `lead_status_changed`.
    pub event_type: String,
    /// Record kind.
    pub entity_type: EntityType,
    /// Record id.
    pub entity_id: u64,
    /// User id, 0 for the system or a robot.
    pub created_by: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// `value_after` array.
    pub value_after: Value,
    /// `value_before` array.
    pub value_before: Value,
}

/// What the seed API needs to add an event.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Record kind.
    pub entity_type: EntityType,
    /// Record id.
    pub entity_id: u64,
    /// `type`.
    pub event_type: String,
    /// Unix seconds; now when `None`.
    pub created_at: Option<i64>,
    /// User id, 0 for the system.
    pub created_by: u64,
    /// `value_after` (an array).
    pub value_after: Value,
    /// `value_before` (an array).
    pub value_before: Value,
}

impl NewEvent {
    /// An event of `event_type` on lead `lead_id`.
    pub fn lead(lead_id: u64, event_type: &str) -> Self {
        Self {
            entity_type: EntityType::Lead,
            entity_id: lead_id,
            event_type: event_type.to_owned(),
            created_at: None,
            created_by: 0,
            value_after: Value::Array(Vec::new()),
            value_before: Value::Array(Vec::new()),
        }
    }

    /// Sets `created_at`.
    pub fn at(mut self, unix: i64) -> Self {
        self.created_at = Some(unix);
        self
    }

    /// Sets `created_by`.
    pub fn by(mut self, user_id: u64) -> Self {
        self.created_by = user_id;
        self
    }

    /// Sets `value_after`.
    pub fn after(mut self, value: Value) -> Self {
        self.value_after = value;
        self
    }

    /// Sets `value_before`.
    pub fn before(mut self, value: Value) -> Self {
        self.value_before = value;
        self
    }
}

/// A note.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// Note id.
    pub id: u64,
    /// Record kind.
    pub entity_type: EntityType,
    /// Record id.
    pub entity_id: u64,
    /// v4 string type: `common`, `call_in`, …
    pub note_type: String,
    /// `params` object.
    pub params: Value,
    /// Author.
    pub created_by: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Responsible user.
    pub responsible_user_id: u64,
}

/// A task.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Task id.
    pub id: u64,
    /// Text.
    pub text: String,
    /// Deadline, unix seconds.
    pub complete_till: i64,
    /// Record kind, if attached.
    pub entity_type: Option<EntityType>,
    /// Record id, if attached.
    pub entity_id: Option<u64>,
    /// 1 follow-up (call), 2 meeting, or a custom type.
    pub task_type_id: u64,
    /// Responsible user.
    pub responsible_user_id: u64,
    /// Done.
    pub is_completed: bool,
    /// Duration in seconds.
    pub duration: i64,
    /// `result.text`, once completed with a result.
    pub result_text: Option<String>,
    /// Author.
    pub created_by: u64,
    /// Last editor.
    pub updated_by: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// What the seed API needs to add a task.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// Text.
    pub text: String,
    /// Deadline.
    pub complete_till: i64,
    /// Attached lead, if any.
    pub lead_id: Option<u64>,
    /// Type (1 follow-up).
    pub task_type_id: u64,
    /// Responsible user; the account's current user when `None`.
    pub responsible_user_id: Option<u64>,
    /// Already done.
    pub is_completed: bool,
}

impl NewTask {
    /// A follow-up task on `lead_id`.
    pub fn follow_up(lead_id: u64, text: &str, complete_till: i64) -> Self {
        Self {
            text: text.to_owned(),
            complete_till,
            lead_id: Some(lead_id),
            task_type_id: 1,
            responsible_user_id: None,
            is_completed: false,
        }
    }
}

/// A user of the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Login e-mail.
    pub email: String,
    /// Account administrator.
    pub is_admin: bool,
}

/// A loss reason of the account (`GET /api/v4/leads/loss_reasons`), set on lost
/// leads as `loss_reason_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossReason {
    /// Its id.
    pub id: u64,
    /// Its name, as reps pick it.
    pub name: String,
    /// Sort order.
    pub sort: i64,
}

/// A pipeline stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// `status_id`.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Sort order.
    pub sort: i64,
    /// 0 ordinary, 1 unsorted ("Неразобранное").
    pub kind: u8,
}

/// A sales pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    /// `pipeline_id`.
    pub id: u64,
    /// Name.
    pub name: String,
    /// The main pipeline gets leads created without one.
    pub is_main: bool,
    /// Stages in order; the last two are always 142 (won) and 143 (lost).
    pub stages: Vec<Stage>,
}

/// What the seed API needs to add a lead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewLead {
    /// Name.
    pub name: String,
    /// Sale value.
    pub price: i64,
    /// Stage; the main pipeline's first ordinary stage when `None`.
    pub status_id: Option<u64>,
    /// Pipeline; the stage's pipeline (or the main one) when `None`.
    pub pipeline_id: Option<u64>,
    /// Responsible user; the account's current user when `None`.
    pub responsible_user_id: Option<u64>,
    /// Creation time; now when `None`.
    pub created_at: Option<i64>,
    /// Last change time; `created_at` when `None`.
    pub updated_at: Option<i64>,
    /// Close time of a lead created in stage 142 or 143; `updated_at` when `None`.
    pub closed_at: Option<i64>,
    /// Loss reason id (one of [`crate::SandboxHandle::loss_reasons`]).
    pub loss_reason_id: Option<u64>,
    /// Custom field values.
    pub fields: Vec<(u64, FieldValue)>,
    /// Tag names.
    pub tags: Vec<String>,
}

impl NewLead {
    /// A lead named `name`.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Sets the sale value.
    pub fn price(mut self, price: i64) -> Self {
        self.price = price;
        self
    }

    /// Sets the stage.
    pub fn status(mut self, status_id: u64) -> Self {
        self.status_id = Some(status_id);
        self
    }

    /// Sets the responsible user.
    pub fn responsible(mut self, user_id: u64) -> Self {
        self.responsible_user_id = Some(user_id);
        self
    }

    /// Sets a custom field.
    pub fn field(mut self, field_id: u64, value: FieldValue) -> Self {
        self.fields.push((field_id, value));
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, name: &str) -> Self {
        self.tags.push(name.to_owned());
        self
    }

    /// Sets `created_at` (and `updated_at` unless set separately).
    pub fn created_at(mut self, unix: i64) -> Self {
        self.created_at = Some(unix);
        self
    }

    /// Sets `updated_at`.
    pub fn updated_at(mut self, unix: i64) -> Self {
        self.updated_at = Some(unix);
        self
    }
}

/// A change a user makes to a lead in the UI (through the seed API).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeadChange {
    /// New name.
    pub name: Option<String>,
    /// New sale value.
    pub price: Option<i64>,
    /// New stage.
    pub status_id: Option<u64>,
    /// New pipeline.
    pub pipeline_id: Option<u64>,
    /// New responsible user.
    pub responsible_user_id: Option<u64>,
    /// Field values to set (`Some`) or clear (`None`).
    pub fields: Vec<(u64, Option<FieldValue>)>,
}

impl LeadChange {
    /// Sets the name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Sets the sale value.
    pub fn price(mut self, price: i64) -> Self {
        self.price = Some(price);
        self
    }

    /// Moves the lead to a stage.
    pub fn status(mut self, status_id: u64) -> Self {
        self.status_id = Some(status_id);
        self
    }

    /// Hands the lead to another user.
    pub fn responsible(mut self, user_id: u64) -> Self {
        self.responsible_user_id = Some(user_id);
        self
    }

    /// Sets a custom field.
    pub fn field(mut self, field_id: u64, value: FieldValue) -> Self {
        self.fields.push((field_id, Some(value)));
        self
    }

    /// Clears a custom field.
    pub fn clear(mut self, field_id: u64) -> Self {
        self.fields.push((field_id, None));
        self
    }
}

/// What the seed API needs to add a contact.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewContact {
    /// Full name.
    pub name: String,
    /// Job title (POSITION).
    pub position: Option<String>,
    /// E-mail addresses (EMAIL, enum WORK).
    pub emails: Vec<String>,
    /// Phone numbers (PHONE, enum WORK).
    pub phones: Vec<String>,
    /// Responsible user; the account's current user when `None`.
    pub responsible_user_id: Option<u64>,
    /// Company to link.
    pub company_id: Option<u64>,
}

impl NewContact {
    /// A contact named `name`.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Sets the job title.
    pub fn position(mut self, position: &str) -> Self {
        self.position = Some(position.to_owned());
        self
    }

    /// Adds an e-mail.
    pub fn email(mut self, email: &str) -> Self {
        self.emails.push(email.to_owned());
        self
    }

    /// Adds a phone.
    pub fn phone(mut self, phone: &str) -> Self {
        self.phones.push(phone.to_owned());
        self
    }

    /// Links a company.
    pub fn company(mut self, company_id: u64) -> Self {
        self.company_id = Some(company_id);
        self
    }
}

/// What the seed API needs to add a company.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewCompany {
    /// Name.
    pub name: String,
    /// Phones.
    pub phones: Vec<String>,
    /// E-mails.
    pub emails: Vec<String>,
    /// Web site (WEB).
    pub web: Option<String>,
    /// Address (ADDRESS).
    pub address: Option<String>,
}

impl NewCompany {
    /// A company named `name`.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Sets the web site.
    pub fn web(mut self, web: &str) -> Self {
        self.web = Some(web.to_owned());
        self
    }
}
