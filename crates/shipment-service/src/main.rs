//! shipment-service binary: configuration from the environment → logs → build → run until
//! SIGTERM or SIGINT. `shipment-service dlq list|replay|purge` works on the dead-letter queue
//! instead ([`shipment_service::dlq`]), with the same environment.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use service_kit::logging::{self, LogFormat};
use shipment_service::dlq::{self, Filter};
use shipment_service::{Application, Config};

#[derive(Debug, Parser)]
#[command(
    name = "shipment-service",
    about = "Applies order events to the shipment database (no command: run the service)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The dead-letter queue (`<RABBITMQ_ORDER_QUEUE>.dlq`): look, re-drive after a fix, delete.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Prints the matching dead letters as JSON lines; changes nothing.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Most dead letters to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publishes the matching dead letters back to the queue they came from (same message id,
    /// properties and headers), then removes them from the dead-letter queue.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Deletes the matching dead letters.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only those with this `x-death-reason` (malformed, missing-event-id, unknown-event-type,
    /// invalid-payload, rejected, max-attempts, delivery_limit).
    #[arg(long)]
    reason: Option<String>,
    /// Only these message ids (repeat the flag for several).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Every dead letter (replay and purge want a filter or this).
    #[arg(long)]
    all: bool,
}

impl FilterArgs {
    fn filter(self, command: &str) -> anyhow::Result<Filter> {
        let filter = Filter {
            reason: self.reason,
            ids: self.ids,
        };
        if command != "list" && filter.is_empty() && !self.all {
            bail!("dlq {command} needs --reason, --id or --all");
        }
        Ok(filter)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config =
        Config::from_vars(&service_kit::Vars::process()).context("invalid configuration")?;
    // Kept to the end of `main`: dropping it sends the last spans.
    let _traces =
        logging::init_with_traces(&config.log_filter, &[], LogFormat::Text, &config.traces)
            .context("cannot set up logging")?;
    if let Some(Command::Dlq(command)) = cli.command {
        return dead_letters(&config, command).await;
    }
    let shutdown = service_kit::shutdown_signal().context("cannot install the signal handlers")?;
    let application = Application::build(config)
        .await
        .context("starting shipment-service")?;
    application
        .run_until_stopped(shutdown)
        .await
        .context("serving HTTP")
}

/// Runs a `dlq` command: one JSON line per dead letter on standard output, a summary on
/// standard error.
async fn dead_letters(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let broker = &config.broker;
    let (verb, letters) = match command {
        DlqCommand::List { filter, limit } => (
            "listed",
            dlq::list(broker, &filter.filter("list")?, limit).await,
        ),
        DlqCommand::Replay { filter } => (
            "replayed",
            dlq::replay(broker, &filter.filter("replay")?).await,
        ),
        DlqCommand::Purge { filter } => (
            "deleted",
            dlq::purge(broker, &filter.filter("purge")?).await,
        ),
    };
    let letters =
        letters.with_context(|| format!("dead-letter queue {}", broker.dead_letter_queue()))?;
    for letter in &letters {
        println!(
            "{}",
            serde_json::to_string(letter).context("writing a dead letter as JSON")?
        );
    }
    eprintln!(
        "{verb} {} dead letter(s) of {}",
        letters.len(),
        broker.dead_letter_queue()
    );
    Ok(())
}
