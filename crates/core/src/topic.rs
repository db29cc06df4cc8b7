//! Topic names and topic patterns.
//!
//! A topic is 1–255 characters of dot-separated tokens, each token one or more of
//! `[A-Za-z0-9_-]`. A pattern may also use `*` for exactly one token and `>` (last token
//! only) for one or more remaining tokens, as NATS subjects do.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValidationError;

pub const MAX_TOPIC_LEN: usize = 255;

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// A validated topic name (no wildcards).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    pub fn new(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        let err = |reason| ValidationError::Topic {
            topic: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(err("must not be empty"));
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(err("longer than 255 characters"));
        }
        for token in name.split('.') {
            if token.is_empty() {
                return Err(err("empty token (leading, trailing or double dot)"));
            }
            if token == "*" || token == ">" {
                return Err(err("wildcards are only allowed in patterns"));
            }
            if !token.bytes().all(is_token_char) {
                return Err(err("tokens may only hold A-Z, a-z, 0-9, '_' and '-'"));
            }
        }
        Ok(Topic(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Topic::new(s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens, only last.
    Rest,
}

/// A topic pattern such as `orders.*.created` or `orders.>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    raw: String,
    tokens: Vec<Token>,
    /// No wildcard. Kept because a live stream asks `matches` once per event per
    /// subscriber, and for an exact pattern that is one string comparison.
    exact: bool,
}

impl TopicPattern {
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let err = |reason| ValidationError::Pattern {
            pattern: raw.clone(),
            reason,
        };
        if raw.is_empty() {
            return Err(err("must not be empty"));
        }
        if raw.len() > MAX_TOPIC_LEN {
            return Err(err("longer than 255 characters"));
        }
        let parts: Vec<&str> = raw.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "" => return Err(err("empty token (leading, trailing or double dot)")),
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Rest,
                ">" => return Err(err("'>' may only be the last token")),
                p if p.bytes().all(is_token_char) => Token::Literal(p.to_owned()),
                _ => {
                    return Err(err(
                        "tokens may only hold A-Z, a-z, 0-9, '_' and '-', or be '*' or a final '>'",
                    ));
                }
            };
            tokens.push(token);
        }
        let exact = tokens.iter().all(|t| matches!(t, Token::Literal(_)));
        Ok(TopicPattern { raw, tokens, exact })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when the pattern has no wildcard, so it names exactly one topic.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The literal tokens before the first wildcard, joined with dots and followed by a
    /// dot when a wildcard comes next (`orders.*.x` gives `orders.`). Every topic the
    /// pattern matches starts with it, which lets a backend narrow a scan to a key range.
    pub fn literal_prefix(&self) -> String {
        let mut prefix = String::new();
        for token in &self.tokens {
            match token {
                Token::Literal(l) => {
                    prefix.push_str(l);
                    prefix.push('.');
                }
                Token::One | Token::Rest => return prefix,
            }
        }
        // Exact pattern: the whole name, without the trailing dot.
        prefix.pop();
        prefix
    }

    pub fn matches(&self, topic: &str) -> bool {
        if self.exact {
            return topic == self.raw;
        }
        let mut parts = topic.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return parts.next().is_some(),
                Token::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.raw, f)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TopicPattern::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        TopicPattern::new(s).unwrap()
    }

    #[test]
    fn topics_are_validated() {
        assert!(Topic::new("orders.eu.created").is_ok());
        assert!(Topic::new("livestore.store-42").is_ok());
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a.*",
            "a.>",
            "a b",
            "ä",
            &"x".repeat(256),
        ] {
            assert!(Topic::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn patterns_match_like_nats() {
        assert!(p("orders.>").matches("orders.eu"));
        assert!(p("orders.>").matches("orders.eu.created"));
        assert!(!p("orders.>").matches("orders"));
        assert!(p("orders.*").matches("orders.eu"));
        assert!(!p("orders.*").matches("orders.eu.created"));
        assert!(p("*.eu.*").matches("orders.eu.created"));
        assert!(!p("*.eu.*").matches("orders.us.created"));
        assert!(p(">").matches("a"));
        assert!(p("a").matches("a"));
        assert!(!p("a").matches("a.b"));
        assert!(!p("a.b").matches("a"));
    }

    #[test]
    fn exact_patterns_match_only_their_own_topic() {
        let exact = p("orders.eu.created");
        assert!(exact.is_exact());
        assert!(exact.matches("orders.eu.created"));
        for other in [
            "orders.eu",
            "orders.eu.created.x",
            "orders.eu.createdx",
            "orders.EU.created",
        ] {
            assert!(!exact.matches(other), "{other:?}");
        }
        assert!(!p("orders.*").is_exact());
        assert!(!p("orders.>").is_exact());
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a.>.b", "a..b", "a*", "a.b>", ">.a", "a.**"] {
            assert!(TopicPattern::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn literal_prefix_bounds_every_match() {
        assert_eq!(p("orders.*.created").literal_prefix(), "orders.");
        assert_eq!(p("orders.>").literal_prefix(), "orders.");
        assert_eq!(p("*.x").literal_prefix(), "");
        assert_eq!(p("a.b").literal_prefix(), "a.b");
        assert!(p("a.b").is_exact());
        assert!(!p("a.*").is_exact());
    }
}
