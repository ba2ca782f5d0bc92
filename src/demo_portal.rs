//! A sandbox portal with a daemon of its own, for the demo's later scenes (the deal
//! funnel, the website): each scene starts from a fresh portal so its request counts
//! and its config (deals only, tracking) stand alone, set up the way an admin would:
//! config file, `setup`, outgoing webhooks bound to the daemon.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};

use crate::app::{self, Running};
use crate::config::{self, Config};
use crate::crm::FieldSetup;
use crate::demo::{demo_config_text, random_token, settle, PORTAL};
use crate::store::Store;

/// One scene's portal and daemon.
pub struct ScenePortal {
    pub sandbox: SandboxHandle,
    pub config: Config,
    pub store: Arc<Store>,
    pub running: Running,
    pub setup: FieldSetup,
    shutdown: CancellationToken,
}

/// How a scene's portal differs from the demo's.
pub struct Scene<'a> {
    /// Folder under the demo's data dir (its sled and config).
    pub name: &'a str,
    /// Bitrix24's simple CRM mode (no leads, only deals).
    pub simple_mode: bool,
    /// Edits of the demo's config text (sections added for the scene).
    pub edit: &'a dyn Fn(String) -> String,
    /// The outgoing-webhook events bound to the daemon.
    pub events: &'a [&'a str],
}

impl ScenePortal {
    /// Start the sandbox, write and load the scene's config, run `setup`, start the
    /// daemon and bind the events to it.
    pub async fn start(dir: &Path, scene: Scene<'_>) -> anyhow::Result<ScenePortal> {
        let sandbox = Sandbox::start(SandboxOptions::default())
            .await
            .context("cannot start the scene's sandbox")?;
        sandbox.set_simple_mode(scene.simple_mode);
        let token = random_token(32);
        let data_dir = dir.join(scene.name);
        std::fs::create_dir_all(&data_dir)?;
        let text = demo_config_text(&data_dir, sandbox.webhook_url().expose_secret(), &token)?;
        let text = (scene.edit)(text);
        let path = data_dir.join(format!("demo-{}.toml", scene.name));
        std::fs::write(&path, &text)?;
        let mut config: Config = config::load(&path)
            .map_err(|e| anyhow::anyhow!("the {} scene's config is invalid:\n{e}", scene.name))?;
        let store = app::open_store(&config)?;
        let portal = config.portals[0].clone();
        let setup = app::build_admin(&portal, &store)?
            .setup_fields(&portal.fields, &app::tier_pairs(&config))
            .await
            .with_context(|| format!("setup of the {} scene's portal failed", scene.name))?;
        config.portals[0].fields.tier_values = setup.tier_values.clone();
        if let Some(deal) = &setup.deal {
            config.portals[0].fields.deal.tier_values = deal.tier_values.clone();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let running =
            app::start_with_store(config.clone(), store.clone(), listener, shutdown.clone())
                .await?;
        let hook = format!("http://{}/webhooks/bitrix24/{PORTAL}", running.addr);
        for event in scene.events {
            sandbox.bind_event(event, &hook, SecretString::from(token.clone()));
        }
        Ok(ScenePortal {
            sandbox,
            config,
            store,
            running,
            setup,
            shutdown,
        })
    }

    /// Wait until every webhook is delivered and the daemon is idle.
    pub async fn settle(&self) -> anyhow::Result<()> {
        settle(
            &self.sandbox,
            &self.running.pipeline,
            Duration::from_secs(60),
        )
        .await
    }

    /// Stop the daemon (state flushed) and the sandbox.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let Running {
            pipeline, handle, ..
        } = self.running;
        drop(pipeline);
        handle.await.context("daemon task panicked")??;
        self.sandbox.shutdown().await;
        Ok(())
    }
}
