//! The scoring engine: pure, deterministic, no I/O and no clock.
pub mod spec;

/// A mistake in the `[scoring]` section, by key path (e.g. `scoring.rules[3].when.regex`,
/// 0-based indices) so config loading can point at the file's line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

/// Compiled scoring model (being built).
#[derive(Debug)]
pub struct Model;

impl Model {
    /// Check a spec and compile it (being built).
    pub fn compile(_spec: &spec::ScoringSpec) -> Result<Model, Vec<SpecError>> {
        Ok(Model)
    }
}
