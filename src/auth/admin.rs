//! Namespace admins: users whose token carries the claim `--admin-claim` names (default `roles=admin`: a `roles`
//! claim that holds `"admin"`). An admin moderates every group room of every namespace, those without an owner
//! included. Only an identity provider's tokens say so: palaver's own tokens, guests and users named by the
//! host's connect hook are never admins.

use serde_json::{Map, Value};

/// The claim that makes a user an admin, and the value it must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminClaim {
    /// A top-level claim name (`roles`, `https://example.com/roles`), else a dotted path into nested objects
    /// (`realm_access.roles`).
    name: String,
    value: String,
}

impl AdminClaim {
    /// Parses `CLAIM=VALUE`; an empty setting means no admins at all (`None`).
    pub fn parse(setting: &str) -> Result<Option<Self>, String> {
        let setting = setting.trim();
        if setting.is_empty() {
            return Ok(None);
        }
        match setting.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                Ok(Some(Self {
                    name: name.trim().to_owned(),
                    value: value.trim().to_owned(),
                }))
            }
            _ => Err(format!(
                "--admin-claim {setting:?} must be CLAIM=VALUE, e.g. roles=admin (or empty: no admins)"
            )),
        }
    }

    /// Whether a token's claims hold the value: the claim is that string, a list holding it, a string of
    /// space-separated words holding it (an OAuth `scope`), or `true` for the value `true`.
    pub fn grants(&self, claims: &Map<String, Value>) -> bool {
        let found = claims.get(&self.name).or_else(|| {
            let mut path = self.name.split('.');
            let first = claims.get(path.next()?)?;
            path.try_fold(first, |value, key| value.get(key))
        });
        match found {
            Some(Value::String(words)) => words.split_whitespace().any(|w| w == self.value),
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(&self.value)),
            Some(Value::Bool(flag)) => self.value == flag.to_string(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_setting_is_claim_equals_value_or_nothing() {
        assert_eq!(AdminClaim::parse(""), Ok(None));
        assert_eq!(AdminClaim::parse("  "), Ok(None));
        let claim = AdminClaim::parse(" roles = admin ")
            .expect("valid")
            .expect("set");
        assert_eq!(
            (claim.name.as_str(), claim.value.as_str()),
            ("roles", "admin")
        );
        for bad in ["roles", "=admin", "roles=", "roles= "] {
            assert!(AdminClaim::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_strings_scopes_flags_and_nested_claims() {
        let roles = AdminClaim::parse("roles=admin")
            .expect("valid")
            .expect("set");
        assert!(roles.grants(&claims(json!({ "roles": ["user", "admin"] }))));
        assert!(roles.grants(&claims(json!({ "roles": "admin" }))));
        assert!(roles.grants(&claims(json!({ "roles": "user admin" }))));
        assert!(!roles.grants(&claims(json!({ "roles": ["administrator"] }))));
        assert!(!roles.grants(&claims(json!({ "roles": "administrator" }))));
        assert!(!roles.grants(&claims(json!({ "role": "admin" }))));
        assert!(!roles.grants(&claims(json!({ "roles": { "admin": true } }))));
        let flag = AdminClaim::parse("admin=true")
            .expect("valid")
            .expect("set");
        assert!(flag.grants(&claims(json!({ "admin": true }))));
        assert!(!flag.grants(&claims(json!({ "admin": false }))));
        let nested = AdminClaim::parse("realm_access.roles=admin")
            .expect("valid")
            .expect("set");
        assert!(nested.grants(&claims(json!({ "realm_access": { "roles": ["admin"] } }))));
        assert!(!nested.grants(&claims(json!({ "realm_access": ["admin"] }))));
        let url = AdminClaim::parse("https://example.com/roles=admin")
            .expect("valid")
            .expect("set");
        assert!(url.grants(&claims(json!({ "https://example.com/roles": ["admin"] }))));
    }
}
