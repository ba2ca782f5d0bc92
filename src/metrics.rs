//! Prometheus metrics, one registry per running daemon (no globals, so tests can run
//! several daemons in one process). Each important log line has a counter beside it.

use std::fmt::Write as _;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of webhook counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub crm: String,
    pub portal: String,
    /// `queued`, `ignored`, `unknown_portal`, `malformed`, `unauthorized`, `queue_full`,
    /// `store`.
    pub outcome: String,
}

/// Labels keyed by portal and an outcome or tier.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortalLabels {
    pub portal: String,
    pub kind: String,
}

/// All metrics of one daemon.
pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub queue_depth: Gauge,
    pub dead_letters: Gauge,
    /// Seconds from a lead's first queued event to its processing.
    pub lead_latency: Histogram,
    /// Per portal: `written`, `unchanged`, `deleted`.
    pub leads: Family<PortalLabels, Counter>,
    /// Per portal and tier id: leads scored (each processing counts).
    pub scores: Family<PortalLabels, Counter>,
    /// Per portal: `created`, `recovered`.
    pub tasks: Family<PortalLabels, Counter>,
    /// Per portal and error class: `retry`, `dead_letter`.
    pub failures: Family<PortalLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("leadscore");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhooks received, by outcome",
            webhooks.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Leads and activities waiting in the queue",
            queue_depth.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letters",
            "Entries in the dead-letter queue",
            dead_letters.clone(),
        );
        let lead_latency = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "lead_latency_seconds",
            "Time from a lead's first queued event to its processing",
            lead_latency.clone(),
        );
        let leads = Family::<PortalLabels, Counter>::default();
        registry.register(
            "leads_processed",
            "Leads processed, by outcome",
            leads.clone(),
        );
        let scores = Family::<PortalLabels, Counter>::default();
        registry.register("scores", "Leads scored, by tier", scores.clone());
        let tasks = Family::<PortalLabels, Counter>::default();
        registry.register(
            "tasks",
            "Call-now tasks, created or recovered after a crash",
            tasks.clone(),
        );
        let failures = Family::<PortalLabels, Counter>::default();
        registry.register(
            "failures",
            "Processing failures, retried or dead-lettered",
            failures.clone(),
        );
        Metrics {
            registry,
            webhooks,
            queue_depth,
            dead_letters,
            lead_latency,
            leads,
            scores,
            tasks,
            failures,
        }
    }

    /// Count one event for a portal.
    pub fn inc(family: &Family<PortalLabels, Counter>, portal: &str, kind: &str) {
        family
            .get_or_create(&PortalLabels {
                portal: portal.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition, plus `extra` lines (CRM client counters that
    /// live in the integration crates).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // `encode` ends with "# EOF"; extra families go before it.
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            let mut s = stripped.to_string();
            let _ = writeln!(s, "{extra}# EOF");
            return s;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_families() {
        let m = Metrics::new();
        m.webhooks
            .get_or_create(&WebhookLabels {
                crm: "bitrix24".into(),
                portal: "main".into(),
                outcome: "queued".into(),
            })
            .inc();
        Metrics::inc(&m.tasks, "main", "created");
        m.queue_depth.set(3);
        let text = m.render("# TYPE leadscore_x counter\nleadscore_x_total 1\n");
        assert!(
            text.contains(
                r#"leadscore_webhooks_total{crm="bitrix24",portal="main",outcome="queued"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"leadscore_tasks_total{portal="main",kind="created"} 1"#),
            "{text}"
        );
        assert!(text.contains("leadscore_queue_depth 3"), "{text}");
        assert!(text.contains("leadscore_x_total 1\n# EOF"), "{text}");
    }
}
