//! `mecfed agent`: the agent of one edge site.

use std::{future::Future, pin::Pin, sync::Arc};

use anyhow::Context;
use mecfed_agent::{
    AgentConfig, AgentError, AgentMetrics, Joined, limits::Limits, platform::PlatformClient,
    process::ProcessConfig, supervise::SuperviseConfig,
};
use mecfed_api::{AdminState, ReadyProbe, admin_router, instance_logs_router, serve};
use mecfed_core::{
    GeoPoint, LimitEnforcement, OperatorId, Resources, Site, SiteId, SiteKind, ZoneId,
};
use mecfed_kube::KubeSite;
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::cli::{AgentArgs, SiteKindArg};

fn site(args: &AgentArgs) -> anyhow::Result<Site> {
    let mut site = Site::new(
        SiteId::new(&args.site_id)?,
        OperatorId::new(&args.operator)?,
        &args.region,
        ZoneId::new(&args.zone)?,
        GeoPoint::new(args.lat, args.lon)?,
        args.capacity,
    )?;
    site.access_kinds = args.access_kinds.iter().map(|&k| k.into()).collect();
    site.access_points = args.access_points.clone();
    site.plmn = args.plmn.clone();
    site.labels = args.labels.iter().cloned().collect();
    site.validate()?;
    Ok(site)
}

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut site = site(&args).context("invalid site description")?;
    let kube = if args.kind == SiteKindArg::Kubernetes {
        let client = mecfed_kube::connect(args.kubeconfig.as_deref())
            .await
            .map_err(anyhow::Error::msg)?;
        let kube = KubeSite::start(client, site.id.as_str());
        let cluster = kube
            .capacity()
            .await
            .context("reading node capacity from the Kubernetes API")?;
        // CPU, memory and GPUs come from the nodes; session slots are the operator's call.
        site.capacity = Resources {
            session_slots: site.capacity.session_slots,
            ..cluster
        };
        site.kind = SiteKind::Kubernetes;
        site.limit_enforcement = LimitEnforcement::Kubernetes;
        tracing::info!(capacity = %site.capacity, "Kubernetes site");
        Some(kube)
    } else {
        None
    };
    let limits = if kube.is_some() {
        Limits::None {
            reason: "instances run as pods; the kubelet enforces their limits".into(),
        }
    } else {
        let limits = Limits::detect(site.id.as_str());
        if let Limits::None { reason } = &limits {
            tracing::warn!(%reason, "instance CPU and memory limits are not enforced on this site");
        }
        site.limit_enforcement = limits.enforcement();
        limits
    };
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let metrics = AgentMetrics::register(&registry)?;
    let joined = Joined::default();
    let probe: ReadyProbe = {
        let joined = joined.clone();
        Arc::new(move || {
            let ok = joined.get();
            Box::pin(async move {
                if ok {
                    Ok("joined".to_string())
                } else {
                    Err("not joined to the platform".to_string())
                }
            }) as Pin<Box<dyn Future<Output = _> + Send>>
        })
    };
    let admin = admin_router(AdminState {
        ready: probe,
        registry,
    })
    .merge(instance_logs_router(args.data_dir.join("logs")));
    let listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", args.admin_listen))?;
    let bound = listener.local_addr()?;
    // Where the platform fetches instance logs: the advertised address when listening on all.
    site.agent_endpoint = Some(if bound.ip().is_unspecified() {
        format!("{}:{}", args.advertise, bound.port())
    } else {
        bound.to_string()
    });
    tracing::info!(site = %site.id, admin = %listener.local_addr()?, controller = %args.controller, "mecfed agent");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin_task = tokio::spawn(serve(listener, admin, stopped(stop_rx.clone())));
    let config = AgentConfig {
        site,
        controller: args.controller.clone(),
        join_token: args.join_token.clone(),
        data_dir: args.data_dir.clone(),
        process: ProcessConfig {
            log_dir: args.data_dir.join("logs"),
            log_cap: args.log_cap,
            advertise: args.advertise,
            supervise: SuperviseConfig::default(),
            limits: Arc::new(limits),
        },
    };
    let shutdown = async {
        let _ = crate::shutdown_signal().await;
    };
    let result = match kube {
        None => mecfed_agent::run(config, metrics, joined, shutdown).await,
        Some(kube) => {
            let platform = PlatformClient::new(&config.controller, config.site.id.clone())
                .map_err(AgentError::Client)?;
            let data_dir = config.data_dir.clone();
            mecfed_agent::run_with(config, metrics, joined, shutdown, move |cred, stop| {
                let r = mecfed_kube::Reconciler::new(platform, cred, kube, &data_dir)
                    .map_err(AgentError::State)?;
                Ok(tokio::spawn(r.run(stop)))
            })
            .await
        }
    };
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    drop(stop_rx);
    Ok(result?)
}
