//! The command line: `gatehouse run`, `gatehouse check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gatehouse: an API gateway whose policies are WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway. Without a config file, runs the embedded quickstart
    /// config.
    Run {
        /// The config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The config file (the same as -c FILE).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Worker threads, each with its own event loop and sockets.
        /// Default: one per CPU.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Write a new custom policy crate (DIR/NAME) to build with the guest SDK.
    NewPolicy {
        /// The policy's name: lower-case letters, digits and `-`.
        name: String,
        /// Where to create it. Default: the current directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The guest SDK's directory. Default: the one of the source tree
        /// this binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Connect once to an upstream as the gateway would and say what
    /// happened: its certificate chain, the TLS version, cipher and ALPN,
    /// the CA names it accepts for client certificates, which certificate
    /// would be sent and why, and the verdict with its cause and fix.
    /// Exits 0 only when a request would succeed.
    ///
    /// `gatehouse probe https://host:port/path [--cert C --key K --ca CA]`
    /// or `gatehouse probe -c FILE --upstream NAME`.
    Probe {
        /// The URL to probe (without -c/--upstream).
        #[arg(value_name = "URL", required_unless_present = "upstream")]
        url: Option<String>,
        /// A config file whose upstream to probe (with --upstream).
        #[arg(short, long, requires = "upstream")]
        config: Option<PathBuf>,
        /// The upstream of the config to probe.
        #[arg(long, requires = "config", conflicts_with = "url")]
        upstream: Option<String>,
        /// A client certificate chain to present (PEM).
        #[arg(long, requires = "key", conflicts_with = "config")]
        cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "cert", conflicts_with = "config")]
        key: Option<PathBuf>,
        /// The CAs to trust for the upstream's certificate (PEM). Default:
        /// the system's.
        #[arg(long, conflicts_with = "config")]
        ca: Option<PathBuf>,
        /// The name to send as SNI and verify. Default: the URL's host.
        #[arg(long, conflicts_with = "config")]
        server_name: Option<String>,
    },
    /// Load and validate a config, construct every policy, and print the
    /// effective chain of every API and operation. Exits 1 on any problem.
    Check {
        /// The config file. Without it, checks the embedded quickstart.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The config file (the same as -c FILE).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
    },
}

/// The log filter from `GATEHOUSE_LOG` (default `info`). A bare level
/// applies to Gatehouse's own lines; other crates (wasmtime, cranelift,
/// hyper, rustls) stay at `warn` unless named (`GATEHOUSE_LOG=debug,hyper=debug`).
pub fn log_filter(spec: Option<&str>) -> String {
    let mut out = vec!["warn".to_string()];
    for d in spec.unwrap_or("info").split(',').map(str::trim) {
        if d.is_empty() {
            continue;
        }
        if d.contains('=') || d.contains('[') {
            out.push(d.to_string());
        } else {
            out.push(format!("gatehouse={d}"));
        }
    }
    if out.len() == 1 {
        out.push("gatehouse=info".into());
    }
    out.join(",")
}

fn init_logging() {
    let spec = std::env::var("GATEHOUSE_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(spec.as_deref()))
        .unwrap_or_else(|e| {
            eprintln!("warning: GATEHOUSE_LOG: {e}; logging at info");
            tracing_subscriber::EnvFilter::new(log_filter(None))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the CLI.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, file } => check(config.or(file)),
        Command::NewPolicy { name, dir, sdk } => new_policy(&name, &dir, sdk),
        Command::Probe {
            url,
            config,
            upstream,
            cert,
            key,
            ca,
            server_name,
        } => {
            let target = match (url, config, upstream) {
                (_, Some(file), Some(name)) => crate::probe::Target::from_config(&file, &name),
                (Some(url), _, _) => crate::probe::Target::url(&url, cert, key, ca, server_name),
                _ => Err("give a URL, or -c FILE --upstream NAME".to_string()),
            };
            probe(target)
        }
        Command::Run {
            config,
            file,
            workers,
        } => run(config.or(file), workers),
    }
}

fn check(config: Option<PathBuf>) -> ExitCode {
    init_logging();
    match crate::gateway::check(config.as_deref()) {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", snapshot.source.file);
            for (api, op, [inbound, outbound, on_error]) in snapshot.effective_chains() {
                let scope = match op {
                    Some(op) => format!("{api} / {op}"),
                    None => api,
                };
                println!("  {scope}");
                println!("    inbound:  {}", show(&inbound));
                println!("    outbound: {}", show(&outbound));
                println!("    on_error: {}", show(&on_error));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_problems(&errors, "", "found");
            ExitCode::FAILURE
        }
    }
}

fn probe(target: Result<crate::probe::Target, String>) -> ExitCode {
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(crate::probe::probe(&target));
    print!("{}", report.text);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn new_policy(name: &str, dir: &std::path::Path, sdk: Option<PathBuf>) -> ExitCode {
    let Some(sdk) = sdk.or_else(crate::scaffold::default_sdk) else {
        eprintln!("error: cannot find the guest SDK; pass --sdk PATH (the guest-sdk directory of a Gatehouse checkout)");
        return ExitCode::FAILURE;
    };
    match crate::scaffold::new_policy(name, dir, &sdk) {
        Ok(root) => {
            println!("created {}", root.display());
            println!(
                "  cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                root.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem, then `<lead>N problem(s) <what>`.
fn print_problems(errors: &crate::config::ConfigErrors, lead: &str, what: &str) {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    let n = errors.0.len();
    eprintln!("{lead}{n} problem{} {what}", if n == 1 { "" } else { "s" });
}

fn show(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(" -> ")
    }
}

fn run(config: Option<PathBuf>, workers: Option<usize>) -> ExitCode {
    init_logging();
    let mut opts = crate::gateway::Options::default();
    if let Some(w) = workers {
        opts.workers = w.max(1);
    }
    let workers = opts.workers;
    let gw = match crate::gateway::Gateway::start(config.as_deref(), opts) {
        Ok(g) => g,
        Err(crate::gateway::StartError::Config(errors)) => {
            print_problems(&errors, "not started: ", "in the config");
            return ExitCode::FAILURE;
        }
        Err(crate::gateway::StartError::Io(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = gw.live().load().source.file.clone();
    tracing::info!(config = %file, workers, "gatehouse is running; Ctrl-C stops it, SIGHUP reloads");
    if config.is_none() {
        for (name, addr) in gw.addresses() {
            println!("quickstart listener `{name}` on http://{addr}");
            println!("  try:  curl -i http://{addr}/hello -H 'x-tenant: acme'");
            println!("  and:  curl -i http://{addr}/hello        (refused: problem+json)");
        }
        if let Some(a) = gw.admin_address() {
            println!("admin listener on http://{a}  (/healthz /readyz /metrics /config /reload /traces/ID)");
        }
    }
    if let Err(e) = gw.handle_signals() {
        tracing::warn!("{e}; reload with POST /reload on the admin listener instead");
    }
    // The main thread only waits for the signal to stop.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(wait_for_stop()),
        Err(e) => {
            eprintln!("error: cannot wait for signals: {e}");
            gw.stop();
            return ExitCode::FAILURE;
        }
    }
    tracing::info!("shutting down");
    gw.stop();
    ExitCode::SUCCESS
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn bare_levels_are_gatehouse_s_and_named_crates_keep_theirs() {
        assert_eq!(log_filter(None), "warn,gatehouse=info");
        assert_eq!(log_filter(Some("debug")), "warn,gatehouse=debug");
        assert_eq!(
            log_filter(Some("debug,hyper=trace")),
            "warn,gatehouse=debug,hyper=trace"
        );
        assert_eq!(
            log_filter(Some("warn,gatehouse::access=info")),
            "warn,gatehouse=warn,gatehouse::access=info"
        );
        assert_eq!(log_filter(Some("")), "warn,gatehouse=info");
    }
}
