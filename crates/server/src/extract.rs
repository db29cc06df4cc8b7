//! Extractors that refuse bad input in our error shape rather than axum's.
//!
//! - [`JsonBody`]: a request body that claims to be JSON (or claims nothing), read up to
//!   [`Config::max_request_bytes`](crate::Config::max_request_bytes). It stays bytes so a
//!   handler can parse parts of it lazily (an event's `args` is kept as raw JSON text).
//! - [`Query`]: the query string as key/value pairs. axum's `Query` cannot take a key more
//!   than once (`topic=a&topic=b`), and ours also lets a handler refuse keys it does not
//!   know, so a typo like `topics=` fails loudly instead of silently matching everything.

use std::convert::Infallible;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON request body, size-checked but not yet parsed; see [`parse_json`].
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config().max_request_bytes;
        let headers = req.headers();
        if let Some(content_type) = headers.get(CONTENT_TYPE)
            && !is_json(content_type.to_str().unwrap_or(""))
        {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type application/json, got {content_type:?}"
            )));
        }
        // Refuse up front when the client says how much it will send, so an oversized
        // upload costs nothing to read.
        if let Some(len) = headers.get(CONTENT_LENGTH) {
            let len: Option<u64> = len.to_str().ok().and_then(|s| s.parse().ok());
            if len.is_some_and(|len| len > limit as u64) {
                return Err(too_large(limit));
            }
        }
        // A chunked body has no length to check, so count while reading too.
        let mut data = req.into_body().into_data_stream();
        let mut body = BytesMut::new();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::InvalidJson(format!("could not read the request body: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(JsonBody(body.freeze()))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"))
}

/// `application/json`, with or without parameters, and the `+json` family.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Parses JSON, turning every failure (syntax, wrong types, unknown or missing fields)
/// into `invalid_json` with serde's description of what was wrong and where.
pub fn parse_json<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Result<T, ApiError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson(
            "the body is empty; expected JSON".to_owned(),
        ));
    }
    serde_json::from_slice(text).map_err(|e| ApiError::InvalidJson(format!("invalid JSON: {e}")))
}

/// The query string's pairs, percent-decoded, in order. Handlers take the keys they know
/// and then call [`Query::finish`], which refuses whatever is left.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: &str) -> Self {
        Query {
            pairs: url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// Every value of a repeatable key, in order.
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut values = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == key {
                values.push(v.clone());
                false
            } else {
                true
            }
        });
        values
    }

    /// The value of a key that may appear at most once.
    pub fn take(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.take_all(key);
        if values.len() > 1 {
            return Err(ApiError::InvalidParameter(format!(
                "query parameter `{key}` given more than once"
            )));
        }
        Ok(values.pop())
    }

    /// Refuses the keys no one took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => Err(ApiError::InvalidParameter(format!(
                "unknown query parameter `{key}`"
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Query::parse(parts.uri.query().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_kept_and_leftovers_refused() {
        let mut q = Query::parse("topic=a.%3E&topic=b&limit=5&x=1");
        assert_eq!(q.take_all("topic"), ["a.>", "b"]);
        assert_eq!(q.take("limit").unwrap().as_deref(), Some("5"));
        assert!(q.take("nope").unwrap().is_none());
        assert!(q.finish().is_err());
        assert!(Query::parse("a=1&a=2").take("a").is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
