//! Turning SQLite's errors into [`LogError`]s. Every backend failure reaches callers as
//! [`LogError::Storage`] with what was being done; the cause stays in the source chain for
//! operators.

use std::sync::Arc;

use tributary_core::LogError;

/// For `map_err`: wraps a SQLite (or I/O) error with what was being done.
pub(crate) fn storage<E>(context: &'static str) -> impl FnOnce(E) -> LogError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| LogError::storage(context, source)
}

/// One failure answered to several waiting appends (a failed group commit): the cause is
/// shared because `rusqlite::Error` cannot be cloned.
pub(crate) fn shared_storage(context: &'static str, source: &Arc<rusqlite::Error>) -> LogError {
    LogError::storage(context, Arc::clone(source))
}
