//! JWT verification: HS256 with a shared secret, RS256 or ES256 with a public key.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{AuthError, User};
use crate::config::{Config, ConfigError, PublicKeyAlgorithm};

/// Verifies tokens against the keys the server was configured with. Holds key material, so no `Debug`.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    preferred_username: Option<String>,
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
        Ok((!keys.is_empty()).then_some(Self { keys }))
    }

    /// A verifier for one HS256 secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            keys: vec![(Algorithm::HS256, DecodingKey::from_secret(secret))],
        }
    }

    /// Checks signature, algorithm and expiry, and maps the claims to a user.
    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::new("invalid_token", "the token is not a well-formed JWT"))?;
        let (algorithm, key) = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or_else(|| {
                AuthError::new(
                    "wrong_algorithm",
                    format!(
                        "tokens signed with {:?} are not accepted; this server accepts {}",
                        header.alg,
                        self.accepted()
                    ),
                )
            })?;
        let mut validation = Validation::new(*algorithm);
        validation.set_required_spec_claims(&["exp"]);
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
        Ok(User {
            id,
            name,
            anonymous: false,
        })
    }

    fn accepted(&self) -> String {
        let names: Vec<String> = self
            .keys
            .iter()
            .map(|(alg, _)| format!("{alg:?}"))
            .collect();
        names.join(", ")
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
