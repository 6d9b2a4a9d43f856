//! Phone numbers: parsed and normalised to E.164 with libphonenumber's metadata
//! (the `phonenumber` crate), never by hand-written rules.

use phonenumber::{Mode, PhoneNumber};

/// Longest input considered; E.164 numbers have at most 15 digits, and no real
/// formatting of one comes near this.
const MAX_INPUT_LEN: usize = 64;

/// A valid phone number in E.164 form, e.g. `+14155550123`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct E164(String);

impl E164 {
    /// The `+<digits>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number's rate-limit prefix: country code plus the first national digits
    /// (area code or mobile range). SMS-pumping fraud walks through numbers of one
    /// premium range, so limiting per prefix caps it without hurting real users.
    pub fn pumping_prefix(&self) -> &str {
        // "+", up to 3 country-code digits, then 4 more: a block of ~10^(n-7) numbers.
        let end = self.0.len().min(8);
        &self.0[..end]
    }
}

// Phone numbers are personal data: never print them whole in logs.
impl std::fmt::Debug for E164 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keep = self.0.len().min(4);
        write!(f, "E164({}…)", &self.0[..keep])
    }
}

/// Why a phone number was refused. Messages go back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Empty input.
    #[error("phone number is empty")]
    Empty,
    /// Longer than any formatting of a real number.
    #[error("phone number is longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    /// Not in international form.
    #[error("phone number must be in international form, starting with + and the country code")]
    NotInternational,
    /// The library could not parse it.
    #[error("not a phone number: {0}")]
    Unparseable(String),
    /// Parsed, but no such number can exist (wrong length for its country, unassigned range).
    #[error("{0} is not a valid number for its country")]
    Invalid(String),
}

/// Parses a number written in international form (`+44 20 7946 0958`,
/// `+1 (415) 555-0123`) and returns it in E.164.
pub fn parse(input: &str) -> Result<E164, PhoneError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    if trimmed.len() > MAX_INPUT_LEN {
        return Err(PhoneError::TooLong);
    }
    // Without a default region the library needs the leading "+"; asking for it
    // explicitly gives a better message than the library's parse error.
    if !trimmed.starts_with('+') {
        return Err(PhoneError::NotInternational);
    }
    let number: PhoneNumber =
        phonenumber::parse(None, trimmed).map_err(|e| PhoneError::Unparseable(e.to_string()))?;
    let e164 = number.format().mode(Mode::E164).to_string();
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid(e164));
    }
    Ok(E164(e164))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_formatted_numbers() {
        assert_eq!(parse("+1 (415) 555-2671").unwrap().as_str(), "+14155552671");
        assert_eq!(
            parse(" +44 20 7946 0958 ").unwrap().as_str(),
            "+442079460958"
        );
        assert_eq!(parse("+49 30 901820").unwrap().as_str(), "+4930901820");
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert_eq!(parse(""), Err(PhoneError::Empty));
        assert_eq!(parse("4155552671"), Err(PhoneError::NotInternational));
        assert!(matches!(parse("+hello"), Err(PhoneError::Unparseable(_))));
        assert!(matches!(
            parse("+1 415"),
            Err(PhoneError::Invalid(_) | PhoneError::Unparseable(_))
        ));
        assert_eq!(parse(&"+1".repeat(40)), Err(PhoneError::TooLong));
    }

    #[test]
    fn debug_hides_the_number() {
        let n = parse("+14155552671").unwrap();
        assert_eq!(format!("{n:?}"), "E164(+141…)");
        assert_eq!(n.pumping_prefix(), "+1415555");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_plus_digits(s in "\\+[0-9 ()-]{0,30}") {
            if let Ok(n) = parse(&s) {
                // Whatever parses normalises to + and digits only.
                prop_assert!(n.as_str().starts_with('+'));
                prop_assert!(n.as_str()[1..].bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
