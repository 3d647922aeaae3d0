//! The instance's side of ETSI MEC 011: with the credentials its platform hands it
//! (`MEC_PLATFORM_URL`, `MEC_TOKEN_URL`, `MEC_CLIENT_ID`, `MEC_CLIENT_SECRET`,
//! `MECFED_INSTANCE_ID`), it takes an OAuth 2.0 client-credentials token and tells the
//! platform it is ready (`POST /mec_app_support/v1/applications/{appInstanceId}/confirm_ready`).

use std::time::Duration;

/// A MEC platform as the running instance reaches it.
#[derive(Debug, Clone)]
pub struct MecPlatform {
    /// Base URL.
    pub url: String,
    /// Token endpoint.
    pub token_url: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: String,
    /// This instance.
    pub instance_id: String,
}

/// Why a call to the platform failed.
#[derive(Debug, thiserror::Error)]
pub enum MecError {
    /// Transport.
    #[error("platform unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// The platform refused.
    #[error("platform answered {status}: {body}")]
    Refused {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
}

impl MecPlatform {
    /// The platform from the environment the agent sets; `None` when run outside one.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let url = var("MEC_PLATFORM_URL")?;
        Some(Self {
            token_url: var("MEC_TOKEN_URL").unwrap_or_else(|| format!("{url}/oauth2/token")),
            url,
            client_id: var("MEC_CLIENT_ID")?,
            client_secret: var("MEC_CLIENT_SECRET")?,
            instance_id: var("MECFED_INSTANCE_ID")?,
        })
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, MecError> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(MecError::Refused {
                status: resp.status().as_u16(),
                body: resp.text().await.unwrap_or_default(),
            })
        }
    }

    /// A bearer token for this instance.
    pub async fn token(&self, http: &reqwest::Client) -> Result<String, MecError> {
        let resp = http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await?;
        let v: serde_json::Value = Self::check(resp).await?.json().await?;
        Ok(v["access_token"].as_str().unwrap_or_default().to_string())
    }

    /// `confirm_ready`, once.
    pub async fn confirm_ready(&self, http: &reqwest::Client) -> Result<(), MecError> {
        let token = self.token(http).await?;
        let url = format!(
            "{}/mec_app_support/v1/applications/{}/confirm_ready",
            self.url, self.instance_id
        );
        let resp = http
            .post(url)
            .bearer_auth(token)
            .json(&serde_json::json!({"AppReadyConfirmation": {"indication": "READY"}}))
            .send()
            .await?;
        Self::check(resp).await.map(|_| ())
    }

    /// `confirm_ready` until the platform takes it (it knows the instance only once its
    /// agent has reported it), backing off from 100 ms to 2 s, for at most `patience`.
    pub async fn confirm_ready_retrying(&self, patience: Duration) -> Result<(), MecError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = tokio::time::Instant::now() + patience;
        let mut wait = Duration::from_millis(100);
        loop {
            match self.confirm_ready(&http).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + wait >= deadline => return Err(e),
                Err(e) => tracing::debug!(error = %e, "confirm_ready not taken yet"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}
