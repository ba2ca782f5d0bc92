//! Credentials: given inline, as `<key>_env = "VAR"` or as `<key>_file = "/path"`
//! (systemd credentials), exactly one form, resolved into a `SecretString` whose value
//! never appears in a message.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::load::{Ctx, Secrets};

/// Are two optional secrets the same? (Compared, never printed: reloads use it to tell
/// a changed credential from an unchanged one.)
pub fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

/// A credential after resolution.
pub enum Credential {
    /// None of its three forms was given.
    Absent,
    /// Given, but unusable; the error is already recorded.
    Failed,
    /// Given, but its variable or file is not available and `Secrets::Optional`
    /// allows that; the warning is recorded.
    Unresolved,
    Value(SecretString),
}

impl Credential {
    /// Was any of its three forms given?
    pub fn given(&self) -> bool {
        !matches!(self, Credential::Absent)
    }
    /// The secret; an empty placeholder when unresolved.
    pub fn value(self) -> Option<SecretString> {
        match self {
            Credential::Value(v) => Some(v),
            Credential::Unresolved => Some(SecretString::from(String::new())),
            Credential::Absent | Credential::Failed => None,
        }
    }
    /// Did it resolve to a real value (not a `Secrets::Optional` placeholder)?
    pub fn is_resolved(&self) -> bool {
        matches!(self, Credential::Value(_))
    }
}

impl Ctx<'_> {
    /// Resolves one credential given inline, as `NAME_env` or as `NAME_file`;
    /// exactly one form may be used.
    pub(super) fn credential(
        &mut self,
        base: &str,
        name: &str,
        inline: Option<&SecretString>,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Credential {
        let env_key = format!("{name}_env");
        let file_key = format!("{name}_file");
        let given: Vec<&str> = [
            (name, inline.is_some()),
            (env_key.as_str(), env.is_some()),
            (file_key.as_str(), file.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| *k)
        .collect();
        if given.len() > 1 {
            let list = given
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.error(
                &format!("{base}.{}", given[1]),
                format!("{list} both given: use exactly one form of `{name}`"),
            );
            return Credential::Failed;
        }
        if let Some(secret) = inline {
            let path = format!("{base}.{name}");
            if secret.expose_secret().is_empty() {
                self.error(&path, "is empty");
                return Credential::Failed;
            }
            self.warn(
                &path,
                format!(
                    "secret written in the file: prefer `{env_key}` or `{file_key}` (e.g. a systemd credential) so the file can be shared and committed"
                ),
            );
            return Credential::Value(secret.clone());
        }
        if let Some(var) = env {
            let path = format!("{base}.{env_key}");
            if !plausible_env_name(var) {
                // Often the secret itself pasted in place of the variable's name:
                // never echo it.
                self.error(
                    &path,
                    "is not an environment variable name: write the NAME of the variable that holds the secret (the value is not shown)",
                );
                return Credential::Failed;
            }
            return match (self.env)(var) {
                None => {
                    let message = format!("environment variable `{var}` is not set");
                    self.unavailable(&path, message)
                }
                Some(v) if v.is_empty() => {
                    self.error(&path, format!("environment variable `{var}` is empty"));
                    Credential::Failed
                }
                Some(v) => Credential::Value(SecretString::from(v)),
            };
        }
        if let Some(file) = file {
            let path = format!("{base}.{file_key}");
            if !plausible_file_name(file) {
                self.error(
                    &path,
                    "is not a file path: write the path of the file that holds the secret (the value is not shown)",
                );
                return Credential::Failed;
            }
            let full = if file.is_relative() {
                self.base_dir.join(file)
            } else {
                file.to_path_buf()
            };
            return match std::fs::read_to_string(&full) {
                Err(e) => {
                    let message = format!("cannot read `{}`: {e}", full.display());
                    self.unavailable(&path, message)
                }
                Ok(mut text) => {
                    if text.ends_with('\n') {
                        text.pop();
                        if text.ends_with('\r') {
                            text.pop();
                        }
                    }
                    if text.is_empty() {
                        self.error(&path, format!("`{}` is empty", full.display()));
                        return Credential::Failed;
                    }
                    self.warn_if_shared(&path, &full);
                    Credential::Value(SecretString::from(text))
                }
            };
        }
        Credential::Absent
    }

    /// A credential's variable or file is missing: an error, or with
    /// `Secrets::Optional` a warning and an unresolved credential.
    pub(super) fn unavailable(&mut self, path: &str, message: String) -> Credential {
        match self.secrets {
            Secrets::Require => {
                self.error(path, message);
                Credential::Failed
            }
            Secrets::Optional => {
                self.warn(
                    path,
                    format!("{message} (left empty: fine for explain, an error for serve)"),
                );
                Credential::Unresolved
            }
        }
    }

    #[cfg(unix)]
    pub(super) fn warn_if_shared(&mut self, path: &str, file: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            if meta.permissions().mode() & 0o007 != 0 {
                self.warn(
                    path,
                    format!(
                        "`{}` is readable by every user: chmod o-rwx (or use a systemd credential)",
                        file.display()
                    ),
                );
            }
        }
    }

    #[cfg(not(unix))]
    pub(super) fn warn_if_shared(&mut self, _path: &str, _file: &Path) {}
}

/// A portable variable name (`[A-Za-z_][A-Za-z0-9_]*`) that does not look like a
/// token: real names have capitals or underscores, or are short.
fn plausible_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let name_like = name.chars().any(|c| c.is_ascii_uppercase() || c == '_') || name.len() < 20;
    first_ok && rest_ok && name_like
}

/// Rejects a URL or a long bare token given where a path belongs.
fn plausible_file_name(path: &Path) -> bool {
    let Some(s) = path.to_str() else {
        return true;
    };
    let url = s.contains("://");
    let bare_token = !s.contains('/')
        && !s.contains('.')
        && s.len() >= 20
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    !s.is_empty() && !url && !bare_token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_file_paths_are_told_from_pasted_secrets() {
        for name in [
            "LEADSCORE_B24_TOKEN",
            "token",
            "_x",
            "amo_webhook_secret_for_main",
        ] {
            assert!(plausible_env_name(name), "{name}");
        }
        for name in [
            "",
            "1ABC",
            "https://x/rest/1/y/",
            "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
            "a.b.c",
        ] {
            assert!(!plausible_env_name(name), "{name}");
        }
        for path in [
            "/run/credentials/leadscore.service/b24",
            "token",
            "secrets/amo",
        ] {
            assert!(plausible_file_name(Path::new(path)), "{path}");
        }
        for path in [
            "",
            "https://x/rest/1/y/",
            "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
        ] {
            assert!(!plausible_file_name(Path::new(path)), "{path}");
        }
    }
}
