//! Display names: random readable ones for guests, and the rules a chosen one must follow.

use rand::{Rng, seq::IndexedRandom};

const ADJECTIVES: &[&str] = &[
    "quiet", "brave", "calm", "eager", "gentle", "happy", "jolly", "kind", "lively", "merry",
    "nimble", "proud", "rapid", "shy", "swift", "witty", "bold", "bright", "clever", "cosy",
    "daring", "fuzzy", "golden", "humble", "lucky", "mellow", "noble", "plucky", "sunny", "tidy",
];

const ANIMALS: &[&str] = &[
    "otter", "badger", "falcon", "heron", "lynx", "marten", "newt", "owl", "panda", "quail",
    "raven", "seal", "tiger", "walrus", "wombat", "yak", "zebra", "beaver", "crane", "dingo",
    "egret", "ferret", "gecko", "ibis", "koala", "lemur", "moose", "narwhal", "puffin", "stoat",
];

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A name like `quiet-otter-42`.
pub fn random_name() -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("quiet");
    let animal = ANIMALS.choose(&mut rng).copied().unwrap_or("otter");
    let number: u8 = rng.random_range(10..100);
    format!("{adjective}-{animal}-{number}")
}

/// Trims the name and checks it is 1–32 printable characters; the error names `field` and says what is wrong.
pub fn validate_display_name(field: &str, name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(format!("{field} is empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "{field} has {chars} characters; at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!(
            "{field} contains control characters, which cannot be stored"
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let check = |name: &str| validate_display_name("auth.name", name);
        assert_eq!(check("  Zoë  ").as_deref(), Ok("Zoë"));
        assert!(check(&"x".repeat(32)).is_ok());
        assert!(check(&"x".repeat(33)).is_err());
        assert!(check("a\u{0007}b").is_err());
        assert_eq!(
            check("evil\u{0}"),
            Err("auth.name contains control characters, which cannot be stored".to_owned())
        );
        assert!(check("\t\n").is_err());
    }
}
