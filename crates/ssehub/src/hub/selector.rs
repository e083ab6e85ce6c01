//! Topic selectors: what a subscriber asks for with `match=`.
//!
//! As in Mercure, a selector is an exact topic, `*` for every topic, or a URI
//! template (RFC 6570). Templates support the two expressions that selecting
//! topics needs: `{name}` matches one or more characters other than `/`, `?`
//! and `#` (a path segment), and `{+name}` matches one or more of any
//! character. A template is compiled once, into a matcher whose time is
//! linear in the topic's length ([`super::template`]).
//!
//! The current Mercure draft adds URL patterns (the WHATWG URL Pattern
//! standard, `match_urlpattern=`): compiled by the `urlpattern` crate to
//! regular expressions of the `regex-lite` crate, whose matching time is
//! linear (the draft's defence against patterns built to backtrack). Relative
//! patterns and topics are resolved against the hub's URL.

use std::fmt;
use std::sync::Arc;

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
    /// A URL pattern, with the hub URL that relative topics resolve against.
    UrlPattern(Arc<UrlPatternSelector>),
}

/// A compiled URL pattern.
pub struct UrlPatternSelector {
    source: Box<str>,
    pattern: urlpattern::UrlPattern<LiteRegex>,
    base: url::Url,
}

/// The regular expressions of URL patterns, on `regex-lite`: linear time
/// like `regex`, without its per-expression caches. With `regex`, each
/// pattern (up to eight expressions) held 133 KB, so a client with a
/// thousand streams of 32 patterns could take 4 GB; now 4.7 KB
/// (`bench/url-pattern-memory`, docs/BENCHMARKS.md).
/// Expressions are shared: most components of most patterns are the same
/// "anything" expression, compiled once for all of them.
pub struct LiteRegex(Arc<regex_lite::Regex>);

/// The expressions compiled, by source text, as long as one is in use.
static COMPILED: std::sync::Mutex<
    Option<std::collections::HashMap<Box<str>, std::sync::Weak<regex_lite::Regex>>>,
> = std::sync::Mutex::new(None);

impl urlpattern::regexp::RegExp for LiteRegex {
    fn syntax() -> urlpattern::RegexSyntax {
        urlpattern::RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        let compiled = compiled.get_or_insert_with(Default::default);
        if let Some(shared) = compiled.get(pattern).and_then(std::sync::Weak::upgrade) {
            return Ok(LiteRegex(shared));
        }
        let regex = regex_lite::RegexBuilder::new(pattern)
            // A bound on what one expression may compile to.
            .size_limit(64 * 1024)
            .build()
            .map_err(drop)?;
        let regex = Arc::new(regex);
        // Forget the ones no longer used, now and then (amortized).
        if compiled.len() >= 1024 && compiled.len().is_power_of_two() {
            compiled.retain(|_, weak| weak.strong_count() > 0);
        }
        compiled.insert(pattern.into(), Arc::downgrade(&regex));
        Ok(LiteRegex(regex))
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(
            captures
                .iter()
                .skip(1)
                .map(|c| c.map(|m| m.as_str()))
                .collect(),
        )
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
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
        if let Some(all) = Selector::wildcard_or_invalid(text)? {
            return Ok(all);
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

    /// A URL pattern (`match_urlpattern=`), absolute or relative to `base`,
    /// the hub's URL. `*` is the wildcard, whatever the matcher type.
    pub fn url_pattern(text: &str, base: &url::Url) -> Result<Selector, SelectorError> {
        let err = |reason| SelectorError {
            selector: text.to_owned(),
            reason,
        };
        if let Some(all) = Selector::wildcard_or_invalid(text)? {
            return Ok(all);
        }
        let compile = || {
            let init = urlpattern::UrlPatternInit::parse_constructor_string::<LiteRegex>(
                text,
                Some(base.clone()),
            )
            .ok()?;
            let options = urlpattern::UrlPatternOptions {
                // The draft forbids ignoreCase: only the host is case-blind.
                ignore_case: false,
                ..Default::default()
            };
            urlpattern::UrlPattern::<LiteRegex>::parse(init, options).ok()
        };
        // The crate's parser can panic on some malformed patterns (fuzzing
        // found a `]` that underflows its count of IPv6 brackets, an
        // overflow panic in a debug build; a release build wraps): that is
        // a malformed pattern too.
        let pattern = std::panic::catch_unwind(std::panic::AssertUnwindSafe(compile))
            .ok()
            .flatten()
            .ok_or_else(|| err("it is not a well-formed URL pattern"))?;
        Ok(Selector::UrlPattern(Arc::new(UrlPatternSelector {
            source: text.into(),
            pattern,
            base: base.clone(),
        })))
    }

    /// What every matcher type refuses (empty, control characters), and
    /// `*`, which is every topic whatever the matcher type.
    fn wildcard_or_invalid(text: &str) -> Result<Option<Selector>, SelectorError> {
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
        Ok((text == "*").then_some(Selector::All))
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
            Selector::UrlPattern(url) => url.matches(topic),
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

impl UrlPatternSelector {
    /// A topic that is no URL reference against the hub's URL matches no
    /// pattern.
    fn matches(&self, topic: &str) -> bool {
        let Ok(url) = self.base.join(topic) else {
            return false;
        };
        // (Under the hub's lock: a panic in the crate is a topic not
        // matched, never a poisoned hub.)
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pattern
                .test(urlpattern::UrlPatternMatchInput::Url(url))
                .unwrap_or(false)
        }))
        .unwrap_or(false)
    }
}

/// Two selectors are equal when they are written the same.
impl PartialEq for Selector {
    fn eq(&self, other: &Selector) -> bool {
        match (self, other) {
            (Selector::Exact(a), Selector::Exact(b)) => a == b,
            (Selector::All, Selector::All) => true,
            (Selector::Template { source: a, .. }, Selector::Template { source: b, .. }) => a == b,
            (Selector::UrlPattern(a), Selector::UrlPattern(b)) => a.source == b.source,
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
            Selector::UrlPattern(url) => f.debug_tuple("UrlPattern").field(&url.source).finish(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Exact(topic) => f.write_str(topic),
            Selector::All => f.write_str("*"),
            Selector::Template { source, .. } => f.write_str(source),
            Selector::UrlPattern(url) => f.write_str(&url.source),
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

    fn pattern(text: &str) -> Selector {
        let hub = url::Url::parse("https://hub.example.com/.well-known/mercure").unwrap();
        Selector::url_pattern(text, &hub).unwrap()
    }

    #[test]
    fn url_patterns_follow_the_standard() {
        // The draft's example.
        let books = pattern("https://example.com/books/:id");
        assert!(books.matches("https://example.com/books/1"));
        assert!(!books.matches("https://example.com/books/1/reviews"));
        assert!(!books.matches("https://example.com/authors/1"));
        // Only the host is case-blind.
        assert!(pattern("https://EXAMPLE.com/x").matches("https://example.com/x"));
        assert!(!pattern("https://example.com/X").matches("https://example.com/x"));
        // Relative patterns and topics resolve against the hub's URL.
        let relative = pattern("/books/:id");
        assert!(relative.matches("/books/7"));
        assert!(relative.matches("https://hub.example.com/books/7"));
        assert!(!relative.matches("https://example.com/books/7"));
        // Wildcards, groups, and the reserved `*` of every matcher type.
        assert!(pattern("https://example.com/*").matches("https://example.com/a/b?c"));
        assert!(pattern("https://example.com/:n(\\d+)").matches("https://example.com/42"));
        assert!(!pattern("https://example.com/:n(\\d+)").matches("https://example.com/x"));
        assert!(matches!(pattern("*"), Selector::All));
        // A topic that is no URL reference matches no pattern.
        assert!(!pattern("https://*").matches("http://[not a host"));
        assert_eq!(pattern("/books/:id").to_string(), "/books/:id");
        assert_eq!(pattern("/a/:b"), pattern("/a/:b"));
        assert_ne!(pattern("/a/b"), Selector::parse("/a/b").unwrap());
    }

    #[test]
    fn a_pattern_built_to_backtrack_is_matched_in_linear_time() {
        // Nested quantifiers: exponential for a backtracking engine.
        let evil = pattern("https://example.com/:x((?:a+)+b)");
        let topic = format!("https://example.com/{}c", "a".repeat(5000));
        assert!(!evil.matches(&topic));
    }

    #[test]
    fn malformed_url_patterns_are_refused() {
        let hub = url::Url::parse("https://hub.example.com/.well-known/mercure").unwrap();
        // (The last two made the crate's parser panic: found by fuzzing.)
        for text in [
            "https://example.com/:id(",
            "/books/:id(()",
            "",
            "a\nb",
            "*?:].+.e\u{35d}",
            "*:;****7e**V^0\\.0\\.0\\.7(.*)([^\\.A+?)?(][.\\+^?)*e:V*0*e**V:ee",
        ] {
            assert!(Selector::url_pattern(text, &hub).is_err(), "{text:?}");
        }
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
