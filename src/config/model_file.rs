//! Model files: a TOML file holding only a `[scoring]` section, named by
//! `server.shadow_model` (scored beside the live model, never written) or by a
//! portal's `model` (that portal's live model). They are checked like the main file's
//! `[scoring]`, with errors pointing into the model file, so an admin can try a new
//! model on real traffic, or give one company's products their own model, without
//! touching the rest of the config.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::load::Ctx;
use super::locate::{format_path, Locator, Seg};
use crate::scoring::spec::ScoringSpec;
use crate::scoring::Model;

impl Ctx<'_> {
    /// Read and check the model file `rel` (relative to the config's directory) named
    /// at `key_path`. Every mistake in it is recorded with the model file's name, line
    /// and column; `None` when there was any.
    pub(super) fn model_file(
        &mut self,
        key_path: &str,
        rel: &Path,
    ) -> Option<(ScoringSpec, Model)> {
        let path = self.base_dir.join(rel);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    key_path,
                    format!("cannot read the model file {}: {e}", path.display()),
                );
                return None;
            }
        };
        let label = path.display().to_string();
        let (root, syntax) = DeTable::parse_recoverable(&text);
        let mut sub = Ctx {
            file: &label,
            loc: Locator::new(&text, root),
            base_dir: self.base_dir,
            env: self.env,
            secrets: self.secrets,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let mut found = None;
        if syntax.is_empty() {
            sub.only_scoring();
            let spec = sub.scoring();
            let model = spec.as_ref().and_then(|s| sub.compile(s));
            if let Some(s) = &spec {
                sub.check_triggers(s);
            }
            found = spec.zip(model);
        } else {
            for e in syntax {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                sub.error_at_offset("syntax".into(), offset, e.message().to_string());
            }
        }
        let failed = !sub.errors.is_empty();
        self.errors.append(&mut sub.errors);
        self.warnings.append(&mut sub.warnings);
        if failed {
            None
        } else {
            found
        }
    }

    /// A model file holds `[scoring]` and nothing else.
    fn only_scoring(&mut self) {
        let keys: Vec<String> = match self.loc.root().get_ref() {
            DeValue::Table(t) => t.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        };
        for k in keys.into_iter().filter(|k| k != "scoring") {
            self.error(
                &format_path(&[Seg::Key(k.clone())]),
                format!("unknown key `{k}` (a model file has only a [scoring] section)"),
            );
        }
    }
}
