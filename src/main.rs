//! The `bo-gateway` binary: command line, logs and signals around [`bo_gateway::start`].

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use bo_gateway::logging::{self, LogFormat};
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "bo-gateway",
    version,
    about = "Authenticating TLS gateway for TraderEvolution BackOffice REST services"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, env = "BO_GATEWAY_CONFIG", default_value = "config/gateway.toml", global = true)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Access log lines held while the log sink is slow; past that they are dropped (and
    /// counted), so a stalled sink never holds up requests.
    #[arg(
        long,
        env = "BO_GATEWAY_LOG_QUEUE_LINES",
        default_value_t = logging::DEFAULT_ACCESS_QUEUE_LINES,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    log_queue_lines: u32,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config (and every file it names) without serving; writes nothing, and
    /// lists what serving would generate.
    CheckConfig,
    /// Read a password from stdin and print its argon2id hash for the users file.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Kept to the end of main: dropping it writes out the queued lines.
    let _logging = match logging::init(cli.log_format, cli.log_queue_lines) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::HashPassword) => hash_password(),
        Some(Command::CheckConfig) => match bo_gateway::Runtime::check(&cli.config) {
            Ok((rt, planned)) => {
                println!("{}: OK ({} routes)", cli.config.display(), rt.routes.iter().count());
                for what in planned {
                    println!("serving would generate {what}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        None => serve(cli.config),
    }
}

fn hash_password() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = input.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&input);
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::FAILURE;
    }
    match bo_gateway::auth::credentials::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: PathBuf) -> ExitCode {
    let runtime = match bo_gateway::Runtime::load(&config) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // One worker: a single-threaded runtime (no work-stealing machinery, no cross-thread
    // wake-ups), like nginx's single worker. More: the multi-threaded scheduler.
    let workers = match runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let tokio = match builder.enable_all().build() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio.block_on(async move {
        // Handlers first: a SIGHUP that arrives as soon as we announce serving must reload,
        // not kill the process (its default action).
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let running = match bo_gateway::start(runtime).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            https = ?running.https_addr,
            plain = ?running.plain_addr,
            admin = ?running.admin_addr,
            config = %config.display(),
            "bo-gateway serving"
        );
        signals.serve(&running).await;
        running.shutdown();
        running.wait().await;
        ExitCode::SUCCESS
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// SIGHUP reloads; SIGTERM or SIGINT returns (and the caller drains).
    async fn serve(mut self, running: &bo_gateway::Running) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return tracing::info!("SIGTERM received"),
                _ = self.int.recv() => return tracing::info!("SIGINT received"),
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading");
                    if let Err(e) = running.reload().await {
                        tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
                    }
                }
            }
        }
    }
}
