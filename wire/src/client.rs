//! A typed client of the site protocol for one site: assignments in, instance reports out.
//! Used by the process agent and the Kubernetes driver.

use std::time::Duration;

use mecfed_core::{InstanceId, SiteId};

use crate::site::{Assignments, InstanceReport};

/// A client of `/mecfed/v1/sites/{siteId}/...` for one site.
#[derive(Debug, Clone)]
pub struct PlatformClient {
    client: reqwest::Client,
    controller: String,
    site: SiteId,
}

impl PlatformClient {
    /// A client for `site` at `controller` (base URL), with a 5 s request timeout.
    pub fn new(controller: &str, site: SiteId) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            controller: controller.trim_end_matches('/').to_string(),
            site,
        })
    }

    /// The platform's base URL.
    pub fn controller(&self) -> &str {
        &self.controller
    }

    /// The site's id.
    pub fn site(&self) -> &SiteId {
        &self.site
    }

    /// `GET .../assignments`.
    pub async fn assignments(&self, cred: &str) -> Result<Assignments, reqwest::Error> {
        let url = format!(
            "{}/mecfed/v1/sites/{}/assignments",
            self.controller, self.site
        );
        self.client
            .get(url)
            .bearer_auth(cred)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// `PUT .../instances/{id}`; whether the platform took it.
    pub async fn report(&self, cred: &str, id: &InstanceId, report: &InstanceReport) -> bool {
        let url = format!(
            "{}/mecfed/v1/sites/{}/instances/{id}",
            self.controller, self.site
        );
        self.client
            .put(url)
            .bearer_auth(cred)
            .json(report)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `DELETE .../instances/{id}`, best effort: the instance no longer runs here.
    pub async fn forget(&self, cred: &str, id: &InstanceId) {
        let url = format!(
            "{}/mecfed/v1/sites/{}/instances/{id}",
            self.controller, self.site
        );
        let _ = self.client.delete(url).bearer_auth(cred).send().await;
    }
}
