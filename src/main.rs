//! The `durasaga` binary: parses arguments and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use durasaga::config::Settings;
use std::path::PathBuf;

/// sled allocates and frees a node copy per write; mimalloc handles that
/// churn far better than glibc's malloc (measured: see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "durasaga",
    version,
    about = "Sagas across microservices that survive kill -9"
)]
struct Cli {
    /// A TOML file with settings (see config/default.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (REST API on http.bind, data under storage.data_dir).
    Serve {
        /// Data directory (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080; port 0 picks one).
        #[arg(long)]
        bind: Option<String>,
        /// Durability mode: flush, fsync or none.
        #[arg(long)]
        durability: Option<String>,
    },
    /// Drive CreateOrder sagas through the REST API and report throughput and latency.
    Loadgen {
        /// Base URL of a running durasaga.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Customers to create.
        #[arg(long, default_value_t = 100)]
        customers: usize,
        /// Sagas to run (default 10000 unless --duration is given).
        #[arg(long)]
        orders: Option<usize>,
        /// Run this long instead of a fixed number of orders: seconds
        /// (`30`, `2.5`) or with a unit (`30s`, `500ms`, `2m`, `1h 30m`).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Credit limit of each customer.
        #[arg(long, default_value = "1000.00")]
        credit_limit: String,
        /// Order totals, uniform in MIN..MAX.
        #[arg(long, default_value = "1.00..50.00")]
        amounts: String,
        /// Seconds each request waits for its saga (Prefer: wait=N).
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Print one JSON summary instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Check every invariant of a stopped durasaga's data directory; exits non-zero on a violation.
    Check {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Rebuild the order-history view from the order and customer event logs (service stopped).
    RebuildView {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Write a data directory of a given size (scale checks; the service must be stopped).
    Fill {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        customers: usize,
        /// Settled (APPROVED) orders, with their sagas and views.
        #[arg(long, default_value_t = 1_000_000)]
        orders: usize,
        /// Sagas in flight (ReserveCredit still in the saga's outbox, as after a crash).
        #[arg(long, default_value_t = 0)]
        in_flight: usize,
    },
    /// Narrated demonstrations.
    Demo {
        #[command(subcommand)]
        which: Demo,
    },
}

#[derive(Subcommand)]
enum Demo {
    /// A CustomerActor panics mid-saga; its supervisor restarts it and the saga finishes.
    Supervision,
    /// Fire 500 orders at a child `durasaga serve`, SIGKILL it mid-flight, restart, and check every order ends.
    Crash {
        /// Orders to fire.
        #[arg(long, default_value_t = 500)]
        orders: usize,
    },
}

fn init_logging(settings: &Settings, format: Option<LogFormat>) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.level));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => settings.log.format == "json",
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Panics inside actors are caught by their supervisors; log them as one line
/// instead of a backtrace on stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, "panic: {message}");
    }));
}

/// `--duration`: a number of seconds, or a duration with units.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.trim().parse::<f64>() {
        Ok(secs) => std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?}: seconds must be finite, at least 0 and below 2^64"))?,
        Err(_) => humantime::parse_duration(s.trim()).map_err(|e| {
            format!("{s:?} is not a duration ({e}); try 30, 30s, 500ms, 2m or 1h 30m")
        })?,
    };
    if d.is_zero() {
        return Err("the duration must be more than 0".into());
    }
    Ok(d)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    install_panic_hook();
    let settings = Settings::load(cli.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            data_dir,
            bind,
            durability,
        } => {
            let mut patch = serde_json::json!({});
            if let Some(d) = data_dir {
                patch["storage"]["data_dir"] = serde_json::json!(d);
            }
            if let Some(b) = bind {
                patch["http"]["bind"] = serde_json::json!(b);
            }
            if let Some(d) = durability {
                patch["storage"]["durability"] = serde_json::json!(d);
            }
            let settings = settings.with(patch)?;
            init_logging(&settings, cli.log_format);
            rt.block_on(durasaga::serve::run(settings))
                .context("durasaga serve failed")
        }
        Command::Loadgen {
            url,
            customers,
            orders,
            duration,
            concurrency,
            credit_limit,
            amounts,
            wait,
            json,
        } => {
            init_logging(&settings, cli.log_format);
            let spec = durasaga::loadgen::LoadSpec {
                url,
                customers: customers.max(1),
                orders: if duration.is_some() {
                    orders
                } else {
                    Some(orders.unwrap_or(10_000))
                },
                duration,
                concurrency,
                credit_limit,
                amounts: durasaga::loadgen::parse_amounts(&amounts)?,
                json,
                wait_secs: wait,
            };
            rt.block_on(durasaga::loadgen::run(spec))
        }
        Command::Check { data_dir } => {
            let r = durasaga::check::check(&data_dir)?;
            println!(
                "checked {} customers, {} orders, {} sagas, {} views",
                r.customers, r.orders, r.sagas, r.views
            );
            for v in &r.violations {
                println!("VIOLATION [{}] {}", v.invariant, v.detail);
            }
            if r.violations.is_empty() {
                println!("0 violations");
                Ok(())
            } else {
                anyhow::bail!("{} violations", r.violations.len())
            }
        }
        Command::RebuildView { data_dir } => {
            let n = durasaga::check::rebuild_view(&data_dir)?;
            println!("rebuilt the order-history view of {n} customers");
            Ok(())
        }
        Command::Fill {
            data_dir,
            customers,
            orders,
            in_flight,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let started = std::time::Instant::now();
            let f = durasaga::scale::fill(&data_dir, customers, orders, in_flight, now)?;
            println!(
                "wrote {} customers, {} settled orders, {} sagas in flight in {:.1} s",
                f.customers,
                f.settled_orders,
                f.in_flight,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Demo { which } => {
            init_logging(&settings, cli.log_format);
            match which {
                Demo::Supervision => rt.block_on(durasaga::demo::supervision(settings)),
                Demo::Crash { orders } => rt.block_on(durasaga::demo::crash(orders)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_are_seconds_or_carry_units_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2_500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        for bad in ["-1", "nan", "inf", "1e30", "0", "0s", "abc", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
