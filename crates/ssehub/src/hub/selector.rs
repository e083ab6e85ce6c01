//! Topic selectors: what a subscriber asks for with `match=`.
//!
//! As in Mercure, a selector is an exact topic, `*` for every topic, or a URI
//! template (RFC 6570). Templates support the two expressions that selecting
//! topics needs: `{name}` matches one or more characters other than `/`, `?`
//! and `#` (a path segment), and `{+name}` matches one or more of any
//! character. A template is compiled once, into a matcher whose time is
//! linear in the topic's length ([`super::template`]).

use std::fmt;

use super::template::{MAX_EXPRESSIONS, Template, Var};

/// A parsed topic selector.
#[derive(Clone)]
pub enum Selector {
    /// Exactly this topic.
    Exact(String),
    /// Every topic.
    All,
    /// A URI template; kept with its source text for display.
    Template {
        /// The selector as the subscriber wrote it.
        source: Box<str>,
        /// Its matcher.
        matcher: Template,
    },
}

/// One piece of a template, for building one with [`Selector::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text that must appear as is.
    Literal(String),
    /// `{name}`: one path segment.
    Segment,
    /// `{+name}`: anything, `/` included.
    Any,
}

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let err = |reason| SelectorError {
            selector: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        if text.chars().any(char::is_control) {
            return Err(err("it contains a control character"));
        }
        if text == "*" {
            return Ok(Selector::All);
        }
        if !text.contains(['{', '}']) {
            return Ok(Selector::Exact(text.to_owned()));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => return Err(err("unbalanced '}'")),
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_owned()));
                    }
                    let close = rest[i..].find('}').ok_or_else(|| err("unclosed '{'"))? + i;
                    let expr = &rest[i + 1..close];
                    let (part, name) = match expr.strip_prefix('+') {
                        Some(name) => (Part::Any, name),
                        None => (Part::Segment, expr),
                    };
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    {
                        return Err(err(
                            "only {name} and {+name} expressions are supported in templates",
                        ));
                    }
                    parts.push(part);
                    rest = &rest[close + 1..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Selector::from_parts(text, &parts)
    }

    /// A template selector from its pieces, as written in `source`. Two
    /// variables must be separated by text, and a template has at most 16
    /// variables.
    pub fn from_parts(source: &str, parts: &[Part]) -> Result<Selector, SelectorError> {
        let err = |reason| SelectorError {
            selector: source.to_owned(),
            reason,
        };
        let mut head = "";
        let mut steps: Vec<(Var, &str)> = Vec::new();
        for part in parts {
            match (part, steps.last_mut()) {
                (Part::Literal(text), None) if head.is_empty() => head = text,
                (Part::Literal(text), Some((_, literal))) if literal.is_empty() => *literal = text,
                (Part::Literal(_), _) => return Err(err("two literals must be joined")),
                (Part::Segment | Part::Any, Some((_, ""))) => {
                    return Err(err("two template expressions must be separated by text"));
                }
                (Part::Segment, _) => steps.push((Var::Segment, "")),
                (Part::Any, _) => steps.push((Var::Any, "")),
            }
        }
        if steps.is_empty() {
            return Ok(Selector::Exact(head.to_owned()));
        }
        if steps.len() > MAX_EXPRESSIONS {
            return Err(err("a template may have at most 16 expressions"));
        }
        Ok(Selector::Template {
            source: source.into(),
            matcher: Template::new(head, &steps),
        })
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Exact(exact) => exact == topic,
            Selector::All => true,
            Selector::Template { matcher, .. } => matcher.matches(topic),
        }
    }

    /// The exact topic, if this selector names one.
    pub fn exact(&self) -> Option<&str> {
        match self {
            Selector::Exact(topic) => Some(topic),
            _ => None,
        }
    }
}

/// Two selectors are equal when they are written the same.
impl PartialEq for Selector {
    fn eq(&self, other: &Selector) -> bool {
        match (self, other) {
            (Selector::Exact(a), Selector::Exact(b)) => a == b,
            (Selector::All, Selector::All) => true,
            (Selector::Template { source: a, .. }, Selector::Template { source: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Selector {}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Exact(topic) => f.debug_tuple("Exact").field(topic).finish(),
            Selector::All => f.write_str("All"),
            Selector::Template { source, .. } => f.debug_tuple("Template").field(source).finish(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Exact(topic) => f.write_str(topic),
            Selector::All => f.write_str("*"),
            Selector::Template { source, .. } => f.write_str(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn exact_and_all() {
        assert!(sel("tasks/1").matches("tasks/1"));
        assert!(!sel("tasks/1").matches("tasks/10"));
        assert!(sel("*").matches("anything/at/all"));
        assert_eq!(sel("a").exact(), Some("a"));
    }

    #[test]
    fn segment_variables_stop_at_slash() {
        let s = sel("https://example.com/books/{id}");
        assert!(s.matches("https://example.com/books/1"));
        assert!(s.matches("https://example.com/books/日本"));
        assert!(!s.matches("https://example.com/books/"));
        assert!(!s.matches("https://example.com/books/1/reviews"));
        let s = sel("tasks/{code}/files/{n}");
        assert!(s.matches("tasks/ab/files/3"));
        assert!(!s.matches("tasks/ab/files"));
    }

    #[test]
    fn reserved_variables_cross_slashes() {
        let s = sel("/logs/{+path}");
        assert!(s.matches("/logs/a/b/c"));
        assert!(!s.matches("/logs/"));
        assert!(sel("{+all}.json").matches("x/y.json"));
    }

    #[test]
    fn invalid_selectors_say_why() {
        for (text, reason) in [
            ("", "it is empty"),
            ("a{b", "unclosed '{'"),
            ("a}b", "unbalanced '}'"),
            (
                "a{}",
                "only {name} and {+name} expressions are supported in templates",
            ),
            (
                "a{?q}",
                "only {name} and {+name} expressions are supported in templates",
            ),
            (
                "{a}{b}",
                "two template expressions must be separated by text",
            ),
            (
                "{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}",
                "a template may have at most 16 expressions",
            ),
            ("a\nb", "it contains a control character"),
        ] {
            assert_eq!(
                Selector::parse(text).unwrap_err().reason,
                reason,
                "{text:?}"
            );
        }
    }
}
