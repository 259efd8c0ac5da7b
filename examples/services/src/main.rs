//! `uniface-services`: the reference deployment's binary. Today it migrates the database; the
//! roles (gateway, enrollment, verification, identification, templates, relay) are issue 17's
//! next steps.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "UniFace's reference deployment (see examples/services/stack.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations not applied yet (safe to run from several processes).
    Migrate {
        /// The database, e.g. postgresql://uniface@127.0.0.1:5432/uniface (`stack.sh up`
        /// writes it to DIR/env as UNIFACE_PG_URL).
        #[arg(long, env = "UNIFACE_PG_URL")]
        db: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate { db } => {
            async {
                let mut client = uniface_services::db::connect(&db).await?;
                let done = uniface_services::db::migrate(&mut client).await?;
                match done.is_empty() {
                    true => println!("the database is up to date"),
                    false => println!("applied migrations {done:?}"),
                }
                Ok::<(), uniface_services::Error>(())
            }
            .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uniface-services: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
