//! The platform's token signing key (Ed25519, kept in the state store so that every API
//! replica signs and verifies with the same one), token issue and verification.

use std::time::Duration;

use base64::Engine;
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mecfed_core::{AppId, DeveloperId, InstanceId};
use mecfed_store::{
    Store,
    typed::{Resource, Typed, TypedError},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Principal, RateLimit, Role, TOKEN_TTL};
use crate::util::now_unix;

/// The issuer named in every token.
pub(super) const ISSUER: &str = "mecfed";

/// The signing key as stored (`/mecfed/v1/authkeys/current`). The private half is in the
/// store: whoever reads the store can mint tokens, as with any control plane's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeyDoc {
    /// Always `current`.
    pub id: String,
    /// Key id, in token headers and the JWKS.
    pub kid: String,
    /// Hex Ed25519 seed.
    pub seed_hex: String,
    /// Hex key deriving app-instance client secrets.
    pub instance_key_hex: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl Resource for SigningKeyDoc {
    const KIND: &'static str = "authkeys";
    fn id(&self) -> String {
        self.id.clone()
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer access token")]
    Missing,
    /// Bad signature, malformed, wrong issuer or expired.
    #[error("invalid or expired access token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// The claims of a mecfed access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
    scope: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<DeveloperId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<AppId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inst: Option<InstanceId>,
    /// Requests per second, burst.
    rate: (u32, u32),
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct Auth {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: [u8; 32],
    instance_key: [u8; 32],
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("kid", &self.kid).finish()
    }
}

fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b
}

impl Auth {
    fn from_parts(kid: String, seed: [u8; 32], instance_key: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let der = signing
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes as PKCS#8");
        let public = signing.verifying_key().to_bytes();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            kid,
            public,
            instance_key,
            validation,
        }
    }

    /// A fresh key held only in memory (tests, single-use tools).
    pub fn ephemeral() -> Self {
        Self::from_parts(hex::encode(&random_32()[..8]), random_32(), random_32())
    }

    /// The store's key, created on first use. Replicas racing to create it all end up with
    /// the one that was stored first.
    pub async fn load_or_create<S: Store>(store: &Typed<S>) -> Result<Self, TypedError> {
        loop {
            if let Some(doc) = store.get::<SigningKeyDoc>("current").await? {
                return Self::from_doc(&doc.value);
            }
            let doc = SigningKeyDoc {
                id: "current".into(),
                kid: hex::encode(&random_32()[..8]),
                seed_hex: hex::encode(random_32()),
                instance_key_hex: hex::encode(random_32()),
                created_at: now_unix(),
            };
            match store.create(&doc).await {
                Ok(_) => return Self::from_doc(&doc),
                Err(TypedError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn from_doc(doc: &SigningKeyDoc) -> Result<Self, TypedError> {
        let bad = || TypedError::Decode {
            kind: SigningKeyDoc::KIND,
            key: doc.id.clone(),
            source: serde_json::Error::io(std::io::Error::other("not a 32-byte hex key")),
        };
        let seed: [u8; 32] = hex::decode(&doc.seed_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        let ik: [u8; 32] = hex::decode(&doc.instance_key_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Self::from_parts(doc.kid.clone(), seed, ik))
    }

    /// A signed access token for `p`, and its lifetime in seconds.
    pub fn issue(&self, p: &Principal) -> (String, u64) {
        self.issue_at(p, now_unix(), TOKEN_TTL)
    }

    fn issue_at(&self, p: &Principal, now: u64, ttl: Duration) -> (String, u64) {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: p.client_id.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: hex::encode(&random_32()[..12]),
            scope: p.scopes.join(" "),
            role: p.role,
            tenant: p.developer.clone(),
            app: p.app.clone(),
            inst: p.instance.clone(),
            rate: (p.rate.per_second, p.rate.burst),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("EdDSA signing with a valid key does not fail");
        (token, ttl.as_secs())
    }

    /// The principal of a valid token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(AuthError::Invalid)?;
        let c = data.claims;
        Ok(Principal {
            client_id: c.sub,
            role: c.role,
            developer: c.tenant,
            app: c.app,
            instance: c.inst,
            scopes: c.scope.split_whitespace().map(String::from).collect(),
            rate: RateLimit {
                per_second: c.rate.0,
                burst: c.rate.1,
            },
        })
    }

    /// HMAC-SHA-256 of instance `id` under the platform's instance key.
    fn instance_mac(&self, id: &InstanceId) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.instance_key).expect("HMAC takes any key length");
        mac.update(id.as_str().as_bytes());
        mac
    }

    /// The client secret of app instance `id`: its hex [`Self::instance_mac`].
    pub fn instance_secret(&self, id: &InstanceId) -> String {
        hex::encode(self.instance_mac(id).finalize().into_bytes())
    }

    /// Whether `secret` is app instance `id`'s client secret (constant time).
    pub fn check_instance_secret(&self, id: &InstanceId, secret: &str) -> bool {
        hex::decode(secret).is_ok_and(|given| self.instance_mac(id).verify_slice(&given).is_ok())
    }

    /// The public key as a JSON Web Key Set (RFC 8037 OKP key).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public),
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn developer() -> Principal {
        Principal {
            client_id: "dev.studio".into(),
            role: Role::Developer,
            developer: Some(DeveloperId::new("studio").unwrap()),
            app: None,
            instance: None,
            scopes: vec!["mecfed:apps".into(), "mec_app_support".into()],
            rate: RateLimit {
                per_second: 10,
                burst: 20,
            },
        }
    }

    #[test]
    fn tokens_round_trip_and_other_keys_refuse_them() {
        let auth = Auth::ephemeral();
        let (token, ttl) = auth.issue(&developer());
        assert_eq!(ttl, TOKEN_TTL.as_secs());
        assert_eq!(auth.verify(&token).unwrap(), developer());
        assert!(matches!(
            Auth::ephemeral().verify(&token),
            Err(AuthError::Invalid(_))
        ));
        // A flipped payload byte breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let flipped = if parts[1].starts_with('e') { "f" } else { "e" };
        parts[1].replace_range(0..1, flipped);
        assert!(auth.verify(&parts.join(".")).is_err());
        assert!(auth.verify("not.a.token").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Auth::ephemeral();
        let (token, _) = auth.issue_at(&developer(), now_unix() - 7200, Duration::from_secs(60));
        assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn instance_secrets_are_derived_and_checked() {
        let auth = Auth::ephemeral();
        let a = InstanceId::new("arena-s1-0").unwrap();
        let b = InstanceId::new("arena-s1-1").unwrap();
        let secret = auth.instance_secret(&a);
        assert_eq!(secret.len(), 64);
        assert!(auth.check_instance_secret(&a, &secret));
        assert!(!auth.check_instance_secret(&b, &secret));
        assert!(!auth.check_instance_secret(&a, "zz"));
        assert!(!Auth::ephemeral().check_instance_secret(&a, &secret));
    }

    #[tokio::test]
    async fn replicas_share_the_stored_key() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Typed::new(mecfed_store::EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap());
        let a = Auth::load_or_create(&store).await.unwrap();
        let b = Auth::load_or_create(&store).await.unwrap();
        let (token, _) = a.issue(&developer());
        assert_eq!(b.verify(&token).unwrap(), developer());
        assert_eq!(a.jwks(), b.jwks());
    }
}
