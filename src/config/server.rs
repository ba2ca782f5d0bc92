//! `[server]`: defaults, then the file, then `LEADSCORE_*` environment overrides.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::credentials::Credential;
use super::load::{Ctx, ENV_DATA_DIR, ENV_LISTEN, ENV_WORKERS};
use super::schema::ServerSection;
use super::Server;

impl Ctx<'_> {
    pub(super) fn server(&mut self) -> (Option<Server>, Vec<String>) {
        let section = if self.node("server").is_some() {
            self.de::<ServerSection>("server")
        } else {
            Some(ServerSection::default())
        };
        let mut overrides = Vec::new();
        let mut listen_from_env = false;
        let mut workers_bad_env = false;
        let Some(mut s) = section else {
            return (None, overrides);
        };
        if s.data_dir.is_relative() && !s.data_dir.as_os_str().is_empty() {
            s.data_dir = self.base_dir.join(&s.data_dir);
        }

        if let Some(v) = self.env_override(ENV_LISTEN) {
            s.listen = v;
            listen_from_env = true;
            overrides.push(ENV_LISTEN.to_string());
        }
        if let Some(v) = self.env_override(ENV_DATA_DIR) {
            s.data_dir = PathBuf::from(v);
            overrides.push(ENV_DATA_DIR.to_string());
        }
        if let Some(v) = self.env_override(ENV_WORKERS) {
            match v.trim().parse::<usize>() {
                Ok(n) => {
                    s.workers = n;
                    overrides.push(ENV_WORKERS.to_string());
                }
                Err(_) => {
                    workers_bad_env = true;
                    self.error(
                        "server.workers",
                        format!("{ENV_WORKERS}=`{v}` is not a whole number"),
                    );
                }
            }
        }

        let listen = match s.listen.parse::<SocketAddr>() {
            Ok(_) => true,
            Err(_) => {
                let from = if listen_from_env {
                    format!(" (from {ENV_LISTEN})")
                } else {
                    String::new()
                };
                self.error(
                    "server.listen",
                    format!(
                        "`{}`{from} is not a socket address: write IP:PORT, e.g. 127.0.0.1:8088 or [::]:8088",
                        s.listen
                    ),
                );
                false
            }
        };
        if s.workers == 0 && !workers_bad_env {
            self.error("server.workers", "must be at least 1");
        }
        if s.data_dir.as_os_str().is_empty() {
            self.error("server.data_dir", "must not be empty");
        }
        if s.sweep_interval_secs == 0 {
            self.error("server.sweep_interval_secs", "must be at least 1");
        }
        if s.max_body_bytes == 0 {
            self.error("server.max_body_bytes", "must be at least 1");
        }
        if s.queue_limit == 0 {
            self.error("server.queue_limit", "must be at least 1");
        }
        for (key, value) in [
            ("max_connections", s.max_connections as u64),
            ("header_read_timeout_secs", s.header_read_timeout_secs),
            ("body_read_timeout_secs", s.body_read_timeout_secs),
        ] {
            if value == 0 {
                self.error(&format!("server.{key}"), "must be at least 1");
            }
        }
        if s.keep_alive_timeout_secs > s.header_read_timeout_secs {
            self.warn(
                "server.keep_alive_timeout_secs",
                format!(
                    "longer than header_read_timeout_secs ({} s), which also runs while a kept-alive connection waits: idle connections close after {} s",
                    s.header_read_timeout_secs, s.header_read_timeout_secs
                ),
            );
        }
        if s.retry_delays_secs.is_empty() {
            self.warn(
                "server.retry_delays_secs",
                "empty: a lead that fails once goes straight to the dead-letter list",
            );
        }
        if s.coalesce_ms > s.sweep_interval_secs.saturating_mul(1000) && s.sweep_interval_secs > 0 {
            self.warn(
                "server.coalesce_ms",
                format!(
                    "the coalesce window ({} ms) is longer than the sweep interval ({} s): the sweep will find leads still waiting to be coalesced",
                    s.coalesce_ms, s.sweep_interval_secs
                ),
            );
        }
        let token = self.credential(
            "server",
            "dashboard_token",
            s.dashboard_token.as_ref(),
            s.dashboard_token_env.as_deref(),
            s.dashboard_token_file.as_deref(),
        );
        let dashboard_token = match token {
            Credential::Failed => return (None, overrides),
            Credential::Unresolved => None,
            other => other.value(),
        };
        if !listen {
            return (None, overrides);
        }
        (
            Some(Server {
                listen: s.listen,
                data_dir: s.data_dir,
                workers: s.workers,
                coalesce_ms: s.coalesce_ms,
                sweep_interval_secs: s.sweep_interval_secs,
                max_body_bytes: s.max_body_bytes,
                queue_limit: s.queue_limit,
                retry_delays_secs: s.retry_delays_secs,
                hot_wait_warn_secs: s.hot_wait_warn_secs,
                rescore_on_reload: s.rescore_on_reload,
                max_connections: s.max_connections,
                header_read_timeout_secs: s.header_read_timeout_secs,
                body_read_timeout_secs: s.body_read_timeout_secs,
                keep_alive_timeout_secs: s.keep_alive_timeout_secs,
                shadow_model: s.shadow_model,
                dashboard_token,
            }),
            overrides,
        )
    }

    /// An override variable's value; empty counts as unset so `VAR=` in a unit file
    /// does not wipe a setting.
    pub(super) fn env_override(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }
}
