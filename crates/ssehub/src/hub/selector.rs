//! Topic selectors: what a subscriber asks for with `match=`.
//!
//! As in Mercure, a selector is an exact topic, `*` for every topic, or a URI
//! template (RFC 6570). Templates support the two expressions that selecting
//! topics needs: `{name}` matches one or more characters other than `/`, `?`
//! and `#` (a path segment), and `{+name}` matches one or more of any character.

use std::fmt;

/// A parsed topic selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Exactly this topic.
    Exact(String),
    /// Every topic.
    All,
    /// A URI template; kept with its source text for display.
    Template {
        /// The selector as the subscriber wrote it.
        source: String,
        /// Literal text and variables, in order.
        parts: Vec<Part>,
    },
}

/// One piece of a template.
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
                    if matches!(parts.last(), Some(Part::Segment | Part::Any)) {
                        return Err(err("two template expressions must be separated by text"));
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
        Ok(Selector::Template {
            source: text.to_owned(),
            parts,
        })
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Exact(exact) => exact == topic,
            Selector::All => true,
            Selector::Template { parts, .. } => match_parts(parts, topic),
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

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Exact(topic) => f.write_str(topic),
            Selector::All => f.write_str("*"),
            Selector::Template { source, .. } => f.write_str(source),
        }
    }
}

/// Backtracking match; templates are short and variables are separated by
/// literals, so this stays cheap.
fn match_parts(parts: &[Part], topic: &str) -> bool {
    match parts.split_first() {
        None => topic.is_empty(),
        Some((Part::Literal(lit), rest)) => topic
            .strip_prefix(lit.as_str())
            .is_some_and(|after| match_parts(rest, after)),
        Some((var, rest)) => {
            let limit = match var {
                Part::Segment => topic.find(['/', '?', '#']).unwrap_or(topic.len()),
                _ => topic.len(),
            };
            // A variable takes at least one character.
            topic[..limit]
                .char_indices()
                .skip(1)
                .map(|(i, _)| i)
                .chain([limit])
                .filter(|&end| end > 0)
                .any(|end| match_parts(rest, &topic[end..]))
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
