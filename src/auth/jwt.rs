//! JWT verification: HS256 with a shared secret, RS256 or ES256 with a public key, and palaver's own access
//! tokens (HS256 with `--token-secret`, told apart by their `kid`); and the issuing of palaver's own tokens.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use super::{AuthError, User, admin::AdminClaim};
use crate::config::{Config, ConfigError, PublicKeyAlgorithm};

/// Verifies tokens against the keys the server was configured with. Holds key material, so no `Debug`.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    /// The key of palaver's own access tokens, when it issues them.
    own: Option<DecodingKey>,
    /// The claim that makes an identity provider's user a namespace admin (`--admin-claim`).
    admin_claim: Option<AdminClaim>,
}

/// The `kid` and `iss` of the access tokens palaver issues.
pub const OWN_KEY_ID: &str = "palaver";

/// How far past `exp` an identity provider's token is still accepted (clock skew between it and palaver).
/// palaver's own tokens get none: it is their clock.
pub const LEEWAY_SECS: u64 = 60;

#[derive(Deserialize, Serialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// Makes every token palaver issues unique, even two for one user in the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// Every other claim, for `--admin-claim`.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// A verified token: its user, until when (unix seconds, leeway included) it stands, and whether it makes the
/// user a namespace admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub user: User,
    pub valid_until: i64,
    pub admin: bool,
}

impl JwtVerifier {
    /// `None` when the configuration names no key at all (guests only).
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        let mut keys = Vec::new();
        if let Some(secret) = config.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(path) = &config.jwt_public_key {
            let fail = |reason: String| ConfigError::PublicKey {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            let key = match config.jwt_algorithm {
                PublicKeyAlgorithm::Rs256 => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                PublicKeyAlgorithm::Es256 => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
            };
            keys.push((key.0, key.1.map_err(|e| fail(e.to_string()))?));
        }
        let own = config
            .token_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        let admin_claim =
            AdminClaim::parse(&config.admin_claim).map_err(ConfigError::AdminClaim)?;
        Ok((!keys.is_empty() || own.is_some()).then_some(Self {
            keys,
            own,
            admin_claim,
        }))
    }

    /// A verifier for one HS256 secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            keys: vec![(Algorithm::HS256, DecodingKey::from_secret(secret))],
            own: None,
            admin_claim: None,
        }
    }

    /// The same verifier, with `claim` making users admins.
    pub fn with_admin_claim(self, claim: Option<AdminClaim>) -> Self {
        Self {
            admin_claim: claim,
            ..self
        }
    }

    /// Checks signature, algorithm and expiry, and maps the claims to a user.
    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        self.verify_until(token).map(|v| v.user)
    }

    /// [`JwtVerifier::verify`], and until when the token stands.
    pub fn verify_until(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::new("invalid_token", "the token is not a well-formed JWT"))?;
        let own = header.kid.as_deref() == Some(OWN_KEY_ID) && header.alg == Algorithm::HS256;
        let (algorithm, key) = match (&self.own, own) {
            (Some(key), true) => (Algorithm::HS256, key),
            _ => self
                .keys
                .iter()
                .find(|(alg, _)| *alg == header.alg)
                .map(|(alg, key)| (*alg, key))
                .ok_or_else(|| {
                    AuthError::new(
                        "wrong_algorithm",
                        format!(
                            "tokens signed with {:?} are not accepted; this server accepts {}",
                            header.alg,
                            self.accepted()
                        ),
                    )
                })?,
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        let own = own && self.own.is_some();
        let leeway = if own {
            validation.set_issuer(&[OWN_KEY_ID]);
            0
        } else {
            LEEWAY_SECS
        };
        validation.leeway = leeway;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => {
                AuthError::new("bad_signature", "the token's signature does not verify")
            }
            ErrorKind::ExpiredSignature => AuthError::new("expired", "the token has expired"),
            ErrorKind::ImmatureSignature => {
                AuthError::new("invalid_token", "the token is not valid yet (nbf)")
            }
            ErrorKind::InvalidAlgorithm => AuthError::new(
                "wrong_algorithm",
                format!("this server accepts {}", self.accepted()),
            ),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::new("invalid_token", format!("the token has no {claim:?} claim"))
            }
            _ => AuthError::new("invalid_token", format!("the token is invalid: {e}")),
        })?;
        let claims = data.claims;
        let valid_until = claims
            .exp
            .unwrap_or_default()
            .saturating_add(i64::try_from(leeway).unwrap_or_default());
        let id = claims
            .sub
            .filter(|sub| !sub.trim().is_empty())
            .ok_or_else(|| AuthError::new("missing_sub", "the token has no \"sub\" claim"))?;
        if id.chars().any(char::is_control) {
            return Err(AuthError::new(
                "invalid_claim",
                "the token's \"sub\" claim contains control characters, which cannot be stored",
            ));
        }
        let mut name = None;
        for (claim, value) in [
            ("name", claims.name),
            ("preferred_username", claims.preferred_username),
        ] {
            let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            // Identity providers allow long names; palaver shows the first 32 characters.
            let shortened: String = value
                .trim()
                .chars()
                .take(super::names::MAX_NAME_CHARS)
                .collect();
            let field = format!("the token's {claim:?} claim");
            name = Some(
                super::names::validate_display_name(&field, &shortened)
                    .map_err(|reason| AuthError::new("invalid_claim", reason))?,
            );
            break;
        }
        let name = name.unwrap_or_else(|| id.clone());
        // palaver's own tokens say who the user is, never what they may do.
        let admin = !own
            && self
                .admin_claim
                .as_ref()
                .is_some_and(|claim| claim.grants(&claims.other));
        Ok(Verified {
            user: User {
                id,
                name,
                anonymous: false,
            },
            valid_until,
            admin,
        })
    }

    fn accepted(&self) -> String {
        let mut names: Vec<String> = self
            .keys
            .iter()
            .map(|(alg, _)| format!("{alg:?}"))
            .collect();
        if self.own.is_some() {
            names.push("palaver's own tokens".to_owned());
        }
        names.join(", ")
    }
}

/// Issues palaver's own access tokens: HS256 with `--token-secret`, `kid` and `iss` "palaver", `sub` and
/// `name` the user's, valid for `--access-token-ttl-secs`. Holds key material, so no `Debug`.
#[derive(Clone)]
pub struct TokenIssuer {
    key: jsonwebtoken::EncodingKey,
    ttl: chrono::Duration,
}

impl TokenIssuer {
    /// `None` without `--token-secret`.
    pub fn from_config(config: &Config) -> Option<Self> {
        let secret = config.token_secret.as_deref().filter(|s| !s.is_empty())?;
        Some(Self {
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            ttl: chrono::Duration::seconds(config.access_token_ttl_secs.get().into()),
        })
    }

    /// A new access token for the user, and when it expires.
    pub fn issue(&self, user: &User) -> Result<(String, chrono::DateTime<chrono::Utc>), AuthError> {
        let now = chrono::Utc::now();
        // Whole seconds, as in the token's `exp`: what the body says is what the token holds.
        let expires =
            chrono::DateTime::from_timestamp((now + self.ttl).timestamp(), 0).unwrap_or(now);
        let claims = Claims {
            sub: Some(user.id.clone()),
            name: Some(user.name.clone()),
            preferred_username: None,
            exp: Some(expires.timestamp()),
            iat: Some(now.timestamp()),
            iss: Some(OWN_KEY_ID.to_owned()),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            other: serde_json::Map::new(),
        };
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(OWN_KEY_ID.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an access token");
            AuthError::new("unavailable", "cannot issue a token now; retry")
        })?;
        Ok((token, expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn token(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    fn exp(offset: i64) -> i64 {
        chrono::Utc::now().timestamp() + offset
    }

    #[test]
    fn claims_map_to_a_user() {
        let v = JwtVerifier::hs256(b"s");
        let t = token(
            Algorithm::HS256,
            b"s",
            json!({ "sub": "u1", "name": "Ada", "exp": exp(60) }),
        );
        assert_eq!(
            v.verify(&t),
            Ok(User {
                id: "u1".into(),
                name: "Ada".into(),
                anonymous: false
            })
        );
        let t = token(
            Algorithm::HS256,
            b"s",
            json!({ "sub": "u1", "preferred_username": "ada", "exp": exp(60) }),
        );
        assert_eq!(v.verify(&t).map(|u| u.name), Ok("ada".into()));
        let t = token(
            Algorithm::HS256,
            b"s",
            json!({ "sub": "u1", "exp": exp(60) }),
        );
        assert_eq!(v.verify(&t).map(|u| u.name), Ok("u1".into()));
    }

    #[test]
    fn claims_that_cannot_be_stored_are_refused() {
        let v = JwtVerifier::hs256(b"s");
        for claims in [
            json!({ "sub": "u1", "name": "evil\u{0}", "exp": exp(60) }),
            json!({ "sub": "u1", "preferred_username": "a\u{7}b", "exp": exp(60) }),
            json!({ "sub": "u\u{0}1", "name": "Ada", "exp": exp(60) }),
        ] {
            let t = token(Algorithm::HS256, b"s", claims.clone());
            let err = v.verify(&t).expect_err("refused");
            assert_eq!(err.code, "invalid_claim", "{claims}");
            assert!(err.message.contains("claim"), "{}", err.message);
        }
    }

    fn public_key_config(alg: &str, public_pem: &str) -> Config {
        use clap::Parser;
        let path = format!("{}/tests/fixtures/{public_pem}", env!("CARGO_MANIFEST_DIR"));
        Config::parse_from(["palaver", "--jwt-public-key", &path, "--jwt-algorithm", alg])
    }

    #[test]
    fn public_keys_verify_rs256_and_es256() {
        let claims = json!({ "sub": "u2", "name": "Bo", "exp": exp(60) });
        for (alg, algorithm, private, public) in [
            (
                "RS256",
                Algorithm::RS256,
                &include_bytes!("../../tests/fixtures/rs256-private.pem")[..],
                "rs256-public.pem",
            ),
            (
                "ES256",
                Algorithm::ES256,
                &include_bytes!("../../tests/fixtures/es256-private.pem")[..],
                "es256-public.pem",
            ),
        ] {
            let verifier = JwtVerifier::from_config(&public_key_config(alg, public))
                .expect("key loads")
                .expect("configured");
            let key = match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private),
                _ => EncodingKey::from_ec_pem(private),
            }
            .expect("private key");
            let token = encode(&Header::new(algorithm), &claims, &key).expect("sign");
            assert_eq!(
                verifier.verify(&token).map(|u| u.id),
                Ok("u2".to_owned()),
                "{alg}"
            );
            // An HS256 token is refused by a server configured for a public key only.
            let hs = token_hs(&claims);
            assert_eq!(
                verifier.verify(&hs).map_err(|e| e.code),
                Err("wrong_algorithm"),
                "{alg}"
            );
        }
    }

    fn token_hs(claims: &serde_json::Value) -> String {
        token(Algorithm::HS256, b"s", claims.clone())
    }

    #[test]
    fn the_admin_claim_makes_admins_of_an_identity_providers_users_only() {
        let claim = AdminClaim::parse("roles=admin").expect("valid");
        let v = JwtVerifier::hs256(b"s").with_admin_claim(claim);
        let verified = |claims: serde_json::Value| {
            v.verify_until(&token(Algorithm::HS256, b"s", claims))
                .expect("valid")
        };
        assert!(verified(json!({ "sub": "u1", "roles": ["admin"], "exp": exp(60) })).admin);
        assert!(!verified(json!({ "sub": "u1", "roles": ["user"], "exp": exp(60) })).admin);
        assert!(!verified(json!({ "sub": "u1", "exp": exp(60) })).admin);
        assert!(
            !JwtVerifier::hs256(b"s")
                .verify_until(&token(
                    Algorithm::HS256,
                    b"s",
                    json!({ "sub": "u1", "roles": ["admin"], "exp": exp(60) })
                ))
                .expect("valid")
                .admin,
            "no claim configured: no admins"
        );
        // palaver's own tokens never make admins, whatever they carry.
        let mut own = JwtVerifier::hs256(b"s")
            .with_admin_claim(AdminClaim::parse("roles=admin").expect("valid"));
        own.own = Some(DecodingKey::from_secret(b"own-secret"));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(OWN_KEY_ID.to_owned());
        let claims = json!({ "sub": "u1", "roles": ["admin"], "iss": OWN_KEY_ID, "exp": exp(60) });
        let signed =
            encode(&header, &claims, &EncodingKey::from_secret(b"own-secret")).expect("sign");
        let verified = own.verify_until(&signed).expect("valid");
        assert_eq!(verified.user.id, "u1");
        assert!(!verified.admin);
    }

    #[test]
    fn each_rejection_names_its_reason() {
        let v = JwtVerifier::hs256(b"s");
        let code = |t: &str| v.verify(t).map_err(|e| e.code).err();
        let good = json!({ "sub": "u", "exp": exp(60) });
        assert_eq!(
            code(&token(Algorithm::HS256, b"other", good.clone())),
            Some("bad_signature")
        );
        assert_eq!(
            code(&token(Algorithm::HS384, b"s", good)),
            Some("wrong_algorithm")
        );
        assert_eq!(
            code(&token(
                Algorithm::HS256,
                b"s",
                json!({ "sub": "u", "exp": exp(-3600) })
            )),
            Some("expired")
        );
        assert_eq!(
            code(&token(Algorithm::HS256, b"s", json!({ "exp": exp(60) }))),
            Some("missing_sub")
        );
        assert_eq!(code("garbage"), Some("invalid_token"));
    }
}
