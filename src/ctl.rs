//! `mecfed ctl`: a client of the platform's REST API.

use std::io::Write;

use anyhow::{Context, bail};
use mecfed_api::sites::JoinTokenCreated;
use mecfed_api::{
    auth::{DeveloperCreated, DeveloperView},
    camara::eam::EdgeCloudZone,
};
use mecfed_core::{App, Instance, Placement, PlacementPolicy, Site, Ue};
use mecfed_scheduler::{Explanation, Unmet};
use serde_json::json;

use crate::cli::{
    AppsCommand, CtlArgs, CtlCommand, DevelopersCommand, JoinTokenCommand, OutputFormat,
    SubscriptionsCommand, UesCommand,
};

/// An access token for the configured client, from the platform's token endpoint.
async fn access_token(
    client: &reqwest::Client,
    base: &str,
    args: &CtlArgs,
) -> anyhow::Result<String> {
    let secret = match &args.client_secret {
        Some(s) => s.clone(),
        None => std::fs::read_to_string(&args.client_secret_file)
            .with_context(|| {
                format!(
                    "cannot read the client secret from {} (give --client-secret or \
                     --client-secret-file; `mecfed up` writes the operator's into its data \
                     directory)",
                    args.client_secret_file.display()
                )
            })?
            .trim()
            .to_string(),
    };
    let resp = client
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", args.client_id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the token endpoint refused client {}: {} ({})",
            args.client_id,
            body["error_description"]
                .as_str()
                .unwrap_or("no description"),
            body["error"].as_str().unwrap_or("error")
        );
    }
    body["access_token"]
        .as_str()
        .map(String::from)
        .context("the token endpoint answered without an access_token")
}

pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').to_string();
    let plain = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let token = access_token(&plain, &base, &args).await?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .default_headers(headers)
        .build()?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        CtlCommand::Sites => {
            let sites: Vec<Site> = get_json(&client, &format!("{base}/mecfed/v1/sites")).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&sites)?)?,
                OutputFormat::Table => write_sites(&mut out, &sites)?,
            }
        }
        CtlCommand::Instances => {
            let list: Vec<Instance> =
                get_json(&client, &format!("{base}/mecfed/v1/instances")).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &["INSTANCE", "APP", "SITE", "STATE", "ENDPOINT", "PID"],
                    list.iter()
                        .map(|i| {
                            vec![
                                i.id.to_string(),
                                i.app.to_string(),
                                i.site.to_string(),
                                format!("{:?}", i.state),
                                i.endpoint.clone().unwrap_or_default(),
                                i.pid.map(|p| p.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Logs { instance, tail } => {
            let url = format!("{base}/mecfed/v1/instances/{instance}/logs?tail={tail}");
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            out.write_all(&body_or_problem(resp).await?)?;
        }
        CtlCommand::JoinToken(JoinTokenCommand::Create {
            ttl_seconds,
            description,
        }) => {
            let resp = client
                .post(format!("{base}/mecfed/v1/join-tokens"))
                .json(&json!({"ttlSeconds": ttl_seconds, "description": description}))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let created: JoinTokenCreated = decode(resp).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&created)?)?,
                OutputFormat::Table => writeln!(out, "{}", created.token)?,
            }
        }
        CtlCommand::Apps(AppsCommand::List) => {
            let apps: Vec<App> = get_json(&client, &format!("{base}/mecfed/v1/apps")).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&apps)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &[
                        "APP",
                        "VERSION",
                        "BUDGET",
                        "SESSIONS/INSTANCE",
                        "DEMAND AREAS",
                    ],
                    apps.iter()
                        .map(|a| {
                            vec![
                                a.id.to_string(),
                                a.version.clone(),
                                format!("{} ms", a.qos.latency_budget_ms),
                                a.qos.max_sessions_per_instance.to_string(),
                                a.qos
                                    .demand_areas
                                    .iter()
                                    .map(|d| format!("{}:{}", d.name, d.expected_sessions))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Apps(AppsCommand::Apply { file, policy }) => {
            let app: App = read_json(file)?;
            let mut held_new = false;
            if let Some(policy) = policy {
                let policy: PlacementPolicy = read_json(policy)?;
                let app_url = format!("{base}/mecfed/v1/apps/{}", app.id);
                let exists = client
                    .get(&app_url)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?
                    .status()
                    .is_success();
                if !exists {
                    // Held: an app deployed to no zone is not placed (the policy needs the
                    // app to exist first).
                    let mut held = app.clone();
                    held.zones = Some(Vec::new());
                    let resp = client.put(&app_url).json(&held).send().await?;
                    let _: App = decode(resp).await?;
                    held_new = true;
                }
                let resp = client
                    .put(format!("{app_url}/policy"))
                    .json(&policy)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?;
                let _: PlacementPolicy = decode(resp).await.with_context(|| {
                    format!(
                        "setting the policy of app {} (a new app stays unplaced until this \
                         command succeeds)",
                        app.id
                    )
                })?;
                writeln!(out, "policy of app {} set", app.id)?;
            }
            let resp = client
                .put(format!("{base}/mecfed/v1/apps/{}", app.id))
                .json(&app)
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let created = held_new || resp.status() == reqwest::StatusCode::CREATED;
            let app: App = decode(resp).await?;
            writeln!(
                out,
                "app {} {}",
                app.id,
                if created { "created" } else { "updated" }
            )?;
        }
        CtlCommand::Apps(AppsCommand::Delete { app }) => {
            let resp = client
                .delete(format!("{base}/mecfed/v1/apps/{app}"))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            body_or_problem(resp).await?;
            writeln!(out, "app {app} deleted")?;
        }
        CtlCommand::Policy { app, file } => {
            let policy: PlacementPolicy = read_json(file)?;
            let resp = client
                .put(format!("{base}/mecfed/v1/apps/{app}/policy"))
                .json(&policy)
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let _: PlacementPolicy = decode(resp).await?;
            writeln!(out, "policy of app {app} set")?;
        }
        CtlCommand::Placements { app } => {
            let url = match app {
                Some(a) => format!("{base}/mecfed/v1/placements?app={a}"),
                None => format!("{base}/mecfed/v1/placements"),
            };
            let list: Vec<Placement> = get_json(&client, &url).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &["APP", "SITE", "REPLICAS", "STATE"],
                    list.iter()
                        .map(|p| {
                            vec![
                                p.app.to_string(),
                                p.site.to_string(),
                                p.replicas.to_string(),
                                p.evicting_until.map_or_else(
                                    || "placed".to_string(),
                                    |t| format!("evicting (until {t})"),
                                ),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Developers(cmd) => {
            developers(&client, &base, cmd, args.output, &mut out).await?
        }
        CtlCommand::Zones => {
            let zones: Vec<EdgeCloudZone> = get_json(
                &client,
                &format!("{base}{}/edge-cloud-zones", mecfed_api::camara::EAM_ROOT),
            )
            .await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&zones)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &["ZONE", "STATUS", "PROVIDER", "REGION", "ID"],
                    zones
                        .iter()
                        .map(|z| {
                            vec![
                                z.edge_cloud_zone_name.clone(),
                                z.edge_cloud_zone_status.clone(),
                                z.edge_cloud_provider.clone(),
                                z.edge_cloud_region.clone(),
                                z.edge_cloud_zone_id.clone(),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Subscriptions(SubscriptionsCommand::List) => {
            let subs: Vec<mecfed_api::notify::SubscriptionView> =
                get_json(&client, &format!("{base}/mecfed/v1/subscriptions")).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&subs)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &[
                        "ID", "TYPE", "TENANT", "CALLBACK", "QUEUED", "PENDING", "EXPIRES",
                    ],
                    subs.iter()
                        .map(|s| {
                            vec![
                                s.id.clone(),
                                s.subscription_type.clone(),
                                s.developer.clone().unwrap_or_else(|| "operator".into()),
                                s.callback_reference.clone(),
                                s.queued.to_string(),
                                s.pending.to_string(),
                                s.expiry_deadline.map(|d| d.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Subscriptions(SubscriptionsCommand::Delete { id }) => {
            let resp = client
                .delete(format!("{base}/mecfed/v1/subscriptions/{id}"))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            body_or_problem(resp).await?;
            writeln!(out, "subscription {id} deleted")?;
        }
        CtlCommand::Deployments => {
            let list: Vec<mecfed_api::camara::lifecycle::AppDeploymentInfo> = get_json(
                &client,
                &format!("{base}{}/deployments", mecfed_api::camara::EAM_ROOT),
            )
            .await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &["DEPLOYMENT", "NAME", "APP", "ZONES", "APP INSTANCES"],
                    list.iter()
                        .map(|d| {
                            vec![
                                d.app_deployment_id.clone(),
                                d.app_deployment_name.clone(),
                                d.app_id.clone(),
                                d.edge_cloud_zones.join(","),
                                d.app_instances.len().to_string(),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Ues(UesCommand::List) => {
            let ues: Vec<Ue> = get_json(&client, &format!("{base}/mecfed/v1/ues")).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&ues)?)?,
                OutputFormat::Table => write_table(
                    &mut out,
                    &["UE", "PHONE", "IPV4", "ACCESS POINT", "OPERATOR"],
                    ues.iter()
                        .map(|u| {
                            let a = u.attachment.as_ref();
                            vec![
                                u.id.to_string(),
                                u.identity.phone_number.clone().unwrap_or_default(),
                                u.identity
                                    .ipv4_address
                                    .map(|i| i.to_string())
                                    .unwrap_or_default(),
                                a.map(|a| a.access_point.clone()).unwrap_or_default(),
                                a.map(|a| a.operator.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        CtlCommand::Ues(UesCommand::Apply { file }) => {
            let ue: Ue = read_json(file)?;
            let resp = client
                .put(format!("{base}/mecfed/v1/ues/{}", ue.id))
                .json(&ue)
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let ue: Ue = decode(resp).await?;
            writeln!(out, "ue {} applied", ue.id)?;
        }
        CtlCommand::Explain { app } => {
            let e: Explanation =
                get_json(&client, &format!("{base}/mecfed/v1/apps/{app}/explain")).await?;
            match args.output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?,
                OutputFormat::Table => write_explanation(&mut out, &e)?,
            }
        }
    }
    Ok(())
}

async fn developers(
    client: &reqwest::Client,
    base: &str,
    cmd: &DevelopersCommand,
    output: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let created = |out: &mut dyn Write, c: &DeveloperCreated| -> anyhow::Result<()> {
        match output {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(c)?)?,
            OutputFormat::Table => {
                writeln!(out, "client_id:     {}", c.client_id)?;
                writeln!(out, "client_secret: {}", c.client_secret)?;
                writeln!(out, "(the secret is shown once; store it now)")?;
            }
        }
        Ok(())
    };
    match cmd {
        DevelopersCommand::List => {
            let list: Vec<DeveloperView> =
                get_json(client, &format!("{base}/mecfed/v1/developers")).await?;
            match output {
                OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                OutputFormat::Table => write_table(
                    out,
                    &[
                        "DEVELOPER",
                        "CLIENT ID",
                        "APP PROVIDER",
                        "RATE",
                        "DESCRIPTION",
                    ],
                    list.iter()
                        .map(|d| {
                            vec![
                                d.id.to_string(),
                                d.client_id.clone(),
                                d.app_provider.clone(),
                                format!(
                                    "{}/s burst {}",
                                    d.rate_limit.per_second, d.rate_limit.burst
                                ),
                                d.description.clone(),
                            ]
                        })
                        .collect(),
                )?,
            }
        }
        DevelopersCommand::Create {
            id,
            app_provider,
            description,
            rate,
            burst,
        } => {
            let mut body =
                json!({"id": id, "appProvider": app_provider, "description": description});
            if rate.is_some() || burst.is_some() {
                let per_second = rate.unwrap_or(50);
                body["rateLimit"] =
                    json!({"perSecond": per_second, "burst": burst.unwrap_or(per_second * 2)});
            }
            let resp = client
                .post(format!("{base}/mecfed/v1/developers"))
                .json(&body)
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let c: DeveloperCreated = decode(resp).await?;
            created(out, &c)?;
        }
        DevelopersCommand::RotateSecret { id } => {
            let resp = client
                .post(format!("{base}/mecfed/v1/developers/{id}/secret"))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let c: DeveloperCreated = decode(resp).await?;
            created(out, &c)?;
        }
        DevelopersCommand::Delete { id } => {
            let resp = client
                .delete(format!("{base}/mecfed/v1/developers/{id}"))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            body_or_problem(resp).await?;
            writeln!(out, "developer {id} deleted")?;
        }
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// The decision, then a line per site: chosen ones with instances and score, rejected ones
/// with their reasons.
fn write_explanation(out: &mut impl Write, e: &Explanation) -> std::io::Result<()> {
    writeln!(
        out,
        "app {}: {} instance(s) wanted, {} placed on {} site(s); latency budget {} ms",
        e.app,
        e.decision.wanted,
        e.decision.total(),
        e.decision.targets.len(),
        e.latency_budget_ms
    )?;
    for u in &e.decision.unmet {
        match u {
            Unmet::Demand {
                area,
                wanted,
                placed,
            } => writeln!(
                out,
                "unmet: {} wants {wanted}, {placed} placed",
                area.as_deref().unwrap_or("(beyond the demand areas)")
            )?,
            Unmet::Spread {
                by,
                min_groups,
                groups,
            } => writeln!(
                out,
                "unmet: spread by {by:?} wants {min_groups} groups, reached {groups}"
            )?,
        }
    }
    let rows = e
        .sites
        .iter()
        .map(|s| {
            let rtt = s
                .rtt
                .iter()
                .map(|r| {
                    format!(
                        "{}:{:.1}{}",
                        r.area,
                        r.rtt_ms,
                        if r.measured { "m" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                s.site.to_string(),
                s.operator.clone(),
                s.zone.clone(),
                if s.replicas > 0 {
                    format!("chosen x{}", s.replicas)
                } else {
                    "rejected".into()
                },
                s.score
                    .map(|x| format!("{:.1}", x.total))
                    .unwrap_or_default(),
                rtt,
                s.details.join("; "),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "SITE", "OPERATOR", "ZONE", "DECISION", "SCORE", "RTT MS", "WHY NOT",
        ],
        rows,
    )
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    decode(resp).await
}

/// The body, or the server's ProblemDetails `detail` as the error.
async fn body_or_problem(resp: reqwest::Response) -> anyhow::Result<bytes::Bytes> {
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {detail}");
    }
    Ok(body)
}

/// The body as `T`, or the server's ProblemDetails as the error.
async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let body = body_or_problem(resp).await?;
    serde_json::from_slice(&body).context("unexpected answer from the platform")
}

fn write_sites(out: &mut impl Write, sites: &[Site]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.operator.to_string(),
                s.region.clone(),
                s.zone.to_string(),
                format!("{:?}", s.status),
                format!("{}/{}m", s.usage.cpu_millicores, s.capacity.cpu_millicores),
                format!("{}/{}", s.usage.session_slots, s.capacity.session_slots),
                format!("{:.4},{:.4}", s.location.latitude(), s.location.longitude()),
            ]
        })
        .collect();
    let header = [
        "SITE", "OPERATOR", "REGION", "ZONE", "STATUS", "CPU", "SESSIONS", "LOCATION",
    ];
    write_table(out, &header, rows)
}

/// Aligned columns, two spaces apart, no trailing blanks.
fn write_table(
    out: &mut impl Write,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mecfed_core::{GeoPoint, OperatorId, Resources, SiteId, SiteStatus, ZoneId};

    #[test]
    fn sites_table() {
        let mut s = Site::new(
            SiteId::new("cork-1").unwrap(),
            OperatorId::new("op-a").unwrap(),
            "cork",
            ZoneId::new("z1").unwrap(),
            GeoPoint::new(51.9, -8.47).unwrap(),
            Resources::parse("cpu=8,sessions=500").unwrap(),
        )
        .unwrap();
        s.status = SiteStatus::Ready;
        let mut buf = Vec::new();
        write_sites(&mut buf, &[s]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "SITE    OPERATOR  REGION  ZONE  STATUS  CPU      SESSIONS  LOCATION\n\
             cork-1  op-a      cork    z1    Ready   0/8000m  0/500     51.9000,-8.4700\n"
        );
    }
}
