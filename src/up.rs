//! `mecfed up`: one operator platform.

use std::time::Duration;

use anyhow::Context;
use mecfed_api::{
    AdminState, ApiState, HttpMetrics, admin_router,
    notify::{Notifier, NotifierConfig, NotifyMetrics},
    router, serve,
};
use mecfed_scheduler::{Controller, ControllerConfig, SchedulerMetrics};
use mecfed_store::{AnyStore, Metered, Store, StoreMetrics};
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::config::UpConfig;

/// The operator's client secret from `path`, created (mode 0600) with a random secret when
/// the file does not exist yet.
fn operator_secret(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret = hex::encode(bytes);
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    tracing::info!(file = %path.display(), "created the operator's client secret");
    Ok(secret)
}

/// An engine's task, boxed so that engines of different types share one list.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How long in-flight requests get after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub(crate) async fn run(config: UpConfig) -> anyhow::Result<()> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let build_info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("mecfed_build_info", "Build of this process"),
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(build_info))?;

    let store = AnyStore::open(&config.store)
        .await
        .with_context(|| format!("opening store {}", config.store))?;
    let store = Metered::new(store, StoreMetrics::register(&registry)?);
    if matches!(config.store, mecfed_store::StoreUrl::Embedded(_)) {
        // Only one process opens an embedded store, so whatever leadership it records is a
        // dead process's (killed, its leases restarting at their full TTL on reopen): take
        // it back now rather than leave every engine idle for a TTL after a crash.
        let leaders = format!("{}leaders/", mecfed_store::typed::KEY_ROOT).into_bytes();
        store
            .txn(mecfed_store::Txn::new().and_then([mecfed_store::TxnOp::DeletePrefix(leaders)]))
            .await
            .context("clearing the leadership records of an earlier process")?;
    }

    let mut api_state = ApiState::new(store.clone(), HttpMetrics::register(&registry, "api")?);
    api_state.home_operator = config.operator.clone();
    api_state.auth = mecfed_api::Auth::load_or_create(&api_state.store)
        .await
        .context("loading the token signing key")?;
    let secret = operator_secret(&config.operator_secret_file)?;
    mecfed_api::auth::ensure_operator_secret(&api_state.store, &secret)
        .await
        .context("registering the operator's client secret")?;
    let roots = match &config.callback_ca {
        Some(path) => mecfed_api::notify::pem_roots(path)
            .with_context(|| format!("reading --callback-ca {}", path.display()))?,
        None => mecfed_api::notify::system_roots(),
    };
    let notifier = Notifier::new(
        api_state.store.clone(),
        NotifierConfig {
            roots,
            ..NotifierConfig::default()
        },
    )
    .context("building the notification client")?
    .with_metrics(NotifyMetrics::register(&registry)?);
    mecfed_api::reserve_existing(&api_state.store)
        .await
        .context("reserving the identities and names that stored records hold")?;
    let engine_metrics = mecfed_api::engine::EngineMetrics::register(&registry)?;
    let ue_events = mecfed_api::engine::ue::UeEvents::new(api_state.store.clone())
        .with_metrics(engine_metrics.clone());
    let instance_events =
        mecfed_api::engine::instance::InstanceEvents::new(api_state.store.clone())
            .with_metrics(engine_metrics);
    let zone_sync = mecfed_api::camara::zones::ZoneSync::new(api_state.store.clone());
    let reporter = mecfed_api::mec::location::Reporter::new(api_state.store.clone());
    let status_reporter = mecfed_api::camara::status::StatusReporter::new(api_state.store.clone());
    let api = router(api_state);
    let controller = Controller::new(
        store.clone(),
        ControllerConfig {
            home_operator: config.operator.clone(),
            ..ControllerConfig::default()
        },
    )
    .with_metrics(SchedulerMetrics::register(&registry)?);
    let admin_state = AdminState::for_store(store.clone(), registry.clone());
    let api_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the REST listener on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.admin_listen))?;
    tracing::info!(
        api = %api_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        store = %config.store,
        "mecfed up"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Every engine runs under `health`: one that dies before shutdown makes `/ready` fail.
    let health = mecfed_api::Health::new();
    let admin = admin_router(admin_state.with_health(health.clone()));
    let api_task = tokio::spawn(serve(api_listener, api, stopped(stop_rx.clone())));
    let admin_task = tokio::spawn(serve(admin_listener, admin, stopped(stop_rx.clone())));
    let engine = |name, job| health.spawn(name, stop_rx.clone(), job);
    let stop = || stopped(stop_rx.clone());
    let engines = [
        engine("scheduler", Box::pin(controller.run(stop())) as Job),
        engine("notifier", Box::pin(notifier.run(stop()))),
        engine("location-reporter", Box::pin(reporter.run(stop()))),
        engine("camara-status", Box::pin(status_reporter.run(stop()))),
        engine("camara-zones", Box::pin(zone_sync.run(stop()))),
        engine("ue-events", Box::pin(ue_events.run(stop()))),
        engine("instance-events", Box::pin(instance_events.run(stop()))),
    ];

    crate::shutdown_signal().await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let (a, b) = tokio::join!(api_task, admin_task);
        a??;
        b??;
        for e in futures::future::join_all(engines).await {
            e?;
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(res) => res?,
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still running after the grace period")
        }
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}
