//! The `seckill` binary: parse the command line and dispatch.

use std::process::ExitCode;

use clap::Parser;

use seckill::auth::Auth;
use seckill::cli::{Cli, Command, TokenArgs};
use seckill::sale::model::is_valid_id;
use seckill::{clock, config, logging, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match config::resolve(&args) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("seckill: {error}");
                    return ExitCode::from(2);
                }
            };
            logging::init(&config.log_level, config.log_format);
            match serve::serve(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "seckill stopped");
                    eprintln!("seckill: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(args) => print_token(&args),
    }
}

fn print_token(args: &TokenArgs) -> ExitCode {
    if !is_valid_id(&args.user) {
        eprintln!("seckill: --user must be 1 to 64 characters from [A-Za-z0-9_-]");
        return ExitCode::from(2);
    }
    let secret = match config::token_secret(args.config.as_deref()) {
        Ok(secret) => secret,
        Err(error) => {
            eprintln!("seckill: {error}");
            return ExitCode::from(2);
        }
    };
    // Any non-empty secret verifies; the length rule is enforced by `serve`.
    let auth = Auth::new("", &secret);
    let expires = clock::now_ms() / 1000 + args.ttl_secs;
    println!("{}", auth.mint(&args.user, expires));
    ExitCode::SUCCESS
}
