//! The one-screen summary `leadscore check` prints: enough for an admin to see that
//! the daemon will do what they meant, without a single secret on screen.

use std::fmt::Write;

use super::{Config, Portal};

/// Longest list of rule ids shown per group before it is cut with "…".
const IDS_WIDTH: usize = 60;

/// Renders portals (CRM, sign-in kind, pacing, fields, task), rules per group with
/// caps, tiers, the call-now threshold and the warnings. Never prints a secret.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let s = &config.server;
    let _ = writeln!(out, "config   {}", config.path.display());
    let _ = write!(
        out,
        "server   listen {} · data {} · {} worker(s) · coalesce {} ms · sweep {} s · dashboard {}",
        s.listen,
        s.data_dir.display(),
        s.workers,
        s.coalesce_ms,
        s.sweep_interval_secs,
        if s.dashboard_token.is_some() {
            "token"
        } else {
            "loopback only"
        }
    );
    if !config.env_overrides.is_empty() {
        let _ = write!(out, " (from env: {})", config.env_overrides.join(", "));
    }
    out.push('\n');

    let _ = writeln!(out, "portals  {}", config.portals.len());
    let id_width = config
        .portals
        .iter()
        .map(|p| p.id.chars().count())
        .max()
        .unwrap_or(0);
    for p in &config.portals {
        portal_lines(&mut out, p, id_width);
    }

    let sc = &config.scoring;
    let _ = writeln!(
        out,
        "scoring  {} rule(s) in {} group(s) · total {}..{} · language {}",
        sc.rules.len(),
        sc.groups.len(),
        sc.min,
        sc.max,
        format!("{:?}", sc.language).to_lowercase()
    );
    let group_width = sc
        .groups
        .iter()
        .map(|g| g.id.chars().count())
        .max()
        .unwrap_or(0);
    for g in &sc.groups {
        let cap = match (g.min, g.max) {
            (Some(lo), Some(hi)) => format!("{lo}..{hi}"),
            (None, Some(hi)) => format!("max {hi}"),
            (Some(lo), None) => format!("min {lo}"),
            (None, None) => "no cap".into(),
        };
        let ids: Vec<&str> = sc
            .rules
            .iter()
            .filter(|r| r.group == g.id)
            .map(|r| r.id.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  {:group_width$}  {:<12} {} rule(s): {}",
            g.id,
            cap,
            ids.len(),
            clip(&ids.join(", "), IDS_WIDTH)
        );
    }

    let tiers: Vec<String> = sc
        .tiers
        .iter()
        .map(|t| format!("{} {}..{}", t.id, t.min, t.max))
        .collect();
    let _ = writeln!(out, "tiers    {}", tiers.join(" · "));
    let _ = writeln!(
        out,
        "call now when a score goes above {} (re-arm below {})",
        sc.triggers.call_now_above, sc.triggers.rearm_below
    );

    if config.warnings.is_empty() {
        out.push_str("warnings none\n");
    } else {
        let _ = writeln!(out, "warnings {}", config.warnings.len());
        for w in &config.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

fn portal_lines(out: &mut String, p: &Portal, id_width: usize) {
    let auth = match p.settings.base_url() {
        Some(url) => format!("{} {}", p.settings.auth_label(), url),
        None => p.settings.auth_label().to_string(),
    };
    let _ = writeln!(
        out,
        "  {:id_width$}  {:<8}  {} · {}/s burst {}",
        p.id, p.crm, auth, p.rate_limit.per_second, p.rate_limit.burst
    );
    let pad = " ".repeat(id_width + 4);
    let f = &p.fields;
    let mut fields = Vec::new();
    for (name, v) in [
        ("score", &f.score),
        ("tier", &f.tier),
        ("breakdown", &f.breakdown),
    ] {
        if let Some(v) = v {
            fields.push(format!("{name}={v}"));
        }
    }
    if f.comment {
        fields.push("comment".into());
    }
    if !f.map.is_empty() {
        fields.push(format!("{} mapped field(s)", f.map.len()));
    }
    let fields = if fields.is_empty() {
        "writes nothing back".to_string()
    } else {
        fields.join(" ")
    };
    let _ = writeln!(out, "{pad}fields: {fields}");
    let t = &p.task;
    if t.enabled {
        let _ = writeln!(
            out,
            "{pad}task: kind {}, above {} (re-arm below {}), deadline {} min, cool-down {} h",
            format!("{:?}", t.kind).to_lowercase(),
            p.threshold,
            p.rearm_below,
            t.deadline_minutes,
            t.cooldown_hours
        );
    } else {
        let _ = writeln!(out, "{pad}task: off");
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}
