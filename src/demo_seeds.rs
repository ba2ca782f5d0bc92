//! The demo's twenty seed leads: varied fits (titles, industries, revenue and headcount
//! ranges, free mailboxes) and the activities that arrive over the demo's day, so the
//! table it prints shows every kind of rule at work.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// One seed lead: Bitrix24 fields plus the activities that will arrive later.
pub struct SeedLead {
    pub fields: Value,
    /// Activities that arrive in phase 2 (crm.activity.add fields, owner filled in later).
    pub later: Vec<Value>,
}

// One call per seed row reads like the table it is; a struct would only add noise.
#[allow(clippy::too_many_arguments)]
fn lead(
    name: &str,
    last: &str,
    post: &str,
    company: &str,
    email: &str,
    industry: &str,
    revenue: Option<u64>,
    employees: Option<u64>,
    region: &str,
    responsible: u32,
) -> Value {
    let mut f = json!({
        "TITLE": format!("{company}: {name} {last}"),
        "NAME": name,
        "LAST_NAME": last,
        "POST": post,
        "COMPANY_TITLE": company,
        "SOURCE_ID": "WEB",
        "ASSIGNED_BY_ID": responsible.to_string(),
        "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}],
        "UF_CRM_INDUSTRY": industry,
        "UF_CRM_REGION": region,
    });
    if let Some(r) = revenue {
        f["UF_CRM_REVENUE"] = json!(r.to_string());
    }
    if let Some(e) = employees {
        f["UF_CRM_EMPLOYEES"] = json!(e.to_string());
    }
    f
}

fn bitrix_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).expect("valid offset"))
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn web(tag: &str, subject: &str, url: &str, at: DateTime<Utc>) -> Value {
    json!({
        "TYPE_ID": 6,
        "PROVIDER_ID": "REST_APP",
        "PROVIDER_TYPE_ID": "SITE",
        "SUBJECT": format!("{tag} {subject}"),
        "DESCRIPTION": url,
        "START_TIME": bitrix_time(at),
        "COMPLETED": "Y",
    })
}

fn call(incoming: bool, at: DateTime<Utc>) -> Value {
    json!({
        "TYPE_ID": 2,
        "SUBJECT": if incoming { "Входящий звонок" } else { "Исходящий звонок" },
        "DIRECTION": if incoming { 1 } else { 2 },
        "START_TIME": bitrix_time(at),
        "COMPLETED": "Y",
    })
}

fn meeting(at: DateTime<Utc>) -> Value {
    json!({"TYPE_ID": 1, "SUBJECT": "Встреча: презентация", "START_TIME": bitrix_time(at), "COMPLETED": "Y"})
}

pub fn seed_leads(now: DateTime<Utc>) -> Vec<SeedLead> {
    let days = |d: i64| now - chrono::Duration::days(d);
    let hours = |h: i64| now - chrono::Duration::hours(h);
    let demo = |at| web("[demo]", "Заявка на демо", "https://example.ru/demo", at);
    let price = |at| {
        web(
            "[download]",
            "Прайс-лист 2026",
            "https://example.ru/files/price-2026.pdf",
            at,
        )
    };
    let pricing = |at| web("[page]", "Цены", "https://example.ru/pricing", at);
    let blog = |at| web("[page]", "Блог", "https://example.ru/blog/crm-tips", at);
    let careers = |at| web("[page]", "Вакансии", "https://example.ru/careers", at);
    let open = |at| web("[email_open]", "Рассылка ноября", "", at);
    vec![
        // Crosses 70 in phase 2: strong fit, then a demo request and a price list.
        SeedLead {
            fields: lead(
                "Анна",
                "Смирнова",
                "Генеральный директор",
                "ООО «СеверЛогистик»",
                "a.smirnova@severlog.ru",
                "Логистика",
                Some(800_000_000),
                Some(240),
                "Москва",
                3,
            ),
            later: vec![pricing(hours(3)), demo(hours(1)), price(hours(1))],
        },
        SeedLead {
            fields: lead(
                "Игорь",
                "Петров",
                "Коммерческий директор",
                "АО «УралСталь»",
                "petrov@uralsteel.ru",
                "Производство",
                Some(2_500_000_000),
                Some(450),
                "Екатеринбург",
                3,
            ),
            later: vec![call(true, hours(5)), meeting(days(2))],
        },
        SeedLead {
            fields: lead(
                "Мария",
                "Кузнецова",
                "Менеджер по закупкам",
                "ТД «Опт-Маркет»",
                "m.kuznetsova@optmarket.ru",
                "Оптовая торговля",
                Some(120_000_000),
                Some(60),
                "Казань",
                4,
            ),
            later: vec![price(days(1)), open(days(2)), open(days(1))],
        },
        SeedLead {
            fields: lead(
                "Дмитрий",
                "Волков",
                "Студент",
                "",
                "dima.volkov@gmail.com",
                "",
                None,
                None,
                "",
                4,
            ),
            later: vec![careers(hours(2)), blog(days(3))],
        },
        SeedLead {
            fields: lead(
                "Елена",
                "Соколова",
                "Директор по развитию",
                "ООО «СтройИнвест»",
                "sokolova@stroyinvest.ru",
                "Строительство",
                Some(600_000_000),
                Some(180),
                "Санкт-Петербург",
                3,
            ),
            later: vec![demo(days(10)), meeting(days(3))],
        },
        SeedLead {
            fields: lead(
                "Алексей",
                "Морозов",
                "Owner",
                "Morozov Coffee",
                "alexey@gmail.com",
                "Общепит",
                Some(15_000_000),
                Some(12),
                "Тверь",
                5,
            ),
            later: vec![pricing(hours(6))],
        },
        SeedLead {
            fields: lead(
                "Ольга",
                "Новикова",
                "Head of IT",
                "Ритейл Групп",
                "o.novikova@retailgroup.ru",
                "Ритейл",
                Some(4_000_000_000),
                Some(1200),
                "Москва",
                5,
            ),
            later: vec![blog(days(1)), blog(days(2)), blog(days(4)), open(hours(8))],
        },
        SeedLead {
            fields: lead(
                "Сергей",
                "Лебедев",
                "Менеджер",
                "ИП Лебедев",
                "lebedev@mail.ru",
                "Услуги",
                None,
                Some(3),
                "Новосибирск",
                4,
            ),
            later: vec![],
        },
        SeedLead {
            fields: lead(
                "Наталья",
                "Козлова",
                "Финансовый директор",
                "ООО «АгроТех»",
                "kozlova@agrotech.ru",
                "Сельское хозяйство",
                Some(350_000_000),
                Some(310),
                "Краснодар",
                3,
            ),
            later: vec![call(true, days(1))],
        },
        SeedLead {
            fields: lead(
                "Павел",
                "Егоров",
                "CEO",
                "Cloudify",
                "pavel@cloudify.io",
                "IT",
                Some(90_000_000),
                Some(45),
                "Москва",
                5,
            ),
            later: vec![demo(hours(2)), pricing(hours(2))],
        },
        SeedLead {
            fields: lead(
                "Татьяна",
                "Орлова",
                "Бухгалтер",
                "ООО «Ромашка»",
                "orlova@yandex.ru",
                "",
                None,
                None,
                "Москва",
                4,
            ),
            later: vec![careers(days(1))],
        },
        SeedLead {
            fields: lead(
                "Виктор",
                "Андреев",
                "Руководитель отдела логистики",
                "ТК «Магистраль»",
                "andreev@magistral-tk.ru",
                "Логистика",
                Some(1_100_000_000),
                Some(520),
                "Новосибирск",
                3,
            ),
            later: vec![open(days(1)), price(days(4))],
        },
        SeedLead {
            fields: lead(
                "Юлия",
                "Захарова",
                "Маркетолог",
                "Studio Z",
                "julia@studioz.ru",
                "Реклама",
                Some(20_000_000),
                Some(8),
                "Санкт-Петербург",
                5,
            ),
            later: vec![blog(hours(4)), blog(days(1))],
        },
        SeedLead {
            fields: lead(
                "Константин",
                "Белов",
                "Директор",
                "ООО «ТехноПарк»",
                "belov@technopark.ru",
                "Производство",
                None,
                Some(150),
                "Татарстан",
                3,
            ),
            later: vec![],
        },
        SeedLead {
            fields: lead(
                "Ирина",
                "Медведева",
                "Менеджер проектов",
                "ГК «Город»",
                "medvedeva@gorod-gk.ru",
                "Строительство",
                Some(5_000_000_000),
                Some(2000),
                "Москва",
                4,
            ),
            later: vec![meeting(days(20))],
        },
        SeedLead {
            fields: lead(
                "Артём",
                "Никитин",
                "Основатель",
                "Nikitin Labs",
                "artem@nikitinlabs.ru",
                "IT",
                Some(40_000_000),
                Some(25),
                "Казань",
                5,
            ),
            later: vec![pricing(days(2)), call(true, days(2))],
        },
        SeedLead {
            fields: lead(
                "Светлана",
                "Фёдорова",
                "Офис-менеджер",
                "ООО «Деловые линии»",
                "fedorova@inbox.ru",
                "Логистика",
                None,
                Some(90),
                "Москва",
                4,
            ),
            later: vec![open(days(3))],
        },
        SeedLead {
            fields: lead(
                "Роман",
                "Алексеев",
                "Директор по закупкам",
                "ООО «ФудСнаб»",
                "alekseev@foodsnab.ru",
                "Оптовая торговля",
                Some(700_000_000),
                Some(130),
                "Ленинградская область",
                3,
            ),
            later: vec![price(hours(20))],
        },
        SeedLead {
            fields: lead(
                "Екатерина",
                "Степанова",
                "",
                "",
                "kate.stepanova@gmail.com",
                "",
                None,
                None,
                "",
                5,
            ),
            later: vec![blog(hours(1))],
        },
        SeedLead {
            fields: lead(
                "Николай",
                "Яковлев",
                "Генеральный директор",
                "ООО «Яковлев и партнёры»",
                "yakovlev@yp-law.ru",
                "Юридические услуги",
                Some(60_000_000),
                Some(35),
                "Москва",
                3,
            ),
            later: vec![],
        },
    ]
}
