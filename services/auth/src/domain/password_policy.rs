//! What a new password must satisfy (NIST SP 800-63B §3.1.1.2, ASVS 5 §6):
//! a length counted in characters of its NFKC form, not in a list of
//! common and breached passwords, and not built from the account's own
//! email or name or from words the operator lists. No composition rules
//! (they make passwords harder to remember, not to guess).

use secrecy::SecretString;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use super::password::{MAX_PASSWORD_BYTES, Password};

/// NIST's floor for a password's length; `min_chars` may only raise it.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// ASVS 5 §6.2.9: passwords of at least 64 characters must be allowed, so
/// a configured minimum cannot go past it.
const MAX_MIN_PASSWORD_CHARS: usize = 64;
/// Personal and context words shorter than this are not looked for: "al"
/// inside a password says nothing about it.
const MIN_WORD_CHARS: usize = 3;

/// Common and breached passwords, lower-cased and sorted bytewise
/// (`data/README.md` says where they come from). Compiled in and
/// binary-searched where it lies, so it costs no heap.
static COMMON_PASSWORDS: &str = include_str!("../../data/common-passwords.txt");

/// Config key `password_policy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Fewest characters a new password may have (8 to 64).
    pub min_chars: usize,
    /// Words no password may contain, in any letter case: the product's or
    /// the company's name and the like.
    pub context_words: Vec<String>,
}

impl PolicyConfig {
    /// Refuses a minimum outside 8..=64, naming the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(MIN_PASSWORD_CHARS..=MAX_MIN_PASSWORD_CHARS).contains(&self.min_chars) {
            return Err((
                "password_policy.min_chars",
                format!("must be between {MIN_PASSWORD_CHARS} and {MAX_MIN_PASSWORD_CHARS}"),
            ));
        }
        Ok(())
    }
}

/// What the account already tells about itself: a password may not
/// contain it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersonalData<'a> {
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
}

/// The rules for new passwords (registration, change).
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    min_chars: usize,
    /// Folded (NFKC, lower case), long enough to matter.
    context_words: Vec<String>,
}

impl PasswordPolicy {
    pub fn new(config: &PolicyConfig) -> Self {
        Self {
            min_chars: config.min_chars,
            context_words: config
                .context_words
                .iter()
                .map(|word| fold(word))
                .filter(|word| word.chars().count() >= MIN_WORD_CHARS)
                .collect(),
        }
    }

    /// The normalised password when it satisfies every rule; otherwise the
    /// reason, worded for the person choosing it.
    pub fn check(
        &self,
        raw: &SecretString,
        personal: PersonalData<'_>,
    ) -> Result<Password, String> {
        let Some(password) = Password::from_client(raw) else {
            return Err(format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
        };
        if password.text().chars().count() < self.min_chars {
            return Err(format!("must be at least {} characters", self.min_chars));
        }
        let folded = fold(password.text());
        if is_common(&folded) {
            return Err(
                "is too common: it appears in lists of leaked passwords; choose another".to_owned(),
            );
        }
        if let Some(email) = personal.email {
            let local = email.rsplit_once('@').map_or(email, |(local, _)| local);
            // "ann+shop@" is still Ann: both the whole local part and the
            // part before a sub-address tag.
            let base = local.split('+').next().unwrap_or(local);
            if [local, base]
                .into_iter()
                .any(|word| contains_word(&folded, word))
            {
                return Err("must not contain your email address".to_owned());
            }
        }
        if let Some(name) = personal.display_name {
            let squeezed: String = name.split_whitespace().collect();
            if contains_word(&folded, name.trim()) || contains_word(&folded, &squeezed) {
                return Err("must not contain your display name".to_owned());
            }
        }
        if let Some(word) = self
            .context_words
            .iter()
            .find(|word| folded.contains(word.as_str()))
        {
            return Err(format!("must not contain \"{word}\""));
        }
        Ok(password)
    }
}

/// How passwords and words are compared: NFKC, lower case.
fn fold(text: &str) -> String {
    text.nfkc().collect::<String>().to_lowercase()
}

fn contains_word(folded_password: &str, word: &str) -> bool {
    let word = fold(word);
    word.chars().count() >= MIN_WORD_CHARS && folded_password.contains(&word)
}

/// Binary search over the sorted, newline-separated list, in place.
fn is_common(folded: &str) -> bool {
    let list = COMMON_PASSWORDS.as_bytes();
    // `low` is always a line start; `high` a line start or the end.
    let (mut low, mut high) = (0, list.len());
    while low < high {
        let middle = low + (high - low) / 2;
        let start = list[low..middle]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(low, |at| low + at + 1);
        let end = list[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(list.len(), |at| start + at);
        match list[start..end].cmp(folded.as_bytes()) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => low = end + 1,
            std::cmp::Ordering::Greater => high = start,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        use portico_common::config::ServiceConfig as _;
        PasswordPolicy::new(&crate::Config::built_in().password_policy)
    }

    fn refusal(policy: &PasswordPolicy, password: &str, personal: PersonalData<'_>) -> String {
        policy
            .check(&SecretString::from(password), personal)
            .map(|_| ())
            .expect_err(password)
    }

    fn accepts(policy: &PasswordPolicy, password: &str, personal: PersonalData<'_>) -> bool {
        policy
            .check(&SecretString::from(password), personal)
            .is_ok()
    }

    #[test]
    fn the_shipped_list_is_sorted_unique_and_large_enough() {
        let lines: Vec<&str> = COMMON_PASSWORDS.lines().collect();
        assert!(lines.len() >= 100_000, "{} entries", lines.len());
        assert!(
            lines.windows(2).all(|pair| pair[0] < pair[1]),
            "sorted bytewise, no repeats"
        );
        assert!(
            lines.iter().all(|line| *line == fold(line)),
            "stored folded"
        );
    }

    #[test]
    fn every_listed_password_is_found_and_others_are_not() {
        assert!(COMMON_PASSWORDS.lines().all(is_common));
        for absent in [
            "",
            "!",
            "zzzzzzzzzzzzzzzzzzzzzzzz",
            "correct horse battery staple 9f3k",
        ] {
            assert!(!is_common(absent), "{absent}");
        }
        // Between two neighbours, and past both ends.
        let first = COMMON_PASSWORDS.lines().next().unwrap();
        assert!(!is_common(&format!("{first}\u{0}")));
        assert!(!is_common(" "));
        assert!(!is_common("\u{10ffff}"));
    }

    #[test]
    fn common_passwords_are_refused_in_any_letter_case_and_form() {
        let policy = policy();
        for common in [
            "password",
            "PassWord1",
            "iloveyou",
            "00000000",
            "\u{ff50}assword",
        ] {
            assert!(
                refusal(&policy, common, PersonalData::default()).contains("too common"),
                "{common}"
            );
        }
        assert!(accepts(
            &policy,
            "vellum otter quarry",
            PersonalData::default()
        ));
    }

    #[test]
    fn length_counts_normalised_characters() {
        let policy = policy();
        assert!(refusal(&policy, "7 chars", PersonalData::default()).contains("at least 8"));
        // Seven characters, fourteen bytes: still too short.
        assert!(refusal(&policy, "ééééééé", PersonalData::default()).contains("at least 8"));
        // e + combining accent is two code points but one character once
        // composed: "ééééééé" typed decomposed is 14 code points, 7 after NFKC.
        let decomposed = "e\u{301}".repeat(7);
        assert_eq!(decomposed.chars().count(), 14);
        assert!(refusal(&policy, &decomposed, PersonalData::default()).contains("at least 8"));
        assert!(accepts(&policy, &"ö".repeat(512), PersonalData::default()));
        assert!(refusal(&policy, &"ö".repeat(513), PersonalData::default()).contains("1024 bytes"));
    }

    #[test]
    fn a_raised_minimum_applies() {
        let policy = PasswordPolicy::new(&PolicyConfig {
            min_chars: 15,
            context_words: vec![],
        });
        assert!(
            refusal(&policy, "vellum otter q", PersonalData::default()).contains("at least 15")
        );
        assert!(accepts(&policy, "vellum otter qu", PersonalData::default()));
    }

    #[test]
    fn passwords_containing_the_email_or_name_are_refused() {
        let policy = policy();
        let personal = PersonalData {
            email: Some("Marguerite+shop@example.com"),
            display_name: Some("Ann  Lovelace"),
        };
        assert!(refusal(&policy, "xx-MARGUERITE-2026", personal).contains("email"));
        assert!(refusal(&policy, "marguerite+shop!!", personal).contains("email"));
        assert!(refusal(&policy, "i am annlovelace", personal).contains("display name"));
        assert!(refusal(&policy, "ann  lovelace 1815", personal).contains("display name"));
        // Words too short to mean anything are not looked for.
        let short = PersonalData {
            email: Some("al@example.com"),
            display_name: Some("Al"),
        };
        assert!(accepts(&policy, "vellum otter quarry al", short));
        assert!(accepts(&policy, "vellum otter quarry", personal));
    }

    #[test]
    fn context_words_are_refused_and_the_minimum_is_bounded() {
        let policy = PasswordPolicy::new(&PolicyConfig {
            min_chars: 8,
            context_words: vec!["Portico".to_owned(), "ab".to_owned()],
        });
        assert_eq!(
            refusal(&policy, "my portico pass!", PersonalData::default()),
            "must not contain \"portico\""
        );
        assert!(accepts(
            &policy,
            "vellum otter ab quarry",
            PersonalData::default()
        ));
        for (min_chars, ok) in [(7, false), (8, true), (64, true), (65, false)] {
            let config = PolicyConfig {
                min_chars,
                context_words: vec![],
            };
            assert_eq!(config.check().is_ok(), ok, "{min_chars}");
        }
    }
}
