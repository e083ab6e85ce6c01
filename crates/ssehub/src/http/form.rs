//! `application/x-www-form-urlencoded`, strictly: percent-decoded bytes must
//! be UTF-8. (Lenient decoders replace bad bytes, which would store data the
//! publisher never sent.)

use percent_encoding::percent_decode;

/// Why a form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("form field {field:?} is not valid UTF-8 after percent-decoding")]
pub struct FormError {
    /// The field name, lossily decoded, for the message.
    pub field: String,
}

/// Decodes `a=1&b=2` into pairs, in order, repeated names kept.
pub fn parse(input: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name).map_err(|()| FormError {
                field: String::from_utf8_lossy(name).into_owned(),
            })?;
            let value = decode(value).map_err(|()| FormError {
                field: name.clone(),
            })?;
            Ok((name, value))
        })
        .collect()
}

fn decode(raw: &[u8]) -> Result<String, ()> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn decodes_pairs_in_order() {
        assert_eq!(
            parse(b"topic=a&topic=b&data=x+y%0Az&private=on&flag").unwrap(),
            pairs(&[
                ("topic", "a"),
                ("topic", "b"),
                ("data", "x y\nz"),
                ("private", "on"),
                ("flag", "")
            ])
        );
        assert_eq!(parse(b"").unwrap(), pairs(&[]));
        assert_eq!(
            parse(b"a=1&&b=%E4%BD%A0").unwrap(),
            pairs(&[("a", "1"), ("b", "你")])
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_field() {
        assert_eq!(parse(b"data=%FF").unwrap_err().field, "data");
        assert_eq!(parse(b"d%FFx=1").unwrap_err().field, "d%FFx");
    }

    proptest! {
        #[test]
        fn round_trips_any_text(fields in prop::collection::vec((".*", ".*"), 0..5)) {
            let encoded: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!(
                    "{}={}",
                    percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC),
                ))
                .collect();
            let parsed = parse(encoded.join("&").as_bytes()).unwrap();
            prop_assert_eq!(parsed, fields);
        }
    }
}
