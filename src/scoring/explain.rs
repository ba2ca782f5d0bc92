//! Human-readable explanations of a `Score`: one line for the CRM text field and a
//! table for the `leadscore explain` command.

use chrono::{DateTime, Utc};

use super::eval::age_days;
use super::{Entry, Evidence, Score};
use crate::scoring::spec::Language;

/// Longest explanation, in characters: it lands in a CRM string field, and reps read
/// the head of it anyway.
pub const MAX_EXPLANATION_CHARS: usize = 1000;

/// The minus sign (U+2212), not a hyphen: it reads better and does not wrap.
const MINUS: char = '\u{2212}';

/// Signed points, `+15` / `−5` / `0`.
fn signed(points: i32) -> String {
    match points.cmp(&0) {
        std::cmp::Ordering::Greater => format!("+{points}"),
        std::cmp::Ordering::Less => format!("{MINUS}{}", i64::from(points).abs()),
        std::cmp::Ordering::Equal => "0".to_string(),
    }
}

/// Plain signed number for tables (`-5`), where alignment beats typography.
fn plain_signed(points: i32) -> String {
    if points > 0 {
        format!("+{points}")
    } else {
        points.to_string()
    }
}

/// Russian plural form for a count: 1 день, 2 дня, 5 дней, 11 дней, 21 день.
fn ru_plural(n: i64, one: &'static str, few: &'static str, many: &'static str) -> &'static str {
    let n = n.abs();
    let (m10, m100) = (n % 10, n % 100);
    if m10 == 1 && m100 != 11 {
        one
    } else if (2..=4).contains(&m10) && !(12..=14).contains(&m100) {
        few
    } else {
        many
    }
}

/// "сегодня" / "2 дня назад" / "today" / "2 days ago".
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>, lang: Language) -> String {
    let days = age_days(at, now);
    match (lang, days) {
        (Language::Ru, 0) => "сегодня".to_string(),
        (Language::En, 0) => "today".to_string(),
        (Language::Ru, d) => format!("{d} {} назад", ru_plural(d, "день", "дня", "дней")),
        (Language::En, 1) => "1 day ago".to_string(),
        (Language::En, d) => format!("{d} days ago"),
    }
}

/// How an activity's time reads in an explanation: relative on a terminal ("2 дня
/// назад"), a date on the lead card ("28.11"), where a relative age would go stale the
/// day after it was written.
#[derive(Debug, Clone, Copy)]
enum When {
    Relative(DateTime<Utc>),
    Dated(chrono::FixedOffset, DateTime<Utc>),
}

const EN_MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// "28.11" / "28 Nov" in the card's offset; the year is added when it is not the
/// current one ("28.11.2025" / "28 Nov 2025").
pub fn date_of(
    at: DateTime<Utc>,
    offset: chrono::FixedOffset,
    now: DateTime<Utc>,
    lang: Language,
) -> String {
    use chrono::Datelike;
    let local = at.with_timezone(&offset);
    let this_year = local.year() == now.with_timezone(&offset).year();
    match (lang, this_year) {
        (Language::Ru, true) => format!("{:02}.{:02}", local.day(), local.month()),
        (Language::Ru, false) => {
            format!("{:02}.{:02}.{}", local.day(), local.month(), local.year())
        }
        (Language::En, true) => format!("{} {}", local.day(), EN_MONTHS[local.month0() as usize]),
        (Language::En, false) => format!(
            "{} {} {}",
            local.day(),
            EN_MONTHS[local.month0() as usize],
            local.year()
        ),
    }
}

impl When {
    fn say(self, at: DateTime<Utc>, lang: Language) -> String {
        match self {
            When::Relative(now) => ago(at, now, lang),
            When::Dated(offset, now) => date_of(at, offset, now, lang),
        }
    }
}

/// How a field is called in explanations.
pub fn field_label(field: &str, lang: Language) -> &str {
    let (ru, en) = match field {
        "name" => ("имя", "name"),
        "position" => ("должность", "job title"),
        "email" => ("e-mail", "e-mail"),
        "phone" => ("телефон", "phone"),
        "company" => ("компания", "company"),
        "industry" => ("отрасль", "industry"),
        "revenue" => ("выручка", "revenue"),
        "employees" => ("численность", "headcount"),
        "region" => ("регион", "region"),
        "source" => ("источник", "source"),
        "status" => ("статус", "status"),
        "responsible_id" => ("ответственный", "responsible"),
        other => {
            let custom = other.strip_prefix("custom.").unwrap_or(other);
            return custom;
        }
    };
    match lang {
        Language::Ru => ru,
        Language::En => en,
    }
}

/// Whether a field's value is shown in the one-line explanation. Contact details and
/// ids are left out: the line is visible to everyone who opens the lead, and the rule's
/// label already says what matched ("бесплатный почтовый домен").
fn shows_value(field: &str) -> bool {
    !matches!(field, "name" | "email" | "phone" | "responsible_id" | "")
}

fn quoted(value: &str, lang: Language) -> String {
    match lang {
        Language::Ru => format!("«{value}»"),
        Language::En => format!("\"{value}\""),
    }
}

/// `850000000` → `850 000 000` (narrow no-break spaces, as Russian typography groups
/// digits); short numbers and non-integers are left alone.
fn group_digits(value: &str) -> String {
    let (sign, digits) = match value.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", value),
    };
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return value.to_string();
    }
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202F}');
        }
        out.push(c);
    }
    out
}

fn is_number(value: &str) -> bool {
    value.parse::<f64>().is_ok()
}

fn capped_note(lang: Language) -> &'static str {
    match lang {
        Language::Ru => "лимит группы",
        Language::En => "group cap",
    }
}

/// One entry as a phrase: `+15 должность «Генеральный директор»`,
/// `+20 запрос демо (2 дня назад)`, `+6 чтение блога ×3 (сегодня)`.
fn phrase(e: &Entry, lang: Language, when: When) -> String {
    let mut s = format!("{} {}", signed(e.points), e.label);
    match &e.evidence {
        Evidence::Field { field, value } => {
            if shows_value(field) && !value.is_empty() {
                s.push(' ');
                if is_number(value) {
                    s.push_str(&format!("({})", group_digits(value)));
                } else {
                    s.push_str(&quoted(value, lang));
                }
            }
            if e.capped {
                s.push_str(&format!(" ({})", capped_note(lang)));
            }
        }
        Evidence::Spike {
            recent,
            recent_days,
            baseline_per_day,
            newest,
        } => {
            s.push_str(&format!(
                ": {}",
                spike_words(*recent, *recent_days, *baseline_per_day, lang)
            ));
            s.push_str(&format!(" ({}", when.say(*newest, lang)));
            if e.capped {
                s.push_str(&format!("; {}", capped_note(lang)));
            }
            s.push(')');
        }
        Evidence::Intent { kind, subject, at } => {
            s.push_str(&format!(": {}", event_name(kind, subject.as_deref(), lang)));
            match when {
                When::Dated(..) => s.push_str(&format!(" {}", when.say(*at, lang))),
                When::Relative(_) => s.push_str(&format!(" ({})", when.say(*at, lang))),
            }
            if e.capped {
                s.push_str(&format!(" ({})", capped_note(lang)));
            }
        }
        Evidence::Group {
            people,
            company,
            window_days,
        } => {
            s.push_str(&format!(
                ": {}",
                group_words(*people, company, *window_days, lang)
            ));
            if e.capped {
                s.push_str(&format!(" ({})", capped_note(lang)));
            }
        }
        Evidence::Activities { count, newest, .. } => {
            if *count > 1 {
                s.push_str(&format!(" ×{count}"));
            }
            s.push_str(&format!(" ({}", when.say(*newest, lang)));
            if e.capped {
                s.push_str(&format!("; {}", capped_note(lang)));
            }
            s.push(')');
        }
    }
    s
}

/// Distinct gap fields, in order of first appearance.
fn gap_fields(score: &Score) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for g in &score.gaps {
        if !out.contains(&g.field.as_str()) {
            out.push(&g.field);
        }
    }
    out
}

impl Score {
    /// The one-line explanation reps read on the lead card, e.g.
    /// `75 — горячий: +15 должность «Генеральный директор»; +20 запрос демо (2 дня назад);
    /// −5 бесплатный почтовый домен; нет данных: отрасль`. Entries that ended at 0 are
    /// left out. At most [`MAX_EXPLANATION_CHARS`] characters: the tail is replaced by
    /// `… (ещё N)` / `… (N more)`.
    pub fn explain(&self, lang: Language, now: DateTime<Utc>) -> String {
        self.explain_with(lang, When::Relative(now))
    }

    /// The explanation as written to the CRM: the same line with dates instead of ages
    /// (`+20 запрос демо (28.11)`), so a card read a week later is still true and the
    /// text changes only when the score's reasons do.
    pub fn explain_dated(
        &self,
        lang: Language,
        offset: chrono::FixedOffset,
        now: DateTime<Utc>,
    ) -> String {
        self.explain_with(lang, When::Dated(offset, now))
    }

    fn explain_with(&self, lang: Language, when: When) -> String {
        let head = format!("{} — {}", self.total, self.tier_label);
        // Qualification first: the tail is what gives way when the line is too long.
        let mut parts: Vec<String> = self
            .qualification
            .iter()
            .map(|q| q.phrase(lang))
            .chain(
                self.breakdown
                    .iter()
                    .filter(|e| e.points != 0)
                    .map(|e| phrase(e, lang, when)),
            )
            .collect();
        let gaps = gap_fields(self);
        if !gaps.is_empty() {
            let names: Vec<&str> = gaps.iter().map(|f| field_label(f, lang)).collect();
            let prefix = match lang {
                Language::Ru => "нет данных: ",
                Language::En => "no data: ",
            };
            parts.push(format!("{prefix}{}", names.join(", ")));
        }
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        let join = |parts: &[String]| {
            if parts.is_empty() {
                head.clone()
            } else {
                format!("{head}: {}", parts.join("; "))
            }
        };
        let full = one_line(&join(&parts));
        if full.chars().count() <= MAX_EXPLANATION_CHARS {
            return full;
        }
        // Drop parts from the tail until the line plus the "… (N more)" note fits.
        let total_parts = parts.len();
        for keep in (0..total_parts).rev() {
            let dropped = total_parts - keep;
            let note = match lang {
                Language::Ru => format!("… (ещё {dropped})"),
                Language::En => format!("… ({dropped} more)"),
            };
            let mut line = one_line(&join(&parts[..keep]));
            line.push_str(if keep == 0 { ": " } else { "; " });
            line.push_str(&note);
            if line.chars().count() <= MAX_EXPLANATION_CHARS {
                return line;
            }
        }
        // Even the head is too long (an absurd tier label): cut by characters.
        let mut cut: String = full.chars().take(MAX_EXPLANATION_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// "9 за 2 дн. при обычных 0,5 в день" / "9 in 2 days vs 0.5 a day usually".
fn spike_words(recent: u32, days: f64, per_day: f64, lang: Language) -> String {
    let num = |x: f64| {
        let t = format!("{:.1}", x);
        let t = t.trim_end_matches('0').trim_end_matches('.').to_string();
        match lang {
            Language::Ru => t.replace('.', ","),
            Language::En => t,
        }
    };
    match lang {
        Language::Ru => format!(
            "{recent} за {} дн. при обычных {} в день",
            num(days),
            num(per_day)
        ),
        Language::En => format!(
            "{recent} in {} days vs {} a day usually",
            num(days),
            num(per_day)
        ),
    }
}

/// What a high-intent event is called on the card: its subject (or URL) when it has
/// one, since that is what the rep recognises ("Запрос демо"), else its kind's name.
fn event_name(kind: &str, subject: Option<&str>, lang: Language) -> String {
    const LONGEST: usize = 60;
    if let Some(s) = subject.map(str::trim).filter(|s| !s.is_empty()) {
        if s.chars().count() <= LONGEST {
            return s.to_string();
        }
        let mut cut: String = s.chars().take(LONGEST - 1).collect();
        cut.push('…');
        return cut;
    }
    let (ru, en) = match kind {
        "call" => ("звонок", "call"),
        "email" => ("письмо", "e-mail"),
        "email_open" => ("открытие письма", "e-mail open"),
        "meeting" => ("встреча", "meeting"),
        "form" => ("заявка с сайта", "web form"),
        "page_view" => ("просмотр страницы", "page view"),
        "download" => ("скачивание", "download"),
        "demo_request" => ("запрос демо", "demo request"),
        "task" => ("задача", "task"),
        "comment" => ("комментарий", "comment"),
        other => return other.replace('_', " "),
    };
    match lang {
        Language::Ru => ru.to_string(),
        Language::En => en.to_string(),
    }
}

/// "3 сотрудника «Ромашка» за 7 дней" / "3 people of "Romashka" in 7 days".
fn group_words(people: u32, company: &str, days: f64, lang: Language) -> String {
    let n = i64::from(people);
    let whole = days.fract() == 0.0;
    let d = if whole {
        format!("{}", days as i64)
    } else {
        format!("{days}")
    };
    match lang {
        Language::Ru => {
            let unit = if whole {
                ru_plural(days as i64, "день", "дня", "дней")
            } else {
                "дня"
            };
            format!(
                "{people} {} {} за {} {unit}",
                ru_plural(n, "сотрудник", "сотрудника", "сотрудников"),
                quoted(company, lang),
                d.replace('.', ",")
            )
        }
        Language::En => format!(
            "{people} people of {} in {d} day{}",
            quoted(company, lang),
            if days == 1.0 { "" } else { "s" }
        ),
    }
}

fn evidence_cell(e: &Entry, lang: Language, now: DateTime<Utc>) -> String {
    match &e.evidence {
        Evidence::Group {
            people,
            company,
            window_days,
        } => group_words(*people, company, *window_days, lang),
        Evidence::Intent { kind, subject, at } => format!(
            "{} ({})",
            event_name(kind, subject.as_deref(), lang),
            ago(*at, now, lang)
        ),
        Evidence::Spike {
            recent,
            recent_days,
            baseline_per_day,
            ..
        } => spike_words(*recent, *recent_days, *baseline_per_day, lang),
        Evidence::Field { field, value } if field.is_empty() => value.clone(),
        Evidence::Field { field, value } if value.is_empty() => match lang {
            Language::Ru => format!("{field}: нет значения"),
            Language::En => format!("{field}: no value"),
        },
        Evidence::Field { field, value } => format!("{field} = {value}"),
        Evidence::Activities {
            count,
            newest,
            oldest,
        } => {
            let (newest, oldest) = (ago(*newest, now, lang), ago(*oldest, now, lang));
            match lang {
                Language::Ru if *count == 1 => format!("1× ({newest})"),
                Language::Ru => format!("{count}× (последнее {newest}, первое {oldest})"),
                Language::En if *count == 1 => format!("1× ({newest})"),
                Language::En => format!("{count}× (newest {newest}, oldest {oldest})"),
            }
        }
    }
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(n)));
    out
}

fn pad_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    let mut out: String = std::iter::repeat_n(' ', width.saturating_sub(n)).collect();
    out.push_str(s);
    out
}

/// A plain-text table for `leadscore explain`: one row per entry (rule, group, points,
/// points before cap/decay, evidence), then group subtotals, the total, the tier and the
/// data gaps.
pub fn render_table(score: &Score, lang: Language, now: DateTime<Utc>) -> String {
    let ru = lang == Language::Ru;
    let headers = if ru {
        [
            "Правило",
            "Группа",
            "Баллы",
            "До лимита/затухания",
            "Основание",
        ]
    } else {
        ["Rule", "Group", "Points", "Before cap/decay", "Evidence"]
    };
    let mut rows: Vec<[String; 5]> = Vec::new();
    for e in &score.breakdown {
        let mut marks = Vec::new();
        if e.capped {
            marks.push(if ru { "лимит" } else { "capped" });
        }
        if e.decayed {
            marks.push(if ru { "затухание" } else { "decayed" });
        }
        let before = if marks.is_empty() {
            plain_signed(e.raw_points)
        } else {
            format!("{} ({})", plain_signed(e.raw_points), marks.join(", "))
        };
        rows.push([
            format!("{} ({})", e.rule_id, e.label),
            e.group.clone(),
            plain_signed(e.points),
            before,
            evidence_cell(e, lang, now),
        ]);
    }
    let mut widths = headers.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i == 2 || i == 3 {
                s.push_str(&pad_left(c, widths[i]));
            } else if i == 4 {
                s.push_str(c);
            } else {
                s.push_str(&pad(c, widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(headers));
    out.push('\n');
    let rule_len: usize = widths.iter().sum::<usize>() + 8;
    out.push_str(&"-".repeat(rule_len));
    out.push('\n');
    if rows.is_empty() {
        out.push_str(if ru {
            "(ни одно правило не сработало)\n"
        } else {
            "(no rule fired)\n"
        });
    }
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        out.push('\n');
    }
    out.push('\n');
    for g in &score.groups {
        let cap = if g.capped {
            if ru {
                format!(" (до лимита {})", plain_signed(g.raw_points))
            } else {
                format!(" (before cap {})", plain_signed(g.raw_points))
            }
        } else {
            String::new()
        };
        let name = if ru { "Группа" } else { "Group" };
        out.push_str(&format!(
            "{name} {} ({}): {}{cap}\n",
            g.id,
            g.label,
            plain_signed(g.points)
        ));
    }
    let clamp_note = if score.unclamped != score.total {
        if ru {
            format!(" (до ограничения шкалой {})", score.unclamped)
        } else {
            format!(" (before clamping {})", score.unclamped)
        }
    } else {
        String::new()
    };
    if ru {
        out.push_str(&format!("Итого: {}{clamp_note}\n", score.total));
        out.push_str(&format!(
            "Категория: {} ({})\n",
            score.tier_label, score.tier
        ));
    } else {
        out.push_str(&format!("Total: {}{clamp_note}\n", score.total));
        out.push_str(&format!("Tier: {} ({})\n", score.tier_label, score.tier));
    }
    if let Some(q) = &score.qualification {
        let title = if ru {
            "Квалификация"
        } else {
            "Qualification"
        };
        out.push_str(&format!("{title} {}: {}\n", q.formula, q.phrase(lang)));
    }
    // One item per field, with the rules that wanted it: `отрасль [industry_target]`.
    let mut gaps: Vec<(&str, Vec<&str>)> = Vec::new();
    for g in &score.gaps {
        match gaps.iter_mut().find(|(f, _)| *f == g.field) {
            Some((_, rules)) => rules.push(&g.rule_id),
            None => gaps.push((&g.field, vec![&g.rule_id])),
        }
    }
    let gaps: Vec<String> = gaps
        .iter()
        .map(|(f, rules)| format!("{} [{}]", field_label(f, lang), rules.join(", ")))
        .collect();
    let none = if ru { "нет" } else { "none" };
    let title = if ru {
        "Нет данных"
    } else {
        "Data gaps"
    };
    out.push_str(&format!(
        "{title}: {}\n",
        if gaps.is_empty() {
            none.to_string()
        } else {
            gaps.join(", ")
        }
    ));
    out
}
