//! `kvmscope exporter`: the live source folded into the model on this thread, snapshots
//! served to Prometheus by the `metrics` crate's endpoint on another. Runs until SIGTERM or
//! Ctrl-C (the binary's signal handlers set the stop flag both loops watch).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics::{Board, Endpoint, Limits, SourceFacts, WebConfig};
use model::Model;

use crate::cli::{ExitsArg, ExporterArgs};
use crate::live::{require_privileges, stop_on_signals, LiveSource};

/// How long one poll of the source may wait: bounds how late a scrape's fresh snapshot is.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);

pub fn run(args: ExporterArgs) -> anyhow::Result<ExitCode> {
    // Logs go to stderr (the journal under systemd) unless --log-file set up the logger
    // already. RUST_LOG overrides the level.
    let _ = env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .try_init();
    let web = match &args.web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    // With no target, every KVM user on the host, also those that start later: a service
    // may well start before the first VM.
    let mut target = args.target.resolve()?;
    target.wait_for_vms = true;
    // Metrics are counts and histograms: exits are counted in the kernel.
    target.exits.get_or_insert(ExitsArg::Aggregate);
    require_privileges(&target)?;
    // Bind before the probes load, so a taken port is reported at once.
    let listener = metrics::http::bind(args.listen)?;
    let stop = stop_on_signals()?;
    let mut source =
        LiveSource::open(target, Arc::clone(&stop)).context("cannot start watching")?;
    for w in source.warnings() {
        log::warn!("{w}");
    }
    let board = Arc::new(Board::new());
    let facts = SourceFacts {
        version: env!("CARGO_PKG_VERSION").into(),
        probes_attached: source.has_probes(),
    };
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let endpoint = Arc::new(Endpoint {
        registry: metrics::registry(Arc::clone(&board), facts),
        board: Arc::clone(&board),
        web,
        limits: Limits::default(),
    });
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("exporter-accept".into())
            .spawn(move || metrics::serve(listener, endpoint, &stop))
            .context("cannot start the HTTP thread")?
    };
    log::info!(
        "serving {scheme}://{}/metrics ({})",
        args.listen,
        model::Source::describe(&source)
    );
    let mut model = Model::new(metrics::exporter_model_config());
    let ingested = metrics::ingest(&mut source, &mut model, &board, &stop, POLL_TIMEOUT);
    // The source ended (stop requested, or nothing left to watch): stop serving too.
    stop.store(true, Ordering::Release);
    let served = server.join();
    drop(source);
    ingested
        .map_err(anyhow::Error::from_boxed)
        .context("reading events")?;
    match served {
        Ok(r) => r.context("the HTTP endpoint failed")?,
        Err(_) => anyhow::bail!("the HTTP endpoint panicked"),
    }
    log::info!("stopped after {} events", model.events());
    Ok(ExitCode::SUCCESS)
}
