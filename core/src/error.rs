use thiserror::Error;

/// Why a value was refused by a constructor. `field` names the offending field in the
/// camelCase form the JSON APIs use, so API layers can pass it straight to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The offending field, camelCase (e.g. `latencyBudgetMs`, `location.latitude`).
    pub field: String,
    /// What is wrong with it, as a sentence fragment.
    pub reason: String,
}

impl ValidationError {
    /// A refusal of `field` because of `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with `prefix.` put before the field name (for nested values).
    #[must_use]
    pub fn within(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            reason: self.reason,
        }
    }
}

/// Shorthand for validators.
pub(crate) fn ensure(cond: bool, field: &str, reason: &str) -> Result<(), ValidationError> {
    if cond {
        Ok(())
    } else {
        Err(ValidationError::new(field, reason))
    }
}
